"""One machine vs a cluster on this machine: the Trainer's ``run_fn`` on
one process, two MultiWorkerMirroredStrategy workers, and a
ParameterServerStrategy chief + worker + parameter server, all on
127.0.0.1, with the same data, global batch, steps and epochs.

    python -m bench.distributed --pipeline-root runs/local/pipeline_root

Prints, per setup: wall seconds (start-up included), fit seconds (the sum
of Keras' epoch times on the chief), examples/s over the fit, seconds to
the validation click AUC every setup reaches, and every task's final
validation metric. ``--out`` writes them as JSON too.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional

from bench import local_cluster

SETUPS = {
    "one process": (None, [("worker", 0)]),
    "2 workers (MultiWorkerMirrored)": ({"workers": 2}, [("worker", 0), ("worker", 1)]),
    "chief + worker + ps (ParameterServer)": (
        {"workers": 1, "chief": True, "ps": 1},
        [("chief", 0), ("worker", 0), ("ps", 0)],
    ),
}
METRICS = (
    "val_loss",
    "val_click_auc",
    "val_conversion_auc",
    "val_rating_rmse",
    "val_category_accuracy",
    "val_interest_auc",
    "val_retrieval_recall_at_10",
    "val_retrieval_recall_at_100",
)
_EPOCH_TIME = re.compile(r"^\d+/\d+ - (\d+)s - ", re.M)


def epoch_seconds(chief_log: str) -> List[int]:
    """Keras' per-epoch seconds from a ``verbose=2`` log."""
    return [int(s) for s in _EPOCH_TIME.findall(chief_log)]


# The quality every setup is timed to: validation click AUC, which does not
# depend on the batch each replica sees (the loss does: the retrieval loss's
# in-batch negatives are one replica's batch, 64 of 128 with two workers).
TARGET = "val_click_auc"


def seconds_to(target: float, values: List[float], epochs: List[int]) -> Optional[float]:
    """Fit seconds until ``values`` (higher is better) first reach ``target``."""
    elapsed = 0.0
    for value, seconds in zip(values, epochs):
        elapsed += seconds
        if value >= target:
            return elapsed
    return None


def run_setup(name: str, args: Dict, work: Path, timeout: float) -> Dict:
    cluster_shape, tasks = SETUPS[name]
    cluster = local_cluster.loopback_cluster(**cluster_shape) if cluster_shape else None
    out = work / re.sub(r"\W+", "-", name).strip("-")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    setup_args = {
        **args,
        "serving_model_dir": str(out / "serving_model"),
        "model_run_dir": str(out / "model_run"),
    }
    started = time.monotonic()
    procs, logs = local_cluster.start(setup_args, cluster, tasks, out, "bench")
    local_cluster.wait_or_kill(procs, timeout)
    wall = time.monotonic() - started
    failed = [str(log) for proc, log in zip(procs, logs) if proc.returncode != 0]
    if failed:
        raise RuntimeError(f"{name}: a process failed, see {failed}")
    history = json.loads((out / "model_run" / "history.json").read_text())
    epochs = epoch_seconds(logs[0].read_text())
    fit = float(sum(epochs))
    examples = args["train_steps"] * args["custom_config"]["model_config"]["batch_size"]
    return {
        "wall_s": round(wall, 1),
        "fit_s": fit,
        "examples_per_s": round(examples / fit, 1) if fit else None,
        "epoch_s": epochs,
        "history": {k: history[k] for k in METRICS if k in history},
    }


def report(results: Dict[str, Dict]) -> str:
    """The Markdown table of ``results``."""
    target = min(max(r["history"][TARGET]) for r in results.values())
    short = TARGET[len("val_") :]
    header = ["setup", "wall s", "fit s", "examples/s", f"s to {short} {target:.4f}"] + [
        m[len("val_") :] for m in METRICS
    ]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in results.items():
        reached = seconds_to(target, r["history"][TARGET], r["epoch_s"])
        cells = [name, r["wall_s"], r["fit_s"], r["examples_per_s"], reached]
        cells += [f"{r['history'][m][-1]:.4f}" if m in r["history"] else "-" for m in METRICS]
        rows.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline-root", default="runs/local/pipeline_root")
    parser.add_argument("--work", default="runs/bench-distributed")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--setups", nargs="*", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--out", help="also write the figures to this JSON file")
    parser.add_argument("--report", help="print the table of an --out file, training nothing")
    args = parser.parse_args(argv)
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return 0
    found = [
        glob.glob(os.path.join(args.pipeline_root, "Transform", kind, "*"))
        for kind in ("transformed_examples", "transform_graph")
    ]
    if not all(len(f) >= 1 for f in found):
        parser.error(
            f"no Transform output under {args.pipeline_root}: run the quick start first "
            "(scripts/quickstart.sh or recsys-pipeline run)"
        )
    examples_dir, transform_dir = (max(f, key=os.path.getmtime) for f in found)
    model_config = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "pretrained_text_encoder": None,
        "early_stopping_patience": 0,
    }
    run_args = local_cluster.run_fn_args(
        examples_dir, transform_dir, Path(args.work), args.steps, model_config, eval_steps=20
    )
    results = {}
    for name in args.setups:
        print(f"{name}: training {args.steps} steps of {args.batch_size} ...", flush=True)
        results[name] = run_setup(name, run_args, Path(args.work), args.timeout)
        print(f"  {results[name]['wall_s']} s wall, {results[name]['examples_per_s']} examples/s")
    print(report(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
