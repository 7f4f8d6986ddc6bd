"""What a run produced, read back from ML Metadata: metrics, blessing, push."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Optional

import tensorflow_model_analysis as tfma
from google.protobuf import text_format
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata

from components.compatible_evaluator import BASELINE_SKIPPED
from components.log_example_gen import SPANS_PROPERTY
from components.task_selector import OFF_TASKS_PROPERTY, ActiveTasks
from components.trainer import COMPACT_MODEL_KEY
from pipeline.pipeline import COMPACT_EVALUATOR, COMPACT_PUSHER
from trainer import features as F
from trainer.task_kinds import task_of_output


def _latest(store: metadata_store.MetadataStore, type_name: str, component: Optional[str] = None):
    """The newest artifact of a type (written by ``component``, when given)."""
    artifacts = [
        a
        for a in store.get_artifacts_by_type(type_name)
        if component is None or f"{os.sep}{component}{os.sep}" in a.uri
    ]
    return max(artifacts, key=lambda a: a.id) if artifacts else None


def _custom(artifact, key: str) -> Any:
    if artifact is None or key not in artifact.custom_properties:
        return None
    value = artifact.custom_properties[key]
    return value.int_value or value.string_value or value.double_value


def _task_metrics(eval_uri: str) -> Dict[str, Dict[str, float]]:
    """Overall-slice metrics per task output of a TFMA result."""
    result = tfma.load_eval_result(eval_uri)
    per_task: Dict[str, Dict[str, float]] = {}
    for slice_key, metrics in result.slicing_metrics:
        if slice_key:
            continue
        for output_name, by_sub_key in metrics.items():
            for metric_name, value in by_sub_key.get("", {}).items():
                number = value.get("doubleValue")
                if number is not None:
                    # Aggregated metrics come prefixed with their options
                    # ("micro_average: true\n_auc"): keep the metric's name.
                    name = metric_name.rsplit("\n_", 1)[-1]
                    per_task.setdefault(task_of_output(output_name), {})[name] = float(number)
    return per_task


def component_timings(store: metadata_store.MetadataStore) -> List[Dict[str, Any]]:
    """Wall time and state of every component of the latest pipeline run."""
    runs = store.get_contexts_by_type("pipeline_run")
    if not runs:
        return []
    latest = max(runs, key=lambda c: c.id)
    types = {t.id: t.name for t in store.get_execution_types()}
    node_type = store.get_context_type("node").id
    states = {v: k.lower() for k, v in metadata_store_pb2.Execution.State.items()}
    rows = []
    for execution in sorted(
        store.get_executions_by_context(latest.id), key=lambda e: e.create_time_since_epoch
    ):
        # The component id (its "<pipeline>.<id>" node context), not the class name.
        nodes = [
            c.name for c in store.get_contexts_by_execution(execution.id) if c.type_id == node_type
        ]
        rows.append(
            {
                "component": nodes[0].rsplit(".", 1)[-1]
                if nodes
                else types[execution.type_id].rsplit(".", 1)[-1],
                "seconds": round(
                    (execution.last_update_time_since_epoch - execution.create_time_since_epoch)
                    / 1000.0,
                    3,
                ),
                "state": states.get(execution.last_known_state, "unknown"),
            }
        )
    return rows


def _describe_failure(failure) -> str:
    key = failure.metric_key
    value = failure.metric_value.double_value.value
    threshold = text_format.MessageToString(failure.metric_threshold, as_one_line=True)
    return f"{key.output_name}/{key.name} = {value:.4f} fails {threshold}"


def validation_metrics(model_run_uri: Optional[str]) -> Dict[str, Dict[str, float]]:
    """The Trainer's last-epoch validation figures per task (from history.json),
    beside TFMA's: losses, and TFRS FactorizedTopK recall for retrieval."""
    path = model_run_uri and os.path.join(model_run_uri, "history.json")
    if not path or not os.path.exists(path):
        return {}
    history = json.load(open(path))
    per_task: Dict[str, Dict[str, float]] = {}
    for key, values in history.items():
        for task in F.TASK_NAMES:
            if key.startswith(f"val_{task}_") and values:
                per_task.setdefault(task, {})[key[len(f"val_{task}_") :]] = float(values[-1])
    return per_task


