"""TaskSelector: which tasks this run trains, evaluates and serves, decided
from the data's statistics.

A task whose labels are too few to learn or evaluate in either split
(positives for click and conversion, rated examples for rating, fewer than
``min_task_labels``) is switched off; so is the category task with one
category, and the interest task when the histories hold fewer than
``min_task_labels`` categories. A task list named by the model config wins
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
# What each task needs from the data: the counted label (see ``label_counts``).
_NEEDS = {
    "retrieval": ("clicks", "clicked impressions"),
    "click": ("clicks", "clicked impressions"),
    "conversion": ("purchases", "purchases"),
    "rating": ("ratings", "rated impressions"),
    "interest": ("history_categories", "history categories"),
}


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


def _non_zero(stats: statistics_pb2.DatasetFeatureStatistics, name: str) -> int:
    feature = _feature(stats, name)
    if feature is None or not feature.HasField("num_stats"):
        return 0
    return int(feature.num_stats.common_stats.num_non_missing - feature.num_stats.num_zeros)


def label_counts(stats: statistics_pb2.DatasetFeatureStatistics) -> Dict[str, int]:
    """The label counts of one split that decide which tasks can run."""
    category = _feature(stats, F.ITEM_CATEGORY)
    history = _feature(stats, F.HISTORY_CATEGORIES)
    return {
        "examples": int(stats.num_examples),
        "clicks": _non_zero(stats, F.CLICK),
        "purchases": _non_zero(stats, F.PURCHASE),
        "ratings": _non_zero(stats, F.RATING_WEIGHT),
        "categories": int(category.string_stats.unique) if category is not None else 0,
        "history_categories": int(history.string_stats.common_stats.tot_num_values)
        if history is not None
        else 0,
    }


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
    for name in F.TASK_NAMES:
        if name == "category":
            found = counts.get("train", {}).get("categories", 0)
            if found < 2:
                off[name] = f"{found} item categories in train, needs 2"
            continue
        key, what = _NEEDS[name]
        short = [f"{counts.get(s, {}).get(key, 0)} {what} in {s}" for s in SPLITS
                 if counts.get(s, {}).get(key, 0) < min_labels]  # fmt: skip
        if short:
            off[name] = f"{', '.join(short)}, below min_task_labels {min_labels}"
    if "conversion" not in off and "click" in off:
        off["conversion"] = "its output is p(click) x p(conversion | click): the click task is off"
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
