"""TFX's Evaluator, with a baseline check: a blessed baseline model that lacks
a signature the eval config needs (exported by older trainer code) is left
out, so the run is judged on absolute thresholds alone instead of failing.

The blessing records why (custom property ``baseline_skipped``).
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


def saved_model_signatures(model_dir: str) -> Set[str]:
    """Signature names of the SavedModel in ``model_dir``, read from its proto only."""
    with tf.io.gfile.GFile(os.path.join(model_dir, "saved_model.pb"), "rb") as f:
        saved_model = saved_model_pb2.SavedModel.FromString(f.read())
    return {name for graph in saved_model.meta_graphs for name in graph.signature_def}


def incompatible_baseline(baseline: types.Artifact, required: Set[str]) -> str:
    """Why ``baseline`` cannot be evaluated with the config ('' when it can)."""
    model_dir = path_utils.serving_model_path(baseline.uri)
    try:
        missing = sorted(required - saved_model_signatures(model_dir))
    except (OSError, tf.errors.OpError, ValueError) as error:
        return f"baseline model {model_dir} cannot be read ({error})"
    if missing:
        return (
            f"baseline model {model_dir} lacks signature(s) {missing} "
            "(exported by older trainer code); "
            "the no-regression check is skipped this run, absolute thresholds still apply"
        )
    return ""


class Executor(evaluator_executor.Executor):
    """Drops an incompatible baseline before TFX's Evaluator runs."""

    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        reason = ""
        baselines = input_dict.get(specs.BASELINE_MODEL_KEY) or []
        if baselines:
            reason = incompatible_baseline(
                baselines[0], required_signatures(exec_properties.get(specs.EVAL_CONFIG_KEY))
            )
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
