"""The whole TFX pipeline on a small generated log, with LocalDagRunner.

Runs once per module (a couple of minutes): every stage is real.
"""

import dataclasses
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from pipeline import configs, local_runner
from serving import tf_serving_ops
from tests.conftest import write_jsonl
from trainer import features as F

pytestmark = pytest.mark.e2e

FAST = dict(
    train_steps=150,
    eval_steps=10,
    beam_args=["--runner=DirectRunner", *configs.IN_MEMORY_ARGS],
    # The small logs hold 47 purchases and 36 ratings in eval: every task on.
    # With an int8 compact model and TFLite ranking heads beside the full one.
    model_config={
        "epochs": 2,
        "batch_size": 64,
        "min_task_labels": 10,
        "compact_weights": "int8",
        "tflite_ranking_heads": "int8",
    },
    # Lenient bars: this test checks plumbing, not model quality.
    eval_thresholds={
        "retrieval": 0.0,
        "click": 0.5,
        "conversion": 0.4,
        "rating": 2.5,
        "category": 0.0,
        "interest": 0.0,
    },
)


# The pipeline tests that are not about the text encoder run without the
# pretrained one (the module's ``run`` keeps the default, MiniLM).
SCRATCH_MODEL = {"batch_size": 64, "pretrained_text_encoder": None, "min_task_labels": 10}


@pytest.fixture(scope="module")
def run(small_logs, tmp_path_factory):
    work = tmp_path_factory.mktemp("run")
    config = configs.RunConfig(data_dir=small_logs, work_dir=str(work), **FAST)
    summary = local_runner.run(config)
    return config, summary


def test_run_blesses_and_pushes_in_tf_serving_layout(run):
    config, summary = run
    assert summary["blessed"] and summary["pushed"]
    version_dir = summary["pushed_destination"]
    assert os.path.dirname(version_dir) == config.push_base
    assert os.path.basename(version_dir).isdigit()
    assert os.path.exists(os.path.join(version_dir, "saved_model.pb"))
    assert json.load(open(os.path.join(config.work_dir, "run_summary.json")))["pushed"]


def test_evaluator_reports_metrics_per_task(run):
    _, summary = run
    click, rating = summary["metrics"]["click"], summary["metrics"]["rating"]
    assert 0.0 <= click["auc"] <= 1.0
    assert 0.0 < rating["root_mean_squared_error"] < 5.0
    assert click["example_count"] > rating["example_count"] > 0  # rating is weighted


def test_run_ends_with_recommendations_over_grpc(run, small_logs):
    _, summary = run
    query = summary["grpc_query"]
    items = {json.loads(line)["item_id"] for line in open(os.path.join(small_logs, "items.jsonl"))}
    assert query["retrieved_first"]  # two stages: the recommend signature, then the click head
    recommended = [row["item_id"] for row in query["recommendations"]]
    assert len(recommended) == 10 and len(set(recommended)) == 10 and set(recommended) <= items
    scores = [row["score"] for row in query["recommendations"]]
    assert scores == sorted(scores, reverse=True)
    assert query["version"] == int(os.path.basename(summary["pushed_destination"]))


def test_evaluator_adds_calibration_mae_and_category_slices(run):
    import tensorflow_model_analysis as tfma

    _, summary = run
    for task in ("click", "conversion"):
        assert {"auc", "calibration", "mean_label", "mean_prediction"} <= set(
            summary["metrics"][task]
        )
    assert "mean_absolute_error" in summary["metrics"]["rating"]
    # Category and interest heads are evaluated by TFMA on transformed labels.
    assert 0.0 <= summary["metrics"]["category"]["sparse_categorical_accuracy"] <= 1.0
    assert 0.0 <= summary["metrics"]["interest"]["auc"] <= 1.0
    # Retrieval: recall@k over the whole catalogue, from the evaluate signature.
    retrieval = summary["metrics"]["retrieval"]
    assert 0.0 <= retrieval["recall_at_10"] <= retrieval["recall_at_100"] <= 1.0
    assert retrieval["recall_at_100"] > 0.0
    result = tfma.load_eval_result(summary["evaluation_uri"])
    sliced = {dict(key).get(F.ITEM_CATEGORY) for key, _ in result.slicing_metrics}
    assert len(sliced - {None}) >= 5


def test_run_report_shows_data_metrics_per_task_and_the_push(run):
    config, summary = run
    report_dir = os.path.join(config.work_dir, "report")
    text = open(os.path.join(report_dir, "run_report.md")).read()
    assert "| examples_train |" in text and "### Train split features" in text
    assert "### Anomalies against the curated schema" in text and "None in eval, train." in text
    for task in F.TASK_NAMES:  # every task's metrics: TFMA's and the Trainer's validation
        assert f"| {task} |" in text
    assert "recall_at_10" in text and "category" in summary["validation_metrics"]
    assert 0.0 <= summary["validation_metrics"]["retrieval"]["recall_at_10"] <= 1.0
    assert f"{summary['metrics']['click']['auc']:.4f}" in text
    assert f"{summary['metrics']['rating']['root_mean_squared_error']:.4f}" in text
    assert (
        "| item_category | retrieval recall@100 | click AUC |" in text
        and "**Blessed: yes.**" in text
    )
    assert summary["pushed_destination"] in text
    assert os.path.getsize(os.path.join(report_dir, "training_curves.png")) > 1000


def test_training_curves_and_component_timings(run):
    _, summary = run
    assert os.path.getsize(summary["training_curves"]) > 1000
    components = {row["component"] for row in summary["components"]}
    assert {
        "InteractionLogExampleGen",
        "StatisticsGen",
        "ExampleValidator",
        "AnomaliesGate",
        "Transform",
        "Trainer",
        "Evaluator",
        "AtomicPusher",
    } <= components


