"""TFMA configuration derived from the task list in ``trainer/features.py``."""

from __future__ import annotations

import json
from typing import List, Mapping, Optional, Sequence

import tensorflow_model_analysis as tfma

from trainer import features as F
from trainer import serving_contract as C

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
# The signature TFMA scores with (every task's output plus retrieval hits over
# the catalogue) and the one that gives it the transformed labels and weights.
EVALUATE_SIGNATURE = C.EVALUATE
TRANSFORM_SIGNATURE = C.TRANSFORM_FEATURES
SLICE_FEATURES = (F.ITEM_CATEGORY,)
DEFAULT_THRESHOLDS = {
    "retrieval": 0.05,
    "click": 0.6,
    "conversion": 0.6,
    "rating": 1.5,
    "category": 0.2,
    "interest": 0.6,
}
REGRESSION_TOLERANCE = {
    "retrieval": 0.02,
    "click": 0.01,
    "conversion": 0.01,
    "rating": 0.05,
    "category": 0.05,
    "interest": 0.02,
}
DEFAULT_RETRIEVAL_KS = C.DEFAULT_RETRIEVAL_KS


def _gate(bound: float, tolerance: float, direction) -> tfma.MetricThreshold:
    """An absolute bound and a no-regression bound against the baseline, on the overall slice."""
    higher = direction == tfma.MetricDirection.HIGHER_IS_BETTER
    value_threshold = (
        tfma.GenericValueThreshold(lower_bound={"value": bound})
        if higher
        else tfma.GenericValueThreshold(upper_bound={"value": bound})
    )
    change_threshold = tfma.GenericChangeThreshold(
        direction=direction, absolute={"value": -tolerance if higher else tolerance}
    )
    return tfma.MetricThreshold(value_threshold=value_threshold, change_threshold=change_threshold)


def _gated(class_name: str, threshold: tfma.MetricThreshold, **config) -> tfma.MetricConfig:
    # Gate on the overall slice only; per-category slices are reported.
    return tfma.MetricConfig(
        class_name=class_name,
        config=json.dumps(config) if config else "",
        per_slice_thresholds=[
            tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold)
        ],
    )


def _retrieval_specs(ks: Sequence[int], threshold: tfma.MetricThreshold) -> List[tfma.MetricsSpec]:
    """recall@k: the mean of the ``evaluate`` signature's per-example hits over
    clicked impressions; the largest k is gated."""
    specs = []
    for k in sorted(ks):
        name = f"recall_at_{k}"
        metric = (
            _gated("MeanPrediction", threshold, name=name)
            if k == max(ks)
            else tfma.MetricConfig(class_name="MeanPrediction", config=json.dumps({"name": name}))
        )
        specs.append(tfma.MetricsSpec(output_names=[C.retrieval_hit_output(k)], metrics=[metric]))
    return specs


def build_eval_config(
    thresholds: Mapping[str, float] | None = None,
    tasks: Optional[Sequence[str]] = None,
    retrieval_ks: Sequence[int] = DEFAULT_RETRIEVAL_KS,
) -> tfma.EvalConfig:
    """Per-task metrics, overall and per item category, with absolute thresholds
    and a no-regression check against the latest blessed model (the baseline)."""
    thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    active = [t for t in F.TASKS if tasks is None or t.name in tasks]
    label_keys, weight_keys = {}, {}
    metrics_specs = []
    for task in active:
        if task.kind == "retrieval":
            gate = _gate(
                thresholds[task.name],
                REGRESSION_TOLERANCE[task.name],
                tfma.MetricDirection.HIGHER_IS_BETTER,
            )
            for k in retrieval_ks:
                label_keys[C.retrieval_hit_output(k)] = task.label
                weight_keys[C.retrieval_hit_output(k)] = F.RETRIEVAL_POSITIVE_WEIGHT
            metrics_specs.extend(_retrieval_specs(retrieval_ks, gate))
            continue
        label_keys[task.name], weight_keys[task.name] = task.tfma_label, task.weight
        class_name, direction = TASK_METRICS[task.kind]
        gate = _gate(thresholds[task.name], REGRESSION_TOLERANCE[task.name], direction)
        metrics = [_gated(class_name, gate)]
        metrics.extend(tfma.MetricConfig(class_name=name) for name in EXTRA_METRICS[task.kind])
        aggregate = (
            tfma.AggregationOptions(micro_average=True) if task.kind == "multilabel" else None
        )
        metrics_specs.append(
            tfma.MetricsSpec(output_names=[task.name], metrics=metrics, aggregate=aggregate)
        )
    model_spec = tfma.ModelSpec(
        signature_name=EVALUATE_SIGNATURE,
        preprocessing_function_names=[TRANSFORM_SIGNATURE],
        label_keys=label_keys,
        example_weight_keys=weight_keys,
    )
    return tfma.EvalConfig(
        model_specs=[model_spec],
        metrics_specs=metrics_specs,
        slicing_specs=[
            tfma.SlicingSpec(),
            *(tfma.SlicingSpec(feature_keys=[name]) for name in SLICE_FEATURES),
        ],
    )
