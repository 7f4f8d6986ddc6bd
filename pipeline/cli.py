"""``recsys-pipeline``: run locally, compile for Kubeflow, show the Airflow schedule.

    recsys-pipeline [run] [--data-dir ...]                  # LocalDagRunner (default)
    recsys-pipeline compile-kubeflow --config pipeline/environments/kubeflow.json \\
        --image gcr.io/p/recsys:1.0 --pipeline-root gs://bucket/root --output recsys.json
    recsys-pipeline airflow-schedule --config pipeline/environments/airflow.json
    recsys-pipeline infer-schema --data-dir logs/ [--log-config c.json] --output my.pbtxt
    recsys-pipeline skew --request-log '/logs/requests-*.tfrecord' [--work-dir runs/local]
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from trainer import keras_env as _keras_env  # noqa: F401  (before TF)

from pipeline import configs, local_runner

COMMANDS = ("run", "compile-kubeflow", "airflow-schedule", "infer-schema", "skew")


def _environment(path: str, runner: str, **flags) -> configs.RunConfig:
    """The file's settings for ``runner``, with the flags given over them."""
    try:
        return configs.RunConfig.from_sources(flags, path, runner=runner)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from e


def compile_kubeflow(argv: List[str]) -> int:
    p = argparse.ArgumentParser(
        prog="recsys-pipeline compile-kubeflow",
        description="Compile the pipeline to a KFP/Vertex pipeline spec (JSON).",
    )
    p.add_argument("--config", default=f"{configs.ENVIRONMENTS_DIR}/kubeflow.json")
    p.add_argument("--image", help="pipeline container image (overrides the config)")
    p.add_argument("--pipeline-root", help="e.g. gs://bucket/pipeline_root (overrides the config)")
    p.add_argument("--output", default="recsys_pipeline.json")
    args = p.parse_args(argv)
    config = _environment(
        args.config, "kubeflow", image=args.image, pipeline_root_dir=args.pipeline_root
    )
    from pipeline import runners

    path = runners.compile_kubeflow(config, args.output)
    print(f"pipeline spec written to {path} (image {config.image}, root {config.pipeline_root})")
    return 0


def airflow_schedule(argv: List[str]) -> int:
    p = argparse.ArgumentParser(
        prog="recsys-pipeline airflow-schedule",
        description="Print the Airflow DAG's schedule from its config.",
    )
    p.add_argument("--config", default=f"{configs.ENVIRONMENTS_DIR}/airflow.json")
    args = p.parse_args(argv)
    config = _environment(args.config, "airflow")
    print(
        f"dag_id={config.pipeline_name} schedule={config.schedule} start_date={config.start_date} "
        f"catchup=False"
    )
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "run"
    if command == "compile-kubeflow":
        return compile_kubeflow(argv)
    if command == "airflow-schedule":
        return airflow_schedule(argv)
    if command == "infer-schema":
        from pipeline import infer_schema

        return infer_schema.main(argv)
    if command == "skew":
        from pipeline import skew

        return skew.main(argv)
    return local_runner.main(argv)


if __name__ == "__main__":
    sys.exit(main())
