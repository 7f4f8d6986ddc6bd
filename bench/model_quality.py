"""Model quality: the pipeline's multi-task model against the TF Recommenders
multitask-tutorial baseline on the same MovieLens-100K split, and against the
Bayes limit on synthetic data.

    python -m bench.model_quality movielens --source ../shared/data/movielens-100k
    python -m bench.model_quality synthetic

MovieLens split (fixed): the adapter's log (every rating an impression, click
and rating; ratings >= 4 a purchase; one sampled unrated movie per rating as
an unclicked impression) split at random by a hash of the impression's event
id, 80 % train / 20 % eval. Both models train on the train split and are
scored on the eval split: rating RMSE over rated impressions, recall@10/100
(the rated movie among the top K of all catalogue movies for its user) and
click AUC over all eval impressions. The baseline is the tutorial's model
(32-d user and movie id embeddings, rating MLP 256-128-1, retrieval with
FactorizedTopK, loss weights 1/1, Adagrad 0.1, batch 8192, 3 epochs) trained
on the train split's ratings; its click score is the retrieval dot product.
Prints a table and writes ``quality.json`` in the work dir.
"""

from __future__ import annotations

from trainer import keras_env as _keras_env  # noqa: F401  (before TF)

import argparse
import glob
import json
import os
import time
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from pipeline.eval_config import no_gates
from trainer import features as F
from trainer import serving_contract as C

KS = (10, 100)
# Benchmarks measure; they do not gate: every model is blessed and pushed.
NO_GATES = no_gates()


def read_split(examples_uri: str, split: str) -> Dict[str, np.ndarray]:
    """Raw examples of one ExampleGen split as columns."""
    files = glob.glob(os.path.join(examples_uri, f"Split-{split}", "*"))
    columns: Dict[str, List] = {f.name: [] for f in F.RAW_FEATURES if not f.varlen}
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        example = tf.train.Example.FromString(record.numpy())
        for name in columns:
            feature = example.features.feature[name]
            values = (
                feature.bytes_list.value or feature.float_list.value or feature.int64_list.value
            )
            value = values[0] if values else b""
            columns[name].append(value.decode() if isinstance(value, bytes) else value)
    return {name: np.array(values) for name, values in columns.items()}


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties get average ranks)."""
    from scipy.stats import rankdata

    labels = labels.astype(bool)
    ranks = rankdata(scores)
    positives, negatives = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _batches(n: int, size: int = 1024):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def score_pipeline_model(model_dir: str, data: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Rating RMSE, recall@k and click AUC of the exported model on raw examples."""
    model = tf.saved_model.load(model_dir)
    predict, recommend = model.signatures[C.PREDICT], model.signatures[C.RECOMMEND]
    names = list(predict.structured_input_signature[1])
    n = len(data[F.USER_ID])
    click, rating = np.zeros(n), np.zeros(n)
    for rows in _batches(n):
        out = predict(**{name: tf.constant(data[name][rows].astype(str)) for name in names})
        click[rows], rating[rows] = out["click"].numpy()[:, 0], out["rating"].numpy()[:, 0]
    positives = np.flatnonzero(data[F.CLICK] == 1)
    hits = {k: 0 for k in KS}
    for rows in _batches(len(positives)):
        idx = positives[rows]
        top = recommend(
            **{
                name: tf.constant(data[name][idx].astype(str))
                for name in recommend.structured_input_signature[1]
            }
        )[C.ITEM_IDS].numpy()
        for k in KS:
            hits[k] += sum(
                data[F.ITEM_ID][i].encode() in set(top[j, :k]) for j, i in enumerate(idx)
            )
    rated = data[F.RATING_WEIGHT] > 0
    return {
        "rating_rmse": float(np.sqrt(np.mean((rating[rated] - data[F.RATING][rated]) ** 2))),
        **{f"recall_at_{k}": hits[k] / max(1, len(positives)) for k in KS},
        "click_auc": auc(data[F.CLICK], click),
    }


