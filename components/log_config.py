"""Configuration of interaction-log ingestion: where the logs are, their
format, how their fields map to ours, labels, splits and bad-row limits.

A user's own log format needs only a different ``LogConfig``, no code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Dict, Mapping, Optional, Tuple

from trainer import features as F

FORMATS = ("auto", "jsonl", "csv", "parquet")
EVENT_TYPES = ("impression", "click", "purchase", "rating")
TIMESTAMP_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000}
NEGATIVE_SAMPLING = ("uniform", "popularity")
INPUTS = ("events", "catalog", "users")  # keys of the per-input CSV settings
SPLIT_KINDS = ("time", "random")

# Canonical field names of the three inputs.
EVENT_FIELDS = (
    "event_id",
    "event_type",
    "user_id",
    "item_id",
    "timestamp",
    "session_id",
    "rating",
    "review_text",
)
ITEM_FIELDS = ("item_id", "title", "description", "category", "tags")
USER_FIELDS = ("user_id",)


def stable_fraction(key: str) -> float:
    """A number in [0, 1] from a hash of ``key``: the same on every run and worker."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """Time split (train on the past, evaluate on the latest window) or random.

    Time split: examples at or after ``split_timestamp`` go to eval; without
    one, the cut is at ``1 - eval_fraction`` of the time span of the events.
    Random split: a hash of the event id sends ``eval_fraction`` to eval.
    Cold items: a hash of the item id picks ``cold_item_fraction`` of the
    items, and every impression of theirs goes to eval, so training never sees
    them interact (they may still appear in later impressions' histories);
    the evaluation of new-item quality.
    """

    kind: str = "time"
    eval_fraction: float = 0.2
    split_timestamp: Optional[int] = None
    cold_item_fraction: float = 0.0

    def __post_init__(self):
        if self.kind not in SPLIT_KINDS:
            raise ValueError(f"split kind {self.kind!r}: expected one of {SPLIT_KINDS}")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction {self.eval_fraction}: expected 0 < x < 1")
        if not 0.0 <= self.cold_item_fraction < 1.0:
            raise ValueError(f"cold_item_fraction {self.cold_item_fraction}: expected 0 <= x < 1")

    def is_cold_item(self, item_id: str) -> bool:
        """Whether ``item_id`` is held out of training entirely."""
        return self.cold_item_fraction > 0 and stable_fraction(item_id) < self.cold_item_fraction


@dataclasses.dataclass(frozen=True)
class LogConfig:
    """Everything the interaction-log ExampleGen needs to know about its input."""

    # May name spans, TFX's way: events/{YYYY}-{MM}-{DD}/* or events/span-{SPAN}/*.
    events_pattern: str = "events/*"
    events_format: str = "auto"
    # The catalogue and user table may name spans too: each span is a whole
    # snapshot, and a run reads the newest (components/spans.newest_snapshot).
    catalog_pattern: str = "items.*"
    catalog_format: str = "auto"
    users_pattern: Optional[str] = None
    users_format: str = "auto"
    # Canonical name -> name in the user's files; unnamed fields map to themselves.
    event_field_map: Mapping[str, str] = dataclasses.field(default_factory=dict)
    item_field_map: Mapping[str, str] = dataclasses.field(default_factory=dict)
    user_field_map: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # The user's event type names -> ours (impression, click, purchase, rating).
    event_type_map: Mapping[str, str] = dataclasses.field(default_factory=dict)
    history_length: int = 10
    click_window_seconds: int = 3600
    conversion_window_seconds: int = 7 * 86400
    min_timestamp: int = 631152000  # 1990-01-01
    max_future_seconds: int = 86400  # beyond "now" + this is out of range
    max_bad_fraction: float = 0.01
    # With span specs in events_pattern: how many of the newest spans a run reads.
    span_window: int = 1
    split: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    # Logs whose rows each stand for several events, all at the row's time:
    # ("impression", "click", "rating") for explicit ratings of consumed items,
    # ("impression", "click", "purchase") for purchases only, ("impression",
    # "click") for plays or views only. Empty: each row is one event (its type).
    row_implies: Tuple[str, ...] = ()
    # The same per event type of the log: e.g. {"view": ["impression", "click"]}
    # for a log of page views and purchases (RetailRocket's view/transaction).
    # Types not named here are single events, as event_type_map says.
    type_implies: Mapping[str, Tuple[str, ...]] = dataclasses.field(default_factory=dict)
    # Numeric timestamps in seconds ("s"), milliseconds ("ms") or microseconds ("us").
    timestamp_unit: str = "s"
    # With "rating" in row_implies: a rating at or above this also implies a purchase.
    purchase_min_rating: Optional[float] = None
    # Every row has this event type (a log without a type field).
    event_type_constant: Optional[str] = None
    # Event ids from a hash of the row's fields (a log without ids): a re-sent
    # identical row gets the same id, so it is still a duplicate.
    derive_event_ids: bool = False
    # The range of the log's ratings (e.g. 0.5..5, 1..10); ratings outside it are
    # dead-lettered (a step such as half stars is not checked).
    rating_min: float = F.DEFAULT_RATING_RANGE[0]
    rating_max: float = F.DEFAULT_RATING_RANGE[1]
    # For logs without impressions (row_implies): unclicked impressions sampled
    # per row, uniformly over the catalogue, never an item the user interacted
    # with, the same on every run for the same seed.
    negatives_per_positive: int = 0
    negative_seed: int = 0
    # "uniform" over the catalogue, or "popularity": in proportion to each item's
    # implied impressions in the whole log (harder negatives, as in word2vec).
    negative_sampling: str = "uniform"
    # CSV files: the field separator and, for files without a header row, the
    # column names, per input ("events", "catalog", "users"); e.g. MovieLens'
    # u.data: {"events": "\t"} and {"events": ["user_id", "item_id", "rating", "timestamp"]}.
    csv_delimiters: Mapping[str, str] = dataclasses.field(default_factory=dict)
    csv_columns: Mapping[str, Tuple[str, ...]] = dataclasses.field(default_factory=dict)
    # Item fields holding several values in one string, with their separator:
    # e.g. {"category": "|", "tags": "|"} for "Action|Comedy". JSON and Parquet
    # lists (nested ones too) need no entry. A multi-valued category's first
    # value is the item's category; every value is also a tag.
    item_list_delimiters: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Each user's timeline is cut into buckets of this many seconds (at least
    # the label horizon, ``label_horizon``): the example walk holds one bucket
    # of a shard's users at a time, however long or busy a user's timeline.
    time_bucket_seconds: int = 91 * 86400

    @property
    def label_horizon(self) -> int:
        """Seconds after an impression in which its outcomes can come: the
        click window plus the conversion window."""
        return max(0, self.click_window_seconds + self.conversion_window_seconds)

    @property
    def bucket_seconds(self) -> int:
        """The width of a time bucket: ``time_bucket_seconds``, or the label
        horizon when that is longer."""
        return max(self.time_bucket_seconds, self.label_horizon, 1)

    def __post_init__(self):
        for name in ("events_format", "catalog_format", "users_format"):
            if getattr(self, name) not in FORMATS:
                raise ValueError(f"{name} {getattr(self, name)!r}: expected one of {FORMATS}")
        for name, allowed in (("event_field_map", EVENT_FIELDS), ("item_field_map", ITEM_FIELDS)):
            unknown = sorted(set(getattr(self, name)) - set(allowed))
            if unknown:
                raise ValueError(f"{name} maps unknown fields {unknown}; known: {list(allowed)}")
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction {self.max_bad_fraction}: expected 0..1")
        if self.history_length < 0:
            raise ValueError("history_length must be >= 0")
        for name in ("click_window_seconds", "conversion_window_seconds", "time_bucket_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} {value!r}: expected whole seconds >= 0")
        if (
            isinstance(self.span_window, bool)
            or not isinstance(self.span_window, int)
            or (self.span_window < 1)
        ):
            raise ValueError(f"span_window {self.span_window!r}: expected a count >= 1")
        self._check_row_shape()

    def _check_row_shape(self) -> None:
        if self.timestamp_unit not in TIMESTAMP_UNITS:
            raise ValueError(
                f"timestamp_unit {self.timestamp_unit!r}: expected one of {list(TIMESTAMP_UNITS)}"
            )
        for name, kinds in self.type_implies.items():
            kinds = list(kinds)
            if not kinds or sorted(set(kinds) - set(EVENT_TYPES)) or len(set(kinds)) != len(kinds):
                raise ValueError(
                    f"type_implies[{name!r}] {kinds}: expected distinct event types from "
                    f"{list(EVENT_TYPES)}"
                )
        if self.type_implies and (self.row_implies or self.event_type_constant):
            raise ValueError(
                "type_implies is for logs with an event type: not with row_implies "
                "or event_type_constant"
            )
        implied = list(self.row_implies)
        unknown = sorted(set(implied) - set(EVENT_TYPES))
        if unknown or len(set(implied)) != len(implied):
            raise ValueError(
                f"row_implies {implied}: expected distinct event types from {list(EVENT_TYPES)}"
            )
        if implied and "impression" not in implied:
            raise ValueError(f"row_implies {implied} must include 'impression'")
        if implied and self.event_type_constant:
            raise ValueError("set row_implies or event_type_constant, not both")
        if self.event_type_constant is not None:
            kind = self.event_type_map.get(self.event_type_constant, self.event_type_constant)
            if kind not in EVENT_TYPES:
                raise ValueError(
                    f"event_type_constant {self.event_type_constant!r}: expected one of "
                    f"{list(EVENT_TYPES)} (or a name event_type_map maps to one)"
                )
        if not (math.isfinite(self.rating_min) and math.isfinite(self.rating_max)) or not (
            self.rating_min < self.rating_max
        ):
            raise ValueError(
                f"rating_min {self.rating_min} and rating_max {self.rating_max}: expected "
                "finite numbers with rating_min < rating_max"
            )
        if self.negatives_per_positive < 0:
            raise ValueError(
                f"negatives_per_positive {self.negatives_per_positive}: expected a count >= 0"
            )
        if self.negatives_per_positive and not (implied or self.type_implies):
            raise ValueError(
                "negatives_per_positive samples impressions for logs that have none: it needs "
                "row_implies or type_implies"
            )
        if self.negative_sampling not in NEGATIVE_SAMPLING:
            raise ValueError(
                f"negative_sampling {self.negative_sampling!r}: expected one of "
                f"{list(NEGATIVE_SAMPLING)}"
            )
        self._check_csv()
        if self.purchase_min_rating is not None:
            if "rating" not in implied:
                raise ValueError("purchase_min_rating needs 'rating' in row_implies")
            if not self.rating_min <= self.purchase_min_rating <= self.rating_max:
                raise ValueError(
                    f"purchase_min_rating {self.purchase_min_rating} is outside rating_min.."
                    f"rating_max ({self.rating_min}..{self.rating_max})"
                )

    def _check_csv(self) -> None:
        for name in ("csv_delimiters", "csv_columns"):
            unknown = sorted(set(getattr(self, name)) - set(INPUTS))
            if unknown:
                raise ValueError(f"{name} names unknown inputs {unknown}; known: {list(INPUTS)}")
        for key, delimiter in self.csv_delimiters.items():
            if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '\r\n"':
                raise ValueError(
                    f"csv_delimiters[{key!r}] {delimiter!r}: expected one character "
                    "(not a quote or a line break)"
                )
        for key, columns in self.csv_columns.items():
            if (
                not columns
                or len(set(columns)) != len(columns)
                or not all(isinstance(c, str) and c for c in columns)
            ):
                raise ValueError(
                    f"csv_columns[{key!r}] {list(columns)}: expected distinct, non-empty names"
                )
        unknown = sorted(set(self.item_list_delimiters) - {"category", "tags"})
        if unknown:
            raise ValueError(
                f"item_list_delimiters names {unknown}; only 'category' and 'tags' can hold lists"
            )
        for key, delimiter in self.item_list_delimiters.items():
            if not isinstance(delimiter, str) or not delimiter:
                raise ValueError(f"item_list_delimiters[{key!r}] {delimiter!r}: expected a string")

    def csv_delimiter(self, input_name: str) -> str:
        return self.csv_delimiters.get(input_name, ",")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "LogConfig":
        values = dict(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown log config keys {unknown}; known: {sorted(known)}")
        if isinstance(values.get("split"), Mapping):
            values["split"] = SplitConfig(**values["split"])
        if isinstance(values.get("row_implies"), str):
            raise ValueError(
                f"row_implies must be a list of event types, got the string "
                f"{values['row_implies']!r}"
            )
        if values.get("row_implies") is not None:
            values["row_implies"] = tuple(values["row_implies"])
        _lists_by_key(values, "csv_columns", "inputs to lists of column names")
        _lists_by_key(values, "type_implies", "event type names to lists of event types")
        for name in (
            "csv_delimiters",
            "item_list_delimiters",
            "event_type_map",
            "event_field_map",
            "item_field_map",
            "user_field_map",
        ):
            if name in values and not isinstance(values[name], Mapping):
                raise ValueError(f"{name} must be a JSON object, got {values[name]!r}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str) -> "LogConfig":
        """The config in the JSON file ``path``; ``ValueError`` names the file."""
        try:
            with open(path) as f:
                values = json.load(f)
            if not isinstance(values, dict):
                raise ValueError(f"expected a JSON object, got {type(values).__name__}")
            return cls.from_dict(values)
        except OSError as e:
            raise ValueError(f"--log-config {path!r}: {e.strerror}") from e
        except (ValueError, TypeError) as e:
            raise ValueError(f"--log-config {path!r}: {e}") from e

    @classmethod
    def from_json(cls, text: str) -> "LogConfig":
        return cls.from_dict(json.loads(text))


def _lists_by_key(values: Dict[str, Any], name: str, what: str) -> None:
    """``values[name]`` as {key: tuple}, if given; ``ValueError`` unless it maps keys to lists."""
    lists = values.get(name)
    if lists is None:
        return
    if not isinstance(lists, Mapping) or any(
        isinstance(v, str) or not isinstance(v, (list, tuple)) for v in lists.values()
    ):
        raise ValueError(f"{name} must map {what}, got {lists!r}")
    values[name] = {str(k): tuple(v) for k, v in lists.items()}


def resolve_format(path: str, declared: str) -> str:
    """The file format: as declared, or from the file name (``.gz`` ignored)."""
    if declared != "auto":
        return declared
    name = path.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix, fmt in (
        (".jsonl", "jsonl"),
        (".json", "jsonl"),
        (".ndjson", "jsonl"),
        (".csv", "csv"),
        (".parquet", "parquet"),
    ):
        if name.endswith(suffix):
            return fmt
    raise ValueError(
        f"cannot tell the format of {path!r} from its name; "
        "set the format in the log config (jsonl, csv or parquet)"
    )


def field_map(mapping: Mapping[str, str], fields) -> Dict[str, str]:
    """Canonical -> source name for every canonical field."""
    return {f: mapping.get(f, f) for f in fields}