SCORE_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    from serving.tf_serving_ops import register_tf_serving_ops
    register_tf_serving_ops()  # the tensorflow-text kernels TF Serving links in
    model = tf.saved_model.load(sys.argv[1])
    rows = json.loads(sys.argv[2])
    def values(name, value):  # the varlen history ids travel as a list in a tf.Example
        if name == "history_item_ids":
            return [i.encode() for i in value.split(" | ") if i]
        return [value.encode()]
    def example(row):
        row = {k: v for k, v in row.items() if k != "exclude"}  # recommend's only
        feature = {k: tf.train.Feature(bytes_list=tf.train.BytesList(value=values(k, v)))
                   for k, v in row.items()}
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
    as_lists = lambda outputs: {k: v.numpy().tolist() for k, v in outputs.items()}
    serialized = tf.constant([example(r) for r in rows])
    by_example = model.signatures["serving_default"](examples=serialized)
    predict = model.signatures["predict"]
    by_feature = predict(**{name: tf.constant([r.get(name, "") for r in rows])
                            for name in predict.structured_input_signature[1]})
    recommend = model.signatures["recommend"](
        user_id=tf.constant([r["user_id"] for r in rows]), user_profile=tf.constant(["", "", ""]),
        history_titles=tf.constant([r["history_titles"] for r in rows]),
        history_item_ids=tf.constant([r.get("history_item_ids", "") for r in rows]),
        exclude_item_ids=tf.constant([r.get("exclude", "") for r in rows]))
    unexcluded = model.signatures["recommend"](
        user_id=tf.constant([r["user_id"] for r in rows]), user_profile=tf.constant(["", "", ""]),
        history_titles=tf.constant([r["history_titles"] for r in rows]),
        history_item_ids=tf.constant([r.get("history_item_ids", "") for r in rows]),
        exclude_item_ids=tf.constant(["", "", ""]))
    decoded = lambda outputs: {
        k: [[x.decode() if isinstance(x, bytes) else x for x in row] for row in v]
        for k, v in as_lists(outputs).items()}
    evaluate = model.signatures["evaluate"](examples=tf.constant([example(r) for r in rows]))
    print(json.dumps({"serving_default": as_lists(by_example), "predict": as_lists(by_feature),
                      "recommend": decoded(recommend), "unexcluded": decoded(unexcluded),
                      "evaluate": as_lists(evaluate)}))
    print("modules:", json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in
                                        ("keras_nlp", "tensorflow_text", "tensorflow_transform"))))
""")


def test_pushed_model_signatures_work_in_a_fresh_process(run, small_logs):
    _, summary = run
    rows = [
        {
            F.USER_ID: "u00001",
            F.ITEM_ID: "i00002",
            F.ITEM_TITLE: "Jazz piano album",
            F.ITEM_DESCRIPTION: "song melody concert",
            F.ITEM_CATEGORY: "music",
            F.HISTORY_TITLES: "Guitar song | Piano concert",
            F.HISTORY_ITEM_IDS: "i00003 | i00005",
        },
        {
            F.USER_ID: "never-seen",
            F.ITEM_ID: "never-seen",
            F.ITEM_TITLE: "",
            F.ITEM_DESCRIPTION: "",
            F.ITEM_CATEGORY: "unknown",
            F.HISTORY_TITLES: "",
        },
        {
            F.USER_ID: "u00003",
            F.ITEM_ID: "i00004",
            F.ITEM_TITLE: "Budget stock",
            F.ITEM_DESCRIPTION: "invest market",
            F.ITEM_CATEGORY: "finance",
            F.HISTORY_TITLES: "",
            "exclude": "i00001 | i00007",  # recommend's exclude_item_ids
        },
    ]
    # Catalogue items carry the catalogue's text and category, as ExampleGen joins them.
    items = {
        item["item_id"]: item
        for item in map(json.loads, open(os.path.join(small_logs, "items.jsonl")))
    }
    for row in rows:
        if row[F.ITEM_ID] in items:
            item = items[row[F.ITEM_ID]]
            row.update(
                {
                    F.ITEM_TITLE: item["title"],
                    F.ITEM_DESCRIPTION: item["description"],
                    F.ITEM_CATEGORY: item["category"],
                }
            )
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run(
        [sys.executable, "-c", SCORE_SCRIPT, summary["pushed_destination"], json.dumps(rows)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-2])
    outputs = result["serving_default"]
    assert set(outputs) == set(F.TASK_NAMES)
    categories = len(outputs["category"][0])
    assert categories == len(outputs["interest"][0]) >= 8  # the generator's categories + OOV
    for name, values in outputs.items():
        width = categories if name in ("category", "interest") else 1
        assert len(values) == len(rows) and all(len(v) == width for v in values), name
    assert all(0.0 < v[0] < 1.0 for v in outputs["click"])
    assert all(-10 < v[0] < 15 for v in outputs["rating"])
    assert all(abs(sum(v) - 1.0) < 1e-4 for v in outputs["category"])
    # The raw-feature signature gives the same answers as the tf.Example one.
    for name, values in result["predict"].items():
        np.testing.assert_allclose(values, outputs[name], atol=1e-5, err_msg=name)
    # recommend: K distinct catalogue items per user, best first.
    catalogue = {
        json.loads(line)["item_id"] for line in open(os.path.join(small_logs, "items.jsonl"))
    }
    ids, scores = result["recommend"]["item_ids"], result["recommend"]["scores"]
    assert len(ids) == len(rows)
    for row, user_ids, user_scores in zip(rows, ids, scores):
        assert len(user_ids) == 100 and len(set(user_ids)) == 100 and set(user_ids) <= catalogue
        assert user_scores == sorted(user_scores, reverse=True)
        seen = {*row.get("history_item_ids", "").split(" | "), *row.get("exclude", "").split(" | ")}
        assert not seen & set(user_ids)  # already consumed or excluded: never recommended
    # exclude_item_ids only drops items: the rest keep their order.
    unexcluded = result["unexcluded"]["item_ids"]
    for row, user_ids, all_ids in zip(rows, ids, unexcluded):
        excluded = set(row.get("exclude", "").split(" | "))
        kept = [i for i in all_ids if i not in excluded]
        assert user_ids[: len(kept)] == kept, row
    # evaluate (what TFMA scores): the task outputs, plus retrieval hits that
    # agree with the recommend index for the catalogue items. evaluate ranks
    # an item against the whole catalogue (as TFRS's FactorizedTopK does),
    # while recommend drops the user's history, so only rows without one compare.
    hits = result["evaluate"]
    for name in F.TASK_NAMES:
        np.testing.assert_allclose(hits[name], outputs[name], atol=1e-5, err_msg=name)
    for row, hit_at_10, hit_at_100, user_ids in zip(
        rows, hits["retrieval_hit_at_10"], hits["retrieval_hit_at_100"], unexcluded
    ):
        if row[F.ITEM_ID] in catalogue and not row.get(F.HISTORY_ITEM_IDS):
            assert hit_at_10 == [float(row[F.ITEM_ID] in user_ids[:10])], (row, user_ids[:10])
            assert hit_at_100 == [float(row[F.ITEM_ID] in user_ids)], row
    # The serving graph needs neither keras-nlp nor tensorflow-text's Python
    # package (only the kernels TF Serving registers), nor TF Transform.
    assert json.loads(lines[-1].split(":", 1)[1]) == []
    assert tf_serving_ops.unsupported_ops(summary["pushed_destination"]) == []


def test_an_item_never_seen_in_training_is_scored_from_its_text_over_grpc(run, tmp_path):
    """``recsys-serve`` in a fresh process: an unknown item id gets its pretrained
    text vector from the encoder in the graph (texts that the lexical encoder
    reads alike but WordPiece does not score differently), a known id keeps
    the catalogue's vector whatever text comes with it."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    config, summary = run
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving.server",
            f"--model_name={config.model_name}",
            f"--model_base_path={config.push_base}",
            "--port=0",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving "), (line, open(tmp_path / "server.log").read()[-3000:])
        request = predict_pb2.PredictRequest()
        request.model_spec.name = config.model_name
        request.model_spec.signature_name = "predict"
        features = _unknown_and_known_items(config, _predict_inputs(summary))
        for name, values in features.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(values, dtype=tf.string))
        with grpc.insecure_channel(line.split()[-1]) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(request, timeout=60)
        click = tf.make_ndarray(response.outputs["click"]).ravel()
        retrieval = tf.make_ndarray(response.outputs["retrieval"]).ravel()
    finally:
        proc.terminate()
        proc.wait(30)
    assert np.all(np.isfinite(click)) and np.all(np.isfinite(retrieval))
    assert abs(retrieval[0] - retrieval[1]) > 1e-6, retrieval  # embedded from the text
    np.testing.assert_allclose(retrieval[2], retrieval[3], atol=1e-6)  # the catalogue's vector
    np.testing.assert_allclose(click[2], click[3], atol=1e-6)


