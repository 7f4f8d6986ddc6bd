"""Thin runners: the same pipeline under LocalDagRunner, Kubeflow V2 or Airflow.

Only the runner and the settings in ``RunConfig`` differ; the DAG always
comes from ``pipeline.create_pipeline``.
"""

from __future__ import annotations

import datetime
import os

from tfx import v1 as tfx

from pipeline import configs
from pipeline.pipeline import create_pipeline


def pipeline_for(config: configs.RunConfig, schema_file: str, metadata_connection_config=None):
    """The pipeline for ``config``; ``schema_file`` is where the runner will read the schema."""
    return create_pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        data_dir=config.data_dir,
        push_base=config.push_base,
        train_steps=config.train_steps,
        eval_steps=config.eval_steps,
        log_config=config.log_config,
        schema_path=schema_file,
        model_config=config.model_config,
        eval_thresholds=config.eval_thresholds,
        beam_pipeline_args=config.beam_args or [],
        metadata_connection_config=metadata_connection_config,
        enable_cache=config.enable_cache,
        tuning=config.tuning,
        vertex_training=config.vertex_training,
        image=config.image,
    )


def image_schema_path(config: configs.RunConfig) -> str:
    """The schema inside the pipeline image (the package is installed there)."""
    return config.schema_path


def compile_kubeflow(config: configs.RunConfig, output_path: str) -> str:
    """Compiles the pipeline to a Kubeflow Pipelines / Vertex pipeline spec (JSON)."""
    if not config.image:
        raise ValueError(
            "a Kubeflow pipeline needs the container image (--image or 'image' in the config)"
        )
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=config.image),
        output_dir=os.path.dirname(os.path.abspath(output_path)),
        output_filename=os.path.basename(output_path),
    )
    runner.run(pipeline_for(config, image_schema_path(config)), write_out=True)
    return output_path


def airflow_dag(config: configs.RunConfig):
    """The Airflow DAG of the pipeline (needs the ``airflow`` extra)."""
    from tfx.orchestration.airflow.airflow_dag_runner import AirflowDagRunner, AirflowPipelineConfig

    start = datetime.datetime.fromisoformat(config.start_date)
    airflow_config = AirflowPipelineConfig(
        airflow_dag_config={
            "schedule_interval": config.schedule,
            "start_date": start,
            "catchup": False,
        }
    )
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)
    return AirflowDagRunner(airflow_config).run(pipeline_for(config, config.schema_path, metadata))