def tfrs_tutorial_baseline(
    train: Dict[str, np.ndarray],
    test: Dict[str, np.ndarray],
    movies: Sequence[str],
    epochs: int = 3,
    seed: int = 42,
) -> Dict[str, float]:
    """The TF Recommenders multitask tutorial model, rating 1.0 + retrieval 1.0."""
    import tensorflow_recommenders as tfrs

    tf.keras.utils.set_random_seed(seed)
    keras = tf.keras
    users = np.unique(train[F.USER_ID])
    movie_ids = np.array(sorted(set(movies)))

    class TutorialModel(tfrs.models.Model):
        def __init__(self):
            super().__init__()
            self.user_model = keras.Sequential(
                [
                    keras.layers.StringLookup(vocabulary=users, mask_token=None),
                    keras.layers.Embedding(len(users) + 1, 32),
                ]
            )
            self.movie_model = keras.Sequential(
                [
                    keras.layers.StringLookup(vocabulary=movie_ids, mask_token=None),
                    keras.layers.Embedding(len(movie_ids) + 1, 32),
                ]
            )
            self.rating_model = keras.Sequential(
                [
                    keras.layers.Dense(256, activation="relu"),
                    keras.layers.Dense(128, activation="relu"),
                    keras.layers.Dense(1),
                ]
            )
            self.rating_task = tfrs.tasks.Ranking(
                loss=keras.losses.MeanSquaredError(), metrics=[keras.metrics.RootMeanSquaredError()]
            )
            candidates = tf.data.Dataset.from_tensor_slices(movie_ids).batch(128)
            self.retrieval_task = tfrs.tasks.Retrieval(
                metrics=tfrs.metrics.FactorizedTopK(
                    candidates=candidates.map(lambda m: (m, self.movie_model(m))), ks=KS
                )
            )

        def call(self, features):
            user, movie = (
                self.user_model(features["user_id"]),
                self.movie_model(features["item_id"]),
            )
            return user, movie, self.rating_model(tf.concat([user, movie], axis=1))

        def compute_loss(self, features, training=False):
            user, movie, rating = self(features)
            return self.rating_task(
                labels=features["rating"], predictions=rating
            ) + self.retrieval_task(
                user, movie, candidate_ids=features["item_id"], compute_metrics=not training
            )

    def ratings(data):
        rated = data[F.RATING_WEIGHT] > 0
        return tf.data.Dataset.from_tensor_slices(
            {
                "user_id": data[F.USER_ID][rated].astype(str),
                "item_id": data[F.ITEM_ID][rated].astype(str),
                "rating": data[F.RATING][rated].astype("float32"),
            }
        )

    model = TutorialModel()
    model.compile(optimizer=keras.optimizers.Adagrad(0.1))
    train_ds = ratings(train).shuffle(100_000, seed=seed, reshuffle_each_iteration=False)
    model.fit(train_ds.batch(8192).cache(), epochs=epochs, verbose=2)
    logs = model.evaluate(ratings(test).batch(4096).cache(), return_dict=True, verbose=0)
    user, movie, _ = model(
        {
            "user_id": tf.constant(test[F.USER_ID].astype(str)),
            "item_id": tf.constant(test[F.ITEM_ID].astype(str)),
        }
    )
    dot = tf.reduce_sum(user * movie, axis=1).numpy()
    return {
        "rating_rmse": float(logs["root_mean_squared_error"]),
        **{
            f"recall_at_{k}": float(logs[f"factorized_top_k/top_{k}_categorical_accuracy"])
            for k in KS
        },
        "click_auc": auc(test[F.CLICK], dot),
    }


def run_pipeline(
    data_dir: str, work_dir: str, log_config, schema_path: str, train_steps: int, model_config: Dict
) -> Dict:
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


