"""TaskSelector: which tasks this run trains, evaluates and serves, decided
from the data's statistics.

A task whose labels are too few to learn or evaluate in either split
(fewer than ``min_task_labels`` positives for click and conversion, rated
examples for rating, history categories for interest) is switched off; so is
the category task with one category, and a task whose ESMM parent is off.
What counts as labels follows the task's kind (``_EVIDENCE``), so a new task
record needs no change here. A task list named by the model config wins
over the data. The decision is made at run time, from StatisticsGen's output
(a Kubeflow spec is compiled before any data exists), and recorded in the
``ActiveTasks`` artifact (``tasks.json`` and the ``active_tasks`` property)
that the Trainer and Tuner read; the Trainer writes it into the export
(``assets.extra/tasks.json``), where the Evaluator and serving find it.
"""

import dataclasses
import json
import os
from typing import Dict, Mapping, Optional, Sequence, Tuple

import tensorflow as tf
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx import v1 as tfx
from tfx.types import artifact, artifact_utils

from trainer import features as F

SELECTION_FILE = "tasks.json"
ACTIVE_TASKS_PROPERTY = "active_tasks"
OFF_TASKS_PROPERTY = "tasks_off"
DEFAULT_MIN_TASK_LABELS = 50
SPLITS = ("train", "eval")
# What counts as a task's labels, by its kind (so a new task needs no code
# here): (statistic, the feature it is read from, its name in the reasons).
#   non_zero: examples whose value is not 0 (positives; rated examples by weight)
#   unique: distinct values (a multiclass task needs 2)
#   values: values over all examples (a multilabel task's labels)
_EVIDENCE = {
    "retrieval": ("non_zero", "label", "positives ({feature})"),
    "binary": ("non_zero", "label", "positives ({feature})"),
    "regression": ("non_zero", "weight", "labelled examples ({feature} > 0)"),
    "multiclass": ("unique", "label", "distinct values of {feature}"),
    "multilabel": ("values", "label", "values of {feature}"),
}


def _raw_feature(name: str) -> str:
    """The raw feature a task reads (its label may be Transform's output of it)."""
    for raw in F.RAW_FEATURES:
        if name in (raw.name, F.transformed_name(raw.name)):
            return raw.name
    raise ValueError(f"{name!r} is neither a raw feature nor Transform's output of one")


def _evidence(task: F.Task) -> Tuple[str, str, str]:
    statistic, source, noun = _EVIDENCE[task.kind]
    feature = _raw_feature(task.label if source == "label" else task.weight)
    return statistic, feature, noun.format(feature=feature)


class ActiveTasks(artifact.Artifact):
    """The tasks a run trains, evaluates and serves, and why the others are off."""

    TYPE_NAME = "recsys.ActiveTasks"


@dataclasses.dataclass(frozen=True)
class TaskSelection:
    """Active task names (``F.TASKS`` order), the others' reasons and the counts."""

    active: Tuple[str, ...]
    off: Mapping[str, str]
    counts: Mapping[str, Mapping[str, int]]

    def to_dict(self) -> Dict[str, object]:
        return {"active": list(self.active), "off": dict(self.off), "counts": dict(self.counts)}

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> "TaskSelection":
        return cls(tuple(values["active"]), dict(values["off"]), dict(values.get("counts", {})))

    def off_line(self) -> str:
        """One line: the tasks off and why ('' when every task is on)."""
        if not self.off:
            return ""
        return "tasks off: " + "; ".join(f"{name} ({why})" for name, why in self.off.items())


def _feature(stats: statistics_pb2.DatasetFeatureStatistics, name: str):
    for feature in stats.features:
        if feature.path.step == [name] or feature.name == name:
            return feature
    return None


def _statistic(stats: statistics_pb2.DatasetFeatureStatistics, name: str, statistic: str) -> int:
    feature = _feature(stats, name)
    if feature is None:
        return 0
    if statistic == "non_zero":
        numeric = feature.num_stats
        return int(numeric.common_stats.num_non_missing - numeric.num_zeros)
    if statistic == "unique":
        return int(feature.string_stats.unique)
    common = (
        feature.string_stats.common_stats
        if feature.HasField("string_stats")
        else (feature.num_stats.common_stats)
    )
    return int(common.tot_num_values)


