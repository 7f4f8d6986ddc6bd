"""Reads the item catalogue (JSON Lines, CSV or Parquet; plain or gzip) for clients."""

from __future__ import annotations

import csv
import gzip
import io
import os
from typing import Dict, List

import tensorflow as tf

from components import interaction_logs as logs
from components.log_config import LogConfig, resolve_format


def _text(path: str) -> str:
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    return (gzip.decompress(data) if path.endswith(".gz") else data).decode("utf-8")


def load_catalog(data_dir: str, config: LogConfig = LogConfig()) -> List[Dict[str, str]]:
    """Valid catalogue items as dicts (item_id, title, description, category)."""
    items: Dict[str, Dict[str, str]] = {}
    for path in sorted(tf.io.gfile.glob(os.path.join(data_dir, config.catalog_pattern))):
        fmt = resolve_format(path, config.catalog_format)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            records = pq.read_table(path).to_pylist()
        elif fmt == "csv":
            records = list(csv.DictReader(io.StringIO(_text(path))))
        else:
            records = [line for line in _text(path).splitlines() if line.strip()]
        for record in records:
            try:
                if isinstance(record, str):
                    record = logs.decode_json(record, path)
                item_id, item = logs.normalize_item(record, config, path)
            except logs.BadRecord:
                continue  # ingestion counts and dead-letters these
            items[item_id] = {
                "item_id": item_id,
                "title": item.title,
                "description": item.description,
                "category": item.category,
            }
    return list(items.values())
