"""Logs of other shapes by configuration alone: explicit ratings (each row a
rating of a consumed item), implicit logs (each row a view or a purchase),
no event ids, no event type, another rating range, negatives sampled at
ingestion."""

import collections
import os
import random

import pytest

from components import interaction_logs as logs
from components.log_config import LogConfig
from tests.conftest import CATALOG, write_jsonl
from tests.test_log_example_gen import _value, ingest
from trainer import features as F

T0 = 1_700_000_000
ITEMS = [
    {"item_id": f"m{i}", "title": f"Movie {i}", "description": "", "category": "drama"}
    for i in range(12)
]
# MovieLens "latest" (ratings.csv): userId,movieId,rating,timestamp; half-star ratings.
RATINGS_LATEST = LogConfig(
    events_pattern="ratings.csv",
    catalog_pattern="movies.csv",
    event_field_map={"user_id": "userId", "item_id": "movieId"},
    item_field_map={"item_id": "movieId", "category": "genres"},
    row_implies=("impression", "click", "rating"),
    purchase_min_rating=4.0,
    derive_event_ids=True,
    rating_min=0.5,
    rating_max=5.0,
    negatives_per_positive=2,
    negative_seed=7,
)


def _ratings_dir(tmp_path, rows):
    base = tmp_path / "ml-latest"
    os.makedirs(base)
    lines = ["userId,movieId,rating,timestamp"] + [",".join(map(str, r)) for r in rows]
    (base / "ratings.csv").write_text("\n".join(lines) + "\n")
    movies = ["movieId,title,genres"] + [
        f"{i['item_id']},{i['title']},Drama|Romance" for i in ITEMS
    ]
    (base / "movies.csv").write_text("\n".join(movies) + "\n")
    return base


def _normalized(config, records):
    events = []
    for record in records:
        events += logs.implied_events(logs.normalize_event(record, config, 2_000_000_000), config)
    return events


def test_explicit_ratings_become_positives_with_labels_and_sampled_negatives():
    records = [
        {"userId": "u1", "movieId": "m1", "rating": "4.5", "timestamp": str(T0)},
        {"userId": "u1", "movieId": "m2", "rating": "0.5", "timestamp": str(T0 + 60)},
        {"userId": "u1", "movieId": "m3", "rating": "3", "timestamp": str(T0 + 120)},
    ]
    events = _normalized(RATINGS_LATEST, records)
    assert collections.Counter(e["event_type"] for e in events) == {
        "impression": 3, "click": 3, "rating": 3, "purchase": 1,
    }  # fmt: skip
    catalog = {i["item_id"]: logs.CatalogItem(i["title"], "", "drama") for i in ITEMS}
    ids = tuple(sorted(catalog))

    def examples(order_seed):
        shuffled = list(events)
        random.Random(order_seed).shuffle(shuffled)
        counts = collections.Counter()
        out = [
            (e.features.feature[F.ITEM_ID].bytes_list.value[0].decode(), e)
            for _, _, e in logs.user_examples(
                shuffled, catalog, RATINGS_LATEST, "", counts, [], ids
            )
        ]
        return out, counts

    first, counts = examples(0)
    again, _ = examples(1)
    assert [i for i, _ in first] == [i for i, _ in again]  # deterministic, whatever the order
    labels = {item: (_value(e, F.CLICK), _value(e, F.PURCHASE), _value(e, F.RATING))
              for item, e in first}  # fmt: skip
    assert labels["m1"] == (1, 1, 4.5) and labels["m2"] == (1, 0, 0.5)
    assert labels["m3"] == (1, 0, 3.0)
    negatives = [item for item, e in first if _value(e, F.CLICK) == 0]
    assert len(negatives) == 6 and counts["sampled_negatives"] == 6
    assert not {"m1", "m2", "m3"} & set(negatives)  # never an item the user rated
    for item, e in first:
        if item in negatives:
            assert _value(e, F.RATING_WEIGHT) == 0.0 and _value(e, F.PURCHASE) == 0


