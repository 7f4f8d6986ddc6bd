"""Toy SavedModels in TF Serving's layout, and servers to serve them."""

import os
import shutil
import subprocess
import time

import tensorflow as tf

from components.atomic_pusher import push_atomically


# Each toy signature's outputs and their shapes (None: the request's batch size).
TOY_OUTPUTS = {
    "serving_default": {"click": (None, 1), "rating": (None, 1)},
    "features": {"total": (None,), "user_bytes": (None,)},
    "slow": {"value": (None, 1)},
}
_MAX_SLOW_ITERATIONS = 10**7


class _Toy(tf.Module):
    """serving_default(examples) -> click = version/1000 per row, rating = row count;
    features(user_id, weights, count) -> total = sum(weights) + count, user_bytes;
    slow(iterations) -> value after max(iterations) small matmuls (to load the server)."""

    def __init__(self, version: int):
        super().__init__()
        self.version = tf.constant(float(version))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        parsed = tf.io.parse_example(
            examples, {"user_id": tf.io.FixedLenFeature([1], tf.string, default_value=[""])}
        )
        n = tf.shape(parsed["user_id"])[0]
        return {
            "click": tf.fill([n, 1], self.version / 1000.0),
            "rating": tf.fill([n, 1], tf.cast(n, tf.float32)),
        }

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="user_id"),
            tf.TensorSpec([None, 3], tf.float32, name="weights"),
            tf.TensorSpec([None], tf.int64, name="count"),
        ]
    )
    def features(self, user_id, weights, count):
        return {
            "total": tf.reduce_sum(weights, axis=1) + tf.cast(count, tf.float32),
            "user_bytes": tf.strings.length(user_id),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="iterations")])
    def slow(self, iterations):
        most = tf.reduce_max(
            tf.concat([tf.where(tf.math.is_finite(iterations), iterations, 0.0), [0.0]], 0)
        )
        steps = tf.cast(tf.clip_by_value(most, 0.0, float(_MAX_SLOW_ITERATIONS)), tf.int32)
        m = tf.eye(64) * 0.5
        _, acc = tf.while_loop(
            lambda i, a: i < steps,
            lambda i, a: (i + 1, tf.tanh(tf.matmul(a, m))),
            [0, tf.ones([64, 64])],
        )
        return {"value": tf.fill([tf.shape(iterations)[0], 1], tf.reduce_sum(acc))}


def save_toy(path: str, version: int) -> str:
    module = _Toy(version)
    tf.saved_model.save(
        module,
        path,
        signatures={
            "serving_default": module.serve,
            "features": module.features,
            "slow": module.slow,
        },
    )
    return path


def toy_model_dir(tmp_path, model_name: str = "toy"):
    """``<tmp>/serving/<model_name>`` holding toy version 1, as the Pusher lays it out."""
    base = tmp_path / "serving" / model_name
    push_toy(str(base), 1, str(tmp_path / "scratch"))
    return base


def push_toy(base: str, version: int, scratch: str) -> str:
    staging = save_toy(os.path.join(scratch, f"toy-{version}"), version)
    return push_atomically(staging, base, str(version))


def start_tf_serving(binary: str, model_name: str, base: str, port: int):
    """Starts the real tensorflow_model_server; returns the process."""
    proc = subprocess.Popen(
        [
            binary,
            f"--port={port}",
            f"--model_name={model_name}",
            f"--model_base_path={os.path.abspath(base)}",
            "--file_system_poll_wait_seconds=1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(2)
    return proc


def which_tf_serving():
    return shutil.which("tensorflow_model_server")
