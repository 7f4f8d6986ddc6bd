"""TF Serving's gRPC services (PredictionService: Predict, GetModelMetadata;
ModelService: GetModelStatus) over ``Servables``.

The server is gRPC's asyncio one, on an event loop in a thread of its own:
the loop only receives and answers calls, and each call's work runs on a
pool of ``handler_threads``. Against gRPC's thread-per-call server this took
4 concurrent batch-1 clients from 285 to 395 requests/s on the same model
(BENCHMARKS.md). Beyond ``max_calls`` calls in flight gRPC answers
``RESOURCE_EXHAUSTED`` at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
import time
from typing import Optional

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.admission import remaining_ms
from serving.predictor import METADATA, PREDICT, STATUS, Servables
from serving.tls import ServerTls

ENTRYPOINT = "GRPC"


class _Deadline:
    """The client's deadline as the call arrived, readable from any thread."""

    def __init__(self, context: grpc.aio.ServicerContext):
        self._left, self._arrived = context.time_remaining(), time.monotonic()

    def time_remaining(self) -> Optional[float]:
        if self._left is None:
            return None
        return self._left - (time.monotonic() - self._arrived)


class GrpcService:
    """The gRPC port: ``start()``, ``stop()``, ``wait()``."""

    def __init__(self, servables: Servables, host: str, port: int, tls: Optional[ServerTls] = None):
        self._servables = servables
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=servables.handler_threads, thread_name_prefix="rpc"
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc", daemon=True)
        self._thread.start()
        self._stopped = False
        self.port = self._run(self._create(host, port, tls))
        if not self.port:
            self._close()
            raise OSError(f"cannot bind {host}:{port}")

    def _run(self, coroutine, timeout: Optional[float] = 60):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _create(self, host: str, port: int, tls: Optional[ServerTls]) -> int:
        limits = self._servables.limits
        self._server = grpc.aio.server(
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
        return (
            self._server.add_secure_port(address, tls.credentials())
            if tls
            else self._server.add_insecure_port(address)
        )

    async def answer(self, api: str, request, context: grpc.aio.ServicerContext):
        """Runs one call on the pool; every failure becomes a status code, none escapes."""
        deadline, limit = _Deadline(context), self._servables.limits.request_timeout_ms
        handle = functools.partial(
            self._servables.handle, ENTRYPOINT, api, request, lambda: remaining_ms(deadline, limit)
        )
        response, failure = await asyncio.get_running_loop().run_in_executor(self._pool, handle)
        if failure:
            await context.abort(*failure)
        return response

    def start(self) -> None:
        self._run(self._server.start())

    def stop(self, grace_seconds: float) -> None:
        """Stops taking calls and lets those in flight finish (at most ``grace_seconds``)."""
        if self._stopped:
            return
        self._stopped = True
        self._run(self._server.stop(grace_seconds), timeout=grace_seconds + 30)
        self._close()

    def _close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def wait(self) -> None:
        self._thread.join()


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, service: GrpcService):
        self._service = service

    async def Predict(self, request, context):
        return await self._service.answer(PREDICT, request, context)

    async def GetModelMetadata(self, request, context):
        return await self._service.answer(METADATA, request, context)


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, service: GrpcService):
        self._service = service

    async def GetModelStatus(self, request, context):
        return await self._service.answer(STATUS, request, context)
