"""Which ops a SavedModel needs, and whether the stock TF Serving 2.16 model
server registers them all.

The model server links every core TensorFlow kernel plus the op libraries of
``SUPPORTED_TENSORFLOW_OPS`` in ``tensorflow_serving/model_servers/BUILD``:
``@org_tensorflow_text//tensorflow_text:ops_lib`` (tensorflow-text's kernels,
listed below from ``tensorflow_text/BUILD``) and TensorFlow Decision Forests'
inference ops (not used here). So an export may use core ops and the
tensorflow-text ops in ``TF_TEXT_OP_LIBRARIES``, nothing else.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import subprocess
import sys
from typing import Iterable, List, Set

# tensorflow_text/BUILD, cc_library "ops_lib": the deps that are op kernels,
# by the name of the shared library the tensorflow-text wheel ships for each.
TF_TEXT_OP_LIBRARIES = (
    "boise_offset_converter",
    "byte_splitter",
    "constrained_sequence_op",
    "fast_bert_normalizer",
    "fast_sentencepiece_tokenizer",
    "fast_wordpiece_tokenizer",
    "mst_ops",
    "ngrams_op",
    "normalize_ops",
    "phrase_tokenizer",
    "regex_split_ops",
    "sentence_breaking_ops",
    "sentencepiece_tokenizer",
    "split_merge_from_logits_tokenizer",
    "split_merge_tokenizer",
    "state_based_sentence_breaker_op",
    "trimmer_ops",
    "unicode_script_tokenizer",
    "utf8_binarize_op",
    "whitespace_tokenizer",
    "whitespace_tokenizer_v2",
    "wordpiece_tokenizer",
)

_LIST_OPS = (
    "from tensorflow.python.client import pywrap_tf_session as p\n"
    "from tensorflow.core.framework import op_def_pb2\n"
    "ops = op_def_pb2.OpList()\n"
    "ops.ParseFromString(p.TF_GetBuffer(p.TF_GetAllOpList()))\n"
    "print('\\n'.join(op.name for op in ops.op))\n"
)


def _op_names(op_list_bytes: bytes) -> Set[str]:
    from tensorflow.core.framework import op_def_pb2

    ops = op_def_pb2.OpList()
    ops.ParseFromString(op_list_bytes)
    return {op.name for op in ops.op}


def core_ops() -> Set[str]:
    """The ops core TensorFlow registers: listed by a fresh interpreter that
    imports nothing but TensorFlow (no tensorflow-text, keras-nlp or TFX)."""
    result = subprocess.run(
        [sys.executable, "-c", _LIST_OPS],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return set(result.stdout.split())


def _tf_text_libraries() -> List[str]:
    """The installed tensorflow-text's op libraries of ``TF_TEXT_OP_LIBRARIES``
    (found without importing its Python package)."""
    spec = importlib.util.find_spec("tensorflow_text")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("tensorflow-text is not installed")
    directory = os.path.join(list(spec.submodule_search_locations)[0], "python", "ops")
    paths = []
    for library in TF_TEXT_OP_LIBRARIES:
        found = glob.glob(os.path.join(directory, f"_{library}.so"))
        if not found:
            raise RuntimeError(f"tensorflow-text ships no _{library}.so in {directory}")
        paths.append(found[0])
    return paths


def tf_text_ops() -> Set[str]:
    """The ops of tensorflow-text's ``ops_lib``, read from the installed libraries."""
    from tensorflow.python.client import pywrap_tf_session

    names: Set[str] = set()
    for path in _tf_text_libraries():
        handle = pywrap_tf_session.TF_LoadLibrary(path)
        names |= _op_names(pywrap_tf_session.TF_GetOpList(handle))
    return names


_registered = False


def register_tf_serving_ops() -> None:
    """Registers the op libraries TF Serving links in beside core TF, so the
    local server loads what stock TF Serving loads (idempotent)."""
    global _registered
    if not _registered:
        import tensorflow as tf

        for path in _tf_text_libraries():
            tf.load_op_library(path)
        _registered = True


def tf_serving_ops() -> Set[str]:
    """Every op the stock TF Serving 2.16 model server can run."""
    return core_ops() | tf_text_ops()


def saved_model_ops(export_dir: str) -> Set[str]:
    """The op types of every graph and function of a SavedModel."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    ops: Set[str] = set()
    for meta_graph in saved_model.meta_graphs:
        graph = meta_graph.graph_def
        ops.update(node.op for node in graph.node)
        for function in graph.library.function:
            ops.update(node.op for node in function.node_def)
        # Calls to the graph's own functions are not ops to register.
        ops -= {function.signature.name for function in graph.library.function}
    return ops


def unsupported_ops(export_dir: str, supported: Iterable[str] | None = None) -> List[str]:
    """The ops of a SavedModel that TF Serving 2.16 does not register (sorted)."""
    supported = set(tf_serving_ops() if supported is None else supported)
    return sorted(saved_model_ops(export_dir) - supported)
