"""A local model server speaking TF Serving's gRPC API over a pushed directory.

Implements ``tensorflow.serving.PredictionService`` (Predict,
GetModelMetadata) and ``tensorflow.serving.ModelService`` (GetModelStatus)
with TF Serving's status codes, so one client works against this server and
the real ``tensorflow_model_server``. It serves the newest version under
``--model_base_path`` and swaps in new ones as they appear (see
``model_store``). Binds to 127.0.0.1 unless told otherwise; limits message
and batch size; drains in-flight requests on SIGTERM/SIGINT.

    recsys-serve --model_name=recommender --model_base_path=runs/local/serving/recommender
"""
from __future__ import annotations

import argparse
import concurrent.futures
import logging
import signal
import threading
from typing import Dict, Optional

from trainer import keras_env as _keras_env  # noqa: F401  (before TF)

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import any_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from serving.model_store import LoadedVersion, ModelStore
from serving.tls import ServerTls, server_tls_from_args

log = logging.getLogger(__name__)
DEFAULT_SIGNATURE = "serving_default"
DEFAULT_MAX_MESSAGE_BYTES = 16 * 2**20
DEFAULT_MAX_BATCH_SIZE = 1024


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _resolve(store: ModelStore, spec) -> LoadedVersion:
    if spec.name != store.name:
        raise _Abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: model {spec.name!r} "
                     f"(this server serves {store.name!r})")
    loaded = store.current
    if loaded is None:
        raise _Abort(grpc.StatusCode.UNAVAILABLE, f"model {store.name!r} has no loadable version yet "
                     f"under {store.base_path}")
    if spec.HasField("version") and spec.version.value != loaded.version:
        raise _Abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: model {spec.name!r} "
                     f"version {spec.version.value} (serving version {loaded.version})")
    if spec.version_label:
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "version labels are not supported")
    return loaded


def _inputs(request, fn, max_batch_size: int) -> Dict[str, tf.Tensor]:
    _, specs = fn.structured_input_signature
    missing = sorted(set(specs) - set(request.inputs))
    unknown = sorted(set(request.inputs) - set(specs))
    if missing or unknown:
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                     f"inputs do not match the signature: missing {missing}, unexpected {unknown}; "
                     f"expected {sorted(specs)}")
    tensors, batch = {}, None
    for name, spec in specs.items():
        proto = request.inputs[name]
        dtype = tf.dtypes.as_dtype(proto.dtype) if proto.dtype else None
        if dtype != spec.dtype:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                         f"input {name!r} must be {spec.dtype.name}, got "
                         f"{dtype.name if dtype else 'no dtype'}")
        try:
            value = tf.make_ndarray(proto)
        except Exception as e:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"input {name!r} is not a valid tensor: {e}")
        if not spec.shape.is_compatible_with(value.shape):
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                         f"input {name!r} has shape {list(value.shape)}, expected {spec.shape}")
        rows = value.shape[0] if value.ndim else 1
        if batch is not None and rows != batch:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"inputs have different batch sizes ({batch}, {rows})")
        batch = rows
        tensors[name] = tf.constant(value, dtype=spec.dtype)
    if batch is not None and batch > max_batch_size:
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                     f"batch size {batch} exceeds the maximum of {max_batch_size}")
    return tensors


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, store: ModelStore, max_batch_size: int):
        self._store, self._max_batch_size = store, max_batch_size

    def Predict(self, request, context):
        try:
            loaded = _resolve(self._store, request.model_spec)
            signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
            fn = loaded.signatures.get(signature)
            if fn is None:
                raise _Abort(grpc.StatusCode.FAILED_PRECONDITION,
                             f'Serving signature key "{signature}" not found; '
                             f"available: {sorted(loaded.signatures)}")
            inputs = _inputs(request, fn, self._max_batch_size)
            wanted = list(request.output_filter)
            unknown = sorted(set(wanted) - set(fn.structured_outputs))
            if unknown:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"output_filter names unknown outputs {unknown}")
            try:
                outputs = fn(**inputs)
            except tf.errors.InvalidArgumentError as e:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, e.message)
            except UnicodeDecodeError:  # TF's error quoted undecodable input bytes
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                             "the inputs could not be parsed (e.g. not serialized tf.Examples)")
            response = predict_pb2.PredictResponse()
            response.model_spec.name = self._store.name
            response.model_spec.version.value = loaded.version
            response.model_spec.signature_name = signature
            for name in wanted or sorted(outputs):
                response.outputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(outputs[name])))
            return response
        except _Abort as e:
            context.abort(e.code, e.message)
        except Exception as e:  # a bug must not take the server down
            log.exception("Predict failed")
            context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")

    def GetModelMetadata(self, request, context):
        try:
            loaded = _resolve(self._store, request.model_spec)
            fields = set(request.metadata_field)
            if fields != {"signature_def"}:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                             f"metadata_field must be ['signature_def'], got {sorted(fields)}")
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
        except _Abort as e:
            context.abort(e.code, e.message)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, store: ModelStore):
        self._store = store

    def GetModelStatus(self, request, context):
        spec = request.model_spec
        if spec.name != self._store.name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name!r}")
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
            context.abort(grpc.StatusCode.NOT_FOUND, f"no status for model {spec.name!r}")
        for version, state, error in entries:
            status = response.model_version_status.add()
            status.version, status.state = version, state
            if error:
                status.status.error_code = 13  # INTERNAL, as TF Serving reports failed loads
                status.status.error_message = error
        return response


class ModelServer:
    """The gRPC server plus its model store; ``start()``/``stop()`` or a ``with`` block."""

    def __init__(self, model_name: str, model_base_path: str, host: str = "127.0.0.1", port: int = 8500,
                 poll_seconds: float = 1.0, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, workers: int = 8,
                 tls: Optional[ServerTls] = None):
        self.store = ModelStore(model_name, model_base_path, poll_seconds)
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes)]
        self._server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=workers), options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(self.store, max_batch_size), self._server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.store), self._server)
        self.tls = tls is not None
        self.port = (self._server.add_secure_port(f"{host}:{port}", tls.credentials()) if tls
                     else self._server.add_insecure_port(f"{host}:{port}"))
        if not self.port:
            raise OSError(f"cannot bind {host}:{port}")
        self.address = f"{host}:{self.port}"

    def start(self) -> "ModelServer":
        self.store.start()
        self._server.start()
        log.info("serving model %s from %s on %s (%s)", self.store.name, self.store.base_path, self.address,
                 "TLS" if self.tls else "plaintext")
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


def main(argv: Optional[list] = None) -> None:
    p = argparse.ArgumentParser(description="TF Serving-compatible gRPC model server (local).")
    p.add_argument("--model_name", "--model-name", default="recommender")
    p.add_argument("--model_base_path", "--model-base-path", required=True,
                   help="directory holding integer version subdirectories")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8500)
    p.add_argument("--file_system_poll_wait_seconds", "--poll-seconds", type=float, default=1.0)
    p.add_argument("--max_batch_size", "--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE)
    p.add_argument("--max_message_bytes", "--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES)
    p.add_argument("--tls-cert", help="PEM certificate chain: serve over TLS (with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", help="PEM CA bundle: require client certificates it signed (mutual TLS)")
    args = p.parse_args(argv)
    tls = server_tls_from_args(args.tls_cert, args.tls_key, args.tls_client_ca)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = ModelServer(args.model_name, args.model_base_path, args.host, args.port,
                         args.file_system_poll_wait_seconds, args.max_batch_size, args.max_message_bytes,
                         tls=tls)
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
