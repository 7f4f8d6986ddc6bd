"""Compact serving models: the trained network with its large weights stored
as float16 or int8, and its ranking heads as a TFLite model.

The weights follow Keras 3's ``Model.quantize("int8")`` (not in tf_keras
2.16): a layer's kernel or embedding table is stored compact and widened to
float32 where the layer reads it, so the arithmetic stays float32 and the
export uses only stock ops (Cast, Mul, GatherV2): TF Serving loads it as it
loads the full model. int8 is symmetric with one scale per output column
of a kernel and per row of a table (FBGEMM's row-wise layout), so a lookup
widens only the rows it reads.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainer import export
from trainer import features as F
from trainer import serving_contract as C
from trainer import task_kinds

keras = tf.keras

KINDS = ("float16", "int8")
# Weight attributes compacted, by how they are read: tables are gathered by
# row, kernels multiplied by column.
TABLE_ATTRIBUTES = ("embeddings", "position_embeddings", "vectors")
KERNEL_ATTRIBUTES = ("kernel",)
MIN_ELEMENTS = 4096  # smaller weights (biases, norms, small heads) stay float32
MIN_ROW_WIDTH = 8  # an int8 row narrower than this saves less than its scale costs
RANKING_KINDS = ("binary", "regression")  # the heads a TFLite ranking model carries
TFLITE_RANKING_HEADS = "ranking_heads.tflite"  # in the full export's assets.extra


class CompactWeight(tf.Module):
    """A float32 weight stored as float16, or as int8 with float32 scales;
    reads as the float32 tensor it stands for (``tf.convert_to_tensor``)
    and gathers rows without widening the rest (``sparse_read``, which
    ``tf.gather`` and ``tf.nn.embedding_lookup`` call)."""

    def __init__(self, variable: tf.Variable, kind: str, by_row: bool):
        super().__init__(name=variable.name.split(":")[0].replace("/", "_") + f"_{kind}")
        if kind not in KINDS:
            raise ValueError(f"compact kind must be one of {KINDS}, got {kind!r}")
        value = variable.numpy().astype(np.float32)
        self.kind, self.shape, self.dtype = kind, variable.shape, tf.float32
        if kind == "float16":
            self.values = tf.Variable(value.astype(np.float16), trainable=False, name="values")
            self.scale = None
            return
        # Symmetric int8: max |w| over the axes one scale covers maps to 127.
        axes = tuple(range(1, value.ndim)) if by_row else (0,)
        scale = np.max(np.abs(value), axis=axes, keepdims=True) / 127.0
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        quantised = np.clip(np.rint(value / scale), -127, 127).astype(np.int8)
        self.values = tf.Variable(quantised, trainable=False, name="values")
        self.scale = tf.Variable(scale, trainable=False, name="scale")
        self.by_row = by_row

    @property
    def handle(self) -> tf.Tensor:
        """The stored variable's handle: what embedding lookups colocate with."""
        return self.values.handle

    def _widen(self, values: tf.Tensor, scale: tf.Tensor | None) -> tf.Tensor:
        values = tf.cast(values, tf.float32)
        return values if scale is None else values * scale

    def __tf_tensor__(self, dtype=None, name=None) -> tf.Tensor:
        if dtype is not None and tf.as_dtype(dtype) != tf.float32:
            raise ValueError(f"{self.name} reads as float32, not {dtype}")
        return self._widen(self.values, self.scale)

    def sparse_read(self, indices, name=None) -> tf.Tensor:
        values = tf.gather(self.values, indices, name=name)
        if self.scale is None:
            return self._widen(values, None)
        scale = tf.gather(self.scale, indices) if self.by_row else self.scale
        return self._widen(values, scale)


def _compactable(value, by_row: bool, kind: str, min_elements: int) -> bool:
    if not isinstance(value, tf.Variable) or value.dtype != tf.float32:
        return False  # ShardedVariables (parameter servers) and non-float weights stay
    if value.shape.num_elements() is None or value.shape.num_elements() < min_elements:
        return False
    width = int(np.prod(value.shape[1:])) if by_row else int(value.shape[0])
    return kind == "float16" or width >= MIN_ROW_WIDTH


