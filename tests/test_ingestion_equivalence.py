"""The batched ingestion path gives what the row-at-a-time, whole-user path gave.

The reference is the path ingestion took before batching: Beam's own text
source, one row per element, every user's events grouped whole, examples
built as ``tf.train.Example`` protos in Python (``interaction_logs.user_examples``).
Both run over generated logs with bad rows, re-sent rows, orphan outcomes,
CRLF and gzip files and one user holding a tenth of all events; the examples
(per split), the dead letters and the duplicates must be the same.
"""

import base64
import collections
import glob
import gzip
import json
import os
import random

import apache_beam as beam
import pytest
import tensorflow as tf

from components import event_batches as batches
from components import packed_events
from components import example_files
from components import interaction_logs as logs
from components.log_config import LogConfig, SplitConfig
from tests.conftest import write_jsonl
from tests.test_log_example_gen import ingest

T0 = 1_700_000_000
MAX_TS = 2_000_000_000
ITEMS = [
    {"item_id": f"i{n:03d}", "title": f"Title {n}", "description": f"words {n % 7}", "category": c}
    for n, c in zip(range(60), ["music", "sports", "cooking"] * 20)
]


def _user_events(rng, user, n_impressions, start):
    """One user's impressions and their clicks, purchases and ratings."""
    rows, ts = [], start
    for k in range(n_impressions):
        ts += rng.randint(1, 4000)
        item = rng.choice(ITEMS)["item_id"]
        sid = f"s-{user}-{k // 5}"
        eid = f"{user}-{k}"
        rows.append(
            {
                "event_id": eid,
                "event_type": "impression",
                "user_id": user,
                "item_id": item,
                "timestamp": ts,
                "session_id": sid,
            }
        )
        if rng.random() < 0.4:
            rows.append(
                {
                    "event_id": eid + "c",
                    "event_type": "click",
                    "user_id": user,
                    "item_id": item,
                    "timestamp": ts + rng.randint(0, 600),
                    "session_id": sid,
                }
            )
            if rng.random() < 0.4:
                rows.append(
                    {
                        "event_id": eid + "p",
                        "event_type": "purchase",
                        "user_id": user,
                        "item_id": item,
                        "timestamp": ts + 900,
                        "session_id": sid,
                    }
                )
            if rng.random() < 0.3:
                rows.append(
                    {
                        "event_id": eid + "r",
                        "event_type": "rating",
                        "user_id": user,
                        "item_id": item,
                        "timestamp": ts + 1000,
                        "session_id": sid,
                        "rating": rng.randint(1, 5),
                        "review_text": f"review {k}\x01",
                    }
                )
        if rng.random() < 0.1:  # an impression with its click in one row (VIEW)
            rows.append(
                {
                    "event_id": eid + "v",
                    "event_type": "view",
                    "user_id": user,
                    "item_id": rng.choice(ITEMS)["item_id"],
                    "timestamp": ts + 7,
                }
            )
        if rng.random() < 0.03:
            rows.append(dict(rows[-1]))  # a re-sent row
        if rng.random() < 0.03:  # re-sent later or stamped earlier: another time bucket
            rows.append({**rows[-1], "timestamp": rows[-1]["timestamp"] + rng.randint(-9000, 9000)})
        if rng.random() < 0.02:  # an outcome that matches no impression
            rows.append(
                {
                    "event_id": eid + "o",
                    "event_type": "click",
                    "user_id": user,
                    "item_id": rng.choice(ITEMS)["item_id"],
                    "timestamp": ts + 5,
                }
            )
    return rows  # fmt: skip


BAD_LINES = [
    "{not json",
    json.dumps({"event_id": "x1", "event_type": "click", "user_id": "u1", "item_id": "nope",
                "timestamp": T0}),
    json.dumps({"event_id": "x2", "event_type": "impression", "user_id": "u1",
                "item_id": "i001", "timestamp": "yesterday"}),
    json.dumps({"event_id": "x3", "event_type": "teleport", "user_id": "u1",
                "item_id": "i001", "timestamp": T0}),
    json.dumps([1, 2, 3]),
    json.dumps({"event_id": "x4", "event_type": "rating", "user_id": "u1", "item_id": "i001",
                "timestamp": T0, "rating": 99}),
]  # fmt: skip


