"""The TFX pipeline definition and its runners."""

from trainer import keras_env as _keras_env  # noqa: F401  (must run before TF)
