"""Command line for local runs with LocalDagRunner (MLMD in SQLite).

recsys-pipeline                         # synthetic logs, default settings
recsys-pipeline --data-dir /path/logs   # your own logs
recsys-pipeline --config pipeline/environments/local.json --train-steps 50
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
from typing import Any, Dict, List, Optional

from trainer import keras_env as _keras_env  # noqa: F401  (must run before TF)

import schemas
from components.log_config import LogConfig
from datagen import synthetic
from pipeline import configs, run_report, run_summary

DEFAULT_SYNTHETIC_DIR = "data/synthetic"


def check_data_dir(data_dir: str, log_config: LogConfig = LogConfig()) -> None:
    """Fails early, naming the path, when the input is missing or empty."""
    if not os.path.isdir(data_dir):
        raise SystemExit(f"error: data path {data_dir!r} does not exist or is not a directory")
    inputs = [
        ("event logs", log_config.events_pattern),
        ("item catalogue", log_config.catalog_pattern),
    ]
    if log_config.users_pattern:
        inputs.append(("user table", log_config.users_pattern))
    for what, pattern in inputs:
        files = glob.glob(os.path.join(data_dir, pattern))
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
    given = vars(p.parse_args(argv))
    return argparse.Namespace(**{**DEFAULTS, **given}, given=set(given))


def _from_file(path: str) -> configs.RunConfig:
    config = configs.RunConfig.from_file(path)
    if config.runner != "local":
        raise SystemExit(f"error: {path} is for the {config.runner!r} runner, not 'local'")
    return config


def build_run_config(args: argparse.Namespace) -> configs.RunConfig:
    """The run's settings: flags given, then the --config file, then defaults."""
    given = getattr(args, "given", set(vars(args)))
    base = _from_file(args.config) if args.config else None

    def setting(flag: str, field: str, transform=lambda v: v):
        if flag in given or base is None:
            value = getattr(args, flag)
            return None if value is None else transform(value)
        return getattr(base, field)

    work_dir = os.path.abspath(setting("work_dir", "work_dir"))
    data_dir = setting("data_dir", "data_dir")
    if data_dir is None:
        data_dir = os.path.join(work_dir, DEFAULT_SYNTHETIC_DIR)
        config = synthetic.GeneratorConfig(
            num_impressions=args.synthetic_impressions, seed=args.seed
        )
        manifest = synthetic.ensure_dataset(data_dir, config)
        logging.info(
            "Synthetic logs in %s: %s (Bayes click AUC %.4f)",
            data_dir,
            manifest["event_counts"],
            manifest["bayes_click_auc"],
        )

    def read_log_config(path: str) -> LogConfig:
        with open(path) as f:
            return LogConfig.from_dict(json.load(f))

    log_config = setting("log_config", "log_config", read_log_config) or LogConfig()
    check_data_dir(data_dir, log_config)
    model_config = dict(setting("model_config", "model_config") or {})
    if "epochs" in given and not ("model_config" in given and "epochs" in model_config):
        model_config["epochs"] = args.epochs  # over the file's model_config
    elif base is None:
        model_config.setdefault("epochs", args.epochs)
    return configs.RunConfig(
        data_dir=os.path.abspath(data_dir),
        work_dir=work_dir,
        serving_dir=setting("serving_dir", "serving_dir", os.path.abspath),
        pipeline_root_dir=setting("pipeline_root", "pipeline_root_dir", os.path.abspath),
        model_name=setting("model_name", "model_name"),
        train_steps=setting("train_steps", "train_steps"),
        eval_steps=setting("eval_steps", "eval_steps"),
        beam_args=setting("beam_args", "beam_args") or configs.default_beam_args(data_dir),
        model_config=model_config,
        eval_thresholds=setting("eval_thresholds", "eval_thresholds"),
        log_config=log_config,
        schema_path=os.path.abspath(setting("schema", "schema_path")),
        enable_cache=not args.no_cache
        if ("no_cache" in given or base is None)
        else base.enable_cache,
    )


def local_pipeline(config: configs.RunConfig):
    """The pipeline for ``config`` with ML Metadata in SQLite under its work dir."""
    from tfx import v1 as tfx
    from pipeline import fingerprint, runners

    os.makedirs(config.work_dir, exist_ok=True)
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
    """Runs the pipeline with LocalDagRunner and returns the run summary.

    When a model was pushed, serves it with the local gRPC server and asks it
    for one user's recommendations (``summary["grpc_query"]``).
    """
    from tfx import v1 as tfx
    from trainer.config import ModelConfig

    ModelConfig.from_dict(config.model_config)  # fail before any component runs
    tfx.orchestration.LocalDagRunner().run(local_pipeline(config))
    summary = run_summary.summarize(config.metadata_path)
    if summary["pushed"] and query_served_model:
        from serving import demo

        summary["grpc_query"] = demo.recommend_over_grpc(
            config.model_name,
            config.push_base,
            config.data_dir,
            summary["examples_uri"],
            config.log_config,
        )
    run_summary.write_summary(summary, config.work_dir)
    run_report.write_report(summary, config.work_dir)
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("absl").setLevel(logging.INFO)
    args = parse_args(argv)
    config = build_run_config(args)
    summary = run(config)
    print(run_summary.format_summary(summary, config.work_dir), flush=True)
    if summary.get("grpc_query"):
        from serving.demo import format_recommendations

        print(format_recommendations(summary["grpc_query"]), flush=True)
        print(
            f"  serve it: .venv/bin/recsys-serve --model_name={config.model_name} "
            f"--model_base_path={config.push_base}",
            flush=True,
        )
    return 0 if summary["pushed"] else 1


if __name__ == "__main__":
    sys.exit(main())
