"""The local server as TF Serving users know it: REST beside gRPC, version
policies and labels, server-side batching, warmup replay, Prometheus metrics."""

import base64
import json
import os
import threading

import grpc
import numpy as np
import pytest
import tensorflow as tf
import urllib3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from serving.admission import ServerLimits
from serving.batching import BatchingOptions
from serving.client import RecommenderClient
from serving.model_config import ServedModel, VersionPolicy, read_model_config_file
from serving.server import ModelServer, main as serve_main
from serving.serving_protos import ConfigFileError
from trainer.warmup import warmup_path
from tests.serving_fixtures import TOY_OUTPUTS, push_toy, save_toy

MODEL = "toy"
METRICS = "/monitoring/prometheus/metrics"
HTTP = urllib3.PoolManager(retries=False, timeout=10)


def _rows(n, start=0):
    return {
        "user_id": np.asarray([f"user-{start + i}".encode() for i in range(n)], dtype=object),
        "weights": np.asarray([[start + i, 0.5, 0.25] for i in range(n)], dtype=np.float32),
        "count": np.asarray([start + i for i in range(n)], dtype=np.int64),
    }


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """``<tmp>/toy`` holding toy versions 1, 2 and 3."""
    root = tmp_path_factory.mktemp("apis")
    base = str(root / MODEL)
    for version in (1, 2, 3):
        push_toy(base, version, str(root / "scratch"))
    return base


@pytest.fixture(scope="module")
def server(base):
    """Versions 2 and 3 (latest 2), labelled stable=2 and canary=3; REST and metrics on."""
    model = ServedModel(MODEL, base, VersionPolicy("latest", 2), {"stable": 2, "canary": 3})
    server = ModelServer(
        models=[model],
        port=0,
        rest_port=0,
        prometheus_path=METRICS,
        limits=ServerLimits(max_batch_size=64, max_message_bytes=2**20),
    ).start()
    yield server
    server.stop()


def _rest(server, method, path, body=None, raw=None):
    response = HTTP.request(
        method,
        f"http://{server.rest.address}{path}",
        body=raw if raw is not None else (None if body is None else json.dumps(body)),
    )
    return response.status, json.loads(response.data)


def _grpc(server, version=None, label=""):
    return RecommenderClient(server.address, MODEL, version_label=label, timeout=10)


@pytest.mark.parametrize("signature", sorted(TOY_OUTPUTS))
def test_rest_answers_every_signature_as_grpc_does(server, signature):
    inputs = {
        "serving_default": {"examples": np.asarray([b"", b"\xff"[:0]], dtype=object)},
        "features": _rows(3),
        "slow": {"iterations": np.asarray([2.0, 1.0], dtype=np.float32)},
    }[signature]
    with _grpc(server) as g, RecommenderClient(server.rest.address, MODEL, transport="rest") as r:
        over_grpc, version = g.predict(signature, inputs)
        over_rest, _ = r.predict(signature, inputs)
    assert version == 3
    assert set(over_rest) == set(over_grpc) == set(TOY_OUTPUTS[signature])
    for name, value in over_grpc.items():
        np.testing.assert_allclose(over_rest[name], value)
    # Row format, by hand: one object per row, b64 for the binary strings.
    if signature == "features":
        instances = [
            {
                "user_id": {"b64": base64.b64encode(u).decode()},
                "weights": w.tolist(),
                "count": int(c),
            }
            for u, w, c in zip(inputs["user_id"], inputs["weights"], inputs["count"])
        ]
        status, answer = _rest(
            server,
            "POST",
            f"/v1/models/{MODEL}:predict",
            {"signature_name": "features", "instances": instances},
        )
        assert status == 200
        assert [row["total"] for row in answer["predictions"]] == over_grpc["total"].tolist()


def test_rest_status_and_metadata_match_grpc(server):
    with _grpc(server) as client:
        grpc_status = client.status()
        grpc_signatures = client.signatures()
    status, answer = _rest(server, "GET", f"/v1/models/{MODEL}")
    assert status == 200
    assert [(int(s["version"]), s["state"]) for s in answer["model_version_status"]] == grpc_status
    assert grpc_status == [(3, "AVAILABLE"), (2, "AVAILABLE")]
    status, answer = _rest(server, "GET", f"/v1/models/{MODEL}/versions/2/metadata")
    assert status == 200 and answer["model_spec"]["version"] == "2"
    with RecommenderClient(server.rest.address, MODEL, transport="rest") as rest:
        assert rest.signatures() == grpc_signatures
        assert rest.status() == grpc_status


