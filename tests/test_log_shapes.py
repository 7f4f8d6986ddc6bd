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
    item_list_delimiters={"category": "|"},
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
    pool = logs.NegativePool.uniform(catalog)

    def examples(order_seed):
        shuffled = list(events)
        random.Random(order_seed).shuffle(shuffled)
        counts = collections.Counter()
        out = [
            (e.features.feature[F.ITEM_ID].bytes_list.value[0].decode(), e)
            for _, _, e in logs.user_examples(
                shuffled, catalog, RATINGS_LATEST, "", counts, [], pool
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
    out = list(logs.user_examples(events, catalog, config, "", counts, []))
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
    assert {_value(e, F.ITEM_CATEGORY) for e in every} == {"Drama"}  # the first genre
    assert all(_value(e, F.ITEM_DESCRIPTION) == "Drama Romance" for e in every)


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


@pytest.mark.parametrize(
    "value,delimiter,expected",
    [
        ("Action|Comedy|Action", "|", ["Action", "Comedy"]),
        ("Action | ", "|", ["Action"]),
        ("Sci-Fi", None, ["Sci-Fi"]),
        ([["Books", "Fiction"], ["Books", "Mystery"]], None, ["Books", "Fiction", "Mystery"]),
        (["a|b", "c"], "|", ["a", "b", "c"]),
        ([None, {"x": 1}, True, 3], None, ["3"]),
        (None, "|", []),
        ("|".join(str(i) for i in range(500)), "|", [str(i) for i in range(100)]),
    ],
)
def test_multi_valued_fields_are_split_flattened_and_bounded(value, delimiter, expected):
    assert logs.list_values(value, delimiter) == expected


def test_a_multi_valued_category_gives_its_first_value_and_tags_join_the_text():
    config = LogConfig(item_list_delimiters={"category": "|", "tags": ";"})
    item_id, item = logs.normalize_item(
        {"item_id": "m1", "title": "T", "description": "d", "category": "Drama|Romance",
         "tags": "sad;slow;sad"},
        config,
    )  # fmt: skip
    assert (item_id, item.category, item.description) == ("m1", "Drama", "d Drama Romance sad slow")
    _, nested = logs.normalize_item(
        {"item_id": "b1", "title": "T", "category": [["Books", "Mystery"]]}, LogConfig()
    )
    assert (nested.category, nested.description) == ("Books", "Books Mystery")
    with pytest.raises(logs.BadRecord, match="missing_category"):
        logs.normalize_item({"item_id": "m1", "title": "T", "category": "|"}, config)
    with pytest.raises(logs.BadRecord, match="missing_category"):
        logs.normalize_item({"item_id": "m1", "title": "T", "category": []}, LogConfig())


def test_popularity_negatives_follow_the_counts_and_never_draw_an_unseen_item():
    pool = logs.NegativePool.by_popularity({"a": 1, "b": 9, "c": 0})
    rng = random.Random(0)
    draws = collections.Counter(pool.draw(rng) for _ in range(5000))
    assert set(draws) == {"a", "b"} and 0.85 < draws["b"] / 5000 < 0.95
    config = LogConfig(row_implies=("impression", "click"), derive_event_ids=True,
                       negatives_per_positive=2, negative_sampling="popularity")  # fmt: skip
    events = _normalized(config, [{"user_id": "u", "item_id": "a", "timestamp": T0}])
    counts = collections.Counter()
    shown = [e for e in events if e["event_type"] == "impression"]
    known = {e["item_id"] for e in events}
    negatives = logs.sampled_negatives(shown, known, pool, config, counts)
    assert [n["item_id"] for n in negatives] == ["b"]  # "a" is the user's, "c" never drawn
    assert counts["negatives_unavailable"] == 1


AMAZON_REVIEWS = LogConfig(
    events_pattern="reviews.json",
    catalog_pattern="meta.json",
    event_field_map={"user_id": "reviewerID", "item_id": "asin", "rating": "overall",
                     "timestamp": "unixReviewTime", "review_text": "reviewText"},
    item_field_map={"item_id": "asin", "category": "categories"},
    row_implies=("impression", "click", "purchase", "rating"),
    derive_event_ids=True,
    negatives_per_positive=2,
    negative_sampling="popularity",
    max_bad_fraction=0.5,
)  # fmt: skip


def test_an_amazon_reviews_log_gives_past_reviews_only_and_popular_negatives(tmp_path):
    base = tmp_path / "amazon"
    os.makedirs(base)
    meta = [
        {"asin": f"B{i}", "title": f"Tutu {i}", "description": "ballet",
         "categories": [["Sports & Outdoors", "Dance"]], "salesRank": {"Toys": i}}
        for i in range(8)
    ]  # fmt: skip
    reviews = [
        ("A1", "B0", 5.0, T0, "loved the zebra tutu"),
        ("A1", "B1", 1.0, T0 + 86_400, "terrible stitching"),
        ("A1", "B2", 4.0, T0 + 2 * 86_400, "fine"),
        ("A2", "B1", 4.0, T0, "my daughter wears it daily"),
        ("A2", "B9", 4.0, T0, "not in the catalogue"),
    ]
    rows = [
        {"reviewerID": u, "asin": a, "overall": r, "unixReviewTime": t, "reviewText": text,
         "helpful": [2, 3], "summary": text[:10]}
        for u, a, r, t, text in reviews
    ]  # fmt: skip
    write_jsonl(str(base / "meta.json"), meta)
    write_jsonl(str(base / "reviews.json"), rows)
    examples, report, dead = ingest(base, AMAZON_REVIEWS, tmp_path / "out")
    every = examples["train"] + examples["eval"]
    text = {(_value(e, F.USER_ID), _value(e, F.ITEM_ID)): _value(e, F.USER_PROFILE)
            for e in every if _value(e, F.CLICK) == 1}  # fmt: skip
    assert text[("A1", "B0")] == "" and text[("A2", "B1")] == ""  # never the own review
    assert text[("A1", "B1")] == "reviews: loved the zebra tutu"
    assert text[("A1", "B2")] == "reviews: terrible stitching | loved the zebra tutu"
    positives = [e for e in every if _value(e, F.CLICK) == 1]
    assert len(positives) == 4 and all(_value(e, F.PURCHASE) == 1 for e in positives)
    assert {_value(e, F.ITEM_CATEGORY) for e in every} == {"Sports & Outdoors"}
    negatives = [e for e in every if _value(e, F.CLICK) == 0]
    # Popularity: only items someone was shown (B0, B1, B2) are drawn, never the user's own.
    assert {_value(e, F.ITEM_ID) for e in negatives} <= {"B0", "B1", "B2"}
    assert all(
        _value(e, F.ITEM_ID) not in {"B0", "B1", "B2"} or _value(e, F.USER_ID) != "A1"
        for e in negatives
    )
    sampled = report["sampled_negatives"]
    assert sampled == len(negatives) and sampled + report["negatives_unavailable"] == 4 * 2
    assert [d["reason"] for d in dead] == ["unknown_item"]


def _movielens_100k_layout(source):
    """A tiny copy of MovieLens-100K's files, in their layout (tab-separated
    u.data without a header; pipe-separated u.item with genre flag columns)."""
    os.makedirs(source)
    (source / "u.genre").write_text("unknown|0\nAction|1\nComedy|2\n\n")
    (source / "u.item").write_text(
        "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|1\n"
        "2|GoldenEye (1995)|01-Jan-1995||http://x|0|1|1\n"
        "3|Four Rooms (1995)||||1|0|0\n"
        "4|Get Shorty (1995)|01-Jan-1995||http://x|0|0|1\n"
    )
    (source / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    (source / "u.data").write_text(
        f"1\t1\t5\t{T0}\n1\t2\t3\t{T0 + 10}\n2\t1\t4\t{T0 + 20}\n2\t3\t1\t{T0 + 30}\n"
    )


def test_the_movielens_100k_files_are_ingested_through_the_generic_path(tmp_path):
    import json

    from datagen import movielens

    _movielens_100k_layout(tmp_path / "ml-100k")
    counts = movielens.convert(str(tmp_path / "ml-100k"), str(tmp_path / "ml"))
    assert counts == {"ratings": 4, "items": 4, "conversions": 2}
    config = LogConfig.from_dict(json.load(open(tmp_path / "ml" / "log_config.json")))
    examples, report, dead = ingest(tmp_path / "ml", config, tmp_path / "out")
    assert dead == [] and report["sampled_negatives"] == 4
    every = examples["train"] + examples["eval"]
    rated = {(_value(e, F.USER_ID), _value(e, F.ITEM_ID)): e for e in every
             if _value(e, F.CLICK) == 1}  # fmt: skip
    labels = {k: (_value(e, F.RATING), _value(e, F.PURCHASE)) for k, e in rated.items()}
    assert labels == {("1", "1"): (5.0, 1), ("1", "2"): (3.0, 0), ("2", "1"): (4.0, 1),
                      ("2", "3"): (1.0, 0)}  # fmt: skip
    assert _value(rated[("1", "2")], F.ITEM_CATEGORY) == "Action"  # the first genre flag
    assert _value(rated[("1", "2")], F.ITEM_DESCRIPTION) == "released 01-Jan-1995 Action Comedy"
    assert _value(rated[("2", "1")], F.USER_PROFILE) == "age 53 gender F occupation other"
    negatives = [e for e in every if _value(e, F.CLICK) == 0]
    for e in negatives:  # never a movie the user rated
        assert (_value(e, F.USER_ID), _value(e, F.ITEM_ID)) not in rated


@pytest.mark.parametrize(
    "values,words",
    [
        ({"negative_sampling": "zipf"}, "negative_sampling"),
        ({"csv_delimiters": {"events": "ab"}}, "one character"),
        ({"csv_delimiters": {"events": '"'}}, "one character"),
        ({"csv_delimiters": {"clicks": "\t"}}, "unknown inputs"),
        ({"csv_delimiters": "\t"}, "JSON object"),
        ({"csv_columns": {"events": "user_id,item_id"}}, "lists of column names"),
        ({"csv_columns": {"events": ["a", "a"]}}, "distinct"),
        ({"csv_columns": {"events": []}}, "distinct"),
        ({"item_list_delimiters": {"title": "|"}}, "only 'category' and 'tags'"),
        ({"item_list_delimiters": {"tags": ""}}, "expected a string"),
        ({"event_field_map": {"review": "text"}}, "unknown fields"),
    ],
)
def test_csv_list_and_sampling_configs_that_cannot_work_name_the_key(values, words):
    with pytest.raises(ValueError, match=words):
        LogConfig.from_dict(values)


def test_negatives_that_cannot_be_sampled_are_reported_in_one_line():
    from components.log_example_gen import negatives_note

    config = LogConfig(row_implies=("impression",), negatives_per_positive=3)
    assert negatives_note({"sampled_negatives": 6}, config) == ""
    note = negatives_note({"sampled_negatives": 6, "negatives_unavailable": 3}, config)
    assert note.startswith("3 of 9 requested negatives") and "uniform" in note
