"""TFMA configuration derived from the task list in ``trainer/features.py``.

Each task's metrics come from its kind (``trainer/task_kinds.py``); its blessing
bound and regression tolerance from its ``Task`` record, the bound overridable
per run.
"""

from __future__ import annotations

import json
import math
from typing import Dict, Mapping, Optional, Sequence

import tensorflow_model_analysis as tfma

from trainer import features as F
from trainer import serving_contract as C
from trainer.task_kinds import kind_of, task_of_output

# The signature TFMA scores with (every task's output plus retrieval hits over
# the catalogue) and the one that gives it the transformed labels and weights.
EVALUATE_SIGNATURE = C.EVALUATE
TRANSFORM_SIGNATURE = C.TRANSFORM_FEATURES
SLICE_FEATURES = (F.ITEM_CATEGORY,)
DEFAULT_RETRIEVAL_KS = C.DEFAULT_RETRIEVAL_KS


def default_thresholds(
    tasks: Optional[Sequence[F.Task]] = None,
    rating_range: Sequence[float] = F.DEFAULT_RATING_RANGE,
) -> Dict[str, float]:
    """Each task's blessing bound (``Task.threshold``); a regression task's,
    an error in rating points, scales with the rating range's width."""
    width = (rating_range[1] - rating_range[0]) / (
        F.DEFAULT_RATING_RANGE[1] - F.DEFAULT_RATING_RANGE[0]
    )
    return {
        t.name: t.threshold * (width if t.kind == "regression" else 1.0)
        for t in (F.TASKS if tasks is None else tasks)
    }


def no_gates(tasks: Optional[Sequence[F.Task]] = None) -> Dict[str, float]:
    """Bounds every model passes (benchmarks measure, they do not gate)."""
    return {
        t.name: 0.0 if kind_of(t).higher_is_better else 1e9
        for t in (F.TASKS if tasks is None else tasks)
    }


def _gate(bound: float, tolerance: float, higher: bool) -> tfma.MetricThreshold:
    """An absolute bound and a no-regression bound against the baseline."""
    direction = (
        tfma.MetricDirection.HIGHER_IS_BETTER if higher else tfma.MetricDirection.LOWER_IS_BETTER
    )
    value_threshold = (
        tfma.GenericValueThreshold(lower_bound={"value": bound})
        if higher
        else tfma.GenericValueThreshold(upper_bound={"value": bound})
    )
    change_threshold = tfma.GenericChangeThreshold(
        direction=direction, absolute={"value": -tolerance if higher else tolerance}
    )
    return tfma.MetricThreshold(value_threshold=value_threshold, change_threshold=change_threshold)


def _gated_metric(threshold: tfma.MetricThreshold):
    """(TFMA class name, **config) -> that metric gated on the overall slice only
    (per-category slices are reported)."""

    def gated(class_name: str, **config) -> tfma.MetricConfig:
        return tfma.MetricConfig(
            class_name=class_name,
            config=json.dumps(config) if config else "",
            per_slice_thresholds=[
                tfma.PerSliceMetricThreshold(
                    slicing_specs=[tfma.SlicingSpec()], threshold=threshold
                )
            ],
        )

    return gated


def _check_thresholds(thresholds: Mapping[str, float]) -> Dict[str, float]:
    known = set(F.TASK_NAMES)
    unknown = sorted(set(thresholds) - known)
    if unknown:
        raise ValueError(f"eval thresholds name unknown tasks {unknown}; known: {sorted(known)}")
    checked = {}
    for name, value in thresholds.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ValueError(f"eval threshold of {name!r} must be a number, not {value!r}")
        checked[name] = float(value)
    return checked


def build_eval_config(
    thresholds: Mapping[str, float] | None = None,
    tasks: Optional[Sequence[str]] = None,
    retrieval_ks: Sequence[int] = DEFAULT_RETRIEVAL_KS,
    rating_range: Sequence[float] = F.DEFAULT_RATING_RANGE,
) -> tfma.EvalConfig:
    """Per-task metrics, overall and per item category, with absolute thresholds
    and a no-regression check against the latest blessed model (the baseline).

    Args:
      thresholds: per-task overrides of ``Task.threshold``, by task name.
      tasks: names of the active tasks; None means every task in ``F.TASKS``.
      retrieval_ks: recall cut-offs evaluated (the largest is gated).
      rating_range: the ratings' (min, max), which scales the default RMSE bar.
    """
    bounds = {**default_thresholds(None, rating_range), **_check_thresholds(thresholds or {})}
    label_keys, weight_keys = {}, {}
    metrics_specs = []
    for task in F.TASKS:
        if tasks is not None and task.name not in tasks:
            continue
        kind = kind_of(task)
        gate = _gate(bounds[task.name], task.regression_tolerance, kind.higher_is_better)
        for output, (label, weight) in kind.tfma_keys(retrieval_ks).items():
            label_keys[output], weight_keys[output] = label, weight
        metrics_specs.extend(kind.tfma_specs(_gated_metric(gate), retrieval_ks))
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


def for_tasks(config: tfma.EvalConfig, tasks: Sequence[str]) -> tfma.EvalConfig:
    """``config`` with only ``tasks``' metrics, labels and weights: the
    Evaluator's, rewritten at run time for the tasks the model was trained on."""
    kept = tfma.EvalConfig()
    kept.CopyFrom(config)
    for spec in kept.model_specs:
        for keys in (spec.label_keys, spec.example_weight_keys):
            for output in [o for o in keys if task_of_output(o) not in tasks]:
                del keys[output]
    metrics = [
        m for m in kept.metrics_specs if all(task_of_output(o) in tasks for o in m.output_names)
    ]
    del kept.metrics_specs[:]
    kept.metrics_specs.extend(metrics)
    return kept
