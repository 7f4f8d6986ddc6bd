"""Runs whose logs lack some labels train, bless and push the tasks they have.

Two small logs made from the shared synthetic one: a clicks-only event log
(no purchases, no ratings) and a ratings-only log (each row a rating, no
purchases). Every stage is real (LocalDagRunner).
"""

import json
import os
import shutil

import pytest

from components.log_config import LogConfig
from pipeline import configs, local_runner, run_summary
from tests.conftest import write_jsonl
from tests.test_pipeline_e2e import (
    FAST,
    SCRATCH_MODEL,
    _assert_matches_the_contract,
    _num_categories,
)
from trainer import features as F
from trainer import serving_contract as C

pytestmark = pytest.mark.e2e

QUICK = dict(FAST, train_steps=60, model_config={"epochs": 1, **SCRATCH_MODEL})


def _events(small_logs):
    rows = []
    for name in sorted(os.listdir(os.path.join(small_logs, "events"))):
        rows += [json.loads(line) for line in open(os.path.join(small_logs, "events", name))]
    return rows


def _run(data, work, log_config=None):
    config = configs.RunConfig(
        data_dir=str(data), work_dir=str(work), log_config=log_config or LogConfig(), **QUICK
    )
    return config, local_runner.run(config)


@pytest.fixture(scope="module")
def clicks_only(small_logs, tmp_path_factory):
    data = tmp_path_factory.mktemp("clicks_only")
    shutil.copy(os.path.join(small_logs, "items.jsonl"), data / "items.jsonl")
    rows = [r for r in _events(small_logs) if r["event_type"] in ("impression", "click")]
    write_jsonl(str(data / "events" / "part-0.jsonl"), rows)
    return _run(data, tmp_path_factory.mktemp("clicks_only_run"))


@pytest.fixture(scope="module")
def ratings_only(small_logs, tmp_path_factory):
    data = tmp_path_factory.mktemp("ratings_only")
    shutil.copy(os.path.join(small_logs, "items.jsonl"), data / "items.jsonl")
    rows = [
        {k: r[k] for k in ("user_id", "item_id", "rating", "timestamp")}
        for r in _events(small_logs)
        if r["event_type"] == "rating"
    ]
    write_jsonl(str(data / "events" / "ratings.jsonl"), rows)
    log_config = LogConfig(
        row_implies=("impression", "click", "rating"),
        derive_event_ids=True,
        negatives_per_positive=1,
    )
    return _run(data, tmp_path_factory.mktemp("ratings_only_run"), log_config)


@pytest.mark.parametrize(
    "fixture,off",
    [("clicks_only", {"conversion", "rating"}), ("ratings_only", {"conversion"})],
)
def test_a_log_without_some_labels_blesses_and_pushes_the_tasks_it_has(fixture, off, request):
    config, summary = request.getfixturevalue(fixture)
    active = [t for t in F.TASK_NAMES if t not in off]
    assert summary["blessed"] and summary["pushed"], summary.get("validation_failures")
    # Honest reporting: the tasks off and why, and no metric of a task off.
    assert set(summary["metrics"]) == set(active)
    assert "conversion (0 positives (purchase) in train, 0 positives" in summary["tasks_off"]
    if "rating" in off:
        assert "rating (0 labelled examples (rating_weight > 0) in train" in summary["tasks_off"]
    printed = run_summary.format_summary(summary)
    assert summary["tasks_off"] in printed
    assert not any(line.strip().startswith(tuple(off)) for line in printed.splitlines())
    report = open(os.path.join(config.work_dir, "report", "run_report.md")).read()
    assert "Tasks off: conversion" in report
    # The contract: exactly the active tasks' outputs, and the export lists them.
    pushed = summary["pushed_destination"]
    _assert_matches_the_contract(pushed, active, _num_categories(config))
    assert C.read_tasks_asset(pushed)["active"] == active
    assert set(C.read_tasks_asset(pushed)["off"]) == off
    # Two-stage recommendations over gRPC ranked by the click head.
    assert summary["grpc_query"]["recommendations"]
