"""AtomicPusher: TFX's Pusher, but a version appears in the serving directory
all at once or not at all.

The stock filesystem Pusher copies files straight into ``<base>/<version>``,
so a model server polling the directory can see a half-copied version, and a
failed copy leaves one behind. Here the model is copied to a hidden
``<base>/.incoming-<version>`` directory (model servers skip names that are
not integers), checked, then renamed into place in one step. On any failure
the hidden copy is removed and the component fails with the reason.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time

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


def push_atomically(model_path: str, base_directory: str, version: str) -> str:
    """Copies ``model_path`` to ``<base_directory>/<version>`` atomically; returns it."""
    if not os.path.exists(os.path.join(model_path, "saved_model.pb")):
        raise PushError(f"{model_path} holds no saved_model.pb")
    target = os.path.join(base_directory, version)
    if os.path.exists(target):
        raise PushError(f"version directory {target} already exists")
    staging = os.path.join(base_directory, INCOMING_PREFIX + version)
    try:
        os.makedirs(base_directory, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(model_path, staging)
        if not os.path.exists(os.path.join(staging, "saved_model.pb")):
            raise PushError(f"copy of {model_path} to {staging} is incomplete")
        os.rename(staging, target)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise PushError(f"could not push {model_path} to {target}: {e}") from e
    except PushError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def write_models_config(base_directory: str) -> str:
    """Writes ``models.config`` for ``tensorflow_model_server --model_config_file``
    beside the model directory, listing every model directory found there."""
    root = os.path.dirname(os.path.abspath(base_directory))
    names = sorted(n for n in os.listdir(root)
                   if os.path.isdir(os.path.join(root, n)) and not n.startswith("."))
    entries = "".join(
        f'  config {{\n    name: "{n}"\n    base_path: "{os.path.join(root, n)}"\n'
        f'    model_platform: "tensorflow"\n  }}\n' for n in names)
    path = os.path.join(root, "models.config")
    with open(path + ".tmp", "w") as f:
        f.write(f"model_config_list {{\n{entries}}}\n")
    os.replace(path + ".tmp", path)
    return path


def already_pushed(base_directory: str, model_path: str):
    """The version a model was pushed as before, if that version is still there."""
    try:
        with open(os.path.join(base_directory, PUSH_LOG)) as f:
            version = json.load(f).get(os.path.abspath(model_path))
    except (OSError, ValueError):
        return None
    if version and os.path.exists(os.path.join(base_directory, version, "saved_model.pb")):
        return version
    return None


def record_push(base_directory: str, model_path: str, version: str) -> None:
    path = os.path.join(base_directory, PUSH_LOG)
    try:
        with open(path) as f:
            pushed = json.load(f)
    except (OSError, ValueError):
        pushed = {}
    pushed[os.path.abspath(model_path)] = version
    with open(path + ".tmp", "w") as f:
        json.dump(pushed, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def next_version(base_directory: str) -> str:
    """A Unix-time version, bumped past any existing one so versions only grow."""
    version = int(time.time())
    if os.path.isdir(base_directory):
        existing = [int(n) for n in os.listdir(base_directory) if n.isdigit()]
        if existing:
            version = max(version, max(existing) + 1)
    return str(version)


class Executor(pusher_executor.Executor):
    """Filesystem push via ``push_atomically``."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            logging.info("The model is not blessed: nothing is pushed.")
            return
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY],
                                  destination)
        if destination.WhichOneof("destination") != "filesystem":
            raise NotImplementedError("AtomicPusher pushes to a filesystem destination only")
        base = destination.filesystem.base_directory
        model_path = self.GetModelPath(input_dict)
        version = already_pushed(base, model_path)
        if version:  # e.g. re-blessed against a new baseline: do not copy it again
            serving_path = os.path.join(base, version)
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
