"""The ``custom_config`` each custom-coded component gets (Transform, Trainer).

Both carry a fingerprint of the trainer code, so an edit to it re-runs them
instead of reusing a cached output built by the old code.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from trainer.config import CONFIG_KEY, TUNING_KEY


def transform_config(code_version: str) -> Dict[str, Any]:
    """Transform's: the code version."""
    return {"code_version": code_version}


def trainer_config(model_config: Optional[dict], code_version: str) -> Dict[str, Any]:
    """The Trainer's: the ModelConfig overrides and the code version."""
    return {CONFIG_KEY: model_config or {}, "code_version": code_version}


def tuner_config(
    model_config: Optional[dict], tuning: Dict[str, Any], code_version: str
) -> Dict[str, Any]:
    """The Tuner's: the base ModelConfig overrides, the TuningConfig and the code version."""
    return {CONFIG_KEY: model_config or {}, TUNING_KEY: tuning, "code_version": code_version}
