"""The pipeline factory: one DAG for every runner (local, Kubeflow, Airflow)."""

from __future__ import annotations

from typing import List, Optional

from tfx import v1 as tfx
from tfx.orchestration import pipeline as tfx_pipeline

import schemas
from components.anomalies_gate import AnomaliesGate
from components.atomic_pusher import AtomicPusher
from components.compatible_evaluator import CompatibleBaselineEvaluator
from components.log_config import LogConfig
from components.log_example_gen import InteractionLogExampleGen
from pipeline import eval_config as eval_config_lib
from pipeline import fingerprint
from trainer.config import ModelConfig
from trainer.task import CONFIG_KEY
from trainer.text_encoder import preset_vocabulary
from trainer.transform import TEXT_VOCABULARY_FILE

PREPROCESSING_FN = "trainer.transform.preprocessing_fn"
RUN_FN = "trainer.task.run_fn"


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_dir: str,
    push_base: str,
    train_steps: int,
    eval_steps: int,
    log_config: Optional[LogConfig] = None,
    model_config: Optional[dict] = None,
    eval_thresholds: Optional[dict] = None,
    beam_pipeline_args: Optional[List[str]] = None,
    metadata_connection_config=None,
    enable_cache: bool = True,
    schema_path: str = schemas.SCHEMA_PATH,
) -> tfx_pipeline.Pipeline:
    """ExampleGen -> statistics -> schema check -> Transform -> Trainer -> Evaluator -> Pusher."""
    trainer_code = fingerprint.source_fingerprint(["trainer"])
    model_settings = ModelConfig.from_dict(model_config)
    transform_config = {"code_version": trainer_code}
    if model_settings.text_encoder_preset:
        transform_config[TEXT_VOCABULARY_FILE] = preset_vocabulary(
            model_settings.text_encoder_preset
        )
    example_gen = InteractionLogExampleGen(
        input_base=data_dir,
        log_config=log_config,
        code_version=fingerprint.source_fingerprint(["components"]),
    )
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_path)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"])

    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config=transform_config,
    )
    transform.add_upstream_node(anomalies_gate)

    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(num_steps=train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=eval_steps),
        custom_config={CONFIG_KEY: model_config or {}, "code_version": trainer_code},
    )

    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")

    evaluator = CompatibleBaselineEvaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=eval_config_lib.build_eval_config(
            eval_thresholds, model_settings.active_task_names(), model_settings.retrieval_ks
        ),
    ).with_id("Evaluator")

    pusher = AtomicPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=push_base)
        ),
    )

    return tfx_pipeline.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[
            example_gen,
            statistics_gen,
            schema_gen,
            example_validator,
            anomalies_gate,
            transform,
            trainer,
            model_resolver,
            evaluator,
            pusher,
        ],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [],
    )
