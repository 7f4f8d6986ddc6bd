"""Rules that turn raw interaction records into training examples.

Pure Python (no Beam), so every rule is easy to test:

* ``decode_*`` turn one raw line into a record dict;
* ``normalize_event`` / ``normalize_item`` / ``normalize_user`` map the user's
  field names to ours and check every value, raising ``BadRecord`` with a
  reason code and the field;
* ``user_example_values`` walks one user's events in time order and yields
  one example's feature values per impression, with its labels and the
  user's history strictly before it, holding only the events of the label
  window in memory; ``user_examples`` yields them as ``tf.train.Example``
  protos (the reference the batched path, ``example_columns``, is tested
  against). TensorFlow is imported only there: Beam workers that build
  examples in batches never load it.
"""

from __future__ import annotations

import bisect
import collections
import csv
import dataclasses
import datetime
import hashlib
import io
import json
import itertools
import math
import random
import re
from typing import (
    AbstractSet,
    Any,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

import orjson

from components.log_config import (
    EVENT_FIELDS,
    EVENT_TYPES,
    ITEM_FIELDS,
    TIMESTAMP_UNITS,
    LogConfig,
    field_map,
)
from trainer import features as F

REQUIRED_EVENT_FIELDS = ("event_id", "event_type", "user_id", "item_id", "timestamp")
REQUIRED_ITEM_FIELDS = ("item_id", "title", "category")
MAX_FIELD_CHARS = 10_000
MAX_LIST_VALUES = 100  # values kept of a multi-valued item field
# Past reviews in an example's user text: the newest few, each cut to this length.
REVIEWS_KEPT = 3
REVIEW_CHARS = 300
# Control characters but the tab: each becomes a space in a text field.
_CONTROL_CHARS = re.compile("[\x00-\x08\x0a-\x1f]")
_BIG = 2.0**63  # orjson reads integers past 64 bits as floats, this large or larger
# Events at the same second are applied impression first, then its outcomes.
TYPE_ORDER = {t: i for i, t in enumerate(EVENT_TYPES)}


class BadRecord(ValueError):
    """A record that cannot be used, with a short reason code for counting."""

    def __init__(self, reason: str, detail: str, source: str = ""):
        self.reason, self.detail, self.source = reason, detail, source
        where = f" in {source}" if source else ""
        super().__init__(f"{reason}{where}: {detail}")


@dataclasses.dataclass(frozen=True)
class CatalogItem:
    title: str
    description: str
    category: str


# --- decoding --------------------------------------------------------------


def _loads(line: str) -> Any:
    """``json.loads(line)``, by orjson (4x faster) where it gives the same: a
    flat object with no float past 2**63 (orjson reads an integer past 64
    bits as a float). Anything else, and what orjson refuses (NaN, 1e400, a
    lone surrogate, deep nesting), is read by ``json``."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)
    if type(value) is not dict:
        return json.loads(line)
    for v in value.values():
        kind = type(v)
        if kind is float:
            if not -_BIG < v < _BIG:
                return json.loads(line)
        elif kind is list or kind is dict:
            return json.loads(line)
    return value


def decode_json(line: str, source: str = "") -> Dict[str, Any]:
    try:
        record = _loads(line)
    except ValueError as e:
        raise BadRecord("unparseable", f"not JSON ({e}): {line[:200]!r}", source) from None
    except RecursionError:
        raise BadRecord("unparseable", f"JSON nested too deeply: {line[:200]!r}", source) from None
    if not isinstance(record, dict):
        raise BadRecord("unparseable", f"not a JSON object: {line[:200]!r}", source)
    return record


def decode_csv(
    line: str, header: Sequence[str], source: str = "", delimiter: str = ","
) -> Dict[str, Any]:
    try:
        rows = list(csv.reader(io.StringIO(line), strict=True, delimiter=delimiter))
    except csv.Error as e:
        raise BadRecord("unparseable", f"not CSV ({e}): {line[:200]!r}", source) from None
    if len(rows) != 1 or len(rows[0]) != len(header):
        raise BadRecord(
            "unparseable", f"expected {len(header)} CSV columns: {line[:200]!r}", source
        )
    return {name: (value if value != "" else None) for name, value in zip(header, rows[0])}


# --- normalisation ---------------------------------------------------------


def _text(
    record: Mapping, source_name: str, field: str, source: str, required: bool
) -> Optional[str]:
    value = record.get(source_name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        value = None
    elif isinstance(value, (str, int)) and not isinstance(value, bool):
        value = str(value).strip()
    else:
        raise BadRecord(
            f"bad_{field}",
            f"field {source_name!r} has a {type(value).__name__}, "
            f"expected a string: {_show(record)}",
            source,
        )
    if not value:
        if required:
            raise BadRecord(
                f"missing_{field}", f"lacks required field {source_name!r}: {_show(record)}", source
            )
        return None
    if len(value) > MAX_FIELD_CHARS:
        raise BadRecord(
            f"bad_{field}",
            f"field {source_name!r} is longer than {MAX_FIELD_CHARS} characters",
            source,
        )
    if _CONTROL_CHARS.search(value):
        value = _CONTROL_CHARS.sub(" ", value)
    return value


def _plain_text(value: Any) -> bool:
    """A non-empty string ``_text`` would keep as it is: no outer whitespace,
    no control character, not too long."""
    return (
        type(value) is str
        and 0 < len(value) <= MAX_FIELD_CHARS
        and value.isprintable()
        and not value[0].isspace()
        and not value[-1].isspace()
    )


def _show(record: Mapping) -> str:
    return json.dumps(record, default=str)[:200]


def parse_timestamp(value: Any, unit: str = "s") -> int:
    """Seconds since the epoch from an int, a float (or a number in a string)
    in ``unit`` (s, ms, us), an ISO-8601 string or a datetime (Parquet
    timestamp columns; naive ones are taken as UTC)."""
    divisor = TIMESTAMP_UNITS[unit]
    if isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return int(value.timestamp())
    if isinstance(value, (int, float)):
        if math.isnan(value) or math.isinf(value):
            raise ValueError("not a finite number")
        return int(value) // divisor if isinstance(value, int) else int(value / divisor)
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=datetime.timezone.utc)
            return int(parsed.timestamp())
        if not math.isfinite(number):
            raise ValueError("not a finite number")
        return int(text) // divisor if text.lstrip("-").isdigit() else int(number / divisor)
    raise ValueError(f"a {type(value).__name__} is not a timestamp")


def derived_event_id(record: Mapping) -> str:
    """An event id from a hash of every field of the row: identical rows, identical ids."""
    text = json.dumps(record, sort_keys=True, default=str, ensure_ascii=False)
    return "h" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


_FIELDS_READ: Dict[Tuple[int, bool, bool], Tuple[Mapping[str, str], Tuple]] = {}


def _fields_read(config: LogConfig, names: Mapping[str, str]) -> Tuple[Tuple[str, str, bool], ...]:
    """(field, its name in the record, required) of the text fields an event
    row is read for; kept per ``names`` mapping (one per parser)."""
    reads_type = not config.row_implies and config.event_type_constant is None
    key = (id(names), config.derive_event_ids, reads_type)
    cached = _FIELDS_READ.get(key)
    if cached is not None and cached[0] is names:
        return cached[1]
    read = ["user_id", "item_id", "session_id", "review_text"]
    if not config.derive_event_ids:
        read.append("event_id")
    if reads_type:
        read.append("event_type")
    fields = tuple((f, names[f], f in REQUIRED_EVENT_FIELDS) for f in read)
    if len(_FIELDS_READ) > 64:
        _FIELDS_READ.clear()
    _FIELDS_READ[key] = (names, fields)
    return fields


def _read_fields(
    record: Mapping, config: LogConfig, source: str, names: Mapping[str, str]
) -> Dict[str, Any]:
    event = {}
    for f, name, required in _fields_read(config, names):
        value = record.get(name)
        if value is None and not required:
            event[f] = None
        elif _plain_text(value):  # the common case, already clean: what ``_text`` returns
            event[f] = value
        else:
            event[f] = _text(record, name, f, source, required)
    if event["review_text"] is None:
        del event["review_text"]
    if config.derive_event_ids:
        event["event_id"] = derived_event_id(record)
    if config.row_implies:
        event["event_type"] = "rating" if "rating" in config.row_implies else "impression"
    elif config.event_type_constant is not None:
        event["event_type"] = config.event_type_constant
    return event


def normalize_event(
    record: Mapping,
    config: LogConfig,
    max_timestamp: int,
    source: str = "",
    names: Optional[Mapping[str, str]] = None,
) -> Dict[str, Any]:
    """Maps and checks one event record; raises BadRecord naming the field.
    ``names``: ``field_map(config.event_field_map, EVENT_FIELDS)``, when the
    caller keeps it.

    With ``config.row_implies`` the record is one row of its implied events
    (``implied_events`` spells them out); its type reads ``rating`` when a
    rating is among them, ``impression`` otherwise."""
    names = names or field_map(config.event_field_map, EVENT_FIELDS)
    event = _read_fields(record, config, source, names)
    if record.get(names["timestamp"]) in (None, ""):
        raise BadRecord(
            "missing_timestamp",
            f"lacks required field {names['timestamp']!r}: {_show(record)}",
            source,
        )
    implies = config.type_implies.get(event["event_type"])
    if implies:
        event["implies"] = tuple(implies)
        kind = "rating" if "rating" in implies else implies[0]
    else:
        kind = config.event_type_map.get(event["event_type"], event["event_type"])
    if kind not in EVENT_TYPES:
        raise BadRecord(
            "bad_event_type",
            f"event {event['event_id']!r} has type "
            f"{event['event_type']!r}; expected one of {EVENT_TYPES}",
            source,
        )
    event["event_type"] = kind
    try:
        timestamp = parse_timestamp(record[names["timestamp"]], config.timestamp_unit)
    except (ValueError, OverflowError, OSError) as e:
        raise BadRecord(
            "bad_timestamp",
            f"event {event['event_id']!r} has timestamp {record[names['timestamp']]!r} ({e})",
            source,
        ) from None
    if not config.min_timestamp <= timestamp <= max_timestamp:
        raise BadRecord(
            "timestamp_out_of_range",
            f"event {event['event_id']!r} has timestamp "
            f"{timestamp}, outside {config.min_timestamp}..{max_timestamp}",
            source,
        )
    event["timestamp"] = timestamp
    if kind == "rating":
        raw = record.get(names["rating"])
        try:
            rating = float(raw) if not isinstance(raw, bool) else math.nan
        except (TypeError, ValueError):
            rating = math.nan
        if not config.rating_min <= rating <= config.rating_max:
            raise BadRecord(
                "bad_rating",
                f"rating event {event['event_id']!r} has rating {raw!r}; expected a number in "
                f"{config.rating_min:g}..{config.rating_max:g}",
                source,
            )
        event["rating"] = rating
    return event


def implied_events(event: Dict[str, Any], config: LogConfig) -> List[Dict[str, Any]]:
    """The events one normalized row stands for (``config.row_implies``, or
    ``type_implies`` for its type), each with its own id (``<row id>:<type>``);
    the row itself when it implies none. A review stays on one of them (the
    rating, else the last), never on the impression."""
    kinds = list(event.pop("implies", None) or config.row_implies)
    if not kinds:
        return [event]
    threshold = config.purchase_min_rating
    if threshold is not None and event["rating"] >= threshold and "purchase" not in kinds:
        kinds.append("purchase")
    review_kind = "rating" if "rating" in kinds else kinds[-1]
    events = []
    for kind in kinds:
        implied = {**event, "event_type": kind, "event_id": f"{event['event_id']}:{kind}"}
        if kind != "rating":
            implied.pop("rating", None)
        if kind != review_kind or kind == "impression":
            implied.pop("review_text", None)
        events.append(implied)
    return events


_END = object()  # an exhausted iterator's marker in ``list_values``


def list_values(value: Any, delimiter: Optional[str] = None) -> List[str]:
    """A multi-valued field's values, in order, without blanks or repeats: a
    list's items (nested lists flattened, however deep), or a string split at
    ``delimiter`` (the whole string without one). At most ``MAX_LIST_VALUES``."""
    values: List[str] = []
    stack = [iter([value])]  # iterative, so no nesting depth can overflow the stack
    while stack and len(values) < MAX_LIST_VALUES:
        v = next(stack[-1], _END)
        if v is _END:
            stack.pop()
        elif isinstance(v, (list, tuple)):
            stack.append(iter(v))
        elif v is not None and not isinstance(v, (bool, dict)):
            text = str(v)
            for part in text.split(delimiter) if delimiter else [text]:
                part = part.strip()
                if part and part not in values and len(values) < MAX_LIST_VALUES:
                    values.append(part)
    return values


def normalize_item(record: Mapping, config: LogConfig, source: str = "") -> Tuple[str, CatalogItem]:
    """Maps and checks one catalogue record into (item_id, CatalogItem).

    A multi-valued category (a list, or a string split at
    ``item_list_delimiters["category"]``) gives its first value as the
    category; all values, then the tags', join the description as words."""
    names = field_map(config.item_field_map, ITEM_FIELDS)
    record = dict(record)
    delimiters = config.item_list_delimiters
    categories = record.get(names["category"])
    if isinstance(categories, (list, tuple)) or "category" in delimiters:
        categories = list_values(categories, delimiters.get("category"))
        record[names["category"]] = categories[0] if categories else None
    else:
        categories = []
    values = {
        f: _text(record, names[f], f, source, f in REQUIRED_ITEM_FIELDS)
        for f in ("item_id", "title", "description", "category")
    }
    tags = list_values([categories, list_values(record.get(names["tags"]), delimiters.get("tags"))])
    description = " ".join([values["description"] or "", *tags]).strip()[:MAX_FIELD_CHARS]
    return values["item_id"], CatalogItem(values["title"], description, values["category"])


def normalize_user(record: Mapping, config: LogConfig, source: str = "") -> Tuple[str, str]:
    """(user_id, profile text): every other field of the user table as "name value" words."""
    id_name = config.user_field_map.get("user_id", "user_id")
    user_id = _text(record, id_name, "user_id", source, True)
    parts = [
        f"{k} {v}"
        for k, v in sorted(record.items())
        if k != id_name and v not in (None, "") and isinstance(v, (str, int, float))
    ]
    return user_id, " ".join(parts)[:MAX_FIELD_CHARS]


# --- examples ----------------------------------------------------------------


@dataclasses.dataclass
class _Impression:
    event: Dict[str, Any]
    item: CatalogItem
    history_ids: List[str]
    history_titles: List[str]
    history_categories: List[str]
    reviews: Tuple[str, ...] = ()  # the user's past reviews, newest first
    click: int = 0
    click_time: Optional[int] = None
    purchase: int = 0
    rating: float = 0.0
    rating_weight: float = 0.0


@dataclasses.dataclass(frozen=True)
class NegativePool:
    """The items negatives are drawn from (sorted ids), uniformly or, with
    ``cumulative`` weights, in proportion to each item's weight."""

    ids: Tuple[str, ...]
    cumulative: Optional[Tuple[float, ...]] = None

    @classmethod
    def uniform(cls, item_ids: Iterable[str]) -> "NegativePool":
        return cls(tuple(sorted(item_ids)))

    @classmethod
    def by_popularity(cls, counts: Mapping[str, int]) -> "NegativePool":
        """Weighted by ``counts`` (e.g. each item's impressions); items counted 0 never drawn."""
        ids = tuple(sorted(i for i, n in counts.items() if n > 0))
        return cls(ids, tuple(itertools.accumulate(float(counts[i]) for i in ids)))

    def draw(self, rng: random.Random) -> str:
        if self.cumulative is None:
            return self.ids[rng.randrange(len(self.ids))]
        point = rng.random() * self.cumulative[-1]
        return self.ids[min(bisect.bisect_right(self.cumulative, point), len(self.ids) - 1)]


def sampled_negatives(
    impressions: Sequence[Dict[str, Any]],
    known: AbstractSet[str],
    pool: NegativePool,
    config: LogConfig,
    counts: collections.Counter,
) -> List[Dict[str, Any]]:
    """``config.negatives_per_positive`` unclicked impressions per (kept)
    impression of one user: items drawn from ``pool``, never one in ``known``
    (every item the user interacted with), seeded by the user, the row and
    ``negative_seed``. A negative carries no review (it was never shown).
    Draws the pool cannot give (it holds too few other items) are counted as
    ``negatives_unavailable``."""
    wanted = config.negatives_per_positive
    negatives = []
    for event in impressions:
        key = f"{config.negative_seed}:{event['user_id']}:{event['event_id']}"
        rng = random.Random(int(hashlib.sha256(key.encode()).hexdigest()[:16], 16))
        chosen: List[str] = []
        for _ in range(20 * wanted if pool.ids else 0):
            if len(chosen) == wanted:
                break
            item_id = pool.draw(rng)
            if item_id not in known and item_id not in chosen:
                chosen.append(item_id)
        if len(chosen) < wanted:
            counts["negatives_unavailable"] += wanted - len(chosen)
        counts["sampled_negatives"] += len(chosen)
        shown = {k: v for k, v in event.items() if k != "review_text"}
        for n, item_id in enumerate(chosen):
            negatives.append(
                {**shown, "item_id": item_id, "event_id": f"{event['event_id']}:negative{n}"}
            )
    return negatives


def sort_key(event: Mapping[str, Any]) -> Tuple[int, int, str]:
    """An event's place in its user's timeline: time, then impression before
    its outcomes, then id."""
    return (event["timestamp"], TYPE_ORDER[event["event_type"]], event["event_id"])


def place(event: Mapping[str, Any]) -> Tuple[int, int]:
    """(timestamp, type order): what decides which copy of an event id is kept."""
    return (event["timestamp"], TYPE_ORDER[event["event_type"]])


def _content(event: Mapping[str, Any]) -> str:
    return json.dumps(event, sort_keys=True, default=str)


def kept_copies(
    events: Sequence[Dict[str, Any]],
    kept_at: Optional[Mapping[str, Tuple[int, int]]] = None,
) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """(kept, dropped), each in the order given: every event id once, its
    earliest copy (``sort_key``; among copies at the same place, the least by
    content, so every walk that sees them keeps the same one). ``kept_at``:
    event id -> (timestamp, type order) of the kept copy, for ids whose
    copies are not all in ``events``; a copy elsewhere is never kept here."""
    best: Dict[str, Dict[str, Any]] = {}
    for event in events:
        event_id = event["event_id"]
        if kept_at and event_id in kept_at:
            if place(event) != tuple(kept_at[event_id]):
                continue
        first = best.get(event_id)
        if first is None:
            best[event_id] = event
            continue
        here, there = sort_key(event), sort_key(first)
        if here < there or (here == there and _content(event) < _content(first)):
            best[event_id] = event
    if len(best) == len(events):
        return list(events), []
    kept: List[Dict[str, Any]] = []
    dropped: List[Dict[str, Any]] = []
    for event in events:
        (kept if best.get(event["event_id"]) is event else dropped).append(event)
    return kept, dropped


@dataclasses.dataclass(frozen=True)
class WalkWindow:
    """The part of a user's timeline one walk answers for, and what the walk
    needs from before it (``time_buckets`` cuts timelines into such windows).

    The walk sees the events from ``emit[0]`` on. Impressions in ``emit``
    become examples and dropped copies there are counted; outcomes in
    ``orphans`` that match no impression are counted as orphans. ``history``
    (oldest first) and ``reviews`` (newest first) are the user's state before
    the window; ``known_items`` every item of the user's whole timeline.
    ``None`` bounds are open."""

    emit: Tuple[Optional[int], Optional[int]] = (None, None)
    orphans: Tuple[Optional[int], Optional[int]] = (None, None)
    history: Tuple[Tuple[str, str, str], ...] = ()
    reviews: Tuple[str, ...] = ()
    known_items: Optional[AbstractSet[str]] = None


WHOLE_TIMELINE = WalkWindow()


def _within(ts: int, bounds: Tuple[Optional[int], Optional[int]]) -> bool:
    low, high = bounds
    return (low is None or ts >= low) and (high is None or ts < high)


def user_examples(*args, **kwargs) -> Iterator[Tuple[int, str, Any]]:
    """Yields (timestamp, event_id, tf.train.Example) per impression of one
    user: ``user_example_values`` (same arguments) as protos, one at a time."""
    for ts, event_id, values in user_example_values(*args, **kwargs):
        yield ts, event_id, to_example(values)


def user_example_values(
    events: Iterable[Dict[str, Any]],
    catalog: Mapping[str, CatalogItem],
    config: LogConfig,
    user_profile: str = "",
    counts: Optional[collections.Counter] = None,
    duplicates: Optional[List[Dict[str, Any]]] = None,
    negative_pool: Optional[NegativePool] = None,
    window: WalkWindow = WHOLE_TIMELINE,
    kept_at: Optional[Mapping[str, Tuple[int, int]]] = None,
) -> Iterator[Tuple[int, str, Dict[str, Any]]]:
    """Yields (timestamp, event_id, feature values) per impression of one user
    (``example_values``: one value, or a list, per ``F.RAW_FEATURES`` name).

    * click: a click on the same item within ``click_window_seconds`` after the
      impression (and in the same session when both carry one);
    * purchase (conversion): a purchase of a clicked item within
      ``conversion_window_seconds`` after the click;
    * rating: a rating of the item within the conversion window, weight 1.
    An outcome goes to the newest impression it fits, so the labels of the
    impressions from a time on depend on no event before it: a walk may
    start anywhere (``window``) and give the whole walk's examples there.
    Impressions without a click are negatives (with ``negatives_per_positive``,
    sampled ones join them: ``sampled_negatives``, from ``negative_pool``).
    Reviews (``review_text``) are the user's text for later impressions only:
    the newest ``REVIEWS_KEPT`` before it, after the user's profile.
    Duplicate event ids are dropped and counted (and appended to
    ``duplicates`` when given: ``kept_copies`` says which copy stays);
    outcomes that match no impression are counted as orphans. The history is
    the last ``history_length`` clicked items strictly before the impression.
    """
    counts = counts if counts is not None else collections.Counter()
    events = list(events)
    ordered, dropped = kept_copies(sorted(events, key=sort_key), kept_at)
    for event in dropped:
        if _within(event["timestamp"], window.emit):
            counts["duplicate_events"] += 1
            if duplicates is not None:
                duplicates.append(event)
    if config.negatives_per_positive:
        pool = negative_pool or NegativePool.uniform(catalog)
        known = window.known_items
        if known is None:
            known = {e["item_id"] for e in events}
        shown = [
            e
            for e in ordered
            if e["event_type"] == "impression" and _within(e["timestamp"], window.emit)
        ]
        ordered = sorted(
            ordered + sampled_negatives(shown, known, pool, config, counts), key=sort_key
        )
    horizon = config.click_window_seconds + config.conversion_window_seconds
    history: collections.deque = collections.deque(
        window.history, maxlen=max(config.history_length, 1)
    )
    pending: collections.deque = collections.deque()  # impressions still open for labels
    by_item: Dict[str, List[_Impression]] = collections.defaultdict(list)
    reviews: collections.deque = collections.deque(window.reviews, maxlen=REVIEWS_KEPT)

    def flush(before: Optional[int]):
        while pending and (before is None or pending[0].event["timestamp"] + horizon < before):
            imp = pending.popleft()
            same_item = by_item[imp.event["item_id"]]
            same_item.remove(imp)
            if not same_item:
                del by_item[imp.event["item_id"]]
            if not _within(imp.event["timestamp"], window.emit):
                continue  # a later window's impression, here as a candidate only
            counts["examples"] += 1
            yield imp.event["timestamp"], imp.event["event_id"], example_values(imp, user_profile)

    for event in ordered:
        ts = event["timestamp"]
        if pending and pending[0].event["timestamp"] + horizon < ts:
            yield from flush(ts)
        item = catalog[event["item_id"]]
        kind = event["event_type"]
        if kind == "impression":
            recent = list(history)[-config.history_length :] if config.history_length else []
            imp = _Impression(
                event,
                item,
                [i for i, _, _ in recent],
                [t for _, t, _ in recent],
                sorted({c for _, _, c in recent}),
                tuple(reviews),
            )
            pending.append(imp)
            by_item[event["item_id"]].append(imp)
            _remember_review(reviews, event)
            continue
        imp = _match(by_item.get(event["item_id"], ()), event, config)
        if imp is None:
            if _within(ts, window.orphans):
                counts[f"orphan_{kind}"] += 1
        elif kind == "click":
            imp.click, imp.click_time = 1, ts
        elif kind == "purchase":
            imp.purchase = 1
        else:
            imp.rating, imp.rating_weight = event["rating"], 1.0
        if kind == "click":
            history.append((event["item_id"], item.title, item.category))
        _remember_review(reviews, event)
    yield from flush(None)


def _remember_review(reviews: collections.deque, event: Dict[str, Any]) -> None:
    text = event.get("review_text")
    if text:
        reviews.appendleft(text[:REVIEW_CHARS])


def user_text(profile: str, reviews: Sequence[str]) -> str:
    """An example's user text: the profile, then the past reviews, newest first."""
    parts = [profile] if profile else []
    if reviews:
        parts.append("reviews: " + F.HISTORY_SEPARATOR.join(reviews))
    return F.HISTORY_SEPARATOR.join(parts)


def _match(
    candidates: Sequence[_Impression], event: Dict, config: LogConfig
) -> Optional[_Impression]:
    """The latest open impression of the item that this outcome event belongs to."""
    ts, kind, session = event["timestamp"], event["event_type"], event.get("session_id")
    for imp in reversed(candidates):
        imp_session = imp.event.get("session_id")
        if session and imp_session and session != imp_session:
            continue
        if kind == "click":
            if imp.click == 0 and ts - imp.event["timestamp"] <= config.click_window_seconds:
                return imp
        elif kind == "purchase":
            if (
                imp.click
                and imp.purchase == 0
                and ts - imp.click_time <= config.conversion_window_seconds
            ):
                return imp
        elif imp.rating_weight == 0.0 and ts - imp.event["timestamp"] <= (
            config.click_window_seconds + config.conversion_window_seconds
        ):
            return imp
    return None


def example_values(imp: _Impression, user_profile: str) -> Dict[str, Any]:
    """One example's feature values by ``F.RAW_FEATURES`` name: a list for the
    varlen features, one value for the others."""
    return {
        F.EVENT_ID: imp.event["event_id"],
        F.TIMESTAMP: imp.event["timestamp"],
        F.USER_ID: imp.event["user_id"],
        F.ITEM_ID: imp.event["item_id"],
        F.ITEM_TITLE: imp.item.title,
        F.ITEM_DESCRIPTION: imp.item.description,
        F.ITEM_CATEGORY: imp.item.category,
        F.HISTORY_TITLES: F.HISTORY_SEPARATOR.join(imp.history_titles),
        F.HISTORY_ITEM_IDS: imp.history_ids,
        F.HISTORY_CATEGORIES: imp.history_categories,
        F.USER_PROFILE: user_text(user_profile, imp.reviews),
        F.CLICK: imp.click,
        F.PURCHASE: imp.purchase,
        F.RATING: imp.rating,
        F.RATING_WEIGHT: imp.rating_weight,
        F.IMPRESSION_WEIGHT: 1.0,
    }


def to_example(values: Mapping[str, Any]):
    """``example_values`` as a ``tf.train.Example``, built in Python."""
    import tensorflow as tf

    feature = {}
    for spec in F.RAW_FEATURES:
        value = values[spec.name]
        items = value if isinstance(value, list) else [value]
        if spec.dtype == "string":
            feature[spec.name] = tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[v.encode("utf-8", "replace") for v in items])
            )
        elif spec.dtype == "int":
            feature[spec.name] = tf.train.Feature(
                int64_list=tf.train.Int64List(value=[int(v) for v in items])
            )
        else:
            feature[spec.name] = tf.train.Feature(
                float_list=tf.train.FloatList(value=[float(v) for v in items])
            )
    return tf.train.Example(features=tf.train.Features(feature=feature))
