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
import json
import os
import re
from typing import Dict, List, Mapping, Optional

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
    except ValueError as e:
        raise ClusterConfigError(f"TF_CONFIG is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ClusterConfigError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    cluster = _cluster(config.get("cluster"))
    task = config.get("task")
    if not isinstance(task, dict):
        raise ClusterConfigError("TF_CONFIG 'task' must be an object with 'type' and 'index'")
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in cluster:
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
            match = _ADDRESS.match(address) if isinstance(address, str) else None
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
