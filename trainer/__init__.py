"""Model, TF Transform and training module code of the recommender pipeline.

Importing this package pins Keras 2 (tf_keras) for TensorFlow, keras-nlp and
TF Recommenders, which is what TFX 1.16, TFT and TFMA expect.
"""

from trainer import keras_env as _keras_env  # noqa: F401  (must run before TF)
