"""The frozen pretrained encoder's features, by raw item id.

The TextEmbedder step embeds every catalogue item's text once; this module
turns its table into the model's ``ITEM_TEXT_VECTOR`` (the item's embedding)
and ``HISTORY_TEXT_VECTOR`` (the mean over the user's history items that the
table knows). It runs outside the Keras network, in the input pipeline and in
the serving signatures, so the network stays numeric (XLA compiles it) and the
same lookup serves both. At serving, an item the table does not know has its
text embedded in the graph by the same ``SentenceEncoder``; history items it
does not know are left out of the mean.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np
import tensorflow as tf

from trainer import features as F


def item_text(title: tf.Tensor, description: tf.Tensor) -> tf.Tensor:
    """An item's text as the TextEmbedder embeds it (``text_embedder.item_text``)."""
    return tf.strings.join([tf.reshape(title, [-1]), tf.reshape(description, [-1])], " ")


class PretrainedTextFeatures(tf.Module):
    """Catalogue text embeddings as a lookup table (row 0: unknown, zeros)."""

    def __init__(self, item_ids: np.ndarray, vectors: np.ndarray, encoder=None):
        super().__init__(name="pretrained_text")
        vectors = np.asarray(vectors, np.float32)
        self.dim = int(vectors.shape[1]) if vectors.ndim == 2 else 0
        keys = [str(i) for i in item_ids]
        rows = list(range(1, len(keys) + 1))
        if not keys:  # a table cannot be empty: "" -> 0 says what the default says
            keys, rows = [""], [0]
        self.rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(keys, tf.string), tf.constant(rows, tf.int64)
            ),
            default_value=0,
        )
        self.vectors = tf.Variable(
            np.concatenate(
                [np.zeros((1, self.dim), np.float32), vectors.reshape(len(item_ids), self.dim)]
            ),
            trainable=False,
            name="catalogue_text_embeddings",
        )
        self.encoder = encoder  # embeds unknown items at serving; None: they get zeros

    def item_vectors(self, item_ids: tf.Tensor, text: Optional[tf.Tensor] = None) -> tf.Tensor:
        """[batch] raw ids -> [batch, dim]; with ``text`` and an encoder, unknown
        items (non-empty id or text) are embedded from their text."""
        item_ids = tf.reshape(item_ids, [-1])
        rows = self.rows.lookup(item_ids)
        vectors = tf.gather(self.vectors, rows)
        if text is None or self.encoder is None:
            return vectors
        text = tf.reshape(text, [-1])
        unknown = tf.where((rows == 0) & ((item_ids != "") | (tf.strings.strip(text) != "")))[:, 0]

        def embed_unknown() -> tf.Tensor:
            embedded = self.encoder(tf.gather(text, unknown))
            return tf.tensor_scatter_nd_update(vectors, unknown[:, tf.newaxis], embedded)

        return tf.cond(tf.size(unknown) > 0, embed_unknown, lambda: vectors)

    def history_vectors(self, history_ids: tf.Tensor) -> tf.Tensor:
        """[batch, length] raw ids ("" = none) -> mean of the known ones [batch, dim]."""
        rows = self.rows.lookup(history_ids)
        known = tf.cast(rows > 0, tf.float32)[..., tf.newaxis]
        total = tf.reduce_sum(tf.gather(self.vectors, rows) * known, axis=1)
        return total / tf.maximum(tf.reduce_sum(known, axis=1), 1.0)

    def add_to(
        self, features: Mapping[str, tf.Tensor], text: Optional[tf.Tensor] = None
    ) -> Dict[str, tf.Tensor]:
        """Transformed features + the two text vectors (see ``item_vectors``)."""
        out = dict(features)
        out[F.ITEM_TEXT_VECTOR] = self.item_vectors(features[F.ITEM_ID], text)
        out[F.HISTORY_TEXT_VECTOR] = self.history_vectors(features[F.HISTORY_ITEM_IDS_XF])
        return out


def no_pretrained_text() -> PretrainedTextFeatures:
    """The encoder switched off: zero-width vectors."""
    return PretrainedTextFeatures(np.array([], dtype=object), np.zeros((0, 0), np.float32))