def _unknown_and_known_items(config, input_names) -> dict:
    """``predict`` features of an unknown and a known item, each with two
    titles that are the same words to the lexical encoder ("!" and "?" are
    stripped) but not to WordPiece."""
    known = json.loads(open(os.path.join(config.data_dir, "items.jsonl")).readline())
    rows = [
        ("never-seen-item", "Jazz piano!"),
        ("never-seen-item", "Jazz piano?"),
        (known["item_id"], "Jazz piano!"),
        (known["item_id"], "Jazz piano?"),
    ]
    features = {name: [""] * len(rows) for name in input_names}
    features[F.USER_ID] = ["u00001"] * len(rows)
    features[F.ITEM_ID] = [item for item, _ in rows]
    features[F.ITEM_TITLE] = [title for _, title in rows]
    features[F.ITEM_CATEGORY] = [known["category"]] * len(rows)
    return features


def _predict_inputs(summary) -> list:
    from tensorflow.python.saved_model import loader_impl

    graph = loader_impl.parse_saved_model(summary["pushed_destination"]).meta_graphs[0]
    return list(graph.signature_def["predict"].inputs)


def _num_categories(config) -> int:
    import tensorflow_transform as tft

    (transform_dir,) = glob.glob(
        os.path.join(config.pipeline_root, "Transform", "transform_graph", "*")
    )
    output = tft.TFTransformOutput(transform_dir)
    return output.vocabulary_size_by_name(F.ID_VOCABS[F.ITEM_CATEGORY]) + 1


def _assert_matches_the_contract(model_dir: str, task_names, num_categories: int) -> None:
    """Every signature, input, output, dtype and shape, as ``serving_contract`` names them."""
    import tensorflow as tf
    from tensorflow.python.saved_model import loader_impl

    from trainer import serving_contract as C

    expected = C.expected_signatures(task_names, num_categories)
    graph = loader_impl.parse_saved_model(model_dir).meta_graphs[0]
    exported = {name: sig for name, sig in graph.signature_def.items() if not name.startswith("__")}
    assert set(exported) == set(expected)

    def described(infos):
        return {
            key: C.TensorContract(
                tf.dtypes.as_dtype(info.dtype).name,
                tuple(tf.TensorShape(info.tensor_shape).as_list()),
            )
            for key, info in infos.items()
        }

    for name, contract in expected.items():
        assert described(exported[name].inputs) == dict(contract.inputs), name
        assert described(exported[name].outputs) == dict(contract.outputs), name


# The int8 compact model against the full one on the eval examples: mean
# |difference| of probabilities and cosines, and of ratings in points.
COMPACT_MEAN_TOLERANCE = {"rating": 0.05}
COMPACT_MEAN_TOLERANCE_DEFAULT = 0.02


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def test_the_compact_model_is_gated_against_the_full_one_and_pushed_beside_it(run):
    """compact_weights int8: the Trainer's compact_model (MiniLM's tables and
    kernels too) is a quarter of the full export's size, uses only TF
    Serving's ops, matches the serving contract, scores like the full model,
    is blessed by the CompactEvaluator against this run's full model and
    pushed to <push_base>_compact; the pushed full model carries the TFLite
    ranking heads, which run in TFLite's interpreter."""
    import tensorflow as tf

    from pipeline.pipeline import compact_push_base

    config, summary = run
    compact = summary["compact"]
    assert compact["blessed"] and compact["pushed"], compact["validation_failures"]
    assert os.path.dirname(compact["pushed_destination"]) == compact_push_base(config.push_base)
    assert set(compact["metrics"]) >= set(F.TASK_NAMES)
    full_dir, compact_dir = summary["model_uri"], compact["model_uri"]
    full_bytes, compact_bytes = _dir_bytes(full_dir), _dir_bytes(compact_dir)
    print(f"full export {full_bytes / 1e6:.1f} MB, int8 {compact_bytes / 1e6:.1f} MB")
    assert compact_bytes < 0.35 * full_bytes
    assert tf_serving_ops.unsupported_ops(compact_dir) == []
    _assert_matches_the_contract(compact_dir, F.TASK_NAMES, _num_categories(config))

    examples_uri = summary["examples_uri"]
    full, small = _eval_scores(full_dir, examples_uri), _eval_scores(compact_dir, examples_uri)
    for name in F.TASK_NAMES:
        difference = float(np.mean(np.abs(small[name] - full[name])))
        print(name, "mean |int8 - full|", difference)
        assert difference <= COMPACT_MEAN_TOLERANCE.get(name, COMPACT_MEAN_TOLERANCE_DEFAULT)

    report = open(os.path.join(config.work_dir, "report", "run_report.md")).read()
    assert "## Compact model" in report and "Blessed against the full model: yes" in report
    assert "| click | auc |" in report

    heads = os.path.join(summary["pushed_destination"], "assets.extra", "ranking_heads.tflite")
    interpreter = tf.lite.Interpreter(model_path=heads)
    runner = interpreter.get_signature_runner()
    details = runner.get_input_details()
    feed = {name: np.zeros([2, *d["shape"][1:]], d["dtype"]) for name, d in details.items()}
    scores = runner(**feed)
    assert set(scores) == {"click", "conversion", "rating"}
    assert all(np.all(np.isfinite(v)) and v.shape == (2, 1) for v in scores.values())


