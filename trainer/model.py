"""The multi-task two-tower Keras model with one shared keras-nlp text encoder."""
from __future__ import annotations

from typing import Dict

import keras_nlp
import tensorflow as tf

from trainer import features as F
from trainer.config import ModelConfig

keras = tf.keras


class MaskedMeanPooling(keras.layers.Layer):
    """Mean over the non-padding positions of a sequence."""

    def call(self, sequence: tf.Tensor, token_ids: tf.Tensor) -> tf.Tensor:
        mask = tf.cast(tf.not_equal(token_ids, 0), sequence.dtype)[..., tf.newaxis]
        total = tf.reduce_sum(sequence * mask, axis=1)
        return total / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


def build_text_encoder(config: ModelConfig, vocab_size: int, max_length: int) -> keras.Model:
    """Token ids [batch, length] -> text vector [batch, text_dim]."""
    token_ids = keras.Input(shape=(None,), dtype=tf.int64, name="token_ids")
    x = keras_nlp.layers.TokenAndPositionEmbedding(
        vocabulary_size=vocab_size, sequence_length=max_length,
        embedding_dim=config.text_dim, mask_zero=True)(token_ids)
    padding_mask = tf.not_equal(token_ids, 0)
    for _ in range(config.text_layers):
        x = keras_nlp.layers.TransformerEncoder(
            intermediate_dim=config.text_intermediate_dim, num_heads=config.text_heads,
            dropout=config.dropout)(x, padding_mask=padding_mask)
    pooled = MaskedMeanPooling()(x, token_ids)
    return keras.Model(token_ids, pooled, name="text_encoder")


def build_model(config: ModelConfig, vocab_sizes: Dict[str, int], jit_compile: bool = False) -> keras.Model:
    """Builds the model over transformed features; outputs one tensor per task.

    ``vocab_sizes`` maps the transformed id feature names and ``F.TEXT_VOCAB``
    to embedding table sizes.
    """
    inputs = {
        F.USER_ID_XF: keras.Input(shape=(), dtype=tf.int64, name=F.USER_ID_XF),
        F.ITEM_ID_XF: keras.Input(shape=(), dtype=tf.int64, name=F.ITEM_ID_XF),
        F.ITEM_CATEGORY_XF: keras.Input(shape=(), dtype=tf.int64, name=F.ITEM_CATEGORY_XF),
        F.ITEM_TOKENS_XF: keras.Input(shape=(F.ITEM_TEXT_LENGTH,), dtype=tf.int64, name=F.ITEM_TOKENS_XF),
        F.HISTORY_TOKENS_XF: keras.Input(shape=(F.HISTORY_TEXT_LENGTH,), dtype=tf.int64, name=F.HISTORY_TOKENS_XF),
    }
    max_length = max(F.ITEM_TEXT_LENGTH, F.HISTORY_TEXT_LENGTH)
    text_encoder = build_text_encoder(config, vocab_sizes[F.TEXT_VOCAB], max_length)

    def embed(name: str) -> tf.Tensor:
        return keras.layers.Embedding(vocab_sizes[name], config.embedding_dim,
                                      name=f"{name}_embedding")(inputs[name])

    user = keras.layers.Concatenate(name="user_features")(
        [embed(F.USER_ID_XF), text_encoder(inputs[F.HISTORY_TOKENS_XF])])
    user = keras.layers.Dense(config.tower_dim, activation="relu", name="user_tower")(user)
    item = keras.layers.Concatenate(name="item_features")(
        [embed(F.ITEM_ID_XF), embed(F.ITEM_CATEGORY_XF), text_encoder(inputs[F.ITEM_TOKENS_XF])])
    item = keras.layers.Dense(config.tower_dim, activation="relu", name="item_tower")(item)

    joint = keras.layers.Concatenate(name="user_item")([user, item, user * item])
    joint = keras.layers.Dropout(config.dropout)(joint)
    joint = keras.layers.Dense(config.tower_dim, activation="relu", name="interaction")(joint)
    tasks = config.active_tasks()
    outputs = {}
    # Heads compute in float32 even under mixed precision.
    for task in tasks:
        if task.kind == "binary" and task.esmm_parent:
            own = keras.layers.Dense(1, activation="sigmoid", dtype="float32",
                                     name=f"{task.name}_given_{task.esmm_parent}")(joint)
            outputs[task.name] = keras.layers.Multiply(name=task.name, dtype="float32")(
                [outputs[task.esmm_parent], own])
        elif task.kind == "binary":
            outputs[task.name] = keras.layers.Dense(1, activation="sigmoid", dtype="float32",
                                                    name=task.name)(joint)
        else:
            raw = keras.layers.Dense(1, dtype="float32", name=f"{task.name}_raw")(joint)
            # Ratings live in 1..5: centre the regression output there.
            outputs[task.name] = keras.layers.Rescaling(1.0, offset=3.0, dtype="float32", name=task.name)(raw)
    model = keras.Model(inputs, outputs, name="multitask_recommender")
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss={t.name: ("binary_crossentropy" if t.kind == "binary" else "mse") for t in tasks},
        loss_weights={t.name: float(config.task_weights.get(t.name, 1.0)) for t in tasks},
        weighted_metrics={t.name: ([keras.metrics.AUC(name="auc")] if t.kind == "binary"
                                   else [keras.metrics.RootMeanSquaredError(name="rmse")])
                          for t in tasks},
        jit_compile=jit_compile,
    )
    return model
