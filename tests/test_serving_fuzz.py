"""The model server survives any request: checked tensors, bounded resources.

Every request gets an answer within seconds, OK with outputs of the
documented shapes or one of TF Serving's status codes; serving goes on after
each; the server's memory stays under a fixed bound.
"""

import concurrent.futures
import os
import random
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import psutil
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from bench import request_fuzz
from serving.admission import ServerLimits
from serving.request_checks import (
    InputSpec,
    RequestError,
    RequestLimits,
    check_inputs,
    check_tensor,
    to_arrays,
)
from serving.server import ModelServer
from tests.serving_fixtures import TOY_OUTPUTS, toy_model_dir

MODEL = "toy"
LIMITS = RequestLimits.from_message_size(2**20, max_batch_size=64)
STRINGS = InputSpec(tf.string, (None,))


def _proto(dtype=types_pb2.DT_STRING, dims=(1,), **fields) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype, **fields)
    for size in dims:
        proto.tensor_shape.dim.add().size = size
    return proto


@pytest.mark.parametrize(
    "proto,spec,words",
    [
        (_proto(dims=(10**9,)), STRINGS, "batch size 1000000000 exceeds the maximum of 64"),
        (_proto(dims=(-1,)), STRINGS, "dimension 0 of size -1"),
        (_proto(dims=(2, -3)), InputSpec(tf.string, (None, None)), "dimension 1 of size -3"),
        (
            _proto(dims=(1, 10**9)),
            InputSpec(tf.string, (None, None)),
            "elements, more than the limit",
        ),
        (_proto(dims=(4, 2**62)), InputSpec(tf.float32, None), "must be float32, got string"),
        (
            _proto(types_pb2.DT_FLOAT, (4, 2**62)),
            InputSpec(tf.float32, None),
            "elements, more than the limit",
        ),
        (
            _proto(dims=(64,), string_val=[b"x" * 100_000]),
            STRINGS,
            "would take",
        ),  # compact form, repeated
        (_proto(dims=(1,), string_val=[b"x" * (2**20 + 1)]), STRINGS, "more than the limit"),
        (
            _proto(dims=(2,), string_val=[b"a", b"b", b"c"]),
            STRINGS,
            "carries 3 values for 2 elements",
        ),
        (_proto(dims=(2,), float_val=[1.0]), STRINGS, "carries float_val"),
        (_proto(dims=(2,), tensor_content=b"abcd"), STRINGS, "not tensor_content"),
        (
            _proto(types_pb2.DT_FLOAT, (2, 3), tensor_content=b"\0" * 23),
            InputSpec(tf.float32, (None, 3)),
            "tensor_content has 23 bytes; shape [2, 3] of float32 needs 24",
        ),
        (
            _proto(types_pb2.DT_COMPLEX64, (1,), scomplex_val=[1.0]),
            InputSpec(tf.complex64, (None,)),
            "not a whole number",
        ),
        (_proto(dims=(1, 1)), STRINGS, "expected shape [None]"),
        (_proto(dims=()), STRINGS, "expected shape [None]"),
        (_proto(dims=(1,) * 9), InputSpec(tf.string, None), "rank 9"),
        (_proto(0, (1,)), STRINGS, "must be string, got no dtype"),
        (_proto(999, (1,)), STRINGS, "unknown dtype 999"),
        (_proto(types_pb2.DT_RESOURCE, (1,)), InputSpec(tf.resource, (None,)), "cannot be sent"),
    ],
)
def test_a_bad_tensor_is_refused_before_it_is_materialised(proto, spec, words):
    with pytest.raises(RequestError) as err:
        check_tensor("examples", proto, spec, LIMITS)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert words in err.value.message and "'examples'" in err.value.message


def test_unknown_rank_and_long_names_get_short_clear_errors():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    proto.tensor_shape.unknown_rank = True
    with pytest.raises(RequestError, match="unknown rank"):
        check_tensor("examples", proto, STRINGS, LIMITS)
    with pytest.raises(RequestError) as err:
        check_inputs({"x" * 100_000: _proto()}, {"examples": STRINGS}, LIMITS)
    assert len(err.value.message) < 500 and "unexpected" in err.value.message


