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
from typing import Dict, Iterable, List, Optional, Tuple

import apache_beam as beam
import tensorflow as tf
from tfx.components.example_gen import driver, write_split
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, channel, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter

from components import event_batches as batches
from components import example_files
from components import time_buckets as tb
from components.event_batches import SPLITS
from components.log_config import LogConfig, resolve_format
from components.spans import SpanSelection, any_span_glob, newest_snapshot, select_spans

LOG_CONFIG_KEY = "log_config"
CODE_VERSION_KEY = "code_version"  # part of the cache key; not read by the executor
DEAD_LETTER_DIR = "DeadLetters"
REPORT_FILE = "ingestion_report.json"
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


def _snapshot_files(input_base: str, pattern: str, what: str) -> List[str]:
    """The files of a snapshot table's newest span (all of ``pattern`` without span specs)."""
    snapshot = newest_snapshot(input_base, pattern, what)
    if snapshot.describe():
        logging.warning("InteractionLogExampleGen reads the %s of %s", what, snapshot.describe())
    return _files(input_base, snapshot.patterns[-1], what)


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
    returns the examples per split as (file bucket, [serialized example])
    batches, for ``example_files.WriteExampleFiles`` (or ``Unbatch``)."""
    spans = spans or select_spans(input_base, config.events_pattern, config.span_window)
    event_files = sorted(
        {f for pattern in spans.patterns for f in _files(input_base, pattern, "event log")}
    )
    item_files = _snapshot_files(input_base, config.catalog_pattern, "item catalogue")
    user_files = (
        _snapshot_files(input_base, config.users_pattern, "user table")
        if config.users_pattern
        else []
    )

    def parse(kind: str, source: str, files: List[str], declared: str, label: str, **kwargs):
        fmt = _format_of(files, declared)
        delimiter, columns = config.csv_delimiter(source), config.csv_columns.get(source)
        header = None
        if fmt == "csv":
            header = list(columns) if columns else _csv_header(files, delimiter)
        parser = batches.RowParser(kind, config, fmt, header, max_timestamp, delimiter)
        parse_fn = batches.ParseBatchFn(parser, impressions=popularity)
        return (
            pipeline
            | f"{label}Files" >> beam.Create(files)
            | f"Read{label}"
            >> beam.ParDo(batches.ReadBatchesFn(fmt, skip_header=fmt == "csv" and not columns))
            | f"Parse{label}"
            >> beam.ParDo(parse_fn, **kwargs).with_outputs(
                batches.DEAD,
                batches.ROWS,
                batches.BOUNDS,
                batches.IMPRESSIONS,
                batches.AHEAD,
                batches.SUMMED,
                batches.IDS,
                main="good",
            )
        )

    popularity = bool(config.negatives_per_positive and config.negative_sampling == "popularity")
    items = parse("item", "catalog", item_files, config.catalog_format, "Items")
    catalog = beam.pvalue.AsDict(items.good)
    if user_files:
        users = parse("user", "users", user_files, config.users_format, "Users")
        users_good, users_dead = users.good, [users[batches.DEAD]]
    else:
        users_good, users_dead = pipeline | "NoUsers" >> beam.Create([]), []
    events = parse("event", "events", event_files, config.events_format, "Events", catalog=catalog)

    side_inputs = {"catalog": catalog, "users": beam.pvalue.AsDict(users_good)}
    if config.split.kind == "time":
        bounds = events[batches.BOUNDS] | "TimeBounds" >> beam.CombineGlobally(batches.MinMax())
        side_inputs["cutoff"] = beam.pvalue.AsSingleton(
            bounds | "Cutoff" >> beam.Map(batches.time_cutoff, config)
        )
    if popularity:
        side_inputs["popularity"] = beam.pvalue.AsDict(
            events[batches.IMPRESSIONS]
            | "Impressions" >> beam.FlatMap(lambda pairs: pairs)
            | "OncePerEvent" >> beam.Distinct()
            | "ItemOf" >> beam.Values()
            | "Popularity" >> beam.combiners.Count.PerElement()
        )
    # Keyed by (user shard, time bucket): see components/time_buckets.py.
    drops = (
        events[batches.IDS]
        | "GroupByIdShard" >> beam.GroupByKey()
        | "FindResentIds" >> beam.ParDo(tb.DuplicateIdsFn(config))
    )
    states = (
        {tb.SUMMED: events[batches.SUMMED], tb.DROPS: drops}
        | "GroupForSummaries" >> beam.CoGroupByKey()
        | "SummarizeBuckets" >> beam.ParDo(tb.BucketSummaryFn(config))
        | "GroupByUser" >> beam.GroupByKey()
        | "StatesBeforeBuckets" >> beam.ParDo(tb.UserStatesFn(config))
    )
    built = (
        {
            tb.OWN: events.good,
            tb.AHEAD: events[batches.AHEAD],
            tb.DROPS: drops,
            tb.STATES: states,
        }
        | "GroupByUserShardAndBucket" >> beam.CoGroupByKey()
        | "BuildExamples"
        >> beam.ParDo(batches.BucketExamplesFn(config), **side_inputs).with_outputs(
            batches.COUNTS, batches.DUPLICATES, *SPLITS
        )
    )

    dead = [items[batches.DEAD], events[batches.DEAD], *users_dead] | "AllDeadLetters" >> (
        beam.Flatten()
    )
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
        built[batches.DUPLICATES]
        | "DuplicateJson" >> beam.Map(lambda d: json.dumps(d, ensure_ascii=False))
        | "WriteDuplicates"
        >> beam.io.WriteToText(
            os.path.join(output_uri, DEAD_LETTER_DIR, "duplicates"), file_name_suffix=".jsonl"
        )
    )
    count_rows = [
        events[batches.ROWS] | "CountGood" >> beam.Map(lambda n: ("good_event_rows", n)),
        dead | "CountBad" >> beam.Map(lambda d: ("bad:" + d["reason"], 1)),
        built[batches.COUNTS],
    ]
    _ = (
        count_rows
        | "AllCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombinePerKey(sum)
        | "OneReport" >> beam.combiners.ToList()
        | "WriteReport" >> beam.Map(_write_report, os.path.join(output_uri, REPORT_FILE))
    )
    return {name: built[name] for name in SPLITS}


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
                _ = split | f"WriteSplit[{name}]" >> example_files.WriteExampleFiles(
                    artifact_utils.get_split_uri([examples], name)
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
        # TFX's driver fingerprints these files for the cache; span specs
        # are globs here (the executor picks the spans), so a new day's logs
        # or catalogue invalidate the cache.
        patterns = [("events", any_span_glob(log_config.events_pattern))]
        patterns.append(("items", any_span_glob(log_config.catalog_pattern)))
        if log_config.users_pattern:
            patterns.append(("users", any_span_glob(log_config.users_pattern)))
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
