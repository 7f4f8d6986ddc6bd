"""Compact serving models against the full one: the pipeline with
``compact_weights`` int8 and then float16 (everything before the Trainer
cached), the ranking heads as int8 TFLite.

    python -m bench.compact                      # synthetic logs, MiniLM encoder
    python -m bench.compact --dataset movielens --source ../shared/data/movielens-100k

Prints, per model: size on disk, load seconds (a fresh process's
``tf.saved_model.load``, median of 3), batch-1 and batch-64 latency of
``serving_default`` on serialized eval examples (median ms), whether the
CompactEvaluator blessed it, and every task's TFMA metrics as the compact
model's minus the full model's (both on the same eval split). Then the same
size, load and latency figures for the TFLite ranking heads.
"""

from __future__ import annotations

from trainer import keras_env as _keras_env  # noqa: F401  (before TF)

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

from bench import model_quality

# TF Serving links tensorflow-text's ops (the export's tokenizers); so does this loader.
_LOAD = (
    "import sys, time\nfrom trainer import keras_env\nimport tensorflow as tf\n"
    "import tensorflow_text\n{load}\n"
)
_LOAD_SAVED_MODEL = (
    "t = time.perf_counter(); tf.saved_model.load(sys.argv[1]); print(time.perf_counter() - t)"
)
_LOAD_TFLITE = (
    "t = time.perf_counter(); i = tf.lite.Interpreter(model_path=sys.argv[1]); "
    "i.allocate_tensors(); print(time.perf_counter() - t)"
)


def dir_mb(path: str) -> float:
    """Megabytes of every file under ``path`` (or of the file)."""
    if os.path.isfile(path):
        return os.path.getsize(path) / 1e6
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 1e6


def load_seconds(path: str, tflite: bool, repeats: int = 3) -> float:
    """Median seconds a fresh process takes to load ``path`` (imports excluded)."""
    code = _LOAD.format(load=_LOAD_TFLITE if tflite else _LOAD_SAVED_MODEL)
    root = str(Path(__file__).resolve().parent.parent)
    times = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", code, path],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=root,
            env={**os.environ, "PYTHONPATH": root},
        )
        if out.returncode != 0:
            raise RuntimeError(f"loading {path} failed: {out.stderr[-2000:]}")
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def median_ms(call: Callable[[], object], repeats: int) -> float:
    call()  # warm: the first call traces and allocates
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def eval_records(examples_uri: str, count: int) -> List[bytes]:
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(examples_uri, "Split-eval", "*")))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").take(count)
    return [record.numpy() for record in dataset]


def saved_model_figures(model_dir: str, records: List[bytes], repeats: int) -> Dict[str, float]:
    import tensorflow as tf

    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    one, batch = tf.constant(records[:1]), tf.constant((records * 64)[:64])
    return {
        "size_mb": round(dir_mb(model_dir), 1),
        "load_s": round(load_seconds(model_dir, tflite=False), 2),
        "batch_1_ms": round(median_ms(lambda: serve(examples=one), repeats), 2),
        "batch_64_ms": round(median_ms(lambda: serve(examples=batch), repeats), 2),
    }


def tflite_figures(path: str, repeats: int) -> Dict[str, float]:
    import numpy as np
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=path)
    runner = interpreter.get_signature_runner()
    details = runner.get_input_details()

    def feed(rows: int) -> Dict[str, np.ndarray]:
        return {n: np.zeros([rows, *d["shape"][1:]], d["dtype"]) for n, d in details.items()}

    one, batch = feed(1), feed(64)
    return {
        "size_mb": round(dir_mb(path), 3),
        "load_s": round(load_seconds(path, tflite=True), 3),
        "batch_1_ms": round(median_ms(lambda: runner(**one), repeats), 3),
        "batch_64_ms": round(median_ms(lambda: runner(**batch), repeats), 3),
    }


def metric_deltas(full: Dict, compact: Dict) -> Dict[str, Dict[str, float]]:
    """{task: {metric: compact - full}} over the metrics both report."""
    return {
        task: {
            name: round(compact[task][name] - value, 5)
            for name, value in sorted(metrics.items())
            # TFMA's "<metric>_diff" are against each evaluator's own baseline: not compared
            if name != "example_count"
            and not name.endswith("_diff")
            and name in compact.get(task, {})
        }
        for task, metrics in full.items()
    }


def report(results: Dict) -> str:
    """The Markdown tables of ``results``."""
    rows = [
        "| model | size MB | load s | batch-1 ms | batch-64 ms | blessed |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        cells = [name, r["size_mb"], r["load_s"], r["batch_1_ms"], r["batch_64_ms"]]
        rows.append("| " + " | ".join(str(c) for c in cells + [r.get("blessed", "-")]) + " |")
    heads = results.get("tflite_ranking_heads")
    if heads:
        cells = ["TFLite ranking heads (int8)", heads["size_mb"], heads["load_s"]]
        rows.append(
            "| "
            + " | ".join(str(c) for c in cells + [heads["batch_1_ms"], heads["batch_64_ms"], "-"])
            + " |"
        )
    rows += ["", "| model | task | metric deltas (compact - full) |", "|---|---|---|"]
    for name, deltas in results["deltas"].items():
        for task, metrics in deltas.items():
            shown = ", ".join(f"{metric} {value:+.4f}" for metric, value in metrics.items())
            rows.append(f"| {name} | {task} | {shown} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["synthetic", "movielens"], default="synthetic")
    parser.add_argument("--source", default="../shared/data/movielens-100k")
    parser.add_argument("--max-ratings", type=int, default=None)
    parser.add_argument("--impressions", type=int, default=20_000)
    parser.add_argument("--split", default="time")
    parser.add_argument("--cold-items", type=float, default=0.0)
    parser.add_argument("--work-dir", default="runs/bench-compact")
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--kinds", nargs="+", default=["int8", "float16"])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", help="also write the figures to this JSON file")
    parser.add_argument("--report", help="print the tables of an --out file, running nothing")
    args = parser.parse_args(argv)
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return 0
    data_dir, log_config, schema_path = model_quality.prepare(args)
    results: Dict = {"models": {}, "deltas": {}}
    for kind in args.kinds:
        print(f"pipeline with compact_weights {kind} ...", flush=True)
        summary = model_quality.run_pipeline(
            data_dir,
            os.path.join(args.work_dir, "run"),
            log_config,
            schema_path,
            args.train_steps,
            {"epochs": 2, "compact_weights": kind, "tflite_ranking_heads": "int8"},
        )
        compact = summary.get("compact")
        if not compact:
            raise RuntimeError(f"the run made no compact model: {summary.get('model_uri')}")
        records = eval_records(summary["examples_uri"], 64)
        if "full (float32)" not in results["models"]:
            results["models"]["full (float32)"] = saved_model_figures(
                summary["model_uri"], records, args.repeats
            )
            heads = os.path.join(summary["model_uri"], "assets.extra", "ranking_heads.tflite")
            results["tflite_ranking_heads"] = tflite_figures(heads, args.repeats * 10)
        figures = saved_model_figures(compact["model_uri"], records, args.repeats)
        results["models"][kind] = {**figures, "blessed": compact["blessed"]}
        results["deltas"][kind] = metric_deltas(summary["metrics"], compact["metrics"])
        print(f"  {kind}: {figures}", flush=True)
    print(report(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