def test_the_compact_form_is_legal_and_expands_as_tf_does():
    proto = _proto(dims=(3,), string_val=[b"a", b"b"])
    assert check_inputs({"examples": proto}, {"examples": STRINGS}, LIMITS) > 0
    np.testing.assert_array_equal(to_arrays({"examples": proto})["examples"], [b"a", b"b", b"b"])
    floats = _proto(types_pb2.DT_FLOAT, (2, 3))  # no values: zeros
    check_tensor("w", floats, InputSpec(tf.float32, (None, 3)), LIMITS)
    np.testing.assert_array_equal(to_arrays({"w": floats})["w"], np.zeros((2, 3), np.float32))


_CHECKED_DTYPES = [
    types_pb2.DT_STRING,
    types_pb2.DT_FLOAT,
    types_pb2.DT_INT64,
    types_pb2.DT_INT32,
    types_pb2.DT_BOOL,
    types_pb2.DT_DOUBLE,
    types_pb2.DT_HALF,
    types_pb2.DT_UINT8,
    0,
    20,
    999,
]


@st.composite
def _tensor_protos(draw):
    proto = tensor_pb2.TensorProto(dtype=draw(st.sampled_from(_CHECKED_DTYPES)))
    for size in draw(st.lists(st.sampled_from([0, 1, 2, 3, 64, 65, 10**6, 2**62, -1]), max_size=4)):
        proto.tensor_shape.dim.add().size = size
    field = draw(
        st.sampled_from(
            [
                "string_val",
                "float_val",
                "int64_val",
                "int_val",
                "bool_val",
                "none",
                "tensor_content",
            ]
        )
    )
    if field == "tensor_content":
        proto.tensor_content = draw(st.binary(max_size=300))
    elif field == "string_val":
        proto.string_val.extend(draw(st.lists(st.binary(max_size=40), max_size=10)))
    elif field == "float_val":
        proto.float_val.extend(draw(st.lists(st.floats(width=32), max_size=10)))
    elif field == "int64_val":
        proto.int64_val.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=10)))
    elif field == "int_val":
        proto.int_val.extend(draw(st.lists(st.integers(0, 100), max_size=10)))
    elif field == "bool_val":
        proto.bool_val.extend(draw(st.lists(st.booleans(), max_size=10)))
    return proto


@settings(max_examples=600, deadline=None)
@given(
    proto=_tensor_protos(),
    spec_dtype=st.sampled_from([tf.string, tf.float32, tf.int64, tf.bool, tf.uint8]),
    spec_shape=st.sampled_from([(None,), (None, 3), (None, None), None]),
)
def test_any_tensor_is_refused_clearly_or_materialised_within_the_limits(
    proto, spec_dtype, spec_shape
):
    spec = InputSpec(spec_dtype, spec_shape)
    try:
        nbytes = check_inputs({"x": proto}, {"x": spec}, LIMITS)
    except RequestError as e:
        assert (
            e.code == grpc.StatusCode.INVALID_ARGUMENT
            and "'x'" in e.message
            and len(e.message) < 500
        )
        return
    array = to_arrays({"x": proto})["x"]
    assert list(array.shape) == [d.size for d in proto.tensor_shape.dim]
    assert array.dtype == spec_dtype.as_numpy_dtype or spec_dtype == tf.string
    assert array.size <= LIMITS.max_elements and nbytes <= LIMITS.max_tensor_bytes
    assert not array.shape or array.shape[0] <= LIMITS.max_batch_size


# --- against a running server -------------------------------------------------


@pytest.fixture
def model_dir(tmp_path):
    return toy_model_dir(tmp_path, MODEL)


@pytest.fixture
def server_process(model_dir, tmp_path):
    """``recsys-serve`` in its own process, so its memory is its own."""
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving.server",
            f"--model_name={MODEL}",
            f"--model_base_path={model_dir}",
            "--port=0",
            "--max_batch_size=64",
            f"--max_message_bytes={2**20}",
            "--request_timeout_ms=1000",
            "--max_concurrent_requests=4",
            "--max_queued_requests=4",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    line = proc.stdout.readline()
    assert line.startswith("serving "), (line, open(tmp_path / "server.log").read()[-3000:])
    yield proc, line.split()[-1]
    proc.terminate()
    assert proc.wait(30) == 0  # drained and exited after SIGTERM


