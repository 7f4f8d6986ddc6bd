"""MovieLens-100K adapter on the shared files (skipped when they are absent)."""

import collections
import json
import os

import pytest

from components.log_config import LogConfig
from datagen import movielens
from tests.test_log_example_gen import _value, ingest
from trainer import features as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.environ.get(
    "MOVIELENS_DIR", os.path.join(ROOT, "..", "shared", "data", "movielens-100k")
)

pytestmark = pytest.mark.skipif(
    not all(os.path.exists(os.path.join(SOURCE, f)) for f in movielens.REQUIRED_FILES),
    reason=f"MovieLens-100K not found at {SOURCE} (set MOVIELENS_DIR)",
)


def test_full_conversion_counts(tmp_path):
    counts = movielens.convert(SOURCE, str(tmp_path), negatives_per_rating=1)
    assert counts["ratings"] == 100_000 and counts["items"] == 1682
    assert len(open(tmp_path / "events" / "u.data").readlines()) == 100_000
    config = LogConfig.from_dict(json.load(open(tmp_path / "log_config.json")))
    assert config.row_implies == ("impression", "click", "rating") and config.derive_event_ids
    items = [json.loads(line) for line in open(tmp_path / "items.jsonl")]
    assert collections.Counter(len(i["tags"]) >= 1 for i in items)[True] == 1682
    users = [json.loads(line) for line in open(tmp_path / "users.jsonl")]
    assert len(users) == 943 and "zip" not in json.dumps(users[0])


def test_ingested_movielens_labels(tmp_path):
    movielens.convert(SOURCE, str(tmp_path / "ml"), negatives_per_rating=1, max_ratings=3000)
    config = LogConfig.from_dict(json.load(open(tmp_path / "ml" / "log_config.json")))
    examples, report, dead = ingest(tmp_path / "ml", config, tmp_path / "out")
    assert dead == []
    assert report["sampled_negatives"] == 3000 and "negatives_unavailable" not in report
    rows = examples["train"] + examples["eval"]
    assert len(rows) == 6000
    rated = [e for e in rows if _value(e, F.CLICK) == 1]
    negatives = [e for e in rows if _value(e, F.CLICK) == 0]
    assert len(rated) == len(negatives) == 3000
    assert all(_value(e, F.RATING_WEIGHT) == 1.0 for e in rated)
    assert all(_value(e, F.PURCHASE) == int(_value(e, F.RATING) >= 4) for e in rated)
    assert all(_value(e, F.RATING_WEIGHT) == 0.0 for e in negatives)
    assert all("occupation" in _value(e, F.USER_PROFILE) for e in rows)
    assert max(_value(e, F.TIMESTAMP) for e in examples["train"]) < min(
        _value(e, F.TIMESTAMP) for e in examples["eval"]
    )
