"""TF Serving's gRPC services (PredictionService: Predict, GetModelMetadata;
ModelService: GetModelStatus) over ``Servables``.

gRPC's thread-per-call server with ``handler_threads`` threads; beyond
``max_calls`` calls in flight gRPC answers ``RESOURCE_EXHAUSTED`` at once.
(gRPC's asyncio server, with the work on a thread pool, measured 0.3-0.4 ms
slower at batch 1 with 4 clients: BENCHMARKS.md.)
"""

from __future__ import annotations

import concurrent.futures
from typing import Optional

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.admission import remaining_ms
from serving.predictor import METADATA, PREDICT, STATUS, Servables
from serving.tls import ServerTls

ENTRYPOINT = "GRPC"


class GrpcService:
    """The gRPC port: ``start()``, ``stop()``, ``wait()``."""

    def __init__(self, servables: Servables, host: str, port: int, tls: Optional[ServerTls] = None):
        self._servables = servables
        limits = servables.limits
        self._server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(
                max_workers=servables.handler_threads, thread_name_prefix="rpc"
            ),
            options=[
                ("grpc.max_receive_message_length", limits.max_message_bytes),
                ("grpc.max_send_message_length", limits.max_message_bytes),
            ],
            maximum_concurrent_rpcs=limits.max_calls,
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _PredictionService(self), self._server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(self), self._server)
        address = f"{host}:{port}"
        self.port = (
            self._server.add_secure_port(address, tls.credentials())
            if tls
            else self._server.add_insecure_port(address)
        )
        if not self.port:
            raise OSError(f"cannot bind {address}")

    def answer(self, api: str, request, context: grpc.ServicerContext):
        """Runs one call; every failure becomes a status code, none escapes."""
        limit = self._servables.limits.request_timeout_ms
        response, failure = self._servables.handle(
            ENTRYPOINT, api, request, lambda: remaining_ms(context, limit)
        )
        if failure:
            context.abort(*failure)
        return response

    def start(self) -> None:
        self._server.start()

    def stop(self, grace_seconds: float) -> None:
        """Stops taking calls and lets those in flight finish (at most ``grace_seconds``)."""
        self._server.stop(grace_seconds).wait()

    def wait(self) -> None:
        self._server.wait_for_termination()


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, service: GrpcService):
        self._service = service

    def Predict(self, request, context):
        return self._service.answer(PREDICT, request, context)

    def GetModelMetadata(self, request, context):
        return self._service.answer(METADATA, request, context)


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, service: GrpcService):
        self._service = service

    def GetModelStatus(self, request, context):
        return self._service.answer(STATUS, request, context)
