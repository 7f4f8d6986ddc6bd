"""What the server lets in: a memory ceiling and per-request deadlines.

Concurrency and queue limits are gRPC's own (``maximum_concurrent_rpcs``:
beyond it a call gets ``RESOURCE_EXHAUSTED`` at once); these two cover what
it does not: a request that would take the process past ``--max_memory_bytes``
is refused with ``RESOURCE_EXHAUSTED`` before it is materialised, and every
request runs under the earlier of the client's deadline and the server's
``--request_timeout_ms``.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Optional

import grpc
import psutil

from serving.request_checks import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_STRING_BYTES,
    RequestError,
    RequestLimits,
)

# Materialising a request costs more than its tensors: the feed copy into the
# graph, intermediate tensors and the response. Reserve this many times the
# tensors' bytes, plus a floor for small requests.
_WORK_FACTOR = 4
_WORK_FLOOR_BYTES = 4 * 2**20


class MemoryCeiling:
    """Refuses work that would take the process's resident memory past ``limit_bytes``.

    The check counts what admitted, unfinished requests have reserved, so
    concurrent requests cannot each pass it alone; ``limit_bytes`` of 0 or
    ``None`` turns it off.
    """

    def __init__(self, limit_bytes: Optional[int]):
        self.limit_bytes = limit_bytes or 0
        self._process = psutil.Process()
        self._reserved = 0
        self._lock = threading.Lock()

    def resident_bytes(self) -> int:
        return self._process.memory_info().rss

    def reserve(self, tensor_bytes: int) -> "_Reservation":
        """A context manager holding the request's share until it is done."""
        need = _WORK_FLOOR_BYTES + _WORK_FACTOR * tensor_bytes
        if self.limit_bytes:
            with self._lock:
                resident = self.resident_bytes()
                if resident + self._reserved + need > self.limit_bytes:
                    raise RequestError(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"server memory is near its ceiling ({resident / 2**20:.0f} MiB resident, "
                        f"{self._reserved / 2**20:.0f} MiB reserved by requests in flight, "
                        f"this one needs {need / 2**20:.0f} MiB, "
                        f"--max_memory_bytes {self.limit_bytes / 2**20:.0f} MiB); "
                        "retry later or send smaller batches",
                    )
                self._reserved += need
        return _Reservation(self, need if self.limit_bytes else 0)

    def _release(self, amount: int) -> None:
        with self._lock:
            self._reserved -= amount


class _Reservation:
    def __init__(self, ceiling: MemoryCeiling, amount: int):
        self._ceiling, self._amount = ceiling, amount

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._amount:
            self._ceiling._release(self._amount)


def remaining_ms(context: grpc.ServicerContext, server_timeout_ms: Optional[int]) -> Optional[int]:
    """Milliseconds left to this request: the earlier of the client's deadline
    and the server's timeout (``None``: no limit). ``DEADLINE_EXCEEDED`` when
    none is left, e.g. after waiting in the queue."""
    left = context.time_remaining()
    limits = ([left * 1000] if left is not None else []) + (
        [server_timeout_ms] if server_timeout_ms else []
    )
    if not limits:
        return None
    remaining = min(limits)
    if remaining <= 0:
        raise RequestError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "the request's deadline passed before the server could run it",
        )
    return max(1, math.floor(remaining))


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    """Every bound the server keeps, as its flags set them (TF Serving's names where it has one)."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_string_bytes: int = DEFAULT_MAX_STRING_BYTES
    max_concurrent_requests: int = 8
    max_queued_requests: int = 32
    request_timeout_ms: Optional[int] = 30_000
    max_memory_bytes: Optional[int] = None

    def __post_init__(self):
        for name in (
            "max_batch_size",
            "max_message_bytes",
            "max_string_bytes",
            "max_concurrent_requests",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_queued_requests", "request_timeout_ms", "max_memory_bytes"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def request(self) -> RequestLimits:
        return RequestLimits.from_message_size(
            self.max_message_bytes, self.max_batch_size, self.max_string_bytes
        )

    @property
    def max_calls(self) -> int:
        """Calls in flight before gRPC answers RESOURCE_EXHAUSTED: running plus queued."""
        return self.max_concurrent_requests + self.max_queued_requests