def movielens(args) -> Dict:
    import schemas
    from components.log_config import LogConfig
    from datagen import movielens as adapter

    data_dir = os.path.join(args.work_dir, "data")
    if not os.path.exists(os.path.join(data_dir, "manifest.json")):
        adapter.convert(args.source, data_dir, max_ratings=args.max_ratings)
    log_config = json.load(open(os.path.join(data_dir, "log_config.json")))
    log_config["split"] = {"kind": "random", "eval_fraction": 0.2}
    started = time.time()
    summary = run_pipeline(
        data_dir,
        os.path.join(args.work_dir, "run"),
        LogConfig.from_dict(log_config),
        schemas.MOVIELENS_SCHEMA_PATH,
        args.train_steps,
        json.loads(args.model_config),
    )
    pipeline_seconds = time.time() - started
    train, test = (
        read_split(summary["examples_uri"], "train"),
        read_split(summary["examples_uri"], "eval"),
    )
    movies = [json.loads(line)["item_id"] for line in open(os.path.join(data_dir, "items.jsonl"))]
    ours = score_pipeline_model(summary["model_uri"], test)
    started = time.time()
    baseline = tfrs_tutorial_baseline(train, test, movies, epochs=args.baseline_epochs)
    return {
        "dataset": "movielens-100k",
        "split": "random 80/20 by event-id hash",
        "train_examples": len(train[F.USER_ID]),
        "eval_examples": len(test[F.USER_ID]),
        "eval_ratings": int((test[F.RATING_WEIGHT] > 0).sum()),
        "pipeline": ours,
        "tfrs_tutorial_baseline": baseline,
        "pipeline_seconds": round(pipeline_seconds, 1),
        "baseline_seconds": round(time.time() - started, 1),
    }


def synthetic(args) -> Dict:
    from components.log_config import LogConfig
    from datagen import synthetic as generator

    data_dir = os.path.join(args.work_dir, "data")
    if not os.path.exists(os.path.join(data_dir, "manifest.json")):
        generator.generate(data_dir, generator.GeneratorConfig(num_impressions=args.impressions))
    summary = run_pipeline(
        data_dir,
        os.path.join(args.work_dir, "run"),
        LogConfig(),
        __import__("schemas").SCHEMA_PATH,
        args.train_steps,
        json.loads(args.model_config),
    )
    test = read_split(summary["examples_uri"], "eval")
    truth = {}
    for line in open(os.path.join(data_dir, "truth.jsonl")):
        row = json.loads(line)
        truth[row["event_id"]] = row["click_probability"]
    known = np.array([event_id in truth for event_id in test[F.EVENT_ID]])
    bayes = np.array([truth.get(event_id, 0.0) for event_id in test[F.EVENT_ID]])
    ours = score_pipeline_model(summary["model_uri"], test)
    return {
        "dataset": "synthetic",
        "eval_examples": len(test[F.USER_ID]),
        "pipeline": ours,
        "bayes_optimal_click_auc_on_eval": auc(test[F.CLICK][known], bayes[known]),
    }


def print_table(result: Dict) -> None:
    print(
        f"\n{result['dataset']}: {result.get('split', '')} eval examples {result['eval_examples']}"
    )
    rows = [
        (name, result[name]) for name in ("pipeline", "tfrs_tutorial_baseline") if name in result
    ]
    metrics = sorted({m for _, values in rows for m in values})
    print(f"  {'model':<24}" + "".join(f"{m:>16}" for m in metrics))
    for name, values in rows:
        print(f"  {name:<24}" + "".join(f"{values.get(m, float('nan')):>16.4f}" for m in metrics))
    if "bayes_optimal_click_auc_on_eval" in result:
        print(
            "  Bayes-optimal click AUC on the same eval examples: "
            f"{result['bayes_optimal_click_auc_on_eval']:.4f}"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=("movielens", "synthetic"))
    parser.add_argument(
        "--source", default=os.environ.get("MOVIELENS_DIR", "../shared/data/movielens-100k")
    )
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--train-steps", type=int, default=3000)
    parser.add_argument("--model-config", default=json.dumps({"epochs": 6, "batch_size": 256}))
    parser.add_argument("--baseline-epochs", type=int, default=3)
    parser.add_argument(
        "--max-ratings", type=int, default=None, help="use the first N ratings (quick runs)"
    )
    parser.add_argument("--impressions", type=int, default=20000, help="synthetic log size")
    args = parser.parse_args(argv)
    args.work_dir = args.work_dir or os.path.join("runs", "bench", args.dataset)
    result = movielens(args) if args.dataset == "movielens" else synthetic(args)
    os.makedirs(args.work_dir, exist_ok=True)
    with open(os.path.join(args.work_dir, "quality.json"), "w") as f:
        json.dump(result, f, indent=2)
    print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