def _channel(address):
    return grpc.insecure_channel(
        address,
        options=[
            ("grpc.max_send_message_length", 64 * 2**20),
            ("grpc.max_receive_message_length", 64 * 2**20),
        ],
    )


def _good_request(rows=1):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([b""] * rows, dtype=tf.string))
    return request


def test_thousands_of_fuzzed_requests_get_clear_answers_and_memory_stays_bounded(server_process):
    proc, address = server_process
    server = psutil.Process(proc.pid)
    with _channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        version, specs, shapes = request_fuzz.served_signatures(stub, MODEL)
        assert version == 1 and set(specs) == set(TOY_OUTPUTS)
        for _ in range(20):
            stub.Predict(_good_request(64), timeout=10)
        baseline = server.memory_info().rss
        rng = random.Random(1234)
        cases = [
            request_fuzz.generate(
                rng, MODEL, version, specs, 64, TOY_OUTPUTS, weights={"slow": 0.03}
            )
            for _ in range(2500)
        ]
        report = request_fuzz.run(
            stub, iter(cases), _good_request(), TOY_OUTPUTS, lambda: server.memory_info().rss
        )
    assert report.failures == [], report.failures[:10]
    assert report.requests == 2500 and report.slowest_seconds < 5.0
    # Both kinds of answer were exercised, bad ones under several codes.
    assert report.codes["OK"] >= 400 and report.codes["INVALID_ARGUMENT"] >= 1000, report.codes
    assert {"NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED"} <= set(report.codes), (
        report.codes
    )
    # 8 calls of at most 1 MiB each, materialised within 1 MiB each, in flight at most.
    assert report.peak_rss_bytes < baseline + 300 * 2**20, (report.peak_rss_bytes, baseline)
    assert proc.poll() is None


def _slow_request(iterations: float, rows: int = 1):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "slow"
    request.inputs["iterations"].CopyFrom(
        tf.make_tensor_proto([float(iterations)] * rows, dtype=tf.float32)
    )
    return request


def _iterations_for(stub, seconds: float) -> float:
    start = time.perf_counter()
    stub.Predict(_slow_request(20_000), timeout=30)
    return 20_000 * seconds / max(time.perf_counter() - start, 1e-3)


def test_requests_beyond_the_queue_get_resource_exhausted_at_once(model_dir):
    limits = ServerLimits(max_concurrent_requests=2, max_queued_requests=2)
    with (
        ModelServer(MODEL, str(model_dir), port=0, limits=limits) as server,
        _channel(server.address) as channel,
    ):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        iterations = _iterations_for(stub, 0.4)
        rss_before = psutil.Process().memory_info().rss
        futures = [stub.Predict.future(_slow_request(iterations), timeout=30) for _ in range(40)]
        codes = []
        for future in futures:
            try:
                future.result()
                codes.append("OK")
            except grpc.RpcError as e:
                codes.append(e.code().name)
        assert set(codes) == {"OK", "RESOURCE_EXHAUSTED"}, codes
        assert limits.max_calls <= codes.count("OK") < 20 and codes.count("RESOURCE_EXHAUSTED") > 20
        assert stub.Predict(_good_request(), timeout=10).model_spec.version.value == 1
        assert psutil.Process().memory_info().rss < rss_before + 200 * 2**20


def test_the_deadline_cancels_a_running_request_and_frees_its_thread(model_dir):
    limits = ServerLimits(max_concurrent_requests=1, max_queued_requests=1, request_timeout_ms=600)
    with (
        ModelServer(MODEL, str(model_dir), port=0, limits=limits) as server,
        _channel(server.address) as channel,
    ):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        forever = 10**7
        start = time.perf_counter()
        with pytest.raises(grpc.RpcError) as err:  # the server's own timeout
            stub.Predict(_slow_request(forever), timeout=30)
        assert (
            err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            and time.perf_counter() - start < 3
        )
        with pytest.raises(
            grpc.RpcError
        ) as err:  # the client's deadline, shorter than the server's
            stub.Predict(_slow_request(forever), timeout=0.2)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(
            0.6
        )  # the one worker is free again: the graph run was cancelled, not left running
        start = time.perf_counter()
        stub.Predict(_good_request(), timeout=10)
        assert time.perf_counter() - start < 0.5


