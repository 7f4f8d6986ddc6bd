"""The Evaluator leaves out a blessed baseline that older trainer code exported
without the signatures the eval config calls, instead of failing the run."""

import tensorflow as tf
from tfx.components.evaluator import executor as tfx_evaluator
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs as specs
from tfx.utils import proto_utils

from components import compatible_evaluator as ce
from pipeline import eval_config as eval_config_lib
from pipeline import pipeline as pipeline_lib
from trainer import features as F


class _Signatures(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(self, examples):
        return {"click": tf.zeros([tf.size(examples), 1])}


def _model_artifact(tmp_path, name: str, signatures) -> standard_artifacts.Model:
    module = _Signatures()
    tf.saved_model.save(
        module,
        str(tmp_path / name / "Format-Serving"),
        signatures={s: module.serve for s in signatures},
    )
    artifact = standard_artifacts.Model()
    artifact.uri = str(tmp_path / name)
    return artifact


def _config_json() -> str:
    return proto_utils.proto_to_json(
        eval_config_lib.build_eval_config(None, F.TASK_NAMES, (10, 100))
    )


def test_the_eval_config_names_the_signatures_it_calls():
    assert {"evaluate", "transform_features"} <= ce.required_signatures(_config_json())


def test_a_baseline_without_a_needed_signature_is_incompatible(tmp_path):
    required = ce.required_signatures(_config_json())
    old = _model_artifact(tmp_path, "old", ["serving_default"])
    assert "lacks signature(s) ['evaluate'" in ce.incompatible_baseline(old, required)
    new = _model_artifact(tmp_path, "new", sorted(required | {"serving_default"}))
    assert ce.incompatible_baseline(new, required) == ""
    gone = standard_artifacts.Model()
    gone.uri = str(tmp_path / "missing")
    assert "cannot be read" in ce.incompatible_baseline(gone, required)


def _run_executor(monkeypatch, baseline):
    seen = {}
    monkeypatch.setattr(
        tfx_evaluator.Executor,
        "Do",
        lambda self, inputs, outputs, props: seen.update(inputs=inputs),
    )
    blessing = standard_artifacts.ModelBlessing()
    ce.Executor().Do(
        {specs.MODEL_KEY: [], specs.BASELINE_MODEL_KEY: [baseline]},
        {specs.BLESSING_KEY: [blessing]},
        {specs.EVAL_CONFIG_KEY: _config_json()},
    )
    return seen["inputs"][specs.BASELINE_MODEL_KEY], blessing


def test_the_executor_drops_an_incompatible_baseline_and_says_why(tmp_path, monkeypatch):
    baselines, blessing = _run_executor(
        monkeypatch, _model_artifact(tmp_path, "old", ["serving_default"])
    )
    assert baselines == []
    assert "no-regression check is skipped" in blessing.get_string_custom_property(
        ce.BASELINE_SKIPPED
    )


def test_the_executor_keeps_a_compatible_baseline(tmp_path, monkeypatch):
    required = ce.required_signatures(_config_json()) | {"serving_default"}
    baseline = _model_artifact(tmp_path, "new", sorted(required))
    baselines, blessing = _run_executor(monkeypatch, baseline)
    assert baselines == [baseline]
    assert ce.BASELINE_SKIPPED not in blessing.mlmd_artifact.custom_properties


def test_the_pipeline_evaluates_with_it(tmp_path):
    pipeline = pipeline_lib.create_pipeline(
        "p", str(tmp_path / "root"), str(tmp_path / "data"), str(tmp_path / "serving"), 10, 5
    )
    evaluator = next(c for c in pipeline.components if c.id == "Evaluator")
    assert isinstance(evaluator, ce.CompatibleBaselineEvaluator)
    assert evaluator.executor_spec.executor_class is ce.Executor
