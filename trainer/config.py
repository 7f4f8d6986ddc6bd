"""Hyperparameters of the multi-task model, passed by the pipeline to the Trainer."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything that shapes the model and its training, in one place."""

    embedding_dim: int = 32
    text_dim: int = 32
    text_heads: int = 2
    text_layers: int = 1
    text_intermediate_dim: int = 64
    tower_dim: int = 64
    dropout: float = 0.1
    learning_rate: float = 3e-3
    batch_size: int = 128
    epochs: int = 3
    task_weights: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {"click": 1.0, "conversion": 1.0, "rating": 0.5})

    def to_dict(self) -> Dict[str, Any]:
        return {k: (dict(v) if isinstance(v, Mapping) else v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "ModelConfig":
        """Builds a config, rejecting unknown keys with a clear message."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known: {sorted(known)}")
        return cls(**values)
