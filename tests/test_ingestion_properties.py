"""Property-based: malformed input never crashes ingestion, good rows survive."""

import json

import apache_beam as beam
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components import event_batches as batches
from components import packed_events
from components.interaction_logs import CatalogItem
from components.log_config import LogConfig
from tests.conftest import CATALOG, event, write_jsonl
from tests.test_log_example_gen import T0, ingest

CAT = {i["item_id"]: CatalogItem(i["title"], i["description"], i["category"]) for i in CATALOG}
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = st.sampled_from(
    ["event_id", "event_type", "user_id", "item_id", "timestamp", "session_id", "rating", "extra"]
)
EVENT_LIKE = st.dictionaries(
    FIELDS,
    JSON_VALUES
    | st.sampled_from(["impression", "click", "rating", "a", "b", T0, "2024-01-01T00:00:00"]),
    max_size=8,
)
LINES = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    EVENT_LIKE.map(lambda d: json.dumps(d).encode()),
    EVENT_LIKE.map(lambda d: json.dumps(d)[: max(1, len(json.dumps(d)) // 2)].encode()),
)


def _parse_fn(fmt="jsonl", header=None):
    return batches.ParseBatchFn(batches.RowParser("event", LogConfig(), fmt, header, 2_000_000_000))


def _parse_line(fn, source, raw):
    """What one line becomes: [] (blank), [dead letter] or its events."""
    outputs = list(fn.process((source, [raw]), catalog=CAT))
    dead = [o.value for o in outputs if isinstance(o, beam.pvalue.TaggedOutput) and o.tag == "dead"]
    events = [
        e
        for o in outputs
        if not isinstance(o, beam.pvalue.TaggedOutput)
        for e in packed_events.unpack(o[1])
    ]
    assert not (dead and events), outputs
    return dead or events


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(LINES)
def test_any_json_line_is_parsed_or_dead_lettered(raw):
    outputs = _parse_line(_parse_fn(), "f.jsonl", raw)
    if outputs and "reason" in outputs[0]:
        (letter,) = outputs
        assert letter["reason"] and letter["source"] == "f.jsonl"
        json.dumps(letter)  # always serialisable
    else:
        assert len(outputs) <= 1 and all(e["event_id"] for e in outputs)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120))
def test_any_csv_line_is_parsed_or_dead_lettered(raw):
    header = ["event_id", "event_type", "user_id", "item_id", "timestamp", "session_id", "rating"]
    outputs = _parse_line(_parse_fn("csv", header), "f.csv", raw)
    assert len(outputs) <= 1


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(LINES, min_size=20, max_size=60))
def test_malformed_lines_mixed_with_good_rows_in_beam(tmp_path_factory, junk):
    base = tmp_path_factory.mktemp("in")
    write_jsonl(str(base / "items.jsonl"), CATALOG)
    good = [
        json.dumps(event(f"g{i}", "impression", "abc"[i % 3], T0 + i * 100, user=f"u{i % 4}"))
        for i in range(40)
    ]
    lines = []
    for i, line in enumerate(good):
        lines.append(line.encode())
        lines.extend(junk[i :: len(good)])
    (base / "events").mkdir()
    (base / "events" / "a.jsonl").write_bytes(
        b"\n".join(ln.replace(b"\n", b" ").replace(b"\r", b" ") for ln in lines) + b"\n"
    )
    examples, report, dead = ingest(
        base, LogConfig(max_bad_fraction=1.0), tmp_path_factory.mktemp("out")
    )
    kept = {
        e.features.feature["event_id"].bytes_list.value[0].decode()
        for split in examples.values()
        for e in split
    }
    assert {f"g{i}" for i in range(40)} <= kept
    bad = sum(v for k, v in report.items() if k.startswith("bad:"))
    assert bad == len([d for d in dead if d["reason"] != "duplicate_event"])
    assert report.get("duplicate_events", 0) == len(dead) - bad
    assert report["good_event_rows"] + bad == len(
        [ln for ln in lines if ln.replace(b"\n", b" ").replace(b"\r", b" ").strip()]
    )


def _parsed(loads, line):
    try:
        return ("value", repr(loads(line)))
    except (ValueError, RecursionError) as e:
        return ("error", type(e).__name__)


ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(min_value=-1e-300, max_value=1e-300)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=3000, deadline=None)
@given(
    st.one_of(
        ANY_JSON.map(json.dumps),
        ANY_JSON.map(lambda v: json.dumps(v, ensure_ascii=False, indent=1)),
        st.text(max_size=80),
        st.text(alphabet='{}[]":,0123456789.eE+-truefalsnl \\u\t\n', max_size=60),
    )
)
def test_the_fast_json_reader_reads_every_line_as_json_loads_does(line):
    """orjson (with its fallback) gives what ``json.loads`` gives on any line:
    the same value (floats to the bit, big ints as ints) or an error."""
    from components.interaction_logs import _loads

    assert _parsed(_loads, line) == _parsed(json.loads, line)
