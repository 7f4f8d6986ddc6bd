"""A local BERT checkpoint (``trainer/bert_checkpoint.py``) as a keras-nlp preset.

``convert`` builds a keras-nlp ``BertBackbone`` with the checkpoint's weights
and a ``BertTokenizer`` with its vocabulary, and saves both as a local preset
(``backbone.save_to_preset`` / ``tokenizer.save_to_preset``), the form
``ModelConfig.text_encoder_preset`` reads. ``cached_preset`` converts once per
checkpoint into a cache directory keyed by the checkpoint's content.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Optional

import keras_nlp
import numpy as np
import tensorflow as tf

from trainer.bert_checkpoint import BertCheckpoint, CheckpointError
from trainer.preset_files import PRESET_VOCABULARY
from trainer.wordpiece import SETTINGS_FILE, WordPieceSettings

keras = tf.keras
# Written beside keras-nlp's files: what the preset was converted from.
SOURCE_FILE = "converted_from.json"


def exact_gelu(backbone: keras.Model) -> keras.Model:
    """BERT checkpoints use the exact (erf) GELU; keras-nlp's BertBackbone is built
    with the tanh approximation. Switches every feed-forward layer to the exact
    one (keras-nlp 0.12 has no argument for it)."""
    for layer in backbone.transformer_layers:
        layer._feedforward_intermediate_dense.activation = keras.activations.gelu
    return backbone


def build_backbone(checkpoint: BertCheckpoint) -> keras_nlp.models.BertBackbone:
    """A BertBackbone holding the checkpoint's weights."""
    c = checkpoint.config
    backbone = keras_nlp.models.BertBackbone(
        vocabulary_size=c.vocabulary_size,
        num_layers=c.num_layers,
        num_heads=c.num_heads,
        hidden_dim=c.hidden_dim,
        intermediate_dim=c.intermediate_dim,
        max_sequence_length=c.max_sequence_length,
        num_segments=c.num_segments,
    )
    w = checkpoint.weights
    heads, head_dim = c.num_heads, c.hidden_dim // c.num_heads

    def dense(name: str):
        return [w[f"{name}.weight"].T, w[f"{name}.bias"]]

    def norm(name: str):
        return [w[f"{name}.weight"], w[f"{name}.bias"]]

    backbone.token_embedding.set_weights([w["embeddings.word_embeddings.weight"]])
    backbone.position_embedding.set_weights([w["embeddings.position_embeddings.weight"]])
    backbone.segment_embedding.set_weights([w["embeddings.token_type_embeddings.weight"]])
    backbone.embeddings_layer_norm.set_weights(norm("embeddings.LayerNorm"))
    for n, layer in enumerate(backbone.transformer_layers):
        p = f"encoder.layer.{n}."
        attention = layer._self_attention_layer
        for part, target in (
            ("query", attention._query_dense),
            ("key", attention._key_dense),
            ("value", attention._value_dense),
        ):
            kernel, bias = dense(f"{p}attention.self.{part}")
            target.set_weights(
                [kernel.reshape(c.hidden_dim, heads, head_dim), bias.reshape(heads, head_dim)]
            )
        kernel, bias = dense(f"{p}attention.output.dense")
        attention._output_dense.set_weights([kernel.reshape(heads, head_dim, c.hidden_dim), bias])
        layer._self_attention_layer_norm.set_weights(norm(f"{p}attention.output.LayerNorm"))
        layer._feedforward_intermediate_dense.set_weights(dense(f"{p}intermediate.dense"))
        layer._feedforward_output_dense.set_weights(dense(f"{p}output.dense"))
        layer._feedforward_layer_norm.set_weights(norm(f"{p}output.LayerNorm"))
    if "pooler.dense.weight" in w:
        backbone.pooled_dense.set_weights(dense("pooler.dense"))
    return exact_gelu(backbone)


def build_tokenizer(checkpoint: BertCheckpoint) -> keras_nlp.models.BertTokenizer:
    return keras_nlp.models.BertTokenizer(
        vocabulary=list(checkpoint.tokenizer.vocabulary),
        lowercase=checkpoint.tokenizer.lowercase,
        strip_accents=checkpoint.tokenizer.strip_accents,
    )


