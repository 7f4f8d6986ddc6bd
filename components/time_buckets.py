"""Users' timelines cut into time buckets, so the example walk's memory is
bounded by a bucket, not by the busiest user's whole log.

An event at time ``t`` belongs to bucket ``t // W`` (``W``:
``LogConfig.bucket_seconds``, at least the label horizon ``H``). The walk of
bucket ``k`` (``interaction_logs.user_example_values`` with a
``WalkWindow``) gives exactly what the walk of the whole timeline gives for
the impressions of ``k``:

* labels: an outcome goes to the newest impression it fits, so the labels of
  impressions from ``k``'s start on depend on no earlier event; those of
  impressions near ``k``'s end need the outcomes of the next ``H`` seconds,
  so the events of the first ``H`` seconds of bucket ``k + 1`` come along
  (look-ahead copies, used as candidates and outcomes, never emitted);
* orphans: an outcome at ``t`` can match impressions from ``t - H`` on, all
  in the walk of bucket ``k`` for ``t`` in ``[start + H, end + H)``: each
  outcome is counted there (the first ``H`` seconds of a bucket by the
  bucket before, which for a user's first bucket holds only the copies);
* state from before the bucket: the history (last clicks), the past reviews
  and, for sampled negatives, every item of the user's timeline, from a
  summary of each earlier bucket (``BucketSummaryFn``, ``UserStatesFn``);
* re-sent events: which copy of an event id is kept is decided over all
  its copies (``DuplicateIdsFn``), so every walk that sees one agrees.

Every stage holds one key at a time: a (user shard, bucket); an event-id
shard (1/``NUM_ID_SHARDS`` of all events, four values each, spread evenly
whoever the users are); or one user's bucket summaries (a few entries per
bucket).
"""

from __future__ import annotations

import collections
import zlib
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import apache_beam as beam

from components import interaction_logs as logs
from components.packed_events import unpack
from components.log_config import LogConfig

NUM_SHARDS = 128  # users are grouped into this many keys (per bucket)
NUM_ID_SHARDS = 16  # event ids are grouped into this many keys to find re-sent ones
TYPE_ORDER = logs.TYPE_ORDER
OWN, AHEAD, SUMMED, DROPS, STATES = "own", "ahead", "summed", "drops", "states"

BucketKey = Tuple[int, int]  # (user shard, bucket)


def shard_of(user_id: str, num_shards: int = NUM_SHARDS) -> int:
    """The shard of a user: stable across processes and runs (not Python's ``hash``)."""
    return zlib.crc32(user_id.encode("utf-8", "surrogatepass")) % num_shards


def bucket_of(ts: int, width: int) -> int:
    return ts // width


def ahead_bucket(ts: int, width: int, horizon: int) -> Optional[int]:
    """The bucket before ``ts``'s, when ``ts`` is in the first ``horizon``
    seconds of its own: that bucket's walk needs the event too."""
    own = ts // width
    return own - 1 if ts - own * width < horizon else None


def walk_window(
    bucket: int,
    config: LogConfig,
    catalog: Mapping[str, logs.CatalogItem],
    state: Optional[Sequence[Any]] = None,
) -> logs.WalkWindow:
    """The ``WalkWindow`` of ``bucket`` for a user with ``state`` (from
    ``UserStatesFn``; None: the user has only look-ahead copies there)."""
    width, horizon = config.bucket_seconds, config.label_horizon
    start, end = bucket * width, (bucket + 1) * width
    if state is None:
        return logs.WalkWindow(emit=(start, start), orphans=(start + horizon, end + horizon))
    _, clicked, reviews, items = state
    history = tuple((i, catalog[i].title, catalog[i].category) for i in clicked)
    return logs.WalkWindow(
        emit=(start, end),
        orphans=(start + horizon, end + horizon),
        history=history,
        reviews=tuple(reviews),
        known_items=frozenset(items) if config.negatives_per_positive else None,
    )


