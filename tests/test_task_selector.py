"""Which tasks a run trains: decided from the data's statistics, or named."""

import json

import pandas as pd
import pytest
import tensorflow_data_validation as tfdv

from components import task_selector as ts
from trainer import features as F

ENOUGH = {"clicks": 900, "purchases": 300, "ratings": 200, "categories": 8,
          "history_categories": 2000, "examples": 3000}  # fmt: skip


def _counts(train=None, eval=None):
    return {"train": {**ENOUGH, **(train or {})}, "eval": {**ENOUGH, **(eval or {})}}


def test_every_task_is_on_when_the_data_has_every_label():
    selection = ts.select_tasks(_counts())
    assert selection.active == tuple(F.TASK_NAMES) and selection.off == {}
    assert selection.off_line() == ""


def test_a_clicks_only_log_switches_conversion_and_rating_off():
    selection = ts.select_tasks(
        _counts({"purchases": 0, "ratings": 0}, {"purchases": 0, "ratings": 0})
    )
    assert selection.active == ("retrieval", "click", "category", "interest")
    assert selection.off["conversion"] == (
        "0 purchases in train, 0 purchases in eval, below min_task_labels 50"
    )
    assert "0 rated impressions in train" in selection.off["rating"]
    assert selection.off_line().startswith("tasks off: conversion (0 purchases in train")


def test_purchases_below_the_minimum_only_in_eval_switch_conversion_off():
    selection = ts.select_tasks(_counts(eval={"purchases": 12}), min_labels=20)
    assert "conversion" not in selection.active
    assert selection.off == {"conversion": "12 purchases in eval, below min_task_labels 20"}


def test_no_clicks_switch_off_every_task_that_needs_them_and_nothing_left_is_an_error():
    selection = ts.select_tasks(_counts(eval={"clicks": 3}))
    assert {"retrieval", "click", "conversion"} <= set(selection.off)
    assert "click task is off" in selection.off["conversion"]
    nothing = {"clicks": 0, "purchases": 0, "ratings": 0, "categories": 1, "history_categories": 0}
    with pytest.raises(ValueError, match="no task has enough labels"):
        ts.select_tasks(_counts(nothing, nothing))


def test_one_category_or_no_histories_switch_their_tasks_off():
    selection = ts.select_tasks(_counts({"categories": 1}, {"history_categories": 0}))
    assert selection.off["category"] == "1 item categories in train, needs 2"
    assert "0 history categories in eval" in selection.off["interest"]


def test_an_explicit_task_list_wins_over_the_data():
    selection = ts.select_tasks(_counts({"purchases": 0}), named=["click", "conversion"])
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
    assert ts.label_counts(stats) == {"examples": 4, "clicks": 3, "purchases": 1, "ratings": 2,
                                      "categories": 2, "history_categories": 0}  # fmt: skip


def test_the_selection_round_trips_through_its_file(tmp_path):
    selection = ts.select_tasks(_counts({"ratings": 0}))
    (tmp_path / ts.SELECTION_FILE).write_text(json.dumps(selection.to_dict()))
    assert ts.read_selection(str(tmp_path)) == selection
