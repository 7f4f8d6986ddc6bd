"""TF_CONFIG: the cluster a Trainer runs in, or a clear error naming the field."""

import json

import pytest

from trainer.cluster import ClusterConfigError, read_cluster


def _env(config):
    return {"TF_CONFIG": config if isinstance(config, str) else json.dumps(config)}


def test_no_tf_config_is_one_machine():
    assert read_cluster({}) is None and read_cluster({"TF_CONFIG": "  "}) is None


@pytest.mark.parametrize(
    "cluster,task,workers,chief",
    [
        ({"chief": ["h:1"], "worker": ["h:2", "h:3"]}, {"type": "chief", "index": 0}, 3, True),
        ({"chief": ["h:1"], "worker": ["h:2"]}, {"type": "worker", "index": 0}, 2, False),
        ({"worker": ["h:2", "h:3"]}, {"type": "worker", "index": 0}, 2, True),  # worker 0 leads
        ({"worker": ["h:2", "h:3"]}, {"type": "worker", "index": 1}, 2, False),
        ({"worker": ["127.0.0.1:2222"]}, {"type": "worker"}, 1, True),
    ],
)
def test_the_cluster_and_this_task_are_read(cluster, task, workers, chief):
    read = read_cluster(_env({"cluster": cluster, "task": task}))
    assert (read.num_workers, read.is_chief, read.multi_worker) == (workers, chief, workers > 1)


@pytest.mark.parametrize(
    "config,named",
    [
        ("{not json", "not valid JSON"),
        ([1, 2], "JSON object"),
        ({"task": {"type": "worker", "index": 0}}, "'cluster'"),
        ({"cluster": {"worker": ["h:1"]}}, "'task'"),
        ({"cluster": {"worker": ["h:1"]}, "task": {"type": "chief", "index": 0}}, "task.type"),
        ({"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 1}}, "out of range"),
        ({"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": "0"}}, "integer"),
        ({"cluster": {"worker": ["h:1"], "ps": ["h:2"]}, "task": {"type": "worker"}}, "'chief'"),
        ({"cluster": {"worker": ["h"]}, "task": {"type": "worker"}}, r"cluster.worker\[0\]"),
        ({"cluster": {"worker": ["h:99999"]}, "task": {"type": "worker"}}, "host:port"),
        ({"cluster": {"worker": ["h:1", "h:1"]}, "task": {"type": "worker"}}, "is also"),
        ({"cluster": {"gpu": ["h:1"]}, "task": {"type": "gpu"}}, "unknown task type"),
        ({"cluster": {"worker": []}, "task": {"type": "worker"}}, "non-empty list"),
        ({"cluster": {"evaluator": ["h:1"]}, "task": {"type": "evaluator"}}, "to train"),
        ({"cluster": {"chief": ["h:1", "h:2"]}, "task": {"type": "chief"}}, "at most one"),
    ],
)
def test_a_tf_config_that_cannot_work_is_named(config, named):
    with pytest.raises(ClusterConfigError, match=named):
        read_cluster(_env(config))


def test_the_trainer_refuses_a_bad_tf_config_before_it_builds_anything(monkeypatch):
    from trainer import task
    from trainer.config import ModelConfig

    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["h:1"]}, "task": {"type": "ps"}}')
    with pytest.raises(ClusterConfigError, match="task.type 'ps'"):
        task.accelerator_setup(ModelConfig())
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"chief": ["h:1"], "ps": ["h:2"]}, "task": {"type": "chief"}}
    ))  # fmt: skip
    with pytest.raises(ClusterConfigError, match="parameter-server training is not supported"):
        task.accelerator_setup(ModelConfig())
