"""The training cluster, from ``TF_CONFIG``: one machine, or several workers.

``TF_CONFIG`` (what Vertex AI, Kubeflow's TFJob and TensorFlow's own docs
set) names the cluster and this process's task::

    {"cluster": {"chief": ["10.0.0.1:2222"], "worker": ["10.0.0.2:2222"]},
     "task": {"type": "worker", "index": 0}}

More than one chief-or-worker task means multi-worker data-parallel
training (``MultiWorkerMirroredStrategy``); the chief (or, without one,
worker 0) writes checkpoints and the export. Every way the variable cannot
work is a ``ClusterConfigError`` naming the field, before TensorFlow starts
waiting for peers.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import re
import socket
import threading
import time
from typing import Callable, Dict, List, Mapping, Optional, TypeVar

T = TypeVar("T")
PEER_TIMEOUT_ENV = "RECSYS_PEER_TIMEOUT_S"
DEFAULT_PEER_TIMEOUT_S = 900.0
HEARTBEAT_TIMEOUT_ENV = "RECSYS_HEARTBEAT_TIMEOUT_S"
# TensorFlow's own default is 10 s: a worker starved of CPU that long (a
# busy shared machine, a long garbage collection) is declared dead and the
# whole job aborts with "heartbeat timeout".
DEFAULT_HEARTBEAT_TIMEOUT_S = 120.0

TRAINER_TASKS = ("chief", "worker")
TASK_TYPES = ("chief", "worker", "ps", "evaluator")
_ADDRESS = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:(\d{1,5})$")


class ClusterConfigError(ValueError):
    """A ``TF_CONFIG`` that cannot work; the message names the field."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's place in the training cluster."""

    cluster: Mapping[str, List[str]]
    task_type: str
    task_index: int

    @property
    def num_workers(self) -> int:
        """Tasks that train (chief and workers)."""
        return sum(len(self.cluster.get(t, [])) for t in TRAINER_TASKS)

    @property
    def multi_worker(self) -> bool:
        return self.num_workers > 1

    @property
    def parameter_servers(self) -> int:
        return len(self.cluster.get("ps", []))

    @property
    def parameter_server_training(self) -> bool:
        """Parameter servers hold the variables; the chief coordinates."""
        return self.parameter_servers > 0

    @property
    def serves_only(self) -> bool:
        """A worker or parameter server of parameter-server training: it runs
        a TensorFlow server the chief schedules work on, and no training code."""
        return self.parameter_server_training and self.task_type in ("worker", "ps")

    @property
    def address(self) -> str:
        return self.cluster[self.task_type][self.task_index]

    def peers(self) -> Dict[str, str]:
        """{field: address} of every other task, e.g. ``cluster.worker[1]``."""
        return {
            f"cluster.{task_type}[{n}]": address
            for task_type, addresses in self.cluster.items()
            for n, address in enumerate(addresses)
            if address != self.address
        }

    @property
    def is_chief(self) -> bool:
        """The task that writes checkpoints and the export."""
        if "chief" in self.cluster:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0


