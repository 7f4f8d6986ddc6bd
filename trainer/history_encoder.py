"""The user's ordered history of item ids as one vector (the collaborative
signal): the item tower's own id embeddings plus a recency embedding, a
transformer encoder over the newest ``length`` items with padding masked,
and a masked mean.

Transform writes the history as item-vocabulary indices, oldest first, -1
for padding (``F.HISTORY_ITEM_INDEX_XF``). Recency counts the real items
after a position, so where the padding sits changes nothing, while the
order of the items does.
"""

from __future__ import annotations

import keras_nlp
import tensorflow as tf

keras = tf.keras

PADDING = -1


def recency(index: tf.Tensor) -> tf.Tensor:
    """[batch, length] indices (-1 = padding) -> for each real item, how many
    real items come after it (0: the newest); padding gets -1."""
    real = tf.cast(index != PADDING, tf.int32)
    after = tf.cumsum(real, axis=1, reverse=True, exclusive=True)
    return tf.where(real > 0, after, PADDING)


class HistoryEncoder(keras.layers.Layer):
    """Item indices [batch, positions] -> history vector [batch, dim]."""

    def __init__(
        self,
        item_embedding: keras.layers.Embedding,
        length: int,
        heads: int,
        layers: int,
        intermediate_dim: int,
        dropout: float,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.item_embedding = item_embedding  # shared with the item tower
        self.length = int(length)
        dim = int(item_embedding.output_dim)
        self.recency_embedding = keras.layers.Embedding(self.length, dim, name="recency_embedding")
        self.blocks = [
            keras_nlp.layers.TransformerEncoder(
                intermediate_dim=intermediate_dim,
                num_heads=heads,
                dropout=dropout,
                name=f"history_transformer_{k}",
            )
            for k in range(layers)
        ]

    def call(self, index: tf.Tensor, training: bool = False) -> tf.Tensor:
        index = tf.cast(index, tf.int32)
        steps_back = recency(index)
        mask = (steps_back >= 0) & (steps_back < self.length)  # the newest `length` items
        x = self.item_embedding(tf.maximum(index, 0)) + self.recency_embedding(
            tf.clip_by_value(steps_back, 0, self.length - 1)
        )
        weights = tf.cast(mask, x.dtype)[..., tf.newaxis]
        x = x * weights
        for block in self.blocks:
            x = block(x, padding_mask=mask, training=training)
        total = tf.reduce_sum(x * weights, axis=1)
        return total / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)