class DuplicateIdsFn(beam.DoFn):
    """(event-id shard, packed id records) -> for each event id logged more
    than once: ((user shard, bucket), (user, event id, kept place)) to every
    bucket whose walk sees one of its copies."""

    def __init__(self, config: LogConfig):
        self._width, self._horizon = config.bucket_seconds, config.label_horizon

    def process(self, keyed) -> Iterator[Tuple[BucketKey, Tuple[str, str, List[int]]]]:
        _, packed_batches = keyed
        first: Dict[Tuple[str, str], Tuple[int, int]] = {}
        copies: Dict[Tuple[str, str], List[Tuple[int, int]]] = {}
        for packed in packed_batches:
            for user, event_id, ts, order in unpack(packed):
                key = (user, event_id)
                place = (ts, order)
                seen = first.get(key)
                if seen is None:
                    first[key] = place
                    continue
                copies.setdefault(key, [seen]).append(place)
        for (user, event_id), places in copies.items():
            kept = min(places)
            shard = shard_of(user)
            buckets = set()
            for ts, _ in places:
                buckets.add(bucket_of(ts, self._width))
                ahead = ahead_bucket(ts, self._width, self._horizon)
                if ahead is not None:
                    buckets.add(ahead)
            for bucket in sorted(buckets):
                yield (shard, bucket), (user, event_id, list(kept))


def by_user(packed_batches: Iterable[bytes]) -> Dict[str, List[Dict[str, Any]]]:
    """Packed event batches as each user's events."""
    users: Dict[str, List[Dict[str, Any]]] = collections.defaultdict(list)
    for packed in packed_batches:
        for event in unpack(packed):
            users[event["user_id"]].append(event)
    return users


def kept_places(drops: Iterable[Sequence[Any]]) -> Dict[str, Dict[str, Tuple[int, int]]]:
    """user -> {event id: kept place} from ``DuplicateIdsFn``'s output."""
    out: Dict[str, Dict[str, Tuple[int, int]]] = collections.defaultdict(dict)
    for user, event_id, place in drops:
        out[user][event_id] = (place[0], place[1])
    return out


class BucketSummaryFn(beam.DoFn):
    """((user shard, bucket), {summed, drops}) -> (user, (bucket, clicked
    item ids, reviews, items)) per user with events in the bucket: its last
    ``history_length`` clicks (oldest first), newest ``REVIEWS_KEPT`` reviews
    (newest first) and, with sampled negatives, every item of its events.
    ``summed``: [users of the bucket, their clicks and reviewed events (every
    event with sampled negatives)] per batch; which copy of an id is kept is decided by ``drops``
    (every re-sent id's kept place) and, at one place, by content."""

    def __init__(self, config: LogConfig):
        self._config = config

    def process(self, keyed):
        (_, bucket), groups = keyed
        config = self._config
        keep = max(config.history_length, 1)
        places = kept_places(groups[DROPS])
        users: Dict[str, List[Dict[str, Any]]] = {}
        for packed in groups[SUMMED]:
            present, events = unpack(packed)
            for user in present:
                users.setdefault(user, [])
            for event in events:
                users[event["user_id"]].append(event)
        for user, events in users.items():
            kept, _ = logs.kept_copies(events, places.get(user))
            clicks = sorted((e for e in kept if e["event_type"] == "click"), key=logs.sort_key)
            reviewed = sorted((e for e in kept if e.get("review_text")), key=logs.sort_key)
            reviews = [
                e["review_text"][: logs.REVIEW_CHARS] for e in reviewed[-logs.REVIEWS_KEPT :]
            ]
            items = sorted({e["item_id"] for e in events}) if config.negatives_per_positive else []
            yield user, (bucket, [e["item_id"] for e in clicks[-keep:]], reviews[::-1], items)


class UserStatesFn(beam.DoFn):
    """(user, bucket summaries) -> ((user shard, bucket), (user, clicked item
    ids, reviews, items)) per bucket of the user: the state before it, from
    the summaries of the buckets before (the items: of every bucket)."""

    def __init__(self, config: LogConfig):
        self._config = config

    def process(self, keyed):
        user, summaries = keyed
        keep = max(self._config.history_length, 1)
        shard = shard_of(user)
        ordered = sorted(summaries, key=lambda s: s[0])
        items = sorted({i for s in ordered for i in s[3]})
        clicked: List[str] = []
        reviews: List[str] = []  # newest first
        for bucket, bucket_clicks, bucket_reviews, _ in ordered:
            yield (shard, bucket), (user, list(clicked), list(reviews), items)
            clicked = (clicked + list(bucket_clicks))[-keep:]
            reviews = (list(bucket_reviews) + reviews)[: logs.REVIEWS_KEPT]
