"""The ``custom_config`` each custom-coded component gets (Transform, Trainer).

Both carry a fingerprint of the trainer code, so an edit to it re-runs them
instead of reusing a cached output built by the old code.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from trainer.config import CONFIG_KEY, ModelConfig
from trainer.preset_files import preset_vocabulary
from trainer.transform import TEXT_VOCABULARY_FILE


def transform_config(model_settings: ModelConfig, code_version: str) -> Dict[str, Any]:
    """Transform's: the code version and, with a pretrained encoder, its vocabulary."""
    config: Dict[str, Any] = {"code_version": code_version}
    if model_settings.text_encoder_preset:
        config[TEXT_VOCABULARY_FILE] = preset_vocabulary(model_settings.text_encoder_preset)
    return config


def trainer_config(model_config: Optional[dict], code_version: str) -> Dict[str, Any]:
    """The Trainer's: the ModelConfig overrides and the code version."""
    return {CONFIG_KEY: model_config or {}, "code_version": code_version}
