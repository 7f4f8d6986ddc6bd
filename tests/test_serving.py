"""The local TF Serving-compatible server and the client, end to end over gRPC.

Every test runs against the local server; the ones marked ``both`` also run
against a real ``tensorflow_model_server`` when one is on PATH.
"""

import os
import socket
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from components import atomic_pusher
from serving.client import RecommenderClient
from serving.admission import ServerLimits
from serving.server import ModelServer
from tests.serving_fixtures import (
    push_toy,
    save_toy,
    toy_model_dir,
    start_tf_serving,
    which_tf_serving,
)

MODEL = "toy"
SERVERS = ["local"] + (["tf_serving"] if which_tf_serving() else [])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def model_dir(tmp_path):
    return toy_model_dir(tmp_path, MODEL)


@pytest.fixture
def local_server(model_dir):
    server = ModelServer(
        MODEL,
        str(model_dir),
        port=0,
        poll_seconds=0.2,
        limits=ServerLimits(max_batch_size=64, max_message_bytes=2**20),
    ).start()
    yield server
    server.stop()


@pytest.fixture(params=SERVERS)
def any_server(request, model_dir):
    """(address, kind) of a server over ``model_dir``: local, and real TF Serving if present."""
    if request.param == "local":
        server = ModelServer(MODEL, str(model_dir), port=0, poll_seconds=0.2).start()
        yield server.address, "local"
        server.stop()
    else:
        port = _free_port()
        proc = start_tf_serving(which_tf_serving(), MODEL, str(model_dir), port)
        yield f"127.0.0.1:{port}", "tf_serving"
        proc.terminate()
        proc.wait(10)


def _client(address):
    client = RecommenderClient(address, MODEL, timeout=10)
    client.wait_ready(30)
    return client


def test_client_scores_through_either_server(any_server):
    address, _ = any_server
    with _client(address) as client:
        for _ in range(50):  # the real server may still be loading
            try:
                outputs, version = client.predict_examples([{"user_id": "a"}, {"user_id": "b"}])
                break
            except grpc.RpcError:
                time.sleep(0.2)
        assert version == 1
        assert outputs["click"].shape == (2, 1) and np.allclose(outputs["click"], 0.001)
        assert (1, "AVAILABLE") in client.status()
        assert "serving_default" in client.signatures()


def test_recommend_ranks_the_catalogue(local_server):
    with _client(local_server.address) as client:
        catalog = [{"item_id": f"i{n}", "title": "t", "category": "c"} for n in range(70)]
        top = client.recommend({"user_id": "u"}, catalog, k=5, exclude={"i0"}, batch_size=32)
        assert len(top) == 5 and len({i for i, _ in top}) == 5 and "i0" not in {i for i, _ in top}


def test_binds_loopback_by_default(model_dir):
    server = ModelServer(MODEL, str(model_dir), port=0)
    assert server.address.startswith("127.0.0.1:")
    server.stop()


def test_hot_swap_under_concurrent_load_fails_no_request(local_server, model_dir, tmp_path):
    failures, versions, stop = [], set(), threading.Event()

    def hammer():
        with _client(local_server.address) as client:
            while not stop.is_set():
                try:
                    outputs, version = client.predict_examples([{"user_id": "x"}] * 8)
                    assert np.allclose(outputs["click"], version / 1000.0)
                    versions.add(version)
                except Exception as e:  # noqa: BLE001 - every failure counts
                    failures.append(repr(e))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    push_toy(str(model_dir), 2, str(tmp_path / "scratch"))
    deadline = time.time() + 30
    while local_server.store.current.version != 2 and time.time() < deadline:
        time.sleep(0.1)
    import shutil

    shutil.rmtree(model_dir / "1")  # the old version goes away while requests run
    push_toy(str(model_dir), 3, str(tmp_path / "scratch"))
    while local_server.store.current.version != 3 and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    assert {1, 2, 3} <= versions or {1, 3} <= versions
    assert local_server.store.current.version == 3


