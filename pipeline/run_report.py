"""A Markdown run report with PNG plots, written by every local run.

``<work_dir>/report/run_report.md``: data (examples per split, ingestion
counts and bad rows by reason, feature statistics, anomalies), training
curves and validation per task,
evaluation per task overall and per item category with the blessing
decision, the pushed model, and the wall time per component.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict, List, Optional

import tensorflow_data_validation as tfdv
import tensorflow_model_analysis as tfma

from tensorflow_metadata.proto.v0 import anomalies_pb2

from components.anomalies_gate import describe_anomalies
from components.log_example_gen import REPORT_FILE
from trainer import features as F
from trainer.task_kinds import kind_of


def _table(header: List[str], rows: List[List[Any]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) >= 1 else f"{value:.4f}"
    return str(value)


def _ingestion(examples_uri: str, spans: Optional[str] = None) -> List[str]:
    path = os.path.join(examples_uri, REPORT_FILE)
    if not os.path.exists(path):
        return []
    report = json.load(open(path))
    bad = {k[4:]: v for k, v in report.items() if k.startswith("bad:")}
    lines = [
        "## Data",
        "",
        *([f"Logs read: {spans}.", ""] if spans else []),
        *_table(
            ["count", "value"],
            [[k, v] for k, v in sorted(report.items()) if not k.startswith("bad:")],
        ),
    ]
    if bad:
        lines += [
            "Bad rows by reason (each one is in `DeadLetters/` with its original line):",
            "",
            *_table(["reason", "rows"], sorted(bad.items())),
        ]
    else:
        lines += ["No bad rows.", ""]
    return lines


def _statistics(statistics_uri: Optional[str]) -> List[str]:
    path = statistics_uri and os.path.join(statistics_uri, "Split-train", "FeatureStats.pb")
    if not path or not os.path.exists(path):
        return []
    stats = tfdv.load_stats_binary(path).datasets[0]
    rows = []
    for feature in stats.features:
        common = (feature.num_stats or feature.string_stats).common_stats
        total = common.num_non_missing + common.num_missing
        detail = (
            f"mean {feature.num_stats.mean:.3g}, min {feature.num_stats.min:.3g}, "
            f"max {feature.num_stats.max:.3g}"
            if feature.HasField("num_stats")
            else f"{feature.string_stats.unique} unique"
        )
        rows.append([feature.path.step[0], f"{common.num_missing / max(total, 1):.1%}", detail])
    return [
        "### Train split features",
        "",
        f"{stats.num_examples} examples.",
        "",
        *_table(["feature", "missing", "values"], sorted(rows)),
    ]


def _anomalies(anomalies_uri: Optional[str]) -> List[str]:
    """ExampleValidator's findings against the curated schema, per split."""
    if not anomalies_uri:
        return []
    splits = sorted(
        name[len("Split-") :] for name in os.listdir(anomalies_uri) if name.startswith("Split-")
    )
    problems = []
    for split in splits:
        path = os.path.join(anomalies_uri, f"Split-{split}", "SchemaDiff.pb")
        if os.path.exists(path):
            with open(path, "rb") as f:
                problems += describe_anomalies(anomalies_pb2.Anomalies.FromString(f.read()), split)
    lines = ["### Anomalies against the curated schema", ""]
    if problems:
        return lines + [f"- {problem}" for problem in problems] + [""]
    return lines + [f"None in {', '.join(splits) or 'any split'}.", ""]


# Per item category: (TFMA output, metric) -> column title.
def _slice_columns(outputs: set) -> Dict[tuple, str]:
    """{(output, TFMA metric key): column title} of each task's gating metric per
    category, as its kind reports it (retrieval: recall at the largest k)."""
    columns: Dict[tuple, str] = {}
    for task in F.TASKS:
        columns.update(kind_of(task).report_columns(sorted(outputs)))
    return columns


def _slices(evaluation_uri: str) -> List[str]:
    result = tfma.load_eval_result(evaluation_uri)
    columns = _slice_columns(
        {output for _, metrics in result.slicing_metrics for output in metrics}
    )
    rows = []
    for key, metrics in result.slicing_metrics:
        category = dict(key).get(F.ITEM_CATEGORY)
        if category is None:
            continue
        cells = [category]
        for output, name in columns:
            value = metrics.get(output, {}).get("", {}).get(name, {}).get("doubleValue")
            cells.append(_fmt(value) if value is not None else "—")
        rows.append(cells)
    if not rows:
        return []
    return [
        "### Per item category",
        "",
        *_table(["item_category", *columns.values()], sorted(rows)),
    ]