def test_the_pushed_model_matches_the_serving_contract(run):
    from trainer import warmup

    config, summary = run
    _assert_matches_the_contract(
        summary["pushed_destination"], F.TASK_NAMES, _num_categories(config)
    )
    # TF Serving's warmup file came through the Pusher: every client signature, every batch size.
    requests = warmup.read_warmup_requests(summary["pushed_destination"])
    assert sorted(r.model_spec.signature_name for r in requests) == sorted(
        warmup.WARMUP_SIGNATURES * len(warmup.WARMUP_BATCH_SIZES)
    )


@pytest.fixture
def one_more_task(monkeypatch):
    """A second binary head on the purchase label, registered by one ``Task`` record."""
    task = F.Task(
        name="purchase_direct",
        label=F.PURCHASE,
        kind="binary",
        weight=F.IMPRESSION_WEIGHT,
        loss_weight=0.3,
        threshold=0.55,
        regression_tolerance=0.03,
    )
    monkeypatch.setattr(F, "TASKS", (*F.TASKS, task))
    monkeypatch.setattr(F, "TASK_NAMES", [*F.TASK_NAMES, task.name])
    return task


def _trainer_args(config, tmp_path, custom_config, train_steps=1):
    """``run_fn``'s arguments over the module run's Transform outputs."""
    from tfx.components.trainer.fn_args_utils import DataAccessor, FnArgs
    from tfx.components.util import tfxio_utils
    from tfx.types import standard_artifacts

    (examples_dir,) = glob.glob(
        os.path.join(config.pipeline_root, "Transform", "transformed_examples", "*")
    )
    (transform_dir,) = glob.glob(
        os.path.join(config.pipeline_root, "Transform", "transform_graph", "*")
    )
    examples = standard_artifacts.Examples()
    examples.uri, examples.split_names = examples_dir, '["train", "eval"]'
    return FnArgs(
        train_files=[os.path.join(examples_dir, "Split-train", "*")],
        eval_files=[os.path.join(examples_dir, "Split-eval", "*")],
        transform_output=transform_dir,
        serving_model_dir=str(tmp_path / "serving_model"),
        model_run_dir=str(tmp_path / "model_run"),
        train_steps=train_steps,
        eval_steps=1,
        data_accessor=DataAccessor(
            tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact([examples], []),
            record_batch_factory=None,
            data_view_decode_fn=None,
        ),
        custom_config=custom_config,
    )


def test_a_new_task_is_one_task_record(run, one_more_task, tmp_path):
    """The Trainer trains and exports it, the serving signatures and the TFMA
    config carry it with its threshold; no source file knows its name."""
    import tensorflow_model_analysis as tfma

    from pipeline import eval_config as eval_config_lib
    from trainer import task as trainer_task

    config, _ = run
    fn_args = _trainer_args(
        config,
        tmp_path,
        {
            trainer_task.CONFIG_KEY: {
                "epochs": 1,
                "batch_size": 32,
                "pretrained_text_encoder": None,  # this test is about the task record
            }
        },
    )
    trainer_task.run_fn(fn_args)

    history = json.load(open(tmp_path / "model_run" / "history.json"))
    assert "purchase_direct_loss" in history and "val_purchase_direct_auc" in history
    timings = json.load(open(tmp_path / "model_run" / "timings.json"))
    parts = timings.pop("fit_parts")
    assert set(timings) == {"setup", "fit", "export"} and min(timings.values()) > 0, timings
    assert parts["validation_passes"] == 1 and parts["first_train_step"] > 0, parts
    assert parts["validation"] > 0 and parts["train_steps"] >= 0, parts
    spent = ("first_train_step", "train_steps", "validation", "callbacks")
    assert sum(parts[p] for p in spent) <= timings["fit"], (parts, timings)
    _assert_matches_the_contract(fn_args.serving_model_dir, F.TASK_NAMES, _num_categories(config))
    assert "purchase_direct" in F.TASK_NAMES

    eval_config = eval_config_lib.build_eval_config(None, F.TASK_NAMES)
    (model_spec,) = eval_config.model_specs
    assert model_spec.label_keys["purchase_direct"] == F.PURCHASE
    (spec,) = [s for s in eval_config.metrics_specs if list(s.output_names) == ["purchase_direct"]]
    (gated,) = [m for m in spec.metrics if m.per_slice_thresholds]
    threshold = gated.per_slice_thresholds[0].threshold
    assert gated.class_name == "AUC"
    assert threshold.value_threshold.lower_bound.value == pytest.approx(0.55)
    assert threshold.change_threshold.absolute.value == pytest.approx(-0.03)
    assert threshold.change_threshold.direction == tfma.MetricDirection.HIGHER_IS_BETTER
    # A per-run override still wins over the record's threshold.
    overridden = eval_config_lib.build_eval_config({"purchase_direct": 0.7}, F.TASK_NAMES)
    (spec,) = [s for s in overridden.metrics_specs if list(s.output_names) == ["purchase_direct"]]
    (gated,) = [m for m in spec.metrics if m.per_slice_thresholds]
    assert gated.per_slice_thresholds[0].threshold.value_threshold.lower_bound.value == 0.7


