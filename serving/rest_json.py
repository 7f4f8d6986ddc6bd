"""TF Serving's REST JSON, to and from its request and response protos.

Predict bodies as TF Serving takes them: ``{"signature_name": ..., "instances":
[...]}`` (row format: one value per row, or one object per row naming each
input) or ``{"inputs": ...}`` (columnar: a value, or an object of inputs);
``{"b64": "..."}`` for binary strings. The response is ``{"predictions":
[...]}`` for rows and ``{"outputs": ...}`` for columns; string outputs come
as text, or as ``{"b64": ...}`` when their name ends in ``_bytes`` or they
are not UTF-8. Values are checked against the signature's dtypes here; the
tensors they make then pass the same ``request_checks`` as a gRPC request.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)
from google.protobuf import json_format

from serving.tensors import to_ndarray
from serving.request_checks import MAX_RANK, InputSpec, RequestLimits, invalid, quote, quote_names

ROWS, COLUMNS = "instances", "inputs"


def _leaf(name: str, value: Any, dtype: tf.DType) -> Any:
    """One JSON element as a value of ``dtype``."""
    if dtype == tf.string:
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, ValueError) as e:
                raise invalid(f"input {quote(name)}: invalid base64 ({e})") from e
        raise invalid(f'input {quote(name)} takes strings (or {{"b64": ...}}), got {_kind(value)}')
    if dtype == tf.bool:
        if isinstance(value, bool):
            return value
        raise invalid(f"input {quote(name)} takes true/false, got {_kind(value)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(f"input {quote(name)} takes {dtype.name} numbers, got {_kind(value)}")
    if dtype.is_integer:
        if not isinstance(value, int):
            raise invalid(f"input {quote(name)} takes integers, got {value!r}")
        if not dtype.min <= value <= dtype.max:
            raise invalid(f"input {quote(name)}: {value} is out of range for {dtype.name}")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _flatten(
    name: str, value: Any, dtype: tf.DType, limits: RequestLimits, out: List[Any]
) -> Tuple[int, ...]:
    """Appends ``value``'s elements to ``out``; returns its shape (rectangular only)."""
    ragged = invalid(f"input {quote(name)} is ragged: every list at one depth must match")
    stack: List[Tuple[Any, int]] = [(value, 0)]
    shape: List[int] = []
    leaf_depth: Optional[int] = None  # set by the first value: the shape is then complete
    while stack:
        node, depth = stack.pop()
        if isinstance(node, list):
            if depth >= MAX_RANK:
                raise invalid(f"input {quote(name)} nests deeper than rank {MAX_RANK}")
            if depth == len(shape) and leaf_depth is None:
                shape.append(len(node))
            elif depth >= len(shape) or shape[depth] != len(node):
                raise ragged
            stack.extend((child, depth + 1) for child in reversed(node))
            continue
        if leaf_depth is None and depth == len(shape):
            leaf_depth = depth
        if depth != leaf_depth:
            raise ragged
        out.append(_leaf(name, node, dtype))
        if len(out) > limits.max_elements:
            raise invalid(
                f"input {quote(name)} has more than {limits.max_elements} elements, "
                "the limit per request"
            )
    if len(out) != math.prod(shape):
        raise ragged
    return tuple(shape)


def _tensor(
    name: str, value: Any, spec: InputSpec, limits: RequestLimits
) -> tensor_pb2.TensorProto:
    flat: List[Any] = []
    shape = _flatten(name, value, spec.dtype, limits, flat)
    proto = tensor_pb2.TensorProto(dtype=spec.dtype.as_datatype_enum)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    if spec.dtype == tf.string:
        proto.string_val.extend(flat)
    elif flat:
        array = np.asarray(flat, dtype=spec.dtype.as_numpy_dtype)
        proto.tensor_content = array.tobytes()
    return proto