def test_negatives_the_catalogue_cannot_give_are_counted():
    config = LogConfig(row_implies=("impression", "click"), derive_event_ids=True,
                       negatives_per_positive=3)  # fmt: skip
    records = [
        {"user_id": "u", "item_id": i["item_id"], "timestamp": T0 + n}
        for n, i in enumerate(CATALOG)
    ]
    events = _normalized(config, records)
    catalog = {i["item_id"]: logs.CatalogItem(i["title"], "", i["category"]) for i in CATALOG}
    counts = collections.Counter()
    out = list(logs.user_examples(events, catalog, config, "", counts, [], tuple(sorted(catalog))))
    assert len(out) == 3  # the user knows every item: no negative is possible
    assert counts["negatives_unavailable"] == 9 and counts["sampled_negatives"] == 0


def test_derived_event_ids_are_stable_and_a_resent_row_is_a_duplicate():
    record = {"userId": "u1", "movieId": "m1", "rating": "4", "timestamp": str(T0)}
    a = logs.normalize_event(record, RATINGS_LATEST, 2_000_000_000)
    b = logs.normalize_event(dict(reversed(list(record.items()))), RATINGS_LATEST, 2_000_000_000)
    c = logs.normalize_event({**record, "rating": "3"}, RATINGS_LATEST, 2_000_000_000)
    assert a["event_id"] == b["event_id"] != c["event_id"]


def test_a_constant_event_type_and_another_rating_range():
    config = LogConfig(event_type_constant="rated", event_type_map={"rated": "rating"},
                       rating_min=1, rating_max=10)  # fmt: skip
    record = {"event_id": "e1", "user_id": "u", "item_id": "a", "timestamp": T0, "rating": 9}
    event = logs.normalize_event(record, config, 2_000_000_000)
    assert (event["event_type"], event["rating"]) == ("rating", 9.0)
    with pytest.raises(logs.BadRecord, match="expected a number in 1..10"):
        logs.normalize_event({**record, "rating": 11}, config, 2_000_000_000)
    with pytest.raises(logs.BadRecord, match="0.5..5"):
        logs.normalize_event(
            {"userId": "u", "movieId": "m1", "rating": "0.25", "timestamp": T0},
            RATINGS_LATEST,
            2_000_000_000,
        )


@pytest.mark.parametrize(
    "values,words",
    [
        ({"rating_min": 5, "rating_max": 1}, "rating_min < rating_max"),
        ({"rating_min": float("nan")}, "finite"),
        ({"row_implies": ["impression", "like"]}, "row_implies"),
        ({"row_implies": ["click"]}, "must include 'impression'"),
        ({"row_implies": "impression,click"}, "list of event types"),
        ({"negatives_per_positive": -1}, "negatives_per_positive"),
        ({"negatives_per_positive": 2}, "needs row_implies"),
        ({"purchase_min_rating": 4}, "needs 'rating' in row_implies"),
        ({"row_implies": ["impression", "rating"], "purchase_min_rating": 9}, "outside"),
        ({"event_type_constant": "like"}, "event_type_constant"),
        ({"event_type_constant": "click", "row_implies": ["impression"]}, "not both"),
        ({"ratings_min": 1}, "unknown log config keys"),
    ],
)
def test_configs_that_cannot_work_fail_naming_the_key(values, words):
    with pytest.raises(ValueError, match=words):
        LogConfig.from_dict(values)


def test_a_movielens_latest_ratings_csv_is_ingested_by_configuration_alone(tmp_path):
    rows = [
        ("u1", "m1", 4.5, T0),
        ("u1", "m2", 0.5, T0 + 100),
        ("u1", "m2", 0.5, T0 + 100),  # re-sent: the same derived id, a duplicate
        ("u2", "m3", 3.0, T0 + 200),
        ("u2", "m4", 0.25, T0 + 300),  # outside 0.5..5
        ("u3", "zz", 4.0, T0 + 400),  # not in the catalogue
    ]
    base = _ratings_dir(tmp_path, rows)
    config = LogConfig.from_dict({**RATINGS_LATEST.__dict__, "max_bad_fraction": 0.5})
    examples, report, dead = ingest(base, config, tmp_path / "out")
    every = examples["train"] + examples["eval"]
    positives = [e for e in every if _value(e, F.CLICK) == 1]
    assert len(positives) == 3 and len(every) == 3 + 3 * 2  # two sampled negatives per rating
    assert {(_value(e, F.ITEM_ID), _value(e, F.RATING)) for e in positives} == {
        ("m1", 4.5), ("m2", 0.5), ("m3", 3.0),
    }  # fmt: skip
    reasons = collections.Counter(d["reason"] for d in dead)
    assert reasons["bad_rating"] == 1 and reasons["unknown_item"] == 1
    assert reasons["duplicate_event"] == 3  # the re-sent row's impression, click and rating
    assert report["sampled_negatives"] == 6 and report["duplicate_events"] == 3
    assert {_value(e, F.ITEM_CATEGORY) for e in every} == {"Drama|Romance"}