def test_versions_are_released_and_bad_requests_rejected_under_load(
    local_server, model_dir, tmp_path
):
    """Memory stays bounded: after many pushes and removals under concurrent
    requests, only the newest version is still alive; malformed and oversized
    requests meanwhile get INVALID_ARGUMENT and good ones never fail."""
    import gc
    import shutil
    import weakref

    failures, stop = [], threading.Event()

    def hammer():
        with _client(local_server.address) as client:
            while not stop.is_set():
                try:
                    client.predict_examples([{"user_id": "x"}] * 4)
                except Exception as e:  # noqa: BLE001 - every failure counts
                    failures.append(repr(e))

    bad_codes = []

    def send_bad_requests():  # malformed and oversized, alongside the good traffic
        bad = [
            {"examples": tf.make_tensor_proto([b"\xff not an example"], dtype=tf.string)},
            {"examples": tf.make_tensor_proto([b""] * 65, dtype=tf.string)},
            {"examples": tf.make_tensor_proto([1.0, 2.0])},
        ]
        while not stop.is_set():
            for inputs in bad:
                try:
                    _raw_predict(local_server.address, inputs=inputs)
                    bad_codes.append("OK")
                except grpc.RpcError as e:
                    bad_codes.append(e.code())

    threads = [threading.Thread(target=hammer) for _ in range(3)] + [
        threading.Thread(target=send_bad_requests)
    ]
    for t in threads:
        t.start()
    released, deadline = [], time.time() + 60
    for version in range(2, 10):
        released.append(weakref.ref(local_server.store.current.session))
        push_toy(str(model_dir), version, str(tmp_path / "scratch"))
        while local_server.store.current.version != version and time.time() < deadline:
            time.sleep(0.05)
        shutil.rmtree(model_dir / str(version - 1))
    stop.set()
    for t in threads:
        t.join()
    gc.collect()
    assert failures == [] and local_server.store.current.version == 9
    assert [ref() is None for ref in released] == [True] * len(released)
    assert len(bad_codes) >= 3 and set(bad_codes) == {grpc.StatusCode.INVALID_ARGUMENT}


def test_corrupt_and_partial_versions_are_ignored(local_server, model_dir):
    (model_dir / "7").mkdir()
    (model_dir / "7" / "saved_model.pb").write_bytes(b"not a protobuf")
    (model_dir / "8").mkdir()  # still being copied: no saved_model.pb
    (model_dir / "8" / "variables").mkdir()
    (model_dir / ".incoming-9").mkdir()
    time.sleep(1.0)
    with _client(local_server.address) as client:
        _, version = client.predict_examples([{"user_id": "a"}])
        assert version == 1
        status = dict(client.status())
        assert status[1] == "AVAILABLE" and status[7] == "END" and 8 not in status


def _raw_predict(address, model=MODEL, signature="", inputs=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for name, proto in (inputs or {}).items():
        request.inputs[name].CopyFrom(proto)
    with grpc.insecure_channel(
        address, options=[("grpc.max_send_message_length", 64 * 2**20)]
    ) as channel:
        return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=10
        )


GOOD = {"examples": tf.make_tensor_proto([b""], dtype=tf.string)}


def _declared(*dims):
    """A string TensorProto that declares ``dims`` and carries no values (about twenty bytes)."""
    proto = tf.make_tensor_proto([], dtype=tf.string)
    proto.tensor_shape.Clear()
    for size in dims:
        proto.tensor_shape.dim.add().size = size
    return proto


