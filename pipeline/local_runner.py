"""Command line for local runs with LocalDagRunner (MLMD in SQLite).

recsys-pipeline                         # synthetic logs, default settings
recsys-pipeline --data-dir /path/logs   # your own logs
recsys-pipeline --config pipeline/environments/local.json --train-steps 50
recsys-pipeline --verbose               # every log line on the terminal, as well as in the log

The terminal shows one line per component, Keras' per-epoch lines, the warnings
that matter and the summary; the rest goes to ``<work-dir>/logs/run-<time>.log``
(``pipeline/console.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import logging
import os
import sys
from typing import Any, Dict, List, Optional

from trainer import keras_env as _keras_env  # noqa: F401  (must run before TF)

import schemas
from components import spans
from components.log_config import LogConfig
from datagen import synthetic
from pipeline import configs, console

DEFAULT_SYNTHETIC_DIR = "data/synthetic"


def check_data_dir(data_dir: str, log_config: LogConfig = LogConfig()) -> None:
    """Fails early, naming the path, when the input is missing or empty (with
    span specs: when no span has a non-empty file)."""
    if not os.path.isdir(data_dir):
        raise SystemExit(f"error: data path {data_dir!r} does not exist or is not a directory")
    inputs = [
        ("event logs", log_config.events_pattern),
        ("item catalogue", log_config.catalog_pattern),
    ]
    if log_config.users_pattern:
        inputs.append(("user table", log_config.users_pattern))
    for what, pattern in inputs:
        files = glob.glob(os.path.join(data_dir, spans.any_span_glob(pattern)))
        if not any(os.path.isfile(f) and os.path.getsize(f) for f in files):
            raise SystemExit(
                f"error: no {what}: nothing non-empty matches {os.path.join(data_dir, pattern)!r}"
            )


def _json_object(text: str) -> Dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e}): {text!r}") from e
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


# Flag defaults; with --config, the file's settings come before these and
# flags given on the command line come before both.
DEFAULTS: Dict[str, Any] = dict(
    config=None,
    data_dir=None,
    work_dir="runs/local",
    pipeline_root=None,
    serving_dir=None,
    model_name=configs.MODEL_NAME,
    synthetic_impressions=20_000,
    seed=42,
    epochs=3,
    train_steps=300,
    eval_steps=50,
    model_config=None,
    eval_thresholds=None,
    beam_args=None,
    log_config=None,
    schema=schemas.SCHEMA_PATH,
    no_cache=False,
    verbose=False,
)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parses the flags; ``given`` on the result names those on the command line."""
    p = argparse.ArgumentParser(
        description="Run the recommender pipeline locally.", argument_default=argparse.SUPPRESS
    )
    p.add_argument(
        "--config",
        help="JSON environment file (a pipeline.configs.RunConfig with runner "
        "'local', e.g. pipeline/environments/local.json); flags override its settings",
    )
    p.add_argument(
        "--data-dir",
        help="raw logs (events/*.jsonl + items.jsonl); "
        "default: generate synthetic logs under <work-dir>/" + DEFAULT_SYNTHETIC_DIR,
    )
    p.add_argument(
        "--work-dir",
        help="pipeline root, MLMD database and default serving dir "
        f"(default: {DEFAULTS['work_dir']})",
    )
    p.add_argument(
        "--pipeline-root",
        help="where components write their outputs (default: <work-dir>/pipeline_root)",
    )
    p.add_argument("--serving-dir", help="TF Serving model base dir (default: <work-dir>/serving)")
    p.add_argument("--model-name", help=f"(default: {DEFAULTS['model_name']})")
    p.add_argument(
        "--synthetic-impressions",
        type=int,
        help="size of the generated logs when --data-dir is not given "
        f"(default: {DEFAULTS['synthetic_impressions']})",
    )
    p.add_argument("--seed", type=int, help=f"synthetic logs' seed (default: {DEFAULTS['seed']})")
    p.add_argument("--epochs", type=int, help=f"(default: {DEFAULTS['epochs']})")
    p.add_argument("--train-steps", type=int, help=f"(default: {DEFAULTS['train_steps']})")
    p.add_argument("--eval-steps", type=int, help=f"(default: {DEFAULTS['eval_steps']})")
    p.add_argument(
        "--model-config", type=_json_object, help="JSON overrides of trainer.config.ModelConfig"
    )
    p.add_argument(
        "--eval-thresholds",
        type=_json_object,
        help='JSON per-task blessing bounds, e.g. \'{"click": 0.7, "rating": 1.2}\'',
    )
    p.add_argument(
        "--beam-arg",
        action="append",
        dest="beam_args",
        help="a Beam pipeline argument, repeatable (default: DirectRunner, "
        "in-memory for small inputs, multi-processing for large)",
    )
    p.add_argument(
        "--log-config",
        help="JSON file with a components.log_config.LogConfig: "
        "file patterns and formats, field names, label windows, split, bad-row limit",
    )
    p.add_argument(
        "--schema", help=f"curated schema to validate against (default: {DEFAULTS['schema']})"
    )
    p.add_argument("--no-cache", action="store_true", help="re-run every component")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="every log line on the terminal (by default they go to <work-dir>/logs/ only)",
    )
    given = vars(p.parse_args(argv))
    return argparse.Namespace(**{**DEFAULTS, **given}, given=set(given))


