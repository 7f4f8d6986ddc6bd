"""Settings of a Trainer run as a Vertex AI custom job (several workers).

TFX's Vertex AI Trainer extension
(``tfx.v1.extensions.google_cloud_ai_platform.Trainer``) submits the
Trainer's executor as a Vertex ``CustomJob``; its ``custom_config`` carries
the job's ``worker_pool_specs``. Vertex AI writes ``TF_CONFIG`` on every
replica: pool 0 is the ``chief`` (one replica), pool 1 the ``worker``s and
pool 2 the parameter servers (``ps``). ``workers`` > 1 trains with
``MultiWorkerMirroredStrategy`` and ``parameter_servers`` > 0 with
``ParameterServerStrategy`` (trainer/task.py); the chief writes the model.
With ``restart_job_on_worker_restart`` a lost replica restarts the whole
job, which resumes from the last epoch's backup (trainer/backup.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional

# The keys of TFX's extension (tfx.extensions.google_cloud_ai_platform):
# written out so that compiling a pipeline does not import Google's clients.
TRAINING_ARGS_KEY = "ai_platform_training_args"
ENABLE_VERTEX_KEY = "ai_platform_enable_vertex"
VERTEX_REGION_KEY = "ai_platform_vertex_region"


@dataclasses.dataclass(frozen=True)
class VertexTraining:
    """How the Trainer runs on Vertex AI: ``workers`` replicas (chief
    included) of ``machine_type``, each with ``accelerator_count``
    accelerators of ``accelerator_type`` (none by default), plus
    ``parameter_servers`` replicas of ``ps_machine_type`` (none by default),
    from ``image`` (default: the pipeline's image). ``worker_pool_specs``,
    when given, is Vertex's own list and replaces the pools built from the
    other fields."""

    project: str
    region: str
    workers: int = 2
    machine_type: str = "n1-standard-8"
    accelerator_type: Optional[str] = None
    accelerator_count: int = 0
    parameter_servers: int = 0
    ps_machine_type: str = "n1-highmem-8"
    image: Optional[str] = None
    restart_job_on_worker_restart: bool = True
    worker_pool_specs: Optional[List[Dict[str, Any]]] = None

    def __post_init__(self):
        for field in ("project", "region", "machine_type", "ps_machine_type"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"vertex_training.{field} {value!r}: expected a non-empty string")
        for field, low in (("workers", 1), ("accelerator_count", 0), ("parameter_servers", 0)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"vertex_training.{field} {value!r}: expected an integer >= {low}")
        if (self.accelerator_type is None) != (self.accelerator_count == 0):
            raise ValueError(
                "vertex_training: accelerator_type and accelerator_count go together "
                f"(got {self.accelerator_type!r} and {self.accelerator_count})"
            )
        if self.parameter_servers and self.workers < 2:
            raise ValueError(
                "vertex_training: parameter_servers need workers >= 2 "
                "(the chief coordinates, the other workers run the steps)"
            )
        if not isinstance(self.restart_job_on_worker_restart, bool):
            raise ValueError(
                "vertex_training.restart_job_on_worker_restart: expected true or false"
            )
        if self.worker_pool_specs is not None:
            _check_pools(self.worker_pool_specs)

    @classmethod
    def from_dict(cls, values: Optional[Mapping[str, Any]]) -> Optional["VertexTraining"]:
        """The settings from a run config's ``vertex_training`` object (None: off)."""
        if values is None:
            return None
        if not isinstance(values, Mapping):
            raise ValueError(f"vertex_training {values!r}: expected an object of settings")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"vertex_training: unknown settings {unknown}; expected {sorted(known)}"
            )
        missing = sorted({"project", "region"} - set(values))
        if missing:
            raise ValueError(f"vertex_training needs {missing}")
        return cls(**values)

    def pools(self, default_image: Optional[str]) -> List[Dict[str, Any]]:
        """Vertex's ``worker_pool_specs``: chief, workers, parameter servers."""
        if self.worker_pool_specs is not None:
            return [dict(pool) for pool in self.worker_pool_specs]
        image = self.image or default_image
        if not image:
            raise ValueError("vertex_training needs an image (its own or the pipeline's)")
        machine: Dict[str, Any] = {"machine_type": self.machine_type}
        if self.accelerator_type:
            machine.update(
                accelerator_type=self.accelerator_type, accelerator_count=self.accelerator_count
            )

        def pool(replicas: int, machine_spec: Dict[str, Any]) -> Dict[str, Any]:
            return {
                "machine_spec": dict(machine_spec),
                "replica_count": replicas,
                "container_spec": {"image_uri": image},
            }

        pools = [pool(1, machine)]
        if self.workers > 1:
            pools.append(pool(self.workers - 1, machine))
        if self.parameter_servers:
            pools.append(pool(self.parameter_servers, {"machine_type": self.ps_machine_type}))
        return pools

    def custom_config(self, default_image: Optional[str]) -> Dict[str, Any]:
        """The keys TFX's Vertex AI Trainer executor reads from ``custom_config``."""
        job_spec: Dict[str, Any] = {"worker_pool_specs": self.pools(default_image)}
        if self.restart_job_on_worker_restart:
            job_spec["scheduling"] = {"restart_job_on_worker_restart": True}
        return {
            TRAINING_ARGS_KEY: {"project": self.project, "job_spec": job_spec},
            ENABLE_VERTEX_KEY: True,
            VERTEX_REGION_KEY: self.region,
        }


def _check_pools(pools) -> None:
    if not isinstance(pools, list) or not pools:
        raise ValueError("vertex_training.worker_pool_specs: expected a non-empty list of pools")
    for n, pool in enumerate(pools):
        where = f"vertex_training.worker_pool_specs[{n}]"
        if not isinstance(pool, dict):
            raise ValueError(f"{where}: expected an object")
        if not isinstance(pool.get("machine_spec"), dict):
            raise ValueError(f"{where}.machine_spec: expected an object with machine_type")
        replicas = pool.get("replica_count")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ValueError(f"{where}.replica_count {replicas!r}: expected an integer >= 1")
    if pools[0]["replica_count"] != 1:
        raise ValueError(
            "vertex_training.worker_pool_specs[0] is the chief: its replica_count must be 1"
        )
    if len(pools) > 3:
        raise ValueError(
            "vertex_training.worker_pool_specs: pool 3 is Vertex's evaluator, which this "
            "Trainer does not use (it validates on the chief)"
        )
