"""TF Transform preprocessing: ids to vocabulary indices, text to token ids.

Tokenisation uses core TF string ops only (lower-case, strip punctuation,
split on spaces) with a vocabulary computed over the training text of items
and histories, so the serving graph needs no tensorflow-text custom ops.
Token id 0 is padding, 1 is out-of-vocabulary, words start at 2.
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
    """TFX Transform entry point (``custom_config`` only carries the code version)."""
    outputs: Dict[str, tf.Tensor] = {}
    for raw_name, vocab_name in F.ID_VOCABS.items():
        outputs[F.transformed_name(raw_name)] = tft.compute_and_apply_vocabulary(
            _dense(inputs[raw_name]), num_oov_buckets=1, vocab_filename=vocab_name)

    item_tokens = tokenize(tf.strings.join(
        [_dense(inputs[F.ITEM_TITLE]), _dense(inputs[F.ITEM_DESCRIPTION])], separator=" "))
    # The user's text: profile (from the optional user table), then history titles.
    history_tokens = tokenize(tf.strings.join(
        [_dense(inputs[F.USER_PROFILE]), _dense(inputs[F.HISTORY_TITLES])], separator=" "))
    vocab = tft.vocabulary(
        tf.concat([item_tokens.flat_values, history_tokens.flat_values], axis=0),
        top_k=TEXT_VOCAB_TOP_K, frequency_threshold=TEXT_VOCAB_MIN_FREQUENCY,
        vocab_filename=F.TEXT_VOCAB)
    outputs[F.ITEM_TOKENS_XF] = _token_ids(item_tokens, vocab, F.ITEM_TEXT_LENGTH)
    outputs[F.HISTORY_TOKENS_XF] = _token_ids(history_tokens, vocab, F.HISTORY_TEXT_LENGTH)

    for spec in F.RAW_FEATURES:
        if spec.role in ("label", "weight"):
            outputs[spec.name] = tf.cast(_dense(inputs[spec.name]), tf.float32)
    return outputs


def text_vocab_size(tf_transform_output: tft.TFTransformOutput) -> int:
    """Embedding rows needed for token ids: words + padding + OOV."""
    return tf_transform_output.vocabulary_size_by_name(F.TEXT_VOCAB) + 2


def id_vocab_size(tf_transform_output: tft.TFTransformOutput, raw_name: str) -> int:
    """Embedding rows for an id feature: vocabulary + one OOV bucket."""
    return tf_transform_output.vocabulary_size_by_name(F.ID_VOCABS[raw_name]) + 1