def label_counts(
    stats: statistics_pb2.DatasetFeatureStatistics, tasks: Sequence[F.Task] = ()
) -> Dict[str, int]:
    """Each task's label count in one split (what ``_EVIDENCE`` says counts)."""
    counts = {"examples": int(stats.num_examples)}
    for task in tasks or F.TASKS:
        statistic, feature, _ = _evidence(task)
        counts[task.name] = _statistic(stats, feature, statistic)
    return counts


def select_tasks(
    counts: Mapping[str, Mapping[str, int]],
    named: Optional[Sequence[str]] = None,
    min_labels: int = DEFAULT_MIN_TASK_LABELS,
) -> TaskSelection:
    """The tasks the data supports (``counts`` per split, from ``label_counts``),
    or exactly ``named`` when the config names them."""
    if named:
        unknown = sorted(set(named) - set(F.TASK_NAMES))
        if unknown:
            raise ValueError(f"tasks {unknown} are unknown; known: {F.TASK_NAMES}")
        off = {t: "not in the model config's tasks" for t in F.TASK_NAMES if t not in named}
        return TaskSelection(tuple(t for t in F.TASK_NAMES if t in named), off, counts)
    off: Dict[str, str] = {}
    for task in F.TASKS:
        statistic, _, noun = _evidence(task)
        found = {split: counts.get(split, {}).get(task.name, 0) for split in SPLITS}
        if statistic == "unique":
            if found["train"] < 2:
                off[task.name] = f"{found['train']} {noun} in train, needs 2"
            continue
        short = [f"{n} {noun} in {split}" for split, n in found.items() if n < min_labels]
        if short:
            off[task.name] = f"{', '.join(short)}, below min_task_labels {min_labels}"
    for task in F.TASKS:
        if task.esmm_parent in off and task.name not in off:
            off[task.name] = (
                f"its output is p({task.esmm_parent}) x p({task.name} | {task.esmm_parent}): "
                f"the {task.esmm_parent} task is off"
            )
    active = tuple(t for t in F.TASK_NAMES if t not in off)
    if not active:
        raise ValueError(
            f"no task has enough labels to train and evaluate ({json.dumps(dict(counts))}): "
            + "; ".join(f"{t}: {why}" for t, why in off.items())
        )
    return TaskSelection(active, off, counts)


def read_split_statistics(
    statistics_artifact,
) -> Dict[str, statistics_pb2.DatasetFeatureStatistics]:
    """StatisticsGen's statistics per split (``train``, ``eval``)."""
    out = {}
    for split in artifact_utils.decode_split_names(statistics_artifact.split_names):
        path = os.path.join(artifact_utils.get_split_uri([statistics_artifact], split),
                            "FeatureStats.pb")  # fmt: skip
        with tf.io.gfile.GFile(path, "rb") as f:
            stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(f.read())
        out[split] = stats.datasets[0]
    return out


def read_selection(uri: str) -> TaskSelection:
    with tf.io.gfile.GFile(os.path.join(uri, SELECTION_FILE)) as f:
        return TaskSelection.from_dict(json.load(f))


@tfx.dsl.components.component
def TaskSelector(
    statistics: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleStatistics],
    active_tasks: tfx.dsl.components.OutputArtifact[ActiveTasks],
    tasks: tfx.dsl.components.Parameter[str] = "",
    min_task_labels: tfx.dsl.components.Parameter[int] = DEFAULT_MIN_TASK_LABELS,
):
    """Writes the run's ``TaskSelection`` (``tasks``: a JSON list that wins, or "")."""
    counts = {
        split: label_counts(stats) for split, stats in read_split_statistics(statistics).items()
    }
    selection = select_tasks(counts, json.loads(tasks) if tasks else None, min_task_labels)
    with tf.io.gfile.GFile(os.path.join(active_tasks.uri, SELECTION_FILE), "w") as f:
        json.dump(selection.to_dict(), f, indent=2, sort_keys=True)
    active_tasks.set_string_custom_property(ACTIVE_TASKS_PROPERTY, ",".join(selection.active))
    active_tasks.set_string_custom_property(OFF_TASKS_PROPERTY, selection.off_line())
