"""InteractionLogExampleGen: raw interaction logs -> split tf.Examples, in Beam.

Reads event logs (JSON Lines, CSV or Parquet; plain or gzip; one or many files
by glob), the item catalogue and an optional user table; joins item text and
category and the user's profile; builds per-user history and labels by
grouping per user and walking the events in time order; splits by time (or at
random, when asked). Bad rows are counted by reason, written with the original
line to ``<examples>/DeadLetters/`` and fail the component when their fraction
exceeds ``max_bad_fraction``. ``<examples>/ingestion_report.json`` holds the
counts.
"""

from __future__ import annotations

import collections
import csv
import gzip
import json
import logging
import os
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

import apache_beam as beam
import tensorflow as tf
from tfx.components.example_gen import driver, write_split
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, channel, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter

from components import interaction_logs as logs
from components.log_config import LogConfig, SplitConfig, resolve_format, stable_fraction
from components.spans import SpanSelection, any_span_glob, select_spans
from trainer import features as F

LOG_CONFIG_KEY = "log_config"
CODE_VERSION_KEY = "code_version"  # part of the cache key; not read by the executor
SPLITS = ("train", "eval")
DEAD_LETTER_DIR = "DeadLetters"
REPORT_FILE = "ingestion_report.json"
_NAMESPACE = "interaction_logs"
_DEAD = "dead"
_COUNTS = "counts"
_DUPLICATES = "duplicates"
_ROWS = "rows"
SPANS_PROPERTY = "spans_read"  # "spans 2026-11-24..2026-11-27 (4 read)"
SPAN_NUMBERS_PROPERTY = "span_numbers"


class IngestionError(RuntimeError):
    """Too many bad rows, or no usable input."""


# --- reading ---------------------------------------------------------------


def _files(input_base: str, pattern: str, what: str) -> List[str]:
    files = sorted(tf.io.gfile.glob(os.path.join(input_base, pattern)))
    if not files:
        raise FileNotFoundError(f"No {what} files match {os.path.join(input_base, pattern)!r}.")
    return files


def _csv_header(files: List[str], delimiter: str = ",") -> List[str]:
    """The shared header of CSV files; a different header is an error naming the file."""
    header = None
    for path in files:
        with tf.io.gfile.GFile(path, "rb") as raw:
            stream = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
            first = stream.readline().decode("utf-8-sig").strip()
        names = next(csv.reader([first], delimiter=delimiter), [])
        if header is not None and names != header:
            raise IngestionError(
                f"{path} has CSV header {names}, expected {header} as in {files[0]}"
            )
        header = names
    return header


def _format_of(files: List[str], declared: str) -> str:
    formats = {resolve_format(f, declared) for f in files}
    if len(formats) > 1:
        raise IngestionError(
            f"mixed formats {sorted(formats)} in {files}; set the format explicitly"
        )
    return formats.pop()


@beam.ptransform_fn
def _ReadRecords(pipeline, files: List[str], fmt: str, label: str, has_header: bool = True):
    """-> (source, raw) where raw is bytes (a line) or a dict (a Parquet row)."""
    if fmt == "parquet":
        return (
            pipeline
            | f"Read{label}Parquet" >> beam.Create(files)
            | f"Read{label}ParquetRows" >> beam.io.ReadAllFromParquet(with_filename=True)
        )
    pcolls = [
        pipeline
        | f"Read{label}[{i}]"
        >> beam.io.ReadFromTextWithFilename(
            path,
            coder=beam.coders.BytesCoder(),
            skip_header_lines=1 if fmt == "csv" and has_header else 0,
        )
        for i, path in enumerate(files)
    ]
    return pcolls | f"Flatten{label}" >> beam.Flatten()


def _decode(
    source: str, raw: Any, fmt: str, header: Optional[List[str]], delimiter: str = ","
) -> Dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise logs.BadRecord("invalid_utf8", f"line is not UTF-8 ({e})", source) from None
    if fmt == "csv":
        return logs.decode_csv(line, header, source, delimiter)
    return logs.decode_json(line, source)


def _dead_letter(source: str, raw: Any, error: logs.BadRecord, prefix: str = "") -> Dict[str, str]:
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


def _is_blank(raw: Any) -> bool:
    return isinstance(raw, bytes) and not raw.strip()


