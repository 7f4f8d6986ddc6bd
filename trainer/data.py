"""Reads transformed examples into (features, labels, sample weights) datasets."""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import tensorflow as tf
import tensorflow_transform as tft
from tfx_bsl.public import tfxio

from trainer import features as F
from trainer.item_frequency import ITEM_PROBABILITY

MODEL_INPUTS = (
    F.USER_ID_XF,
    F.ITEM_ID_XF,
    F.ITEM_CATEGORY_XF,
    F.ITEM_TOKENS_XF,
    F.HISTORY_TOKENS_XF,
    F.ITEM_TEXT_VECTOR,
    F.HISTORY_TEXT_VECTOR,
    F.ITEM_TEXT_TOKEN_IDS,
    F.HISTORY_ITEM_INDEX_XF,
)
USER_INPUTS = (F.USER_ID_XF, F.HISTORY_TOKENS_XF, F.HISTORY_TEXT_VECTOR, F.HISTORY_ITEM_INDEX_XF)
ITEM_INPUTS = (
    F.ITEM_ID_XF,
    F.ITEM_CATEGORY_XF,
    F.ITEM_TOKENS_XF,
    F.ITEM_TEXT_VECTOR,
    F.ITEM_TEXT_TOKEN_IDS,
)
# A 62-bit hash of the raw item id: tells items apart for retrieval (accidental
# hits, recall@k) even when they share the OOV id, and stays numeric for XLA.
ITEM_KEY = "item_key"


def item_key(raw_item_id: tf.Tensor) -> tf.Tensor:
    return tf.strings.to_hash_bucket_fast(tf.reshape(raw_item_id, [-1]), 2**62)


def multi_hot(ids: tf.SparseTensor | tf.Tensor, depth: int) -> tf.Tensor:
    """Sparse or padded ids [batch, None] -> multi-hot float [batch, depth]."""
    if isinstance(ids, tf.SparseTensor):
        batch = tf.cast(ids.dense_shape[0], tf.int32)
        rows = tf.cast(ids.indices[:, 0], tf.int32)
        cols = tf.cast(ids.values, tf.int32)
    else:
        ids = tf.convert_to_tensor(ids)
        batch = tf.shape(ids)[0]
        rows = tf.repeat(tf.range(batch), tf.shape(ids)[1])
        cols = tf.cast(tf.reshape(ids, [-1]), tf.int32)
    hot = tf.scatter_nd(
        tf.stack([rows, cols], axis=1), tf.ones_like(cols, tf.float32), tf.stack([batch, depth])
    )
    return tf.minimum(hot, 1.0)


def split_labels(
    batch: Dict[str, tf.Tensor],
    tasks: Sequence[F.Task] | None = None,
    num_categories: int | None = None,
) -> Tuple[Dict, Dict, Dict]:
    """Transformed batch -> (model inputs, labels per task, weights per task).

    A weight of 0 (e.g. ``rating_weight`` of an unrated impression) keeps an
    example out of that task's loss. ``num_categories`` (category vocabulary
    plus OOV) sizes the multi-hot interest label. ``tasks`` defaults to ``F.TASKS``.
    """
    from trainer.task_kinds import kind_of

    inputs = {name: batch[name] for name in MODEL_INPUTS}
    if F.ITEM_ID in batch:
        inputs[ITEM_KEY] = item_key(batch[F.ITEM_ID])
    if ITEM_PROBABILITY in batch:  # the retrieval task's logQ correction
        inputs[ITEM_PROBABILITY] = batch[ITEM_PROBABILITY]
    labels, weights = {}, {}
    for task in F.TASKS if tasks is None else tasks:
        labels[task.name] = kind_of(task).label(batch, num_categories)
        weights[task.name] = tf.reshape(tf.cast(batch[task.weight], tf.float32), [-1])
    return inputs, labels, weights


def transformed_dataset(
    file_pattern: List[str],
    data_accessor,
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    seed: int | None = None,
    text_features=None,
    item_frequencies=None,
) -> tf.data.Dataset:
    """Batches of transformed feature dicts (shuffled by ``seed`` when given),
    with the pretrained text vectors of ``text_features``
    (``pretrained_text.PretrainedTextFeatures``; None: the encoder is off) and
    each item's sampling probability from ``item_frequencies``
    (``item_frequency.ItemFrequencies``; None: no logQ correction)."""
    from trainer.pretrained_text import no_pretrained_text

    text_features = text_features or no_pretrained_text()
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(
            batch_size=batch_size, shuffle=shuffle, shuffle_seed=seed, num_epochs=num_epochs
        ),
        tf_transform_output.transformed_metadata.schema,
    )
    dataset = dataset.map(text_features.add_to, num_parallel_calls=tf.data.AUTOTUNE)
    if item_frequencies is not None:
        dataset = dataset.map(item_frequencies.add_to, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset


def input_fn(
    file_pattern: List[str],
    data_accessor,
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int,
    shuffle: bool = True,
    tasks: Sequence[F.Task] | None = None,
    num_categories: int | None = None,
    seed: int | None = None,
    text_features=None,
    item_frequencies=None,
) -> tf.data.Dataset:
    """Batched, repeated dataset of (inputs, labels, weights) for Keras."""
    dataset = transformed_dataset(
        file_pattern,
        data_accessor,
        tf_transform_output,
        batch_size,
        shuffle,
        seed=seed,
        text_features=text_features,
        item_frequencies=item_frequencies,
    )
    dataset = dataset.map(
        lambda batch: split_labels(batch, tasks, num_categories),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).prefetch(tf.data.AUTOTUNE)
    return dataset.with_options(sharding_options(file_pattern))


def sharding_options(file_pattern: List[str]) -> tf.data.Options:
    """How a multi-worker strategy splits the data: by file when every worker
    gets at least one, else by element (tfxio has no shard option)."""
    from trainer.cluster import read_cluster

    cluster = read_cluster()
    workers = cluster.num_workers if cluster is not None else 1
    files = sum(len(tf.io.gfile.glob(pattern)) for pattern in file_pattern)
    policy = tf.data.experimental.AutoShardPolicy
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        policy.FILE if files >= workers else policy.DATA
    )
    return options
