"""Command line for local runs with LocalDagRunner (MLMD in SQLite).

    recsys-pipeline                         # synthetic logs, default settings
    recsys-pipeline --data-dir /path/logs   # your own logs
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
from typing import List, Optional

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
    inputs = [("event logs", log_config.events_pattern), ("item catalogue", log_config.catalog_pattern)]
    if log_config.users_pattern:
        inputs.append(("user table", log_config.users_pattern))
    for what, pattern in inputs:
        files = glob.glob(os.path.join(data_dir, pattern))
        if not any(os.path.isfile(f) and os.path.getsize(f) for f in files):
            raise SystemExit(f"error: no {what}: nothing non-empty matches "
                             f"{os.path.join(data_dir, pattern)!r}")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Run the recommender pipeline locally.")
    p.add_argument("--data-dir", help="raw logs (events/*.jsonl + items.jsonl); "
                   "default: generate synthetic logs under <work-dir>/" + DEFAULT_SYNTHETIC_DIR)
    p.add_argument("--work-dir", default="runs/local",
                   help="pipeline root, MLMD database and default serving dir (default: %(default)s)")
    p.add_argument("--pipeline-root", help="where components write their outputs "
                   "(default: <work-dir>/pipeline_root)")
    p.add_argument("--serving-dir", help="TF Serving model base dir (default: <work-dir>/serving)")
    p.add_argument("--model-name", default=configs.MODEL_NAME)
    p.add_argument("--synthetic-impressions", type=int, default=20_000,
                   help="size of the generated logs when --data-dir is not given")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--eval-steps", type=int, default=50)
    p.add_argument("--model-config", default="{}",
                   help="JSON overrides of trainer.config.ModelConfig")
    p.add_argument("--beam-arg", action="append", dest="beam_args", default=None,
                   help="a Beam pipeline argument, repeatable (default: DirectRunner, "
                        "in-memory for small inputs, multi-processing for large)")
    p.add_argument("--log-config", help="JSON file with a components.log_config.LogConfig: "
                   "file patterns and formats, field names, label windows, split, bad-row limit")
    p.add_argument("--schema", default=schemas.SCHEMA_PATH,
                   help="curated schema to validate against (default: %(default)s)")
    p.add_argument("--no-cache", action="store_true", help="re-run every component")
    return p.parse_args(argv)


def build_run_config(args: argparse.Namespace) -> configs.RunConfig:
    data_dir = args.data_dir
    if data_dir is None:
        data_dir = os.path.join(args.work_dir, DEFAULT_SYNTHETIC_DIR)
        config = synthetic.GeneratorConfig(num_impressions=args.synthetic_impressions,
                                           seed=args.seed)
        manifest = synthetic.ensure_dataset(data_dir, config)
        logging.info("Synthetic logs in %s: %s (Bayes click AUC %.4f)", data_dir,
                     manifest["event_counts"], manifest["bayes_click_auc"])
    log_config = LogConfig()
    if args.log_config:
        with open(args.log_config) as f:
            log_config = LogConfig.from_dict(json.load(f))
    check_data_dir(data_dir, log_config)
    model_config = json.loads(args.model_config)
    model_config.setdefault("epochs", args.epochs)
    return configs.RunConfig(
        data_dir=os.path.abspath(data_dir),
        work_dir=os.path.abspath(args.work_dir),
        serving_dir=os.path.abspath(args.serving_dir) if args.serving_dir else None,
        pipeline_root_dir=os.path.abspath(args.pipeline_root) if args.pipeline_root else None,
        model_name=args.model_name,
        train_steps=args.train_steps,
        eval_steps=args.eval_steps,
        beam_args=args.beam_args or configs.default_beam_args(data_dir),
        model_config=model_config,
        log_config=log_config,
        schema_path=os.path.abspath(args.schema),
        enable_cache=not args.no_cache)


def run(config: configs.RunConfig, query_served_model: bool = True) -> dict:
    """Runs the pipeline with LocalDagRunner and returns the run summary.

    When a model was pushed, serves it with the local gRPC server and asks it
    for one user's recommendations (``summary["grpc_query"]``).
    """
    from tfx import v1 as tfx
    from pipeline import fingerprint, runners
    from trainer.config import ModelConfig

    ModelConfig.from_dict(config.model_config)  # fail before any component runs
    os.makedirs(config.work_dir, exist_ok=True)
    # A copy named by content, so an edited schema invalidates the cache.
    schema_file = fingerprint.content_addressed_copy(
        config.schema_path, os.path.join(config.pipeline_root, "_schemas"))
    pipeline = runners.pipeline_for(
        config, schema_file,
        tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path))
    tfx.orchestration.LocalDagRunner().run(pipeline)
    summary = run_summary.summarize(config.metadata_path)
    if summary["pushed"] and query_served_model:
        from serving import demo
        summary["grpc_query"] = demo.recommend_over_grpc(
            config.model_name, config.push_base, config.data_dir, summary["examples_uri"],
            config.log_config)
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
        print(f"  serve it: .venv/bin/recsys-serve --model_name={config.model_name} "
              f"--model_base_path={config.push_base}", flush=True)
    return 0 if summary["pushed"] else 1


if __name__ == "__main__":
    sys.exit(main())
