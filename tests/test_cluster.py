"""TF_CONFIG: the cluster a Trainer runs in, or a clear error naming the field."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from trainer import cluster as cluster_lib
from trainer.cluster import ClusterConfigError, read_cluster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_GOOD_ADDRESS = st.builds("h{}:{}".format, st.integers(0, 3), st.integers(1, 65535))
_BAD_ADDRESS = st.sampled_from(["h:0", "h:70000", "h", "h:1\n", " h:2", ""]) | _JSON
_ADDRESSES = st.lists(st.one_of(*[_GOOD_ADDRESS] * 6, _BAD_ADDRESS), min_size=1, max_size=3)
_TASK_TYPES = st.sampled_from(["chief", "worker", "ps", "evaluator"])
_TF_CONFIGS = st.fixed_dictionaries(
    {
        "cluster": st.dictionaries(
            st.sampled_from(["chief", "worker", "worker", "ps", "evaluator", "gpu"]),
            _ADDRESSES,
            min_size=1,
            max_size=4,
        ),
        "task": st.fixed_dictionaries(
            {"type": st.one_of(*[_TASK_TYPES] * 4, _JSON)},
            optional={"index": st.one_of(*[st.integers(-1, 3)] * 4, _JSON)},
        ),
    }
)


@settings(max_examples=400, deadline=None)
@given(config=_TF_CONFIGS | _TF_CONFIGS | _TF_CONFIGS | _JSON | st.text(max_size=40))
@example({"cluster": {"worker": ["h:1\n"]}, "task": {"type": "worker"}})
@example({"cluster": {"worker": ["h:1"]}, "task": {"type": ["worker"]}})
def test_any_tf_config_is_read_or_named(config):
    """Generated TF_CONFIGs, near-valid and garbage: each is a cluster this
    task is in, or a ClusterConfigError about TF_CONFIG (never another error)."""
    text = config if isinstance(config, str) else json.dumps(config)
    try:
        read = read_cluster({"TF_CONFIG": text})
    except ClusterConfigError as e:
        assert "TF_CONFIG" in str(e)
        return
    if read is None:
        assert not text.strip()
        return
    assert read.address in read.cluster[read.task_type]
    assert read.num_workers >= 1 and isinstance(read.is_chief, bool)
    for addresses in read.cluster.values():
        for address in addresses:
            host, port = address.rsplit(":", 1)
            assert host and not any(c.isspace() for c in address) and 0 < int(port) < 65536


def test_deeply_nested_tf_config_is_named():
    with pytest.raises(ClusterConfigError, match="not valid JSON"):
        read_cluster({"TF_CONFIG": "[" * 100_000})


def test_the_trainer_refuses_a_bad_tf_config_before_it_builds_anything(monkeypatch):
    from trainer import task
    from trainer.config import ModelConfig

    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["h:1"]}, "task": {"type": "ps"}}')
    with pytest.raises(ClusterConfigError, match="task.type 'ps'"):
        task.accelerator_setup(ModelConfig())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_parameter_server_roles_and_peers():
    cluster = {"chief": ["h:1"], "worker": ["h:2", "h:3"], "ps": ["h:4"]}
    roles = {
        (t, i): read_cluster(_env({"cluster": cluster, "task": {"type": t, "index": i}}))
        for t, i in (("chief", 0), ("worker", 1), ("ps", 0))
    }
    assert roles["chief", 0].parameter_server_training and not roles["chief", 0].serves_only
    assert roles["worker", 1].serves_only and roles["ps", 0].serves_only
    assert roles["worker", 1].peers() == {
        "cluster.chief[0]": "h:1", "cluster.worker[0]": "h:2", "cluster.ps[0]": "h:4",
    }  # fmt: skip
    worker = read_cluster(_env({"cluster": {"worker": ["h:2"]}, "task": {"type": "worker"}}))
    assert not worker.parameter_server_training and not worker.serves_only


def test_a_port_in_use_is_named():
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = {"cluster": {"worker": [f"127.0.0.1:{port}", "127.0.0.1:1"]}, "task": {}}
        config["task"] = {"type": "worker", "index": 0}
        cluster = read_cluster(_env(config))
        with pytest.raises(
            ClusterConfigError, match=rf"cluster.worker\[0\].*port {port} is in use"
        ):
            cluster_lib.check_port_free(cluster)
    cluster_lib.check_port_free(cluster)  # free again


def test_a_restarted_tasks_port_with_connections_in_time_wait_is_free():
    # A killed task's connections linger in TIME_WAIT on its port. gRPC binds
    # with SO_REUSEADDR (its old sockets carry it too), so a restarted server
    # binds there, and the check must let it.
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the server side closes first: its end waits in TIME_WAIT
            client.recv(1)
    config = {"cluster": {"worker": [f"127.0.0.1:{port}"]}, "task": {"type": "worker"}}
    cluster_lib.check_port_free(read_cluster(_env(config)))


SECONDS_SETTINGS = [
    (cluster_lib.peer_timeout, "RECSYS_PEER_TIMEOUT_S", cluster_lib.DEFAULT_PEER_TIMEOUT_S),
    (
        cluster_lib.heartbeat_timeout,
        "RECSYS_HEARTBEAT_TIMEOUT_S",
        cluster_lib.DEFAULT_HEARTBEAT_TIMEOUT_S,
    ),
]


@pytest.mark.parametrize("read, name, default", SECONDS_SETTINGS)
@pytest.mark.parametrize("value", ["0", "-3", "soon", "nan", "inf", "inf x"])
def test_a_bad_peer_or_heartbeat_timeout_is_named(read, name, default, value):
    with pytest.raises(ClusterConfigError, match=name):
        read({name: value})
    assert read({}) == default
    assert read({name: "2.5"}) == 2.5


def test_the_coordination_service_gets_the_heartbeat_timeout_and_the_strategys_leader():
    """The configuration MultiWorkerMirroredStrategy would write itself
    (leader: the chief; jobs: chief and workers, not the evaluator), with
    the longer heartbeat timeout; the strategy keeps a configuration it finds."""
    from tensorflow.python.eager import context

    config = {
        "cluster": {
            "chief": ["127.0.0.1:1"],
            "worker": ["127.0.0.1:2", "127.0.0.1:3"],
            "evaluator": ["127.0.0.1:4"],
        },
        "task": {"type": "worker", "index": 1},
    }
    before = context.context().coordination_service
    try:
        cluster_lib.configure_coordination(read_cluster(_env(config)), 90.5)
        service = context.context().coordination_service
        assert service.heartbeat_timeout_in_ms == 90_500
        assert service.service_type == "standalone"
        assert service.service_leader == "/job:chief/replica:0/task:0"
        assert [(j.name, j.num_tasks) for j in service.coordinated_job_list] == [
            ("chief", 1),
            ("worker", 2),
        ]
    finally:
        context.context()._coordination_service_config = before


def test_unreachable_peers_are_found_by_tcp():
    with socket.socket() as up:
        up.bind(("127.0.0.1", 0))
        up.listen()
        alive, dead = up.getsockname()[1], _free_port()
        me = _free_port()
        config = {
            "cluster": {"worker": [f"127.0.0.1:{me}", f"127.0.0.1:{alive}", f"127.0.0.1:{dead}"]},
            "task": {"type": "worker", "index": 0},
        }
        missing = cluster_lib.unreachable_peers(read_cluster(_env(config)), seconds=1)
    assert missing == {"cluster.worker[2]": f"127.0.0.1:{dead}"}


_STUCK = textwrap.dedent(
    """
    import logging, sys, time
    sys.path.insert(0, sys.argv[1])
    logging.basicConfig(level=logging.INFO)
    from trainer import cluster
    cluster.within_peer_timeout(cluster.read_cluster(), lambda: time.sleep(120), "Test")
    """
)


def test_a_peer_that_never_comes_up_ends_the_wait_with_its_name():
    """The wait for the cluster is bounded: after RECSYS_PEER_TIMEOUT_S the
    process logs which peers never answered and exits (75), even though the
    call it waited on (here a sleep; in TensorFlow, a strategy waiting for
    its peers) never returns."""
    me, missing = _free_port(), _free_port()
    config = {
        "cluster": {"worker": [f"127.0.0.1:{me}", f"127.0.0.1:{missing}"]},
        "task": {"type": "worker", "index": 0},
    }
    env = {**os.environ, "TF_CONFIG": json.dumps(config), "RECSYS_PEER_TIMEOUT_S": "1"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _STUCK, ROOT], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 75 and time.monotonic() - started < 30
    assert f"cluster.worker[1] 127.0.0.1:{missing}" in done.stderr
    assert "did not come up within 1 s" in done.stderr
