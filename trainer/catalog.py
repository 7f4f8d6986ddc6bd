"""The item catalogue as the trainer sees it: every distinct item of the
transformed examples, for retrieval metrics and the exported top-K index."""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from trainer import features as F
from trainer.data import ITEM_INPUTS, ITEM_KEY, item_key, transformed_dataset


TRAIN_IMPRESSIONS = "train_impressions"


def train_impressions(catalog: Dict[str, np.ndarray]) -> Dict[str, int]:
    """Raw item id -> its number of training examples."""
    return {
        (i.decode() if isinstance(i, bytes) else str(i)): int(c)
        for i, c in zip(catalog[F.ITEM_ID], catalog[TRAIN_IMPRESSIONS])
    }


def collect_catalog(
    file_patterns: List[str],
    data_accessor,
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int = 1024,
    text_features=None,
) -> Dict[str, np.ndarray]:
    """Raw item ids and item-tower inputs of each distinct item (first seen),
    and ``TRAIN_IMPRESSIONS``: each item's examples in ``file_patterns[0]``
    (the training split). ``text_features`` adds the pretrained text vectors
    (``data.transformed_dataset``).

    Reads the examples once; memory grows with the number of items only.
    """
    rows: Dict[bytes, Dict[str, np.ndarray]] = {}
    train_counts: Dict[bytes, int] = {}
    columns = (F.ITEM_ID, *ITEM_INPUTS)
    for number, pattern in enumerate(file_patterns):
        dataset = transformed_dataset(
            [pattern] if isinstance(pattern, str) else pattern,
            data_accessor,
            tf_transform_output,
            batch_size,
            shuffle=False,
            num_epochs=1,
            text_features=text_features,
        )
        dataset = dataset.map(lambda batch: {name: batch[name] for name in columns})
        for batch in dataset.as_numpy_iterator():
            ids = np.asarray(batch[F.ITEM_ID]).reshape(-1)
            distinct, first, counts = np.unique(ids, return_index=True, return_counts=True)
            if number == 0:
                for item, count in zip(distinct, counts):
                    train_counts[item] = train_counts.get(item, 0) + int(count)
            for i in first:
                if ids[i] not in rows:
                    rows[ids[i]] = {name: np.asarray(batch[name])[i] for name in ITEM_INPUTS}
    if not rows:
        raise ValueError(f"no items in {file_patterns}: cannot build the retrieval catalogue")
    catalog = {
        F.ITEM_ID: np.array(list(rows), dtype=object),
        TRAIN_IMPRESSIONS: np.array([train_counts.get(i, 0) for i in rows], np.int64),
    }
    for name in ITEM_INPUTS:
        catalog[name] = np.stack([row[name] for row in rows.values()])
    return catalog


def catalog_dataset(catalog: Dict[str, np.ndarray], batch_size: int = 1024) -> tf.data.Dataset:
    """Batches of item-tower inputs plus ``ITEM_KEY`` and the raw ``F.ITEM_ID``."""

    def with_key(batch):
        return {**batch, ITEM_KEY: item_key(batch[F.ITEM_ID])}

    columns = {name: values for name, values in catalog.items() if name != TRAIN_IMPRESSIONS}
    return tf.data.Dataset.from_tensor_slices(columns).batch(batch_size).map(with_key)
