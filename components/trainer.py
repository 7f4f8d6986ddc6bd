"""The TFX Trainer with one more input: the TextEmbedder's item text embeddings.

TFX's Trainer has a fixed set of inputs, so this component declares
``TrainerSpec``'s plus an optional ``text_embeddings`` channel; its executor is
TFX's ``GenericExecutor``, which it hands the artifact's URI through
``custom_config[TEXT_EMBEDDINGS_URI]`` so ``run_fn`` finds the table. Everything
else (``run_fn``, train/eval args, outputs, caching) is the stock Trainer's.
"""

from typing import Any, Dict, List, Optional, Tuple

from tfx import types
from tfx.components.trainer import executor as trainer_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import trainer_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import json_utils

from components.text_embedder import TextEmbeddings
from trainer.config import TEXT_EMBEDDINGS_URI

TEXT_EMBEDDINGS_KEY = "text_embeddings"


class TrainerWithTextEmbeddingsSpec(standard_component_specs.TrainerSpec):
    INPUTS = {
        **standard_component_specs.TrainerSpec.INPUTS,
        TEXT_EMBEDDINGS_KEY: ChannelParameter(type=TextEmbeddings, optional=True),
    }


def with_text_embeddings_uri(
    input_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]
) -> Tuple[Dict[str, List[types.Artifact]], Dict[str, Any]]:
    """The stock executor's inputs: ``text_embeddings`` taken out of
    ``input_dict`` and its URI put in ``custom_config[TEXT_EMBEDDINGS_URI]``."""
    input_dict = dict(input_dict)
    embeddings = input_dict.pop(TEXT_EMBEDDINGS_KEY, None) or []
    if embeddings:
        key = standard_component_specs.CUSTOM_CONFIG_KEY
        custom = json_utils.loads(exec_properties.get(key) or "null") or {}
        custom[TEXT_EMBEDDINGS_URI] = embeddings[0].uri
        exec_properties = {**exec_properties, key: json_utils.dumps(custom)}
    return input_dict, exec_properties


class TextEmbeddingsUri:
    """Executor mixin: runs the stock executor's ``Do`` with the text
    embeddings' URI in ``custom_config`` (``with_text_embeddings_uri``)."""

    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        input_dict, exec_properties = with_text_embeddings_uri(input_dict, exec_properties)
        super().Do(input_dict, output_dict, exec_properties)


class Executor(TextEmbeddingsUri, trainer_executor.GenericExecutor):
    """GenericExecutor, with the text embeddings' URI in ``custom_config``."""


class Trainer(base_component.BaseComponent):
    """TFX's Trainer (``run_fn`` form) plus ``text_embeddings``."""

    SPEC_CLASS = TrainerWithTextEmbeddingsSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        transform_graph: types.BaseChannel,
        schema: types.BaseChannel,
        run_fn: str,
        train_args: trainer_pb2.TrainArgs,
        eval_args: trainer_pb2.EvalArgs,
        custom_config: Optional[Dict[str, Any]] = None,
        text_embeddings: Optional[types.BaseChannel] = None,
        hyperparameters: Optional[types.BaseChannel] = None,
    ):
        """Args are the stock Trainer's, the TextEmbedder's output (None: off)
        and the Tuner's ``best_hyperparameters`` (None: the ModelConfig's own)."""
        spec = TrainerWithTextEmbeddingsSpec(
            examples=examples,
            transform_graph=transform_graph,
            schema=schema,
            train_args=train_args,
            eval_args=eval_args,
            run_fn=run_fn,
            custom_config=json_utils.dumps(custom_config),
            text_embeddings=text_embeddings,
            hyperparameters=hyperparameters,
            model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun),
        )
        super().__init__(spec=spec)
