"""The pipeline factory: one DAG for every runner (local, Kubeflow, Airflow).

It only wires components. Importing it loads neither keras-nlp nor the
model, Trainer or export code: components name their code by module path.
"""

from __future__ import annotations

import json
import os
from typing import List, Optional

from tfx import v1 as tfx
from tfx.orchestration import pipeline as tfx_pipeline

import schemas
from components.anomalies_gate import AnomaliesGate
from components.atomic_pusher import AtomicPusher
from components.compatible_evaluator import CompatibleBaselineEvaluator
from components.drift_gate import DriftGate
from components import spans
from components.log_config import LogConfig
from components.log_example_gen import InteractionLogExampleGen
from components.task_selector import TaskSelector
from components.text_embedder import TextEmbedder
from components.trainer import COMPACT_MODEL_KEY, Trainer
from components.tuner import Tuner
from pipeline import custom_configs, fingerprint
from pipeline import eval_config as eval_config_lib
from pipeline.vertex_training import VertexTraining
from trainer.config import ModelConfig
from trainer.search_space import TuningConfig

PREPROCESSING_FN = "trainer.transform.preprocessing_fn"
TEXT_EMBEDDING_CACHE = "text_embedding_cache"  # under the pipeline root
RUN_FN = "trainer.task.run_fn"
TUNER_FN = "trainer.tuning.tuner_fn"


COMPACT_EVALUATOR, COMPACT_PUSHER = "CompactEvaluator", "CompactPusher"


