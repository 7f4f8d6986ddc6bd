"""Fuzzing: 10,000 malformed or adversarial event rows mixed with good ones.

Every row is made with the reason it must be rejected for, so the test checks
the exact dead letter (reason and original line) of each bad row, that every
good row becomes an example, and that nothing bad does.
"""

import collections
import json
import random

import pytest

from components.log_config import LogConfig
from tests.conftest import CATALOG, event, write_jsonl
from tests.test_log_example_gen import T0, ingest

MAX_TIMESTAMP = 2_000_000_000
BAD_ROWS = 10_000
GOOD_IMPRESSIONS = 2_000
ITEMS = [item["item_id"] for item in CATALOG]


def _good(i: int) -> dict:
    return event(
        f"g{i:05d}",
        "impression",
        ITEMS[i % len(ITEMS)],
        T0 + i * 60,
        user=f"u{i % 50}",
        session=f"s{i // 20}",
    )


def _bad(rng: random.Random, n: int):
    """(line bytes, expected reason) for one adversarial row."""
    base = event(
        f"x{n:05d}", "impression", rng.choice(ITEMS), T0 + rng.randrange(10**6), user=f"u{n % 50}"
    )
    wrong_types = [["list"], {"a": 1}, 1.5, True]
    kind = n % 16
    if kind == 0:  # truncated JSON
        text = json.dumps(base)
        return text[: rng.randrange(1, len(text) - 1)].encode(), "unparseable"
    if kind == 1:  # valid JSON, not an object
        return json.dumps(rng.choice([[base], 42, "impression", None])).encode(), "unparseable"
    if kind == 2:  # invalid UTF-8
        return json.dumps(base).encode()[:-2] + bytes(
            [0xFF, 0xFE, rng.randrange(0x80, 0xC0)]
        ) + b'"}', "invalid_utf8"
    if kind == 3:
        field = rng.choice(["event_id", "user_id", "item_id", "event_type"])
        return json.dumps({**base, field: rng.choice(wrong_types)}).encode(), f"bad_{field}"
    if kind == 4:
        return json.dumps(
            {**base, "timestamp": rng.choice([[T0], {"t": T0}, True, "soon", "NaN"])}
        ).encode(), "bad_timestamp"
    if kind == 5:  # huge field
        field = rng.choice(["event_id", "user_id", "item_id"])
        return json.dumps(
            {**base, field: "z" * rng.randrange(10_001, 60_000)}
        ).encode(), f"bad_{field}"
    if kind == 6:  # from the future
        return json.dumps(
            {**base, "timestamp": MAX_TIMESTAMP + rng.randrange(1, 10**9)}
        ).encode(), "timestamp_out_of_range"
    if kind == 7:  # negative or before min_timestamp
        return json.dumps(
            {**base, "timestamp": rng.choice([-1, -(10**12), 0, 100])}
        ).encode(), "timestamp_out_of_range"
    if kind == 8:
        field = rng.choice(["event_id", "user_id", "item_id", "event_type"])
        row = dict(base)
        if rng.random() < 0.5:
            del row[field]
        else:
            row[field] = rng.choice(["", "   "])
        return json.dumps(row).encode(), f"missing_{field}"
    if kind == 9:
        row = dict(base)
        del row["timestamp"]
        return json.dumps(row).encode(), "missing_timestamp"
    if kind == 10:
        return json.dumps(
            {**base, "event_type": rng.choice(["like", "IMPRESSION", "\u0000", "💥"])}
        ).encode(), "bad_event_type"
    if kind == 11:
        return json.dumps({**base, "item_id": f"unknown-{n}"}).encode(), "unknown_item"
    if kind == 12:
        rating = rng.choice([0, 6, -1, "five", None, [4], True, float("inf")])
        return json.dumps({**base, "event_type": "rating", "rating": rating}).encode(), "bad_rating"
    if kind == 13:  # control characters and escapes that are not valid JSON
        return rng.choice(
            [b"\x00\x01\x02", b"{\x1b[31m}", b'{"event_id": "\\ud800\\x"}', b"{" * 500]
        ), "unparseable"
    if kind == 14:  # deeply nested
        depth = rng.randrange(2_000, 20_000)
        return (b"[" * depth) + (b"]" * depth), "unparseable"
    timestamp = rng.choice(["2024-13-45T99:00:00", "tomorrow", ""])
    return json.dumps(
        {**base, "timestamp": timestamp}
    ).encode(), "bad_timestamp" if timestamp else "missing_timestamp"


