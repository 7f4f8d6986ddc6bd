"""Structured fuzzing of the model server's Predict API.

Builds ``PredictRequest``s from random combinations of dtypes, shapes
(negative, zero, huge, mismatched, unknown rank), contents (compact form,
too many values, wrong value fields, ``tensor_content`` of any length,
invalid UTF-8, long strings, serialized examples), model specs (names,
versions, labels, signatures), input names and output filters; sends each
to a running server, followed by a known-good request, and checks every
answer: OK with outputs of the documented shapes, or one of TF Serving's
status codes, within a few seconds; the server's resident memory is sampled
throughout.

    python -m bench.request_fuzz --model-base-path runs/local/serving/recommender --requests 20000

The test suite runs it for a few thousand requests (``tests/test_serving_fuzz.py``).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import random
import subprocess
import sys
import time
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from trainer import keras_env as _keras_env  # noqa: F401  (before TF)

import grpc
import numpy as np
import psutil
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from serving.request_checks import InputSpec
from trainer import serving_contract as C

# Status codes TF Serving answers bad requests with; anything else (INTERNAL,
# UNKNOWN, a dropped connection) is a server defect.
EXPECTED_ERRORS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)
_DTYPES = [v for _, v in types_pb2.DataType.items()] + [999, 12345]
_DIMS = [0, 1, 2, 3, 7, 64, 65, 1025, 10**6, 10**9, 2**40, 2**62, 2**63 - 1, -1, -5, -(2**63)]
_NAMES = [
    "",
    " ",
    "x" * 5000,
    "é\u202e\x00",
    "../etc/passwd",
    "examples",
    "user_id",
    "serving_default",
]


@dataclasses.dataclass
class Case:
    """One request and what a correct answer looks like."""

    request: predict_pb2.PredictRequest
    kind: str
    signature: str
    rows: Optional[int]  # the batch size an OK answer must have


def _random_string(rng: random.Random) -> bytes:
    choice = rng.random()
    if choice < 0.2:
        return b""
    if choice < 0.4:
        return rng.randbytes(rng.randint(1, 64))
    if choice < 0.5:
        return b"\xff\xfe\x80" * rng.randint(1, 100)  # invalid UTF-8
    if choice < 0.55:
        return rng.randbytes(rng.randint(1000, 60_000))
    if choice < 0.8:
        feature = {
            name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[_random_string_small(rng)]))
            for name in rng.sample(
                ["user_id", "item_id", "item_title", "item_category", "history_titles", "junk"],
                rng.randint(0, 4),
            )
        }
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
    return "".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(1, 40))).encode(
        "utf-8", "replace"
    )


def _random_string_small(rng: random.Random) -> bytes:
    return rng.choice(
        [b"", b"u1", b"\xff", "caf\u00e9".encode(), b"x" * 300, b"Jazz piano | Guitar"]
    )


def _values(rng: random.Random, field: str, count: int) -> list:
    """``count`` values of the kind ``field`` (a TensorProto value field) holds, edge cases in."""
    if field == "string_val":
        return [_random_string(rng) for _ in range(count)]
    if field in ("float_val", "double_val"):
        pool = [0.0, 1.0, -1.5, 1e30, -1e-30, float("nan"), float("inf"), rng.uniform(-10, 10)]
        return [rng.choice(pool) for _ in range(count)]
    if field == "bool_val":
        return [rng.random() < 0.5 for _ in range(count)]
    if field == "half_val":
        return [rng.randint(0, 65535) for _ in range(count)]
    if field in ("uint32_val", "uint64_val"):
        return [rng.choice([0, 1, 2**32 - 1, rng.randint(0, 1000)]) for _ in range(count)]
    if field == "int64_val":
        return [
            rng.choice([0, 1, -1, 2**63 - 1, -(2**63), rng.randint(-1000, 1000)])
            for _ in range(count)
        ]
    return [rng.choice([0, 1, -1, 7, 100, rng.randint(-100, 100)]) for _ in range(count)]  # int_val


_FIELD = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_HALF: "half_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
}


def _fill(rng: random.Random, proto: tensor_pb2.TensorProto, dtype: int, elements: int) -> str:
    """Puts values into ``proto`` in one of the ways a client could; returns how."""
    mode = rng.choices(
        ["full", "compact", "none", "too_many", "content", "bad_content", "wrong_field"],
        [64, 8, 6, 5, 7, 5, 5],
    )[0]
    field = _FIELD.get(dtype, "int_val")
    if mode == "content" or mode == "bad_content":
        size = (
            tf.dtypes.as_dtype(dtype).size
            if dtype in _FIELD and dtype != types_pb2.DT_STRING
            else 4
        )
        length = (
            min(elements, 4096) * size
            if mode == "content"
            else rng.choice([1, 3, size * 5 + 1, 70_000])
        )
        proto.tensor_content = rng.randbytes(length)
        return mode
    if mode == "wrong_field":
        other = rng.choice(sorted(set(_FIELD.values()) - {field}))
        getattr(proto, other).extend(_values(rng, other, min(elements, 8) or 1))
        return mode
    count = {
        "full": min(elements, 4096),
        "compact": min(max(1, elements // 3), 64) if elements else 0,
        "none": 0,
        "too_many": min(elements, 100) + rng.randint(1, 5),
    }[mode]
    getattr(proto, field).extend(_values(rng, field, count))
    return mode


def _tensor(
    rng: random.Random, spec: InputSpec, rows: int
) -> Tuple[tensor_pb2.TensorProto, str, bool]:
    """A tensor for ``spec`` with ``rows`` rows, maybe broken; (proto, kind, well-formed)."""
    proto = tensor_pb2.TensorProto()
    want_dtype = spec.dtype.as_datatype_enum
    dtype = want_dtype if rng.random() < 0.9 else rng.choice(_DTYPES)
    proto.dtype = dtype
    shape = [
        rows if d is None and i == 0 else (d if d is not None else rng.choice([1, 3]))
        for i, d in enumerate(spec.shape or (None,))
    ]
    kinds = []
    if rng.random() < 0.15:
        mutation = rng.choice(["dim", "rank", "unknown_rank", "no_shape"])
        kinds.append(mutation)
        if mutation == "dim":
            shape[rng.randrange(len(shape))] = rng.choice(_DIMS)
        elif mutation == "rank":
            shape = [rng.choice(_DIMS[:7]) for _ in range(rng.choice([0, 1, 2, 3, 9]))]
        elif mutation == "unknown_rank":
            proto.tensor_shape.unknown_rank = True
        else:
            shape = []
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    elements = int(np.prod([max(s, 0) for s in shape])) if shape else 1
    fill = _fill(rng, proto, dtype, elements)
    kinds.append(fill)
    well_formed = (
        dtype == want_dtype and len(kinds) == 1 and fill in ("full", "none", "compact", "content")
    )
    if fill == "content" and (dtype == types_pb2.DT_STRING or elements > 4096):
        well_formed = False
    if fill == "full" and elements > 4096:
        well_formed = False
    return proto, "+".join(kinds), well_formed


def generate(
    rng: random.Random,
    model_name: str,
    version: int,
    signatures: Mapping[str, Mapping[str, InputSpec]],
    max_batch_size: int,
    outputs: Mapping[str, Mapping[str, tuple]],
    weights: Optional[Mapping[str, float]] = None,
) -> Case:
    """One random request against a server serving ``signatures`` (name -> input specs)."""
    request = predict_pb2.PredictRequest()
    kinds: List[str] = []
    spec_roll = rng.random()
    request.model_spec.name = model_name if spec_roll < 0.95 else rng.choice(_NAMES)
    if request.model_spec.name != model_name:
        kinds.append("model_name")
    version_roll = rng.random()
    if version_roll < 0.12:
        request.model_spec.version.value = version
    elif version_roll < 0.15:
        request.model_spec.version.value = rng.choice([0, -1, version + 1, 2**63 - 1])
        kinds.append("version")
    elif version_roll < 0.17:
        request.model_spec.version_label = rng.choice(["stable", "canary", "x" * 3000, ""])
        kinds.append("label") if request.model_spec.version_label else None
    names = sorted(signatures)
    if rng.random() < 0.95:
        signature = rng.choices(names, [(weights or {}).get(n, 1.0) for n in names])[0]
    else:
        signature = rng.choice(_NAMES + ["slow ", "SERVING_DEFAULT"])
    request.model_spec.signature_name = (
        "" if signature == C.SERVING_DEFAULT and rng.random() < 0.3 else signature
    )
    signature = signature or C.SERVING_DEFAULT  # what an empty name means
    if signature not in signatures:
        kinds.append("signature")
    specs = signatures.get(signature, {C.EXAMPLES: InputSpec(tf.string, (None,))})
    rows = rng.choice([0, 1, 1, 2, 3, 5, 17, max_batch_size, max_batch_size + 1])
    if rows > max_batch_size:
        kinds.append("batch")
    well_formed = True
    for name, spec in specs.items():
        proto, kind, ok = _tensor(rng, spec, rows)
        well_formed &= ok
        if not ok:
            kinds.append(f"{name}:{kind}")
        request.inputs[name].CopyFrom(proto)
    if rng.random() < 0.05:
        junk = rng.choice(_NAMES)
        if junk not in specs:
            request.inputs[junk].CopyFrom(tf.make_tensor_proto([b"x"]))
            kinds.append("extra_input")
    if specs and rng.random() < 0.04:
        del request.inputs[rng.choice(sorted(specs))]
        kinds.append("missing_input")
    if rng.random() < 0.08:
        choices = list(outputs.get(signature, ())) + ["nope", ""]
        request.output_filter.extend(rng.choices(choices, k=rng.randint(1, 3)))
        if set(request.output_filter) - set(outputs.get(signature, ())):
            kinds.append("output_filter")
    return Case(
        request, "+".join(kinds) or "good", signature, rows if well_formed and not kinds else None
    )


@dataclasses.dataclass
class Report:
    """What a fuzz run saw."""

    requests: int = 0
    codes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    failures: List[str] = dataclasses.field(default_factory=list)
    slowest_seconds: float = 0.0
    peak_rss_bytes: int = 0


def check_response(
    case: Case,
    response: predict_pb2.PredictResponse,
    output_shapes: Mapping[str, Mapping[str, Tuple[Optional[int], ...]]],
) -> Optional[str]:
    """Why an OK answer is wrong, or None. ``output_shapes``: per signature and
    output, the shape with the batch first (later ``None``s: any size)."""
    shapes = output_shapes.get(case.signature)
    if shapes is None:
        return f"OK for unknown signature {case.signature!r}"
    wanted = set(case.request.output_filter) or set(shapes)
    first = case.request.inputs[sorted(case.request.inputs)[0]] if case.request.inputs else None
    rows = (
        case.rows if case.rows is not None else (first.tensor_shape.dim[0].size if first else None)
    )
    if set(response.outputs) != wanted:
        return f"outputs {sorted(response.outputs)}, expected {sorted(wanted)}"
    for name in wanted:
        got = tuple(d.size for d in response.outputs[name].tensor_shape.dim)
        expected = (rows,) + tuple(shapes[name][1:])
        if len(got) != len(expected) or any(
            e is not None and e != g for e, g in zip(expected, got)
        ):
            return f"output {name} has shape {got}, expected {expected} (None: any)"
    return None


def run(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
    cases: Iterator[Case],
    good: predict_pb2.PredictRequest,
    output_shapes: Mapping[str, Mapping[str, Tuple[Optional[int], ...]]],
    rss: Callable[[], int],
    timeout: float = 10.0,
    answer_within: float = 5.0,
    progress: Optional[Callable[[Report], None]] = None,
) -> Report:
    """Sends every case, each followed by ``good``; returns what happened."""
    report = Report()
    for i, case in enumerate(cases):
        start = time.perf_counter()
        try:
            response = stub.Predict(case.request, timeout=timeout)
            code = grpc.StatusCode.OK
            problem = check_response(case, response, output_shapes)
        except grpc.RpcError as e:
            code, problem = e.code(), None
            if code not in EXPECTED_ERRORS:
                problem = f"{code}: {(e.details() or '')[:300]}"
        elapsed = time.perf_counter() - start
        report.requests += 1
        report.codes[code.name] += 1
        report.slowest_seconds = max(report.slowest_seconds, elapsed)
        if elapsed > answer_within:
            problem = f"answered after {elapsed:.1f} s"
        if problem:
            report.failures.append(f"#{i} {case.kind} ({case.signature}): {problem}")
        try:
            stub.Predict(good, timeout=timeout)
        except grpc.RpcError as e:
            report.failures.append(
                f"#{i} good request after {case.kind} failed: {e.code()} {e.details()}"
            )
        if i % 50 == 0:
            report.peak_rss_bytes = max(report.peak_rss_bytes, rss())
            if progress:
                progress(report)
    report.peak_rss_bytes = max(report.peak_rss_bytes, rss())
    return report


def served_signatures(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, model_name: str
) -> Tuple[int, Dict[str, Dict[str, InputSpec]], Dict[str, Dict[str, tuple]]]:
    """(version, input specs, output shapes) per signature, from GetModelMetadata."""
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = model_name
    response = stub.GetModelMetadata(request, timeout=30)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    specs, outputs = {}, {}
    for name, sig in signature_map.signature_def.items():
        if name.startswith("__"):
            continue
        specs[name] = {key: InputSpec.from_tensor_info(info) for key, info in sig.inputs.items()}
        outputs[name] = {
            key: tuple(tf.TensorShape(info.tensor_shape).as_list())
            for key, info in sig.outputs.items()
        }
    return response.model_spec.version.value, specs, outputs


def _start_server(
    model_name: str, base_path: str, max_batch_size: int
) -> Tuple[subprocess.Popen, str]:
    """``recsys-serve`` with its default limits in its own process; (process, address)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving.server",
            f"--model_name={model_name}",
            f"--model_base_path={base_path}",
            "--port=0",
            f"--max_batch_size={max_batch_size}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()
    if not line.startswith("serving "):
        proc.kill()
        raise SystemExit(f"error: the server did not start on {base_path}")
    return proc, line.split()[-1]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model-base-path", help="start a server on this model directory (else use --target)"
    )
    p.add_argument("--target", default="127.0.0.1:8500")
    p.add_argument(
        "--pid", type=int, help="the --target server's process id, to sample its resident memory"
    )
    p.add_argument("--model-name", default="recommender")
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--max-batch-size", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    proc = None
    if args.model_base_path:
        proc, args.target = _start_server(
            args.model_name, args.model_base_path, args.max_batch_size
        )
        args.pid = proc.pid
    process = psutil.Process(args.pid) if args.pid else None
    rss = (lambda: process.memory_info().rss) if process else (lambda: 0)
    rng = random.Random(args.seed)
    try:
        with grpc.insecure_channel(
            args.target,
            options=[
                ("grpc.max_send_message_length", 64 * 2**20),
                ("grpc.max_receive_message_length", 64 * 2**20),
            ],
        ) as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            version, specs, shapes = served_signatures(stub, args.model_name)
            good = _good_request(args.model_name, specs)
            stub.Predict(good, timeout=30)
            start_rss = rss()
            cases = (
                generate(rng, args.model_name, version, specs, args.max_batch_size, shapes)
                for _ in range(args.requests)
            )
            start = time.time()
            report = run(
                stub,
                cases,
                good,
                shapes,
                rss,
                progress=lambda r: print(
                    f"\r{r.requests} requests, peak RSS {r.peak_rss_bytes / 2**20:.0f} MiB",
                    end="",
                    flush=True,
                ),
            )
    finally:
        if proc:
            proc.terminate()
            proc.wait(30)
    print(
        f"\n{report.requests} requests (+ as many good ones) in {time.time() - start:.0f} s; "
        f"codes {dict(report.codes)}; slowest answer {report.slowest_seconds:.2f} s; server RSS "
        f"{start_rss / 2**20:.0f} MiB at start, {report.peak_rss_bytes / 2**20:.0f} MiB peak; "
        f"{len(report.failures)} failures"
    )
    for failure in report.failures[:20]:
        print("  ", failure)
    if report.failures:
        raise SystemExit(1)


def _good_request(
    model_name: str, specs: Mapping[str, Mapping[str, InputSpec]]
) -> predict_pb2.PredictRequest:
    """A request every run sends after each fuzzed one: raw strings to
    ``predict`` when the model has it (any strings are valid there), else
    empty examples to ``serving_default``."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    signature = C.PREDICT if C.PREDICT in specs else C.SERVING_DEFAULT
    request.model_spec.signature_name = signature
    value = b"music" if signature == C.PREDICT else b""  # b"": an empty tf.Example
    for name in specs.get(signature, {C.EXAMPLES: None}):
        request.inputs[name].CopyFrom(tf.make_tensor_proto([value], dtype=tf.string))
    return request


if __name__ == "__main__":
    main()
