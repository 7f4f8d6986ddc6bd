"""The item catalogue as the trainer sees it: every distinct item of the
transformed examples, for retrieval metrics and the exported top-K index."""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from trainer import features as F
from trainer.data import ITEM_INPUTS, ITEM_KEY, item_key, transformed_dataset


def collect_catalog(
    file_patterns: List[str],
    data_accessor,
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int = 1024,
    text_features=None,
) -> Dict[str, np.ndarray]:
    """Raw item ids and item-tower inputs of each distinct item (first seen);
    ``text_features`` adds the pretrained text vectors (``data.transformed_dataset``).

    Reads the examples once; memory grows with the number of items only.
    """
    rows: Dict[bytes, Dict[str, np.ndarray]] = {}
    columns = (F.ITEM_ID, *ITEM_INPUTS)
    for pattern in file_patterns:
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
            _, first = np.unique(ids, return_index=True)
            for i in first:
                if ids[i] not in rows:
                    rows[ids[i]] = {name: np.asarray(batch[name])[i] for name in ITEM_INPUTS}
    if not rows:
        raise ValueError(f"no items in {file_patterns}: cannot build the retrieval catalogue")
    catalog = {F.ITEM_ID: np.array(list(rows), dtype=object)}
    for name in ITEM_INPUTS:
        catalog[name] = np.stack([row[name] for row in rows.values()])
    return catalog


def catalog_dataset(catalog: Dict[str, np.ndarray], batch_size: int = 1024) -> tf.data.Dataset:
    """Batches of item-tower inputs plus ``ITEM_KEY`` and the raw ``F.ITEM_ID``."""

    def with_key(batch):
        return {**batch, ITEM_KEY: item_key(batch[F.ITEM_ID])}

    return tf.data.Dataset.from_tensor_slices(catalog).batch(batch_size).map(with_key)
