"""Configuration of interaction-log ingestion: where the logs are, their
format, how their fields map to ours, labels, splits and bad-row limits.

A user's own log format needs only a different ``LogConfig``, no code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Dict, Mapping, Optional

FORMATS = ("auto", "jsonl", "csv", "parquet")
SPLIT_KINDS = ("time", "random")

# Canonical field names of the three inputs.
EVENT_FIELDS = ("event_id", "event_type", "user_id", "item_id", "timestamp", "session_id", "rating")
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

    events_pattern: str = "events/*"
    events_format: str = "auto"
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
    split: SplitConfig = dataclasses.field(default_factory=SplitConfig)

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
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "LogConfig":
        return cls.from_dict(json.loads(text))


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
