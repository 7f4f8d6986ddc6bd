"""The benchmark suite in quick mode, so it cannot rot (no timing is asserted)."""

import json
import os

import numpy as np
import pytest

from bench import suite

pytestmark = pytest.mark.e2e
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOVIELENS = os.environ.get(
    "MOVIELENS_DIR", os.path.join(ROOT, "..", "shared", "data", "movielens-100k")
)


def test_growth_per_10x_is_the_log_log_slope_of_each_component():
    def run(events, trainer, evaluator):
        seconds = {stage: 1.0 for stage in suite.STAGES}
        seconds.update(Trainer=trainer, Evaluator=evaluator)
        return {"events": events, "component_seconds": seconds}

    growth = suite.growth_per_10x([run(1_000, 10.0, 5.0), run(100_000, 1000.0, 5.0)])
    assert set(growth) == set(suite.STAGES)
    assert growth["Trainer"] == 10.0 and growth["Evaluator"] == 1.0
    assert suite.growth_per_10x([run(1_000, 10.0, 5.0)]) == {}
    zero = run(100_000, 0.0, 5.0)
    assert suite.growth_per_10x([run(1_000, 10.0, 5.0), zero])["Trainer"] is None


def test_quick_suite_measures_every_section_and_writes_the_tables(tmp_path):
    work, markdown = tmp_path / "bench", tmp_path / "BENCHMARKS.md"
    assert (
        suite.main(
            [
                "--quick",
                "--work-dir",
                str(work),
                "--markdown",
                str(markdown),
                "--movielens",
                MOVIELENS,
            ]
        )
        == 0
    )
    results = json.load(open(work / "results.json"))
    runs = results["pipeline"]
    assert len(runs) == len(suite.QUICK_SIZES)
    assert all(r["events"] < s * 1.2 for r, s in zip(runs, suite.QUICK_SIZES, strict=True))
    for run in runs:
        # Every component ran and was timed (MLMD's clock has millisecond resolution, so a
        # quick ExampleValidator or Pusher may read 0.0 s).
        assert all(run["component_seconds"][stage] is not None for stage in suite.STAGES), run
        assert run["component_seconds"]["Trainer"] > 0, run
        assert run["peak_rss_mib"] > 100 and run["ingestion_events_per_s"] > 0
    trainer = results["trainer"]
    assert trainer["plain_keras_examples_per_s"] > 0 and trainer["trainer_overhead_ratio"] > 0
    assert {(row["path"], row["batch"]) for row in results["serving"]} == {
        (path, batch) for path in ("in-process", "grpc", "rest") for batch in (1, 64)
    }
    text = markdown.read_text()
    for section in (
        "## Pipeline end to end",
        "## Trainer vs. plain Keras",
        "## Serving",
        "Reproduce: `python -m bench.suite --quick`",
    ):
        assert section in text
    if os.path.exists(os.path.join(MOVIELENS, "u.data")):
        models = results["quality"]["models"]
        assert set(models) == {"pipeline", "global_mean", "popularity", "biases", "mf", "ease",
                               "tfidf_profile"}  # fmt: skip
        assert set(models["pipeline"]["all"]) == {
            "rating_rmse", "recall_at_10", "recall_at_100", "click_auc", "conversion_auc", "rows"
        }  # fmt: skip
        for values in models.values():
            assert all(v is None or np.isfinite(v) for v in values["all"].values())
        assert "## Model quality" in text and "| ease |" in text


def test_the_distributed_benchmark_reads_epoch_times_and_the_shared_auc_target():
    from bench import distributed

    log = "Epoch 1/2\n5/5 - 12s - loss: 3.1 - val_loss: 3.0\nEpoch 2/2\n5/5 - 9s - loss: 2.9\n"
    assert distributed.epoch_seconds(log) == [12, 9]
    assert distributed.seconds_to(0.65, [0.6, 0.7], [12, 9]) == 21
    assert distributed.seconds_to(0.8, [0.6, 0.7], [12, 9]) is None
    history = {"val_loss": [3.0, 2.9], "val_click_auc": [0.6, 0.7]}
    other = {"val_loss": [3.1, 2.95], "val_click_auc": [0.6, 0.69]}
    results = {
        "one": {"wall_s": 30, "fit_s": 21, "examples_per_s": 15.2, "epoch_s": [12, 9]},
        "two": {"wall_s": 50, "fit_s": 30, "examples_per_s": 10.7, "epoch_s": [15, 15]},
    }
    results["one"]["history"], results["two"]["history"] = history, other
    table = distributed.report(results)
    assert "s to click_auc 0.6900" in table  # the worse of the best AUCs: both reach it
    assert "| one | 30 | 21 | 15.2 | 21.0 | 2.9000 | 0.7000 |" in table
    assert "| two | 50 | 30 | 10.7 | 30.0 | 2.9500 | 0.6900 |" in table
