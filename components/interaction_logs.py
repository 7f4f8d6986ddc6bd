"""Turns one user's raw interaction events into training examples.

Pure Python (no Beam), so the rules are easy to test: parsing and checking a
log line, and walking a user's events in time order to emit one example per
impression with its labels and the user's history strictly before it.
"""
from __future__ import annotations

import collections
import dataclasses
import json
from typing import Dict, Iterable, Iterator, List, Mapping, Tuple

import tensorflow as tf

from trainer import features as F

EVENT_TYPES = ("impression", "click", "purchase", "rating")
REQUIRED_EVENT_FIELDS = ("event_id", "event_type", "user_id", "item_id",
                         "timestamp", "session_id")
REQUIRED_ITEM_FIELDS = ("item_id", "title", "description", "category")
# Events at the same second are applied impression first, then its outcomes.
_TYPE_ORDER = {t: i for i, t in enumerate(EVENT_TYPES)}


class BadRecord(ValueError):
    """A log or catalogue record that cannot be used, with a short reason code."""

    def __init__(self, reason: str, detail: str, source: str = ""):
        self.reason, self.detail, self.source = reason, detail, source
        where = f" in {source}" if source else ""
        super().__init__(f"{reason}{where}: {detail}")


@dataclasses.dataclass(frozen=True)
class CatalogItem:
    title: str
    description: str
    category: str


def _load_json(line: str, source: str, what: str) -> Dict:
    try:
        record = json.loads(line)
    except ValueError as e:
        raise BadRecord("unparseable", f"{what} is not JSON ({e}): {line[:200]!r}", source) from None
    if not isinstance(record, dict):
        raise BadRecord("unparseable", f"{what} is not a JSON object: {line[:200]!r}", source)
    return record


def _require(record: Dict, fields: Iterable[str], source: str, what: str) -> None:
    for field in fields:
        value = record.get(field)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise BadRecord(f"missing_{field}",
                            f"{what} lacks required field {field!r}: {json.dumps(record)[:200]}",
                            source)


def parse_event(line: str, source: str = "") -> Dict:
    """Parses and checks one JSON event line; raises BadRecord naming the field."""
    event = _load_json(line, source, "event")
    _require(event, REQUIRED_EVENT_FIELDS, source, "event")
    if event["event_type"] not in EVENT_TYPES:
        raise BadRecord("bad_event_type",
                        f"event {event['event_id']!r} has event_type {event['event_type']!r}; "
                        f"expected one of {EVENT_TYPES}", source)
    try:
        event["timestamp"] = int(event["timestamp"])
    except (TypeError, ValueError):
        raise BadRecord("bad_timestamp",
                        f"event {event['event_id']!r} has timestamp {event['timestamp']!r}",
                        source) from None
    if event["event_type"] == "rating":
        rating = event.get("rating")
        if not isinstance(rating, (int, float)) or not 1 <= rating <= 5:
            raise BadRecord("bad_rating",
                            f"rating event {event['event_id']!r} has rating {rating!r}; "
                            "expected a number in 1..5", source)
    for key in ("user_id", "item_id", "session_id", "event_id"):
        event[key] = str(event[key])
    return event


def parse_item(line: str, source: str = "") -> Tuple[str, CatalogItem]:
    """Parses one catalogue line into (item_id, CatalogItem)."""
    item = _load_json(line, source, "catalogue item")
    _require(item, REQUIRED_ITEM_FIELDS, source, "catalogue item")
    return str(item["item_id"]), CatalogItem(
        str(item["title"]), str(item["description"]), str(item["category"]))


@dataclasses.dataclass
class _Impression:
    event: Dict
    item: CatalogItem
    history_titles: str
    click: int = 0
    purchase: int = 0
    rating: float = 0.0
    rating_weight: float = 0.0


def user_examples(
    events: Iterable[Dict],
    catalog: Mapping[str, CatalogItem],
    history_length: int,
    counts: collections.Counter | None = None,
) -> Iterator[tf.train.Example]:
    """Yields one tf.Example per impression of one user's events.

    Labels come from the click, purchase and rating events of the same session
    and item. The history is the titles of the last ``history_length`` clicked
    items strictly before the impression. Outcome events without an impression
    are counted under ``orphan_<type>`` in ``counts``.
    """
    counts = counts if counts is not None else collections.Counter()
    ordered = sorted(events, key=lambda e: (e["timestamp"], _TYPE_ORDER[e["event_type"]], e["event_id"]))
    history: collections.deque = collections.deque(maxlen=history_length)
    open_impressions: Dict[Tuple[str, str], _Impression] = {}
    impressions: List[_Impression] = []
    for event in ordered:
        item = catalog.get(event["item_id"])
        if item is None:
            raise BadRecord("unknown_item",
                            f"event {event['event_id']!r} refers to item {event['item_id']!r}, "
                            "which is not in the catalogue")
        key = (event["session_id"], event["item_id"])
        kind = event["event_type"]
        if kind == "impression":
            imp = _Impression(event, item, F.HISTORY_SEPARATOR.join(history))
            open_impressions[key] = imp
            impressions.append(imp)
            continue
        imp = open_impressions.get(key)
        if imp is None:
            counts[f"orphan_{kind}"] += 1
        elif kind == "click":
            imp.click = 1
        elif kind == "purchase":
            imp.purchase = 1
        elif kind == "rating":
            imp.rating, imp.rating_weight = float(event["rating"]), 1.0
        if kind == "click":
            history.append(item.title)
    counts["examples"] += len(impressions)
    for imp in impressions:
        yield _to_example(imp)


def _to_example(imp: _Impression) -> tf.train.Example:
    values = {
        F.EVENT_ID: imp.event["event_id"],
        F.TIMESTAMP: imp.event["timestamp"],
        F.USER_ID: imp.event["user_id"],
        F.ITEM_ID: imp.event["item_id"],
        F.ITEM_TITLE: imp.item.title,
        F.ITEM_DESCRIPTION: imp.item.description,
        F.ITEM_CATEGORY: imp.item.category,
        F.HISTORY_TITLES: imp.history_titles,
        F.CLICK: imp.click,
        F.PURCHASE: imp.purchase,
        F.RATING: imp.rating,
        F.RATING_WEIGHT: imp.rating_weight,
        F.IMPRESSION_WEIGHT: 1.0,
    }
    feature = {}
    for spec in F.RAW_FEATURES:
        value = values[spec.name]
        if spec.dtype == "string":
            feature[spec.name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))
        elif spec.dtype == "int":
            feature[spec.name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
        else:
            feature[spec.name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
    return tf.train.Example(features=tf.train.Features(feature=feature))