def read_cluster(environ: Optional[Mapping[str, str]] = None) -> Optional[Cluster]:
    """The cluster ``TF_CONFIG`` describes; None when it is unset or empty."""
    text = (environ if environ is not None else os.environ).get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ClusterConfigError(f"TF_CONFIG is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ClusterConfigError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    cluster = _cluster(config.get("cluster"))
    task = config.get("task")
    if not isinstance(task, dict):
        raise ClusterConfigError("TF_CONFIG 'task' must be an object with 'type' and 'index'")
    task_type, index = task.get("type"), task.get("index", 0)
    if not isinstance(task_type, str) or task_type not in cluster:
        raise ClusterConfigError(
            f"TF_CONFIG task.type {task_type!r} is not in the cluster {sorted(cluster)}"
        )
    if isinstance(index, bool) or not isinstance(index, int):
        raise ClusterConfigError(f"TF_CONFIG task.index {index!r} must be an integer")
    if not 0 <= index < len(cluster[task_type]):
        raise ClusterConfigError(
            f"TF_CONFIG task.index {index} is out of range: the cluster has "
            f"{len(cluster[task_type])} {task_type!r} task(s)"
        )
    if "ps" in cluster and "chief" not in cluster:
        raise ClusterConfigError(
            "TF_CONFIG: a cluster with parameter servers ('ps') needs a 'chief' (the coordinator)"
        )
    if len(cluster.get("chief", [])) > 1:
        raise ClusterConfigError("TF_CONFIG cluster.chief must list at most one address")
    return Cluster(cluster, task_type, index)


def _cluster(value) -> Dict[str, List[str]]:
    if not isinstance(value, dict) or not value:
        raise ClusterConfigError("TF_CONFIG 'cluster' must be an object of task type -> addresses")
    cluster: Dict[str, List[str]] = {}
    seen: Dict[str, str] = {}
    for task_type, addresses in value.items():
        if task_type not in TASK_TYPES:
            raise ClusterConfigError(
                f"TF_CONFIG cluster.{task_type}: unknown task type; expected {list(TASK_TYPES)}"
            )
        if not isinstance(addresses, list) or not addresses:
            raise ClusterConfigError(f"TF_CONFIG cluster.{task_type} must be a non-empty list")
        for n, address in enumerate(addresses):
            match = _ADDRESS.fullmatch(address) if isinstance(address, str) else None
            if match is None or not 0 < int(match.group(1)) < 65536:
                raise ClusterConfigError(
                    f"TF_CONFIG cluster.{task_type}[{n}] {address!r} is not host:port"
                )
            if address in seen:
                raise ClusterConfigError(
                    f"TF_CONFIG cluster.{task_type}[{n}] {address!r} is also {seen[address]}"
                )
            seen[address] = f"cluster.{task_type}[{n}]"
        cluster[task_type] = list(addresses)
    if not any(t in cluster for t in TRAINER_TASKS):
        raise ClusterConfigError("TF_CONFIG cluster has no 'chief' or 'worker' task to train")
    return cluster


def check_port_free(cluster: Cluster) -> None:
    """A ``ClusterConfigError`` naming this task's address when its port is
    taken on this machine (TensorFlow's server would fail, or worse, talk to
    another job's). Bound as gRPC binds (``SO_REUSEADDR``): a restarted
    task's own old connections, waiting in TIME_WAIT, do not count."""
    port = int(cluster.address.rsplit(":", 1)[1])
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            field = f"cluster.{cluster.task_type}[{cluster.task_index}]"
            raise ClusterConfigError(
                f"TF_CONFIG {field} {cluster.address!r}: port {port} is in use on this machine"
            ) from None


def _seconds(environ: Optional[Mapping[str, str]], name: str, default: float) -> float:
    """A positive number of seconds from ``environ[name]``, or ``default`` when unset."""
    text = (environ if environ is not None else os.environ).get(name, "")
    if not text.strip():
        return default
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise ClusterConfigError(f"{name} {text!r}: expected a positive number of seconds")
    return seconds


def peer_timeout(environ: Optional[Mapping[str, str]] = None) -> float:
    """Seconds to wait for the other tasks (``RECSYS_PEER_TIMEOUT_S``, default 900)."""
    return _seconds(environ, PEER_TIMEOUT_ENV, DEFAULT_PEER_TIMEOUT_S)


def heartbeat_timeout(environ: Optional[Mapping[str, str]] = None) -> float:
    """Seconds without a heartbeat before a task counts as dead
    (``RECSYS_HEARTBEAT_TIMEOUT_S``, default 120)."""
    return _seconds(environ, HEARTBEAT_TIMEOUT_ENV, DEFAULT_HEARTBEAT_TIMEOUT_S)


def configure_coordination(cluster: Cluster, heartbeat_seconds: float) -> None:
    """TensorFlow's coordination service for the chief and workers, as
    ``MultiWorkerMirroredStrategy`` configures it itself (its leader, the
    coordinated jobs), but with a heartbeat timeout of ``heartbeat_seconds``
    in place of TensorFlow's 10 s. Call it before the strategy is built: the
    strategy keeps a configuration it finds."""
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context
    from tensorflow.tsl.protobuf import coordination_config_pb2

    spec = {job: list(addresses) for job, addresses in cluster.cluster.items()}
    jobs = [
        coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(spec[job]))
        for job in TRAINER_TASKS
        if spec.get(job)
    ]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(spec),
        heartbeat_timeout_in_ms=int(heartbeat_seconds * 1000),
        coordinated_jobs=jobs,
    )


def unreachable_peers(cluster: Cluster, seconds: float = 2.0) -> Dict[str, str]:
    """The other tasks that accept no TCP connection within ``seconds``."""
    missing = {}
    for field, address in cluster.peers().items():
        host, port = address.rsplit(":", 1)
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
        except OSError:
            missing[field] = address
    return missing


def within_peer_timeout(cluster: Cluster, connect: Callable[[], T], what: str) -> T:
    """``connect()`` (a strategy that waits for its peers), or, when it has
    not returned after ``peer_timeout()`` seconds, an error naming the peers
    that never answered and an exit: TensorFlow waiting for a peer cannot be
    interrupted and ignores SIGTERM, so the process ends itself."""
    seconds = peer_timeout()
    done = threading.Event()

    def give_up() -> None:
        if done.is_set():
            return
        missing = unreachable_peers(cluster)
        named = ", ".join(f"{f} {a}" for f, a in missing.items()) or "none unreachable by TCP"
        logging.error(
            "%s: the cluster did not come up within %.0f s (%s); no answer from: %s. "
            "Every task in TF_CONFIG must be started with the same cluster.",
            what,
            seconds,
            PEER_TIMEOUT_ENV,
            named,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(75)  # EX_TEMPFAIL: the scheduler may retry

    timer = threading.Timer(seconds, give_up)
    timer.daemon = True
    started = time.monotonic()
    timer.start()
    try:
        result = connect()
    finally:
        done.set()
        timer.cancel()
    logging.info("%s: cluster up after %.1f s.", what, time.monotonic() - started)
    return result
