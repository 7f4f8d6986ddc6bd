"""TFX's Evaluator, fitted to the models it judges.

* Its eval config is rewritten, at run time, for the tasks the candidate model
  was trained on (the export's ``assets.extra/tasks.json``, from the
  TaskSelector): a task switched off for lack of labels is neither computed
  nor gated.
* A blessed baseline model that lacks a signature or an output the config
  needs (exported by older trainer code, or with a task off) is left out, so
  the run is judged on absolute thresholds alone instead of failing. The
  blessing records why (custom property ``baseline_skipped``).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Set

import tensorflow as tf
import tensorflow_model_analysis as tfma
from tensorflow.core.protobuf import saved_model_pb2
from tfx import types
from tfx.components.evaluator import executor as evaluator_executor
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_component_specs as specs
from tfx.utils import path_utils, proto_utils
from tfx.v1.components import Evaluator

from pipeline import eval_config as eval_config_lib
from trainer import serving_contract as C

BASELINE_SKIPPED = "baseline_skipped"


def required_signatures(eval_config_json: str) -> Set[str]:
    """Signatures (and preprocessing functions) the eval config calls on a model."""
    config = proto_utils.json_to_proto(eval_config_json or "{}", tfma.EvalConfig())
    names: Set[str] = set()
    for spec in config.model_specs:
        names.add(spec.signature_name or C.SERVING_DEFAULT)
        names.update(spec.preprocessing_function_names)
    return names


def required_outputs(eval_config_json: str) -> Dict[str, Set[str]]:
    """{signature: the outputs the eval config's labels are scored against}."""
    config = proto_utils.json_to_proto(eval_config_json or "{}", tfma.EvalConfig())
    return {
        spec.signature_name or C.SERVING_DEFAULT: set(spec.label_keys)
        for spec in config.model_specs
    }


def saved_model_signatures(model_dir: str) -> Dict[str, Set[str]]:
    """{signature name: its output names} of the SavedModel in ``model_dir``,
    read from its proto only."""
    with tf.io.gfile.GFile(os.path.join(model_dir, "saved_model.pb"), "rb") as f:
        saved_model = saved_model_pb2.SavedModel.FromString(f.read())
    return {
        name: set(signature.outputs)
        for graph in saved_model.meta_graphs
        for name, signature in graph.signature_def.items()
    }


def incompatible_baseline(baseline: types.Artifact, eval_config_json: str) -> str:
    """Why ``baseline`` cannot be evaluated with the config ('' when it can)."""
    model_dir = path_utils.serving_model_path(baseline.uri)
    try:
        signatures = saved_model_signatures(model_dir)
    except (OSError, tf.errors.OpError, ValueError) as error:
        return f"baseline model {model_dir} cannot be read ({error})"
    missing = sorted(required_signatures(eval_config_json) - set(signatures))
    if missing:
        return (
            f"baseline model {model_dir} lacks signature(s) {missing} "
            "(exported by older trainer code); "
            "the no-regression check is skipped this run, absolute thresholds still apply"
        )
    for signature, outputs in required_outputs(eval_config_json).items():
        lacking = sorted(outputs - signatures[signature])
        if lacking:
            return (
                f"baseline model {model_dir} has no output(s) {lacking} in {signature!r} "
                "(a task it was trained without); the no-regression check is skipped this "
                "run, absolute thresholds still apply"
            )
    return ""


def config_for_candidate(model: types.Artifact, eval_config_json: str) -> str:
    """The eval config for the tasks the candidate was trained on (unchanged
    when its export records none: older trainer code trained them all)."""
    record = C.read_tasks_asset(path_utils.serving_model_path(model.uri))
    if record is None:
        return eval_config_json
    config = proto_utils.json_to_proto(eval_config_json or "{}", tfma.EvalConfig())
    kept = eval_config_lib.for_tasks(config, list(record["active"]))
    off = record.get("off") or {}
    if off:
        logging.warning(
            "Evaluator: tasks off this run, neither computed nor gated: %s",
            "; ".join(f"{name} ({why})" for name, why in off.items()),
        )
    return proto_utils.proto_to_json(kept)


class Executor(evaluator_executor.Executor):
    """Drops an incompatible baseline before TFX's Evaluator runs."""

    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        eval_config_json = config_for_candidate(
            input_dict[specs.MODEL_KEY][0], exec_properties.get(specs.EVAL_CONFIG_KEY)
        )
        exec_properties = {**exec_properties, specs.EVAL_CONFIG_KEY: eval_config_json}
        reason = ""
        baselines = input_dict.get(specs.BASELINE_MODEL_KEY) or []
        if baselines:
            reason = incompatible_baseline(baselines[0], eval_config_json)
        if reason:
            logging.warning("Evaluator: %s.", reason)
            input_dict = {**input_dict, specs.BASELINE_MODEL_KEY: []}
        super().Do(input_dict, output_dict, exec_properties)
        if reason:
            for blessing in output_dict.get(specs.BLESSING_KEY, []):
                blessing.set_string_custom_property(BASELINE_SKIPPED, reason)


class CompatibleBaselineEvaluator(Evaluator):
    """``tfx.components.Evaluator`` whose executor skips an incompatible baseline."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
