"""TFMA configuration derived from the task list in ``trainer/features.py``."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import tensorflow_model_analysis as tfma

from trainer import features as F

# Gating metric per task kind (TFMA class name, direction) and reported extras.
TASK_METRICS = {
    "binary": ("AUC", tfma.MetricDirection.HIGHER_IS_BETTER),
    "regression": ("RootMeanSquaredError", tfma.MetricDirection.LOWER_IS_BETTER),
    "multiclass": ("SparseCategoricalAccuracy", tfma.MetricDirection.HIGHER_IS_BETTER),
    "multilabel": ("AUC", tfma.MetricDirection.HIGHER_IS_BETTER),  # micro-averaged over categories
}
EXTRA_METRICS = {
    "binary": ("Calibration", "MeanLabel", "MeanPrediction", "ExampleCount"),
    "regression": ("MeanAbsoluteError", "ExampleCount"),
    "multiclass": ("ExampleCount",),
    "multilabel": ("ExampleCount",),
}
# The signature that gives TFMA the transformed labels (category, interest).
TRANSFORM_SIGNATURE = "transform_features"
SLICE_FEATURES = (F.ITEM_CATEGORY,)
DEFAULT_THRESHOLDS = {"click": 0.6, "conversion": 0.6, "rating": 1.5, "category": 0.2, "interest": 0.6}
REGRESSION_TOLERANCE = {"click": 0.01, "conversion": 0.01, "rating": 0.05, "category": 0.05, "interest": 0.02}


def build_eval_config(thresholds: Mapping[str, float] | None = None,
                      tasks: Optional[Sequence[str]] = None) -> tfma.EvalConfig:
    """Per-task metrics, overall and per item category, with absolute thresholds
    and a no-regression check against the latest blessed model (the baseline)."""
    thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    active = [t for t in F.TASKS if (tasks is None or t.name in tasks) and t.evaluated_by_tfma]
    model_spec = tfma.ModelSpec(
        signature_name="serving_default",
        preprocessing_function_names=[TRANSFORM_SIGNATURE],
        label_keys={t.name: t.tfma_label for t in active},
        example_weight_keys={t.name: t.weight for t in active})
    metrics_specs = []
    for task in active:
        class_name, direction = TASK_METRICS[task.kind]
        bound = thresholds[task.name]
        value_threshold = (tfma.GenericValueThreshold(lower_bound={"value": bound})
                           if direction == tfma.MetricDirection.HIGHER_IS_BETTER
                           else tfma.GenericValueThreshold(upper_bound={"value": bound}))
        tolerance = REGRESSION_TOLERANCE[task.name]
        change_threshold = tfma.GenericChangeThreshold(
            direction=direction,
            absolute={"value": -tolerance if direction == tfma.MetricDirection.HIGHER_IS_BETTER
                      else tolerance})
        # Gate on the overall slice only; per-category slices are reported.
        metrics = [tfma.MetricConfig(
            class_name=class_name,
            per_slice_thresholds=[tfma.PerSliceMetricThreshold(
                slicing_specs=[tfma.SlicingSpec()],
                threshold=tfma.MetricThreshold(value_threshold=value_threshold,
                                               change_threshold=change_threshold))])]
        metrics.extend(tfma.MetricConfig(class_name=name) for name in EXTRA_METRICS[task.kind])
        aggregate = (tfma.AggregationOptions(micro_average=True) if task.kind == "multilabel" else None)
        metrics_specs.append(tfma.MetricsSpec(output_names=[task.name], metrics=metrics, aggregate=aggregate))
    return tfma.EvalConfig(
        model_specs=[model_spec],
        metrics_specs=metrics_specs,
        slicing_specs=[tfma.SlicingSpec(),
                       *(tfma.SlicingSpec(feature_keys=[name]) for name in SLICE_FEATURES)])