def test_a_fine_tuned_encoder_trains_exports_and_reads_unknown_items(run, tmp_path):
    """``fine_tune_text_encoder`` (on by default with a GPU) on CPU, two steps
    with MiniLM's top layer training: the SavedModel loads in stock TF
    Serving's op set, the fine-tuned encoder is in it, and an unknown item
    is scored from its text while a known one keeps its catalogue text."""
    import tensorflow as tf

    from trainer import task as trainer_task
    from trainer.config import TEXT_EMBEDDINGS_URI

    config, _ = run
    (embeddings,) = glob.glob(
        os.path.join(config.pipeline_root, "TextEmbedder", "text_embeddings", "*")
    )
    model_config = {
        "epochs": 1,
        "batch_size": 8,
        "fine_tune_text_encoder": True,
        "fine_tune_layers": 1,
    }
    fn_args = _trainer_args(
        config,
        tmp_path,
        {trainer_task.CONFIG_KEY: model_config, TEXT_EMBEDDINGS_URI: embeddings},
        train_steps=2,
    )
    trainer_task.run_fn(fn_args)
    assert tf_serving_ops.unsupported_ops(fn_args.serving_model_dir) == []

    model = tf.saved_model.load(fn_args.serving_model_dir)
    predict = model.signatures["predict"]
    features = _unknown_and_known_items(config, predict.structured_input_signature[1])
    outputs = predict(**{name: tf.constant(values) for name, values in features.items()})
    retrieval = outputs["retrieval"].numpy().ravel()
    assert np.all(np.isfinite(retrieval))
    assert abs(retrieval[0] - retrieval[1]) > 1e-6, retrieval  # read from the text
    np.testing.assert_allclose(retrieval[2], retrieval[3], atol=1e-6)  # the catalogue's text
    variables = {v.name for v in model.variables}
    assert any("catalogue_token_ids" in name for name in variables)


def test_the_tuner_searches_the_model_and_the_trainer_takes_its_best_values(run, tmp_path):
    """``tuner_fn`` on the run's Transform output: two random trials of the
    real model, each scored; the best values go to ``run_fn`` as TFX's
    Trainer hands them (``HyperParameters.get_config()``) and train there."""
    import attr

    from trainer import task as trainer_task
    from trainer import tuning

    config, _ = run
    model_config = {"epochs": 1, "batch_size": 32, "pretrained_text_encoder": None}
    space = {"tower_dim": {"type": "choice", "values": [16, 32]}}
    fn_args = _trainer_args(
        config,
        tmp_path,
        {
            trainer_task.CONFIG_KEY: model_config,
            tuning.TUNING_KEY: {
                "max_trials": 2,
                "algorithm": "random",
                "search_space": space,
                "hyperparameters": ["tower_dim", "learning_rate"],
            },
        },
        train_steps=2,
    )
    fn_args = attr.evolve(fn_args, working_dir=str(tmp_path / "tuner"))
    # What TFX's Tuner executor sets: the graph path only, no model dirs.
    tuner_args = attr.evolve(
        fn_args,
        transform_output=None,
        transform_graph_path=fn_args.transform_output,
        serving_model_dir=None,
        model_run_dir=None,
    )
    result = tuning.tuner_fn(tuner_args)
    result.tuner.search(**result.fit_kwargs)
    trials = result.tuner.oracle.get_best_trials(2)
    assert len(trials) == 2 and all(np.isfinite(t.score) for t in trials)
    best = result.tuner.get_best_hyperparameters()[0]
    assert best.values["tower_dim"] in (16, 32) and 1e-3 <= best.values["learning_rate"] <= 1e-2

    trainer_task.run_fn(attr.evolve(fn_args, hyperparameters=best.get_config()))
    assert os.path.exists(os.path.join(fn_args.serving_model_dir, "saved_model.pb"))


def test_every_signature_of_the_pushed_model_survives_fuzzed_requests(run):
    """Fuzzed requests (empty, invalid UTF-8 and long strings, junk examples,
    broken shapes and dtypes) against every signature of the real model,
    ``recommend`` included: each answered OK with the signature's output
    shapes or with TF Serving's status codes, and serving goes on."""
    import random

    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from bench import request_fuzz
    from serving.admission import ServerLimits
    from serving.client import make_example
    from serving.server import ModelServer

    config, _ = run
    good = predict_pb2.PredictRequest()
    good.model_spec.name = config.model_name
    good.inputs["examples"].CopyFrom(
        tf.make_tensor_proto(
            [
                make_example(
                    {F.USER_ID: "u1", F.ITEM_ID: "i1", F.ITEM_TITLE: "t", F.ITEM_CATEGORY: "music"}
                )
            ],
            dtype=tf.string,
        )
    )
    limits = ServerLimits(max_batch_size=32, max_message_bytes=2**20, request_timeout_ms=5000)
    with (
        ModelServer(config.model_name, config.push_base, port=0, limits=limits) as server,
        grpc.insecure_channel(
            server.address, options=[("grpc.max_send_message_length", 8 * 2**20)]
        ) as channel,
    ):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        version, specs, shapes = request_fuzz.served_signatures(stub, config.model_name)
        assert {"serving_default", "predict", "recommend", "evaluate", "transform_features"} == set(
            specs
        )
        rng = random.Random(5)
        cases = [
            request_fuzz.generate(rng, config.model_name, version, specs, 32, shapes)
            for _ in range(300)
        ]
        report = request_fuzz.run(stub, iter(cases), good, shapes, lambda: 0, answer_within=10.0)
    assert report.failures == [], report.failures[:10]
    # Generated requests are often invalid on purpose: with recommend's five inputs, about 1 in
    # 20 is a well-formed one (14 of these 300).
    assert report.codes["OK"] >= 10 and report.codes["INVALID_ARGUMENT"] >= 100, report.codes


