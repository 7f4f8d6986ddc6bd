"""Server-side batching: concurrent requests to one signature run as one call.

TF Serving's ``--enable_batching`` with its ``--batching_parameters_file``
(``BatchingParameters``): a request joins the open batch of its signature
(same version, outputs and per-row shapes); a batch is run when it holds
``max_batch_size`` rows, when its first request has waited
``batch_timeout_micros``, or at once when a batch thread is idle and the
timeout is 0; ``num_batch_threads`` batches run at a time; beyond
``max_enqueued_batches`` per signature a request is refused with
``UNAVAILABLE``. A batch is padded up to the next of ``allowed_batch_sizes``
by repeating its first row, and each caller gets exactly its own rows back.

Unlike TF Serving, one bad request cannot fail its batch-mates: when a merged
batch fails, each request in it is run alone and gets its own answer. A
request larger than ``max_batch_size`` rows runs alone, unbatched.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import threading
import time
from typing import Callable, Deque, Dict, List, Mapping, Optional, Sequence, Tuple

import grpc
import numpy as np
import tensorflow as tf

from serving.request_checks import RequestError
from serving.serving_protos import BatchingParameters, ConfigFileError, read_text_proto

log = logging.getLogger(__name__)
Arrays = Dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """TF Serving's batching parameters, with its defaults (``BasicBatchScheduler``'s)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1
    allowed_batch_sizes: Tuple[int, ...] = ()

    def __post_init__(self):
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")
        sizes = list(self.allowed_batch_sizes)
        if sizes and (
            sizes != sorted(set(sizes)) or sizes[0] < 1 or sizes[-1] != self.max_batch_size
        ):
            raise ValueError(
                f"allowed_batch_sizes {sizes} must increase and end at max_batch_size "
                f"{self.max_batch_size}"
            )

    @classmethod
    def from_file(cls, path: Optional[str]) -> "BatchingOptions":
        """From a ``--batching_parameters_file`` (``None``: the defaults)."""
        if not path:
            return cls()
        proto = read_text_proto(path, BatchingParameters)
        values = {
            name: getattr(proto, name).value
            for name in (
                "max_batch_size",
                "batch_timeout_micros",
                "max_enqueued_batches",
                "num_batch_threads",
            )
            if proto.HasField(name)
        }
        try:
            return cls(**values, allowed_batch_sizes=tuple(proto.allowed_batch_sizes))
        except ValueError as e:
            raise ConfigFileError(f"{path!r}: {e}") from e

    def padded(self, rows: int) -> int:
        """The batch size ``rows`` rows are padded to."""
        return next((s for s in self.allowed_batch_sizes if s >= rows), rows)


class _Task:
    __slots__ = ("arrays", "rows", "deadline", "enqueued", "done", "result", "error")

    def __init__(self, arrays: Arrays, rows: int, deadline: Optional[float]):
        self.arrays, self.rows, self.deadline = arrays, rows, deadline
        self.enqueued = time.monotonic()
        self.done = threading.Event()
        self.result: Optional[Arrays] = None
        self.error: Optional[BaseException] = None

    def finish(self, result: Optional[Arrays] = None, error: Optional[BaseException] = None):
        self.result, self.error = result, error
        self.done.set()


class _Queue:
    def __init__(self, signature, outputs: Optional[Tuple[str, ...]]):
        self.signature, self.outputs = signature, outputs
        self.tasks: Deque[_Task] = collections.deque()
        self.rows = 0


def _deadline_passed() -> RequestError:
    return RequestError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "the request's deadline passed while it waited for a batch",
    )


def _left_ms(deadline: Optional[float]) -> Optional[int]:
    return None if deadline is None else max(1, math.floor((deadline - time.monotonic()) * 1000))


