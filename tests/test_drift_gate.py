"""Drift: today's data against the last run's, by the schema's comparators."""

import json
import os
import shutil

import pandas as pd
import pytest
import tensorflow_data_validation as tfdv

import schemas
from components.drift_gate import drift_lines
from pipeline import configs, local_runner
from tests.conftest import write_jsonl
from trainer import features as F


def _stats(categories, clicks):
    rows = pd.DataFrame({F.ITEM_CATEGORY: categories, F.CLICK: clicks})
    return tfdv.generate_statistics_from_dataframe(rows)


def test_the_same_distribution_passes_and_a_shifted_one_names_feature_and_distance():
    schema = tfdv.load_schema_text(schemas.SCHEMA_PATH)
    today = {"train": _stats(["music"] * 5 + ["sports"] * 5, [0, 1] * 5)}
    assert drift_lines(today, {"train": _stats(["sports"] * 5 + ["music"] * 5, [1, 0] * 5)},
                       schema) == []  # fmt: skip
    shifted = {"train": _stats(["music"] * 9 + ["sports"], [0, 1] * 5)}
    (line,) = drift_lines(shifted, today, schema)
    assert line.startswith("split 'train', feature 'item_category': ")
    assert "0.4" in line and "threshold 0.25" in line  # the distance and the bound
    assert drift_lines(shifted, {}, schema) == []  # nothing to compare with


def test_a_run_on_a_day_whose_categories_shifted_stops_before_transform(small_logs, tmp_path):
    from tfx.orchestration import pipeline as tfx_pipeline
    from tfx import v1 as tfx

    data = tmp_path / "data"
    shutil.copytree(small_logs, data)
    config = configs.RunConfig(
        data_dir=str(data), work_dir=str(tmp_path / "run"),
        beam_args=["--runner=DirectRunner", *configs.IN_MEMORY_ARGS],
        model_config={"pretrained_text_encoder": None},
    )  # fmt: skip

    def run_to_the_gate():
        tfx.orchestration.LocalDagRunner().run(
            local_runner.local_pipeline(config),
            run_options=tfx_pipeline.RunOptions(to_nodes=["DriftGate"]),
        )

    run_to_the_gate()  # the first run: nothing to compare with
    run_to_the_gate()  # the same data again: no drift
    # Today's impressions are mostly of one category's items.
    items = [json.loads(line) for line in open(data / "items.jsonl")]
    music = {i["item_id"] for i in items if i["category"] == items[0]["category"]}
    events_dir = data / "events"
    rows = [json.loads(line) for f in sorted(os.listdir(events_dir))
            for line in open(events_dir / f)]  # fmt: skip
    shutil.rmtree(events_dir)
    kept = [r for n, r in enumerate(rows) if r["item_id"] in music or n % 10 == 0]
    write_jsonl(str(events_dir / "part-0.jsonl"), kept)
    with pytest.raises(Exception, match="item_category") as err:
        run_to_the_gate()
    assert "drifted from the last run's" in str(err.value) and "Linfty" in str(err.value)
    assert not os.path.exists(os.path.join(config.pipeline_root, "Transform"))