def write_preset(
    backbone: keras.Model, tokenizer: keras_nlp.models.BertTokenizer, directory: str
) -> str:
    """A keras-nlp preset directory (config.json, tokenizer.json, model.weights.h5,
    metadata.json, assets/tokenizer/vocabulary.txt), written by hand: keras-nlp
    0.12's ``save_to_preset`` needs Keras 3, and the pipeline runs tf_keras."""
    os.makedirs(os.path.join(directory, "assets", "tokenizer"), exist_ok=True)
    for name, layer in (("config.json", backbone), ("tokenizer.json", tokenizer)):
        with open(os.path.join(directory, name), "w") as f:
            json.dump(keras.saving.serialize_keras_object(layer), f)
    backbone.save_weights(os.path.join(directory, "model.weights.h5"))
    with open(os.path.join(directory, "metadata.json"), "w") as f:
        json.dump({"keras_version": tf.__version__, "keras_nlp_version": keras_nlp.__version__}, f)
    with open(os.path.join(directory, PRESET_VOCABULARY), "w", encoding="utf-8") as f:
        f.write("\n".join(tokenizer.get_vocabulary()) + "\n")
    return directory


def _complete(preset_dir: str) -> bool:
    return all(os.path.isfile(os.path.join(preset_dir, f)) for f in (SOURCE_FILE, SETTINGS_FILE))


def _publish(partial: str, preset_dir: str) -> None:
    """Moves a finished conversion into place in one rename. When another
    process (a Beam worker, a second test worker) published the same preset
    first, its copy is kept: a reader never sees a directory being replaced."""
    if _complete(preset_dir):
        return
    shutil.rmtree(preset_dir, ignore_errors=True)  # an incomplete leftover
    try:
        os.replace(partial, preset_dir)
    except OSError:
        if not _complete(preset_dir):
            raise


def convert(checkpoint_dir: str, preset_dir: str) -> str:
    """Converts a BERT checkpoint directory into a keras-nlp preset at
    ``preset_dir`` (content-addressed by ``cached_preset``: a complete preset
    already there is kept)."""
    checkpoint = BertCheckpoint.load(checkpoint_dir)
    partial = f"{preset_dir}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        write_preset(build_backbone(checkpoint), build_tokenizer(checkpoint), partial)
        spec = checkpoint.tokenizer
        WordPieceSettings(
            os.path.join(partial, PRESET_VOCABULARY),
            spec.lowercase,
            spec.strip_accents,
            spec.unk_token,
            spec.max_input_chars_per_word,
        ).write(partial)
        with open(os.path.join(partial, SOURCE_FILE), "w") as f:
            json.dump({"checkpoint": os.path.abspath(checkpoint_dir), "activation": "gelu"}, f)
        _publish(partial, preset_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return preset_dir


def cached_preset(checkpoint_dir: str, cache_dir: str) -> str:
    """The preset of a checkpoint, converted on first use into ``cache_dir``."""
    digest = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        path = os.path.join(checkpoint_dir, name)
        if not os.path.isfile(path):
            raise CheckpointError(f"{path}: missing")
        stat = os.stat(path)
        digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    target = os.path.join(cache_dir, f"preset-{digest.hexdigest()[:16]}")
    if not _complete(target):
        os.makedirs(cache_dir, exist_ok=True)
        convert(checkpoint_dir, target)
    return target


def mean_pooled_embeddings(
    backbone: keras.Model, token_ids: np.ndarray, padding_mask: Optional[np.ndarray] = None
) -> np.ndarray:
    """Sentence embeddings as sentence-transformers makes them: the mean of the
    last layer over the real tokens, L2-normalised."""
    mask = (token_ids != 0) if padding_mask is None else padding_mask.astype(bool)
    outputs = backbone(
        {
            "token_ids": tf.constant(token_ids, tf.int32),
            "segment_ids": tf.zeros_like(tf.constant(token_ids, tf.int32)),
            "padding_mask": tf.constant(mask, tf.int32),
        },
        training=False,
    )["sequence_output"].numpy()
    weights = mask[..., None].astype(np.float32)
    pooled = (outputs * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
