"""Reads transformed examples into (features, labels, sample weights) datasets."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import tensorflow as tf
import tensorflow_transform as tft
from tfx_bsl.public import tfxio

from trainer import features as F

MODEL_INPUTS = (F.USER_ID_XF, F.ITEM_ID_XF, F.ITEM_CATEGORY_XF,
                F.ITEM_TOKENS_XF, F.HISTORY_TOKENS_XF)


def split_labels(batch: Dict[str, tf.Tensor], tasks: Sequence[F.Task] = F.TASKS) -> Tuple[Dict, Dict, Dict]:
    """Transformed batch -> (model inputs, labels per task, weights per task).

    A weight of 0 (e.g. ``rating_weight`` of an unrated impression) keeps an
    example out of that task's loss.
    """
    inputs = {name: batch[name] for name in MODEL_INPUTS}
    labels, weights = {}, {}
    for task in tasks:
        label = tf.reshape(batch[task.label], [-1, 1])
        labels[task.name] = label
        weights[task.name] = tf.reshape(batch[task.weight], [-1])
    return inputs, labels, weights


def input_fn(file_pattern: List[str], data_accessor, tf_transform_output: tft.TFTransformOutput,
             batch_size: int, shuffle: bool = True, tasks: Sequence[F.Task] = F.TASKS) -> tf.data.Dataset:
    """Batched, repeated dataset of transformed examples for Keras."""
    dataset = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=shuffle, num_epochs=None),
        tf_transform_output.transformed_metadata.schema)
    return dataset.map(lambda batch: split_labels(batch, tasks), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