def _legal_but_odd(i: int) -> dict:
    """Good rows with adversarial content the schema allows: control
    characters in ids (made spaces), huge unknown fields (ignored)."""
    row = _good(i)
    if i % 2:
        row["user_id"] = f"u{i % 50}\u0007\u0000"
    else:
        row["comment"] = "y" * 100_000
    return row


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    rng = random.Random(20261123)
    base = tmp_path_factory.mktemp("fuzz")
    write_jsonl(str(base / "items.jsonl"), CATALOG)
    good = [_good(i) for i in range(GOOD_IMPRESSIONS - 100)]
    good += [_legal_but_odd(i) for i in range(GOOD_IMPRESSIONS - 100, GOOD_IMPRESSIONS)]
    good += [
        event(
            f"c{i:05d}",
            "click",
            row["item_id"],
            row["timestamp"] + 30,
            user=row["user_id"],
            session=row["session_id"],
        )
        for i, row in enumerate(good[:400])
    ]
    resent = [
        dict(row, timestamp=row["timestamp"] + 86_400) for row in good[:300:3]
    ]  # duplicated ids
    bad = [_bad(rng, n) for n in range(BAD_ROWS)]
    lines = [(json.dumps(row).encode(), None) for row in good + resent] + bad
    rng.shuffle(lines)
    (base / "events").mkdir()
    for part in range(4):
        (base / "events" / f"part-{part}.jsonl").write_bytes(
            b"\n".join(line for line, _ in lines[part::4]) + b"\n"
        )
    examples, report, dead = ingest(
        base,
        LogConfig(max_bad_fraction=1.0),
        tmp_path_factory.mktemp("out"),
        max_timestamp=MAX_TIMESTAMP,
    )
    return good, resent, bad, examples, report, dead


def test_every_good_impression_is_kept_and_nothing_bad_becomes_an_example(fuzzed):
    good, resent, _, examples, report, _ = fuzzed
    kept = [
        e.features.feature["event_id"].bytes_list.value[0].decode()
        for split in examples.values()
        for e in split
    ]
    assert sorted(kept) == sorted(
        row["event_id"] for row in good if row["event_type"] == "impression"
    )
    assert report["good_event_rows"] == len(good) + len(resent)
    clicked = sum(
        e.features.feature["click"].int64_list.value[0]
        for split in examples.values()
        for e in split
    )
    assert clicked == 400


def test_every_bad_row_is_counted_and_dead_lettered_with_its_reason(fuzzed):
    _, _, bad, _, report, dead = fuzzed
    assert len(bad) == BAD_ROWS
    expected = collections.Counter(reason for _, reason in bad)
    assert {k[4:]: v for k, v in report.items() if k.startswith("bad:")} == dict(expected)
    letters = collections.Counter(
        (d["reason"], d["original"]) for d in dead if d["reason"] != "duplicate_event"
    )
    assert letters == collections.Counter(
        (reason, line.decode("utf-8", "backslashreplace")[:20_000]) for line, reason in bad
    )
    assert all(
        d["source"].endswith(".jsonl") and d["detail"]
        for d in dead
        if d["reason"] != "duplicate_event"
    )


def test_re_sent_events_are_counted_and_dead_lettered_as_duplicates(fuzzed):
    _, resent, _, _, report, dead = fuzzed
    assert report["duplicate_events"] == len(resent)
    duplicates = [json.loads(d["original"]) for d in dead if d["reason"] == "duplicate_event"]
    assert sorted((d["event_id"], d["timestamp"]) for d in duplicates) == sorted(
        (row["event_id"], row["timestamp"]) for row in resent
    )
