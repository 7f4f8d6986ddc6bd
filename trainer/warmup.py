"""TF Serving warmup records: ``<export_dir>/assets.extra/tf_serving_warmup_requests``.

TF Serving replays this file (a TFRecord of ``PredictionLog`` protos, each a
``predict_log.request``, at most ``MAX_WARMUP_RECORDS``) when it loads a
version, before the version serves, so the first real request does not pay
for graph tracing, kernel selection and table initialisation
(https://www.tensorflow.org/tfx/serving/saved_model_warmup); the local
server (``serving/``) replays it the same way.

Requests go to every signature a client calls through the server
(``WARMUP_SIGNATURES``): ``serving_default``, ``predict`` and, with the
retrieval task, ``recommend``, each at every batch size of
``WARMUP_BATCH_SIZES`` so both the single-row and the batched shapes warm
up. ``transform_features`` and ``evaluate`` get none: they take labelled
examples and TFMA calls them in process, never through the server.

The rows are what the model was exported with: catalogue items (their id,
category and the words of their text, read back through Transform's
vocabularies), users from the user-id vocabulary with histories of other
catalogue items, and, in the batched requests, a user and an item never
seen in training, so the out-of-vocabulary paths (and, with the pretrained
text encoder, embedding an unknown item's text in the graph) warm up too.
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from trainer import features as F
from trainer import serving_contract as C

ASSETS_EXTRA = C.ASSETS_EXTRA
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving reads no more
WARMUP_SIGNATURES: Tuple[str, ...] = (C.SERVING_DEFAULT, C.PREDICT, C.RECOMMEND)
WARMUP_BATCH_SIZES: Tuple[int, ...] = (1, 8)
# The batched requests' last row: a user and an item the model never saw.
UNSEEN_USER_ID = "warmup-unseen-user"
UNSEEN_ITEM_ID = "warmup-unseen-item"
_HISTORY_LENGTHS = (2, 0, 1)  # items in each row's history, in turn
_TITLE_WORDS = 4  # words of a made-up title (no catalogue text at hand)


def warmup_path(export_dir: str) -> str:
    """Where TF Serving looks for the warmup records of ``export_dir``."""
    return os.path.join(export_dir, ASSETS_EXTRA, WARMUP_FILE)


def signature_inputs(signature_name: str) -> Tuple[str, ...]:
    """The string inputs (one per row) of a signature in ``WARMUP_SIGNATURES``."""
    inputs = {
        C.SERVING_DEFAULT: (C.EXAMPLES,),
        C.PREDICT: C.PREDICT_FEATURES,
        C.RECOMMEND: C.RECOMMEND_FEATURES,
    }
    if signature_name not in inputs:
        raise ValueError(
            f"no warmup requests for signature {signature_name!r}; "
            f"warmup covers {list(WARMUP_SIGNATURES)}"
        )
    return inputs[signature_name]


def serialized_example(row: Mapping[str, str]) -> bytes:
    """A request row -> the serialized tf.Example of its raw model features
    (``serving_default``'s input; the history ids as a list)."""
    feature = {}
    for raw in F.RAW_FEATURES:
        if raw.role != "model" or raw.name not in row:
            continue
        value = row[raw.name]
        values = _split_ids(value) if raw.varlen else [value]
        feature[raw.name] = tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[v.encode("utf-8") for v in values])
        )
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _split_ids(joined: str) -> List[str]:
    return [i.strip() for i in joined.split(F.HISTORY_SEPARATOR.strip()) if i.strip()]


def _column(signature_name: str, name: str, rows: Sequence[Mapping[str, str]]) -> List[bytes]:
    if signature_name == C.SERVING_DEFAULT:
        return [serialized_example(row) for row in rows]
    return [row.get(name, "").encode("utf-8") for row in rows]


def warmup_requests(
    signature_names: Iterable[str],
    rows: Sequence[Mapping[str, str]],
    batch_sizes: Sequence[int] = WARMUP_BATCH_SIZES,
) -> List[predict_pb2.PredictRequest]:
    """One PredictRequest per warmup signature and batch size (the first
    ``batch_size`` rows, repeated when there are fewer).

    Args:
      signature_names: the exported signatures (a model's signature dict
        will do); those outside ``WARMUP_SIGNATURES`` are skipped.
      rows: raw request rows, feature name (``serving_contract``'s inputs)
        -> string; ``history_item_ids`` and ``exclude_item_ids`` joined "a | b".
      batch_sizes: the rows per request.
    """
    if not rows:
        raise ValueError("warmup requests need at least one row")
    exported = set(signature_names)
    requests = []
    for name in (s for s in WARMUP_SIGNATURES if s in exported):
        for size in batch_sizes:
            batch = [rows[i % len(rows)] for i in range(size)]
            request = predict_pb2.PredictRequest()
            # model_spec.name stays empty: TF Serving warms up the version it
            # is loading, whatever the name says.
            request.model_spec.signature_name = name
            for input_name in signature_inputs(name):
                request.inputs[input_name].CopyFrom(
                    tf.make_tensor_proto(_column(name, input_name, batch), dtype=tf.string)
                )
            requests.append(request)
    _check_count(len(requests))
    return requests


def _check_count(count: int) -> None:
    if count > MAX_WARMUP_RECORDS:
        raise ValueError(f"{count} warmup requests; TF Serving reads {MAX_WARMUP_RECORDS}")


