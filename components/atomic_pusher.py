"""AtomicPusher: TFX's Pusher, but a version appears in the serving directory
all at once or not at all.

The stock filesystem Pusher copies files straight into ``<base>/<version>``,
so a model server polling the directory can see a half-copied version, and a
failed copy leaves one behind. Here the model is copied to a hidden
``<base>/.incoming-<version>`` directory (model servers skip names that are
not integers), checked, then renamed into place in one step. On any failure
the hidden copy is removed and the component fails with the reason.

Object stores (``gs://``, ``s3://``, ``hdfs://``: any URL TensorFlow's file
systems read) have no atomic directory rename, so there the files are copied
straight into ``<base>/<version>`` with ``saved_model.pb`` last: a server that
looks early finds no SavedModel and retries the load (TF Serving's
``max_num_load_retries``), and a failed copy removes the version again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

import tensorflow as tf

from tfx.components.pusher import component as pusher_component
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

INCOMING_PREFIX = ".incoming-"
PUSH_LOG = ".pushed_models.json"  # model artifact URI -> version, per base directory


class PushError(RuntimeError):
    """The model could not be placed in the serving directory."""


SAVED_MODEL_FILE = "saved_model.pb"


def is_remote(path: str) -> bool:
    """A URL (``gs://...``) rather than a local path."""
    return "://" in path


def _join(*parts: str) -> str:
    return (
        "/".join([parts[0].rstrip("/"), *parts[1:]])
        if is_remote(parts[0])
        else os.path.join(*parts)
    )


def push_atomically(model_path: str, base_directory: str, version: str) -> str:
    """Copies ``model_path`` to ``<base_directory>/<version>``; returns it.
    Atomic on local file systems; saved_model.pb last on object stores."""
    if not tf.io.gfile.exists(_join(model_path, SAVED_MODEL_FILE)):
        raise PushError(f"{model_path} holds no {SAVED_MODEL_FILE}")
    target = _join(base_directory, version)
    if tf.io.gfile.exists(target):
        raise PushError(f"version directory {target} already exists")
    if is_remote(base_directory):
        return _push_to_object_store(model_path, target)
    staging = os.path.join(base_directory, INCOMING_PREFIX + version)
    try:
        os.makedirs(base_directory, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(model_path, staging)
        if not os.path.exists(os.path.join(staging, SAVED_MODEL_FILE)):
            raise PushError(f"copy of {model_path} to {staging} is incomplete")
        os.rename(staging, target)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise PushError(f"could not push {model_path} to {target}: {e}") from e
    except PushError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _push_to_object_store(model_path: str, target: str) -> str:
    prefix = model_path.rstrip("/") + "/"
    sources = [
        _join(root, name) for root, _, names in tf.io.gfile.walk(model_path) for name in names
    ]
    # The SavedModel's graph goes last: until it is there, there is no model to load.
    sources.sort(key=lambda source: source == prefix + SAVED_MODEL_FILE)
    try:
        for source in sources:
            destination = f"{target}/{source[len(prefix) :].replace(os.sep, '/')}"
            tf.io.gfile.makedirs(destination.rsplit("/", 1)[0])
            tf.io.gfile.copy(source, destination, overwrite=True)
    except (OSError, tf.errors.OpError) as e:
        if tf.io.gfile.exists(target):
            tf.io.gfile.rmtree(target)
        raise PushError(f"could not push {model_path} to {target}: {e}") from e
    return target


def _write_text(path: str, text: str) -> None:
    """Writes a small file whole: via a renamed temporary locally, in one object remotely."""
    if is_remote(path):
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(text)
        return
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def write_models_config(base_directory: str) -> str:
    """Writes ``models.config`` for ``tensorflow_model_server --model_config_file``
    beside the model directory, listing every model directory found there."""
    root = (
        base_directory.rstrip("/").rsplit("/", 1)[0]
        if is_remote(base_directory)
        else os.path.dirname(os.path.abspath(base_directory))
    )
    names = sorted(
        n.rstrip("/")
        for n in tf.io.gfile.listdir(root)
        if tf.io.gfile.isdir(_join(root, n.rstrip("/"))) and not n.startswith(".")
    )
    entries = "".join(
        f'  config {{\n    name: "{n}"\n    base_path: "{_join(root, n)}"\n'
        f'    model_platform: "tensorflow"\n  }}\n'
        for n in names
    )
    path = _join(root, "models.config")
    _write_text(path, f"model_config_list {{\n{entries}}}\n")
    return path


def _model_key(model_path: str) -> str:
    return model_path if is_remote(model_path) else os.path.abspath(model_path)


def _read_push_log(base_directory: str) -> dict:
    try:
        with tf.io.gfile.GFile(_join(base_directory, PUSH_LOG)) as f:
            return json.load(f)
    except (OSError, ValueError, tf.errors.OpError):
        return {}


def already_pushed(base_directory: str, model_path: str):
    """The version a model was pushed as before, if that version is still there."""
    version = _read_push_log(base_directory).get(_model_key(model_path))
    if version and tf.io.gfile.exists(_join(base_directory, version, SAVED_MODEL_FILE)):
        return version
    return None


def record_push(base_directory: str, model_path: str, version: str) -> None:
    pushed = _read_push_log(base_directory)
    pushed[_model_key(model_path)] = version
    _write_text(_join(base_directory, PUSH_LOG), json.dumps(pushed, indent=1, sort_keys=True))


def next_version(base_directory: str) -> str:
    """A Unix-time version, bumped past any existing one so versions only grow."""
    version = int(time.time())
    if tf.io.gfile.isdir(base_directory):
        existing = [
            int(n.rstrip("/"))
            for n in tf.io.gfile.listdir(base_directory)
            if n.rstrip("/").isdigit()
        ]
        if existing:
            version = max(version, max(existing) + 1)
    return str(version)


class Executor(pusher_executor.Executor):
    """Filesystem push via ``push_atomically``."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY]
        )
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            logging.warning("The model is not blessed: nothing is pushed.")
            return
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination
        )
        if destination.WhichOneof("destination") != "filesystem":
            raise NotImplementedError("AtomicPusher pushes to a filesystem destination only")
        base = destination.filesystem.base_directory
        model_path = self.GetModelPath(input_dict)
        version = already_pushed(base, model_path)
        if version:  # e.g. re-blessed against a new baseline: do not copy it again
            serving_path = _join(base, version)
            logging.info("Model %s is already served as version %s", model_path, version)
        else:
            version = next_version(base)
            serving_path = push_atomically(model_path, base, version)
            record_push(base, model_path, version)
            logging.info("Model version %s pushed to %s", version, serving_path)
        write_models_config(base)
        io_utils.copy_dir(model_path, model_push.uri)
        self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=version)


class AtomicPusher(pusher_component.Pusher):
    """Pusher whose filesystem pushes are atomic (see module docstring)."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)
