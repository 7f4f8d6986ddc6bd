"""Record normalisation and the per-user walk that builds examples."""

from hypothesis import given, settings
from hypothesis import strategies as st
import collections

import pytest

from components import interaction_logs as logs
from components.log_config import LogConfig
from tests.conftest import CATALOG, event
from trainer import features as F

CAT = {i["item_id"]: logs.CatalogItem(i["title"], i["description"], i["category"]) for i in CATALOG}
CONFIG = LogConfig(history_length=5)
MAX_TS = 2_000_000_000


def _value(example, name):
    feature = example.features.feature[name]
    values = getattr(feature, feature.WhichOneof("kind")).value
    values = [v.decode() if isinstance(v, bytes) else v for v in values]
    return values if name in (F.HISTORY_ITEM_IDS, F.HISTORY_CATEGORIES) else values[0]


def _examples(events, config=CONFIG, counts=None):
    return [ex for _, _, ex in logs.user_examples(events, CAT, config, "", counts)]


def _norm(record, config=CONFIG):
    return logs.normalize_event(record, config, MAX_TS, "logs/part-0.jsonl")


@pytest.mark.parametrize("field", logs.REQUIRED_EVENT_FIELDS)
def test_missing_required_field_is_named(field):
    record = event("e1", "impression", "a", 1_700_000_000)
    del record[field]
    with pytest.raises(logs.BadRecord, match=field) as err:
        _norm(record)
    assert err.value.reason == f"missing_{field}"
    assert "logs/part-0.jsonl" in str(err.value)


@pytest.mark.parametrize(
    "record,reason",
    [
        (event("e1", "view", "a", 1_700_000_000), "bad_event_type"),
        (event("e1", "click", "a", "yesterday"), "bad_timestamp"),
        (event("e1", "click", "a", 12), "timestamp_out_of_range"),
        (event("e1", "click", "a", MAX_TS + 1), "timestamp_out_of_range"),
        (event("e1", "rating", "a", 1_700_000_000, rating=9), "bad_rating"),
        (event("e1", "rating", "a", 1_700_000_000, rating="x"), "bad_rating"),
        (event("e1", "rating", "a", 1_700_000_000), "bad_rating"),
        (event({"nested": 1}, "click", "a", 1_700_000_000), "bad_event_id"),
    ],
)
def test_bad_values_get_a_reason(record, reason):
    with pytest.raises(logs.BadRecord) as err:
        _norm(record)
    assert err.value.reason == reason


def test_decoders_reject_what_they_cannot_read():
    with pytest.raises(logs.BadRecord, match="unparseable"):
        logs.decode_json("{not json")
    with pytest.raises(logs.BadRecord, match="unparseable"):
        logs.decode_json("[1, 2]")
    with pytest.raises(logs.BadRecord, match="columns"):
        logs.decode_csv("a,b", ["x", "y", "z"])
    assert logs.decode_csv('u1,"a, b",', ["x", "y", "z"]) == {"x": "u1", "y": "a, b", "z": None}


def test_field_and_type_maps_and_iso_timestamps():
    config = LogConfig(
        event_field_map={"user_id": "uid", "timestamp": "time", "event_type": "action"},
        event_type_map={"view": "impression"},
    )
    got = _norm(
        {
            "event_id": 7,
            "action": "view",
            "uid": "u9",
            "item_id": "a",
            "time": "2024-01-02T03:04:05Z",
        },
        config,
    )
    assert got["user_id"] == "u9" and got["event_type"] == "impression" and got["event_id"] == "7"
    assert got["timestamp"] == 1704164645


def test_labels_come_from_outcomes_of_the_same_session_and_item():
    events = [
        event("1", "impression", "a", 100),
        event("2", "impression", "b", 101),
        event("3", "click", "a", 105),
        event("4", "purchase", "a", 200),
        event("5", "rating", "a", 300, rating=4.0),
    ]
    a, b = _examples(events)
    assert (
        _value(a, F.CLICK),
        _value(a, F.PURCHASE),
        _value(a, F.RATING),
        _value(a, F.RATING_WEIGHT),
    ) == (1, 1, 4.0, 1.0)
    assert (_value(b, F.CLICK), _value(b, F.PURCHASE), _value(b, F.RATING_WEIGHT)) == (0, 0, 0.0)
    assert _value(a, F.ITEM_CATEGORY) == "music" and _value(a, F.ITEM_TITLE) == "Jazz piano"


def test_windows_and_sessions_bound_the_labels():
    config = LogConfig(click_window_seconds=60, conversion_window_seconds=600)
    events = [
        event("1", "impression", "a", 1000),
        event("2", "click", "a", 1100),  # too late: orphan click
        event("3", "impression", "b", 2000, session="s1"),
        event("4", "click", "b", 2010, session="s2"),  # other session: orphan
        event("5", "impression", "c", 3000),
        event("6", "purchase", "c", 3010),  # no click before it: orphan
        event("7", "click", "c", 3020),
        event("8", "purchase", "c", 9999),  # after the conversion window
    ]
    counts = collections.Counter()
    a, b, c = _examples(events, config, counts)
    assert [_value(x, F.CLICK) for x in (a, b, c)] == [0, 0, 1]
    assert _value(c, F.PURCHASE) == 0
    assert counts["orphan_click"] == 2 and counts["orphan_purchase"] == 2


