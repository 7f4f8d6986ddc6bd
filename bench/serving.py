"""Serving benchmark: gRPC Predict through the local TF Serving-compatible
server against an in-process call of the same SavedModel, same run.

    python -m bench.serving --model-base-path runs/local/serving/recommender

Prints p50/p99 latency (ms) and throughput at batch 1 and 64 with several
concurrent clients, and the gRPC / in-process ratios.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Callable, Dict, List

from trainer import keras_env as _keras_env  # noqa: F401  (before TF)

import numpy as np

from datagen.synthetic import CATEGORY_WORDS
from serving.client import RecommenderClient, make_example
from serving.model_store import ModelStore
from serving.server import ModelServer
from trainer import features as F
from trainer import serving_contract as C


def request_rows(n: int, seed: int = 0) -> List[Dict[str, str]]:
    rng = np.random.default_rng(seed)
    words = [w for ws in CATEGORY_WORDS.values() for w in ws]
    cats = sorted(CATEGORY_WORDS)

    def text(k):
        return " ".join(rng.choice(words, k))

    return [
        {
            F.USER_ID: f"u{rng.integers(500):05d}",
            F.ITEM_ID: f"i{rng.integers(400):05d}",
            F.ITEM_TITLE: text(3),
            F.ITEM_DESCRIPTION: text(10),
            F.ITEM_CATEGORY: str(rng.choice(cats)),
            F.HISTORY_TITLES: " | ".join(text(3) for _ in range(5)),
        }
        for _ in range(n)
    ]


def measure(call: Callable[[], None], clients: int, seconds: float) -> Dict[str, float]:
    """Runs ``call`` in ``clients`` threads for ``seconds``; latency and rate figures."""
    for _ in range(3):
        call()  # warm up
    latencies: List[float] = []
    lock, stop = threading.Lock(), threading.Event()

    def loop():
        mine = []
        while not stop.is_set():
            start = time.perf_counter()
            call()
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {
        "requests": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "qps": len(ms) / elapsed,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-base-path", default="runs/local/serving/recommender")
    p.add_argument("--model-name", default="recommender")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    store = ModelStore(args.model_name, args.model_base_path)
    loaded = store.poll_once()
    if loaded is None:
        raise SystemExit(
            f"error: no model version under {args.model_base_path}; run the pipeline first"
        )
    fn = loaded.signatures[C.SERVING_DEFAULT]
    results = []
    print(
        f"model {args.model_name} version {loaded.version}, {args.clients} concurrent clients, "
        f"{args.seconds:.0f} s per row"
    )
    print(f"{'path':<11} {'batch':>5} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'examples/s':>11}")
    with ModelServer(args.model_name, args.model_base_path, port=0) as server:
        for batch in args.batch_sizes:
            rows = request_rows(batch)
            examples = np.array([make_example(r) for r in rows], dtype=object)
            clients = [
                RecommenderClient(server.address, args.model_name) for _ in range(args.clients)
            ]
            local = threading.local()

            def grpc_call(local=local, clients=clients, rows=rows):
                if not hasattr(local, "client"):
                    local.client = clients[threading.get_ident() % len(clients)]
                local.client.predict_examples(rows)

            for path, call in (
                ("in-process", lambda e=examples: fn(examples=e)),
                ("grpc", grpc_call),
            ):
                row = {"path": path, "batch": batch, **measure(call, args.clients, args.seconds)}
                results.append(row)
                print(
                    f"{path:<11} {batch:>5} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
                    f"{row['qps']:>8.0f} {row['qps'] * batch:>11.0f}",
                    flush=True,
                )
            for c in clients:
                c.close()
    for batch in args.batch_sizes:
        local_row, grpc_row = [r for r in results if r["batch"] == batch]
        print(
            f"batch {batch}: gRPC/in-process p50 latency "
            f"x{grpc_row['p50_ms'] / local_row['p50_ms']:.2f}, "
            f"throughput x{grpc_row['qps'] / local_row['qps']:.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