@pytest.mark.parametrize(
    "kwargs,code,words",
    [
        (dict(model="nope", inputs=GOOD), grpc.StatusCode.NOT_FOUND, "nope"),
        (dict(signature="missing", inputs=GOOD), grpc.StatusCode.FAILED_PRECONDITION, "missing"),
        (dict(inputs={}), grpc.StatusCode.INVALID_ARGUMENT, "missing ['examples']"),
        (
            dict(inputs={**GOOD, "extra": GOOD["examples"]}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unexpected ['extra']",
        ),
        (
            dict(inputs={"examples": tf.make_tensor_proto([1.0, 2.0])}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "must be string",
        ),
        (
            dict(inputs={"examples": tf.make_tensor_proto([[b"a"]], dtype=tf.string)}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "shape",
        ),
        (
            dict(
                inputs={"examples": tf.make_tensor_proto([b"\xff not an example"], dtype=tf.string)}
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "",
        ),
        (
            dict(inputs={"examples": tf.make_tensor_proto([b""] * 65, dtype=tf.string)}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "exceeds the maximum of 64",
        ),
        (
            dict(inputs={"examples": _declared(10**9)}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "batch size 1000000000",
        ),
        (dict(inputs={"examples": _declared(-1)}), grpc.StatusCode.INVALID_ARGUMENT, "size -1"),
        (
            dict(inputs={"examples": tf.make_tensor_proto([b"x" * (2**20 + 10)], dtype=tf.string)}),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "",
        ),
    ],
)
def test_bad_requests_get_the_right_status_and_serving_goes_on(local_server, kwargs, code, words):
    with pytest.raises(grpc.RpcError) as err:
        _raw_predict(local_server.address, **kwargs)
    assert err.value.code() == code, err.value.details()
    assert words in (err.value.details() or "")
    ok = _raw_predict(local_server.address, inputs=GOOD)
    assert ok.model_spec.version.value == 1


def test_atomic_push_leaves_nothing_behind_on_failure(tmp_path, monkeypatch):
    base = tmp_path / "serving" / MODEL
    push_toy(str(base), 1, str(tmp_path / "scratch"))
    staged = str(tmp_path / "scratch" / "toy-1")

    def broken_copy(src, dst, *a, **k):
        os.makedirs(os.path.join(dst, "variables"))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_pusher.shutil, "copytree", broken_copy)
    with pytest.raises(atomic_pusher.PushError, match="No space left"):
        atomic_pusher.push_atomically(staged, str(base), "2")
    assert sorted(os.listdir(base)) == ["1"]


def test_push_into_an_unwritable_place_fails_cleanly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    push_toy(str(tmp_path / "ok"), 1, str(tmp_path / "scratch"))
    with pytest.raises(atomic_pusher.PushError):
        atomic_pusher.push_atomically(
            str(tmp_path / "scratch" / "toy-1"), str(blocker / "models"), "2"
        )
    with pytest.raises(atomic_pusher.PushError, match="already exists"):
        atomic_pusher.push_atomically(
            str(tmp_path / "scratch" / "toy-1"), str(tmp_path / "ok"), "1"
        )


def test_push_to_an_object_store_url_copies_the_graph_last(tmp_path, monkeypatch):
    # ram:// stands in for gs:// (both go through TensorFlow's file systems).
    base = f"ram://{tmp_path.name}/serving/{MODEL}"
    staged = save_toy(str(tmp_path / "scratch" / "toy-1"), 1)
    copied = []
    real_copy = tf.io.gfile.copy
    monkeypatch.setattr(
        atomic_pusher.tf.io.gfile,
        "copy",
        lambda src, dst, overwrite=False: (copied.append(dst), real_copy(src, dst, overwrite)),
    )
    target = atomic_pusher.push_atomically(staged, base, "1")
    assert target == f"{base}/1" and copied[-1] == f"{base}/1/saved_model.pb"
    assert len(copied) == sum(len(files) for _, _, files in os.walk(staged))
    assert tf.saved_model.load(target).signatures["serving_default"] is not None
    atomic_pusher.record_push(base, staged, "1")
    assert atomic_pusher.already_pushed(base, staged) == "1"
    assert int(atomic_pusher.next_version(base)) > 1
    config = tf.io.gfile.GFile(atomic_pusher.write_models_config(base)).read()
    assert f'base_path: "{base}"' in config


def test_a_failed_object_store_push_removes_the_version(tmp_path, monkeypatch):
    base = f"ram://{tmp_path.name}/serving/{MODEL}"
    staged = save_toy(str(tmp_path / "scratch" / "toy-1"), 1)
    real_copy, calls = tf.io.gfile.copy, []

    def copy_then_fail(src, dst, overwrite=False):
        calls.append(dst)
        if len(calls) == 2:
            raise tf.errors.ResourceExhaustedError(None, None, "quota exceeded")
        real_copy(src, dst, overwrite)

    monkeypatch.setattr(atomic_pusher.tf.io.gfile, "copy", copy_then_fail)
    with pytest.raises(atomic_pusher.PushError, match="quota exceeded"):
        atomic_pusher.push_atomically(staged, base, "1")
    assert not tf.io.gfile.exists(f"{base}/1")


def test_versions_only_grow(tmp_path):
    (tmp_path / "99999999999").mkdir()
    assert atomic_pusher.next_version(str(tmp_path)) == "100000000000"


def test_models_config_lists_the_model_for_tf_serving(tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    base = tmp_path / "serving" / MODEL
    push_toy(str(base), 1, str(tmp_path / "scratch"))
    path = atomic_pusher.write_models_config(str(base))
    config = text_format.Parse(open(path).read(), model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert (
        entry.name == MODEL
        and entry.base_path == str(base)
        and entry.model_platform == "tensorflow"
    )


STOP_SCRIPT = """
import sys, time
from serving.server import stop_within

class Server:
    def stop(self):
        time.sleep(float(sys.argv[1]))

stop_within(Server(), 1.0)
"""


@pytest.mark.parametrize("drain_seconds, code", [(0.0, 0), (120.0, 1)])
def test_a_signalled_server_exits_within_its_bound_even_when_the_drain_hangs(drain_seconds, code):
    """A drain that never ends (a version still loading, a library thread)
    cannot keep the process alive: it exits 1 after the bound, 0 after a drain."""
    import subprocess
    import sys

    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", STOP_SCRIPT, str(drain_seconds)],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == code, proc.stderr[-2000:]
    assert time.monotonic() - started < 50
