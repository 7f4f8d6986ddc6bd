"""``recsys-pipeline infer-schema``: a starting schema for new logs.

    recsys-pipeline infer-schema --data-dir logs/ [--log-config log_config.json] \\
        --output schemas/my_schema.pbtxt

The TFX way: infer a schema once (SchemaGen), curate it, commit it, and let
every run import it (``ImportSchemaGen`` in ``pipeline/pipeline.py``). The
command ingests the logs with the pipeline's own ExampleGen graph
(``components.log_example_gen.build_ingestion``, Beam in-process, as a run
does), computes TFDV statistics of the examples, infers a schema with
``tfdv.infer_schema`` and then applies what the project knows
(``apply_project_knowledge``): every raw feature of ``trainer/features.py``
with its type and presence, the 0/1 labels, non-negative weights, the
timestamps' lower bound, the log config's rating range, and the item
categories this data shows. It writes the schema as a text proto, checks each split
against it as ExampleValidator would, and says what to do next.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

from trainer import keras_env as _keras_env  # noqa: F401  (before TF)

from components.log_config import LogConfig
from pipeline import configs, console, local_runner
from trainer import features as F

PROG = "recsys-pipeline infer-schema"
# The category domain's name; the history's categories share it (as in schemas/schema.pbtxt).
CATEGORY_DOMAIN = F.ITEM_CATEGORY
# TFDV's default: a string feature with more values than this gets no domain.
MAX_STRING_DOMAIN_SIZE = 100
ALL = "all"  # the statistics of both splits together, which the schema is inferred from


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Infer a starting schema from your logs, to curate, commit and pass to "
        "runs with --schema.",
    )
    p.add_argument("--data-dir", required=True, help="raw logs, as for a run")
    p.add_argument(
        "--log-config",
        help="JSON file with a components.log_config.LogConfig, as for a run (default: defaults)",
    )
    p.add_argument("--output", required=True, help="where to write the schema (.pbtxt)")
    p.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    p.add_argument(
        "--work-dir",
        default=local_runner.DEFAULTS["work_dir"],
        help="the log file goes to <work-dir>/logs/ (default: %(default)s)",
    )
    p.add_argument(
        "--beam-arg",
        action="append",
        dest="beam_args",
        help="a Beam pipeline argument, repeatable (default: as a run's)",
    )
    p.add_argument("--verbose", action="store_true", help="every log line on the terminal as well")
    return p.parse_args(argv)


def load_log_config(path: Optional[str]) -> LogConfig:
    """The ``LogConfig`` in the JSON file ``path`` (defaults when None); errors name the file."""
    if path is None:
        return LogConfig()
    try:
        return LogConfig.from_file(path)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from e


def ingest_and_describe(
    data_dir: str, log_config: LogConfig, work: str, beam_args: List[str]
) -> Tuple[Dict[str, int], Dict[str, object]]:
    """Runs the ExampleGen's ingestion graph with TFDV's statistics over its
    examples (train, eval and ``ALL``) in one Beam pipeline; dead letters and the
    ingestion report go to ``work``. Returns (report, statistics per split)."""
    import apache_beam as beam
    import tensorflow_data_validation as tfdv
    from apache_beam.options.pipeline_options import PipelineOptions
    from tfx_bsl.public import tfxio

    from components import log_example_gen as gen
    from components.example_files import Unbatch

    max_timestamp = int(time.time()) + log_config.max_future_seconds  # as the Executor does
    paths = {name: os.path.join(work, f"stats-{name}.pb") for name in (*gen.SPLITS, ALL)}
    with beam.Pipeline(options=PipelineOptions(beam_args)) as pipeline:
        batches = gen.build_ingestion(pipeline, data_dir, log_config, work, max_timestamp)
        splits = {name: b | f"Unbatch[{name}]" >> Unbatch() for name, b in batches.items()}
        examples = {**splits, ALL: list(splits.values()) | "AllSplits" >> beam.Flatten()}
        for name, serialized in examples.items():
            _ = (
                serialized
                | f"Decode[{name}]"
                >> tfxio.TFExampleBeamRecord(
                    physical_format="inmem", telemetry_descriptors=["infer_schema"]
                ).BeamSource()
                | f"Statistics[{name}]" >> tfdv.GenerateStatistics(tfdv.StatsOptions())
                | f"WriteStatistics[{name}]" >> tfdv.WriteStatisticsToBinaryFile(paths[name])
            )
    with open(os.path.join(work, gen.REPORT_FILE)) as f:
        report = json.load(f)
    return report, {name: tfdv.load_stats_binary(path) for name, path in paths.items()}


def _numeric_range(stats, name: str) -> Optional[Tuple[float, float]]:
    """(min, max) of a numeric feature in ``stats`` (None when it has no values)."""
    import tensorflow_data_validation as tfdv

    try:
        num = tfdv.get_feature_stats(stats.datasets[0], tfdv.FeaturePath([name])).num_stats
    except ValueError:  # not in the statistics
        return None
    return num.min, num.max


def apply_project_knowledge(schema, stats, log_config: LogConfig) -> List[str]:
    """Makes TFDV's ``schema`` (inferred from ``stats``) one a run can import;
    returns one note per domain taken from the data, for the file's header.

    Every feature of ``F.RAW_FEATURES``, in that order, with its type: one value
    each (``shape`` and full presence), or a list of 0 to ``history_length``
    values. Ids and text get no domain (new users, items and words are normal);
    the 0/1 labels of the binary tasks an int domain; weights are >= 0;
    timestamps from ``log_config.min_timestamp``; the rating 0 (no rating) or
    the log config's ``rating_min..rating_max``; the item category (and the
    history's categories) the categories seen, when there are at most
    ``MAX_STRING_DOMAIN_SIZE``.
    Features that are not raw features stay as TFDV inferred them.
    """
    from tensorflow_metadata.proto.v0 import schema_pb2

    from components.drift_gate import DEFAULT_DRIFT_COMPARATORS

    types = {"string": schema_pb2.BYTES, "int": schema_pb2.INT, "float": schema_pb2.FLOAT}
    binary_labels = {t.label for t in F.TASKS if t.kind == "binary"}
    regression_labels = {t.label for t in F.TASKS if t.kind == "regression"}
    inferred = {f.name: f for f in schema.feature}
    domains = {d.name: d for d in schema.string_domain}
    categories = sorted(
        {
            value
            for name in (F.ITEM_CATEGORY, F.HISTORY_CATEGORIES)
            if name in inferred and inferred[name].domain in domains
            for value in domains[inferred[name].domain].value
        }
    )
    notes: List[str] = []
    features = []
    for spec in F.RAW_FEATURES:
        feature = schema_pb2.Feature(name=spec.name)
        if spec.name in inferred:
            feature.CopyFrom(inferred[spec.name])
        feature.type = types[spec.dtype]
        feature.ClearField("domain_info")
        if spec.varlen:
            feature.ClearField("shape")
            feature.value_count.min, feature.value_count.max = 0, log_config.history_length
        else:
            feature.ClearField("value_count")
            feature.shape.CopyFrom(schema_pb2.FixedShape(dim=[schema_pb2.FixedShape.Dim(size=1)]))
            feature.presence.min_fraction, feature.presence.min_count = 1.0, 1
        if spec.name in (F.ITEM_CATEGORY, F.HISTORY_CATEGORIES) and categories:
            feature.domain = CATEGORY_DOMAIN
        elif spec.name in binary_labels:
            feature.int_domain.CopyFrom(
                schema_pb2.IntDomain(name=spec.name, min=0, max=1, is_categorical=True)
            )
        elif spec.name in regression_labels:
            low, high = min(0.0, log_config.rating_min), log_config.rating_max
            feature.float_domain.CopyFrom(schema_pb2.FloatDomain(name=spec.name, min=low, max=high))
            seen = _numeric_range(stats, spec.name)
            notes.append(
                f"{spec.name}: {low:g} to {high:g} (0: no {spec.name}; the log config's "
                f"rating_min..rating_max{f', seen up to {seen[1]:g}' if seen else ''})"
            )
        elif spec.role == "weight":
            feature.float_domain.CopyFrom(schema_pb2.FloatDomain(name=spec.name, min=0.0))
        elif spec.name == F.TIMESTAMP:
            feature.int_domain.CopyFrom(
                schema_pb2.IntDomain(name=spec.name, min=log_config.min_timestamp)
            )
        if spec.name in DEFAULT_DRIFT_COMPARATORS:
            comparator, threshold = DEFAULT_DRIFT_COMPARATORS[spec.name]
            getattr(feature.drift_comparator, comparator).threshold = threshold
        features.append(feature)
    raw = {spec.name for spec in F.RAW_FEATURES}
    features += [f for f in schema.feature if f.name not in raw]
    del schema.feature[:]
    schema.feature.extend(features)
    del schema.string_domain[:]
    if categories:
        schema.string_domain.add(name=CATEGORY_DOMAIN, value=categories)
        notes.append(
            f"{F.ITEM_CATEGORY}: the {len(categories)} categories seen ({', '.join(categories[:8])}"
            f"{', ...' if len(categories) > 8 else ''}); a new one will stop a run until added"
        )
    else:
        notes.append(
            f"{F.ITEM_CATEGORY}: no domain (none seen, or more than {MAX_STRING_DOMAIN_SIZE} "
            "categories)"
        )
    return notes


def schema_text(schema, data_dir: str, report: Dict[str, int], notes: List[str]) -> str:
    """The schema as a text proto under a header that says where it came from."""
    from google.protobuf import text_format

    header = [
        f"Starting schema inferred by `{PROG}` from {data_dir}",
        f"({report.get('examples_train', 0)} train and {report.get('examples_eval', 0)} eval "
        f"examples) on {datetime.date.today().isoformat()}:",
        "TFDV's inference, then trainer/features.py's raw features with their types and",
        "presence, 0/1 labels, weights >= 0, timestamps from the log config's min_timestamp.",
        "Domains; review them, edit by hand, commit, and pass this file to runs with --schema:",
        *(f"  {note}" for note in notes),
    ]
    return "".join(f"# {line}\n" for line in header) + text_format.MessageToString(schema)


def next_step(args: argparse.Namespace) -> str:
    """What to do with the written schema, with the exact run command."""
    command = ["recsys-pipeline", "run", "--data-dir", args.data_dir]
    if args.log_config:
        command += ["--log-config", args.log_config]
    command += ["--schema", args.output]
    return (
        f"Next: review and curate {args.output} (a domain seen in this data may need the "
        "values your other logs hold), commit it, and run with it:\n"
        f"  {shlex.join(command)}\n"
        f'  (or "schema_path": "{args.output}" in a --config file). Every run imports it\n'
        "  (ImportSchemaGen) and stops before Transform on data that does not match it."
    )


@contextlib.contextmanager
def _step(quiet: console.QuietRun, text: str):
    """``text ... 1.2 s`` on one terminal line, as a run's components are shown."""
    started = time.time()
    if quiet.terminal:
        quiet.terminal.start_line(f"{text} ...")
    else:
        print(f"{text} ...", flush=True)
    yield
    took = f"{time.time() - started:.1f} s"
    if quiet.terminal:
        quiet.terminal.finish_line(f" {took}", f"{text}: {took}")
    else:
        print(f"{text}: {took}", flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if os.path.exists(args.output) and not args.force:
        raise SystemExit(f"error: {args.output!r} exists; pass --force to overwrite it")
    log_config = load_log_config(args.log_config)
    local_runner.check_data_dir(args.data_dir, log_config)
    beam_args = args.beam_args or configs.default_beam_args(args.data_dir)
    with console.QuietRun(args.work_dir, verbose=args.verbose) as quiet:
        import tensorflow_data_validation as tfdv

        from components import log_example_gen as gen
        from components.anomalies_gate import describe_anomalies

        work = tempfile.mkdtemp(prefix="recsys-infer-schema-")
        dead_letters = os.path.join(work, gen.DEAD_LETTER_DIR)
        try:
            with _step(quiet, f"Ingesting {args.data_dir} and computing statistics"):
                report, stats = ingest_and_describe(args.data_dir, log_config, work, beam_args)
            gen.check_report(report, log_config, dead_letters)
        except (gen.IngestionError, FileNotFoundError, ValueError) as e:  # the run's failures
            raise SystemExit(f"error: {e}") from e
        note = gen.dead_letter_note(report, dead_letters)
        if note:
            logging.warning("%s", note)
        else:
            shutil.rmtree(work, ignore_errors=True)
        with _step(quiet, "Inferring the schema and checking both splits against it"):
            schema = tfdv.infer_schema(stats[ALL], max_string_domain_size=MAX_STRING_DOMAIN_SIZE)
            notes = apply_project_knowledge(schema, stats[ALL], log_config)
            problems = [
                line
                for split in gen.SPLITS
                for line in describe_anomalies(
                    tfdv.validate_statistics(stats[split], schema), split
                )
            ]
        for line in problems:
            logging.warning("%s", line)
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            f.write(schema_text(schema, args.data_dir, report, notes))
        print(
            f"Schema written to {args.output}: {len(schema.feature)} features, from "
            f"{report.get('examples_train', 0)} train and {report.get('examples_eval', 0)} eval "
            f"examples; {'anomalies above' if problems else 'both splits match it'}."
        )
        print("Domains (also in the file's header):")
        for line in notes:
            print(f"  {line}")
        print(next_step(args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
