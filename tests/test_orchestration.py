"""One pipeline, several runners: Kubeflow V2 spec, Airflow DAG, the image."""

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from pipeline import cli, configs, runners

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPONENTS = {
    "InteractionLogExampleGen",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "AnomaliesGate",
    "TaskSelector",
    "DriftGate",
    "Transform",
    "TextEmbedder",
    "Trainer",
    "Evaluator",
    "AtomicPusher",
}


@pytest.mark.parametrize("name", sorted(os.listdir(configs.ENVIRONMENTS_DIR)))
def test_environment_files_load(name):
    config = configs.RunConfig.from_file(os.path.join(configs.ENVIRONMENTS_DIR, name))
    assert config.runner in configs.RUNNERS and config.beam_args


def test_the_tuning_environment_adds_a_tuner_whose_best_values_the_trainer_takes(tmp_path):
    tuning = os.path.join(configs.ENVIRONMENTS_DIR, "tuning.json")
    config = configs.RunConfig.from_sources({"data_dir": str(tmp_path)}, tuning)
    nodes = {n.id: n for n in runners.pipeline_for(config, config.schema_path).components}
    assert nodes["Trainer"].inputs["hyperparameters"].producer_component_id == "Tuner"
    assert nodes["Tuner"].inputs["text_embeddings"].producer_component_id == "TextEmbedder"
    assert nodes["Tuner"].inputs["active_tasks"].producer_component_id == "TaskSelector"
    train_args = json.loads(nodes["Tuner"].exec_properties["train_args"])
    assert int(train_args["num_steps"]) == config.tuning["trial_steps"]
    plain = configs.RunConfig(data_dir=str(tmp_path), work_dir=str(tmp_path))
    assert "Tuner" not in {n.id for n in runners.pipeline_for(plain, plain.schema_path).components}
    with pytest.raises(ValueError, match="max_trials"):
        configs.RunConfig(data_dir=str(tmp_path), tuning={"max_trials": -1})


def test_unknown_environment_setting_is_named(tmp_path):
    path = tmp_path / "env.json"
    path.write_text(json.dumps({"data_dir": "x", "pipeline_rooot": "y"}))
    with pytest.raises(ValueError, match="pipeline_rooot"):
        configs.RunConfig.from_file(str(path))