def write_logs(base, seed=7, users=40, impressions=1500):
    """Event logs in four files (plain, CRLF, gzip, no final newline); the
    user ``heavy`` holds about a tenth of all events."""
    rng = random.Random(seed)
    rows = _user_events(rng, "heavy", impressions // 10, T0)
    for u in range(users):
        rows += _user_events(rng, f"u{u}", (impressions - impressions // 10) // users, T0 + u)
    rng.shuffle(rows)
    lines = [json.dumps(r) for r in rows]
    for bad in BAD_LINES * 3:
        lines.insert(rng.randrange(len(lines)), bad)
    lines.insert(10, "   ")
    os.makedirs(base / "events")
    quarter = len(lines) // 4
    parts = [lines[i * quarter : (i + 1) * quarter] for i in range(3)] + [lines[3 * quarter :]]
    (base / "events" / "a.jsonl").write_text("\n".join(parts[0]) + "\n")
    (base / "events" / "b.jsonl").write_bytes(("\r\n".join(parts[1]) + "\r\n").encode())
    with gzip.open(base / "events" / "c.jsonl.gz", "wt") as f:
        f.write("\n".join(parts[2]) + "\n")
    (base / "events" / "d.jsonl").write_text("\n".join(parts[3]))  # no final newline
    write_jsonl(str(base / "items.jsonl"), ITEMS + ["{bad item"])
    return rows


def _lines_as_beam_reads_them(files, out):
    """(file, line) of every line, through Beam's own text source."""
    with beam.Pipeline(runner="DirectRunner") as p:
        _ = (
            p
            | beam.Create(files)
            | beam.io.ReadAllFromText(with_filename=True, coder=beam.coders.BytesCoder())
            | beam.Map(lambda kv: json.dumps([kv[0], base64.b64encode(kv[1]).decode()]))
            | beam.io.WriteToText(str(out), shard_name_template="")
        )
    return [(f, base64.b64decode(b)) for f, b in map(json.loads, open(out))]


def reference(base, config, tmp_path):
    """Examples per split (by event id), dead letters and duplicates of the
    row-at-a-time path with every user grouped whole."""
    item_parser = batches.RowParser("item", config, "jsonl", None)
    catalog, dead = {}, []
    for line in open(base / "items.jsonl", "rb"):
        parsed = item_parser.parse(str(base / "items.jsonl"), line.rstrip(b"\n"))
        if isinstance(parsed, dict):
            dead.append(parsed)
        else:
            catalog.update(parsed)
    files = sorted(glob.glob(str(base / "events" / "*")))
    parser = batches.RowParser("event", config, "jsonl", None, MAX_TS)
    by_user = collections.defaultdict(list)
    for source, raw in _lines_as_beam_reads_them(files, tmp_path / "lines.json"):
        if batches.is_blank(raw):
            continue
        parsed = parser.parse(source, raw, catalog)
        if isinstance(parsed, dict):
            dead.append(parsed)
        else:
            for user_id, e in parsed:
                by_user[user_id].append(e)
    times = [e["timestamp"] for events in by_user.values() for e in events]
    cutoff = batches.time_cutoff((min(times), max(times)), config)
    pool = None
    if config.negative_sampling == "popularity":
        impressed = {
            (e["event_id"], e["item_id"])
            for events in by_user.values()
            for e in events
            if e["event_type"] == "impression"
        }
        pool = logs.NegativePool.by_popularity(collections.Counter(i for _, i in impressed))
    examples, duplicates = {"train": {}, "eval": {}}, []
    counts = collections.Counter()
    for events in by_user.values():
        found = []
        for ts, event_id, example in logs.user_examples(
            events, catalog, config, "", counts, found, pool
        ):
            item_id = example.features.feature["item_id"].bytes_list.value[0].decode()
            split = batches.SPLITS[batches.split_of(item_id, event_id, ts, config.split, cutoff)]
            examples[split][event_id] = example
        duplicates += [e["event_id"] for e in found]
    return examples, dead, duplicates, counts


VIEW = {"view": ("impression", "click")}  # a "view" row: an impression and its click
# Windows of 10 and 20 minutes and buckets as short as they can be (the label
# horizon, 30 minutes): a user's day is cut into ~50 buckets.
SHORT_BUCKETS = dict(
    click_window_seconds=600, conversion_window_seconds=1200, time_bucket_seconds=1
)
CONFIGS = {
    "time split": LogConfig(max_bad_fraction=0.5),
    "time split, short buckets": LogConfig(max_bad_fraction=0.5, **SHORT_BUCKETS),
    "random split, negatives, short buckets": LogConfig(
        max_bad_fraction=0.5,
        negatives_per_positive=2,
        type_implies=VIEW,
        split=SplitConfig(kind="random", eval_fraction=0.3),
        **SHORT_BUCKETS,
    ),
    "random split, sampled negatives, cold items": LogConfig(
        max_bad_fraction=0.5,
        negatives_per_positive=2,
        type_implies=VIEW,
        split=SplitConfig(kind="random", eval_fraction=0.3, cold_item_fraction=0.1),
    ),
    "popularity negatives": LogConfig(
        max_bad_fraction=0.5,
        negatives_per_positive=1,
        negative_sampling="popularity",
        type_implies=VIEW,
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_batched_ingestion_gives_the_examples_dead_letters_and_duplicates_of_the_row_path(
    name, tmp_path
):
    config = CONFIGS[name]
    base = tmp_path / "logs"
    rows = write_logs(base)
    assert sum(r["user_id"] == "heavy" for r in rows) >= 0.09 * len(rows)
    want_examples, want_dead, want_duplicates, want_counts = reference(base, config, tmp_path)
    got, report, got_dead = ingest(base, config, tmp_path / "out", MAX_TS)

    for split in batches.SPLITS:
        by_id = {e.features.feature["event_id"].bytes_list.value[0].decode(): e for e in got[split]}
        assert len(by_id) == len(got[split]), "an event id twice"
        assert sorted(by_id) == sorted(want_examples[split]), split
        differing = [i for i in by_id if by_id[i] != want_examples[split][i]]
        assert not differing, (split, differing[:3], by_id[differing[0]] if differing else None)
        assert report[f"examples_{split}"] == len(by_id)
    assert want_examples["eval"] and want_examples["train"]

    def letters(items):
        return sorted(json.dumps(d, sort_keys=True) for d in items)

    assert letters(d for d in got_dead if d["reason"] != "duplicate_event") == letters(want_dead)
    got_duplicates = [
        json.loads(d["original"])["event_id"] for d in got_dead if d["reason"] == "duplicate_event"
    ]
    assert sorted(got_duplicates) == sorted(want_duplicates) and want_duplicates
    assert report["duplicate_events"] == len(want_duplicates)
    walked = ("orphan_click", "orphan_purchase", "orphan_rating", "examples", "sampled_negatives")
    assert {k: report.get(k, 0) for k in walked} == {k: want_counts[k] for k in walked}
    assert want_counts["orphan_click"] and want_counts["orphan_rating"]
    times = sorted(
        r["timestamp"] for r in rows if r["user_id"] == "heavy" and isinstance(r["timestamp"], int)
    )
    assert (times[-1] - times[0]) // config.bucket_seconds >= (
        30 if config.time_bucket_seconds == 1 else 0
    )  # the short buckets cut the heavy user's timeline into 30 or more
    reasons = collections.Counter(d["reason"] for d in want_dead)
    assert {k[4:]: v for k, v in report.items() if k.startswith("bad:")} == reasons
    assert reasons["unknown_item"] == 3 and reasons["item_unparseable"] == 1
    assert (
        reasons["bad_event_type"] > 3 if not config.type_implies else reasons["bad_event_type"] == 3
    )


def test_the_column_encoder_gives_the_protos_python_builds():
    """Every kind of value: empty and non-empty lists, non-ASCII and lone
    surrogates (replaced), big ints, floats rounded to float32."""
    rows = [
        {
            "event_id": "é\ud800x",
            "timestamp": 2**40,
            "user_id": "u",
            "item_id": "i",
            "item_title": "t",
            "item_description": "",
            "item_category": "c",
            "history_titles": "",
            "history_item_ids": ids,
            "history_categories": ids[:1],
            "user_profile": "p",
            "click": 1,
            "purchase": 0,
            "rating": 0.1,
            "rating_weight": 1.0,
            "impression_weight": 1.0,
        }
        for ids in ([], ["a", "b"], ["c"])
    ]
    from components import example_columns

    for row, serialized in zip(rows, example_columns.serialize_examples(rows)):
        assert tf.train.Example.FromString(serialized) == logs.to_example(row)


def test_examples_are_written_shuffled_into_files_as_a_reshuffle_would(tmp_path):
    """Each file is a random sample of the split in random order: a user's
    examples are spread over the files, and neighbours rarely share a user."""
    base = tmp_path / "logs"
    write_logs(base, impressions=3000)
    _, report, _ = ingest(base, LogConfig(max_bad_fraction=0.5), tmp_path / "out", MAX_TS)
    files = sorted(glob.glob(str(tmp_path / "out" / "Split-train" / "*")))
    assert len(files) == example_files.NUM_FILES
    users_per_file = []
    for path in files:
        users = [
            tf.train.Example.FromString(r.numpy()).features.feature["user_id"].bytes_list.value[0]
            for r in tf.data.TFRecordDataset(path, compression_type="GZIP")
        ]
        users_per_file.append(users)
    assert sum(map(len, users_per_file)) == report["examples_train"]
    heavy_files = sum(b"heavy" in users for users in users_per_file)
    assert heavy_files == len(files)  # ~270 of the heavy user's examples, in every file
    same = sum(a == b for users in users_per_file for a, b in zip(users, users[1:]))
    pairs = sum(len(users) - 1 for users in users_per_file)
    assert same / pairs < 0.1, same / pairs  # grouped by user it would be about 0.97


def test_packed_events_come_back_as_they_were():
    """What orjson cannot write (a lone surrogate, a big int) takes the json path."""
    for events in (
        [{"event_id": "e", "timestamp": 1, "rating": 0.1, "session_id": None}],
        [{"event_id": "\ud800", "timestamp": 2}],
        [{"event_id": "x", "timestamp": 2**70}],
        [],
    ):
        assert packed_events.unpack(packed_events.pack(events)) == events


@pytest.mark.parametrize(
    "field", ["click_window_seconds", "conversion_window_seconds", "time_bucket_seconds"]
)
@pytest.mark.parametrize("value", [-1, 1.5, True, "3600", None])
def test_a_window_or_bucket_that_cannot_work_is_named(field, value):
    with pytest.raises(ValueError, match=field):
        LogConfig(**{field: value})


def test_a_bucket_is_never_shorter_than_the_label_horizon():
    config = LogConfig(click_window_seconds=600, conversion_window_seconds=1200)
    assert config.label_horizon == 1800
    assert LogConfig(**SHORT_BUCKETS).bucket_seconds == 1800
    assert config.bucket_seconds == config.time_bucket_seconds > 1800
    assert LogConfig(click_window_seconds=0, conversion_window_seconds=0).bucket_seconds >= 1


def test_an_event_goes_to_its_bucket_and_the_bucket_before_within_one_horizon():
    """The look-ahead copies: an event in the first ``horizon`` seconds of
    its bucket also goes to the bucket before; one later does not."""
    from components import time_buckets as tb

    width, horizon = 100, 30
    assert [tb.ahead_bucket(t, width, horizon) for t in (200, 229, 230, 299)] == [1, 1, None, None]
    assert [tb.bucket_of(t, width) for t in (-1, 0, 99, 100)] == [-1, 0, 0, 1]
