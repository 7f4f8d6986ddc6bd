"""A local model server speaking TF Serving's gRPC API over a pushed directory.

Implements ``tensorflow.serving.PredictionService`` (Predict,
GetModelMetadata) and ``tensorflow.serving.ModelService`` (GetModelStatus)
with TF Serving's status codes, so one client works against this server and
the real ``tensorflow_model_server``. It serves the newest version under
``--model_base_path`` and swaps in new ones as they appear (see
``model_store``). Binds to 127.0.0.1 unless told otherwise; drains in-flight
requests on SIGTERM/SIGINT. No request can knock it over: every tensor is
checked before it is materialised (``request_checks``), and concurrency, the
queue, each request's deadline and resident memory are bounded
(``admission``); every failure is answered with TF Serving's status codes.

    recsys-serve --model_name=recommender --model_base_path=runs/local/serving/recommender
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import signal
import threading
from typing import Callable, Optional

from trainer import keras_env as _keras_env  # noqa: F401  (before TF)

import grpc
import tensorflow as tf
from google.protobuf import any_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.admission import MemoryCeiling, ServerLimits, remaining_ms
from serving.model_store import LoadedVersion, ModelStore
from serving.request_checks import (
    RequestError,
    check_inputs,
    invalid,
    quote,
    quote_names,
    to_arrays,
)
from serving.tls import ServerTls, server_tls_from_args
from trainer import serving_contract as C

log = logging.getLogger(__name__)
DEFAULT_SIGNATURE = C.SERVING_DEFAULT
_MAX_ERROR_CHARS = 1000
_STATUS_BY_CODE = {code.value[0]: code for code in grpc.StatusCode}


def _answer(context: grpc.ServicerContext, rpc: str, handle: Callable[[], object]):
    """Runs one RPC; every failure becomes a status code, none escapes."""
    try:
        return handle()
    except RequestError as e:
        error = (e.code, e.message)
    except (
        tf.errors.OpError
    ) as e:  # the model refused the inputs (e.g. unparseable examples) or timed out
        error = (_STATUS_BY_CODE.get(e.error_code, grpc.StatusCode.INTERNAL), e.message)
    except UnicodeDecodeError:  # TF's error quoted undecodable input bytes
        error = (
            grpc.StatusCode.INVALID_ARGUMENT,
            "the inputs could not be parsed (e.g. not serialized tf.Examples)",
        )
    except Exception as e:  # a bug must not take the server down
        log.exception("%s failed", rpc)
        error = (grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
    code, message = error
    context.abort(code, message[:_MAX_ERROR_CHARS])


def _refuse_labels(spec) -> None:
    if spec.version_label:
        raise invalid(
            f"version label {quote(spec.version_label)}: version labels are not supported"
        )


def _resolve(store: ModelStore, spec) -> LoadedVersion:
    if spec.name != store.name:
        raise RequestError(
            grpc.StatusCode.NOT_FOUND,
            f"Servable not found for request: model {quote(spec.name)} "
            f"(this server serves {store.name!r})",
        )
    _refuse_labels(spec)
    loaded = store.current
    if loaded is None:
        raise RequestError(
            grpc.StatusCode.UNAVAILABLE,
            f"model {store.name!r} has no loadable version yet under {store.base_path}",
        )
    if spec.HasField("version") and spec.version.value != loaded.version:
        raise RequestError(
            grpc.StatusCode.NOT_FOUND,
            f"Servable not found for request: model {store.name!r} "
            f"version {spec.version.value} (serving version {loaded.version})",
        )
    return loaded


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, store: ModelStore, limits: ServerLimits, memory: MemoryCeiling):
        self._store, self._limits, self._memory = store, limits, memory
        self._request_limits = limits.request

    def Predict(self, request, context):
        return _answer(context, "Predict", lambda: self._predict(request, context))

    def _predict(self, request, context) -> predict_pb2.PredictResponse:
        timeout_ms = remaining_ms(context, self._limits.request_timeout_ms)
        loaded = _resolve(self._store, request.model_spec)
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = loaded.signatures.get(name)
        if signature is None:
            raise RequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Serving signature key {quote(name)} not found; "
                f"available: {sorted(loaded.signatures)}",
            )
        tensor_bytes = check_inputs(request.inputs, signature.inputs, self._request_limits)
        wanted = list(dict.fromkeys(request.output_filter))
        unknown = sorted(set(wanted) - set(signature.outputs))
        if unknown:
            raise invalid(
                f"output_filter names unknown outputs {quote_names(unknown)}; "
                f"available: {list(signature.outputs)}"
            )
        with self._memory.reserve(tensor_bytes):
            outputs = signature.run(to_arrays(request.inputs), wanted or None, timeout_ms)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = self._store.name
            response.model_spec.version.value = loaded.version
            response.model_spec.signature_name = name
            for key in sorted(outputs):
                response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
        return response

    def GetModelMetadata(self, request, context):
        return _answer(context, "GetModelMetadata", lambda: self._metadata(request))

    def _metadata(self, request) -> get_model_metadata_pb2.GetModelMetadataResponse:
        loaded = _resolve(self._store, request.model_spec)
        fields = list(dict.fromkeys(request.metadata_field))
        if fields != ["signature_def"]:
            raise invalid(f"metadata_field must be ['signature_def'], got {quote_names(fields)}")
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in loaded.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature_def)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self._store.name
        response.model_spec.version.value = loaded.version
        packed = any_pb2.Any()
        packed.Pack(signature_map)
        response.metadata["signature_def"].CopyFrom(packed)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, store: ModelStore):
        self._store = store

    def GetModelStatus(self, request, context):
        return _answer(context, "GetModelStatus", lambda: self._status(request))

    def _status(self, request) -> get_model_status_pb2.GetModelStatusResponse:
        spec = request.model_spec
        if spec.name != self._store.name:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"Could not find any versions of model {quote(spec.name)}",
            )
        _refuse_labels(spec)
        response = get_model_status_pb2.GetModelStatusResponse()
        Status = get_model_status_pb2.ModelVersionStatus
        loaded = self._store.current
        entries = []
        if loaded is not None:
            entries.append((loaded.version, Status.AVAILABLE, ""))
        for version, error in sorted(self._store.failures().items()):
            entries.append((version, Status.END, error))
        if spec.HasField("version"):
            entries = [e for e in entries if e[0] == spec.version.value]
        if not entries:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"no status for model {spec.name!r}")
        for version, state, error in entries:
            status = response.model_version_status.add()
            status.version, status.state = version, state
            if error:
                status.status.error_code = 13  # INTERNAL, as TF Serving reports failed loads
                status.status.error_message = error
        return response


class ModelServer:
    """The gRPC server plus its model store; ``start()``/``stop()`` or a ``with`` block.

    ``limits`` bounds everything a client can make it do (``ServerLimits``):
    beyond ``max_concurrent_requests`` running and ``max_queued_requests``
    waiting calls, gRPC answers ``RESOURCE_EXHAUSTED`` at once.
    """

    def __init__(
        self,
        model_name: str,
        model_base_path: str,
        host: str = "127.0.0.1",
        port: int = 8500,
        poll_seconds: float = 1.0,
        limits: Optional[ServerLimits] = None,
        tls: Optional[ServerTls] = None,
    ):
        self.limits = limits or ServerLimits()
        self.store = ModelStore(model_name, model_base_path, poll_seconds)
        self.memory = MemoryCeiling(self.limits.max_memory_bytes)
        options = [
            ("grpc.max_receive_message_length", self.limits.max_message_bytes),
            ("grpc.max_send_message_length", self.limits.max_message_bytes),
        ]
        self._server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(
                max_workers=self.limits.max_concurrent_requests, thread_name_prefix="rpc"
            ),
            options=options,
            maximum_concurrent_rpcs=self.limits.max_calls,
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(self.store, self.limits, self.memory), self._server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelService(self.store), self._server
        )
        self.tls = tls is not None
        self.port = (
            self._server.add_secure_port(f"{host}:{port}", tls.credentials())
            if tls
            else self._server.add_insecure_port(f"{host}:{port}")
        )
        if not self.port:
            raise OSError(f"cannot bind {host}:{port}")
        self.address = f"{host}:{self.port}"

    def start(self) -> "ModelServer":
        self.store.start()
        self._server.start()
        log.info(
            "serving model %s from %s on %s (%s); limits %s",
            self.store.name,
            self.store.base_path,
            self.address,
            "TLS" if self.tls else "plaintext",
            self.limits,
        )
        return self

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Stops taking requests, lets in-flight ones finish, then stops polling."""
        self._server.stop(grace_seconds).wait()
        self.store.stop()

    def wait(self) -> None:
        self._server.wait_for_termination()

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


def main(argv: Optional[list] = None) -> None:
    d = ServerLimits()
    p = argparse.ArgumentParser(description="TF Serving-compatible gRPC model server (local).")
    p.add_argument("--model_name", "--model-name", default="recommender")
    p.add_argument(
        "--model_base_path",
        "--model-base-path",
        required=True,
        help="directory holding integer version subdirectories",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8500)
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
    except ValueError as e:
        p.error(str(e))
    tls = server_tls_from_args(args.tls_cert, args.tls_key, args.tls_client_ca)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server = ModelServer(
        args.model_name,
        args.model_base_path,
        args.host,
        args.port,
        args.file_system_poll_wait_seconds,
        limits,
        tls=tls,
    )
    server.start()
    done = threading.Event()

    def shutdown(signum, _frame):
        log.info("signal %d: draining and stopping", signum)
        server.stop()
        done.set()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    print(f"serving {args.model_name} on {server.address}", flush=True)
    done.wait()


if __name__ == "__main__":
    main()