def test_a_labelled_version_is_served_by_label_on_both_transports(server):
    examples = {"examples": np.asarray([b""], dtype=object)}
    for label, version in (("stable", 2), ("canary", 3)):
        with _grpc(server, label=label) as client:
            outputs, answered = client.predict("serving_default", examples)
        assert answered == version and outputs["click"][0, 0] == pytest.approx(version / 1000)
        with RecommenderClient(
            server.rest.address, MODEL, transport="rest", version_label=label
        ) as rest:
            outputs, _ = rest.predict("serving_default", examples)
        assert outputs["click"][0, 0] == pytest.approx(version / 1000)
    with _grpc(server) as client:
        _, answered = client.predict("serving_default", examples, version=2)
        assert answered == 2
        with pytest.raises(grpc.RpcError) as err:
            client.predict("serving_default", examples, version=1)  # on disk, not in the policy
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with _grpc(server, label="nope") as client, pytest.raises(grpc.RpcError) as err:
        client.predict("serving_default", examples)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "nope" in err.value.details()
    status, answer = _rest(
        server, "POST", f"/v1/models/{MODEL}/labels/nope:predict", {"inputs": [""]}
    )
    assert status == 400 and "nope" in answer["error"]


@pytest.mark.parametrize(
    "path,body,status,words",
    [
        ("/v1/models/nope:predict", {"inputs": [""]}, 404, "nope"),
        (f"/v1/models/{MODEL}:predict", None, 400, "JSON"),
        (f"/v1/models/{MODEL}:predict", {"instances": [1.5]}, 400, "strings"),
        (f"/v1/models/{MODEL}:predict", {"inputs": [""], "instances": [""]}, 400, "exactly one"),
        (f"/v1/models/{MODEL}:predict", {"inputs": [""], "extra": 1}, 400, "extra"),
        (f"/v1/models/{MODEL}:predict", {"inputs": [{"b64": "!!"}]}, 400, "base64"),
        (f"/v1/models/{MODEL}:predict", {"inputs": [[""], ""]}, 400, "ragged"),
        (f"/v1/models/{MODEL}:predict", {"inputs": [""] * 65}, 400, "exceeds the maximum of 64"),
        (
            f"/v1/models/{MODEL}:predict",
            {"signature_name": "features", "instances": [{"user_id": "a"}]},
            400,
            "instance 0",
        ),
        (
            f"/v1/models/{MODEL}:predict",
            {
                "signature_name": "features",
                "inputs": {**{k: [] for k in ("user_id", "weights")}, "count": [2**70]},
            },
            400,
            "out of range",
        ),
        (f"/v1/models/{MODEL}:predict", {"signature_name": "gone", "inputs": [""]}, 400, "gone"),
        (f"/v1/models/{MODEL}/versions/x:predict", {"inputs": [""]}, 400, "version"),
        (f"/v1/models/{MODEL}/versions/9:predict", {"inputs": [""]}, 404, "version 9"),
        (f"/v1/models/{MODEL}:classify", {"inputs": [""]}, 501, "classify"),
        ("/v2/anything", {}, 404, "Malformed"),
    ],
)
def test_bad_rest_requests_get_tf_servings_codes_and_serving_goes_on(
    server, path, body, status, words
):
    raw = b"{not json" if body is None else None
    got, answer = _rest(server, "POST", path, body, raw=raw)
    assert got == status, answer
    assert words in answer["error"]
    ok, _ = _rest(server, "POST", f"/v1/models/{MODEL}:predict", {"instances": [""]})
    assert ok == 200


def test_rest_refuses_bodies_past_the_message_limit_and_deep_nesting(server):
    huge = b'{"inputs": ["' + b"x" * (2**20 + 10) + b'"]}'
    status, answer = _rest(server, "POST", f"/v1/models/{MODEL}:predict", raw=huge)
    assert status == 429 and "limit" in answer["error"]
    deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, answer = _rest(server, "POST", f"/v1/models/{MODEL}:predict", raw=deep)
    assert status == 400


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["b64", "examples", "x", "inputs"]), children, max_size=3)
    ),
    max_leaves=20,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.dictionaries(
        st.sampled_from(["inputs", "instances", "signature_name", "other"]),
        _json_values,
        max_size=3,
    ),
    signature=st.sampled_from(["", "features", "slow", "serving_default"]),
)
def test_generated_rest_bodies_get_an_answer_never_a_500(server, body, signature):
    if signature:
        body = {**body, "signature_name": signature}
    status, answer = _rest(server, "POST", f"/v1/models/{MODEL}:predict", body)
    assert status in (200, 400), (status, answer, body)
    assert ("error" in answer) == (status != 200)


