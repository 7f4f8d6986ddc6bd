"""The TFX Trainer with two more inputs: the TextEmbedder's item text
embeddings and the TaskSelector's active tasks; and, when the model config
asks for one, one more output: the compact serving model (``compact_model``).

TFX's Trainer has a fixed set of inputs, so this component declares
``TrainerSpec``'s plus optional ``text_embeddings`` and ``active_tasks``
channels; its executor is TFX's ``GenericExecutor``, which it hands them
through ``custom_config``: the embeddings' URI as ``TEXT_EMBEDDINGS_URI`` (so
``run_fn`` finds the table), the active tasks as the model config's ``tasks``
and the whole selection as ``TASK_SELECTION`` (which the export records),
the compact model's URI as ``COMPACT_MODEL_URI``.
Everything else (``run_fn``, train/eval args, outputs, caching) is the stock
Trainer's.
"""

from typing import Any, Dict, List, Optional, Tuple

from tfx import types
from tfx.components.trainer import executor as trainer_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import trainer_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import json_utils

from components.task_selector import ActiveTasks, read_selection
from components.text_embedder import TextEmbeddings
from trainer.config import COMPACT_MODEL_URI, CONFIG_KEY, TASK_SELECTION, TEXT_EMBEDDINGS_URI

TEXT_EMBEDDINGS_KEY = "text_embeddings"
ACTIVE_TASKS_KEY = "active_tasks"
EXTRA_INPUTS = {
    TEXT_EMBEDDINGS_KEY: ChannelParameter(type=TextEmbeddings, optional=True),
    ACTIVE_TASKS_KEY: ChannelParameter(type=ActiveTasks, optional=True),
}


COMPACT_MODEL_KEY = "compact_model"


class TrainerWithTextEmbeddingsSpec(standard_component_specs.TrainerSpec):
    INPUTS = {**standard_component_specs.TrainerSpec.INPUTS, **EXTRA_INPUTS}


class TrainerWithCompactModelSpec(TrainerWithTextEmbeddingsSpec):
    OUTPUTS = {
        **TrainerWithTextEmbeddingsSpec.OUTPUTS,
        COMPACT_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
    }


def with_extra_inputs(
    input_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]
) -> Tuple[Dict[str, List[types.Artifact]], Dict[str, Any]]:
    """The stock executor's inputs: ``text_embeddings`` and ``active_tasks``
    taken out of ``input_dict`` and put in ``custom_config``."""
    input_dict = dict(input_dict)
    embeddings = input_dict.pop(TEXT_EMBEDDINGS_KEY, None) or []
    selected = input_dict.pop(ACTIVE_TASKS_KEY, None) or []
    if embeddings or selected:
        key = standard_component_specs.CUSTOM_CONFIG_KEY
        custom = json_utils.loads(exec_properties.get(key) or "null") or {}
        if embeddings:
            custom[TEXT_EMBEDDINGS_URI] = embeddings[0].uri
        if selected:
            selection = read_selection(selected[0].uri)
            custom[CONFIG_KEY] = {**(custom.get(CONFIG_KEY) or {}), "tasks": list(selection.active)}
            custom[TASK_SELECTION] = selection.to_dict()
        exec_properties = {**exec_properties, key: json_utils.dumps(custom)}
    return input_dict, exec_properties


def with_extra_outputs(
    output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]
) -> Tuple[Dict[str, List[types.Artifact]], Dict[str, Any]]:
    """The stock executor's outputs: ``compact_model`` taken out of
    ``output_dict`` and its URI put in ``custom_config`` (TFX still
    publishes it: the launcher keeps its own ``output_dict``)."""
    output_dict = dict(output_dict)
    compact = output_dict.pop(COMPACT_MODEL_KEY, None) or []
    if compact:
        key = standard_component_specs.CUSTOM_CONFIG_KEY
        custom = json_utils.loads(exec_properties.get(key) or "null") or {}
        custom[COMPACT_MODEL_URI] = compact[0].uri
        exec_properties = {**exec_properties, key: json_utils.dumps(custom)}
    return output_dict, exec_properties


class ExtraInputs:
    """Executor mixin: runs the stock executor's ``Do`` with the extra inputs
    in ``custom_config`` (``with_extra_inputs``)."""

    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        input_dict, exec_properties = with_extra_inputs(input_dict, exec_properties)
        output_dict, exec_properties = with_extra_outputs(output_dict, exec_properties)
        super().Do(input_dict, output_dict, exec_properties)


class Executor(ExtraInputs, trainer_executor.GenericExecutor):
    """GenericExecutor, with the extra inputs in ``custom_config``."""


class Trainer(base_component.BaseComponent):
    """TFX's Trainer (``run_fn`` form) plus ``text_embeddings`` and ``active_tasks``."""

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
        active_tasks: Optional[types.BaseChannel] = None,
        base_model: Optional[types.BaseChannel] = None,
        compact_model: bool = False,
    ):
        """Args are the stock Trainer's, the TextEmbedder's output (None: off),
        the Tuner's ``best_hyperparameters`` (None: the ModelConfig's own) and
        the TaskSelector's output (None: the ModelConfig's tasks) and the model
        to warm-start from (None: from scratch); ``compact_model`` adds that
        output (the model config's ``compact_weights`` fills it)."""
        spec_class = TrainerWithCompactModelSpec if compact_model else TrainerWithTextEmbeddingsSpec
        compact = {COMPACT_MODEL_KEY: types.Channel(type=standard_artifacts.Model)}
        spec = spec_class(
            examples=examples,
            transform_graph=transform_graph,
            schema=schema,
            train_args=train_args,
            eval_args=eval_args,
            run_fn=run_fn,
            custom_config=json_utils.dumps(custom_config),
            text_embeddings=text_embeddings,
            hyperparameters=hyperparameters,
            active_tasks=active_tasks,
            base_model=base_model,
            model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun),
            **(compact if compact_model else {}),
        )
        super().__init__(spec=spec)
