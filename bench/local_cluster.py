"""A training cluster on this machine: one process per TF_CONFIG task on
127.0.0.1, each running the Trainer's ``run_fn`` (what the cluster tests
and ``bench/distributed.py`` start).

Every process has its own log file (a pipe that fills up deadlocks a
worker), its own process group and a hard deadline: TensorFlow waiting for
a lost peer ignores SIGTERM, so what outlives its deadline gets SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

Task = Tuple[str, int]  # (type, index) in TF_CONFIG

WORKER_SCRIPT = textwrap.dedent(
    """
    import json, logging, os, signal, sys, time
    from trainer import keras_env  # noqa: F401
    import tensorflow as tf
    from tfx.components.trainer.fn_args_utils import DataAccessor, FnArgs
    from tfx.components.util import tfxio_utils
    from tfx.types import standard_artifacts
    from trainer import task

    logging.basicConfig(level=logging.INFO)
    logging.getLogger().setLevel(logging.INFO)
    args = json.loads(sys.argv[1])
    examples = standard_artifacts.Examples()
    examples.uri, examples.split_names = args.pop("examples_uri"), '["train", "eval"]'
    factory = tfxio_utils.get_tf_dataset_factory_from_artifact([examples], [])
    def wait_for(path, seconds):
        deadline = time.time() + seconds
        while not os.path.exists(path):
            if time.time() > deadline:
                return False
            time.sleep(0.2)
        return True

    epoch_hooks = []
    if args.pop("die_after_first_epoch"):
        chief_backup = os.path.join(args["model_run_dir"], "backup", "chief", "checkpoint")

        def die(epoch, logs):  # after the chief's backup of epoch 1: the worker is lost
            wait_for(chief_backup, 120)
            print("worker killed after epoch", epoch + 1, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        epoch_hooks.append(die)
    pause = args.pop("pause_after_first_epoch")
    if pause:  # a bounded pause after epoch 1, for a peer to be killed meanwhile

        def hold(epoch, logs):
            if epoch == 0:
                open(os.path.join(pause, "paused"), "w").close()
                if not wait_for(os.path.join(pause, "resume"), 300):
                    raise TimeoutError("nobody resumed the paused task")
                print("resumed after epoch", epoch + 1, flush=True)

        epoch_hooks.append(hold)
    callbacks = task.training_callbacks
    task.training_callbacks = lambda *a: [
        *callbacks(*a),
        *(tf.keras.callbacks.LambdaCallback(on_epoch_end=hook) for hook in epoch_hooks),
    ]
    task.run_fn(FnArgs(**args, data_accessor=DataAccessor(factory, None, None)))
    """
)


def free_ports(n: int) -> List[int]:
    """``n`` distinct ports free on 127.0.0.1 now."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def loopback_cluster(workers: int = 0, chief: bool = False, ps: int = 0) -> Dict[str, List[str]]:
    """A TF_CONFIG cluster of free loopback addresses."""
    counts = {"chief": int(chief), "worker": workers, "ps": ps}
    ports = iter(free_ports(sum(counts.values())))
    return {kind: [f"127.0.0.1:{next(ports)}" for _ in range(n)] for kind, n in counts.items() if n}


def run_fn_args(
    examples_dir: str,
    transform_dir: str,
    out_dir: Path,
    train_steps: int,
    model_config: Dict,
    eval_steps: int = 1,
) -> Dict:
    """``run_fn``'s arguments (JSON) over a Transform output, writing TFX's
    directories under ``out_dir``."""
    return {
        "train_files": [os.path.join(examples_dir, "Split-train", "*")],
        "eval_files": [os.path.join(examples_dir, "Split-eval", "*")],
        "transform_output": transform_dir,
        "serving_model_dir": str(out_dir / "serving_model"),
        "model_run_dir": str(out_dir / "model_run"),
        "train_steps": train_steps,
        "eval_steps": eval_steps,
        "custom_config": {"model_config": model_config},
        "examples_uri": examples_dir,
    }


def start(
    args: Dict,
    cluster: Optional[Dict[str, List[str]]],
    tasks: Sequence[Task],
    log_dir: Path,
    attempt: str,
    doomed: Optional[Task] = None,
    paused: Optional[Tuple[Task, Path]] = None,
) -> Tuple[List[subprocess.Popen], List[Path]]:
    """One process per task of ``cluster`` (None: one process, no
    TF_CONFIG), logging to ``log_dir/<type><index>-<attempt>.log``; task
    ``doomed`` kills itself with SIGKILL after the first epoch's backup;
    ``paused`` (a task, a folder) pauses that task's training after epoch 1,
    writing ``paused`` there, until a file ``resume`` appears (at most 300 s)."""
    procs, logs = [], []
    for task_type, index in tasks:
        scratch = log_dir / f"tmp-{attempt}-{task_type}{index}"  # a non-chief's own copy
        scratch.mkdir(parents=True)
        env = {**os.environ, "TMPDIR": str(scratch)}
        env.pop("TF_CONFIG", None)
        if cluster is not None:
            task = {"type": task_type, "index": index}
            env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": task})
        pause = str(paused[1]) if paused and paused[0] == (task_type, index) else None
        argv = json.dumps(
            {
                **args,
                "die_after_first_epoch": (task_type, index) == doomed,
                "pause_after_first_epoch": pause,
            }
        )
        logs.append(log_dir / f"{task_type}{index}-{attempt}.log")
        with open(logs[-1], "w") as log:  # the process has its own copy
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", WORKER_SCRIPT, argv],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    return procs, logs


def wait_or_kill(procs: Sequence[subprocess.Popen], seconds: float) -> None:
    """Waits up to ``seconds`` for every process, then SIGKILLs what is left
    by process group."""
    deadline = time.time() + seconds
    for proc in procs:
        try:
            proc.wait(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