def test_metrics_parse_as_prometheus_text_and_count_the_requests(server):
    def count(status="OK", entrypoint="GRPC", model=MODEL, signature="serving_default"):
        body = HTTP.request("GET", f"http://{server.rest.address}{METRICS}").data.decode()
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                labels = sample.labels
                if (
                    sample.name == ":tensorflow:serving:request_count_total"
                    and labels["model_name"] == model
                    and labels["signature_name"] == signature
                    and labels["entrypoint"] == entrypoint
                    and labels["API"] == "predict"
                    and labels["status"] == status
                ):
                    return sample.value
        return 0

    before = (count(), count(entrypoint="REST"), count("NOT_FOUND", "REST", model="", signature=""))
    examples = {"examples": np.asarray([b""], dtype=object)}
    with _grpc(server) as client:
        for _ in range(3):
            client.predict("serving_default", examples)
    for _ in range(2):
        _rest(server, "POST", f"/v1/models/{MODEL}:predict", {"instances": [""]})
    for name in ("a", "b", "c"):  # unknown models: one series, not one per name
        _rest(server, "POST", f"/v1/models/{name}:predict", {"instances": [""]})
    after = (count(), count(entrypoint="REST"), count("NOT_FOUND", "REST", model="", signature=""))
    assert [a - b for a, b in zip(after, before)] == [3, 2, 3]
    body = HTTP.request("GET", f"http://{server.rest.address}{METRICS}").data.decode()
    states = {
        (s.labels["version"], s.labels["state"])
        for f in text_string_to_metric_families(body)
        for s in f.samples
        if s.name == ":tensorflow:serving:model_version_state"
    }
    assert states == {("2", "AVAILABLE"), ("3", "AVAILABLE")}
    assert ":tensorflow:serving:request_latency_bucket" in body