class _ParseFn(beam.DoFn):
    """(source, raw) -> a parsed record, or a dead letter on the ``dead`` output."""

    def __init__(
        self,
        kind: str,
        config_json: str,
        fmt: str,
        header: Optional[List[str]],
        max_timestamp: int = 0,
        delimiter: str = ",",
    ):
        self._kind, self._config_json, self._fmt = kind, config_json, fmt
        self._header, self._max_timestamp = header, max_timestamp
        self._delimiter = delimiter

    def setup(self):
        self._config = LogConfig.from_json(self._config_json)

    def process(self, element, catalog=None):
        source, raw = element
        if _is_blank(raw):
            return
        try:
            parsed = self._parse(source, raw, catalog)
        except RecursionError:  # a row nested too deeply for a rule that walks it
            parsed = logs.BadRecord("unparseable", "a value nested too deeply to process", source)
        except logs.BadRecord as error:
            parsed = error
        if isinstance(parsed, logs.BadRecord):
            prefix = "" if self._kind == "event" else f"{self._kind}_"
            beam.metrics.Metrics.counter(_NAMESPACE, f"bad_{prefix}{parsed.reason}").inc()
            yield beam.pvalue.TaggedOutput(_DEAD, _dead_letter(source, raw, parsed, prefix))
            return
        if self._kind == "event":
            yield beam.pvalue.TaggedOutput(_ROWS, 1)  # one good row, whatever it implies
        yield from parsed

    def _parse(self, source: str, raw: Any, catalog) -> List[Any]:
        record = _decode(source, raw, self._fmt, self._header, self._delimiter)
        if self._kind == "item":
            return [logs.normalize_item(record, self._config, source)]
        if self._kind == "user":
            return [logs.normalize_user(record, self._config, source)]
        event = logs.normalize_event(record, self._config, self._max_timestamp, source)
        if event["item_id"] not in catalog:
            raise logs.BadRecord(
                "unknown_item",
                f"event {event['event_id']!r} refers to "
                f"item {event['item_id']!r}, not in the catalogue",
                source,
            )
        return [(e["user_id"], e) for e in logs.implied_events(event, self._config)]


class _UserExamplesFn(beam.DoFn):
    """One user's events -> (timestamp, event_id, item_id, serialized example); counts on
    ``counts``."""

    def __init__(self, config_json: str):
        self._config_json = config_json

    def setup(self):
        self._config = LogConfig.from_json(self._config_json)
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

    def process(self, keyed, catalog, users, popularity=None):
        user_id, events = keyed
        counts: collections.Counter = collections.Counter()
        duplicates: List[Dict[str, Any]] = []
        pool = self._negative_pool(catalog, popularity)
        for ts, event_id, example in logs.user_examples(
            events, catalog, self._config, users.get(user_id, ""), counts, duplicates, pool
        ):
            item_id = example.features.feature[F.ITEM_ID].bytes_list.value[0].decode()
            yield ts, event_id, item_id, example.SerializeToString()
        for event in duplicates:
            yield beam.pvalue.TaggedOutput(
                _DUPLICATES,
                {
                    "source": "events",
                    "reason": "duplicate_event",
                    "detail": f"event id {event['event_id']!r} was logged before; "
                    "the earliest copy is kept",
                    "original": json.dumps(event, ensure_ascii=False),
                },
            )
        for name, value in counts.items():
            beam.metrics.Metrics.counter(_NAMESPACE, name).inc(value)
            yield beam.pvalue.TaggedOutput(_COUNTS, (name, value))


def _split_index(
    record: Tuple[int, str, str, bytes],
    num_partitions: int,
    split: SplitConfig,
    cutoff: Optional[int],
) -> int:
    ts, event_id, item_id, _ = record
    if split.is_cold_item(item_id):
        return 1
    if split.kind == "random":
        return 1 if stable_fraction(event_id) < split.eval_fraction else 0
    return 1 if ts >= cutoff else 0


def _time_cutoff(bounds: Tuple[int, int], config: LogConfig) -> int:
    if config.split.split_timestamp is not None:
        return int(config.split.split_timestamp)
    low, high = bounds
    if low is None:  # no good events: nothing to split (check_report says so)
        return 0
    return int(high - config.split.eval_fraction * (high - low))


