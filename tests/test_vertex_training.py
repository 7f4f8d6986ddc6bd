"""The Trainer as a Vertex AI custom job: settings, the compiled spec, the job."""

import json
import os
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import cli, configs
from pipeline.vertex_training import VertexTraining

VERTEX_ENV = os.path.join(configs.ENVIRONMENTS_DIR, "vertex.json")


def test_the_keys_are_those_tfx_extension_reads():
    from tfx.extensions.google_cloud_ai_platform import constants
    from tfx.extensions.google_cloud_ai_platform.trainer import executor

    from pipeline import vertex_training

    assert vertex_training.TRAINING_ARGS_KEY == executor.TRAINING_ARGS_KEY
    assert vertex_training.ENABLE_VERTEX_KEY == constants.ENABLE_VERTEX_KEY
    assert vertex_training.VERTEX_REGION_KEY == constants.VERTEX_REGION_KEY


def test_workers_become_a_chief_pool_and_a_worker_pool():
    vertex = VertexTraining(project="p", region="r", workers=3, machine_type="m")
    chief, workers = vertex.pools("img:1")
    assert chief == {
        "machine_spec": {"machine_type": "m"},
        "replica_count": 1,
        "container_spec": {"image_uri": "img:1"},
    }
    assert workers["replica_count"] == 2
    assert len(VertexTraining(project="p", region="r", workers=1).pools("img")) == 1
    gpu = VertexTraining(
        project="p", region="r", accelerator_type="NVIDIA_L4", accelerator_count=2, image="own"
    )
    (pool, _) = gpu.pools("ignored")
    assert pool["machine_spec"]["accelerator_count"] == 2
    assert pool["container_spec"]["image_uri"] == "own"
    explicit = [{"machine_spec": {"machine_type": "a"}, "replica_count": 1}]
    assert VertexTraining(project="p", region="r", worker_pool_specs=explicit).pools(None) == (
        explicit
    )
    ps = VertexTraining(project="p", region="r", workers=3, parameter_servers=2)
    assert [(p["replica_count"], p["machine_spec"]) for p in ps.pools("img")] == [
        (1, {"machine_type": "n1-standard-8"}),
        (2, {"machine_type": "n1-standard-8"}),
        (2, {"machine_type": "n1-highmem-8"}),
    ]  # Vertex's pool 2 is TF_CONFIG's "ps"
    with pytest.raises(ValueError, match="needs an image"):
        VertexTraining(project="p", region="r").pools(None)


@pytest.mark.parametrize(
    "values, named",
    [
        ({"project": "p", "region": "r", "wokers": 2}, "wokers"),
        ({"region": "r"}, "project"),
        ({"project": "p", "region": "r", "workers": 0}, "workers"),
        ({"project": "p", "region": "r", "workers": True}, "workers"),
        ({"project": "p", "region": "r", "workers": "2"}, "workers"),
        ({"project": "", "region": "r"}, "project"),
        ({"project": "p", "region": "r", "accelerator_type": "NVIDIA_L4"}, "accelerator_count"),
        ({"project": "p", "region": "r", "accelerator_count": 1}, "accelerator_type"),
        ({"project": "p", "region": "r", "restart_job_on_worker_restart": "yes"}, "restart"),
        ({"project": "p", "region": "r", "worker_pool_specs": []}, "worker_pool_specs"),
        ({"project": "p", "region": "r", "worker_pool_specs": [{"replica_count": 1}]}, "machine"),
        (
            {
                "project": "p",
                "region": "r",
                "worker_pool_specs": [{"machine_spec": {}, "replica_count": 2}],
            },
            "chief",
        ),
        (
            {
                "project": "p",
                "region": "r",
                "worker_pool_specs": [{"machine_spec": {}, "replica_count": 1}] * 4,
            },
            "evaluator",
        ),
        ({"project": "p", "region": "r", "workers": 1, "parameter_servers": 1}, "workers >= 2"),
        ({"project": "p", "region": "r", "parameter_servers": -1}, "parameter_servers"),
    ],
)
def test_settings_that_cannot_work_are_named(values, named):
    with pytest.raises(ValueError, match=named):
        VertexTraining.from_dict(values)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "project",
                "region",
                "workers",
                "machine_type",
                "accelerator_type",
                "accelerator_count",
                "image",
                "restart_job_on_worker_restart",
                "parameter_servers",
                "worker_pool_specs",
                "other",
            ]
        ),
        _JSON,
    )
    | _JSON
)
def test_any_json_gets_settings_or_a_value_error(values):
    """Whatever a careless config holds, the answer is a VertexTraining or a
    ValueError saying what is wrong, never another exception."""
    try:
        vertex = VertexTraining.from_dict(values)
    except ValueError as e:
        assert "vertex_training" in str(e)
        return
    if vertex is not None:
        assert vertex.pools("img")[0]["replica_count"] == 1