# Flags that name a RunConfig field differently.
_FIELD_OF_FLAG = {"pipeline_root": "pipeline_root_dir", "schema": "schema_path"}
# Flags of the data-generation step and of the terminal, not of the run.
_NOT_RUN_FLAGS = ("synthetic_impressions", "seed", "verbose")


def build_run_config(args: argparse.Namespace) -> configs.RunConfig:
    """The run's settings: flags given, then the --config file, then defaults
    (``RunConfig.from_sources``). ``data_dir`` stays None when no source names
    one: ``with_data`` generates synthetic logs."""
    given = getattr(args, "given", set(vars(args)))
    flags = {
        _FIELD_OF_FLAG.get(flag, flag): getattr(args, flag)
        for flag in given
        if flag not in ("config", "given", "no_cache", "log_config", *_NOT_RUN_FLAGS)
    }
    if "no_cache" in given:
        flags["enable_cache"] = not args.no_cache
    try:
        if "log_config" in given:
            flags["log_config"] = LogConfig.from_file(args.log_config)
        return configs.RunConfig.from_sources(flags, args.config, runner="local")
    except ValueError as e:
        raise SystemExit(f"error: {e}") from e


def with_data(
    config: configs.RunConfig, synthetic_impressions: int, seed: int
) -> configs.RunConfig:
    """``config`` with its data: unchanged when it names a data dir, else with
    synthetic logs generated (once) under ``<work_dir>/data/synthetic``."""
    if config.data_dir is not None:
        return config
    data_dir = os.path.join(config.work_dir, DEFAULT_SYNTHETIC_DIR)
    manifest = synthetic.ensure_dataset(
        data_dir, synthetic.GeneratorConfig(num_impressions=synthetic_impressions, seed=seed)
    )
    logging.info(
        "Synthetic logs in %s: %s (Bayes click AUC %.4f)",
        data_dir,
        manifest["event_counts"],
        manifest["bayes_click_auc"],
    )
    return dataclasses.replace(config, data_dir=data_dir)


def local_pipeline(config: configs.RunConfig):
    """The pipeline for ``config`` with ML Metadata in SQLite under its work dir."""
    from tfx import v1 as tfx
    from pipeline import fingerprint, runners

    os.makedirs(config.work_dir, exist_ok=True)
    if not config.beam_args:
        config = dataclasses.replace(config, beam_args=configs.default_beam_args(config.data_dir))
    # A copy named by content, so an edited schema invalidates the cache.
    schema_file = fingerprint.content_addressed_copy(
        config.schema_path, os.path.join(config.pipeline_root, "_schemas")
    )
    return runners.pipeline_for(
        config,
        schema_file,
        tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path),
    )


def run(config: configs.RunConfig, query_served_model: bool = True) -> dict:
    """Runs the pipeline with LocalDagRunner and returns the run summary
    (``after_run.finish_run``: summary, report, a query of the pushed model)."""
    from tfx import v1 as tfx

    from pipeline import after_run
    from trainer.config import ModelConfig

    if config.data_dir is None:
        raise ValueError("the run has no data_dir: call with_data first")
    check_data_dir(config.data_dir, config.log_config)
    ModelConfig.from_dict(config.model_config)  # fail before any component runs
    tfx.orchestration.LocalDagRunner().run(local_pipeline(config))
    return after_run.finish_run(config, query_served_model)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    config = build_run_config(args)
    # Before TF, TFX and Beam are imported, so that their output goes to the log too.
    with console.QuietRun(config.work_dir, verbose=args.verbose):
        from pipeline import after_run

        config = with_data(config, args.synthetic_impressions, args.seed)
        summary = run(config)
        # The quiet terminal has shown each component's time already.
        text = after_run.terminal_summary(summary, config, component_times=args.verbose)
        print(text, flush=True)
    return 0 if summary["pushed"] else 1


if __name__ == "__main__":
    sys.exit(main())