def test_the_pushed_model_answers_rest_as_grpc_with_its_warmup_replayed(run, caplog):
    """The real model through the server's REST port and its gRPC port:
    ``serving_default``, ``predict`` and ``recommend`` (string outputs
    included) give the same answers, after the export's warmup records ran."""
    from serving.client import RecommenderClient, make_example
    from serving.server import ModelServer
    from trainer import serving_contract as C

    config, _ = run
    row = {F.USER_ID: "u00001", F.ITEM_ID: "i00002", F.ITEM_TITLE: "Jazz piano album",
           F.ITEM_CATEGORY: "music", F.HISTORY_ITEM_IDS: "i00003 | i00005"}  # fmt: skip

    def strings(*values):
        return np.asarray([v.encode() for v in values], dtype=object)

    inputs = {
        C.SERVING_DEFAULT: {C.EXAMPLES: np.asarray([make_example(row)] * 2, dtype=object)},
        C.PREDICT: {name: strings(row.get(name, ""), "") for name in C.PREDICT_FEATURES},
        C.RECOMMEND: {name: strings(row.get(name, "")) for name in C.RECOMMEND_FEATURES},
    }
    caplog.set_level("INFO", logger="serving.model_store")
    with ModelServer(config.model_name, config.push_base, port=0, rest_port=0) as server:
        assert "warmup requests" in caplog.text
        with (
            RecommenderClient(server.address, config.model_name) as over_grpc,
            RecommenderClient(server.rest.address, config.model_name, transport="rest") as rest,
        ):
            for signature, values in inputs.items():
                by_grpc, _ = over_grpc.predict(signature, values)
                by_rest, _ = rest.predict(signature, values)
                assert set(by_rest) == set(by_grpc), signature
                for name, value in by_grpc.items():
                    if value.dtype == object:
                        assert by_rest[name].tolist() == value.tolist(), (signature, name)
                    else:
                        np.testing.assert_allclose(by_rest[name], value, rtol=1e-6, atol=1e-6)


def test_schema_stops_a_run_on_data_that_breaks_it(small_logs, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_logs, data)
    items = [json.loads(line) for line in open(data / "items.jsonl")]
    for item in items[::3]:
        item["category"] = "not-a-category"
    write_jsonl(str(data / "items.jsonl"), items)
    config = configs.RunConfig(data_dir=str(data), work_dir=str(tmp_path / "run"), **FAST)
    with pytest.raises(Exception, match="item_category") as err:
        local_runner.run(config)
    assert "schema" in str(err.value)
    assert not os.path.exists(os.path.join(config.pipeline_root, "Transform"))
    assert not os.path.exists(config.push_base)


def test_missing_or_empty_data_path_is_named(tmp_path):
    with pytest.raises(SystemExit, match=str(tmp_path / "nowhere")):
        local_runner.check_data_dir(str(tmp_path / "nowhere"))
    (tmp_path / "empty" / "events").mkdir(parents=True)
    with pytest.raises(SystemExit, match="no event logs"):
        local_runner.check_data_dir(str(tmp_path / "empty"))


def test_logs_without_a_required_field_stop_the_run_naming_it(small_logs, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_logs, data)
    part = data / "events" / "part-00000.jsonl"
    rows = [json.loads(line) for line in open(part)]
    for row in rows:
        del row["user_id"]
    write_jsonl(str(part), rows)
    config = configs.RunConfig(data_dir=str(data), work_dir=str(tmp_path / "run"), **FAST)
    with pytest.raises(Exception, match="missing_user_id") as err:
        local_runner.run(config)
    assert "DeadLetters" in str(err.value)
    dead = glob.glob(
        os.path.join(
            config.pipeline_root,
            "InteractionLogExampleGen",
            "rejected",
            "*",
            "DeadLetters",
            "*.jsonl",
        )
    )
    assert dead and os.path.dirname(dead[0]) in str(err.value)
    assert sum(1 for path in dead for _ in open(path)) == len(rows)


def test_a_rerun_with_unchanged_inputs_reuses_every_output(run):
    config, first = run
    again = local_runner.run(config, query_served_model=False)
    states = {row["component"]: row["state"] for row in again["components"]}
    for component in (
        "InteractionLogExampleGen",
        "StatisticsGen",
        "ExampleValidator",
        "Transform",
        "Trainer",
    ):
        assert states[component] == "cached", (component, states)
    # The first run's model is now the blessed baseline, so the Evaluator may
    # compare it with itself; the same model is not pushed a second time.
    assert again["blessed"] and again["pushed_destination"] == first["pushed_destination"]
    versions = [name for name in os.listdir(config.push_base) if name.isdigit()]
    assert versions == [os.path.basename(first["pushed_destination"])]


def _eval_scores(model_dir: str, examples_uri: str, count: int = 128) -> dict:
    """Every task's scores by ``model_dir`` for the first ``count`` eval examples."""
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(examples_uri, "Split-eval", "*")))
    records = [
        r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(count)
    ]
    outputs = tf.saved_model.load(model_dir).signatures["serving_default"](
        examples=tf.constant(records)
    )
    return {name: value.numpy() for name, value in outputs.items()}