def test_batching_returns_each_caller_its_own_rows(base):
    model = ServedModel(MODEL, base)
    options = BatchingOptions(
        max_batch_size=16,
        batch_timeout_micros=20_000,
        num_batch_threads=1,
        allowed_batch_sizes=(4, 16),
    )
    server = ModelServer(
        models=[model], port=0, rest_port=0, prometheus_path=METRICS, batching=options
    ).start()
    try:
        results, errors = {}, []

        def call(i):
            try:
                with _grpc(server) as client:
                    rows = 1 + i % 3
                    outputs, _ = client.predict("features", _rows(rows, start=100 * i))
                    results[i] = (rows, outputs)
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(repr(e))

        threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for i, (rows, outputs) in results.items():
            expected = _rows(rows, start=100 * i)
            want = expected["weights"].sum(axis=1) + expected["count"]
            np.testing.assert_allclose(outputs["total"], want)
            np.testing.assert_array_equal(
                outputs["user_bytes"], [len(u) for u in expected["user_id"]]
            )
        body = HTTP.request("GET", f"http://{server.rest.address}{METRICS}").data.decode()
        sizes = {
            s.name: s.value
            for f in text_string_to_metric_families(body)
            for s in f.samples
            if s.name.startswith(":tensorflow:serving:batching_session:")
            and s.name.endswith("_count")
            and s.labels.get("signature_name") == "features"
        }
        batches = sizes[":tensorflow:serving:batching_session:input_batch_size_count"]
        assert 1 <= batches < 12  # requests were merged
        # One bad request in a batch does not fail its batch-mates.
        bad = {"examples": np.asarray([b"\xff not an example"], dtype=object)}
        good = {"examples": np.asarray([b""], dtype=object)}
        answers = {}

        def send(name, inputs):
            with _grpc(server) as client:
                try:
                    answers[name] = client.predict("serving_default", inputs)[0]["click"].shape
                except grpc.RpcError as e:
                    answers[name] = e.code()

        threads = [threading.Thread(target=send, args=(f"good{i}", good)) for i in range(4)]
        threads.append(threading.Thread(target=send, args=("bad", bad)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers.pop("bad") == grpc.StatusCode.INVALID_ARGUMENT
        assert set(answers.values()) == {(1, 1)}
    finally:
        server.stop()


def _write_warmup(version_dir, requests):
    path = warmup_path(version_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.CopyFrom(request)
            writer.write(log.SerializeToString())


def _warmup_request(signature, inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def test_warmup_records_are_replayed_and_a_failing_one_keeps_the_version_out(tmp_path, caplog):
    base = tmp_path / MODEL
    good, bad = str(base / "1"), str(base / "2")
    save_toy(good, 1)
    _write_warmup(
        good,
        [
            _warmup_request("serving_default", {"examples": np.asarray([b""], dtype=object)}),
            _warmup_request("features", _rows(2)),
        ],
    )
    save_toy(bad, 2)
    _write_warmup(bad, [_warmup_request("features", {"user_id": np.asarray([b"a"], dtype=object)})])
    caplog.set_level("INFO", logger="serving.model_store")
    server = ModelServer(MODEL, str(base), port=0).start()
    try:
        with _grpc(server) as client:
            assert dict(client.status()) == {1: "AVAILABLE", 2: "END"}
        assert "version 1: 2 warmup requests" in caplog.text
        assert "record 1 (features): inputs do not match" in server.store.failures()[2]
    finally:
        server.stop()


def test_model_config_file_policies_and_errors(tmp_path, base):
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "a" base_path: "{base}" model_platform: "tensorflow"\n'
        "    model_version_policy { specific { versions: 1 versions: 3 } }\n"
        '    version_labels { key: "stable" value: 1 } }\n'
        f'  config {{ name: "b" base_path: "{base}" model_version_policy {{ all {{}} }} }}\n'
        "}\n"
    )
    models = {m.name: m for m in read_model_config_file(str(config))}
    assert models["a"].policy == VersionPolicy("specific", versions=(1, 3))
    assert models["a"].labels == {"stable": 1}
    server = ModelServer(models=list(models.values()), port=0).start()
    try:
        assert sorted(server.stores["a"].loaded()) == [1, 3]
        assert sorted(server.stores["b"].loaded()) == [1, 2, 3]
    finally:
        server.stop()
    for text, words in (
        ("model_config_list { config { name: 'a' base_pth: '/x' } }", "base_pth"),
        ("model_config_list { }", "lists no models"),
        ("model_config_list { config { name: 'a' } }", "base_path"),
        (
            "model_config_list { config { name: 'a' base_path: '/x' } "
            "config { name: 'a' base_path: '/y' } }",
            "more than once",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/x' "
            "version_labels { key: 'bad label' value: 1 } } }",
            "bad label",
        ),
    ):
        config.write_text(text)
        with pytest.raises(ConfigFileError, match=words):
            read_model_config_file(str(config))


def test_server_cli_names_bad_config_files(tmp_path, capsys):
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 8 }\nallowed_batch_sizes: 4\n")
    with pytest.raises(SystemExit):
        serve_main(
            [
                "--model_base_path",
                str(tmp_path),
                "--enable_batching",
                "--batching_parameters_file",
                str(batching),
            ]
        )
    assert "allowed_batch_sizes" in capsys.readouterr().err
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }\n")
    with pytest.raises(SystemExit):
        serve_main(
            ["--model_base_path", str(tmp_path), "--monitoring_config_file", str(monitoring)]
        )
    assert "--rest_api_port" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        serve_main(["--model_config_file", str(tmp_path / "missing.config")])
    assert "missing.config" in capsys.readouterr().err


@settings(max_examples=200, deadline=None)
@given(
    dtype=st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.bool_, object]),
    shape=st.lists(st.integers(0, 3), max_size=3),
    seed=st.integers(0, 2**16),
)
def test_fast_tensor_conversions_agree_with_tensorflows(dtype, shape, seed):
    from serving.tensors import fill_tensor_proto, to_ndarray

    rng = np.random.default_rng(seed)
    if dtype is object:
        flat = [bytes(rng.integers(0, 256, rng.integers(0, 5)).astype(np.uint8)) for _ in
                range(int(np.prod(shape)))]  # fmt: skip
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        array = array.reshape(shape)
    else:
        array = (rng.normal(size=shape) * 100).astype(dtype)
    ours = fill_tensor_proto(tf.make_tensor_proto([]).__class__(), array)
    np.testing.assert_array_equal(tf.make_ndarray(ours), array)
    assert tf.make_ndarray(ours).shape == array.shape
    theirs = to_ndarray(tf.make_tensor_proto(array))
    np.testing.assert_array_equal(theirs, array)
    assert theirs.shape == array.shape


def test_the_shipped_batching_and_monitoring_configs_read():
    from serving.server import _prometheus_path

    root = os.path.join(os.path.dirname(os.path.dirname(__file__)), "serving", "configs")
    options = BatchingOptions.from_file(os.path.join(root, "batching.config"))
    assert (options.max_batch_size, options.num_batch_threads) == (16, 1)
    assert _prometheus_path(os.path.join(root, "monitoring.config")) == METRICS