class BatchScheduler:
    """Merges concurrent ``Signature.run`` calls; ``run`` blocks until its rows are back.

    ``on_batch(signature_name, rows, padded_rows)`` is told of every batch run.
    """

    def __init__(
        self,
        options: BatchingOptions = BatchingOptions(),
        on_batch: Optional[Callable[[str, int, int], None]] = None,
    ):
        self.options, self._on_batch = options, on_batch
        self._queues: "collections.OrderedDict[tuple, _Queue]" = collections.OrderedDict()
        self._cond = threading.Condition()
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
            for i in range(options.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def run(
        self,
        signature,
        arrays: Mapping[str, np.ndarray],
        output_names: Optional[Sequence[str]] = None,
        timeout_ms: Optional[int] = None,
    ) -> Arrays:
        """``signature.run(arrays, output_names, timeout_ms)``, batched with others."""
        rows = {a.shape[0] if a.ndim else -1 for a in arrays.values()}
        if len(rows) != 1 or min(rows) < 1 or min(rows) > self.options.max_batch_size:
            return signature.run(arrays, output_names, timeout_ms)  # not batchable: alone
        outputs = tuple(output_names) if output_names else None
        key = (
            id(signature),
            outputs,
            tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(arrays.items())),
        )
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        task = _Task(dict(arrays), rows.pop(), deadline)
        with self._cond:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(signature, outputs)
            batches = math.ceil((queue.rows + task.rows) / self.options.max_batch_size)
            if batches > self.options.max_enqueued_batches:
                raise RequestError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"The batch scheduling queue of signature {signature.name!r} is full "
                    f"({self.options.max_enqueued_batches} batches); retry later",
                )
            queue.tasks.append(task)
            queue.rows += task.rows
            self._cond.notify()
        if not task.done.wait(None if deadline is None else max(0.0, deadline - time.monotonic())):
            with self._cond:
                if task in queue.tasks:  # never started: give up on it
                    queue.tasks.remove(task)
                    queue.rows -= task.rows
                    raise _deadline_passed()
            task.done.wait()  # running: its own timeout ends it
        if task.error is not None:
            raise task.error
        return task.result

    def _ready(self, now: float) -> Tuple[Optional[Tuple[_Queue, List[_Task]]], Optional[float]]:
        """The next batch to run, or how long until one is due."""
        timeout = self.options.batch_timeout_micros / 1e6
        wait: Optional[float] = None
        for key, queue in list(self._queues.items()):
            if not queue.tasks:
                del self._queues[key]
                continue
            due = queue.tasks[0].enqueued + timeout
            if queue.rows >= self.options.max_batch_size or now >= due:
                taken, rows = [], 0
                while queue.tasks and rows + queue.tasks[0].rows <= self.options.max_batch_size:
                    task = queue.tasks.popleft()
                    taken.append(task)
                    rows += task.rows
                queue.rows -= rows
                self._queues.move_to_end(key)  # round-robin between signatures
                return (queue, taken), None
            wait = due - now if wait is None else min(wait, due - now)
        return None, wait

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    batch, wait = self._ready(time.monotonic())
                    if batch is not None:
                        break
                    self._cond.wait(wait)
            try:
                self._run(*batch)
            except BaseException as e:  # never lose a caller: answer every task
                log.exception("batch failed")
                for task in batch[1]:
                    if not task.done.is_set():
                        task.finish(error=e)

    def _run(self, queue: _Queue, tasks: List[_Task]) -> None:
        now = time.monotonic()
        live = []
        for task in tasks:
            if task.deadline is not None and task.deadline <= now:
                task.finish(error=_deadline_passed())
            else:
                live.append(task)
        if not live:
            return
        rows = sum(t.rows for t in live)
        padded = self.options.padded(rows)
        merged = {}
        for name in live[0].arrays:
            parts = [t.arrays[name] for t in live]
            if padded > rows:
                parts.append(np.repeat(parts[0][:1], padded - rows, axis=0))
            merged[name] = np.concatenate(parts) if len(parts) > 1 else parts[0]
        deadlines = [t.deadline for t in live if t.deadline is not None]
        if self._on_batch:
            self._on_batch(queue.signature.name, rows, padded)
        try:
            outputs = queue.signature.run(
                merged, queue.outputs, _left_ms(min(deadlines)) if deadlines else None
            )
        except tf.errors.DeadlineExceededError as e:
            for task in live:
                task.finish(error=e)
            return
        except Exception as e:
            if len(live) == 1:
                live[0].finish(error=e)
                return
            for task in live:  # find whose rows failed: each alone gets its own answer
                try:
                    task.finish(
                        queue.signature.run(task.arrays, queue.outputs, _left_ms(task.deadline))
                    )
                except Exception as own:
                    task.finish(error=own)
            return
        bad = sorted(n for n, v in outputs.items() if np.ndim(v) == 0 or len(v) != padded)
        if bad:
            error = RequestError(
                grpc.StatusCode.INTERNAL,
                f"outputs {bad} of signature {queue.signature.name!r} are not batched; "
                "serve it without --enable_batching",
            )
            for task in live:
                task.finish(error=error)
            return
        start = 0
        for task in live:
            task.finish({n: v[start : start + task.rows] for n, v in outputs.items()})
            start += task.rows