def test_the_memory_ceiling_refuses_work_that_would_pass_it(model_dir):
    rss = psutil.Process().memory_info().rss
    tight = ServerLimits(max_memory_bytes=rss + 2**20)
    with (
        ModelServer(MODEL, str(model_dir), port=0, limits=tight) as server,
        _channel(server.address) as channel,
    ):
        with pytest.raises(grpc.RpcError) as err:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                _good_request(), timeout=10
            )
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max_memory_bytes" in err.value.details()
    roomy = ServerLimits(max_memory_bytes=rss + 2**30)
    with (
        ModelServer(MODEL, str(model_dir), port=0, limits=roomy) as server,
        _channel(server.address) as channel,
    ):
        assert prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            _good_request(), timeout=10
        )
        assert server.memory._reserved == 0  # released when the request was done


@pytest.mark.parametrize(
    "limits",
    [
        dict(max_batch_size=0),
        dict(max_concurrent_requests=0),
        dict(max_queued_requests=-1),
        dict(max_memory_bytes=-5),
    ],
)
def test_limits_are_validated(limits):
    with pytest.raises(ValueError):
        ServerLimits(**limits)


def test_metadata_and_status_rpcs_answer_any_request(model_dir):
    rng = random.Random(7)
    names = [MODEL, "", "x" * 100_000, "nope", "\x00\xff".encode("latin-1").decode("latin-1")]
    with ModelServer(MODEL, str(model_dir), port=0) as server, _channel(server.address) as channel:
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        codes = set()
        for _ in range(300):
            meta = get_model_metadata_pb2.GetModelMetadataRequest()
            status = get_model_status_pb2.GetModelStatusRequest()
            for request in (meta, status):
                request.model_spec.name = rng.choice(names)
                roll = rng.random()
                if roll < 0.3:
                    request.model_spec.version.value = rng.choice([1, 0, -1, 2**63 - 1])
                elif roll < 0.4:
                    request.model_spec.version_label = rng.choice(["stable", "y" * 10_000])
            meta.metadata_field.extend(
                rng.choices(["signature_def", "", "z" * 10_000, "other"], k=rng.randint(0, 3))
            )
            for call, request in (
                (predict.GetModelMetadata, meta),
                (models.GetModelStatus, status),
            ):
                try:
                    call(request, timeout=5)
                    codes.add("OK")
                except grpc.RpcError as e:
                    assert e.code() in request_fuzz.EXPECTED_ERRORS, (e.code(), e.details())
                    assert len(e.details()) <= 1000
                    codes.add(e.code().name)
        assert {"OK", "NOT_FOUND", "INVALID_ARGUMENT"} <= codes
        assert predict.Predict(_good_request(), timeout=10)


def test_many_concurrent_bad_and_good_clients_leave_the_server_serving(model_dir):
    """Fuzzed traffic from several clients at once (the queue limit is what
    refuses the excess), then every good request still works."""
    limits = ServerLimits(
        max_batch_size=64,
        max_message_bytes=2**20,
        max_concurrent_requests=2,
        max_queued_requests=4,
        request_timeout_ms=1000,
    )
    with (
        ModelServer(MODEL, str(model_dir), port=0, limits=limits) as server,
        _channel(server.address) as channel,
    ):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        _, specs, _ = request_fuzz.served_signatures(stub, MODEL)
        problems, lock = [], threading.Lock()

        def client(seed):
            rng = random.Random(seed)
            for _ in range(100):
                case = request_fuzz.generate(
                    rng, MODEL, 1, specs, 64, TOY_OUTPUTS, weights={"slow": 0.02}
                )
                try:
                    response = stub.Predict(case.request, timeout=10)
                    problem = request_fuzz.check_response(case, response, TOY_OUTPUTS)
                except grpc.RpcError as e:
                    problem = (
                        None
                        if e.code() in request_fuzz.EXPECTED_ERRORS
                        else f"{e.code()} {e.details()}"
                    )
                if problem:
                    with lock:
                        problems.append(f"{case.kind}: {problem}")

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            list(pool.map(client, range(6)))
        assert problems == []
        assert all(stub.Predict(_good_request(8), timeout=10) for _ in range(10))
