"""The TFX Tuner with two more inputs: the TextEmbedder's item text
embeddings and the TaskSelector's active tasks.

Like ``components.trainer``: TunerSpec's inputs plus optional
``text_embeddings`` and ``active_tasks`` channels, which the executor (TFX's
own Tuner executor) hands ``tuner_fn`` through ``custom_config``. Outputs, caching and
``best_hyperparameters`` are the stock Tuner's.
"""

from typing import Any, Dict, Optional

from tfx import types
from tfx.components.tuner import executor as tuner_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import trainer_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.utils import json_utils

from components.trainer import EXTRA_INPUTS, ExtraInputs


class TunerWithTextEmbeddingsSpec(standard_component_specs.TunerSpec):
    INPUTS = {**standard_component_specs.TunerSpec.INPUTS, **EXTRA_INPUTS}


class Executor(ExtraInputs, tuner_executor.Executor):
    """TFX's Tuner executor, with the extra inputs in ``custom_config``."""


class Tuner(base_component.BaseComponent):
    """TFX's Tuner (``tuner_fn`` form) plus ``text_embeddings``."""

    SPEC_CLASS = TunerWithTextEmbeddingsSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        transform_graph: types.BaseChannel,
        schema: types.BaseChannel,
        tuner_fn: str,
        train_args: trainer_pb2.TrainArgs,
        eval_args: trainer_pb2.EvalArgs,
        custom_config: Optional[Dict[str, Any]] = None,
        text_embeddings: Optional[types.BaseChannel] = None,
        active_tasks: Optional[types.BaseChannel] = None,
    ):
        """Args are the stock Tuner's, the TextEmbedder's output (None: off) and
        the TaskSelector's (None: the ModelConfig's tasks)."""
        spec = TunerWithTextEmbeddingsSpec(
            examples=examples,
            transform_graph=transform_graph,
            schema=schema,
            tuner_fn=tuner_fn,
            train_args=train_args,
            eval_args=eval_args,
            custom_config=json_utils.dumps(custom_config),
            text_embeddings=text_embeddings,
            active_tasks=active_tasks,
            best_hyperparameters=types.Channel(type=standard_artifacts.HyperParameters),
            tuner_results=types.Channel(type=standard_artifacts.TunerResults),
        )
        super().__init__(spec=spec)
