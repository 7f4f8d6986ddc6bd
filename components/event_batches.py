"""InteractionLogExampleGen's Beam stages, a batch of rows per element.

A Beam element costs microseconds of Python however small it is, so the
stages pass batches, not rows:

* ``ReadBatchesFn``: a file -> (file, raw rows) batches of ``BATCH_ROWS``
  (lines as bytes, split as Beam's text source splits them, or Parquet rows
  as dicts);
* ``ParseBatchFn``: a batch -> good events packed per (user shard, time
  bucket) (``time_buckets``), with the look-ahead copies, the summaries'
  events and the event-id records the other passes read; dead letters (one
  per bad row, with its reason), the count of good rows and the time bounds;
* ``BucketExamplesFn``: one key's events -> each user's examples of the
  bucket (``interaction_logs.user_example_values`` over a ``WalkWindow``),
  serialized ``EXAMPLE_BATCH`` at a time by tfx_bsl's C++ encoder
  (``example_columns``), split into train and eval and sent to a random
  output file there (``example_files`` writes them).

A key holds about 1/``NUM_SHARDS`` of the users, one time bucket of each. The
modules imported here import no TensorFlow, so Beam workers start without it.
"""

from __future__ import annotations

import collections
import json
import random
import zlib
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from components import example_columns, example_files
from components import interaction_logs as logs
from components import time_buckets as tb
from components.packed_events import pack
from components.log_config import (
    EVENT_FIELDS,
    LogConfig,
    SplitConfig,
    field_map,
    stable_fraction,
)
from trainer import features as F

NAMESPACE = "interaction_logs"
DEAD = "dead"
COUNTS = "counts"
DUPLICATES = "duplicates"
ROWS = "rows"
BOUNDS = "bounds"
IMPRESSIONS = "impressions"
SPLITS = ("train", "eval")
BATCH_ROWS = 16384  # rows per element out of a file
EXAMPLE_BATCH = 4096  # examples serialized per call of the C++ encoder
AHEAD = "ahead"
SUMMED = "summed"  # the events a bucket's summary reads (time_buckets.BucketSummaryFn)
IDS = "ids"
shard_of = tb.shard_of
_READ_BYTES = 4 << 20


# --- reading -----------------------------------------------------------------


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines of a byte stream as Beam's text source gives them: split at
    ``\\n``, a ``\\r`` before it dropped, a last line without one kept."""
    pending = b""
    for chunk in chunks:
        parts = (pending + chunk).split(b"\n")
        pending = parts.pop()
        for line in parts:
            yield line[:-1] if line.endswith(b"\r") else line
    if pending:
        yield pending


def _chunks(stream) -> Iterator[bytes]:
    while True:
        chunk = stream.read(_READ_BYTES)
        if not chunk:
            return
        yield chunk


def _batched(rows: Iterable[Any], size: int) -> Iterator[List[Any]]:
    batch: List[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class ReadBatchesFn(beam.DoFn):
    """A file path -> (path, rows) batches: lines (bytes; a CSV file's header
    line skipped when ``skip_header``) or, for Parquet, row dicts. Compression
    is read from the file name (``.gz``, ``.bz2``, ...), as Beam's text source does."""

    def __init__(self, fmt: str, skip_header: bool = False, batch_rows: int = BATCH_ROWS):
        self._fmt, self._skip_header, self._batch_rows = fmt, skip_header, batch_rows

    def process(self, path: str) -> Iterator[Tuple[str, List[Any]]]:
        if self._fmt == "parquet":
            import pyarrow.parquet as pq

            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                for batch in pq.ParquetFile(f).iter_batches(batch_size=self._batch_rows):
                    yield path, batch.to_pylist()
            return
        with FileSystems.open(path) as stream:
            lines = split_lines(_chunks(stream))
            if self._skip_header:
                next(lines, None)
            for batch in _batched(lines, self._batch_rows):
                yield path, batch


# --- parsing -----------------------------------------------------------------


