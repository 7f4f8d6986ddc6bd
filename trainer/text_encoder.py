"""The shared lexical text encoder: token ids -> one vector per text.

Trained from scratch on each run (keras-nlp token + position embedding,
transformer encoder layers, masked mean pooling) over Transform's word
vocabulary. The frozen pretrained encoder sits beside it
(``trainer/pretrained_text.py``).
"""

from __future__ import annotations

import keras_nlp
import tensorflow as tf

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
) -> keras.Model:
    """Token ids [batch, length] (0 = padding) -> text vector [batch, text_dim]."""
    token_ids = keras.Input(shape=(None,), dtype=tf.int64, name="token_ids")
    padding_mask = keras.layers.Lambda(lambda ids: tf.not_equal(ids, 0), name="padding_mask")(
        token_ids
    )
    x = keras_nlp.layers.TokenAndPositionEmbedding(
        vocabulary_size=vocab_size, sequence_length=max_length, embedding_dim=text_dim
    )(token_ids)
    for _ in range(layers):
        x = keras_nlp.layers.TransformerEncoder(
            intermediate_dim=intermediate_dim, num_heads=heads, dropout=dropout
        )(x, padding_mask=padding_mask)
    pooled = MaskedMeanPooling()(x, token_ids)
    return keras.Model(token_ids, pooled, name="text_encoder")