def write_warmup_requests(export_dir: str, requests: Sequence[predict_pb2.PredictRequest]) -> str:
    """Writes ``requests`` as TF Serving's warmup file of ``export_dir``
    (uncompressed TFRecord of PredictionLog); returns its path."""
    _check_count(len(requests))
    path = warmup_path(export_dir)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(export_dir: str) -> List[predict_pb2.PredictRequest]:
    """The warmup requests of ``export_dir``, in file order (none: no file)."""
    path = warmup_path(export_dir)
    if not tf.io.gfile.exists(path):
        return []
    return [
        prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        for record in tf.data.TFRecordDataset(path)
    ]


def _words(vocabulary: Sequence[bytes]) -> List[str]:
    return [w.decode("utf-8", "replace") if isinstance(w, bytes) else str(w) for w in vocabulary]


def _most_frequent(tf_transform_output, raw_name: str, count: int) -> List[str]:
    """The first ``count`` entries of an id vocabulary (the most frequent
    first), without reading the whole file (users may be millions)."""
    name = F.ID_VOCABS[raw_name]
    path = tf_transform_output.vocabulary_file_by_name(name)
    if path.endswith("tfrecord.gz"):
        return _words(tf_transform_output.vocabulary_by_name(name)[:count])
    entries = []
    with tf.io.gfile.GFile(path, "rb") as f:
        for line in f:
            if len(entries) == count:
                break
            entries.append(line.rstrip(b"\n"))
    return _words(entries)


def _catalogue_items(
    catalog: Mapping[str, np.ndarray], words: Sequence[str], categories: Sequence[str]
) -> List[Dict[str, str]]:
    """Each catalogue item's raw id, category and text (its words, read back
    from its token ids: 0 padding, 1 out of vocabulary, words from 2)."""
    ids = catalog[F.ITEM_ID]
    tokens = np.asarray(catalog.get(F.ITEM_TOKENS_XF, np.zeros((len(ids), 0), np.int64)))
    category_ids = np.asarray(catalog[F.ITEM_CATEGORY_XF]).reshape(len(ids), -1)[:, 0]
    items = []
    for row, item_id in enumerate(ids):
        known = [int(t) for t in tokens[row].reshape(-1) if 2 <= t < len(words) + 2]
        title = " ".join(words[t - 2] for t in known)
        category = int(category_ids[row])
        items.append(
            {
                F.ITEM_ID: _words([item_id])[0],
                F.ITEM_TITLE: title or _made_up_title(words, row),
                F.ITEM_CATEGORY: categories[category % len(categories)],
            }
        )
    return items


def _made_up_title(words: Sequence[str], n: int) -> str:
    if not words:
        return f"item {n}"
    return " ".join(words[(n * _TITLE_WORDS + i) % len(words)] for i in range(_TITLE_WORDS))


def request_rows(
    tf_transform_output,
    catalog: Optional[Mapping[str, np.ndarray]] = None,
    count: int = max(WARMUP_BATCH_SIZES),
) -> List[Dict[str, str]]:
    """``count`` raw request rows (every input of ``WARMUP_SIGNATURES``) from
    what the model was exported with.

    Args:
      tf_transform_output: Transform's output: its user, item, category and
        text vocabularies.
      catalog: the export's catalogue (``trainer.catalog``); None: items
        from the item-id vocabulary with made-up titles.
      count: rows; with more than one, the last is a user and an item never
        seen in training.
    """
    words = _words(tf_transform_output.vocabulary_by_name(F.TEXT_VOCAB))
    category_vocabulary = tf_transform_output.vocabulary_by_name(F.ID_VOCABS[F.ITEM_CATEGORY])
    categories = _words(category_vocabulary) or [""]
    users = _most_frequent(tf_transform_output, F.USER_ID, count)
    if catalog is not None and len(catalog[F.ITEM_ID]):
        items = _catalogue_items(catalog, words, categories)
    else:
        items = [
            {
                F.ITEM_ID: item_id,
                F.ITEM_TITLE: _made_up_title(words, n),
                F.ITEM_CATEGORY: categories[n % len(categories)],
            }
            for n, item_id in enumerate(_most_frequent(tf_transform_output, F.ITEM_ID, count))
        ]
    unseen = {
        F.ITEM_ID: UNSEEN_ITEM_ID,
        F.ITEM_TITLE: _made_up_title(words, count),
        F.ITEM_CATEGORY: categories[0],
    }
    items = items or [unseen]
    users = users or [UNSEEN_USER_ID]
    rows = []
    for n in range(count):
        item = items[n % len(items)]
        history = [items[(n + 1 + h) % len(items)] for h in range(_HISTORY_LENGTHS[n % 3])]
        user_id = users[n % len(users)]
        if count > 1 and n == count - 1:
            item, user_id = unseen, UNSEEN_USER_ID
        rows.append(
            {
                F.USER_ID: user_id,
                **item,
                F.ITEM_DESCRIPTION: "",
                F.HISTORY_TITLES: F.HISTORY_SEPARATOR.join(h[F.ITEM_TITLE] for h in history),
                F.HISTORY_ITEM_IDS: F.HISTORY_SEPARATOR.join(h[F.ITEM_ID] for h in history),
                F.USER_PROFILE: _made_up_title(words, n + 1) if n % 2 else "",
                C.EXCLUDE_ITEM_IDS: items[(n + 3) % len(items)][F.ITEM_ID] if n % 2 else "",
            }
        )
    return rows
