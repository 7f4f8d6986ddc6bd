"""The shared text encoder: token ids -> one vector per text.

Trained from scratch by default (keras-nlp token + position embedding,
transformer encoder layers, masked mean pooling). With
``ModelConfig.text_encoder_preset`` it wraps the backbone of a keras-nlp preset
read from a local directory instead; nothing is ever downloaded.
"""

from __future__ import annotations

from typing import Optional

import keras_nlp
import tensorflow as tf

from trainer.preset_files import (  # noqa: F401  (re-export)
    PRESET_OOV_TOKEN,
    PRESET_VOCABULARY,
    check_local_preset,
    preset_vocabulary,
)

keras = tf.keras


class MaskedMeanPooling(keras.layers.Layer):
    """Mean over the non-padding positions of a sequence."""

    def call(self, sequence: tf.Tensor, token_ids: tf.Tensor) -> tf.Tensor:
        mask = tf.cast(tf.not_equal(token_ids, 0), sequence.dtype)[..., tf.newaxis]
        total = tf.reduce_sum(sequence * mask, axis=1)
        return total / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


def build_text_encoder(
    text_dim: int,
    heads: int,
    layers: int,
    intermediate_dim: int,
    dropout: float,
    vocab_size: int,
    max_length: int,
    preset: Optional[str] = None,
) -> keras.Model:
    """Token ids [batch, length] (0 = padding) -> text vector [batch, text_dim]."""
    token_ids = keras.Input(shape=(None,), dtype=tf.int64, name="token_ids")
    padding_mask = keras.layers.Lambda(lambda ids: tf.not_equal(ids, 0), name="padding_mask")(
        token_ids
    )
    if preset is not None:
        return _pretrained_encoder(token_ids, padding_mask, text_dim, preset)
    x = keras_nlp.layers.TokenAndPositionEmbedding(
        vocabulary_size=vocab_size, sequence_length=max_length, embedding_dim=text_dim
    )(token_ids)
    for _ in range(layers):
        x = keras_nlp.layers.TransformerEncoder(
            intermediate_dim=intermediate_dim, num_heads=heads, dropout=dropout
        )(x, padding_mask=padding_mask)
    pooled = MaskedMeanPooling()(x, token_ids)
    return keras.Model(token_ids, pooled, name="text_encoder")


def _pretrained_encoder(token_ids, padding_mask, text_dim: int, preset: str) -> keras.Model:
    check_local_preset(preset)
    backbone = keras_nlp.models.Backbone.from_preset(preset)
    feed = {"token_ids": tf.cast(token_ids, "int32"), "padding_mask": padding_mask}
    if "segment_ids" in backbone.input:
        feed["segment_ids"] = tf.zeros_like(feed["token_ids"])
    sequence = backbone({k: v for k, v in feed.items() if k in backbone.input})
    if isinstance(sequence, dict):
        sequence = sequence["sequence_output"]
    pooled = MaskedMeanPooling()(sequence, token_ids)
    projected = keras.layers.Dense(text_dim, name="preset_projection")(pooled)
    return keras.Model(token_ids, projected, name="text_encoder")
