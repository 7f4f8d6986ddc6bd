"""Toy SavedModels in TF Serving's layout, and servers to serve them."""
import os
import shutil
import subprocess
import time

import tensorflow as tf

from components.atomic_pusher import push_atomically


class _Toy(tf.Module):
    """serving_default(examples) -> click = version/1000 per row, rating = row count."""

    def __init__(self, version: int):
        super().__init__()
        self.version = tf.constant(float(version))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        parsed = tf.io.parse_example(examples, {
            "user_id": tf.io.FixedLenFeature([1], tf.string, default_value=[""])})
        n = tf.shape(parsed["user_id"])[0]
        return {"click": tf.fill([n, 1], self.version / 1000.0),
                "rating": tf.fill([n, 1], tf.cast(n, tf.float32))}


def save_toy(path: str, version: int) -> str:
    module = _Toy(version)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def push_toy(base: str, version: int, scratch: str) -> str:
    staging = save_toy(os.path.join(scratch, f"toy-{version}"), version)
    return push_atomically(staging, base, str(version))


def start_tf_serving(binary: str, model_name: str, base: str, port: int):
    """Starts the real tensorflow_model_server; returns the process."""
    proc = subprocess.Popen([binary, f"--port={port}", f"--model_name={model_name}",
                             f"--model_base_path={os.path.abspath(base)}",
                             "--file_system_poll_wait_seconds=1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2)
    return proc


def which_tf_serving():
    return shutil.which("tensorflow_model_server")
