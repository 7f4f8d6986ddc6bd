"""Settings of a pipeline run: runner, paths, sizes, Beam arguments, schedule.

Everything environment-specific lives here (and in the JSON files under
``pipeline/environments/``), never in ``pipeline.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Dict, List, Mapping, Optional

import schemas
from components.log_config import LogConfig
from pipeline.vertex_training import VertexTraining
from trainer.search_space import TuningConfig

PIPELINE_NAME = "recsys"
MODEL_NAME = "recommender"

# Beam DirectRunner modes. Each multi-processing stage pays ~15-20 s to start
# workers that import TF, so small inputs run faster in memory.
IN_MEMORY_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
MULTI_PROCESSING_ARGS = ["--direct_running_mode=multi_processing", "--direct_num_workers=0"]
MULTI_PROCESSING_MIN_BYTES = 64 * 2**20
RUNNERS = ("local", "kubeflow", "airflow")
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,128}")
ENVIRONMENTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "environments")


@dataclasses.dataclass
class RunConfig:
    """Where a run reads and writes, and how big it is."""

    data_dir: Optional[str] = None  # None (local runs only): generated synthetic logs
    work_dir: str = "runs/local"
    serving_dir: Optional[str] = None
    model_name: str = MODEL_NAME
    train_steps: int = 300
    eval_steps: int = 50
    log_config: LogConfig = dataclasses.field(default_factory=LogConfig)
    schema_path: str = schemas.SCHEMA_PATH
    beam_args: Optional[List[str]] = None
    model_config: Dict[str, Any] = dataclasses.field(default_factory=dict)
    eval_thresholds: Optional[Dict[str, float]] = None
    enable_cache: bool = True
    # TuningConfig settings (trainer/search_space.py): adds the TFX Tuner,
    # whose best hyperparameters the Trainer takes. None: no tuning.
    tuning: Optional[Dict[str, Any]] = None
    # Orchestrated runs (Kubeflow, Airflow).
    runner: str = "local"
    pipeline_name: str = PIPELINE_NAME
    pipeline_root_dir: Optional[str] = None  # default <work_dir>/pipeline_root
    image: Optional[str] = None  # container image for Kubeflow
    # VertexTraining settings (pipeline/vertex_training.py): the Trainer as a
    # Vertex AI custom job on several workers. None: in the component's pod.
    vertex_training: Optional[Dict[str, Any]] = None
    schedule: Optional[str] = None  # Airflow schedule (cron or preset)
    start_date: str = "2026-01-01"  # Airflow start date (ISO)

    def __post_init__(self):
        if self.runner not in RUNNERS:
            raise ValueError(f"runner {self.runner!r}: expected one of {RUNNERS}")
        for field in ("model_name", "pipeline_name"):
            # Both become path components: no separators, no "..".
            value = getattr(self, field)
            if (
                not isinstance(value, str)
                or not NAME_PATTERN.fullmatch(value)
                or set(value) == {"."}
            ):
                raise ValueError(f"{field} {value!r}: expected letters, digits, '.', '_' or '-'")
        if self.data_dir is None and self.runner != "local":
            raise ValueError(f"a {self.runner} run needs data_dir (the raw logs)")
        for field in ("data_dir", "work_dir"):
            value = getattr(self, field)
            if (value is not None or field == "work_dir") and (
                not isinstance(value, str) or not value.strip()
            ):
                raise ValueError(f"{field} {value!r}: expected a path")
        for field in ("train_steps", "eval_steps"):
            if not isinstance(getattr(self, field), int) or getattr(self, field) < 1:
                raise ValueError(f"{field} {getattr(self, field)!r}: expected a positive integer")
        if self.tuning is not None:
            if not isinstance(self.tuning, dict):
                raise ValueError(f"tuning {self.tuning!r}: expected an object of tuning settings")
            TuningConfig.from_dict(self.tuning)  # refuses bad settings by name
        VertexTraining.from_dict(self.vertex_training)  # refuses bad settings by name
        if isinstance(self.log_config, dict):
            self.log_config = LogConfig.from_dict(self.log_config)

    @classmethod
    def from_file(cls, path: str) -> "RunConfig":
        """Loads a JSON environment file; unknown keys are an error naming them."""
        return cls(**_read_settings(path))

    @classmethod
    def from_sources(
        cls,
        flags: Mapping[str, Any],
        path: Optional[str] = None,
        runner: str = "local",
    ) -> "RunConfig":
        """The run's settings: ``flags`` override the JSON file at ``path``, which
        overrides the defaults.

        Args:
          flags: settings by field name; None means not given. ``epochs`` goes
            into ``model_config`` unless the flags' own ``model_config`` sets it.
          path: a JSON environment file (its ``runner`` must be ``runner``).
          runner: the runner the settings are for; local paths become absolute.
        """
        values = _read_settings(path) if path else {}
        if values.get("runner", runner) != runner:
            raise ValueError(f"{path} is for the {values['runner']!r} runner, not {runner!r}")
        values["runner"] = runner
        flags = {k: v for k, v in flags.items() if v is not None}
        epochs = flags.pop("epochs", None)
        _check_names(flags, "flags")
        values.update(flags)
        if epochs is not None and "epochs" not in (flags.get("model_config") or {}):
            values["model_config"] = {**(values.get("model_config") or {}), "epochs": epochs}
        config = cls(**values)
        if runner == "local":
            config = dataclasses.replace(
                config,
                **{
                    field: os.path.abspath(getattr(config, field))
                    for field in (
                        "data_dir",
                        "work_dir",
                        "serving_dir",
                        "pipeline_root_dir",
                        "schema_path",
                    )
                    if getattr(config, field) is not None and "://" not in getattr(config, field)
                },
            )
        return config

    @property
    def pipeline_root(self) -> str:
        return self.pipeline_root_dir or os.path.join(self.work_dir, "pipeline_root")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.work_dir, "metadata.sqlite")

    @property
    def push_base(self) -> str:
        """TF Serving's model base path: versions go in ``<push_base>/<version>``."""
        return os.path.join(
            self.serving_dir or os.path.join(self.work_dir, "serving"), self.model_name
        )


def _check_names(values: Mapping[str, Any], source: str) -> None:
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source}: unknown settings {unknown}; known: {sorted(known)}")


def _read_settings(path: str) -> Dict[str, Any]:
    with open(path) as f:
        values = json.load(f)
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object of settings")
    _check_names(values, path)
    return values


def input_bytes(data_dir: str) -> int:
    if "://" in data_dir:
        return 0
    total = 0
    for root, _, files in os.walk(data_dir):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def default_beam_args(data_dir: str) -> List[str]:
    """In-memory DirectRunner for small inputs, multi-processing for large ones."""
    mode = (
        MULTI_PROCESSING_ARGS
        if input_bytes(data_dir) >= MULTI_PROCESSING_MIN_BYTES
        else IN_MEMORY_ARGS
    )
    return ["--runner=DirectRunner", *mode]