def test_a_killed_run_resumes_from_the_last_finished_component(small_logs, tmp_path):
    work = str(tmp_path / "run")
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "run",
        "--data-dir",
        small_logs,
        "--work-dir",
        work,
        "--train-steps",
        str(FAST["train_steps"]),
        "--eval-steps",
        str(FAST["eval_steps"]),
        "--epochs",
        "2",
        "--model-config",
        json.dumps(SCRATCH_MODEL),
        *[f"--beam-arg={a}" for a in FAST["beam_args"]],
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    trainer_dir = os.path.join(work, "pipeline_root", "Trainer")
    deadline = time.time() + 400
    while not os.path.exists(trainer_dir) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert proc.poll() is None, "the run ended before the Trainer started"
    time.sleep(3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(work, "serving"))

    # The same command again resumes the run; its terminal is the quiet one.
    resumed = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900
    )
    terminal = resumed.stdout.splitlines()
    assert resumed.returncode == 0, resumed.stdout[-5000:]  # blessed and pushed
    assert len(terminal) < 60, resumed.stdout
    assert "InteractionLogExampleGen ... " in resumed.stdout and ", cached" in resumed.stdout
    assert any(line.startswith("Trainer finished: ") for line in terminal), resumed.stdout
    assert "Evaluator ... " in resumed.stdout and "=== Run summary ===" in resumed.stdout
    assert terminal[0].startswith("Full log: ") and terminal[-1] == terminal[0]
    log_path = terminal[0][len("Full log: ") :]
    assert os.path.dirname(log_path) == os.path.join(work, "logs")
    log = open(log_path).read()
    assert "INFO absl" in log and "Component Trainer is finished." in log  # the detail is there
    assert log.count("\n") > 10 * len(terminal)

    from pipeline import run_summary

    config = configs.RunConfig(
        data_dir=small_logs,
        work_dir=work,
        **dict(FAST, eval_thresholds=None, model_config={"epochs": 2, **SCRATCH_MODEL}),
    )
    summary = run_summary.summarize(config.metadata_path)
    states = {row["component"]: row["state"] for row in summary["components"]}
    for component in ("InteractionLogExampleGen", "StatisticsGen", "Transform"):
        assert states[component] == "cached", (component, states)
    assert states["Trainer"] == "complete"
    assert summary["evaluation_uri"]
    # The Trainer run again, uninterrupted and uncached, on the same upstream
    # outputs (a partial run from the last run's artifacts) trains the same
    # model as the killed-and-resumed one: same data, config and seed.
    from tfx import v1 as tfx
    from tfx.orchestration import pipeline as tfx_pipeline

    tfx.orchestration.LocalDagRunner().run(
        local_runner.local_pipeline(dataclasses.replace(config, enable_cache=False)),
        run_options=tfx_pipeline.RunOptions(from_nodes=["Trainer"], to_nodes=["Trainer"]),
    )
    reference = run_summary.summarize(config.metadata_path)["model_uri"]
    assert reference != summary["model_uri"]
    resumed_scores = _eval_scores(summary["model_uri"], summary["examples_uri"])
    reference_scores = _eval_scores(reference, summary["examples_uri"])
    assert set(resumed_scores) == set(F.TASK_NAMES)
    for name, values in reference_scores.items():
        np.testing.assert_allclose(resumed_scores[name], values, rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_regressing_model_is_not_blessed_and_not_pushed(run):
    config, first = run
    pushed_before = sorted(os.listdir(config.push_base))
    worse = dict(
        FAST,
        train_steps=2,
        model_config={
            "epochs": 1,
            "batch_size": 64,
            "learning_rate": 1e-7,
            "min_task_labels": 10,
            "task_weights": {"click": 1.0, "rating": 0.0},
        },
    )
    summary = local_runner.run(
        configs.RunConfig(
            data_dir=config.data_dir, work_dir=config.work_dir, **{k: v for k, v in worse.items()}
        )
    )
    assert not summary["blessed"] and not summary["pushed"]
    assert sorted(os.listdir(config.push_base)) == pushed_before
    assert any("change_threshold" in f for f in summary["validation_failures"])


def _start_tasks(fn_args, shared, tmp_path, attempt: str, cluster, tasks, doomed=None, paused=None):
    """``bench.local_cluster.start`` over ``fn_args``' data, writing TFX's
    directories under ``shared``."""
    from bench import local_cluster

    args = local_cluster.run_fn_args(
        os.path.dirname(os.path.dirname(fn_args.train_files[0])),
        fn_args.transform_output,
        shared,
        fn_args.train_steps,
        fn_args.custom_config["model_config"],
    )
    return local_cluster.start(args, cluster, tasks, tmp_path, attempt, doomed, paused)


def _two_workers(*args, doomed=None):
    from bench.local_cluster import loopback_cluster

    return _start_tasks(*args, loopback_cluster(workers=2), [("worker", 0), ("worker", 1)], doomed)


def _wait_or_kill(procs, seconds: float) -> None:
    from bench.local_cluster import wait_or_kill

    wait_or_kill(procs, seconds)


_CLUSTER_MODEL = {"epochs": 2, "batch_size": 32, "pretrained_text_encoder": None}
_CLUSTER_STEPS = 10


@pytest.fixture(scope="module")
def one_worker(run, tmp_path_factory):
    """The reference for the cluster tests: run_fn on one machine, same
    config and steps; (its FnArgs, the raw examples' URI)."""
    from trainer import task as trainer_task

    config, _ = run
    single = _trainer_args(
        config,
        tmp_path_factory.mktemp("one-worker"),
        {"model_config": _CLUSTER_MODEL},
        _CLUSTER_STEPS,
    )
    trainer_task.run_fn(single)
    (examples_uri,) = glob.glob(
        os.path.join(config.pipeline_root, "InteractionLogExampleGen", "examples", "*")
    )
    return single, examples_uri


def _assert_serves_like_the_contract(run, one_worker, exported: str) -> None:
    """The cluster's export matches the serving contract and scores every
    task of the eval examples, finite and not constant, like the one-worker
    model; the mean absolute differences are printed (``-s``)."""
    config, _ = run
    single, examples_uri = one_worker
    _assert_matches_the_contract(exported, F.TASK_NAMES, _num_categories(config))
    cluster = _eval_scores(exported, examples_uri)
    one = _eval_scores(single.serving_model_dir, examples_uri)
    for name in F.TASK_NAMES:
        assert cluster[name].shape == one[name].shape, name
        assert np.all(np.isfinite(cluster[name])) and np.ptp(cluster[name]) > 0, name
        print(
            name, "mean |cluster - one worker|", float(np.mean(np.abs(cluster[name] - one[name])))
        )


def test_two_workers_train_resume_after_one_is_killed_and_the_chief_exports(
    run, one_worker, tmp_path
):
    """MultiWorkerMirroredStrategy from TF_CONFIG: two worker processes on
    127.0.0.1 train the real model for 2 epochs. Worker 1 is killed with
    SIGKILL after epoch 1; the chief, stuck without its peer, is killed too,
    as a scheduler restarting the job would. The restarted pair resumes from
    the backup at epoch 2 (BackupAndRestore) and only the chief (worker 0)
    writes the export, which matches the serving contract. Scores like a
    one-worker run's are asserted where they can hold: on the same global
    batch, two synchronous replicas train the one-replica model to 1e-4
    (``tests/test_model.py::test_two_replicas_train_the_model_one_replica_
    trains_on_the_same_global_batch``). Here they cannot: the resumed epoch
    restarts the input pipeline (BackupAndRestore keeps weights and epoch,
    not the iterator), dropout differs per replica, and the retrieval loss's
    negatives are one replica's batch; after 10 steps the mean |rating
    difference| to the one worker is about 1 point, so it is printed."""
    config, _ = run
    shared = tmp_path / "shared"
    fn_args = _trainer_args(
        config, tmp_path / "unused", {"model_config": _CLUSTER_MODEL}, _CLUSTER_STEPS
    )
    procs, logs = _two_workers(fn_args, shared, tmp_path, "first", doomed=("worker", 1))
    _wait_or_kill(procs[1:], 600)
    _wait_or_kill(procs[:1], 30)  # the chief waits for its lost peer: the scheduler restarts it
    died = logs[1].read_text()
    assert procs[1].returncode == -signal.SIGKILL, died[-3000:]
    assert "worker killed after epoch 1" in died
    assert os.path.exists(shared / "model_run" / "backup" / "chief" / "checkpoint")

    procs, logs = _two_workers(fn_args, shared, tmp_path, "restart")
    _wait_or_kill(procs, 600)
    outputs = [log.read_text() for log in logs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
        assert "Resumed training from the backup" in out and "epoch 2 of 2" in out, out[-3000:]
    history = json.loads((shared / "model_run" / "history.json").read_text())
    assert len(history["loss"]) == 1  # epoch 2 only: epoch 1 was not trained again
    assert not os.path.exists(shared / "model_run" / "backup")  # deleted once fit finished
    # Only the chief wrote TFX's directories; worker 1's copy is gone.
    assert "Worker export discarded" in outputs[1] and "Worker export discarded" not in outputs[0]
    assert not glob.glob(str(tmp_path / "tmp-restart-*" / "worker*"))  # the killed one's stays
    _assert_serves_like_the_contract(run, one_worker, str(shared / "serving_model"))


# Two workers vs one process, same global batch and steps, with what is
# per replica by design switched off (dropout; retrieval's in-batch
# negatives): the scores agree up to the order of float sums (measured 1e-6).
_EQUIVALENT_MODEL = {
    **_CLUSTER_MODEL,
    "epochs": 1,
    "dropout": 0.0,
    "item_id_dropout": 0.0,
    "tasks": ["click", "conversion", "rating", "category", "interest"],
}
WORKER_TOLERANCE = 1e-4


def test_two_worker_processes_export_the_one_process_model_within_a_tolerance(run, tmp_path):
    """MultiWorkerMirroredStrategy across two processes on 127.0.0.1 vs the
    Trainer in one process, on the same data, global batch (32) and 10
    steps: the chief's export scores every task of 128 eval examples within
    WORKER_TOLERANCE of the one-process export."""
    from trainer import task as trainer_task

    config, _ = run
    custom = {"model_config": _EQUIVALENT_MODEL}
    single = _trainer_args(config, tmp_path / "one", custom, _CLUSTER_STEPS)
    trainer_task.run_fn(single)
    shared = tmp_path / "shared"
    procs, logs = _two_workers(single, shared, tmp_path, "equal")
    _wait_or_kill(procs, 600)
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log.read_text()[-3000:]
    (examples_uri,) = glob.glob(
        os.path.join(config.pipeline_root, "InteractionLogExampleGen", "examples", "*")
    )
    one = _eval_scores(single.serving_model_dir, examples_uri)
    two = _eval_scores(str(shared / "serving_model"), examples_uri)
    assert set(one) == set(_EQUIVALENT_MODEL["tasks"])
    for name in one:
        difference = float(np.max(np.abs(two[name] - one[name])))
        print(name, "max |two workers - one process|", difference)
        assert difference <= WORKER_TOLERANCE, (name, difference)
        assert np.ptp(one[name]) > 0, name


def _wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"no {what} within {seconds:.0f} s"
        time.sleep(0.5)


def test_parameter_servers_on_loopback_train_through_a_lost_worker_and_the_chief_exports(
    run, one_worker, tmp_path
):
    """ParameterServerStrategy from TF_CONFIG: a chief (the coordinator), a
    worker and a parameter server on 127.0.0.1. The large tables live on
    the parameter server, the worker runs the steps, validation recall@k
    runs on the worker (the in-graph top-k). After epoch 1 the worker is
    SIGKILLed; the coordinator's next step fails, it waits for the worker,
    and the worker restarted by the "scheduler" (this test, same address)
    is taken back: epoch 2 trains on it. The worker and the parameter server
    end once the chief's export exists, and the export matches the serving
    contract."""
    config, _ = run
    shared = tmp_path / "shared"
    fn_args = _trainer_args(
        config, tmp_path / "unused", {"model_config": _CLUSTER_MODEL}, _CLUSTER_STEPS
    )
    from bench.local_cluster import loopback_cluster

    cluster = loopback_cluster(workers=1, chief=True, ps=1)
    tasks = [("chief", 0), ("worker", 0), ("ps", 0)]
    pause = tmp_path / "pause"
    pause.mkdir()
    procs, logs = _start_tasks(
        fn_args, shared, tmp_path, "pss", cluster, tasks, paused=(("chief", 0), pause)
    )
    try:
        _wait_until(lambda: (pause / "paused").exists(), 600, "chief pausing after epoch 1")
        _wait_or_kill(procs[1:2], 0)  # the worker is lost (SIGKILL)
        (pause / "resume").touch()
        _wait_until(lambda: "failed with" in logs[0].read_text(), 120, "worker failure seen")
        restarted, restarted_logs = _start_tasks(
            fn_args, shared, tmp_path, "pss-restart", cluster, [("worker", 0)]
        )
        procs, logs = [procs[0], *restarted, procs[2]], [logs[0], *restarted_logs, logs[2]]
    finally:
        _wait_or_kill(procs, 600)
    outputs = [log.read_text() for log in logs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
    assert "ParameterServerStrategy" in outputs[0]
    assert "on the parameter servers" in outputs[0]
    assert "resumed after epoch 1" in outputs[0] and "has been recovered" in outputs[0]
    assert "Serving as worker 0" in outputs[1] and "Serving as ps 0" in outputs[2]
    history = json.loads((shared / "model_run" / "history.json").read_text())
    assert len(history["loss"]) == 2
    assert history["val_retrieval_recall_at_100"][-1] > 0
    _assert_serves_like_the_contract(run, one_worker, str(shared / "serving_model"))
