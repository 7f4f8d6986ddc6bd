"""Model quality: the pipeline's multi-task model against strong classic
baselines (``bench.baselines``) on the same split and the same protocol
(``bench.protocol``), on MovieLens-100K or the synthetic logs.

    python -m bench.model_quality movielens --source ../shared/data/movielens-100k
    python -m bench.model_quality movielens --split time
    python -m bench.model_quality synthetic

MovieLens log: the adapter's (every rating an impression, click and rating;
ratings >= 4 a purchase; one sampled unrated movie per rating as an unclicked
impression). Splits: ``random`` (80/20 by a hash of the impression's event id,
comparable with the literature) or ``time`` (the latest 20 % of the time span
to eval, what production does); ``--cold-items F`` also holds a fraction F of
the items out of training entirely. Every model trains on the train split and
is scored on the eval split by ``bench.protocol``; recall excludes the items
the user clicked before each impression. Prints a table and writes
``quality.json`` in the work dir.
"""

from __future__ import annotations

from trainer import keras_env as _keras_env  # noqa: F401  (before TF)

import argparse
import glob
import json
import os
import time
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from bench import baselines, protocol
from components.log_config import SplitConfig
from pipeline.eval_config import no_gates
from trainer import features as F

# Benchmarks measure; they do not gate: every model is blessed and pushed.
NO_GATES = no_gates()
SUBSET_ALL, SUBSET_WARM, SUBSET_COLD = "all", "warm_items", "cold_items"
SUBSETS = (SUBSET_ALL, SUBSET_WARM, SUBSET_COLD)


def read_split(examples_uri: str, split: str) -> Dict[str, np.ndarray]:
    """Raw examples of one ExampleGen split as columns."""
    files = glob.glob(os.path.join(examples_uri, f"Split-{split}", "*"))
    columns: Dict[str, List] = {f.name: [] for f in F.RAW_FEATURES}
    varlen = {f.name for f in F.RAW_FEATURES if f.varlen}
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        example = tf.train.Example.FromString(record.numpy())
        for name in columns:
            feature = example.features.feature[name]
            values = (
                feature.bytes_list.value or feature.float_list.value or feature.int64_list.value
            )
            if name in varlen:  # a list travels as one string, as serving takes it
                columns[name].append(F.HISTORY_SEPARATOR.join(_text(v) for v in values))
                continue
            columns[name].append(_text(values[0]) if values else "")
    return {name: np.array(values) for name, values in columns.items()}


def _text(value: object) -> object:
    return value.decode() if isinstance(value, bytes) else value


def run_pipeline(
    data_dir: str, work_dir: str, log_config, schema_path: str, train_steps: int, model_config: Dict
) -> Dict:
    """One LocalDagRunner run; a re-run in the same ``work_dir`` with another
    model config re-uses everything up to the Trainer from TFX's cache."""
    from pipeline import configs, local_runner

    config = configs.RunConfig(
        data_dir=data_dir,
        work_dir=work_dir,
        log_config=log_config,
        schema_path=schema_path,
        train_steps=train_steps,
        eval_steps=100,
        model_config=model_config,
        beam_args=configs.default_beam_args(data_dir),
        eval_thresholds=NO_GATES,
    )
    return local_runner.run(config, query_served_model=False)


def prepare(args) -> tuple:
    """(data dir, LogConfig, schema path) of the dataset, the data made once."""
    import schemas
    from components.log_config import LogConfig

    data_dir = os.path.join(args.work_dir, "data")
    split = {"kind": args.split, "eval_fraction": 0.2, "cold_item_fraction": args.cold_items}
    if args.dataset == "movielens":
        from datagen import movielens as adapter

        if not os.path.exists(os.path.join(data_dir, "manifest.json")):
            adapter.convert(args.source, data_dir, max_ratings=args.max_ratings)
        log_config = json.load(open(os.path.join(data_dir, "log_config.json")))
        log_config["split"] = split
        return data_dir, LogConfig.from_dict(log_config), schemas.MOVIELENS_SCHEMA_PATH
    from datagen import synthetic as generator

    if not os.path.exists(os.path.join(data_dir, "manifest.json")):
        generator.generate(data_dir, generator.GeneratorConfig(num_impressions=args.impressions))
    return data_dir, LogConfig(split=SplitConfig(**split)), schemas.SCHEMA_PATH


def item_texts(data_dir: str) -> Dict[str, str]:
    """Item id -> "title description", the text the encoder reads."""
    texts = {}
    for path in glob.glob(os.path.join(data_dir, "items.*")):
        for line in open(path):
            if line.strip():
                row = json.loads(line)
                texts[str(row["item_id"])] = f"{row.get('title', '')} {row.get('description', '')}"
    return texts


def eval_protocol(examples_uri: str, split: SplitConfig) -> protocol.EvalProtocol:
    train, test = read_split(examples_uri, "train"), read_split(examples_uri, "eval")
    subsets = {SUBSET_ALL: np.ones(len(test[F.USER_ID]), bool)}
    if split.cold_item_fraction:
        cold = np.array([split.is_cold_item(i) for i in test[F.ITEM_ID]])
        subsets[SUBSET_WARM], subsets[SUBSET_COLD] = ~cold, cold
    return protocol.EvalProtocol(train, test, subsets)