def predict_request(
    body: Any, spec_inputs: Mapping[str, InputSpec], limits: RequestLimits
) -> Tuple[Dict[str, tensor_pb2.TensorProto], str]:
    """A Predict body's tensors, one per input, and its format (rows or columns)."""
    if not isinstance(body, dict):
        raise invalid(f"the request body must be a JSON object, got {_kind(body)}")
    formats = [f for f in (ROWS, COLUMNS) if f in body]
    if len(formats) != 1:
        raise invalid('the body needs exactly one of "instances" (rows) or "inputs" (columns)')
    unknown = sorted(set(body) - {ROWS, COLUMNS, "signature_name"})
    if unknown:
        raise invalid(f"unknown request fields {quote_names(unknown)}")
    fmt, data, names = formats[0], body[formats[0]], sorted(spec_inputs)
    columns: Dict[str, Any]
    if fmt == ROWS:
        if not isinstance(data, list):
            raise invalid(f'"instances" must be a list of rows, got {_kind(data)}')
        named = bool(data) and all(isinstance(r, dict) and "b64" not in r for r in data)
        if named:
            for i, row in enumerate(data):
                if set(row) != set(names):
                    raise invalid(
                        f"instance {i} has inputs {quote_names(sorted(row))}; the signature "
                        f"takes {quote_names(names)}"
                    )
            columns = {n: [row[n] for row in data] for n in names}
        elif len(names) == 1:
            columns = {names[0]: data}
        else:
            raise invalid(
                f"the signature takes {len(names)} inputs {quote_names(names)}: each instance "
                "must be an object naming them"
            )
    else:
        if isinstance(data, dict) and "b64" not in data:
            columns = data
        elif len(names) == 1:
            columns = {names[0]: data}
        else:
            raise invalid(f'"inputs" must be an object naming the inputs {quote_names(names)}')
    missing, extra = sorted(set(names) - set(columns)), sorted(set(columns) - set(names))
    if missing or extra:
        raise invalid(
            f"inputs do not match the signature: missing {quote_names(missing)}, unexpected "
            f"{quote_names(extra)}; expected {quote_names(names)}"
        )
    return {n: _tensor(n, columns[n], spec_inputs[n], limits) for n in names}, fmt


def _jsonable(name: str, array: np.ndarray) -> Any:
    if array.dtype.kind in ("S", "O"):
        as_b64 = name.endswith("_bytes")

        def text(v: bytes) -> Any:
            if not as_b64:
                try:
                    return v.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            return {"b64": base64.b64encode(v).decode("ascii")}

        return np.vectorize(text, otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def predict_response(response: predict_pb2.PredictResponse, fmt: str) -> Dict[str, Any]:
    outputs = {k: to_ndarray(v) for k, v in sorted(response.outputs.items())}
    if fmt == COLUMNS:
        if len(outputs) == 1:
            ((name, value),) = outputs.items()
            return {"outputs": _jsonable(name, value)}
        return {"outputs": {k: _jsonable(k, v) for k, v in outputs.items()}}
    lists = {k: _jsonable(k, v) for k, v in outputs.items()}
    if len(lists) == 1:
        return {"predictions": next(iter(lists.values()))}
    rows = len(next(iter(lists.values()))) if lists else 0
    return {"predictions": [{k: v[i] for k, v in lists.items()} for i in range(rows)]}


def status_response(response: get_model_status_pb2.GetModelStatusResponse) -> Dict[str, Any]:
    names = get_model_status_pb2.ModelVersionStatus.State.Name
    return {
        "model_version_status": [
            {
                "version": str(s.version),
                "state": names(s.state),
                "status": {
                    "error_code": "OK" if not s.status.error_code else "INTERNAL",
                    "error_message": s.status.error_message,
                },
            }
            for s in response.model_version_status
        ]
    }


def metadata_response(
    response: get_model_metadata_pb2.GetModelMetadataResponse,
) -> Dict[str, Any]:
    return json_format.MessageToDict(response, preserving_proto_field_name=True)
