"""TF Transform preprocessing: ids to vocabulary indices, text to token ids.

The lexical view of the text: core TF string ops (lower-case, strip
punctuation, split on spaces) with a vocabulary computed over the training
text of items and histories, for the from-scratch encoder. Token id 0 is
padding, 1 is out-of-vocabulary, words start at 2. The pretrained encoder's
view (exact WordPiece, ``trainer/wordpiece.py``) is computed per catalogue
item by the TextEmbedder step, not per example here.
"""

from __future__ import annotations

from typing import Dict

import tensorflow as tf
import tensorflow_transform as tft

from trainer import features as F

TEXT_VOCAB_TOP_K = 20_000
TEXT_VOCAB_MIN_FREQUENCY = 2
PAD_ID = 0


def _dense(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """[batch] or [batch, 1] feature -> [batch]."""
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(x, default_value="" if x.dtype == tf.string else 0)
    return tf.reshape(x, [-1])


def tokenize(text: tf.Tensor) -> tf.RaggedTensor:
    """Lower-cases, strips punctuation and splits on whitespace."""
    text = tf.strings.lower(_dense(text))
    text = tf.strings.regex_replace(text, r"[^a-z0-9]+", " ")
    return tf.strings.split(text)


def _token_ids(tokens: tf.RaggedTensor, vocab: tf.Tensor, length: int) -> tf.Tensor:
    # Words get 0.. and unknown tokens -1; shift so padding is 0, OOV 1, words 2..
    ids = tft.apply_vocabulary(tokens.flat_values, vocab, default_value=-1) + 2
    return tokens.with_flat_values(ids).to_tensor(default_value=PAD_ID, shape=[None, length])


def preprocessing_fn(inputs: Dict[str, tf.Tensor], custom_config=None) -> Dict[str, tf.Tensor]:
    """TFX Transform entry point (``custom_config`` carries the code version)."""
    outputs: Dict[str, tf.Tensor] = {}
    id_vocabs = {}
    for raw_name, vocab_name in F.ID_VOCABS.items():
        id_vocabs[raw_name] = tft.vocabulary(_dense(inputs[raw_name]), vocab_filename=vocab_name)
        outputs[F.transformed_name(raw_name)] = tft.apply_vocabulary(
            _dense(inputs[raw_name]), id_vocabs[raw_name], num_oov_buckets=1
        )

    item_tokens = tokenize(
        tf.strings.join(
            [_dense(inputs[F.ITEM_TITLE]), _dense(inputs[F.ITEM_DESCRIPTION])], separator=" "
        )
    )
    # The user's text: the profile (user table, past reviews), at most
    # USER_PROFILE_TOKENS of it, then the history titles.
    history_tokens = tf.concat(
        [
            tokenize(inputs[F.USER_PROFILE])[:, : F.USER_PROFILE_TOKENS],
            tokenize(inputs[F.HISTORY_TITLES]),
        ],
        axis=1,
    )
    vocab = tft.vocabulary(
        tf.concat([item_tokens.flat_values, history_tokens.flat_values], axis=0),
        top_k=TEXT_VOCAB_TOP_K,
        frequency_threshold=TEXT_VOCAB_MIN_FREQUENCY,
        vocab_filename=F.TEXT_VOCAB,
    )
    outputs[F.ITEM_TOKENS_XF] = _token_ids(item_tokens, vocab, F.ITEM_TEXT_LENGTH)
    outputs[F.HISTORY_TOKENS_XF] = _token_ids(history_tokens, vocab, F.HISTORY_TEXT_LENGTH)
    # The newest history item ids, raw: the pretrained text features look them up.
    history_ids = newest_ids(inputs[F.HISTORY_ITEM_IDS], F.HISTORY_IDS_LENGTH)
    outputs[F.HISTORY_ITEM_IDS_XF] = history_ids
    # ... and as item-vocabulary indices for the sequence encoder (-1: padding).
    history_index = tft.apply_vocabulary(history_ids, id_vocabs[F.ITEM_ID], num_oov_buckets=1)
    outputs[F.HISTORY_ITEM_INDEX_XF] = tf.where(
        history_ids == "", tf.constant(-1, tf.int64), history_index
    )

    # Interest label: the categories of the user's history items as category
    # ids (multi-hot in the trainer); users without a history carry weight 0.
    history_categories = _sparse(inputs[F.HISTORY_CATEGORIES])
    outputs[F.HISTORY_CATEGORIES_XF] = tft.apply_vocabulary(
        history_categories, id_vocabs[F.ITEM_CATEGORY], num_oov_buckets=1
    )
    counts = tf.math.bincount(
        tf.cast(history_categories.indices[:, 0], tf.int32),
        minlength=tf.cast(history_categories.dense_shape[0], tf.int32),
    )
    outputs[F.INTEREST_WEIGHT] = tf.cast(counts > 0, tf.float32)

    # The raw item id travels along so the trainer can name recommended items.
    outputs[F.ITEM_ID] = _dense(inputs[F.ITEM_ID])
    for spec in F.RAW_FEATURES:
        if spec.role in ("label", "weight") and spec.dtype != "string":
            outputs[spec.name] = tf.cast(_dense(inputs[spec.name]), tf.float32)
    return outputs


def newest_ids(ids: tf.Tensor | tf.SparseTensor | tf.RaggedTensor, length: int) -> tf.Tensor:
    """A varlen list of ids, newest last -> its last ``length`` ids [batch, length], "" padded."""
    ragged = tf.RaggedTensor.from_sparse(_sparse(ids))
    return ragged[:, -length:].to_tensor(default_value="", shape=[None, length])


def _sparse(x: tf.Tensor | tf.SparseTensor | tf.RaggedTensor) -> tf.SparseTensor:
    """A varlen feature as a SparseTensor [batch, None]."""
    if isinstance(x, tf.SparseTensor):
        return x
    if isinstance(x, tf.RaggedTensor):
        return x.to_sparse()
    return tf.sparse.from_dense(x)


def text_vocab_size(tf_transform_output: tft.TFTransformOutput) -> int:
    """Embedding rows needed for token ids: words + padding + OOV."""
    return tf_transform_output.vocabulary_size_by_name(F.TEXT_VOCAB) + 2


def id_vocab_size(tf_transform_output: tft.TFTransformOutput, raw_name: str) -> int:
    """Embedding rows for an id feature: vocabulary + one OOV bucket."""
    return tf_transform_output.vocabulary_size_by_name(F.ID_VOCABS[raw_name]) + 1
