"""The on-disk form of text embeddings: gzipped TFRecord shards of
``tf.train.Example`` {key: bytes, embedding: floats}, plus a JSON report.

The catalogue embedding step writes two of them: the item table (key = item
id, with the item's ``text``: a fine-tuned encoder re-reads it) in its output
artifact, and the cache (key = hash of model and text) that re-runs read so
that only new or changed texts are embedded.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np
import tensorflow as tf

KEY = "key"
EMBEDDING = "embedding"
TEXT = "text"
SHARD_SUFFIX = ".tfrecord.gz"
TABLE_PREFIX = "embeddings"
REPORT_FILE = "embedding_report.json"


def encode(key: bytes, vector: np.ndarray, text: Optional[str] = None) -> bytes:
    feature = {
        KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[key])),
        EMBEDDING: tf.train.Feature(
            float_list=tf.train.FloatList(value=np.asarray(vector, np.float32).ravel())
        ),
    }
    if text is not None:
        feature[TEXT] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode()]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def decode(record: bytes) -> Tuple[bytes, np.ndarray]:
    key, vector, _ = decode_row(record)
    return key, vector


def decode_row(record: bytes) -> Tuple[bytes, np.ndarray, Optional[str]]:
    """(key, embedding, text or None) of one record."""
    features = tf.train.Example.FromString(record).features.feature
    text = features[TEXT].bytes_list.value[0].decode("utf-8") if TEXT in features else None
    return (
        features[KEY].bytes_list.value[0],
        np.asarray(features[EMBEDDING].float_list.value, np.float32),
        text,
    )


def shards(directory: str, prefix: str = "") -> list:
    return sorted(tf.io.gfile.glob(os.path.join(directory, f"{prefix}*{SHARD_SUFFIX}")))


def records(directory: str, prefix: str = "") -> Iterator[Tuple[bytes, np.ndarray, Optional[str]]]:
    for path in shards(directory, prefix):
        for record in tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator():
            yield decode_row(record)


def read_table(directory: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keys as str [n], embeddings [n, dim], texts [n]: None where a row was
    written without its text) of an item table, sorted by key."""
    rows = {key: (vector, text) for key, vector, text in records(directory, TABLE_PREFIX)}
    if not rows:
        raise ValueError(f"{directory}: no text embeddings (no {TABLE_PREFIX}*{SHARD_SUFFIX})")
    keys = sorted(rows)
    dims = {rows[k][0].shape for k in keys}
    if len(dims) != 1:
        raise ValueError(f"{directory}: embeddings of different sizes {sorted(dims)}")
    return (
        np.array([k.decode("utf-8") for k in keys], dtype=object),
        np.stack([rows[k][0] for k in keys]),
        np.array([rows[k][1] for k in keys], dtype=object),
    )


def write_report(directory: str, report: Dict[str, Any]) -> None:
    with tf.io.gfile.GFile(os.path.join(directory, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)


def read_report(directory: str) -> Dict[str, Any]:
    path = os.path.join(directory, REPORT_FILE)
    if not tf.io.gfile.exists(path):
        raise ValueError(f"{path}: missing; the text embedding step did not finish")
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)
