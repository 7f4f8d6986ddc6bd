"""Replays a version's warmup records before it is served, as TF Serving does.

``assets.extra/tf_serving_warmup_requests`` is a TFRecord file of
``PredictionLog``s; each ``predict_log.request`` is run on its signature once,
so the first real request does not pay for graph and kernel setup. As in TF
Serving, at most 1,000 records are read, and a record that fails fails the
version's load (it is not served).
"""

from __future__ import annotations

from typing import Mapping

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving.request_checks import RequestError, RequestLimits, check_inputs, to_arrays
from trainer import serving_contract as C
from trainer.warmup import MAX_WARMUP_RECORDS, warmup_path


class WarmupError(RuntimeError):
    """A warmup record that could not be read or run."""


def _replay(number: int, record: bytes, signatures: Mapping[str, object]) -> None:
    log = prediction_log_pb2.PredictionLog.FromString(record)
    kind = log.WhichOneof("log_type")
    if kind != "predict_log":
        raise WarmupError(f"record {number} is a {kind}; only predict_log is replayed")
    request = log.predict_log.request
    name = request.model_spec.signature_name or C.SERVING_DEFAULT
    if name not in signatures:
        raise WarmupError(f"record {number} names signature {name!r}, not in the model")
    signature = signatures[name]
    try:
        check_inputs(request.inputs, signature.inputs, RequestLimits())
    except RequestError as e:
        raise WarmupError(f"record {number} ({name}): {e.message}") from e
    signature.run(to_arrays(request.inputs), list(request.output_filter) or None)


def replay_warmup(version_path: str, signatures: Mapping[str, object]) -> int:
    """Runs every warmup record of ``version_path`` on ``signatures``; returns how many."""
    path = warmup_path(version_path)
    if not tf.io.gfile.exists(path):
        return 0
    number = 0
    try:
        records = tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS)
        for number, record in enumerate(records.as_numpy_iterator(), 1):
            _replay(number, record, signatures)
    except WarmupError as e:
        raise WarmupError(f"{path}: {e}") from e
    except Exception as e:
        raise WarmupError(f"{path}: at record {number or 1}: {type(e).__name__}: {e}") from e
    return number
