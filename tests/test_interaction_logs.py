"""Parsing log lines and turning a user's events into examples."""
import collections
import json

import pytest

from components import interaction_logs as logs
from tests.conftest import CATALOG, event
from trainer import features as F

CAT = {i["item_id"]: logs.CatalogItem(i["title"], i["description"], i["category"]) for i in CATALOG}


def _value(example, name):
    feature = example.features.feature[name]
    kind = feature.WhichOneof("kind")
    value = getattr(feature, kind).value[0]
    return value.decode() if isinstance(value, bytes) else value


@pytest.mark.parametrize("field", logs.REQUIRED_EVENT_FIELDS)
def test_missing_required_field_is_named(field):
    record = event("e1", "impression", "a", 100)
    del record[field]
    with pytest.raises(logs.BadRecord, match=field) as err:
        logs.parse_event(json.dumps(record), "logs/part-0.jsonl")
    assert err.value.reason == f"missing_{field}"
    assert "logs/part-0.jsonl" in str(err.value)


@pytest.mark.parametrize("line,reason", [
    ("{not json", "unparseable"),
    ("[1, 2]", "unparseable"),
    (json.dumps(event("e1", "view", "a", 1)), "bad_event_type"),
    (json.dumps(event("e1", "click", "a", "yesterday")), "bad_timestamp"),
    (json.dumps(event("e1", "rating", "a", 1, rating=9)), "bad_rating"),
    (json.dumps(event("e1", "rating", "a", 1)), "bad_rating"),
])
def test_bad_lines_get_a_reason(line, reason):
    with pytest.raises(logs.BadRecord) as err:
        logs.parse_event(line)
    assert err.value.reason == reason


def test_labels_come_from_outcomes_of_the_same_session_and_item():
    events = [
        event("1", "impression", "a", 100), event("2", "impression", "b", 101),
        event("3", "click", "a", 105), event("4", "purchase", "a", 200),
        event("5", "rating", "a", 300, rating=4),
    ]
    examples = list(logs.user_examples(events, CAT, history_length=5))
    assert [_value(e, F.ITEM_ID) for e in examples] == ["a", "b"]
    a, b = examples
    assert (_value(a, F.CLICK), _value(a, F.PURCHASE), _value(a, F.RATING), _value(a, F.RATING_WEIGHT)) == (1, 1, 4.0, 1.0)
    assert (_value(b, F.CLICK), _value(b, F.PURCHASE), _value(b, F.RATING_WEIGHT)) == (0, 0, 0.0)
    assert _value(a, F.ITEM_CATEGORY) == "music" and _value(a, F.ITEM_TITLE) == "Jazz piano"


def test_history_holds_only_earlier_clicks_in_time_order_and_is_capped():
    events = [  # deliberately shuffled input order
        event("6", "impression", "c", 400, session="s3"),
        event("1", "impression", "a", 100, session="s1"),
        event("2", "click", "a", 110, session="s1"),
        event("3", "impression", "b", 200, session="s2"),
        event("4", "click", "b", 210, session="s2"),
        event("5", "impression", "a", 110, session="s9"),  # same second as the click
    ]
    examples = {_value(e, F.EVENT_ID): e for e in logs.user_examples(events, CAT, history_length=1)}
    assert _value(examples["1"], F.HISTORY_TITLES) == ""
    assert _value(examples["5"], F.HISTORY_TITLES) == ""  # click at the same second comes after
    assert _value(examples["3"], F.HISTORY_TITLES) == "Jazz piano"
    assert _value(examples["6"], F.HISTORY_TITLES) == "Tennis match"  # capped at 1, newest kept

    full = {_value(e, F.EVENT_ID): e for e in logs.user_examples(events, CAT, history_length=5)}
    assert _value(full["6"], F.HISTORY_TITLES) == F.HISTORY_SEPARATOR.join(["Jazz piano", "Tennis match"])


def test_outcomes_without_impression_are_counted():
    counts = collections.Counter()
    events = [event("1", "click", "a", 100), event("2", "impression", "b", 90)]
    assert len(list(logs.user_examples(events, CAT, 5, counts))) == 1
    assert counts["orphan_click"] == 1 and counts["examples"] == 1


def test_unknown_item_names_the_item():
    with pytest.raises(logs.BadRecord, match="'zzz'"):
        list(logs.user_examples([event("1", "impression", "zzz", 1)], CAT, 5))
