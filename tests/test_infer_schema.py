"""``recsys-pipeline infer-schema`` (pipeline/infer_schema.py): a starting schema for new logs."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow_data_validation as tfdv
from tensorflow_transform.tf_metadata import schema_utils

import schemas
from components import log_example_gen as gen
from components.log_config import LogConfig
from pipeline import cli
from tests.test_log_example_gen import ingest
from tests.test_schema import TYPES
from trainer import features as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HISTORY_LENGTH = 7
LOG_CONFIG = {"history_length": HISTORY_LENGTH, "rating_max": 10}  # synthetic ratings: 1-5


@pytest.fixture(scope="module")
def inferred(small_logs, tmp_path_factory):
    """The command run once, as a user would, on the small synthetic logs:
    (schema path, log config path, terminal output)."""
    out = tmp_path_factory.mktemp("infer")
    log_config = out / "log_config.json"
    log_config.write_text(json.dumps(LOG_CONFIG))
    path = out / "schemas" / "new_schema.pbtxt"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "infer-schema", "--data-dir", small_logs]
        + ["--log-config", str(log_config), "--output", str(path), "--work-dir", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout
    return str(path), str(log_config), proc.stdout


def test_it_prints_progress_and_the_run_command_and_keeps_the_noise_in_the_log(
    inferred, small_logs
):
    path, log_config, output = inferred
    assert "Ingesting" in output and "both splits match it" in output
    command = f"recsys-pipeline run --data-dir {small_logs} --log-config {log_config} "
    assert command + f"--schema {path}" in output
    assert output.count("Full log:") == 2
    assert "tensorflow" not in output.lower() and "WARNING" not in output


def test_the_schema_parses_and_declares_every_raw_feature_with_its_type(inferred):
    schema = tfdv.load_schema_text(inferred[0])
    declared = {f.name: f for f in schema.feature}
    assert set(declared) == {f.name for f in F.RAW_FEATURES}
    for feature in F.RAW_FEATURES:
        assert declared[feature.name].type == TYPES[feature.dtype], feature.name
        assert declared[feature.name].HasField("shape") != feature.varlen, feature.name
        if not feature.varlen:
            assert declared[feature.name].presence.min_fraction == 1.0, feature.name
    assert declared[F.HISTORY_ITEM_IDS].value_count.max == HISTORY_LENGTH
    # It starts with the drift comparators the shipped schemas carry.
    assert declared[F.ITEM_CATEGORY].drift_comparator.infinity_norm.threshold == 0.25
    assert declared[F.RATING].drift_comparator.jensen_shannon_divergence.threshold == 0.25


def test_a_run_parses_examples_with_it_as_with_the_curated_schema(inferred):
    """Transform reads the raw examples by the schema's feature spec."""
    curated = schema_utils.schema_as_feature_spec(tfdv.load_schema_text(schemas.SCHEMA_PATH))
    spec = schema_utils.schema_as_feature_spec(tfdv.load_schema_text(inferred[0]))
    assert spec.feature_spec == curated.feature_spec


def test_domains_come_from_the_data_and_the_log_config_and_ids_and_text_stay_open(inferred):
    schema = tfdv.load_schema_text(inferred[0])
    curated = tfdv.load_schema_text(schemas.SCHEMA_PATH)
    assert list(schema.string_domain) == list(curated.string_domain)  # the 8 categories
    declared = {f.name: f for f in schema.feature}
    assert declared[F.HISTORY_CATEGORIES].domain == declared[F.ITEM_CATEGORY].domain
    assert (declared[F.RATING].float_domain.min, declared[F.RATING].float_domain.max) == (0, 10)
    assert declared[F.CLICK].int_domain.max == 1 and declared[F.PURCHASE].int_domain.is_categorical
    for name in (F.USER_ID, F.ITEM_ID, F.ITEM_TITLE, F.USER_PROFILE, F.HISTORY_ITEM_IDS):
        assert declared[name].WhichOneof("domain_info") is None, name


def test_the_data_it_was_inferred_from_has_no_anomalies(inferred, small_logs, tmp_path):
    schema = tfdv.load_schema_text(inferred[0])
    config = LogConfig.from_dict(LOG_CONFIG)
    ingest(small_logs, config, tmp_path)
    for split in gen.SPLITS:
        stats = tfdv.generate_statistics_from_tfrecord(
            os.path.join(str(tmp_path), f"Split-{split}", "*")
        )
        assert not tfdv.validate_statistics(stats, schema).anomaly_info, split


def _infer(*args):
    return cli.main(["infer-schema", *map(str, args)])


def test_an_existing_file_is_kept_without_force(small_logs, tmp_path):
    existing = tmp_path / "schema.pbtxt"
    existing.write_text("# curated by hand\n")
    with pytest.raises(SystemExit, match="--force") as err:
        _infer("--data-dir", small_logs, "--output", existing)
    assert str(existing) in str(err.value)
    assert existing.read_text() == "# curated by hand\n"
    # With --force it goes on, to the next check.
    with pytest.raises(SystemExit, match="nowhere"):
        _infer("--data-dir", tmp_path / "nowhere", "--output", existing, "--force")


def test_a_missing_or_empty_data_dir_is_named(tmp_path):
    output = tmp_path / "schema.pbtxt"
    with pytest.raises(SystemExit, match=str(tmp_path / "nowhere")):
        _infer("--data-dir", tmp_path / "nowhere", "--output", output)
    (tmp_path / "empty" / "events").mkdir(parents=True)
    with pytest.raises(SystemExit, match="no event logs"):
        _infer("--data-dir", tmp_path / "empty", "--output", output)
    assert not output.exists()


def test_a_bad_log_config_is_named_with_its_key(small_logs, tmp_path):
    bad = tmp_path / "log_config.json"
    bad.write_text(json.dumps({"events_patern": "logs/*.csv"}))
    with pytest.raises(SystemExit, match="events_patern") as err:
        _infer("--data-dir", small_logs, "--log-config", bad, "--output", tmp_path / "s.pbtxt")
    assert str(bad) in str(err.value)
    with pytest.raises(SystemExit, match="missing.json"):
        _infer("--data-dir", small_logs, "--log-config", tmp_path / "missing.json", "--output", "x")