def test_kubeflow_spec_has_every_component_with_its_inputs(tmp_path, capsys):
    out = tmp_path / "spec" / "recsys.json"
    assert (
        cli.main(
            [
                "compile-kubeflow",
                "--image",
                "example.com/recsys:1.2",
                "--pipeline-root",
                "gs://b/root",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    spec = json.load(open(out))
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    assert COMPONENTS <= set(tasks)
    inputs = {name: set(t.get("inputs", {}).get("artifacts", {})) for name, t in tasks.items()}
    assert inputs["StatisticsGen"] == {"examples"}
    assert inputs["Transform"] == {"examples", "schema"}
    assert inputs["Trainer"] == {
        "examples", "schema", "transform_graph", "text_embeddings", "active_tasks",
    }  # fmt: skip
    assert inputs["TaskSelector"] == {"statistics"}  # decided at run time, from the data
    assert inputs["DriftGate"] == {"statistics", "schema", "previous_statistics"}
    assert inputs["TextEmbedder"] == {"examples"}
    assert inputs["Evaluator"] == {"examples", "model", "baseline_model"}
    assert inputs["AtomicPusher"] == {"model", "model_blessing"}
    for task in ("Transform", "TextEmbedder"):  # bad data stops the run before either
        assert {"AnomaliesGate", "DriftGate"} <= set(tasks[task]["dependentTasks"])
    assert spec["runtimeConfig"]["gcsOutputDirectory"] == "gs://b/root"
    images = {
        e["container"]["image"]
        for e in spec["pipelineSpec"]["deploymentSpec"]["executors"].values()
        if "container" in e
    }
    assert images == {"example.com/recsys:1.2"}
    beam_args = json.dumps(spec)
    assert "DataflowRunner" in beam_args


def test_kubeflow_needs_an_image(tmp_path):
    config = configs.RunConfig.from_file(os.path.join(configs.ENVIRONMENTS_DIR, "kubeflow.json"))
    config.image = None
    with pytest.raises(ValueError, match="image"):
        runners.compile_kubeflow(config, str(tmp_path / "x.json"))


def test_airflow_schedule_is_printed(capsys):
    assert cli.main(["airflow-schedule"]) == 0
    assert "schedule=0 3 * * *" in capsys.readouterr().out


DAGBAG_SCRIPT = """
import json, sys
from airflow.models import DagBag
bag = DagBag(dag_folder=sys.argv[1], include_examples=False)
dag = next(iter(bag.dags.values()), None)
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "dag_id": dag and dag.dag_id, "tasks": dag and sorted(dag.task_ids),
                  "after_gate": dag and sorted(dag.get_task("AnomaliesGate").downstream_task_ids),
                  "after_trainer": dag and sorted(dag.get_task("Trainer").downstream_task_ids),
                  "schedule": dag and str(dag.schedule_interval)}))
"""


def test_airflow_loads_the_dag_file_with_every_task_in_order(tmp_path):
    if importlib.util.find_spec("airflow") is None:
        pytest.skip("Airflow is an optional extra ([airflow])")
    config = json.load(open(os.path.join(configs.ENVIRONMENTS_DIR, "airflow.json")))
    config.update(work_dir=str(tmp_path / "work"), data_dir=str(tmp_path / "data"))
    config_path = tmp_path / "airflow.json"
    config_path.write_text(json.dumps(config))
    # Airflow's own loader parses the DAG file, in a process of its own so
    # Airflow's settings and logging stay out of this one.
    # The DAG file imports TFX (15-30 s on 2 busy cores), close to Airflow's
    # default 30 s dagbag_import_timeout, so the test raises it as README says.
    env = dict(
        os.environ,
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="300",
        RECSYS_AIRFLOW_CONFIG=str(config_path),
        PYTHONPATH=ROOT,
    )
    proc = subprocess.run(
        [sys.executable, "-c", DAGBAG_SCRIPT, os.path.join(ROOT, "pipeline", "airflow_dag.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded["errors"] == {} and loaded["dag_id"] == config["pipeline_name"]
    assert COMPONENTS <= set(loaded["tasks"])
    assert "Transform" in loaded["after_gate"] and "TextEmbedder" in loaded["after_gate"]
    assert "Evaluator" in loaded["after_trainer"]
    assert loaded["schedule"] == "0 3 * * *"


def test_dockerfile_matches_the_package():
    text = open(os.path.join(ROOT, "Dockerfile")).read()
    assert re.search(r"^FROM python:3\.11", text, re.M)
    assert "-c requirements/constraints.txt" in text and "--ignore-requires-python" in text
    assert "TF_USE_LEGACY_KERAS=1" in text
    setup = open(os.path.join(ROOT, "setup.py")).read()
    include = re.search(r"find_packages\(\s*include=\[(.*?)\]", setup, re.S).group(1)
    packages = {name for name in re.findall(r'"([a-z_]+)"', include)}
    copied = set(re.findall(r"^COPY (\w+) \1$", text, re.M))
    assert packages and packages <= copied, packages - copied
    workdir = re.search(r"^WORKDIR (\S+)", text, re.M).group(1)
    kubeflow = configs.RunConfig.from_file(os.path.join(configs.ENVIRONMENTS_DIR, "kubeflow.json"))
    assert kubeflow.schema_path == f"{workdir}/schemas/schema.pbtxt"
    pins = open(os.path.join(ROOT, "scripts", "install.sh")).read()
    for pin in re.findall(r'"(pip==[\d.]+|setuptools==[\d.]+|wheel==[\d.]+)"', text):
        assert pin in pins


def test_local_cli_flags_set_paths_steps_and_beam_args(tmp_path):
    from pipeline import local_runner
    from tests.conftest import CATALOG, event, write_jsonl

    data = tmp_path / "data"
    write_jsonl(str(data / "events" / "part-0.jsonl"), [event("1", "impression", "a", 100)])
    write_jsonl(str(data / "items.jsonl"), CATALOG)
    args = local_runner.parse_args(
        [
            "--data-dir",
            str(data),
            "--work-dir",
            str(tmp_path / "work"),
            "--pipeline-root",
            str(tmp_path / "root"),
            "--serving-dir",
            str(tmp_path / "serve"),
            "--train-steps",
            "7",
            "--eval-steps",
            "3",
            "--epochs",
            "2",
            "--beam-arg=--runner=DirectRunner",
            "--beam-arg=--direct_num_workers=2",
        ]
    )
    config = local_runner.build_run_config(args)
    assert config.pipeline_root == str(tmp_path / "root")
    assert config.push_base == os.path.join(str(tmp_path / "serve"), configs.MODEL_NAME)
    assert (config.train_steps, config.eval_steps, config.model_config["epochs"]) == (7, 3, 2)
    assert config.beam_args == ["--runner=DirectRunner", "--direct_num_workers=2"]
    assert config.metadata_path.startswith(str(tmp_path / "work"))


def _tiny_logs(tmp_path):
    from tests.conftest import CATALOG, event, write_jsonl

    data = tmp_path / "data"
    write_jsonl(str(data / "events" / "part-0.jsonl"), [event("1", "impression", "a", 100)])
    write_jsonl(str(data / "items.jsonl"), CATALOG)
    return data


def test_local_cli_reads_an_environment_file_and_flags_override_it(tmp_path):
    from pipeline import local_runner

    data = _tiny_logs(tmp_path)
    env = tmp_path / "local.json"
    env.write_text(
        json.dumps(
            {
                "runner": "local",
                "data_dir": str(data),
                "work_dir": str(tmp_path / "work"),
                "train_steps": 11,
                "eval_steps": 4,
                "model_config": {"epochs": 5},
                "eval_thresholds": {"click": 0.7},
                "beam_args": ["--runner=DirectRunner", "--direct_running_mode=multi_processing"],
                "enable_cache": False,
            }
        )
    )
    config = local_runner.build_run_config(local_runner.parse_args(["--config", str(env)]))
    assert (config.train_steps, config.eval_steps, config.model_config) == (11, 4, {"epochs": 5})
    assert config.eval_thresholds == {"click": 0.7} and not config.enable_cache
    assert config.beam_args[-1] == "--direct_running_mode=multi_processing"
    assert config.work_dir == str(tmp_path / "work") and config.data_dir == str(data)
    config = local_runner.build_run_config(
        local_runner.parse_args(
            [
                "--config",
                str(env),
                "--train-steps",
                "300",
                "--epochs",
                "2",
                "--eval-thresholds",
                '{"click": 0.5}',
            ]
        )
    )
    assert (config.train_steps, config.eval_steps, config.model_config["epochs"]) == (300, 4, 2)
    assert config.eval_thresholds == {"click": 0.5}


def test_local_cli_refuses_another_runners_file_and_bad_json(tmp_path, capsys):
    from pipeline import local_runner

    with pytest.raises(SystemExit, match="'kubeflow' runner"):
        local_runner.build_run_config(
            local_runner.parse_args(
                ["--config", os.path.join(configs.ENVIRONMENTS_DIR, "kubeflow.json")]
            )
        )
    with pytest.raises(SystemExit):
        local_runner.parse_args(["--model-config", "{epochs: 2"])
    assert "--model-config: not valid JSON" in capsys.readouterr().err


def test_run_settings_merge_flags_over_the_file_over_the_defaults(tmp_path):
    """RunConfig.from_sources, without argparse."""
    env = tmp_path / "env.json"
    env.write_text(
        json.dumps(
            {
                "runner": "local",
                "data_dir": "logs",
                "train_steps": 11,
                "eval_steps": 4,
                "model_config": {"epochs": 5, "dropout": 0.2},
            }
        )
    )
    defaults = configs.RunConfig()
    from_file = configs.RunConfig.from_sources({}, str(env))
    assert (from_file.train_steps, from_file.eval_steps) == (11, 4)
    assert from_file.model_name == defaults.model_name  # not in the file: the default
    assert from_file.data_dir == os.path.abspath("logs")  # local paths become absolute
    flagged = configs.RunConfig.from_sources(
        {"train_steps": 300, "eval_steps": None, "epochs": 2, "model_name": "m2"}, str(env)
    )
    assert (flagged.train_steps, flagged.eval_steps, flagged.model_name) == (300, 4, "m2")
    assert flagged.model_config == {"epochs": 2, "dropout": 0.2}  # --epochs over the file's
    own = configs.RunConfig.from_sources({"epochs": 2, "model_config": {"epochs": 7}}, str(env))
    assert own.model_config == {"epochs": 7}  # a model_config flag is taken whole
    assert configs.RunConfig.from_sources({}).data_dir is None  # generated by with_data
    with pytest.raises(ValueError, match=r"unknown settings \['train_step'\]"):
        configs.RunConfig.from_sources({"train_step": 3})
    with pytest.raises(ValueError, match="'local' runner, not 'airflow'"):
        configs.RunConfig.from_sources({}, str(env), runner="airflow")
    with pytest.raises(ValueError, match="needs data_dir"):
        configs.RunConfig.from_sources({}, None, runner="kubeflow")
    env.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        configs.RunConfig.from_sources({}, str(env))


def test_the_pipeline_definition_imports_no_model_code(tmp_path):
    """Compiling for Kubeflow or loading the Airflow DAG builds the pipeline
    without keras-nlp or the model, Trainer and export modules (TFX's own
    BulkInferrer imports TF Recommenders, so that one is allowed)."""
    script = textwrap.dedent(
        """
        import sys
        from trainer import keras_env  # noqa: F401
        from pipeline import configs, runners

        config = configs.RunConfig(data_dir=sys.argv[1], work_dir=sys.argv[1])
        pipeline = runners.pipeline_for(config, config.schema_path)
        assert len(pipeline.components) == 14  # with the TextEmbedder (encoder on by default)
        heavy = ("trainer.model", "trainer.task", "trainer.export", "trainer.text_encoder",
                 "trainer.catalog", "trainer.data")
        print(sorted(m for m in sys.modules
                     if m in heavy or m.split(".")[0] in ("keras_nlp", "keras_hub")))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_trainer_and_tuner_executors_hand_the_text_embeddings_uri_to_the_stock_executor():
    from unittest import mock

    from components import trainer, tuner
    from components.text_embedder import TextEmbeddings

    embeddings = TextEmbeddings()
    embeddings.uri = "/runs/TextEmbedder/text_embeddings/7"
    for executor, stock in (
        (trainer.Executor, "tfx.components.trainer.executor.GenericExecutor.Do"),
        (tuner.Executor, "tfx.components.tuner.executor.Executor.Do"),
    ):
        with mock.patch(stock) as do:
            executor().Do(
                {"examples": [], "text_embeddings": [embeddings]},
                {},
                {"custom_config": json.dumps({"model_config": {"epochs": 1}})},
            )
        inputs, _, properties = do.call_args[0]
        assert sorted(inputs) == ["examples"]
        assert json.loads(properties["custom_config"]) == {
            "model_config": {"epochs": 1},
            "text_embeddings_uri": embeddings.uri,
        }


def test_the_trainer_executor_hands_the_compact_models_uri_to_run_fn_and_keeps_the_output():
    from unittest import mock

    from tfx.types import standard_artifacts

    from components import trainer

    model, compact = standard_artifacts.Model(), standard_artifacts.Model()
    model.uri, compact.uri = "/runs/Trainer/model/9", "/runs/Trainer/compact_model/9"
    outputs = {"model": [model], "compact_model": [compact]}
    with mock.patch("tfx.components.trainer.executor.GenericExecutor.Do") as do:
        trainer.Executor().Do({"examples": []}, outputs, {"custom_config": "null"})
    _, stock_outputs, properties = do.call_args[0]
    assert sorted(stock_outputs) == ["model"]  # the stock executor sees its own outputs
    assert sorted(outputs) == ["compact_model", "model"]  # TFX still publishes both
    assert json.loads(properties["custom_config"]) == {"compact_model_uri": compact.uri}


def test_the_logs_rating_range_reaches_the_trainer_and_the_rmse_bar(tmp_path):
    from components.log_config import LogConfig
    from trainer import features as F

    wide = LogConfig(rating_min=1.0, rating_max=10.0)
    config = configs.RunConfig(data_dir=str(tmp_path), work_dir=str(tmp_path), log_config=wide)
    nodes = {n.id: n for n in runners.pipeline_for(config, config.schema_path).components}
    custom = json.loads(nodes["Trainer"].exec_properties["custom_config"])
    assert custom["model_config"]["rating_range"] == [1.0, 10.0]
    eval_config = nodes["Evaluator"].exec_properties["eval_config"]
    bar = F.task("rating").threshold * 9 / 4
    assert f'"upper_bound": {bar}' in eval_config


def test_span_runs_warm_start_from_the_latest_blessed_model(tmp_path):
    """Logs read by span (a run per day) hand the Trainer the latest blessed
    model as its base_model; flat logs do not, unless the config says so."""

    def base_model(log_config, model_config=None):
        config = configs.RunConfig(
            data_dir=str(tmp_path),
            work_dir=str(tmp_path),
            log_config=log_config,
            model_config=model_config or {},
        )
        nodes = {n.id: n for n in runners.pipeline_for(config, config.schema_path).components}
        channel = nodes["Trainer"].inputs.get("base_model")
        return channel.producer_component_id if channel is not None else None

    daily = {"events_pattern": "events/{YYYY}-{MM}-{DD}/*.jsonl"}
    assert base_model(daily) == "latest_blessed_model_resolver"
    assert base_model(daily, {"warm_start": False}) is None
    assert base_model({}) is None
    assert base_model({}, {"warm_start": True}) == "latest_blessed_model_resolver"


def test_a_compact_model_is_judged_against_the_runs_full_model_and_pushed_beside_it(tmp_path):
    """compact_weights adds the Trainer's compact_model output, a
    CompactEvaluator whose baseline is this run's full model (not the last
    blessed one) and a CompactPusher to <push_base>_compact; off, none."""
    from pipeline.pipeline import COMPACT_EVALUATOR, COMPACT_PUSHER, compact_push_base

    def nodes(model_config):
        config = configs.RunConfig(
            data_dir=str(tmp_path), work_dir=str(tmp_path), model_config=model_config
        )
        pipeline = runners.pipeline_for(config, config.schema_path)
        return config, {n.id: n for n in pipeline.components}

    _, plain = nodes({})
    assert COMPACT_EVALUATOR not in plain and "compact_model" not in plain["Trainer"].outputs
    config, with_compact = nodes({"compact_weights": "int8"})
    evaluator, pusher = with_compact[COMPACT_EVALUATOR], with_compact[COMPACT_PUSHER]
    model, baseline = evaluator.inputs["model"], evaluator.inputs["baseline_model"]
    assert (model.producer_component_id, model.output_key) == ("Trainer", "compact_model")
    assert (baseline.producer_component_id, baseline.output_key) == ("Trainer", "model")
    assert pusher.inputs["model_blessing"].producer_component_id == COMPACT_EVALUATOR
    destination = pusher.exec_properties["push_destination"]
    assert compact_push_base(config.push_base) in str(destination)
    with pytest.raises(ValueError, match="compact_weights"):
        nodes({"compact_weights": "int4"})