def decode(
    source: str, raw: Any, fmt: str, header: Optional[List[str]], delimiter: str = ","
) -> Dict[str, Any]:
    """One raw row (a line's bytes, or a Parquet row's dict) as a record dict."""
    if isinstance(raw, dict):
        return raw
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise logs.BadRecord("invalid_utf8", f"line is not UTF-8 ({e})", source) from None
    if fmt == "csv":
        return logs.decode_csv(line, header, source, delimiter)
    return logs.decode_json(line, source)


def dead_letter(source: str, raw: Any, error: logs.BadRecord, prefix: str = "") -> Dict[str, str]:
    """The dead-letter record of a bad row: its file, reason, detail and the row itself."""
    if isinstance(raw, bytes):
        original = raw.decode("utf-8", "backslashreplace")
    else:
        original = json.dumps(raw, default=str)
    return {
        "source": source,
        "reason": prefix + error.reason,
        "detail": error.detail[:500],
        "original": original[:20_000],
    }


def is_blank(raw: Any) -> bool:
    return isinstance(raw, bytes) and not raw.strip()


class RowParser:
    """Parses one raw row of ``kind`` (event, item or user) into its outputs:
    ``[(item_id, CatalogItem)]``, ``[(user_id, profile)]`` or the events it
    implies as ``[(user_id, event)]``; or a dead letter for a bad one."""

    def __init__(
        self,
        kind: str,
        config: LogConfig,
        fmt: str,
        header: Optional[List[str]],
        max_timestamp: int = 0,
        delimiter: str = ",",
    ):
        self.kind, self.config, self.fmt, self.header = kind, config, fmt, header
        self.max_timestamp, self.delimiter = max_timestamp, delimiter
        self.prefix = "" if kind == "event" else f"{kind}_"
        self.names = field_map(config.event_field_map, EVENT_FIELDS)

    def parse(self, source: str, raw: Any, catalog=None) -> Any:
        """The row's outputs (a list), or its dead letter (a dict)."""
        try:
            return self._parse(source, raw, catalog)
        except RecursionError:  # a row nested too deeply for a rule that walks it
            error = logs.BadRecord("unparseable", "a value nested too deeply to process", source)
        except logs.BadRecord as bad:
            error = bad
        beam.metrics.Metrics.counter(NAMESPACE, f"bad_{self.prefix}{error.reason}").inc()
        return dead_letter(source, raw, error, self.prefix)

    def _parse(self, source: str, raw: Any, catalog) -> List[Any]:
        record = decode(source, raw, self.fmt, self.header, self.delimiter)
        if self.kind == "item":
            return [logs.normalize_item(record, self.config, source)]
        if self.kind == "user":
            return [logs.normalize_user(record, self.config, source)]
        event = logs.normalize_event(record, self.config, self.max_timestamp, source, self.names)
        if event["item_id"] not in catalog:
            raise logs.BadRecord(
                "unknown_item",
                f"event {event['event_id']!r} refers to "
                f"item {event['item_id']!r}, not in the catalogue",
                source,
            )
        return [(e["user_id"], e) for e in logs.implied_events(event, self.config)]


