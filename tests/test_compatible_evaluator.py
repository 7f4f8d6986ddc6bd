"""The Evaluator judges the tasks the candidate was trained on, and leaves out
a blessed baseline that lacks a signature or output the eval config calls
(older trainer code, a task it was trained without) instead of failing."""

import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx.components.evaluator import executor as tfx_evaluator
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs as specs
from tfx.utils import proto_utils

from components import compatible_evaluator as ce
from pipeline import eval_config as eval_config_lib
from pipeline import pipeline as pipeline_lib
from trainer import features as F
from trainer import serving_contract as C


EVERY_OUTPUT = ("click", "conversion", "rating", "category", "interest",
                "retrieval_hit_at_10", "retrieval_hit_at_100")  # fmt: skip


def _model_artifact(
    tmp_path, name: str, signatures, outputs=EVERY_OUTPUT, tasks=None
) -> standard_artifacts.Model:
    module = tf.Module()
    module.serve = tf.function(
        lambda examples: {o: tf.zeros([tf.size(examples), 1]) for o in outputs},
        input_signature=[tf.TensorSpec([None], tf.string)],
    )
    export_dir = str(tmp_path / name / "Format-Serving")
    tf.saved_model.save(module, export_dir, signatures={s: module.serve for s in signatures})
    if tasks is not None:
        C.write_tasks_asset(export_dir, tasks, {"rating": "0 rated impressions in eval"})
    artifact = standard_artifacts.Model()
    artifact.uri = str(tmp_path / name)
    return artifact


def _config_json() -> str:
    return proto_utils.proto_to_json(
        eval_config_lib.build_eval_config(None, F.TASK_NAMES, (10, 100))
    )


def test_the_eval_config_names_the_signatures_it_calls():
    assert {"evaluate", "transform_features"} <= ce.required_signatures(_config_json())


SIGNATURES = ["serving_default", "evaluate", "transform_features"]


def test_a_baseline_without_a_needed_signature_or_output_is_incompatible(tmp_path):
    config = _config_json()
    old = _model_artifact(tmp_path, "old", ["serving_default"])
    assert "lacks signature(s) ['evaluate'" in ce.incompatible_baseline(old, config)
    new = _model_artifact(tmp_path, "new", SIGNATURES)
    assert ce.incompatible_baseline(new, config) == ""
    no_rating = _model_artifact(tmp_path, "no_rating", SIGNATURES,
                                [o for o in EVERY_OUTPUT if o != "rating"])  # fmt: skip
    assert "no output(s) ['rating']" in ce.incompatible_baseline(no_rating, config)
    without = eval_config_lib.for_tasks(
        proto_utils.json_to_proto(config, tfma.EvalConfig()),
        [t for t in F.TASK_NAMES if t != "rating"],
    )
    assert ce.incompatible_baseline(no_rating, proto_utils.proto_to_json(without)) == ""
    gone = standard_artifacts.Model()
    gone.uri = str(tmp_path / "missing")
    assert "cannot be read" in ce.incompatible_baseline(gone, config)


def _run_executor(monkeypatch, baseline, candidate):
    seen = {}
    monkeypatch.setattr(
        tfx_evaluator.Executor,
        "Do",
        lambda self, inputs, outputs, props: seen.update(inputs=inputs, props=props),
    )
    blessing = standard_artifacts.ModelBlessing()
    ce.Executor().Do(
        {specs.MODEL_KEY: [candidate], specs.BASELINE_MODEL_KEY: [baseline]},
        {specs.BLESSING_KEY: [blessing]},
        {specs.EVAL_CONFIG_KEY: _config_json()},
    )
    config = proto_utils.json_to_proto(seen["props"][specs.EVAL_CONFIG_KEY], tfma.EvalConfig())
    return seen["inputs"][specs.BASELINE_MODEL_KEY], blessing, config


def test_the_executor_drops_an_incompatible_baseline_and_says_why(tmp_path, monkeypatch):
    candidate = _model_artifact(tmp_path, "candidate", SIGNATURES)
    baselines, blessing, _ = _run_executor(
        monkeypatch, _model_artifact(tmp_path, "old", ["serving_default"]), candidate
    )
    assert baselines == []
    assert "no-regression check is skipped" in blessing.get_string_custom_property(
        ce.BASELINE_SKIPPED
    )


def test_the_executor_keeps_a_compatible_baseline(tmp_path, monkeypatch):
    baseline = _model_artifact(tmp_path, "new", SIGNATURES)
    candidate = _model_artifact(tmp_path, "candidate", SIGNATURES)
    baselines, blessing, config = _run_executor(monkeypatch, baseline, candidate)
    assert baselines == [baseline]
    assert ce.BASELINE_SKIPPED not in blessing.mlmd_artifact.custom_properties
    assert config == proto_utils.json_to_proto(_config_json(), tfma.EvalConfig())


def test_the_executor_judges_only_the_candidates_tasks(tmp_path, monkeypatch):
    active = ["retrieval", "click", "category"]
    candidate = _model_artifact(tmp_path, "candidate", SIGNATURES, tasks=active)
    # The baseline was trained without the interest task: not needed this run.
    baseline = _model_artifact(tmp_path, "base", SIGNATURES,
                               [o for o in EVERY_OUTPUT if o != "interest"])  # fmt: skip
    baselines, _, config = _run_executor(monkeypatch, baseline, candidate)
    assert baselines == [baseline]
    outputs = {o for spec in config.metrics_specs for o in spec.output_names}
    assert outputs == {"click", "category", "retrieval_hit_at_10", "retrieval_hit_at_100"}
    assert set(config.model_specs[0].label_keys) == outputs
    gated = [spec for spec in config.metrics_specs for m in spec.metrics if m.per_slice_thresholds]
    assert {o for spec in gated for o in spec.output_names} <= outputs
    assert set(config.model_specs[0].example_weight_keys) == outputs


def test_the_pipeline_evaluates_with_it(tmp_path):
    pipeline = pipeline_lib.create_pipeline(
        "p", str(tmp_path / "root"), str(tmp_path / "data"), str(tmp_path / "serving"), 10, 5
    )
    evaluator = next(c for c in pipeline.components if c.id == "Evaluator")
    assert isinstance(evaluator, ce.CompatibleBaselineEvaluator)
    assert evaluator.executor_spec.executor_class is ce.Executor
