"""Pins the process to Keras 2 (tf_keras) before TensorFlow is imported.

TFX 1.16, TF Transform, TFMA and TF Recommenders 0.7 need tf_keras. Setting
``TF_USE_LEGACY_KERAS=1`` in ``os.environ`` also reaches Beam worker processes
and any server started from this process, because they inherit the environment.
"""

import os
import sys
import warnings

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

if os.environ["TF_USE_LEGACY_KERAS"] != "1":
    warnings.warn(
        "TF_USE_LEGACY_KERAS is not '1': TFX 1.16, TFT and TF Recommenders need "
        "tf_keras (Keras 2); expect failures.",
        RuntimeWarning,
        stacklevel=2,
    )
elif "tensorflow" in sys.modules and "keras.src" in sys.modules:
    warnings.warn(
        "TensorFlow and Keras 3 were imported before the recommender package; "
        "tf.keras may already be Keras 3. Import this package first or export "
        "TF_USE_LEGACY_KERAS=1.",
        RuntimeWarning,
        stacklevel=2,
    )
