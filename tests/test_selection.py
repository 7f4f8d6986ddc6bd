"""Epoch selection on every task's own validation metric."""

from trainer import keras_env  # noqa: F401  (must run before TF)

import json

import pytest

from tests.test_model import VOCABS, _batch, _dataset
from trainer import features as F
from trainer import selection
from trainer.config import ModelConfig
from trainer.model import build_model
from trainer.task import training_callbacks

METRICS = {
    "click": ("val_click_auc", True),
    "rating": ("val_rating_rmse", False),
    "retrieval": ("val_retrieval_recall_at_100", True),
}


def _scores(epochs):
    callback = selection.TaskSelection(METRICS)
    out = []
    for epoch, logs in enumerate(epochs):
        logs = dict(logs)
        callback.on_epoch_end(epoch, logs)
        out.append(logs[selection.SCORE])
    return out, callback.best


def test_the_score_is_the_mean_signed_relative_change_clipped():
    first = {"val_click_auc": 0.8, "val_rating_rmse": 1.0, "val_retrieval_recall_at_100": 0.1}
    worse_recall = {
        "val_click_auc": 0.82,
        "val_rating_rmse": 0.95,
        "val_retrieval_recall_at_100": 0.08,
    }
    huge_recall = {**first, "val_retrieval_recall_at_100": 0.5}
    scores, best = _scores([first, worse_recall, huge_recall])
    assert scores[0] == 0.0
    assert scores[1] == pytest.approx((0.025 + 0.05 - 0.2) / 3)
    assert scores[2] == pytest.approx((0 + 0 + 1.0) / 3)  # +400 % counts as +100 %
    assert best["rating"] == {"epoch": 2, "value": 0.95, "metric": "val_rating_rmse"}
    assert best["retrieval"]["epoch"] == 3 and best["click"]["epoch"] == 2


def test_every_task_has_a_selection_metric_and_the_monitor_has_a_direction():
    metrics = selection.task_metrics(ModelConfig().active_tasks(), (10, 100))
    assert set(metrics) == set(F.TASK_NAMES)
    assert metrics["retrieval"] == ("val_retrieval_recall_at_100", True)
    assert metrics["rating"] == ("val_rating_rmse", False)
    assert selection.monitor("tasks") == (selection.SCORE, "max")
    assert selection.monitor("val_loss") == ("val_loss", "min")
    assert selection.monitor("val_click_auc") == ("val_click_auc", "max")
    with pytest.raises(ValueError, match="selection_metric"):
        ModelConfig(selection_metric="click_auc")


def test_training_logs_the_score_and_writes_each_tasks_best_epoch(tmp_path):
    config = ModelConfig(tasks=("click", "rating"), early_stopping_patience=1)
    model = build_model(config, VOCABS)
    history = model.fit(
        _dataset(_batch(32, seed=1), config),
        steps_per_epoch=2,
        epochs=3,
        validation_data=_dataset(_batch(32, seed=2), config),
        validation_steps=1,
        verbose=0,
        callbacks=training_callbacks(config, str(tmp_path)),
    )
    assert history.history[selection.SCORE][0] == 0.0
    best = json.load(open(tmp_path / "best_epochs.json"))
    assert set(best) == {"click", "rating"}
    assert best["click"]["metric"] == "val_click_auc"
    assert (tmp_path / "checkpoints" / "best.weights.h5").exists()