def test_a_run_config_with_bad_vertex_settings_is_refused(tmp_path):
    path = tmp_path / "env.json"
    path.write_text(
        json.dumps({"runner": "kubeflow", "data_dir": "gs://b", "vertex_training": {"x": 1}})
    )
    with pytest.raises(ValueError, match="vertex_training: unknown settings"):
        configs.RunConfig.from_file(str(path))


def test_the_compiled_spec_runs_the_trainer_as_a_vertex_job_on_four_workers(tmp_path):
    out = tmp_path / "recsys.json"
    assert cli.main(["compile-kubeflow", "--config", VERTEX_ENV, "--output", str(out)]) == 0
    spec = json.load(open(out))["pipelineSpec"]
    task = spec["root"]["dag"]["tasks"]["Trainer"]  # the same name as on one machine
    executor = spec["deploymentSpec"]["executors"][task["componentRef"]["name"] + "_executor"]
    args = executor["container"]["args"]
    assert args[args.index("--executor_class_path") + 1] == (
        "components.vertex_trainer.VertexExecutor"
    )
    custom = json.loads(
        task["inputs"]["parameters"]["custom_config"]["runtimeValue"]["constantValue"][
            "stringValue"
        ]
    )
    assert custom["ai_platform_enable_vertex"] is True
    assert custom["ai_platform_vertex_region"] == "us-central1"
    job = custom["ai_platform_training_args"]
    assert job["project"] == "YOUR_PROJECT"
    assert job["job_spec"]["scheduling"] == {"restart_job_on_worker_restart": True}
    pools = job["job_spec"]["worker_pool_specs"]
    assert [p["replica_count"] for p in pools] == [1, 3]
    image = json.load(open(VERTEX_ENV))["image"]
    assert {p["container_spec"]["image_uri"] for p in pools} == {image}
    assert custom["model_config"]["epochs"] == 10  # the model settings travel with the job


def test_the_job_runs_the_stock_executor_with_the_extra_inputs_in_its_config():
    """What Vertex AI would be sent: TFX's own job client builds the
    CustomJob from what the executor hands it; every replica runs TFX's
    stock GenericExecutor with the text embeddings' URI and the active tasks
    in custom_config, and no input the stock executor does not know."""
    from tfx.extensions.google_cloud_ai_platform import runner, training_clients
    from tfx.types import standard_artifacts

    from components.task_selector import ActiveTasks
    from components.text_embedder import TextEmbeddings
    from components.vertex_trainer import VertexExecutor

    embeddings, tasks = TextEmbeddings(), ActiveTasks()
    embeddings.uri = "gs://b/TextEmbedder/text_embeddings/7"
    tasks.uri = "gs://b/TaskSelector/active_tasks/8"
    examples = standard_artifacts.Examples()
    examples.uri = "gs://b/Transform/transformed_examples/6"
    vertex = VertexTraining(project="p", region="europe-west4", workers=2).custom_config("img:1")
    custom = {"model_config": {"epochs": 1}, **vertex}
    selection = mock.Mock(active=["click"], to_dict=lambda: {"active": ["click"], "off": {}})
    with (
        mock.patch.object(runner, "start_cloud_training") as start,
        mock.patch("components.trainer.read_selection", return_value=selection),
    ):
        VertexExecutor().Do(
            {"examples": [examples], "text_embeddings": [embeddings], "active_tasks": [tasks]},
            {"model": [standard_artifacts.Model()]},
            {"custom_config": json.dumps(custom), "run_fn": "trainer.task.run_fn"},
        )
    inputs, outputs, properties, executor_class, job_args, *_ = start.call_args[0]
    assert executor_class == "tfx.components.trainer.executor.GenericExecutor"
    assert sorted(inputs) == ["examples"]
    sent = json.loads(properties["custom_config"])
    assert sent["text_embeddings_uri"] == embeddings.uri
    assert sent["model_config"] == {"epochs": 1, "tasks": ["click"]}
    assert start.call_args[0][7:] == (True, "europe-west4")  # enable_vertex, region

    with mock.patch.object(training_clients.VertexJobClient, "create_client"):
        client = training_clients.VertexJobClient("europe-west4")
        job = client.create_training_job(
            inputs, outputs, properties, executor_class, dict(job_args), None, None
        )
    pools = job["job_spec"]["worker_pool_specs"]
    assert [p["replica_count"] for p in pools] == [1, 1]
    command = pools[1]["container_spec"]["command"]
    assert "tfx.scripts.run_executor" in command
    assert command[command.index("--executor_class_path") + 1] == executor_class
    assert embeddings.uri in command[command.index("--exec-properties") + 1]
