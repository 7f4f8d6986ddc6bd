"""Checks a Predict request's tensors before anything is materialised.

A ``TensorProto`` can declare far more than it carries: a shape of a billion
strings in twenty bytes, a negative dimension, ``tensor_content`` of the
wrong length, or values of another dtype's field. TF's compact form (fewer
values than elements: "repeat the last one") is legal, so the declared size
is bounded here, from the proto's header alone, before any array exists:
every dimension non-negative and compatible with the signature, the batch
within ``max_batch_size``, the request's elements and materialised bytes
within limits derived from the message size, every string within
``max_string_bytes``. Anything else is ``INVALID_ARGUMENT`` naming the input
and the problem, as TF Serving answers.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Mapping, Optional, Sequence, Tuple

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.tensors import to_ndarray

DEFAULT_MAX_BATCH_SIZE = 1024
DEFAULT_MAX_MESSAGE_BYTES = 16 * 2**20
DEFAULT_MAX_STRING_BYTES = 2**20
MAX_RANK = 8
_QUOTE_CHARS = 80
_LIST_NAMES = 8


class RequestError(Exception):
    """A request the server answers with ``code`` (a gRPC status) and ``message``."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def quote(value: object, limit: int = _QUOTE_CHARS) -> str:
    """``repr`` of client-sent text, cut so an error message stays small."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...' ({len(str(value))} chars)"


def quote_names(names: Sequence[str]) -> str:
    shown = ", ".join(quote(n, 40) for n in list(names)[:_LIST_NAMES])
    more = len(names) - _LIST_NAMES
    return f"[{shown}{f', ... {more} more' if more > 0 else ''}]"


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """What one request may make the server materialise.

    ``max_elements`` and ``max_tensor_bytes`` count every input of the
    request together; ``from_message_size`` derives them from the largest
    message the server accepts, so the compact form cannot expand a request
    past what a full-size message could carry.
    """

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_elements: int = DEFAULT_MAX_MESSAGE_BYTES // 16
    max_tensor_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_string_bytes: int = DEFAULT_MAX_STRING_BYTES

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if getattr(self, field.name) < 1:
                raise ValueError(f"{field.name} must be >= 1, got {getattr(self, field.name)}")

    @classmethod
    def from_message_size(
        cls,
        max_message_bytes: int,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_string_bytes: Optional[int] = None,
    ) -> "RequestLimits":
        return cls(
            max_batch_size=max_batch_size,
            max_elements=max(max_batch_size, max_message_bytes // 16),
            max_tensor_bytes=max_message_bytes,
            max_string_bytes=min(max_string_bytes or DEFAULT_MAX_STRING_BYTES, max_message_bytes),
        )


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """A signature input: dtype and shape (``None`` for any size; ``None`` rank for any rank)."""

    dtype: tf.DType
    shape: Optional[Tuple[Optional[int], ...]]

    @classmethod
    def from_tensor_info(cls, info) -> "InputSpec":
        """From a SignatureDef's ``TensorInfo`` (a dense tensor's)."""
        shape = tf.TensorShape(info.tensor_shape)
        return cls(
            tf.dtypes.as_dtype(info.dtype), None if shape.rank is None else tuple(shape.as_list())
        )


# dtype -> (the TensorProto field carrying its values, values per element).
_VALUE_FIELDS: Dict[int, Tuple[str, int]] = {
    types_pb2.DT_FLOAT: ("float_val", 1),
    types_pb2.DT_DOUBLE: ("double_val", 1),
    types_pb2.DT_INT32: ("int_val", 1),
    types_pb2.DT_INT16: ("int_val", 1),
    types_pb2.DT_INT8: ("int_val", 1),
    types_pb2.DT_UINT8: ("int_val", 1),
    types_pb2.DT_UINT16: ("int_val", 1),
    types_pb2.DT_INT64: ("int64_val", 1),
    types_pb2.DT_UINT32: ("uint32_val", 1),
    types_pb2.DT_UINT64: ("uint64_val", 1),
    types_pb2.DT_BOOL: ("bool_val", 1),
    types_pb2.DT_HALF: ("half_val", 1),
    types_pb2.DT_BFLOAT16: ("half_val", 1),
    types_pb2.DT_COMPLEX64: ("scomplex_val", 2),
    types_pb2.DT_COMPLEX128: ("dcomplex_val", 2),
    types_pb2.DT_STRING: ("string_val", 1),
}
_ALL_VALUE_FIELDS = frozenset(
    f.name for f in tensor_pb2.TensorProto.DESCRIPTOR.fields if f.name.endswith("_val")
)
_STRING_OVERHEAD_BYTES = 32  # what one string element costs beyond its bytes, once materialised


def dtype_name(enum_value: int) -> str:
    try:
        return tf.dtypes.as_dtype(enum_value).name
    except TypeError:
        return f"unknown dtype {enum_value}"


class _Budget:
    """Elements and bytes left to one request."""

    def __init__(self, limits: RequestLimits):
        self.limits, self.elements, self.bytes = limits, 0, 0

    def take(self, name: str, elements: int, nbytes: int) -> None:
        self.elements += elements
        self.bytes += nbytes
        if self.elements > self.limits.max_elements:
            raise invalid(
                f"input {quote(name)}: the request declares {self.elements} elements, more than "
                f"the limit of {self.limits.max_elements} per request"
            )
        if self.bytes > self.limits.max_tensor_bytes:
            raise invalid(
                f"input {quote(name)}: the request's tensors would take {self.bytes} bytes, more "
                f"than the limit of {self.limits.max_tensor_bytes} per request"
            )


def _declared_shape(name: str, proto: tensor_pb2.TensorProto, spec: InputSpec) -> Tuple[int, ...]:
    if proto.tensor_shape.unknown_rank:
        raise invalid(
            f"input {quote(name)} has an unknown rank; a request tensor needs a full shape"
        )
    dims = tuple(d.size for d in proto.tensor_shape.dim)
    if len(dims) > MAX_RANK:
        raise invalid(f"input {quote(name)} has rank {len(dims)}, more than {MAX_RANK}")
    for axis, size in enumerate(dims):
        if size < 0:
            raise invalid(
                f"input {quote(name)} has dimension {axis} of size {size}; sizes must be >= 0"
            )
    if spec.shape is not None:
        compatible = len(dims) == len(spec.shape) and all(
            want is None or want == got for want, got in zip(spec.shape, dims)
        )
        if not compatible:
            expected = ", ".join("None" if d is None else str(d) for d in spec.shape)
            raise invalid(
                f"input {quote(name)} has shape {list(dims)}, expected shape [{expected}]"
            )
    return dims


def _carried_values(name: str, proto: tensor_pb2.TensorProto, dtype_enum: int) -> Tuple[str, int]:
    field, per_element = _VALUE_FIELDS[dtype_enum]
    others = sorted(
        f.name for f, _ in proto.ListFields() if f.name in _ALL_VALUE_FIELDS and f.name != field
    )
    if others:
        raise invalid(
            f"input {quote(name)} is {dtype_name(dtype_enum)} but carries {', '.join(others)}"
        )
    count = len(getattr(proto, field))
    if count % per_element:
        raise invalid(
            f"input {quote(name)}: {field} holds {count} numbers, not a whole number of "
            f"{dtype_name(dtype_enum)} values"
        )
    return field, count // per_element


def check_tensor(
    name: str,
    proto: tensor_pb2.TensorProto,
    spec: InputSpec,
    limits: RequestLimits,
    budget: Optional[_Budget] = None,
) -> int:
    """Validates one input against its signature spec without materialising it.

    Returns its batch size (the first dimension); raises ``RequestError``.
    """
    budget = budget or _Budget(limits)
    dtype_enum = int(proto.dtype)
    if dtype_enum != spec.dtype.as_datatype_enum:
        got = "no dtype" if dtype_enum == types_pb2.DT_INVALID else dtype_name(dtype_enum)
        raise invalid(f"input {quote(name)} must be {spec.dtype.name}, got {got}")
    if dtype_enum not in _VALUE_FIELDS:
        raise invalid(f"input {quote(name)}: dtype {spec.dtype.name} cannot be sent in a request")
    dims = _declared_shape(name, proto, spec)
    rows = dims[0] if dims else 1
    if rows > limits.max_batch_size:
        raise invalid(
            f"input {quote(name)}: batch size {rows} exceeds the maximum of {limits.max_batch_size}"
        )
    elements = math.prod(dims)
    field, carried = _carried_values(name, proto, dtype_enum)
    if dtype_enum == types_pb2.DT_STRING:
        if proto.tensor_content:
            raise invalid(
                f"input {quote(name)}: string tensors carry string_val, not tensor_content"
            )
        if carried > elements:
            raise invalid(f"input {quote(name)} carries {carried} values for {elements} elements")
        values = proto.string_val
        longest = max((len(v) for v in values), default=0)
        if longest > limits.max_string_bytes:
            raise invalid(
                f"input {quote(name)} has a string of {longest} bytes, more than the limit of "
                f"{limits.max_string_bytes}"
            )
        repeated = (elements - carried) * (len(values[-1]) if values else 0)
        nbytes = sum(len(v) for v in values) + repeated + elements * _STRING_OVERHEAD_BYTES
        budget.take(name, elements, nbytes)
        return rows
    itemsize = spec.dtype.size
    budget.take(name, elements, elements * itemsize)
    if proto.tensor_content:
        if len(proto.tensor_content) != elements * itemsize:
            raise invalid(
                f"input {quote(name)}: tensor_content has {len(proto.tensor_content)} bytes; shape "
                f"{list(dims)} of {spec.dtype.name} needs {elements * itemsize}"
            )
    elif carried > elements:
        raise invalid(f"input {quote(name)} carries {carried} values for {elements} elements")
    return rows


def check_inputs(
    inputs: Mapping[str, tensor_pb2.TensorProto],
    specs: Mapping[str, InputSpec],
    limits: RequestLimits,
) -> int:
    """Checks every input of a request against the signature; returns the
    bytes its tensors will take once materialised."""
    missing = sorted(set(specs) - set(inputs))
    unknown = sorted(set(inputs) - set(specs))
    if missing or unknown:
        raise invalid(
            f"inputs do not match the signature: missing {quote_names(missing)}, unexpected "
            f"{quote_names(unknown)}; expected {quote_names(sorted(specs))}"
        )
    budget, batch = _Budget(limits), None
    for name in sorted(specs):
        rows = check_tensor(name, inputs[name], specs[name], limits, budget)
        if batch is not None and rows != batch:
            raise invalid(
                f"inputs have different batch sizes ({batch}, {rows}); input {quote(name)}"
            )
        batch = rows
    return budget.bytes


def to_arrays(inputs: Mapping[str, tensor_pb2.TensorProto]) -> Dict[str, np.ndarray]:
    """Materialises inputs that passed ``check_inputs`` as NumPy arrays."""
    arrays = {}
    for name, proto in inputs.items():
        try:
            arrays[name] = to_ndarray(proto)
        except Exception as e:  # checked already; anything left is still the request's fault
            raise invalid(f"input {quote(name)} is not a valid tensor: {quote(str(e), 200)}") from e
    return arrays