class _MinMax(beam.CombineFn):
    def create_accumulator(self):
        return (None, None)

    def add_input(self, acc, ts):
        low, high = acc
        return (ts if low is None else min(low, ts), ts if high is None else max(high, ts))

    def merge_accumulators(self, accs):
        out = (None, None)
        for low, high in accs:
            if low is not None:
                out = self.add_input(self.add_input(out, low), high)
        return out

    def extract_output(self, acc):
        return acc


def _write_report(counts: Iterable[Tuple[str, int]], path: str) -> None:
    merged: Dict[str, int] = collections.Counter()
    for name, value in counts:
        merged[name] += value
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(dict(sorted(merged.items())), f, indent=2)


def build_ingestion(
    pipeline: beam.Pipeline,
    input_base: str,
    config: LogConfig,
    output_uri: str,
    max_timestamp: int,
    spans: Optional[SpanSelection] = None,
) -> Dict[str, beam.PCollection]:
    """Adds the ingestion graph over ``spans`` (default: ``select_spans``);
    returns the serialized examples per split."""
    config_json = config.to_json()
    spans = spans or select_spans(input_base, config.events_pattern, config.span_window)
    event_files = sorted(
        {f for pattern in spans.patterns for f in _files(input_base, pattern, "event log")}
    )
    item_files = _files(input_base, config.catalog_pattern, "item catalogue")
    user_files = (
        _files(input_base, config.users_pattern, "user table") if config.users_pattern else []
    )

    def parse(kind: str, source: str, files: List[str], declared: str, label: str, **kwargs):
        fmt = _format_of(files, declared)
        delimiter, columns = config.csv_delimiter(source), config.csv_columns.get(source)
        header = None
        if fmt == "csv":
            header = list(columns) if columns else _csv_header(files, delimiter)
        return (
            pipeline
            | f"Read{label}" >> _ReadRecords(files, fmt, label, has_header=not columns)
            | f"Parse{label}"
            >> beam.ParDo(
                _ParseFn(kind, config_json, fmt, header, max_timestamp, delimiter), **kwargs
            ).with_outputs(_DEAD, _ROWS, main="good")
        )

    items = parse("item", "catalog", item_files, config.catalog_format, "Items")
    catalog = beam.pvalue.AsDict(items.good)
    if user_files:
        users = parse("user", "users", user_files, config.users_format, "Users")
        users_good, users_dead = users.good, [users[_DEAD]]
    else:
        users_good, users_dead = pipeline | "NoUsers" >> beam.Create([]), []
    events = parse("event", "events", event_files, config.events_format, "Events", catalog=catalog)

    side_inputs = {"catalog": catalog, "users": beam.pvalue.AsDict(users_good)}
    if config.negatives_per_positive and config.negative_sampling == "popularity":
        side_inputs["popularity"] = beam.pvalue.AsDict(
            events.good
            | "Impressions" >> beam.Filter(lambda kv: kv[1]["event_type"] == "impression")
            | "ImpressedItems" >> beam.Map(lambda kv: (kv[1]["event_id"], kv[1]["item_id"]))
            | "OncePerEvent" >> beam.Distinct()
            | "ItemOf" >> beam.Values()
            | "Popularity" >> beam.combiners.Count.PerElement()
        )
    built = (
        events.good
        | "GroupByUser" >> beam.GroupByKey()
        | "BuildExamples"
        >> beam.ParDo(_UserExamplesFn(config_json), **side_inputs).with_outputs(
            _COUNTS, _DUPLICATES, main="examples"
        )
    )

    dead = [items[_DEAD], events[_DEAD], *users_dead] | "AllDeadLetters" >> beam.Flatten()
    _ = (
        dead
        | "DeadLetterJson" >> beam.Map(lambda d: json.dumps(d, ensure_ascii=False))
        | "WriteDeadLetters"
        >> beam.io.WriteToText(
            os.path.join(output_uri, DEAD_LETTER_DIR, "bad_rows"), file_name_suffix=".jsonl"
        )
    )
    # Re-sent events: kept apart from bad rows (they do not count against
    # max_bad_fraction), counted as duplicate_events.
    _ = (
        built[_DUPLICATES]
        | "DuplicateJson" >> beam.Map(lambda d: json.dumps(d, ensure_ascii=False))
        | "WriteDuplicates"
        >> beam.io.WriteToText(
            os.path.join(output_uri, DEAD_LETTER_DIR, "duplicates"), file_name_suffix=".jsonl"
        )
    )

    cutoff = None
    if config.split.kind == "time":
        bounds = (
            events.good
            | "Timestamps" >> beam.Map(lambda kv: kv[1]["timestamp"])
            | "TimeBounds" >> beam.CombineGlobally(_MinMax())
        )
        cutoff = beam.pvalue.AsSingleton(bounds | "Cutoff" >> beam.Map(_time_cutoff, config))
    parts = built.examples | "Split" >> beam.Partition(
        _split_index, len(SPLITS), config.split, cutoff=cutoff
    )

    count_rows = [
        events[_ROWS] | "CountGood" >> beam.Map(lambda _: ("good_event_rows", 1)),
        dead | "CountBad" >> beam.Map(lambda d: ("bad:" + d["reason"], 1)),
        built[_COUNTS],
    ]
    if config.split.cold_item_fraction:
        count_rows.append(
            parts[SPLITS.index("eval")]
            | "CountCold" >> beam.Filter(lambda r: config.split.is_cold_item(r[2]))
            | "ColdCounts" >> beam.Map(lambda _: ("examples_eval_cold_items", 1))
        )
    for index, name in enumerate(SPLITS):
        count_rows.append(
            parts[index] | f"Count[{name}]" >> beam.Map(lambda _, n=name: (f"examples_{n}", 1))
        )
    _ = (
        count_rows
        | "AllCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombinePerKey(sum)
        | "OneReport" >> beam.combiners.ToList()
        | "WriteReport" >> beam.Map(_write_report, os.path.join(output_uri, REPORT_FILE))
    )
    return {
        name: parts[i] | f"Serialized[{name}]" >> beam.Map(lambda r: r[3])
        for i, name in enumerate(SPLITS)
    }


