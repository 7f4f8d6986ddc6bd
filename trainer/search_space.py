"""What the TFX Tuner searches, as data: hyperparameter ranges named by their
``ModelConfig`` field, and the tuning run's own settings.

No TensorFlow or KerasTuner here: the pipeline validates a tuning config
before any component runs. ``trainer/tuning.py`` turns it into a KerasTuner
search; ``apply_hyperparameters`` is how the Trainer takes the best values.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Mapping, Optional, Tuple

from trainer.config import ModelConfig, from_known_keys

# The main hyperparameters and their ranges. Each is a ModelConfig field that
# shapes only the model and its optimiser, never the input data (the Tuner
# prepares the data once for every trial).
SEARCH_SPACE: Dict[str, Dict[str, Any]] = {
    "learning_rate": {"type": "float", "min": 1e-3, "max": 1e-2, "sampling": "log"},
    "embedding_dim": {"type": "choice", "values": [16, 32, 64]},
    "tower_dim": {"type": "choice", "values": [32, 64, 128]},
    "dropout": {"type": "float", "min": 0.0, "max": 0.3, "step": 0.1},
    "retrieval_temperature": {"type": "choice", "values": [0.05, 0.1, 0.2]},
    "history_layers": {"type": "choice", "values": [0, 1, 2]},
}
# Fields a trial may not change: they shape the data every trial shares, or
# what is trained (a trial with other tasks would not be comparable).
NOT_TUNABLE = frozenset(
    {
        "batch_size",
        "epochs",
        "tasks",
        "task_weights",
        "history_length",
        "pretrained_text_encoder",
        "pretrained_text_length",
        "fine_tune_text_encoder",
        "retrieval_ks",
        "recommend_k",
        "logq_correction",
        "seed",
        "deterministic",
        "mixed_precision",
        "xla",
        "selection_metric",
    }
)
ALGORITHMS = ("bayesian", "random")
SPEC_KEYS = {
    "float": {"type", "min", "max", "sampling", "step"},
    "int": {"type", "min", "max", "step"},
    "choice": {"type", "values"},
}


@dataclasses.dataclass(frozen=True)
class TuningConfig:
    """A tuning run: how many trials, how long each, over which ranges."""

    max_trials: int = 8
    # Training steps per trial (over ``ModelConfig.epochs`` epochs); the
    # Tuner's TrainArgs. Validation steps per epoch: ``eval_steps``.
    trial_steps: int = 300
    eval_steps: int = 50
    algorithm: str = "bayesian"  # KerasTuner's BayesianOptimization, or RandomSearch
    # What ranks trials: "tasks" (every task's validation metric, each
    # relative to the first trial's first epoch; ``trainer/selection.py``),
    # or one validation log key (val_...), e.g. "val_rating_rmse".
    objective: str = "tasks"
    # Ranges by ModelConfig field; these replace SEARCH_SPACE's entries of the
    # same name and add new ones. ``hyperparameters`` picks which are searched
    # (None: all of them).
    search_space: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    hyperparameters: Optional[Tuple[str, ...]] = None
    seed: int = 42

    def __post_init__(self):
        for name in ("max_trials", "trial_steps", "eval_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"tuning {name} must be a positive integer, not {value!r}")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(
                f"tuning algorithm must be one of {ALGORITHMS}, not {self.algorithm!r}"
            )
        if self.objective != "tasks" and not str(self.objective).startswith("val_"):
            raise ValueError(
                f"tuning objective must be 'tasks' or a validation log key (val_...), "
                f"not {self.objective!r}"
            )
        if not isinstance(self.search_space, Mapping):
            raise ValueError("tuning search_space must be an object of ranges by field name")
        for name, spec in self.search_space.items():
            if not isinstance(spec, Mapping):
                raise ValueError(f"tuning search_space {name!r}: expected an object, not {spec!r}")
        merged = {**SEARCH_SPACE, **{k: dict(v) for k, v in self.search_space.items()}}
        if self.hyperparameters is not None:
            object.__setattr__(self, "hyperparameters", tuple(self.hyperparameters))
            unknown = sorted(set(self.hyperparameters) - set(merged))
            if unknown or not self.hyperparameters:
                raise ValueError(
                    f"tuning hyperparameters {unknown or '[]'}: expected some of {sorted(merged)}"
                )
        object.__setattr__(self, "search_space", merged)
        for name, spec in self.space().items():
            check_range(name, spec)

    def space(self) -> Dict[str, Dict[str, Any]]:
        """The ranges searched, by ModelConfig field."""
        names = self.hyperparameters or tuple(self.search_space)
        return {name: dict(self.search_space[name]) for name in names}

    @classmethod
    def from_dict(cls, values: Optional[Mapping[str, Any]]) -> "TuningConfig":
        """Builds a config, rejecting unknown keys by name."""
        return from_known_keys(cls, values, "tuning")

    def to_dict(self) -> Dict[str, Any]:
        values = dataclasses.asdict(self)
        values["search_space"] = {k: dict(v) for k, v in self.search_space.items()}
        if self.hyperparameters is not None:
            values["hyperparameters"] = list(self.hyperparameters)
        return values


def check_range(name: str, spec: Mapping[str, Any]) -> None:
    """Raises ValueError naming ``name`` unless ``spec`` is a well-formed
    range of a tunable ModelConfig field whose every end is a valid config."""
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    if name not in fields or name in NOT_TUNABLE:
        raise ValueError(
            f"tuning search_space {name!r}: not a tunable ModelConfig field "
            f"(tunable: {sorted(fields - NOT_TUNABLE)})"
        )
    if not isinstance(spec, Mapping) or spec.get("type") not in SPEC_KEYS:
        raise ValueError(
            f"tuning search_space {name!r}: expected an object with type one of "
            f"{sorted(SPEC_KEYS)}, not {spec!r}"
        )
    extra = sorted(set(spec) - SPEC_KEYS[spec["type"]])
    if extra:
        raise ValueError(f"tuning search_space {name!r}: unknown keys {extra}")
    if spec["type"] == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values or len(values) > 100:
            raise ValueError(f"tuning search_space {name!r}: values must be a list of 1-100")
        ends = values
    else:
        low, high = spec.get("min"), spec.get("max")
        numbers = (int,) if spec["type"] == "int" else (int, float)
        if (
            not all(
                isinstance(v, numbers) and not isinstance(v, bool) and math.isfinite(v)
                for v in (low, high)
            )
            or not low <= high
        ):
            raise ValueError(f"tuning search_space {name!r}: needs numbers min <= max")
        if spec.get("sampling", "linear") not in ("linear", "log", "reverse_log"):
            raise ValueError(f"tuning search_space {name!r}: sampling linear, log or reverse_log")
        if spec.get("sampling") in ("log", "reverse_log") and low <= 0:
            raise ValueError(f"tuning search_space {name!r}: log sampling needs min > 0")
        ends = [low, high]
    for value in ends:
        try:
            ModelConfig(**{name: value})
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"tuning search_space {name!r}: {value!r} is refused: {error}"
            ) from None


def apply_hyperparameters(config: ModelConfig, values: Optional[Mapping[str, Any]]) -> ModelConfig:
    """``config`` with the tuned ``values`` (ModelConfig fields) in place;
    names that are not tunable fields are an error naming them."""
    if not values:
        return config
    for name in values:
        if name not in {f.name for f in dataclasses.fields(ModelConfig)} or name in NOT_TUNABLE:
            raise ValueError(f"hyperparameter {name!r} is not a tunable ModelConfig field")
    return ModelConfig.from_dict({**config.to_dict(), **dict(values)})
