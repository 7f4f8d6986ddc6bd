"""Which tasks a run trains: decided from the data's statistics, or named."""

import json

import pandas as pd
import pytest
import tensorflow_data_validation as tfdv

from components import task_selector as ts
from trainer import features as F

ENOUGH = {"retrieval": 900, "click": 900, "conversion": 300, "rating": 200, "category": 8,
          "interest": 2000, "examples": 3000}  # fmt: skip


def _counts(train=None, eval=None):
    return {"train": {**ENOUGH, **(train or {})}, "eval": {**ENOUGH, **(eval or {})}}


def test_every_task_is_on_when_the_data_has_every_label():
    selection = ts.select_tasks(_counts())
    assert selection.active == tuple(F.TASK_NAMES) and selection.off == {}
    assert selection.off_line() == ""


def test_a_clicks_only_log_switches_conversion_and_rating_off():
    selection = ts.select_tasks(
        _counts({"conversion": 0, "rating": 0}, {"conversion": 0, "rating": 0})
    )
    assert selection.active == ("retrieval", "click", "category", "interest")
    assert selection.off["conversion"] == (
        "0 positives (purchase) in train, 0 positives (purchase) in eval, below min_task_labels 50"
    )
    assert "0 labelled examples (rating_weight > 0) in train" in selection.off["rating"]
    assert selection.off_line().startswith("tasks off: conversion (0 positives (purchase) in")


def test_purchases_below_the_minimum_only_in_eval_switch_conversion_off():
    selection = ts.select_tasks(_counts(eval={"conversion": 12}), min_labels=20)
    assert "conversion" not in selection.active
    assert selection.off == {
        "conversion": "12 positives (purchase) in eval, below min_task_labels 20"
    }


def test_no_clicks_switch_off_every_task_that_needs_them_and_nothing_left_is_an_error():
    selection = ts.select_tasks(_counts(eval={"retrieval": 3, "click": 3}))
    assert {"retrieval", "click", "conversion"} <= set(selection.off)
    assert "click task is off" in selection.off["conversion"]
    nothing = dict.fromkeys(F.TASK_NAMES, 0)
    with pytest.raises(ValueError, match="no task has enough labels"):
        ts.select_tasks(_counts(nothing, nothing))


def test_one_category_or_no_histories_switch_their_tasks_off():
    selection = ts.select_tasks(_counts({"category": 1}, {"interest": 0}))
    assert selection.off["category"] == "1 distinct values of item_category in train, needs 2"
    assert "0 values of history_categories in eval" in selection.off["interest"]


def test_an_explicit_task_list_wins_over_the_data():
    selection = ts.select_tasks(_counts({"conversion": 0}), named=["click", "conversion"])
    assert selection.active == ("click", "conversion")
    assert selection.off["rating"] == "not in the model config's tasks"
    with pytest.raises(ValueError, match="unknown"):
        ts.select_tasks(_counts(), named=["clicks"])


def test_label_counts_read_tfdv_statistics():
    rows = pd.DataFrame(
        {
            F.CLICK: [1, 0, 1, 1],
            F.PURCHASE: [0, 0, 1, 0],
            F.RATING_WEIGHT: [1.0, 0.0, 0.0, 1.0],
            F.ITEM_CATEGORY: ["music", "music", "sports", "music"],
        }
    )
    stats = tfdv.generate_statistics_from_dataframe(rows).datasets[0]
    assert ts.label_counts(stats) == {"examples": 4, "retrieval": 3, "click": 3, "conversion": 1,
                                      "rating": 2, "category": 2, "interest": 0}  # fmt: skip


def test_the_selection_round_trips_through_its_file(tmp_path):
    selection = ts.select_tasks(_counts({"rating": 0}))
    (tmp_path / ts.SELECTION_FILE).write_text(json.dumps(selection.to_dict()))
    assert ts.read_selection(str(tmp_path)) == selection


def test_a_new_task_is_judged_by_its_kind_with_no_code_here(monkeypatch):
    task = F.Task(name="purchase_direct", label=F.PURCHASE, kind="binary",
                  weight=F.IMPRESSION_WEIGHT)  # fmt: skip
    monkeypatch.setattr(F, "TASKS", (*F.TASKS, task))
    monkeypatch.setattr(F, "TASK_NAMES", [*F.TASK_NAMES, task.name])
    rows = pd.DataFrame({F.PURCHASE: [0, 1, 1], F.CLICK: [1, 1, 1]})
    counts = ts.label_counts(tfdv.generate_statistics_from_dataframe(rows).datasets[0])
    assert counts["purchase_direct"] == 2
    selection = ts.select_tasks(_counts(eval={"purchase_direct": 1}), min_labels=2)
    assert "1 positives (purchase) in eval" in selection.off["purchase_direct"]


def test_the_pipeline_hands_the_selector_an_explicit_task_list(tmp_path):
    from pipeline import pipeline as pipeline_lib

    def selector(model_config):
        pipeline = pipeline_lib.create_pipeline(
            "p", str(tmp_path), str(tmp_path), str(tmp_path / "s"), 10, 5,
            model_config=model_config,
        )  # fmt: skip
        return next(c for c in pipeline.components if c.id == "TaskSelector")

    named = selector({"tasks": ["click", "retrieval"], "min_task_labels": 7})
    assert json.loads(named.exec_properties["tasks"]) == ["click", "retrieval"]
    assert named.exec_properties["min_task_labels"] == 7
    assert selector(None).exec_properties["tasks"] == ""  # the data decides
