"""The frozen pretrained encoder's features, by raw item id.

The TextEmbedder step embeds every catalogue item's text once; this module
turns its table into the model's ``ITEM_TEXT_VECTOR`` (the item's embedding)
and ``HISTORY_TEXT_VECTOR`` (the mean over the user's history items that the
table knows). It runs outside the Keras network, in the input pipeline and in
the serving signatures, so the network stays numeric (XLA compiles it) and the
same lookup serves both. At serving, an item the table does not know has its
text embedded in the graph by the same ``SentenceEncoder``; history items it
does not know are left out of the mean.

With the encoder fine-tuned in the item tower, the item's feature is instead
its text's WordPiece ids (``ITEM_TEXT_TOKEN_IDS``, tokenized once per
catalogue item; unknown items' text is tokenized in the serving graph) and
the network computes its vector; the history keeps the frozen vectors.
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from trainer import features as F


def item_text(title: tf.Tensor, description: tf.Tensor) -> tf.Tensor:
    """An item's text as the TextEmbedder embeds it (``text_embedder.item_text``)."""
    return tf.strings.join([tf.reshape(title, [-1]), tf.reshape(description, [-1])], " ")


class PretrainedTextFeatures(tf.Module):
    """Catalogue text embeddings as a lookup table (row 0: unknown, zeros)."""

    def __init__(
        self,
        item_ids: np.ndarray,
        vectors: np.ndarray,
        encoder=None,
        fine_tune_texts: Optional[Sequence[str]] = None,
    ):
        """``fine_tune_texts`` (the items' texts, in ``item_ids`` order, with an
        ``encoder``) switches to token-id features for a fine-tuned encoder."""
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
        self.fine_tune = fine_tune_texts is not None
        self.token_length = int(encoder.max_length) if self.fine_tune else 0
        if self.fine_tune:
            self.token_ids = tf.Variable(
                _catalogue_token_ids(encoder, list(fine_tune_texts), self.token_length),
                trainable=False,
                name="catalogue_token_ids",
            )

    def _with_unknown(
        self,
        rows: tf.Tensor,
        item_ids: tf.Tensor,
        known: tf.Tensor,
        text: Optional[tf.Tensor],
        compute: Callable[[tf.Tensor], tf.Tensor],
    ) -> tf.Tensor:
        """``known`` (the table's rows) with unknown items' rows (a non-empty
        id or text) replaced by ``compute(their text)``."""
        if text is None or self.encoder is None:
            return known
        text = tf.reshape(text, [-1])
        unknown = tf.where((rows == 0) & ((item_ids != "") | (tf.strings.strip(text) != "")))[:, 0]

        def fill() -> tf.Tensor:
            computed = tf.cast(compute(tf.gather(text, unknown)), known.dtype)
            return tf.tensor_scatter_nd_update(known, unknown[:, tf.newaxis], computed)

        return tf.cond(tf.size(unknown) > 0, fill, lambda: known)

    def item_vectors(self, item_ids: tf.Tensor, text: Optional[tf.Tensor] = None) -> tf.Tensor:
        """[batch] raw ids -> [batch, dim]; with ``text`` and an encoder, unknown
        items (non-empty id or text) are embedded from their text."""
        item_ids = tf.reshape(item_ids, [-1])
        rows = self.rows.lookup(item_ids)
        return self._with_unknown(
            rows, item_ids, tf.gather(self.vectors, rows), text, lambda t: self.encoder(t)
        )

    def item_token_ids(self, item_ids: tf.Tensor, text: Optional[tf.Tensor] = None) -> tf.Tensor:
        """[batch] raw ids -> WordPiece ids [batch, token_length] (fine-tuning
        only); unknown items are tokenized from ``text`` as ``item_vectors`` embeds them."""
        item_ids = tf.reshape(item_ids, [-1])
        rows = self.rows.lookup(item_ids)
        return self._with_unknown(
            rows,
            item_ids,
            tf.cast(tf.gather(self.token_ids, rows), tf.int64),
            text,
            lambda t: self.encoder.token_ids(t),
        )

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
        item_ids = features[F.ITEM_ID]
        batch = tf.size(item_ids)
        if self.fine_tune:
            out[F.ITEM_TEXT_VECTOR] = tf.zeros(tf.stack([batch, 0]), tf.float32)
            out[F.ITEM_TEXT_TOKEN_IDS] = self.item_token_ids(item_ids, text)
        else:
            out[F.ITEM_TEXT_VECTOR] = self.item_vectors(item_ids, text)
            out[F.ITEM_TEXT_TOKEN_IDS] = tf.zeros(tf.stack([batch, 0]), tf.int64)
        out[F.HISTORY_TEXT_VECTOR] = self.history_vectors(features[F.HISTORY_ITEM_IDS_XF])
        return out


def _catalogue_token_ids(encoder, texts: Sequence[str], length: int) -> np.ndarray:
    """Row 0 (unknown) zeros, then each text's WordPiece ids, int32 [n + 1, length]."""
    rows = [np.zeros((1, length), np.int32)]
    for start in range(0, len(texts), 4096):
        batch = tf.constant(texts[start : start + 4096], tf.string)
        rows.append(encoder.token_ids(batch).numpy().astype(np.int32))
    return np.concatenate(rows)


def no_pretrained_text() -> PretrainedTextFeatures:
    """The encoder switched off: zero-width vectors."""
    return PretrainedTextFeatures(np.array([], dtype=object), np.zeros((0, 0), np.float32))