def compact_weights(
    modules: Sequence[tf.Module], kind: str, min_elements: int = MIN_ELEMENTS
) -> List[Tuple[str, tuple]]:
    """Replaces, in place, every large kernel and table of ``modules`` and
    their submodules by a ``CompactWeight`` of ``kind``; the original
    variables leave the layers' weight lists, so a SavedModel written after
    this holds only the compact ones. Returns (weight name, shape) of each.
    Do this after the full-precision export: the network is changed."""
    if kind not in KINDS:
        raise ValueError(f"compact kind must be one of {KINDS}, got {kind!r}")
    seen, done = set(), []
    for module in _every_module(modules):
        if id(module) in seen:
            continue
        seen.add(id(module))
        for attribute in TABLE_ATTRIBUTES + KERNEL_ATTRIBUTES:
            value = getattr(module, attribute, None)
            by_row = attribute in TABLE_ATTRIBUTES
            if not _compactable(value, by_row, kind, min_elements):
                continue
            compact = CompactWeight(value, kind, by_row)
            setattr(module, attribute, compact)  # Keras untracks the variable it replaces
            _retrack(module, value, compact)
            done.append((value.name, tuple(value.shape)))
    logging.info("Compact %s weights: %d tensors.", kind, len(done))
    return done


def _retrack(module: tf.Module, old: tf.Variable, new: tf.Module) -> None:
    """Points ``module``'s checkpoint dependencies on ``old`` at ``new``:
    ``add_weight`` tracks a weight under its own name, which need not be the
    attribute's (keras-nlp's ``position_embeddings`` is "embeddings")."""
    for reference in list(getattr(module, "_self_unconditional_checkpoint_dependencies", [])):
        if reference.ref is old:
            module._track_trackable(new, name=reference.name, overwrite=True)


def _every_module(roots: Sequence[tf.Module]) -> List[tf.Module]:
    found: List[tf.Module] = []
    for root in roots:
        found.append(root)
        found.extend(root.submodules)
    return found


def ranking_heads(network: keras.Model, task_names: Sequence[str]) -> keras.Model:
    """The scalar heads of ``task_names`` (click, conversion, rating) as a
    model of the two tower vectors and the two ids: what a device scores a
    shortlist with, given the user's vector and the items' vectors."""
    outputs = {name: network.output[name] for name in task_names}
    return keras.Model(ranking_inputs(network), outputs, name="ranking_heads")


def ranking_inputs(network: keras.Model) -> Dict[str, tf.Tensor]:
    """The ranking heads' inputs in ``network``'s graph: the towers' vectors
    (what the joint layer reads) and the two ids (the heads' id biases)."""
    joint_inputs = network.get_layer("user_item").input
    return {
        "user_vector": joint_inputs[0],
        "item_vector": joint_inputs[1],
        F.USER_ID_XF: network.input[F.USER_ID_XF],
        F.ITEM_ID_XF: network.input[F.ITEM_ID_XF],
    }


def ranking_task_names(task_names: Sequence[str]) -> List[str]:
    """The tasks of ``task_names`` a ranking-heads model carries."""
    return [
        task.name
        for task in F.TASKS
        if task.name in task_names and task_kinds.kind_of(task).kind in RANKING_KINDS
    ]


def tflite_ranking_heads(network: keras.Model, task_names: Sequence[str], int8: bool) -> bytes:
    """The ranking heads as a TFLite flatbuffer (``int8``: dynamic-range
    quantised weights, TFLite's ``Optimize.DEFAULT``)."""
    heads = ranking_heads(network, ranking_task_names(task_names))
    specs = [  # named inputs: the TFLite signature's names
        tf.TensorSpec([None, *tensor.shape[1:]], tensor.dtype, name=name)
        for name, tensor in ranking_inputs(network).items()
    ]

    @tf.function(input_signature=specs)
    def rank(*features):
        return heads(dict(zip((spec.name for spec in specs), features)), training=False)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [rank.get_concrete_function()], heads
    )
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def write_tflite_ranking_heads(
    network: keras.Model, task_names: Sequence[str], mode: str, serving_model_dir: str
) -> str:
    """Writes the ranking heads (``mode``: "float32" or "int8") into the
    export's ``assets.extra``, pushed with the model it belongs to; its path."""
    path = os.path.join(serving_model_dir, C.ASSETS_EXTRA, TFLITE_RANKING_HEADS)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(tflite_ranking_heads(network, task_names, int8=mode == "int8"))
    logging.info("TFLite ranking heads (%s) written to %s", mode, path)
    return path


def export_compact_model(
    network: keras.Model,
    kind: str,
    export_dir: str,
    task_names: Sequence[str],
    tasks_off: Mapping[str, str],
    **export_args,
) -> List[Tuple[str, tuple]]:
    """Compacts ``network``'s weights (and the pretrained text encoder's,
    which the export embeds unknown items with) to ``kind`` and exports it
    like the full model (``export.export_serving_model``'s ``export_args``),
    with the same tasks record. Changes ``network``: call it last."""
    text_features: Optional[tf.Module] = export_args.get("text_features")
    roots = [network] + ([text_features] if text_features is not None else [])
    done = compact_weights(roots, kind)
    export.export_serving_model(network, export_dir=export_dir, **export_args)
    C.write_tasks_asset(export_dir, task_names, tasks_off)
    logging.info("Compact (%s) serving model exported to %s", kind, export_dir)
    return done