def compact_push_base(push_base: str) -> str:
    """The compact model's TF Serving base path: ``<push_base>_compact``."""
    return push_base.rstrip("/") + "_compact"


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
    tuning: Optional[dict] = None,
    vertex_training: Optional[dict] = None,
    image: Optional[str] = None,
) -> tfx_pipeline.Pipeline:
    """ExampleGen -> statistics -> schema check -> Transform and TextEmbedder ->
    Trainer -> Evaluator -> Pusher.

    Args:
      pipeline_name: the pipeline's name in ML Metadata and the orchestrator.
      pipeline_root: where every component writes its outputs.
      data_dir: the raw logs (``log_config`` says which files and fields).
      push_base: TF Serving's model base path; versions go to ``<push_base>/<version>``.
      train_steps, eval_steps: Trainer steps over all epochs, and validation steps.
      log_config: how to read the logs (patterns, formats, fields, labels, split).
      model_config: ``ModelConfig`` overrides as a dict (validated here, before any run).
      eval_thresholds: per-task overrides of each ``Task.threshold``.
      beam_pipeline_args: Beam arguments for every Beam stage (runner, workers).
      metadata_connection_config: ML Metadata connection (None: the runner's).
      enable_cache: reuse outputs of components whose inputs did not change.
      schema_path: the curated schema the data must match.
      tuning: ``TuningConfig`` settings as a dict: adds the Tuner, whose best
        hyperparameters the Trainer takes (None: no Tuner, the ModelConfig's own).
      vertex_training: ``VertexTraining`` settings as a dict: the Trainer runs as
        a Vertex AI custom job on that many workers (None: in its own process).
      image: the pipeline's container image, the Vertex job's default.
    """
    log_config = log_config or LogConfig()
    # The log's rating scale reaches the rating head unless the model config sets its own.
    model_config = {
        "rating_range": [log_config.rating_min, log_config.rating_max],
        **(model_config or {}),
    }
    model_settings = ModelConfig.from_dict(model_config)
    trainer_code = fingerprint.source_fingerprint(["trainer"])  # Transform's and Trainer's

    # Reads the logs into train/eval tf.Examples (joins, histories, labels, dead letters).
    example_gen = InteractionLogExampleGen(
        input_base=data_dir,
        log_config=log_config,
        code_version=fingerprint.source_fingerprint(["components"]),
    )
    # TFDV statistics of each split.
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    # The curated schema, imported (never re-inferred).
    schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_path)
    # The tasks the data has labels for (or the model config's own list).
    task_selector = TaskSelector(
        statistics=statistics_gen.outputs["statistics"],
        tasks=json.dumps(list(model_settings.tasks)) if model_settings.tasks else "",
        min_task_labels=model_settings.min_task_labels,
    )
    active_tasks = task_selector.outputs["active_tasks"]
    # Anomalies of the statistics against the schema.
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    # Stops the run on any anomaly.
    anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"])
    # The last run's statistics (resolved before this run's StatisticsGen, a
    # start node as ExampleGen is) and the gate that stops the run when today's
    # data drifted from them beyond the schema's drift comparators.
    previous_statistics = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
        statistics=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ExampleStatistics),
    ).with_id("previous_statistics_resolver")
    drift_gate = DriftGate(
        statistics=statistics_gen.outputs["statistics"],
        schema=schema_gen.outputs["schema"],
        previous_statistics=previous_statistics.outputs["statistics"],
    )
    # Vocabularies and token ids (TF Transform), after the gate.
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config=custom_configs.transform_config(trainer_code),
    )
    transform.add_upstream_node(anomalies_gate)
    transform.add_upstream_node(drift_gate)
    # Every item's text through the frozen pretrained encoder, once (Beam
    # RunInference, cached by encoder and text), after the gate.
    text_embedder = None
    if model_settings.pretrained_text_encoder:
        text_embedder = TextEmbedder(
            examples=example_gen.outputs["examples"],
            encoder=model_settings.pretrained_text_encoder,
            cache_dir=os.path.join(pipeline_root, TEXT_EMBEDDING_CACHE),
            max_length=model_settings.pretrained_text_length,
            code_version=trainer_code,
        )
        text_embedder.add_upstream_node(anomalies_gate)
        text_embedder.add_upstream_node(drift_gate)
    embeddings = text_embedder.outputs["text_embeddings"] if text_embedder else None
    # A KerasTuner search over the model's main hyperparameters (optional).
    tuner = None
    if tuning is not None:
        tuning_settings = TuningConfig.from_dict(tuning)
        tuner = Tuner(
            tuner_fn=TUNER_FN,
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=schema_gen.outputs["schema"],
            train_args=tfx.proto.TrainArgs(num_steps=tuning_settings.trial_steps),
            eval_args=tfx.proto.EvalArgs(num_steps=tuning_settings.eval_steps),
            custom_config=custom_configs.tuner_config(
                model_config, tuning_settings.to_dict(), trainer_code
            ),
            text_embeddings=embeddings,
            active_tasks=active_tasks,
        )
    # The latest blessed model: the Evaluator's baseline, the Trainer's warm start.
    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    # The multi-task model, trained and exported with every serving signature:
    # in the component's own process, or as a Vertex AI job on several workers.
    trainer_class, trainer_custom_config = (
        Trainer,
        custom_configs.trainer_config(model_config, trainer_code),
    )
    vertex = VertexTraining.from_dict(vertex_training)
    if vertex is not None:
        from components.vertex_trainer import VertexTrainer  # Google's clients: only when used

        trainer_class = VertexTrainer
        trainer_custom_config.update(vertex.custom_config(image))
    trainer = trainer_class(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(num_steps=train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=eval_steps),
        custom_config=trainer_custom_config,
        text_embeddings=embeddings,
        hyperparameters=tuner.outputs["best_hyperparameters"] if tuner else None,
        active_tasks=active_tasks,
        base_model=(
            model_resolver.outputs["model"]
            if model_settings.warm_starts(spans.uses_spans(log_config.events_pattern))
            else None
        ),
        compact_model=bool(model_settings.compact_weights),
    ).with_id("Trainer")  # one name in ML Metadata, the spec and the pipeline root
    # TFMA per task and per category: thresholds and no regression against the
    # baseline, for the tasks the model was trained on (read from its export).
    eval_config = eval_config_lib.build_eval_config(
        eval_thresholds,
        model_settings.active_task_names(),
        model_settings.retrieval_ks,
        model_settings.rating_range,
    )
    evaluator = CompatibleBaselineEvaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=eval_config,
    ).with_id("Evaluator")
    # Copies a blessed model to <push_base>/<version> in one rename.
    pusher = AtomicPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=push_base)
        ),
    )

    # The compact model, when the model config asks for one: judged against
    # this run's full model with the same thresholds and regression
    # tolerances, pushed beside it as its own TF Serving model.
    compact = []
    if model_settings.compact_weights:
        compact_evaluator = CompatibleBaselineEvaluator(
            examples=example_gen.outputs["examples"],
            model=trainer.outputs[COMPACT_MODEL_KEY],
            baseline_model=trainer.outputs["model"],
            eval_config=eval_config,
        ).with_id(COMPACT_EVALUATOR)
        compact_pusher = AtomicPusher(
            model=trainer.outputs[COMPACT_MODEL_KEY],
            model_blessing=compact_evaluator.outputs["blessing"],
            push_destination=tfx.proto.PushDestination(
                filesystem=tfx.proto.PushDestination.Filesystem(
                    base_directory=compact_push_base(push_base)
                )
            ),
        ).with_id(COMPACT_PUSHER)
        compact = [compact_evaluator, compact_pusher]

    return tfx_pipeline.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[
            previous_statistics,
            example_gen,
            statistics_gen,
            task_selector,
            schema_gen,
            example_validator,
            anomalies_gate,
            drift_gate,
            transform,
            *([text_embedder] if text_embedder else []),
            *([tuner] if tuner else []),
            trainer,
            model_resolver,
            evaluator,
            pusher,
            *compact,
        ],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [],
    )