def summarize(metadata_path: str) -> Dict[str, Any]:
    """Per-task metrics, blessing and push destination of the latest run."""
    config = metadata.sqlite_metadata_connection_config(metadata_path)
    store = metadata_store.MetadataStore(config)
    evaluation = _latest(store, "ModelEvaluation", "Evaluator")
    blessing = _latest(store, "ModelBlessing", "Evaluator")
    pushed = _latest(store, "PushedModel", "AtomicPusher")
    model_run = _latest(store, "ModelRun")
    model = _latest(store, "Model", os.path.join("Trainer", "model"))
    metrics = _task_metrics(evaluation.uri) if evaluation else {}
    statistics = _latest(store, "ExampleStatistics", "StatisticsGen")
    anomalies = _latest(store, "ExampleAnomalies", "ExampleValidator")
    examples = _latest(store, "Examples", "InteractionLogExampleGen")
    selection = _latest(store, ActiveTasks.TYPE_NAME)
    summary: Dict[str, Any] = {
        "tasks": [t for t in F.TASK_NAMES if t in metrics],
        # "tasks off: name (why); ..." ("" when the data has labels for every task).
        "tasks_off": _custom(selection, OFF_TASKS_PROPERTY) or "",
        "examples_uri": examples.uri if examples else None,
        "spans": _custom(examples, SPANS_PROPERTY) or "",  # "" without span specs
        "statistics_uri": statistics.uri if statistics else None,
        "anomalies_uri": anomalies.uri if anomalies else None,
        "metrics": metrics,
        "blessed": bool(_custom(blessing, "blessed")),
        "baseline_skipped": _custom(blessing, BASELINE_SKIPPED),
        "pushed": bool(_custom(pushed, "pushed")),
        "pushed_destination": _custom(pushed, "pushed_destination"),
        "pushed_version": _custom(pushed, "pushed_version"),
        "evaluation_uri": evaluation.uri if evaluation else None,
        # The Trainer's SavedModel (blessed or not).
        "model_uri": os.path.join(model.uri, "Format-Serving") if model else None,
        "training_curves": (
            os.path.join(model_run.uri, "training_curves.png") if model_run else None
        ),
        "components": component_timings(store),
        "validation_metrics": validation_metrics(model_run.uri if model_run else None),
    }
    if evaluation:
        summary["validation_failures"] = _validation_failures(evaluation.uri)
    compact = compact_summary(store)
    if compact:
        summary["compact"] = compact
    return summary


def _validation_failures(evaluation_uri: str) -> List[str]:
    validation = tfma.load_validation_result(evaluation_uri)
    return [
        _describe_failure(failure)
        for per_slice in validation.metric_validations_per_slice
        for failure in per_slice.failures
    ]


def compact_summary(store: metadata_store.MetadataStore) -> Dict[str, Any]:
    """The compact model's evaluation, blessing and push ({} when the run
    made none): judged against the run's full model (``CompactEvaluator``)."""
    model = _latest(store, "Model", os.path.join("Trainer", COMPACT_MODEL_KEY))
    evaluation = _latest(store, "ModelEvaluation", COMPACT_EVALUATOR)
    if model is None or evaluation is None:
        return {}
    blessing = _latest(store, "ModelBlessing", COMPACT_EVALUATOR)
    pushed = _latest(store, "PushedModel", COMPACT_PUSHER)
    return {
        "model_uri": os.path.join(model.uri, "Format-Serving"),
        "metrics": _task_metrics(evaluation.uri),
        "blessed": bool(_custom(blessing, "blessed")),
        "validation_failures": _validation_failures(evaluation.uri),
        "pushed": bool(_custom(pushed, "pushed")),
        "pushed_destination": _custom(pushed, "pushed_destination"),
        "pushed_version": _custom(pushed, "pushed_version"),
    }


def _format_metric(name: str, value: float) -> str:
    return f"{name}={int(value)}" if name == "example_count" else f"{name}={value:.4f}"


def format_summary(
    summary: Dict[str, Any], work_dir: Optional[str] = None, component_times: bool = True
) -> str:
    """Human-readable report of a run (with a table of the components' times
    unless ``component_times`` is False)."""
    lines = ["", "=== Run summary ==="]
    if component_times:
        lines.append("  components (wall seconds):")
        for row in summary.get("components", []):
            note = "" if row["state"] == "complete" else f" ({row['state']})"
            lines.append(f"    {row['component']:<28} {row['seconds']:>7.1f}{note}")
    if summary.get("spans"):
        lines.append(f"  logs read: {summary['spans']}")
    if summary.get("tasks_off"):
        lines.append(f"  {summary['tasks_off']}")
    lines.append("  evaluation per task:")
    for task in summary["tasks"]:
        metrics = summary["metrics"].get(task, {})
        shown = (
            ", ".join(_format_metric(k, v) for k, v in sorted(metrics.items()) if not math.isnan(v))
            or "no metrics"
        )
        lines.append(f"    {task:<10} {shown}")
    if summary.get("validation_metrics"):
        lines.append("  trainer validation per task (last epoch):")
        for task, metrics in summary["validation_metrics"].items():
            lines.append(
                f"    {task:<10} "
                + ", ".join(_format_metric(k, v) for k, v in sorted(metrics.items()))
            )
    lines.append(f"  blessed: {summary['blessed']}")
    if summary.get("baseline_skipped"):
        lines.append(f"  no-regression check skipped: {summary['baseline_skipped']}")
    for failure in summary.get("validation_failures") or []:
        lines.append(f"  failed threshold: {failure}")
    if summary["pushed"]:
        lines.append(
            f"  pushed model (version {summary['pushed_version']}): {summary['pushed_destination']}"
        )
    else:
        lines.append("  not pushed: the model was not blessed")
    compact = summary.get("compact")
    if compact:
        lines.append(
            f"  compact model: blessed {compact['blessed']}"
            + (
                f", pushed (version {compact['pushed_version']}): {compact['pushed_destination']}"
                if compact["pushed"]
                else ", not pushed"
            )
        )
        for failure in compact["validation_failures"]:
            lines.append(f"    failed threshold: {failure}")
    if summary.get("training_curves"):
        lines.append(f"  training curves: {summary['training_curves']}")
    if work_dir:
        lines.append(f"  summary json: {os.path.join(work_dir, 'run_summary.json')}")
        lines.append(f"  report: {os.path.join(work_dir, 'report', 'run_report.md')}")
    return "\n".join(lines)


def write_summary(summary: Dict[str, Any], work_dir: str) -> str:
    path = os.path.join(work_dir, "run_summary.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    return path
