"""Request logging, as TF Serving's ``logging_config`` names it: a sample of
the Predict calls a model answers, as ``PredictionLog`` records (request and
response) in TFRecord files, for training-serving skew checks
(``recsys-pipeline skew``).

In a model config file::

    config {
      name: "recommender"  base_path: "/models/recommender"
      logging_config {
        log_collector_config { type: "file" filename_prefix: "/logs/requests" }
        sampling_config { sampling_rate: 0.05 }
      }
    }

Files are ``<filename_prefix>-<start time>-<n>.tfrecord``; each holds at most
``max_records_per_file`` records and only the newest ``max_files`` are kept,
so the log never grows without bound. A failure to write is logged and
counted, never the request's failure.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import random
import threading
import time
from typing import Optional

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

log = logging.getLogger(__name__)
COLLECTOR_TYPES = ("", "file")


@dataclasses.dataclass(frozen=True)
class RequestLogging:
    """Where and how much of a model's Predict traffic is logged."""

    filename_prefix: str
    sampling_rate: float
    max_records_per_file: int = 10_000
    max_files: int = 20

    def __post_init__(self):
        if not self.filename_prefix:
            raise ValueError("logging_config needs log_collector_config.filename_prefix")
        if not 0.0 < self.sampling_rate <= 1.0:
            raise ValueError(
                f"logging_config sampling_rate {self.sampling_rate}: expected 0 < rate <= 1"
            )

    @classmethod
    def from_proto(cls, config) -> Optional["RequestLogging"]:
        """From TF Serving's ``LoggingConfig``; None when it is unset."""
        if not config.HasField("log_collector_config"):
            return None
        collector = config.log_collector_config
        if collector.type not in COLLECTOR_TYPES:
            raise ValueError(
                f"log_collector_config type {collector.type!r}: only 'file' is supported"
            )
        return cls(collector.filename_prefix, config.sampling_config.sampling_rate)


class RequestLogger:
    """Writes a sample of one model's Predict calls; thread-safe."""

    def __init__(self, settings: RequestLogging, seed: Optional[int] = None):
        self.settings = settings
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._writer: Optional[tf.io.TFRecordWriter] = None
        self._records = 0
        self._files = 0
        self._started = time.strftime("%Y%m%d-%H%M%S")
        self.logged = 0
        self.errors = 0
        os.makedirs(os.path.dirname(os.path.abspath(settings.filename_prefix)), exist_ok=True)

    def maybe_log(
        self, request: predict_pb2.PredictRequest, response: predict_pb2.PredictResponse
    ) -> None:
        with self._lock:
            if self._rng.random() >= self.settings.sampling_rate:
                return
            record = prediction_log_pb2.PredictionLog()
            record.log_metadata.model_spec.CopyFrom(response.model_spec)
            record.log_metadata.sampling_config.sampling_rate = self.settings.sampling_rate
            record.predict_log.request.CopyFrom(request)
            record.predict_log.response.CopyFrom(response)
            try:
                self._writer_for_next().write(record.SerializeToString())
                self._records += 1
                self.logged += 1
            except (OSError, tf.errors.OpError) as e:
                self.errors += 1
                log.warning("request log %s: %s", self.settings.filename_prefix, e)

    def _writer_for_next(self) -> tf.io.TFRecordWriter:
        if self._writer is not None and self._records < self.settings.max_records_per_file:
            return self._writer
        if self._writer is not None:
            self._writer.close()
        self._files += 1
        self._records = 0
        path = f"{self.settings.filename_prefix}-{self._started}-{self._files:05d}.tfrecord"
        self._writer = tf.io.TFRecordWriter(path)
        self._drop_old_files()
        return self._writer

    def _drop_old_files(self) -> None:
        files = sorted(glob.glob(f"{self.settings.filename_prefix}-*.tfrecord"))
        for path in files[: max(0, len(files) - self.settings.max_files)]:
            os.remove(path)

    def flush(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.flush()

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
