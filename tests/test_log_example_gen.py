"""The ingestion Beam graph on hand-made log directories (in-memory runner)."""

import glob
import gzip
import json
import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from components import event_batches as batches
from components import example_files
from components import log_example_gen as gen
from components.log_config import LogConfig, SplitConfig
from tests.conftest import CATALOG, event, write_jsonl
from trainer import features as F

T0 = 1_700_000_000


def ingest(input_base, config, out, max_timestamp=2_000_000_000):
    """Runs the ingestion graph; returns (examples per split, report, dead letters)."""
    with beam.Pipeline(runner="DirectRunner") as p:
        splits = gen.build_ingestion(p, str(input_base), config, str(out), max_timestamp)
        for name, split in splits.items():
            _ = split | f"Write{name}" >> example_files.WriteExampleFiles(
                os.path.join(str(out), f"Split-{name}")
            )
    examples = {}
    for name in gen.SPLITS:
        files = glob.glob(os.path.join(str(out), f"Split-{name}", "*"))
        examples[name] = [
            tf.train.Example.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(files, compression_type="GZIP")
        ]
    with open(os.path.join(str(out), gen.REPORT_FILE)) as f:
        report = json.load(f)
    dead = [
        json.loads(line)
        for path in glob.glob(os.path.join(str(out), gen.DEAD_LETTER_DIR, "*"))
        for line in open(path)
    ]
    return examples, report, dead


def _value(example, name):
    values = getattr(
        example.features.feature[name], example.features.feature[name].WhichOneof("kind")
    ).value
    return values[0].decode() if isinstance(values[0], bytes) else values[0]


def _good_events(n_users=4, per_user=5):
    rows = []
    for u in range(n_users):
        for i in range(per_user):
            ts = T0 + 1000 * i + u
            item = "abc"[i % 3]
            rows.append(
                event(f"imp-{u}-{i}", "impression", item, ts, user=f"u{u}", session=f"s{u}-{i}")
            )
            if i % 2 == 0:
                rows.append(
                    event(f"clk-{u}-{i}", "click", item, ts + 5, user=f"u{u}", session=f"s{u}-{i}")
                )
    return rows


@pytest.fixture
def logdir(tmp_path):
    write_jsonl(str(tmp_path / "in" / "items.jsonl"), CATALOG)
    return tmp_path / "in"


def test_time_split_sends_the_latest_window_to_eval(logdir, tmp_path):
    write_jsonl(str(logdir / "events" / "a.jsonl"), _good_events())
    config = LogConfig(split=SplitConfig(kind="time", eval_fraction=0.25))
    examples, report, dead = ingest(logdir, config, tmp_path / "out")
    train_ts = [_value(e, F.TIMESTAMP) for e in examples["train"]]
    eval_ts = [_value(e, F.TIMESTAMP) for e in examples["eval"]]
    assert max(train_ts) < min(eval_ts)
    high = T0 + 4000 + 3 + 5  # the last click
    cutoff = int(high - 0.25 * (high - T0))
    assert all(t >= cutoff for t in eval_ts) and all(t < cutoff for t in train_ts)
    assert report["examples_train"] + report["examples_eval"] == 20 and dead == []
    clicked = {_value(e, F.EVENT_ID) for s in examples.values() for e in s if _value(e, F.CLICK)}
    assert clicked == {f"imp-{u}-{i}" for u in range(4) for i in (0, 2, 4)}


def test_explicit_split_timestamp_and_random_split(logdir, tmp_path):
    write_jsonl(str(logdir / "events" / "a.jsonl"), _good_events())
    config = LogConfig(split=SplitConfig(kind="time", split_timestamp=T0 + 2000))
    examples, _, _ = ingest(logdir, config, tmp_path / "t")
    assert all(_value(e, F.TIMESTAMP) >= T0 + 2000 for e in examples["eval"])
    assert len(examples["eval"]) == 12
    random_cfg = LogConfig(split=SplitConfig(kind="random", eval_fraction=0.5))
    first, _, _ = ingest(logdir, random_cfg, tmp_path / "r1")
    again, _, _ = ingest(logdir, random_cfg, tmp_path / "r2")

    def ids(split):
        return sorted(_value(e, F.EVENT_ID) for e in split)

    assert ids(first["eval"]) == ids(again["eval"]) and 0 < len(first["eval"]) < 20