def check_report(report: Dict[str, int], config: LogConfig, dead_letter_dir: str) -> None:
    """Raises IngestionError when bad event rows exceed ``max_bad_fraction``."""
    bad = {
        k[4:]: v
        for k, v in report.items()
        if k.startswith("bad:") and not k.startswith(("bad:item_", "bad:user_"))
    }
    total = report.get("good_event_rows", 0) + sum(bad.values())
    if total == 0:
        raise IngestionError("the event logs hold no rows")
    fraction = sum(bad.values()) / total
    if fraction > config.max_bad_fraction:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
        raise IngestionError(
            f"{sum(bad.values())} of {total} event rows ({fraction:.2%}) are bad, above "
            f"max_bad_fraction {config.max_bad_fraction:.2%}: {reasons}. "
            f"The rows and reasons are in {dead_letter_dir}"
        )
    if report.get("examples_train", 0) == 0 or report.get("examples_eval", 0) == 0:
        raise IngestionError(
            f"a split is empty ({report}); check the impressions and the split config"
        )


def dead_letter_note(report: Dict[str, int], dead_letter_dir: str) -> str:
    """One line on the bad rows that went to the dead letters ('' when none did)."""
    bad = {k[4:]: v for k, v in sorted(report.items()) if k.startswith("bad:") and v}
    if not bad:
        return ""
    reasons = ", ".join(f"{k}={v}" for k, v in bad.items())
    return (
        f"{sum(bad.values())} bad log rows went to the dead letters ({reasons}): {dead_letter_dir}"
    )


def negatives_note(report: Dict[str, int], config: LogConfig) -> str:
    """One line when requested negatives could not be sampled ('' otherwise)."""
    missing = report.get("negatives_unavailable", 0)
    if not missing:
        return ""
    wanted = missing + report.get("sampled_negatives", 0)
    return (
        f"{missing} of {wanted} requested negatives (negatives_per_positive "
        f"{config.negatives_per_positive}, {config.negative_sampling}) could not be sampled: "
        "their users had interacted with nearly every item the sampler draws from"
    )


def _keep_rejected(examples_uri: str) -> str:
    """Copies dead letters and the report out of the artifact, to
    ``<component dir>/rejected/<execution id>/``; returns the dead-letter dir there."""
    target = os.path.join(
        os.path.dirname(os.path.dirname(examples_uri)), "rejected", os.path.basename(examples_uri)
    )
    tf.io.gfile.makedirs(os.path.join(target, DEAD_LETTER_DIR))
    for path in tf.io.gfile.glob(os.path.join(examples_uri, DEAD_LETTER_DIR, "*")):
        tf.io.gfile.copy(
            path, os.path.join(target, DEAD_LETTER_DIR, os.path.basename(path)), overwrite=True
        )
    tf.io.gfile.copy(
        os.path.join(examples_uri, REPORT_FILE), os.path.join(target, REPORT_FILE), overwrite=True
    )
    return os.path.join(target, DEAD_LETTER_DIR)