RETAILROCKET = LogConfig(
    events_pattern="events.csv",
    catalog_pattern="items.jsonl",
    event_field_map={"user_id": "visitorid", "item_id": "itemid", "event_type": "event"},
    derive_event_ids=True,
    timestamp_unit="ms",
    type_implies={"view": ("impression", "click")},
    event_type_map={"addtocart": "click", "transaction": "purchase"},
    negatives_per_positive=1,
    max_bad_fraction=0.5,
)


def test_a_retailrocket_style_view_and_transaction_log_is_ingested_by_configuration(tmp_path):
    base = tmp_path / "rr"
    os.makedirs(base)
    ms = T0 * 1000
    rows = [
        (ms, "v1", "view", "m1", ""),
        (ms + 60_000, "v1", "addtocart", "m1", ""),  # the view clicked already: an orphan
        (ms + 120_000, "v1", "transaction", "m1", "t1"),
        (ms + 200_000, "v1", "view", "m2", ""),
        (ms + 300_000, "v2", "view", "m3", ""),
        (ms + 400_000, "v2", "like", "m3", ""),  # an unknown type: dead-lettered
    ]
    lines = ["timestamp,visitorid,event,itemid,transactionid"] + [
        ",".join(map(str, r)) for r in rows
    ]
    (base / "events.csv").write_text("\n".join(lines) + "\n")
    write_jsonl(str(base / "items.jsonl"), ITEMS)
    examples, report, dead = ingest(base, RETAILROCKET, tmp_path / "out")
    every = examples["train"] + examples["eval"]
    labels = {
        (_value(e, F.USER_ID), _value(e, F.ITEM_ID)): (_value(e, F.CLICK), _value(e, F.PURCHASE))
        for e in every
        if _value(e, F.CLICK) == 1
    }
    assert labels == {("v1", "m1"): (1, 1), ("v1", "m2"): (1, 0), ("v2", "m3"): (1, 0)}
    assert len(every) == 3 + 3  # one sampled negative per view
    assert {_value(e, F.TIMESTAMP) for e in every} >= {T0, T0 + 200, T0 + 300}
    assert [d["reason"] for d in dead] == ["bad_event_type"]
    assert report["orphan_click"] == 1 and report["sampled_negatives"] == 3


@pytest.mark.parametrize(
    "value,unit,seconds",
    [(1_700_000_000, "s", 1_700_000_000), (1_700_000_000_123, "ms", 1_700_000_000),
     ("1700000000123456", "us", 1_700_000_000), ("1700000000.5", "s", 1_700_000_000),
     ("2023-11-14T22:13:20Z", "ms", 1_700_000_000)],
)  # fmt: skip
def test_timestamps_in_seconds_milliseconds_or_microseconds(value, unit, seconds):
    assert logs.parse_timestamp(value, unit) == seconds


@pytest.mark.parametrize(
    "values,words",
    [
        ({"timestamp_unit": "minutes"}, "timestamp_unit"),
        ({"type_implies": {"view": []}}, "type_implies"),
        ({"type_implies": {"view": ["impression", "swipe"]}}, "type_implies"),
        ({"type_implies": {"view": "impression"}}, "lists of event types"),
        ({"type_implies": {"view": ["impression"]}, "row_implies": ["impression"]}, "not with"),
    ],
)
def test_type_implies_and_timestamp_unit_configs_that_cannot_work_name_the_key(values, words):
    with pytest.raises(ValueError, match=words):
        LogConfig.from_dict(values)
