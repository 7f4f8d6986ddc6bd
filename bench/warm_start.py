"""Warm start against training from scratch, on logs in spans.

    python -m bench.warm_start

The synthetic log (60 days) is cut into spans of ``--span-days`` days
(``events/span-{SPAN}/``, a session in the span it starts in). Three runs:

* **full window, from scratch**: every span, ``--steps`` steps;
* **history**: every span but the newest, from scratch, ``--steps`` steps,
  blessed (no gates): the model a daily run would have;
* **warm start**: then the newest span alone, in the history run's work
  directory, starting from its blessed model, ``--steps / 3`` steps.

Both final models are scored on the same examples, the warm run's eval
split (the newest days, which neither trained on), and the Trainer's wall
seconds are compared (#19's target: the warm run reaches the full window's
metrics in at most a third of its training time).
"""

from __future__ import annotations

from trainer import keras_env as _keras_env  # noqa: F401  (before TF)

import argparse
import glob
import json
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import numpy as np

from bench import model_quality

SPANS = "events/span-{SPAN}/*.jsonl"
SCORED_KINDS = ("binary", "regression", "multiclass", "retrieval")


def write_spans(source: str, out: str, span_days: int) -> List[int]:
    """Copies the log at ``source`` into ``out`` with its events cut into
    spans of ``span_days`` (a session goes to the span it starts in); the
    span numbers written."""
    rows = [
        json.loads(line)
        for path in sorted(glob.glob(os.path.join(source, "events", "*.jsonl")))
        for line in open(path)
        if line.strip()
    ]
    start = min(int(r["timestamp"]) for r in rows)
    session_start: Dict[str, int] = {}
    for r in rows:
        key = r.get("session_id") or r["event_id"]
        session_start[key] = min(session_start.get(key, r["timestamp"]), r["timestamp"])
    spans: Dict[int, List[dict]] = defaultdict(list)
    for r in rows:
        key = r.get("session_id") or r["event_id"]
        spans[1 + (session_start[key] - start) // (span_days * 86_400)].append(r)
    for name in os.listdir(source):
        if name != "events" and os.path.isfile(os.path.join(source, name)):
            shutil.copy(os.path.join(source, name), out)
    for span, events in spans.items():
        folder = Path(out) / "events" / f"span-{span}"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "part-0.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in events)
    return sorted(spans)


def scores(model_dir: str, examples_uri: str) -> Dict[str, float]:
    """Each task's metric of ``model_dir`` on the eval split at ``examples_uri``:
    AUC (click, conversion), RMSE (rating), accuracy (category), hit@100
    over clicked impressions (retrieval), over the examples each task labels."""
    import tensorflow as tf
    from sklearn.metrics import roc_auc_score

    from trainer import features as F

    files = sorted(glob.glob(os.path.join(examples_uri, "Split-eval", "*")))
    records = tf.constant(
        [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    )
    model = tf.saved_model.load(model_dir)
    outputs = {k: v.numpy() for k, v in model.signatures["evaluate"](examples=records).items()}
    labels = {
        k: v.numpy() for k, v in model.signatures["transform_features"](examples=records).items()
    }
    figures: Dict[str, float] = {}
    for task in F.TASKS:
        if task.name not in outputs or task.kind not in SCORED_KINDS:
            continue  # interest (multilabel): its label is a sparse list
        mask = labels[task.weight].reshape(-1) > 0
        label = labels[task.label].reshape(len(mask), -1)[:, 0][mask]
        if task.kind == "binary":
            figures[f"{task.name} AUC"] = roc_auc_score(label, outputs[task.name][mask, 0])
        elif task.kind == "regression":
            error = outputs[task.name][mask, 0] - label
            figures[f"{task.name} RMSE"] = float(np.sqrt(np.mean(error**2)))
        elif task.kind == "multiclass":
            hits = np.argmax(outputs[task.name][mask], axis=1) == label
            figures[f"{task.name} accuracy"] = float(np.mean(hits))
        elif task.kind == "retrieval":
            clicked = label > 0
            figures["retrieval hit@100"] = float(
                np.mean(outputs["retrieval_hit_at_100"][mask, 0][clicked])
            )
    return {k: round(float(v), 4) for k, v in figures.items()}


def trainer_seconds(summary: Dict) -> float:
    return next(r["seconds"] for r in summary["components"] if r["component"] == "Trainer")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default="runs/bench-warm-start")
    parser.add_argument("--impressions", type=int, default=20_000)
    parser.add_argument("--span-days", type=int, default=10)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument(
        "--warm-steps", type=int, help="steps of the warm-started run (default: --steps / 3)"
    )
    parser.add_argument(
        "--warm-window", type=int, default=1, help="spans the warm-started run reads (newest N)"
    )
    parser.add_argument(
        "--warm-learning-rate", type=float, help="its warm_start_learning_rate (default: none)"
    )
    parser.add_argument(
        "--warm-epochs",
        type=int,
        default=1,
        help="epochs of the warm-started run (validation passes; the full run keeps 3)",
    )
    parser.add_argument(
        "--warm-only",
        action="store_true",
        help="re-run only the warm start, from the history run kept in --work-dir",
    )
    parser.add_argument(
        "--full-only",
        action="store_true",
        help="re-run only the full-window run (from scratch, its work dir removed)",
    )
    parser.add_argument("--out", help="also write the figures to this JSON file")
    parser.add_argument(
        "--score-only", action="store_true", help="score the runs already in --work-dir"
    )
    args = parser.parse_args(argv)
    if args.warm_steps is None:
        args.warm_steps = args.steps // 3
    work = Path(args.work_dir)
    if args.score_only or args.warm_only or args.full_only:
        from pipeline.run_summary import summarize

        if args.full_only:
            shutil.rmtree(work / "full", ignore_errors=True)
            spans = sorted(p.name for p in (work / "full-data" / "events").iterdir())
            run(work / "full-data", work / "full", len(spans), args.steps, {"warm_start": False})
        if args.warm_only:
            shutil.rmtree(work / "daily", ignore_errors=True)
            shutil.copytree(work / "daily-history", work / "daily")
            warm_run(args, work)
        full, warm = (summarize(str(work / run / "metadata.sqlite")) for run in ("full", "daily"))
        return report(args, work, full, warm)
    from datagen import synthetic

    shutil.rmtree(work, ignore_errors=True)
    source = work / "source"
    synthetic.generate(str(source), synthetic.GeneratorConfig(num_impressions=args.impressions))
    full_data, history_data = work / "full-data", work / "history-data"
    for folder in (full_data, history_data):
        folder.mkdir(parents=True)
    spans = write_spans(str(source), str(full_data), args.span_days)
    write_spans(str(source), str(history_data), args.span_days)
    newest = Path(history_data) / "events" / f"span-{spans[-1]}"
    held_back = work / "newest-span"
    shutil.move(str(newest), str(held_back))

    print(f"spans {spans}: full window from scratch, {args.steps} steps ...", flush=True)
    full = run(full_data, work / "full", len(spans), args.steps, {"warm_start": False})
    print(f"spans {spans[:-1]}: history from scratch, {args.steps} steps ...", flush=True)
    run(history_data, work / "daily", len(spans) - 1, args.steps, {"warm_start": False})
    shutil.copytree(work / "daily", work / "daily-history")  # for --warm-only
    shutil.move(str(held_back), str(newest))
    warm = warm_run(args, work)
    return report(args, work, full, warm)


def run(data: Path, run_dir: Path, window: int, steps: int, model_config: Dict) -> Dict:
    """One pipeline run over the newest ``window`` spans of ``data``."""
    from components.log_config import LogConfig

    import schemas

    log_config = LogConfig(events_pattern=SPANS, span_window=window)
    return model_quality.run_pipeline(
        str(data), str(run_dir), log_config, schemas.SCHEMA_PATH, steps, model_config
    )


def warm_run(args, work: Path) -> Dict:
    """The daily run on the newest span(s), warm-started from the history run."""
    model_config = {"warm_start": True, "epochs": args.warm_epochs}
    if args.warm_learning_rate is not None:
        model_config["warm_start_learning_rate"] = args.warm_learning_rate
    print(
        f"newest {args.warm_window} span(s): warm start, {args.warm_steps} steps, "
        f"{model_config} ...",
        flush=True,
    )
    return run(
        work / "history-data", work / "daily", args.warm_window, args.warm_steps, model_config
    )


def timings(summary: Dict) -> Dict[str, float]:
    """The Trainer's phase seconds (``model_run/timings.json``)."""
    path = os.path.join(os.path.dirname(summary["training_curves"]), "timings.json")
    return json.load(open(path)) if os.path.exists(path) else {}


def report(args, work: Path, full: Dict, warm: Dict) -> int:
    """Scores both final models on the warm run's eval split and prints the figures."""
    spans = sorted(int(p.name.split("-")[1]) for p in (work / "full-data" / "events").iterdir())
    record = os.path.join(os.path.dirname(warm["training_curves"]), "warm_start.json")
    taken_over = json.load(open(record)) if os.path.exists(record) else {}
    results = {
        "spans": spans,
        "steps": {"full": args.steps, "warm": args.warm_steps},
        "warm_window": args.warm_window,
        "warm_learning_rate": args.warm_learning_rate,
        "warm_epochs": args.warm_epochs,
        "trainer_seconds": {"full": trainer_seconds(full), "warm": trainer_seconds(warm)},
        "trainer_phases": {"full": timings(full), "warm": timings(warm)},
        "scores": {
            "full window, from scratch": scores(full["model_uri"], warm["examples_uri"]),
            "newest span, warm start": scores(warm["model_uri"], warm["examples_uri"]),
        },
        "warm_start": taken_over.get("summary", "no warm start recorded"),
    }
    seconds = results["trainer_seconds"]
    results["time_ratio"] = round(seconds["warm"] / seconds["full"], 3)
    fits = [results["trainer_phases"][run].get("fit") for run in ("full", "warm")]
    if all(fits):
        results["fit_time_ratio"] = round(fits[1] / fits[0], 3)
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