class Executor(base_beam_executor.BaseBeamExecutor):
    """Beam executor of InteractionLogExampleGen."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        config = LogConfig.from_json(exec_properties[LOG_CONFIG_KEY])
        examples = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EXAMPLES_KEY]
        )
        examples.split_names = artifact_utils.encode_split_names(list(SPLITS))
        max_timestamp = int(time.time()) + config.max_future_seconds
        input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        spans = select_spans(input_base, config.events_pattern, config.span_window)
        if spans.describe():  # recorded in ML Metadata and the run report
            logging.warning("InteractionLogExampleGen reads %s", spans.describe())
            examples.set_string_custom_property(SPANS_PROPERTY, spans.describe())
            examples.set_string_custom_property(
                SPAN_NUMBERS_PROPERTY, ",".join(map(str, spans.spans))
            )
            examples.span = spans.spans[-1]  # TFX's own property: the newest span
        with self._make_beam_pipeline() as pipeline:
            splits = build_ingestion(
                pipeline, input_base, config, examples.uri, max_timestamp, spans
            )
            for name, split in splits.items():
                _ = split | f"WriteSplit[{name}]" >> write_split.WriteSplit(
                    artifact_utils.get_split_uri([examples], name),
                    example_gen_pb2.FORMAT_TFRECORDS_GZIP,
                    exec_properties,
                )
        with tf.io.gfile.GFile(os.path.join(examples.uri, REPORT_FILE)) as f:
            report = json.load(f)
        logging.info("Ingestion report: %s", report)
        for name, value in report.items():
            examples.set_int_custom_property(name.replace(":", "_"), value)
        try:
            check_report(report, config, os.path.join(examples.uri, DEAD_LETTER_DIR))
        except IngestionError:
            # TFX removes the outputs of a failed execution: keep the evidence.
            check_report(report, config, _keep_rejected(examples.uri))  # raises, naming the copy
            raise
        notes = (
            dead_letter_note(report, os.path.join(examples.uri, DEAD_LETTER_DIR)),
            negatives_note(report, config),
        )
        for note in filter(None, notes):  # the run goes on: the terminal shows it
            logging.warning("%s", note)
        examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(
            examples, write_split.to_file_format_str(example_gen_pb2.FORMAT_TFRECORDS_GZIP)
        )


class InteractionLogExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        LOG_CONFIG_KEY: ExecutionParameter(type=str),
        CODE_VERSION_KEY: ExecutionParameter(type=str, optional=True),
    }


class InteractionLogExampleGen(base_beam_component.BaseBeamComponent):
    """ExampleGen over raw interaction logs, an item catalogue and a user table.

    Every input file is fingerprinted by the driver, so a changed catalogue or
    user table invalidates the cache as a changed log does.
    """

    SPEC_CLASS = InteractionLogExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
    DRIVER_CLASS = driver.FileBasedDriver

    def __init__(
        self,
        input_base: str,
        log_config: Optional[LogConfig] = None,
        code_version: Optional[str] = None,
    ):
        log_config = log_config or LogConfig()
        # TFX's driver fingerprints these files for the cache; the events'
        # span specs are globs here (the executor picks the spans), so a new
        # day's logs invalidate the cache.
        patterns = [("events", any_span_glob(log_config.events_pattern))]
        patterns.append(("items", log_config.catalog_pattern))
        if log_config.users_pattern:
            patterns.append(("users", log_config.users_pattern))
        input_config = example_gen_pb2.Input(
            splits=[
                example_gen_pb2.Input.Split(name=name, pattern=pattern)
                for name, pattern in patterns
            ]
        )
        output_config = example_gen_pb2.Output(
            split_config=example_gen_pb2.SplitConfig(
                splits=[
                    example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=1) for name in SPLITS
                ]
            )
        )
        spec = InteractionLogExampleGenSpec(
            input_base=input_base,
            input_config=input_config,
            output_config=output_config,
            custom_config=None,
            range_config=None,
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            log_config=log_config.to_json(),
            code_version=code_version,
            examples=channel.Channel(type=standard_artifacts.Examples),
        )
        super().__init__(spec=spec)
