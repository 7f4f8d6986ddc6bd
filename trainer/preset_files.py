"""Local keras-nlp preset directories: checking one and finding its vocabulary.

No keras-nlp import here, so the pipeline definition can check a preset
without loading the model code.
"""

from __future__ import annotations

import os

# Where keras-nlp 0.12 keeps a WordPiece tokenizer's vocabulary in a preset.
PRESET_VOCABULARY = os.path.join("assets", "tokenizer", "vocabulary.txt")
PRESET_OOV_TOKEN = "[UNK]"


def check_local_preset(path: str) -> None:
    """Raises ValueError unless ``path`` is a local keras-nlp preset directory."""
    if "://" in path or not os.path.isdir(path):
        raise ValueError(
            f"text_encoder_preset {path!r} must be a local keras-nlp preset directory "
            "(config.json, metadata.json, model.weights.h5, assets/tokenizer/vocabulary.txt); "
            "presets are never downloaded at run time. Save one with "
            "backbone.save_to_preset(dir) and tokenizer.save_to_preset(dir)."
        )
    for required in ("config.json", "metadata.json", "model.weights.h5", PRESET_VOCABULARY):
        if not os.path.exists(os.path.join(path, required)):
            raise ValueError(f"text_encoder_preset {path!r} has no {required}")


def preset_vocabulary(path: str) -> str:
    """The preset's vocabulary file (one token a line; the line number is the id)."""
    check_local_preset(path)
    return os.path.join(path, PRESET_VOCABULARY)
