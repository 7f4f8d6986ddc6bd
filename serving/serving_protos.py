"""TF Serving's config files, read in its own text format.

``ModelServerConfig`` (``--model_config_file``) ships in the
``tensorflow-serving-api`` package; ``BatchingParameters``
(``--batching_parameters_file``) and ``MonitoringConfig``
(``--monitoring_config_file``) do not, so they are declared here with TF
Serving's field names and numbers (``session_bundle_config.proto``,
``monitoring_config.proto``) in a private descriptor pool: a file written for
``tensorflow_model_server`` reads the same here, and a misspelt field is an
error naming the file and the line.
"""

from __future__ import annotations

from typing import Type, TypeVar

import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory, text_format
from google.protobuf import wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2

M = TypeVar("M", bound=message.Message)
ModelServerConfig = model_server_config_pb2.ModelServerConfig


class ConfigFileError(ValueError):
    """A config file that is missing or not valid text format for its message."""


def _declare() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(
        name="recsys/tf_serving_configs.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    F = descriptor_pb2.FieldDescriptorProto
    batching = f.message_type.add(name="BatchingParameters")
    for number, name, kind in (
        (1, "max_batch_size", ".google.protobuf.Int64Value"),
        (2, "batch_timeout_micros", ".google.protobuf.Int64Value"),
        (3, "max_enqueued_batches", ".google.protobuf.Int64Value"),
        (4, "num_batch_threads", ".google.protobuf.Int64Value"),
        (5, "thread_pool_name", ".google.protobuf.StringValue"),
        (7, "pad_variable_length_inputs", None),
        (8, "enable_large_batch_splitting", ".google.protobuf.BoolValue"),
        (9, "max_execution_batch_size", ".google.protobuf.Int64Value"),
    ):
        field = batching.field.add(name=name, number=number, label=F.LABEL_OPTIONAL)
        if kind is None:
            field.type = F.TYPE_BOOL
        else:
            field.type, field.type_name = F.TYPE_MESSAGE, kind
    batching.field.add(
        name="allowed_batch_sizes", number=6, label=F.LABEL_REPEATED, type=F.TYPE_INT64
    )
    prometheus = f.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, label=F.LABEL_OPTIONAL, type=F.TYPE_BOOL)
    prometheus.field.add(name="path", number=2, label=F.LABEL_OPTIONAL, type=F.TYPE_STRING)
    monitoring = f.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        label=F.LABEL_OPTIONAL,
        type=F.TYPE_MESSAGE,
        type_name=".tensorflow.serving.PrometheusConfig",
    )
    return f


def _classes():
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb))
    pool.Add(_declare())
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
        for name in ("BatchingParameters", "MonitoringConfig")
    )


BatchingParameters, MonitoringConfig = _classes()


def read_text_proto(path: str, message_class: Type[M]) -> M:
    """Parses ``path`` as a text-format ``message_class``; ``ConfigFileError`` names the file."""
    what = message_class.DESCRIPTOR.name
    try:
        with tf.io.gfile.GFile(path) as f:
            text = f.read()
    except (tf.errors.OpError, OSError, UnicodeDecodeError) as e:
        raise ConfigFileError(f"cannot read the {what} file {path!r}: {e}") from e
    try:
        return text_format.Parse(text, message_class())
    except text_format.ParseError as e:
        raise ConfigFileError(f"{path!r} is not a valid {what} text proto: {e}") from e