class ParseBatchFn(beam.DoFn):
    """(file, rows) -> for events: ((user shard, bucket), packed events) per
    key in the batch (``time_buckets``), on ``ahead`` the look-ahead copies
    the bucket before needs, on ``summed`` [the key's users, the events its
    summary reads], on
    ``ids`` (event-id shard, packed [user, event id, timestamp, type order]),
    on ``rows`` the count of good rows, on ``bounds`` the batch's (min, max)
    timestamp, on ``impressions`` (with ``impressions=True``) the (event_id,
    item_id) of its impressions; for items and users: one (id, value) per
    row. Bad rows leave on ``dead``, one dead letter each."""

    def __init__(self, parser: RowParser, impressions: bool = False):
        self._parser, self._impressions = parser, impressions
        self._shards: Dict[str, int] = {}  # user -> shard, of the users seen (bounded)

    def process(self, element, catalog=None):
        source, raws = element
        parser = self._parser
        events: List[Dict[str, Any]] = []
        good_rows = 0
        for raw in raws:
            if is_blank(raw):
                continue
            parsed = parser.parse(source, raw, catalog)
            if isinstance(parsed, dict):
                yield beam.pvalue.TaggedOutput(DEAD, parsed)
            elif parser.kind != "event":
                yield from parsed
            else:
                good_rows += 1
                events.extend(event for _, event in parsed)
        if parser.kind != "event":
            return
        if good_rows:
            yield beam.pvalue.TaggedOutput(ROWS, good_rows)
        if not events:
            return
        times = [e["timestamp"] for e in events]
        yield beam.pvalue.TaggedOutput(BOUNDS, (min(times), max(times)))
        if self._impressions:
            yield beam.pvalue.TaggedOutput(
                IMPRESSIONS,
                [(e["event_id"], e["item_id"]) for e in events if e["event_type"] == "impression"],
            )
        config = parser.config
        width, horizon = config.bucket_seconds, config.label_horizon
        every_item = bool(config.negatives_per_positive)  # the summaries need every item
        own: Dict[Tuple[int, int], List[Dict[str, Any]]] = collections.defaultdict(list)
        ahead: Dict[Tuple[int, int], List[Dict[str, Any]]] = collections.defaultdict(list)
        summed: Dict[Tuple[int, int], List[Dict[str, Any]]] = collections.defaultdict(list)
        ids: Dict[int, List[Tuple[str, str, int, int]]] = collections.defaultdict(list)
        order, crc32, id_shards = tb.TYPE_ORDER, zlib.crc32, tb.NUM_ID_SHARDS
        shards = self._shards
        if len(shards) > 1_000_000:
            shards.clear()
        for event, ts in zip(events, times):
            user, event_id, kind = event["user_id"], event["event_id"], event["event_type"]
            shard = shards.get(user)
            if shard is None:
                shard = shards[user] = shard_of(user)
            key = (shard, ts // width)
            own[key].append(event)
            if ts - key[1] * width < horizon:
                ahead[key[0], key[1] - 1].append(event)
            if every_item or kind == "click" or event.get("review_text"):
                summed[key].append(event)
            id_shard = crc32(event_id.encode("utf-8", "surrogatepass")) % id_shards
            ids[id_shard].append((user, event_id, ts, order[kind]))
        for key, batch in own.items():
            yield key, pack(batch)
            users = list(dict.fromkeys(e["user_id"] for e in batch))
            yield beam.pvalue.TaggedOutput(SUMMED, (key, pack([users, summed.get(key, [])])))
        for key, batch in ahead.items():
            yield beam.pvalue.TaggedOutput(AHEAD, (key, pack(batch)))
        for id_shard, records in ids.items():
            yield beam.pvalue.TaggedOutput(IDS, (id_shard, pack(records)))


# --- examples ----------------------------------------------------------------


def split_of(
    item_id: str,
    event_id: str,
    ts: int,
    split: SplitConfig,
    cutoff: Optional[int],
    cold: Optional[bool] = None,
) -> int:
    """0 (train) or 1 (eval): cold items to eval, else by time or at random
    (``cold``: ``split.is_cold_item(item_id)`` when the caller has it)."""
    if split.is_cold_item(item_id) if cold is None else cold:
        return 1
    if split.kind == "random":
        return 1 if stable_fraction(event_id) < split.eval_fraction else 0
    return 1 if ts >= cutoff else 0


def time_cutoff(bounds: Tuple[Optional[int], Optional[int]], config: LogConfig) -> int:
    """The first timestamp of the eval split of a time split."""
    if config.split.split_timestamp is not None:
        return int(config.split.split_timestamp)
    low, high = bounds
    if low is None:  # no good events: nothing to split (check_report says so)
        return 0
    return int(high - config.split.eval_fraction * (high - low))


class MinMax(beam.CombineFn):
    """(min, max) over (min, max) pairs; (None, None) over none."""

    def create_accumulator(self):
        return (None, None)

    def add_input(self, acc, bounds):
        (low, high), (lo, hi) = acc, bounds
        return (lo if low is None else min(low, lo), hi if high is None else max(high, hi))

    def merge_accumulators(self, accs):
        out = (None, None)
        for acc in accs:
            if acc[0] is not None:
                out = self.add_input(out, acc)
        return out

    def extract_output(self, acc):
        return acc


class BucketExamplesFn(beam.DoFn):
    """((user shard, bucket), {own, ahead, drops, states}) -> (file bucket,
    serialized examples) on the ``train`` and ``eval`` outputs
    (``example_files`` writes them): each user's walk of the bucket
    (``time_buckets.walk_window``); re-sent events on ``duplicates``, the
    walks' counts (and ``examples_<split>``) on ``counts``."""

    def __init__(
        self,
        config: LogConfig,
        example_batch: int = EXAMPLE_BATCH,
        num_files: int = example_files.NUM_FILES,
    ):
        self._config, self._example_batch = config, example_batch
        self._num_files = num_files

    def setup(self):
        self._pool: Tuple[Any, Optional[logs.NegativePool]] = (None, None)

    def _negative_pool(self, catalog, popularity) -> Optional[logs.NegativePool]:
        """The pool negatives are drawn from, built once per side input."""
        if not self._config.negatives_per_positive:
            return None
        source = popularity if self._config.negative_sampling == "popularity" else catalog
        if self._pool[0] is not source:
            pool = (
                logs.NegativePool.by_popularity(source)
                if source is popularity
                else logs.NegativePool.uniform(source)
            )
            self._pool = (source, pool)
        return self._pool[1]

    def process(self, keyed, catalog, users, cutoff=None, popularity=None):
        (shard, bucket), groups = keyed
        config = self._config
        # Each example's output file: seeded by the key, so reruns match.
        self._rng = random.Random(f"{shard}:{bucket}")
        own = tb.by_user(groups[tb.OWN])
        ahead = tb.by_user(groups[tb.AHEAD])
        places = tb.kept_places(groups[tb.DROPS])
        states = {state[0]: state for state in groups[tb.STATES]}
        counts: collections.Counter = collections.Counter()
        duplicates: List[Dict[str, Any]] = []
        pool = self._negative_pool(catalog, popularity)
        rows: List[Dict[str, Any]] = []
        targets: List[int] = []
        for user_id in sorted(set(own) | set(ahead)):
            state = states.get(user_id)
            if user_id in own and state is None:
                raise RuntimeError(f"no state for user {user_id!r} in bucket {bucket}")
            events = own.pop(user_id, []) + ahead.pop(user_id, [])
            walk = logs.user_example_values(
                events,
                catalog,
                config,
                users.get(user_id, ""),
                counts,
                duplicates,
                pool,
                window=tb.walk_window(bucket, config, catalog, state),
                kept_at=places.get(user_id),
            )
            for ts, event_id, values in walk:
                item_id = values[F.ITEM_ID]
                cold = config.split.is_cold_item(item_id)
                target = split_of(item_id, event_id, ts, config.split, cutoff, cold)
                if cold:
                    counts["examples_eval_cold_items"] += 1
                rows.append(values)
                targets.append(target)
                if len(rows) == self._example_batch:
                    yield from self._flush(rows, targets, counts)
                    rows, targets = [], []
            yield from self._duplicates(duplicates)
            duplicates.clear()
        yield from self._flush(rows, targets, counts)
        for name, value in counts.items():
            beam.metrics.Metrics.counter(NAMESPACE, name).inc(value)
            yield beam.pvalue.TaggedOutput(COUNTS, (name, value))

    def _flush(self, rows: Sequence[Dict[str, Any]], targets: Sequence[int], counts):
        """Encodes ``rows``; yields (file bucket, serialized examples) on each split's output."""
        buckets: Dict[Tuple[int, int], List[bytes]] = collections.defaultdict(list)
        for serialized, target in zip(example_columns.serialize_examples(rows), targets):
            buckets[target, self._rng.randrange(self._num_files)].append(serialized)
        for (target, bucket), batch in sorted(buckets.items()):
            counts[f"examples_{SPLITS[target]}"] += len(batch)
            yield beam.pvalue.TaggedOutput(SPLITS[target], (bucket, batch))

    @staticmethod
    def _duplicates(duplicates: Sequence[Dict[str, Any]]):
        for event in duplicates:
            yield beam.pvalue.TaggedOutput(
                DUPLICATES,
                {
                    "source": "events",
                    "reason": "duplicate_event",
                    "detail": f"event id {event['event_id']!r} was logged before; "
                    "the earliest copy is kept",
                    "original": json.dumps(event, ensure_ascii=False),
                },
            )