def test_cold_items_are_held_out_of_training_entirely(logdir, tmp_path):
    write_jsonl(str(logdir / "events" / "a.jsonl"), _good_events())
    # sha256 puts item "c" alone under 0.2 (a: 0.79, b: 0.24, c: 0.18).
    split = SplitConfig(kind="time", eval_fraction=0.25, cold_item_fraction=0.2)
    assert [split.is_cold_item(i) for i in "abc"] == [False, False, True]
    examples, report, _ = ingest(logdir, LogConfig(split=split), tmp_path / "out")
    items = {name: [_value(e, F.ITEM_ID) for e in rows] for name, rows in examples.items()}
    assert "c" not in items["train"] and items["eval"].count("c") == 4  # i = 2 of each user
    warm, _, _ = ingest(logdir, LogConfig(split=SplitConfig(eval_fraction=0.25)), tmp_path / "w")
    warm_eval = [e for e in warm["eval"] if _value(e, F.ITEM_ID) != "c"]
    assert len(examples["eval"]) == len(warm_eval) + 4  # the time cut is unchanged for the rest
    assert report["examples_eval_cold_items"] == 4 and report["examples_train"] == 20 - 4 - len(
        warm_eval
    )
    for bad in (-0.1, 1.0, 2.0):
        with pytest.raises(ValueError, match="cold_item_fraction"):
            SplitConfig(cold_item_fraction=bad)


def test_every_bad_row_is_counted_and_dead_lettered_and_good_rows_kept(logdir, tmp_path):
    good = _good_events()
    bad_lines = {
        "unparseable": "{truncated",
        "missing_user_id": json.dumps(
            {k: v for k, v in event("x1", "click", "a", T0).items() if k != "user_id"}
        ),
        "unknown_item": json.dumps(event("x2", "impression", "nope", T0)),
        "timestamp_out_of_range": json.dumps(event("x3", "impression", "a", 4_000_000_000)),
        "bad_rating": json.dumps(event("x4", "rating", "a", T0, rating=7)),
        "bad_event_type": json.dumps(event("x5", "like", "a", T0)),
        "bad_timestamp": json.dumps(event("x6", "click", "a", "soon")),
    }
    rows = [json.dumps(r) for r in good] + list(bad_lines.values())
    write_jsonl(str(logdir / "events" / "a.jsonl"), rows)
    with open(logdir / "events" / "b.jsonl", "wb") as f:
        f.write(b'{"event_id": "\xff\xfe"}\n')
    config = LogConfig(max_bad_fraction=1.0)
    examples, report, dead = ingest(logdir, config, tmp_path / "out")
    assert len(examples["train"]) + len(examples["eval"]) == 20
    expected = {**{k: 1 for k in bad_lines}, "invalid_utf8": 1}
    assert {k[4:]: v for k, v in report.items() if k.startswith("bad:")} == expected
    assert sorted(d["reason"] for d in dead) == sorted(expected)
    by_reason = {d["reason"]: d for d in dead}
    assert by_reason["unparseable"]["original"] == "{truncated"
    assert by_reason["missing_user_id"]["source"].endswith("a.jsonl")
    assert "user_id" in by_reason["missing_user_id"]["detail"]
    with pytest.raises(gen.IngestionError, match="8 of 40 event rows") as err:
        gen.check_report(report, LogConfig(max_bad_fraction=0.05), "DL")
    assert "unparseable=1" in str(err.value) and "DL" in str(err.value)
    gen.check_report(report, LogConfig(max_bad_fraction=0.5), "DL")
    # Below the limit the run goes on, and the terminal gets one line on them.
    note = gen.dead_letter_note(report, "DL")
    assert note.startswith("8 bad log rows went to the dead letters (bad_event_type=1, ")
    assert "unparseable=1" in note and note.endswith("): DL")
    assert gen.dead_letter_note({"good_event_rows": 20, "bad:unparseable": 0}, "DL") == ""


