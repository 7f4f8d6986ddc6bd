"""A local model server speaking TF Serving's gRPC and REST APIs over pushed directories.

Implements ``tensorflow.serving.PredictionService`` (Predict,
GetModelMetadata) and ``tensorflow.serving.ModelService`` (GetModelStatus)
with TF Serving's status codes on ``--port``, and TF Serving's REST API on
``--rest_api_port`` (``rest``), so one client works against this server and
the real ``tensorflow_model_server``. It serves the models of
``--model_config_file`` (or ``--model_name``/``--model_base_path``) under
their version policies and labels, replaying each version's warmup records
before serving it, and swaps in new versions as they appear
(``model_store``); ``--enable_batching`` merges concurrent requests
(``batching``); ``--monitoring_config_file`` exposes Prometheus metrics on
the REST port (``metrics``). Binds to 127.0.0.1 unless told otherwise;
drains in-flight requests on SIGTERM/SIGINT. No request can knock it over:
every tensor is checked before it is materialised (``request_checks``), and
concurrency, the queue, each request's deadline and resident memory are
bounded (``admission``); every failure is answered with TF Serving's status
codes.

    recsys-serve --model_name=recommender --model_base_path=runs/local/serving/recommender \
        --rest_api_port=8501
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Optional, Sequence

from trainer import keras_env as _keras_env  # noqa: F401  (before TF)

from serving.admission import MemoryCeiling, ServerLimits
from serving.batching import BatchingOptions
from serving.grpc_service import GrpcService
from serving.model_config import ServedModel, read_model_config_file
from serving.model_store import ModelStore
from serving.predictor import Servables
from serving.rest import RestServer
from serving.serving_protos import ConfigFileError, MonitoringConfig, read_text_proto
from serving.tls import ServerTls, server_tls_from_args

log = logging.getLogger(__name__)


class ModelServer:
    """The gRPC server (and REST, with ``rest_port``) over its model stores;
    ``start()``/``stop()`` or a ``with`` block.

    ``limits`` bounds everything a client can make it do (``ServerLimits``):
    beyond ``max_concurrent_requests`` running and ``max_queued_requests``
    waiting calls, gRPC answers ``RESOURCE_EXHAUSTED`` at once (REST: 429).
    """

    def __init__(
        self,
        model_name: str = "recommender",
        model_base_path: Optional[str] = None,
        host: str = "127.0.0.1",
        port: int = 8500,
        poll_seconds: float = 1.0,
        limits: Optional[ServerLimits] = None,
        tls: Optional[ServerTls] = None,
        models: Optional[Sequence[ServedModel]] = None,
        rest_port: Optional[int] = None,
        batching: Optional[BatchingOptions] = None,
        prometheus_path: Optional[str] = None,
        warmup: bool = True,
    ):
        """Serves ``models`` (or the one ``model_name`` under ``model_base_path``).

        ``rest_port`` of ``None`` leaves REST off (0: any free port);
        ``batching`` of ``None`` leaves batching off; ``prometheus_path``
        serves metrics on the REST port; ``warmup`` replays warmup records.
        """
        if models is None:
            if not model_base_path:
                raise ValueError("give models or a model_base_path")
            models = [ServedModel(model_name, model_base_path)]
        if prometheus_path and rest_port is None:
            raise ValueError("Prometheus metrics are served on the REST port: give rest_port")
        self.limits = limits or ServerLimits()
        self.stores = {m.name: ModelStore(m, poll_seconds, warmup) for m in models}
        self.memory = MemoryCeiling(self.limits.max_memory_bytes)
        self.servables = Servables(self.stores, self.limits, self.memory, batching)
        self.tls = tls is not None
        self._grpc = GrpcService(self.servables, host, port, tls)
        self.port = self._grpc.port
        self.address = f"{host}:{self.port}"
        self.rest = (
            RestServer(self.servables, host, rest_port, prometheus_path)
            if rest_port is not None
            else None
        )

    @property
    def store(self) -> ModelStore:
        """The first model's store (the only one, unless a config file lists more)."""
        return next(iter(self.stores.values()))

    def start(self) -> "ModelServer":
        for store in self.stores.values():
            store.start()
        self._grpc.start()
        if self.rest:
            self.rest.start()
        for store in self.stores.values():
            log.info(
                "serving model %s (versions: %s, labels %s) from %s",
                store.name,
                store.model.policy.describe(),
                store.model.labels or "none",
                store.base_path,
            )
        log.info(
            "gRPC on %s (%s)%s; batching %s; limits %s",
            self.address,
            "TLS" if self.tls else "plaintext",
            f", REST on {self.rest.address}" if self.rest else "",
            "on" if self.servables.schedulers else "off",
            self.limits,
        )
        return self

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Stops taking requests, lets in-flight ones finish, then stops polling."""
        if self.rest:
            self.rest.stop()
        self._grpc.stop(grace_seconds)
        self.servables.stop()
        for store in self.stores.values():
            store.stop()

    def wait(self) -> None:
        self._grpc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _limits_from_args(args: argparse.Namespace) -> ServerLimits:
    return ServerLimits(
        max_batch_size=args.max_batch_size,
        max_message_bytes=args.max_message_bytes,
        max_string_bytes=args.max_string_bytes,
        max_concurrent_requests=args.max_concurrent_requests,
        max_queued_requests=args.max_queued_requests,
        request_timeout_ms=args.request_timeout_ms or None,
        max_memory_bytes=args.max_memory_bytes or None,
    )


def _models_from_args(args: argparse.Namespace) -> Sequence[ServedModel]:
    if args.model_config_file:
        if args.model_base_path:
            raise ValueError("give --model_config_file or --model_base_path, not both")
        return read_model_config_file(args.model_config_file)
    if not args.model_base_path:
        raise ValueError("give --model_base_path (with --model_name) or --model_config_file")
    return [ServedModel(args.model_name, args.model_base_path)]


def _prometheus_path(path: Optional[str]) -> Optional[str]:
    """The metrics path a ``--monitoring_config_file`` enables, if any."""
    if not path:
        return None
    config = read_text_proto(path, MonitoringConfig).prometheus_config
    if not config.enable:
        return None
    metrics_path = config.path or "/monitoring/prometheus/metrics"
    if not metrics_path.startswith("/") or metrics_path.startswith("/v1/"):
        raise ConfigFileError(
            f"{path!r}: prometheus path {metrics_path!r} must start with / and not clash with /v1/"
        )
    return metrics_path


def main(argv: Optional[list] = None) -> None:
    d = ServerLimits()
    p = argparse.ArgumentParser(
        description="TF Serving-compatible gRPC and REST model server (local)."
    )
    p.add_argument("--model_name", "--model-name", default="recommender")
    p.add_argument(
        "--model_base_path",
        "--model-base-path",
        help="directory holding integer version subdirectories",
    )
    p.add_argument(
        "--model_config_file",
        help="ModelServerConfig text file (models, version policies, labels), e.g. the "
        "models.config the Pusher writes; instead of --model_name/--model_base_path",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8500, help="gRPC port")
    p.add_argument(
        "--rest_api_port", type=int, default=0, help="REST port (TF Serving: 8501); 0: no REST"
    )
    p.add_argument(
        "--enable_batching", action="store_true", help="merge concurrent requests per signature"
    )
    p.add_argument("--batching_parameters_file", help="BatchingParameters text file")
    p.add_argument(
        "--monitoring_config_file",
        help="MonitoringConfig text file: prometheus_config { enable: true path: ... }",
    )
    p.add_argument(
        "--enable_model_warmup",
        type=lambda v: v.lower() in ("1", "true", "yes"),
        default=True,
        help="replay assets.extra/tf_serving_warmup_requests before serving a version",
    )
    p.add_argument("--file_system_poll_wait_seconds", "--poll-seconds", type=float, default=1.0)
    p.add_argument(
        "--max_batch_size",
        "--max-batch-size",
        type=int,
        default=d.max_batch_size,
        help="most rows (first dimension) a request's tensors may have",
    )
    p.add_argument(
        "--max_message_bytes",
        "--max-message-bytes",
        type=int,
        default=d.max_message_bytes,
        help="largest gRPC message; also bounds what one request may expand to",
    )
    p.add_argument(
        "--max_string_bytes",
        "--max-string-bytes",
        type=int,
        default=d.max_string_bytes,
        help="longest string element of a request tensor",
    )
    p.add_argument(
        "--max_concurrent_requests",
        "--grpc_max_threads",
        type=int,
        default=d.max_concurrent_requests,
        help="requests run at once",
    )
    p.add_argument(
        "--max_queued_requests",
        type=int,
        default=d.max_queued_requests,
        help="requests waiting for a thread; beyond them: RESOURCE_EXHAUSTED at once",
    )
    p.add_argument(
        "--request_timeout_ms",
        type=int,
        default=d.request_timeout_ms,
        help="server-side deadline of every request (the client's is honoured too; 0: none)",
    )
    p.add_argument(
        "--max_memory_bytes",
        type=int,
        default=0,
        help="refuse requests (RESOURCE_EXHAUSTED) that would take resident memory past this; "
        "0: off",
    )
    p.add_argument("--tls-cert", help="PEM certificate chain: serve over TLS (with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument(
        "--tls-client-ca", help="PEM CA bundle: require client certificates it signed (mutual TLS)"
    )
    args = p.parse_args(argv)
    try:
        limits = _limits_from_args(args)
        models = _models_from_args(args)
        batching = (
            BatchingOptions.from_file(args.batching_parameters_file)
            if args.enable_batching
            else None
        )
        prometheus_path = _prometheus_path(args.monitoring_config_file)
        if prometheus_path and not args.rest_api_port:
            raise ValueError("Prometheus metrics are served on the REST port: set --rest_api_port")
    except ValueError as e:
        p.error(str(e))
    tls = server_tls_from_args(args.tls_cert, args.tls_key, args.tls_client_ca)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server = ModelServer(
        host=args.host,
        port=args.port,
        poll_seconds=args.file_system_poll_wait_seconds,
        limits=limits,
        tls=tls,
        models=models,
        rest_port=args.rest_api_port or None,
        batching=batching,
        prometheus_path=prometheus_path,
        warmup=args.enable_model_warmup,
    )
    server.start()
    done = threading.Event()

    def shutdown(signum, _frame):
        if done.is_set():  # a second signal: stop waiting for the drain
            os._exit(128 + signum)
        log.info("signal %d: draining and stopping", signum)
        done.set()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    rest = f", REST on {server.rest.address}" if server.rest else ""
    print(f"serving {', '.join(server.stores)} on {server.address}{rest}", flush=True)
    # Wait in short slices: a signal the kernel delivers to one of gRPC's or
    # TensorFlow's threads does not interrupt a wait without a timeout, and
    # Python runs its handler only when the main thread wakes up.
    while not done.wait(0.5):
        pass
    stop_within(server, SHUTDOWN_SECONDS)


# How long a signalled server may take to drain before it exits regardless.
SHUTDOWN_SECONDS = 15.0


def stop_within(server: ModelServer, seconds: float) -> None:
    """Drains ``server`` for at most ``seconds``, then ends the process.

    The drain runs on a daemon thread: a version still loading or a library
    thread at interpreter shutdown (TensorFlow's) cannot keep a signalled
    server alive. Exits 0 after a complete drain, 1 when the bound ran out.
    """
    stopper = threading.Thread(target=server.stop, name="shutdown", daemon=True)
    stopper.start()
    stopper.join(seconds)
    drained = not stopper.is_alive()
    if not drained:
        log.error("not drained within %.0f s: exiting anyway", seconds)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if drained else 1)


if __name__ == "__main__":
    main()