def score_baselines(
    evaluation: protocol.EvalProtocol, texts: Dict[str, str], names: Optional[List[str]] = None
) -> Dict[str, Dict]:
    """Every baseline (or ``names``), fitted on the protocol's train split."""
    data = baselines.Interactions(evaluation.train, evaluation.catalogue, evaluation.users)
    results = {}
    for name in names or list(baselines.BASELINES):
        started = time.perf_counter()
        model = baselines.BASELINES[name](data, texts)
        results[name] = protocol.score_baseline(model, evaluation, data)
        print(f"  {name}: {time.perf_counter() - started:.1f} s")
    return results


def run_and_score(args, data_dir, log_config, schema, model_config, run_dir) -> Dict:
    """The pipeline once, its pushed model scored; the Evaluator's TFMA metrics too."""
    started = time.time()
    summary = run_pipeline(data_dir, run_dir, log_config, schema, args.train_steps, model_config)
    seconds = time.time() - started
    evaluation = eval_protocol(summary["examples_uri"], log_config.split)
    return {
        "scores": protocol.score_exported_model(summary["model_uri"], evaluation),
        "tfma": summary.get("metrics", {}),
        "pipeline_seconds": round(seconds, 1),
        "components": {row["component"]: row["seconds"] for row in summary["components"]},
        "evaluation": evaluation,
    }


def quality(args) -> Dict:
    data_dir, log_config, schema = prepare(args)
    run = run_and_score(
        args, data_dir, log_config, schema, json.loads(args.model_config),
        os.path.join(args.work_dir, f"run-{args.split}"),
    )  # fmt: skip
    evaluation = run.pop("evaluation")
    models = {"pipeline": run["scores"], **score_baselines(evaluation, item_texts(data_dir))}
    test = evaluation.test
    result = {
        "dataset": "movielens-100k" if args.dataset == "movielens" else "synthetic",
        "split": describe_split(log_config.split),
        "train_examples": len(evaluation.train[F.USER_ID]),
        "eval_examples": len(test[F.USER_ID]),
        "eval_ratings": int((test[F.RATING_WEIGHT] > 0).sum()),
        "eval_clicks": len(evaluation.positives),
        "models": models,
        "pipeline_tfma": run["tfma"],
        "pipeline_seconds": run["pipeline_seconds"],
    }
    if args.dataset == "synthetic":
        truth = {}
        for line in open(os.path.join(data_dir, "truth.jsonl")):
            row = json.loads(line)
            truth[row["event_id"]] = row["click_probability"]
        known = np.array([e in truth for e in test[F.EVENT_ID]])
        bayes = np.array([truth.get(e, 0.0) for e in test[F.EVENT_ID]])
        result["bayes_optimal_click_auc_on_eval"] = protocol.auc(test[F.CLICK][known], bayes[known])
    return result


def describe_split(split: SplitConfig) -> str:
    kind = "random 80/20 by event-id hash" if split.kind == "random" else "time split, last 20 %"
    if split.cold_item_fraction:
        kind += f", {split.cold_item_fraction:.0%} of items held out"
    return kind


def print_table(result: Dict) -> None:
    print(f"\n{result['dataset']}: {result['split']}, eval examples {result['eval_examples']}")
    for subset in SUBSETS:
        rows = [(n, m[subset]) for n, m in result["models"].items() if subset in m]
        if not rows:
            continue
        metrics = sorted({k for _, v in rows for k in v if k != "rows"})
        print(f"  [{subset}]  {'model':<16}" + "".join(f"{m:>16}" for m in metrics))
        for name, values in rows:
            cells = "".join(
                f"{values[m]:>16.4f}" if values.get(m) is not None else f"{'-':>16}"
                for m in metrics
            )
            print(f"  {'':<{len(subset) + 4}}{name:<16}" + cells)
    if "bayes_optimal_click_auc_on_eval" in result:
        print(
            "  Bayes-optimal click AUC on the same eval examples: "
            f"{result['bayes_optimal_click_auc_on_eval']:.4f}"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=("movielens", "synthetic"))
    parser.add_argument(
        "--source", default=os.environ.get("MOVIELENS_DIR", "../shared/data/movielens-100k")
    )
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--split", choices=("random", "time"), default="random")
    parser.add_argument(
        "--cold-items", type=float, default=0.0, help="fraction of items held out of training"
    )
    parser.add_argument("--train-steps", type=int, default=3000)
    parser.add_argument("--model-config", default=json.dumps({"epochs": 6, "batch_size": 256}))
    parser.add_argument(
        "--max-ratings", type=int, default=None, help="use the first N ratings (quick runs)"
    )
    parser.add_argument("--impressions", type=int, default=20000, help="synthetic log size")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.work_dir = args.work_dir or os.path.join("runs", "bench", args.dataset)
    result = quality(args)
    os.makedirs(args.work_dir, exist_ok=True)
    with open(os.path.join(args.work_dir, "quality.json"), "w") as f:
        json.dump(result, f, indent=2)
    print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
