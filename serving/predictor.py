"""What the server answers, whatever the transport: Predict, GetModelMetadata
and GetModelStatus on TF Serving's request and response protos.

gRPC (``server``) and REST (``rest``) both turn their requests into these
protos and call ``Servables.handle``, so every check and limit
(``request_checks``, ``admission``), version or label resolution
(``model_store``), batching (``batching``) and metric (``metrics``) is the
same on both. Every failure comes back as a gRPC status code and a message;
none escapes.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Callable, Dict, Mapping, Optional, Tuple

import grpc
import tensorflow as tf
from google.protobuf import any_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)

from serving.admission import MemoryCeiling, ServerLimits
from serving.batching import BatchingOptions, BatchScheduler
from serving.metrics import ServerMetrics
from serving.model_store import LoadedVersion, ModelStore
from serving.request_log import RequestLogger
from serving.tensors import fill_tensor_proto
from serving.request_checks import (
    RequestError,
    check_inputs,
    invalid,
    quote,
    quote_names,
    to_arrays,
)
from trainer import serving_contract as C

log = logging.getLogger(__name__)
DEFAULT_SIGNATURE = C.SERVING_DEFAULT
MAX_ERROR_CHARS = 1000
_STATUS_BY_CODE = {code.value[0]: code for code in grpc.StatusCode}
Failure = Tuple[grpc.StatusCode, str]
PREDICT, METADATA, STATUS = "predict", "metadata", "status"


def failure_of(e: BaseException, what: str) -> Failure:
    """The status code and message a failed call is answered with."""
    if isinstance(e, RequestError):
        code, message = e.code, e.message
    elif isinstance(e, tf.errors.OpError):  # the model refused the inputs, or timed out
        code, message = _STATUS_BY_CODE.get(e.error_code, grpc.StatusCode.INTERNAL), e.message
    elif isinstance(e, UnicodeDecodeError):  # TF's error quoted undecodable input bytes
        code = grpc.StatusCode.INVALID_ARGUMENT
        message = "the inputs could not be parsed (e.g. not serialized tf.Examples)"
    else:  # a bug must not take the server down
        log.error("%s failed", what, exc_info=e)
        code, message = grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"
    return code, message[:MAX_ERROR_CHARS]


class Servables:
    """The models a server serves, answering TF Serving's three calls."""

    def __init__(
        self,
        stores: Mapping[str, ModelStore],
        limits: ServerLimits,
        memory: MemoryCeiling,
        batching: Optional[BatchingOptions] = None,
    ):
        """``batching``: merge concurrent requests (one scheduler per model); ``None``: off."""
        self.stores, self.limits, self.memory = dict(stores), limits, memory
        self._request_limits = limits.request
        self.metrics = ServerMetrics(self._signature_names, self.version_states)
        self.loggers: Dict[str, RequestLogger] = {
            name: RequestLogger(store.model.logging)
            for name, store in self.stores.items()
            if store.model.logging is not None
        }
        self.schedulers: Dict[str, BatchScheduler] = {}
        if batching is not None:
            for name in self.stores:
                self.schedulers[name] = BatchScheduler(
                    batching, functools.partial(self.metrics.batch, name)
                )

    @property
    def handler_threads(self) -> int:
        """Threads a transport needs: one per request running, or, with
        batching, one per request admitted (waiting ones wait for a batch,
        and ``num_batch_threads`` bound the runs)."""
        return self.limits.max_calls if self.schedulers else self.limits.max_concurrent_requests

    def stop(self) -> None:
        for scheduler in self.schedulers.values():
            scheduler.stop()
        for logger in self.loggers.values():
            logger.close()

    def _signature_names(self, model: str):
        store = self.stores.get(model)
        loaded = store.current if store else None
        return loaded.signatures if loaded else ()

    def version_states(self) -> Dict[str, Dict[int, str]]:
        """Model -> version -> AVAILABLE (loaded) or END (failed to load)."""
        states: Dict[str, Dict[int, str]] = {}
        for name, store in self.stores.items():
            versions = {v: "END" for v in store.failures()}
            versions.update({v: "AVAILABLE" for v in store.loaded()})
            states[name] = versions
        return states

    def handle(
        self,
        entrypoint: str,
        api: str,
        request,
        time_left_ms: Optional[Callable[[], Optional[int]]] = None,
        prepare: Optional[Callable[[], None]] = None,
    ) -> Tuple[Optional[object], Optional[Failure]]:
        """Runs one call: ``(response, None)`` or ``(None, (code, message))``.

        ``time_left_ms()`` is the request's deadline as it starts (``None``:
        none); ``prepare`` fills in ``request`` first (REST: from its JSON).
        Their failures are answered and counted like the call's own."""
        start = time.perf_counter()
        try:
            if prepare is not None:
                prepare()
            if api == PREDICT:
                response = self.predict(request, time_left_ms() if time_left_ms else None)
            else:
                response = self.metadata(request) if api == METADATA else self.status(request)
            failure = None
        except Exception as e:
            response, failure = None, failure_of(e, api)
        spec = request.model_spec
        signature = (spec.signature_name or DEFAULT_SIGNATURE) if api == PREDICT else ""
        status = failure[0].name if failure else "OK"
        self.metrics.request(
            entrypoint, api, spec.name, signature, status, time.perf_counter() - start
        )
        return response, failure

    def _store(self, spec) -> ModelStore:
        store = self.stores.get(spec.name)
        if store is None:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: model {quote(spec.name)} "
                f"(this server serves {sorted(self.stores)})",
            )
        return store

    def resolve(self, spec) -> Tuple[ModelStore, LoadedVersion]:
        if spec.HasField("version") and spec.version_label:
            raise invalid("a model_spec names a version or a version_label, not both")
        store = self._store(spec)
        version = spec.version.value if spec.HasField("version") else None
        return store, store.resolve(version, spec.version_label)

    def predict(
        self, request: predict_pb2.PredictRequest, timeout_ms: Optional[int] = None
    ) -> predict_pb2.PredictResponse:
        store, loaded = self.resolve(request.model_spec)
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
        scheduler = self.schedulers.get(store.name)
        with self.memory.reserve(tensor_bytes):
            arrays = to_arrays(request.inputs)
            outputs = (
                scheduler.run(signature, arrays, wanted or None, timeout_ms)
                if scheduler
                else signature.run(arrays, wanted or None, timeout_ms)
            )
            response = predict_pb2.PredictResponse()
            response.model_spec.name = store.name
            response.model_spec.version.value = loaded.version
            response.model_spec.signature_name = name
            for key in sorted(outputs):
                fill_tensor_proto(response.outputs[key], outputs[key])
        logger = self.loggers.get(store.name)
        if logger is not None:
            logger.maybe_log(request, response)
        return response

    def metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        store, loaded = self.resolve(request.model_spec)
        fields = list(dict.fromkeys(request.metadata_field))
        if fields != ["signature_def"]:
            raise invalid(f"metadata_field must be ['signature_def'], got {quote_names(fields)}")
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in loaded.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature_def)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = store.name
        response.model_spec.version.value = loaded.version
        packed = any_pb2.Any()
        packed.Pack(signature_map)
        response.metadata["signature_def"].CopyFrom(packed)
        return response

    def status(
        self, request: get_model_status_pb2.GetModelStatusRequest
    ) -> get_model_status_pb2.GetModelStatusResponse:
        spec = request.model_spec
        store = self.stores.get(spec.name)
        if store is None:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"Could not find any versions of model {quote(spec.name)}",
            )
        wanted: Optional[int] = spec.version.value if spec.HasField("version") else None
        if spec.version_label:
            wanted = store.resolve(label=spec.version_label).version
        Status = get_model_status_pb2.ModelVersionStatus
        entries = [(v, Status.AVAILABLE, "") for v in store.loaded()]
        entries += [(v, Status.END, error) for v, error in store.failures().items()]
        if wanted is not None:
            entries = [e for e in entries if e[0] == wanted]
        if not entries:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"no status for model {spec.name!r}"
                + (f" version {wanted}" if wanted is not None else ""),
            )
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, state, error in sorted(entries, key=lambda e: -e[0]):
            status = response.model_version_status.add()
            status.version, status.state = version, state
            if error:
                status.status.error_code = 13  # INTERNAL, as TF Serving reports failed loads
                status.status.error_message = error
        return response