def test_history_holds_only_earlier_clicks_in_time_order_and_is_capped():
    events = [  # deliberately shuffled input order
        event("6", "impression", "c", 400, session="s3"),
        event("1", "impression", "a", 100, session="s1"),
        event("2", "click", "a", 110, session="s1"),
        event("3", "impression", "b", 200, session="s2"),
        event("4", "click", "b", 210, session="s2"),
        event("5", "impression", "a", 110, session="s9"),  # same second as the click
    ]
    capped = {_value(e, F.EVENT_ID): e for e in _examples(events, LogConfig(history_length=1))}
    assert _value(capped["1"], F.HISTORY_TITLES) == ""
    assert _value(capped["5"], F.HISTORY_TITLES) == ""  # the click at the same second comes after
    assert _value(capped["3"], F.HISTORY_TITLES) == "Jazz piano"
    assert _value(capped["6"], F.HISTORY_TITLES) == "Tennis match"  # capped at 1, newest kept
    assert _value(capped["6"], F.HISTORY_ITEM_IDS) == ["b"]
    full = {_value(e, F.EVENT_ID): e for e in _examples(events)}
    assert _value(full["6"], F.HISTORY_TITLES) == F.HISTORY_SEPARATOR.join(
        ["Jazz piano", "Tennis match"]
    )
    assert _value(full["6"], F.HISTORY_ITEM_IDS) == ["a", "b"]
    assert _value(full["1"], F.HISTORY_ITEM_IDS) == []
    # The interest label: the categories of exactly those history items.
    assert _value(full["6"], F.HISTORY_CATEGORIES) == ["music", "sports"]
    assert _value(capped["6"], F.HISTORY_CATEGORIES) == ["sports"]
    assert _value(full["1"], F.HISTORY_CATEGORIES) == []


def test_duplicate_events_are_dropped_and_counted():
    counts = collections.Counter()
    events = [
        event("1", "impression", "a", 100),
        event("1", "impression", "a", 100),
        event("2", "click", "a", 101),
        event("2", "click", "a", 101),
    ]
    (only,) = _examples(events, counts=counts)
    assert _value(only, F.CLICK) == 1
    assert counts["duplicate_events"] == 2 and counts["examples"] == 1


def test_an_event_re_sent_later_is_a_duplicate_too():
    counts = collections.Counter()
    events = [
        event("1", "impression", "a", 100),
        event("2", "click", "a", 101),
        event("1", "impression", "a", 500),
    ]  # the same event id, logged again later
    (only,) = _examples(events, counts=counts)
    assert _value(only, F.TIMESTAMP) == 100
    assert counts["duplicate_events"] == 1 and counts["examples"] == 1


def test_examples_stream_out_once_their_label_window_has_passed():
    config = LogConfig(click_window_seconds=10, conversion_window_seconds=10)
    events = [event(str(i), "impression", "a", 1000 * i, session=f"s{i}") for i in range(1, 6)]
    stream = logs.user_examples(iter(events), CAT, config)
    first = next(stream)
    assert first[1] == "1"
    assert len(list(stream)) == 4


def test_item_tags_join_the_description_and_users_become_profile_text():
    _, item = logs.normalize_item(
        {"item_id": "x", "title": "T", "category": "c", "tags": ["p", "q"]}, CONFIG
    )
    assert item.description == "p q"
    user_id, profile = logs.normalize_user({"user_id": 3, "age": 31, "job": "chef"}, CONFIG)
    assert user_id == "3" and profile == "age 31 job chef"
    with pytest.raises(logs.BadRecord, match="missing_category"):
        logs.normalize_item({"item_id": "x", "title": "T"}, CONFIG)


def test_control_characters_are_blanked_and_huge_fields_rejected():
    got = _norm(event("e\x00", "click", "a", 1_700_000_000, user="u\x07x"))
    assert got["user_id"] == "u x"
    with pytest.raises(logs.BadRecord, match="longer"):
        _norm(event("e", "click", "a", 1_700_000_000, user="u" * 20_000))


def test_datetime_timestamps_from_parquet_columns():
    import datetime

    utc = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    assert logs.parse_timestamp(utc) == 1704164645
    assert logs.parse_timestamp(utc.replace(tzinfo=None)) == 1704164645  # naive = UTC
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    assert logs.parse_timestamp(utc.astimezone(plus_two)) == 1704164645


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=40) | st.sampled_from(["x" * 10_000, "x" * 10_001, " a", "a\t", "\x85b"]))
def test_the_fast_text_check_only_passes_what_the_full_rules_keep_unchanged(value):
    """``_plain_text`` skips ``_text`` for clean values: it must never let
    through one that ``_text`` would strip, clean, cut or reject."""
    if logs._plain_text(value):
        assert logs._text({"f": value}, "f", "f", "", True) == value
