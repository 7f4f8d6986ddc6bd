"""Which epoch's weights to keep: a score over every task's own validation
metric (AUC, RMSE, recall@k, accuracy), not the total loss alone.

``TaskSelection`` adds ``val_selection_score`` to each epoch's logs: the mean
over the active tasks of each metric's change since the first epoch,
relative to its first value, signed so that better is positive and clipped
to [-1, 1] (one task cannot buy another's regression by an outsized gain).
Checkpointing and early stopping watch it (``ModelConfig.selection_metric``:
"tasks"), or ``val_loss``, or any one logged metric.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainer import task_kinds

SCORE = "val_selection_score"
TASKS = "tasks"


def task_metrics(tasks, retrieval_ks: Sequence[int]) -> Dict[str, Tuple[str, bool]]:
    """{task name: (validation log key, higher is better)} for the active tasks."""
    metrics = {}
    for task in tasks:
        chosen = task_kinds.kind_of(task).selection_metric(retrieval_ks)
        if chosen is not None:
            metrics[task.name] = (f"val_{chosen[0]}", chosen[1])
    return metrics


def monitor(selection_metric: str) -> Tuple[str, str]:
    """(log key, Keras mode) that checkpointing and early stopping watch."""
    if selection_metric == TASKS:
        return SCORE, "max"
    lower = selection_metric.endswith(("loss", "rmse", "error"))
    return selection_metric, "min" if lower else "max"


class TaskSelection(tf.keras.callbacks.Callback):
    """Adds ``SCORE`` to the epoch logs (put it before the callbacks that read
    it) and writes each task's best epoch to ``path`` (JSON) after training.

    ``reference``: the first values that changes are relative to, shared
    between runs so their scores compare (the Tuner's trials); filled from
    the first epoch that has them."""

    def __init__(
        self,
        metrics: Mapping[str, Tuple[str, bool]],
        path: Optional[str] = None,
        reference: Optional[Dict[str, float]] = None,
    ):
        super().__init__()
        self.metrics = dict(metrics)
        self.path = path
        self.first: Dict[str, float] = {} if reference is None else reference
        self.best: Dict[str, Dict[str, float]] = {}

    def score(self, logs: Mapping[str, float]) -> float:
        changes = []
        for task, (key, higher) in self.metrics.items():
            if key not in logs or task not in self.first:
                continue
            value, first = float(logs[key]), self.first[task]
            change = (value - first) / max(abs(first), 1e-6)
            changes.append(float(np.clip(change if higher else -change, -1.0, 1.0)))
        return float(np.mean(changes)) if changes else 0.0

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        if logs is None:
            return
        for task, (key, higher) in self.metrics.items():
            if key not in logs or not np.isfinite(float(logs[key])):
                continue
            value = float(logs[key])
            self.first.setdefault(task, value)
            best = self.best.get(task)
            if best is None or (value > best["value"] if higher else value < best["value"]):
                self.best[task] = {"epoch": epoch + 1, "value": value, "metric": key}
        logs[SCORE] = self.score(logs)

    def on_train_end(self, logs=None) -> None:
        if self.path:
            tf.io.gfile.makedirs(os.path.dirname(self.path))
            with tf.io.gfile.GFile(self.path, "w") as f:
                json.dump(self.best, f, indent=2, sort_keys=True)
