"""The pretrained text encoder against the from-scratch one: same split, same
steps, same everything else, overall and on items held out of training.

    python -m bench.encoder_comparison movielens --cold-items 0.1 --seeds 1 2
    python -m bench.encoder_comparison synthetic --cold-items 0.1 --seeds 1 2

Per seed, the pipeline runs twice in one pipeline root (the second run re-uses
ExampleGen, statistics, Transform and the catalogue embeddings from TFX's
cache): ``pretrained_text_encoder`` MiniLM, then None. Each pushed model is
scored by ``bench.protocol``; the baselines (EASE, MF, biases, popularity and
the TF-IDF profile, the text baseline that also scores cold items) on the same
split. Writes ``encoder_comparison.json`` and prints the tables.
"""

from __future__ import annotations

from trainer import keras_env as _keras_env  # noqa: F401  (before TF)

import argparse
import json
import os
from typing import Dict, List

import numpy as np

from bench import model_quality as quality
from bench.protocol import table_rows
from trainer.preset_files import MINILM

ENCODERS = {"pretrained": MINILM, "scratch": None}
TFMA_METRICS = {
    "auc",
    "root_mean_squared_error",
    "sparse_categorical_accuracy",
    "recall_at_10",
    "recall_at_100",
}
METRICS = ("click_auc", "conversion_auc", "rating_rmse", "recall_at_10", "recall_at_100")


def spread(values: List[float]) -> str:
    """Mean and half the range over seeds: "0.8123 ± 0.0040"."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.4f} ± {(max(values) - min(values)) / 2:.4f}"


def tables(result: Dict) -> List[str]:
    lines = []
    for subset in quality.SUBSETS:
        if not all(subset in r["scores"] for r in result["runs"]):
            continue  # no held-out items in this split
        lines += [
            "",
            f"{subset} (mean ± half-range over seeds {result['seeds']}):",
            "",
            "| model | " + " | ".join(METRICS) + " |",
            "|---|" + "---|" * len(METRICS),
        ]
        for name in ENCODERS:
            runs = [r["scores"][subset] for r in result["runs"] if r["encoder"] == name]
            cells = [spread([run.get(m) for run in runs]) for m in METRICS]
            lines.append(f"| pipeline, {name} encoder | " + " | ".join(cells) + " |")
        baselines = {name: scores.get(subset, {}) for name, scores in result["baselines"].items()}
        lines += list(table_rows(baselines, METRICS))
    lines += ["", "TFMA per task (Evaluator, whole eval split):", ""]
    tasks = sorted({t for r in result["runs"] for t in r["tfma"]})
    for run in result["runs"]:
        cells = ", ".join(
            f"{task} {name} {value:.4f}"
            for task in tasks
            for name, value in sorted(run["tfma"].get(task, {}).items())
            if name in TFMA_METRICS
        )
        lines.append(f"- {run['encoder']}, seed {run['seed']}: {cells}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    quality.add_arguments(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.set_defaults(cold_items=0.1, train_steps=600)
    args = parser.parse_args(argv)
    args.work_dir = args.work_dir or os.path.join("runs", "bench", f"encoders-{args.dataset}")
    data_dir, log_config, schema = quality.prepare(args)
    base_config = json.loads(args.model_config)
    runs, evaluation = [], None
    for seed in args.seeds:
        for name, encoder in ENCODERS.items():
            print(f"\n=== {args.dataset}: {name} encoder, seed {seed} ===", flush=True)
            config = {**base_config, "seed": seed, "pretrained_text_encoder": encoder}
            run = quality.run_and_score(
                args, data_dir, log_config, schema, config, os.path.join(args.work_dir, "run")
            )
            evaluation = run.pop("evaluation")
            runs.append({"encoder": name, "seed": seed, **run})
            print(json.dumps(run["scores"], indent=1), flush=True)
    result = {
        "dataset": args.dataset,
        "split": quality.describe_split(log_config.split),
        "seeds": args.seeds,
        "train_steps": args.train_steps,
        "model_config": base_config,
        "eval_clicks": len(evaluation.positives),
        "runs": runs,
        "baselines": quality.score_baselines(evaluation, quality.item_texts(data_dir)),
    }
    os.makedirs(args.work_dir, exist_ok=True)
    with open(os.path.join(args.work_dir, "encoder_comparison.json"), "w") as f:
        json.dump(result, f, indent=2)
    print("\n".join(tables(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
