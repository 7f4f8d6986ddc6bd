"""The server's Prometheus metrics, under TF Serving's names where it has them.

* ``:tensorflow:serving:request_count`` (counter): requests by model,
  signature, API (predict, metadata, status), entrypoint (GRPC, REST) and
  status (the gRPC code's name);
* ``:tensorflow:serving:request_latency`` (histogram, microseconds as in TF
  Serving): the same, without the status;
* ``:tensorflow:serving:batching_session:input_batch_size`` and
  ``...:processed_batch_size`` (histograms): rows per batch before and after
  padding;
* ``:tensorflow:serving:model_version_state`` (gauge, 1 per version): each
  version's state (AVAILABLE, or END for a failed load), read at scrape time.

Label values come from the server's own models and signatures, never from
the request as sent: an unknown model or signature is counted as ``""``, so
no client can make the series grow without bound.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Mapping

import prometheus_client
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

prometheus_client.disable_created_metrics()
_NS = ":tensorflow:serving:"
_LATENCY_BUCKETS_US = tuple(
    b * m for m in (10, 100, 1_000, 10_000, 100_000, 1_000_000) for b in (1, 2.5, 5)
) + (10_000_000,)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST


class _VersionStates(Collector):
    def __init__(self, states: Callable[[], Mapping[str, Mapping[int, str]]]):
        self._states = states

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            f"{_NS}model_version_state",
            "1 for each model version in the labelled state",
            labels=["model_name", "version", "state"],
        )
        for model, versions in sorted(self._states().items()):
            for version, state in sorted(versions.items()):
                family.add_metric([model, str(version), state], 1)
        yield family


class ServerMetrics:
    """Counts what the server does; ``exposition()`` is the scrape's body."""

    def __init__(
        self,
        signatures: Callable[[str], Iterable[str]],
        states: Callable[[], Mapping[str, Mapping[int, str]]],
    ):
        """``signatures(model)`` names a model's signatures (empty for an
        unknown model); ``states()`` is model -> version -> state."""
        self._signatures = signatures
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        labels = ["model_name", "signature_name", "API", "entrypoint"]
        self._requests = prometheus_client.Counter(
            f"{_NS}request_count",
            "requests answered, by status",
            [*labels, "status"],
            registry=self.registry,
        )
        self._latency = prometheus_client.Histogram(
            f"{_NS}request_latency",
            "request latency in microseconds",
            labels,
            buckets=_LATENCY_BUCKETS_US,
            registry=self.registry,
        )
        self._batch_in, self._batch_out = (
            prometheus_client.Histogram(
                f"{_NS}batching_session:{name}",
                f"rows per batch {when} padding",
                ["model_name", "signature_name"],
                buckets=_BATCH_BUCKETS,
                registry=self.registry,
            )
            for name, when in (("input_batch_size", "before"), ("processed_batch_size", "after"))
        )
        self.registry.register(_VersionStates(states))

    def _known(self, model: str, signature: str) -> Dict[str, str]:
        names = self._signatures(model)  # a model's signatures by name; empty when unknown
        return {
            "model_name": model if names else "",
            "signature_name": signature if signature in names else "",
        }

    def request(
        self, entrypoint: str, api: str, model: str, signature: str, status: str, seconds: float
    ) -> None:
        labels = {**self._known(model, signature), "API": api, "entrypoint": entrypoint}
        self._requests.labels(**labels, status=status).inc()
        self._latency.labels(**labels).observe(seconds * 1e6)

    def batch(self, model: str, signature: str, rows: int, padded: int) -> None:
        labels = self._known(model, signature)
        self._batch_in.labels(**labels).observe(rows)
        self._batch_out.labels(**labels).observe(padded)

    def exposition(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)