def _compact(summary: Dict[str, Any]) -> List[str]:
    """The compact model: its blessing, push, size and every task's TFMA
    metrics beside the full model's ([] when the run made none)."""
    compact = summary.get("compact")
    if not compact:
        return []
    lines = ["## Compact model", ""]
    sizes = [
        sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 1e6
        for path in (summary.get("model_uri") or "", compact["model_uri"])
    ]
    lines += [f"`{compact['model_uri']}`: {sizes[1]:.1f} MB (full model {sizes[0]:.1f} MB).", ""]
    rows = []
    for task in summary["tasks"]:
        full, small = summary["metrics"].get(task, {}), compact["metrics"].get(task, {})
        shared = set(full) & set(small) - {"example_count", "loss", "rmse"}
        for name in sorted(n for n in shared if not n.endswith("_diff")):  # vs own baselines
            rows.append(
                [
                    task,
                    name,
                    _fmt(full[name]),
                    _fmt(small[name]),
                    f"{small[name] - full[name]:+.4f}",
                ]
            )
    lines += _table(["task", "metric", "full", "compact", "difference"], rows)
    lines += [f"**Blessed against the full model: {'yes' if compact['blessed'] else 'no'}.**", ""]
    lines += [f"- failed: {failure}" for failure in compact["validation_failures"]]
    if compact["pushed"]:
        lines += [
            f"Pushed as version {compact['pushed_version']} to `{compact['pushed_destination']}`.",
            "",
        ]
    else:
        lines += ["Not pushed: not blessed.", ""]
    return lines


def write_report(summary: Dict[str, Any], work_dir: str) -> str:
    """Writes the report (and copies its plots) under ``<work_dir>/report``; returns its path."""
    out = os.path.join(work_dir, "report")
    os.makedirs(out, exist_ok=True)
    lines = ["# Run report", ""]
    if summary.get("examples_uri"):
        lines += _ingestion(summary["examples_uri"], summary.get("spans"))
        lines += _statistics(summary.get("statistics_uri"))
        lines += _anomalies(summary.get("anomalies_uri"))
    if summary.get("training_curves") and os.path.exists(summary["training_curves"]):
        shutil.copyfile(summary["training_curves"], os.path.join(out, "training_curves.png"))
        lines += ["## Training", "", "![training curves per task](training_curves.png)", ""]
    if summary.get("validation_metrics"):
        names = sorted({m for metrics in summary["validation_metrics"].values() for m in metrics})
        lines += [
            "Validation per task at the last epoch (Keras):",
            "",
            *_table(
                ["task", *names],
                [
                    [task, *(_fmt(metrics.get(m, "—")) for m in names)]
                    for task, metrics in summary["validation_metrics"].items()
                ],
            ),
        ]
    lines += ["## Evaluation", ""]
    if summary.get("tasks_off"):
        lines += [f"- {summary['tasks_off'][0].upper()}{summary['tasks_off'][1:]}", ""]
    # TFMA's metrics; "loss" and "rmse" repeat the Keras-compiled ones.
    metric_names = sorted(
        {m for task in summary["metrics"].values() for m in task} - {"loss", "rmse"}
    )
    lines += _table(
        ["task", *metric_names],
        [
            [task, *(_fmt(summary["metrics"][task].get(m, "—")) for m in metric_names)]
            for task in summary["tasks"]
        ],
    )
    if summary.get("evaluation_uri"):
        lines += _slices(summary["evaluation_uri"])
    lines += [f"**Blessed: {'yes' if summary['blessed'] else 'no'}.**", ""]
    lines += [f"- failed: {failure}" for failure in summary.get("validation_failures") or []]
    if summary.get("baseline_skipped"):
        lines += [f"- no-regression check skipped: {summary['baseline_skipped']}", ""]
    lines += ["## Model", ""]
    if summary["pushed"]:
        lines += [
            f"Pushed as version {summary['pushed_version']} to `{summary['pushed_destination']}`.",
            "",
        ]
    else:
        lines += ["Not pushed: the model was not blessed.", ""]
    lines += _compact(summary)
    lines += [
        "## Components",
        "",
        *_table(
            ["component", "seconds", "state"],
            [
                [r["component"], f"{r['seconds']:.1f}", r["state"]]
                for r in summary.get("components", [])
            ],
        ),
    ]
    path = os.path.join(out, "run_report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path
