"""TF Serving-compatible local model server and gRPC client."""

from trainer import keras_env as _keras_env  # noqa: F401  (must run before TF)
