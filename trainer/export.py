"""Serving signatures: serialized tf.Example in, every task's output out."""
from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from trainer import features as F
from trainer.data import MODEL_INPUTS


def serving_raw_feature_spec(tf_transform_output: tft.TFTransformOutput):
    """The raw features a client sends (no labels or metadata).

    Optional text features default to the empty string when left out.
    """
    spec = tf_transform_output.raw_feature_spec()
    serving = {}
    for feature in F.RAW_FEATURES:
        if feature.role != "model":
            continue
        parse_spec = spec[feature.name]
        if feature.optional and isinstance(parse_spec, tf.io.FixedLenFeature):
            parse_spec = tf.io.FixedLenFeature(parse_spec.shape, parse_spec.dtype,
                                               default_value=[""] * max(1, int(sum(parse_spec.shape))))
        serving[feature.name] = parse_spec
    return serving


def make_serving_fn(model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput):
    """``serving_default``: parses raw tf.Examples, applies TFT, runs the model."""
    # Kept as a model attribute so its lookup tables are tracked and
    # initialised when the SavedModel loads (tensorflow/transform#237).
    model.tft_layer = tf_transform_output.transform_features_layer()
    raw_spec = serving_raw_feature_spec(tf_transform_output)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_tf_examples(serialized: tf.Tensor):
        raw = tf.io.parse_example(serialized, raw_spec)
        transformed = model.tft_layer(raw)
        outputs = model({name: transformed[name] for name in MODEL_INPUTS}, training=False)
        return {name: tf.identity(value, name=name) for name, value in outputs.items()}

    return serve_tf_examples


def export_serving_model(model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput,
                         export_dir: str) -> None:
    """Saves the SavedModel with its ``serving_default`` signature."""
    signatures = {"serving_default": make_serving_fn(model, tf_transform_output)}
    model.save(export_dir, save_format="tf", signatures=signatures)