def test_duplicates_removed_and_counted(logdir, tmp_path):
    rows = _good_events()
    write_jsonl(str(logdir / "events" / "a.jsonl"), rows + rows[:6])
    examples, report, dead = ingest(logdir, LogConfig(), tmp_path / "out")
    assert len(examples["train"]) + len(examples["eval"]) == 20
    assert report["duplicate_events"] == 6 and not any(k.startswith("bad:") for k in report)
    # Dead-lettered apart from bad rows, with the re-sent event.
    assert sorted(json.loads(d["original"])["event_id"] for d in dead) == sorted(
        r["event_id"] for r in rows[:6]
    )
    assert {d["reason"] for d in dead} == {"duplicate_event"}


def test_csv_gzip_parquet_inputs_and_field_maps(tmp_path):
    base = tmp_path / "in"
    os.makedirs(base / "events")
    events = _good_events(2, 4)
    header = ["id", "kind", "uid", "iid", "ts", "sess", "stars"]
    lines = [",".join(header)] + [
        ",".join(
            str(e.get(k, ""))
            for k in (
                "event_id",
                "event_type",
                "user_id",
                "item_id",
                "timestamp",
                "session_id",
                "rating",
            )
        )
        for e in events
    ]
    with gzip.open(base / "events" / "part-0.csv.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    "sku": i["item_id"],
                    "name": i["title"],
                    "text": i["description"],
                    "genre": i["category"],
                }
                for i in CATALOG
            ]
        ),
        base / "items.parquet",
    )
    write_jsonl(str(base / "users.jsonl"), [{"user_id": "u0", "age": 30}])
    config = LogConfig(
        catalog_pattern="items.parquet",
        users_pattern="users.jsonl",
        event_field_map={
            "event_id": "id",
            "event_type": "kind",
            "user_id": "uid",
            "item_id": "iid",
            "timestamp": "ts",
            "session_id": "sess",
            "rating": "stars",
        },
        item_field_map={
            "item_id": "sku",
            "title": "name",
            "description": "text",
            "category": "genre",
        },
    )
    examples, report, dead = ingest(base, config, tmp_path / "out")
    all_examples = examples["train"] + examples["eval"]
    assert len(all_examples) == 8 and dead == []
    profiles = {_value(e, F.USER_ID): _value(e, F.USER_PROFILE) for e in all_examples}
    assert profiles == {"u0": "age 30", "u1": ""}
    assert {_value(e, F.ITEM_TITLE) for e in all_examples} <= {i["title"] for i in CATALOG}


def test_missing_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="event log"):
        ingest(tmp_path, LogConfig(), tmp_path / "out")


def test_beam_counters_count_bad_rows_by_reason_and_duplicates(logdir, tmp_path):
    from apache_beam.metrics.metric import MetricsFilter

    rows = _good_events(n_users=2, per_user=4)
    rows += [rows[0], "{not json", event("x1", "click", "no-such-item", T0)]
    write_jsonl(str(logdir / "events" / "part-0.jsonl"), rows)
    pipeline = beam.Pipeline(runner="DirectRunner")
    _ = gen.build_ingestion(
        pipeline, str(logdir), LogConfig(max_bad_fraction=0.5), str(tmp_path / "out"), 2_000_000_000
    )
    result = pipeline.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace(batches.NAMESPACE))[
            "counters"
        ]
    }
    assert counters["bad_unparseable"] == 1 and counters["bad_unknown_item"] == 1
    assert counters["duplicate_events"] == 1
    assert counters["examples"] == 8
