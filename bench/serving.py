"""Serving benchmark: the local TF Serving-compatible server, run as its own
process as in production, against an in-process call of the same SavedModel.

    python -m bench.serving --model-base-path runs/local/serving/recommender

Sections (``--sections``, all by default):

* ``latency``: p50/p99 (ms) and requests/s at batch 1 and 64 with
  ``--clients`` concurrent clients: in process, over gRPC, over REST;
* ``batching``: ``--batching-clients`` concurrent batch-1 gRPC clients,
  server-side batching off and on (``--batching-parameters``);
* ``warmup``: the first request's latency after a hot swap to a new version,
  with the server's warmup replay off and on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from trainer import keras_env as _keras_env  # noqa: F401  (before TF)

import numpy as np

from datagen.synthetic import CATEGORY_WORDS
from serving.client import RecommenderClient, make_example
from serving.model_config import ServedModel
from serving.model_store import ModelStore
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
    for _ in range(10):
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(
    model_name: str, base: str, flags: Sequence[str] = (), log_path: Optional[str] = None
) -> Iterator[Tuple[str, str]]:
    """``recsys-serve`` on ``base`` in its own process; yields (gRPC, REST) addresses."""
    grpc_port, rest_port = _free_port(), _free_port()
    log = open(log_path or os.devnull, "ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving.server",
            f"--model_name={model_name}",
            f"--model_base_path={base}",
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
            "--file_system_poll_wait_seconds=0.2",
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    try:
        line = proc.stdout.readline().decode()
        if not line.startswith("serving"):
            raise SystemExit(f"error: the server did not start (see {log_path}): {line!r}")
        address = f"127.0.0.1:{grpc_port}"
        with RecommenderClient(address, model_name) as client:
            client.wait_ready(60)
        yield address, f"127.0.0.1:{rest_port}"
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


@contextlib.contextmanager
def served_in_process(model_name: str, base: str) -> Iterator[Tuple[str, str]]:
    """The server in this process (the clients' GIL and cores shared); yields its addresses."""
    from serving.server import ModelServer

    with ModelServer(model_name, base, port=0, rest_port=0) as server:
        yield server.address, server.rest.address


def _per_thread(make: Callable[[], RecommenderClient]) -> Callable[[], RecommenderClient]:
    local, made = threading.local(), []

    def client() -> RecommenderClient:
        if not hasattr(local, "client"):
            local.client = make()
            made.append(local.client)
        return local.client

    client.made = made  # type: ignore[attr-defined]
    return client


def _row(path: str, batch: int, figures: Dict[str, float]) -> Dict[str, object]:
    row = {"path": path, "batch": batch, **figures}
    print(
        f"{path:<22} {batch:>5} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
        f"{row['qps']:>8.0f} {row['qps'] * batch:>11.0f}",
        flush=True,
    )
    return row


def _header() -> None:
    print(f"{'path':<22} {'batch':>5} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'examples/s':>11}")


def latency(args, signature, log_path: str) -> List[Dict[str, object]]:
    """In process, gRPC and REST at each batch size, ``args.clients`` clients."""
    where = "in this process" if args.server_in_process else "in its own process"
    print(
        f"\n# latency: {args.clients} concurrent clients, {args.seconds:.0f} s per row, "
        f"the server {where}"
    )
    _header()
    rows_out = []
    server = (
        served_in_process(args.model_name, args.model_base_path)
        if args.server_in_process
        else served(args.model_name, args.model_base_path, log_path=log_path)
    )
    with server as (address, rest):
        for batch in args.batch_sizes:
            rows = request_rows(batch)
            examples = np.array([make_example(r) for r in rows], dtype=object)
            over_grpc = _per_thread(lambda: RecommenderClient(address, args.model_name))
            over_rest = _per_thread(
                lambda: RecommenderClient(rest, args.model_name, transport="rest")
            )
            for path, call in (
                ("in-process", lambda e=examples: signature(examples=e)),
                ("grpc", lambda c=over_grpc, r=rows: c().predict_examples(r)),
                ("rest", lambda c=over_rest, r=rows: c().predict_examples(r)),
            ):
                rows_out.append(_row(path, batch, measure(call, args.clients, args.seconds)))
            for client in over_grpc.made + over_rest.made:
                client.close()
    for batch in args.batch_sizes:
        by_path = {r["path"]: r for r in rows_out if r["batch"] == batch}
        base, g = by_path["in-process"], by_path["grpc"]
        print(
            f"batch {batch}: gRPC p50 overhead {g['p50_ms'] - base['p50_ms']:+.2f} ms "
            f"(x{g['p50_ms'] / base['p50_ms']:.2f}), REST/gRPC p50 "
            f"x{by_path['rest']['p50_ms'] / g['p50_ms']:.2f}"
        )
    return rows_out


def batching(args, log_path: str) -> List[Dict[str, object]]:
    """Batch-1 gRPC clients against batching off and on."""
    print(
        f"\n# batching: {args.batching_clients} concurrent batch-1 gRPC clients, "
        f"{args.seconds:.0f} s per row"
    )
    _header()
    results = []
    rows = request_rows(1)
    on = ["--enable_batching"]
    if args.batching_parameters:
        on.append(f"--batching_parameters_file={args.batching_parameters}")
    for label, flags in (("batching off", []), ("batching on", on)):
        with served(args.model_name, args.model_base_path, flags, log_path) as (address, _):
            client = _per_thread(lambda: RecommenderClient(address, args.model_name))
            figures = measure(
                lambda c=client: c().predict_examples(rows), args.batching_clients, args.seconds
            )
            results.append(_row(label, 1, figures))
            for c in client.made:
                c.close()
    off, on_row = results
    print(
        f"batching on/off: requests/s x{on_row['qps'] / off['qps']:.2f}, "
        f"p99 x{on_row['p99_ms'] / off['p99_ms']:.2f}"
    )
    return results


def _copy_version(source: str, base: str, version: int) -> None:
    """Places ``source`` as ``base/version`` in one rename, as the Pusher does."""
    staging = os.path.join(base, f".incoming-{version}")
    shutil.copytree(source, staging)
    os.replace(staging, os.path.join(base, str(version)))


def _ensure_warmup_records(version_dir: str, signatures: Sequence[str]) -> None:
    from trainer import warmup

    if not os.path.exists(warmup.warmup_path(version_dir)):
        requests = warmup.warmup_requests(signatures, request_rows(8))
        warmup.write_warmup_requests(version_dir, requests)


def hot_swap(args, source: str, signatures: Sequence[str], log_path: str) -> List[Dict]:
    """First-request latency after a hot swap, warmup replay off and on."""
    print(f"\n# warmup: first request after a hot swap ({args.swaps} swaps each)")
    results = []
    rows = request_rows(1)
    for label, flag in (("warmup off", "false"), ("warmup on", "true")):
        firsts, seconds = [], []
        with tempfile.TemporaryDirectory() as scratch:
            base = os.path.join(scratch, args.model_name)
            os.makedirs(base)
            _copy_version(source, base, 1)
            _ensure_warmup_records(os.path.join(base, "1"), signatures)
            flags = [f"--enable_model_warmup={flag}"]
            with served(args.model_name, base, flags, log_path) as (address, _):
                with RecommenderClient(address, args.model_name) as client:
                    client.predict_examples(rows)
                    for version in range(2, 2 + args.swaps):
                        _copy_version(os.path.join(base, "1"), base, version)
                        while dict(client.status()).get(version) != "AVAILABLE":
                            time.sleep(0.05)
                        start = time.perf_counter()
                        _, served_version = client.predict_examples(rows)
                        firsts.append((time.perf_counter() - start) * 1000)
                        assert served_version == version, served_version
                        start = time.perf_counter()
                        client.predict_examples(rows)
                        seconds.append((time.perf_counter() - start) * 1000)
        row = {
            "path": label,
            "first_ms": float(np.median(firsts)),
            "second_ms": float(np.median(seconds)),
        }
        results.append(row)
        print(
            f"{label:<12} first request {row['first_ms']:8.1f} ms (median of {args.swaps}), "
            f"second {row['second_ms']:6.1f} ms",
            flush=True,
        )
    return results


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-base-path", default="runs/local/serving/recommender")
    p.add_argument("--model-name", default="recommender")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--batching-clients", type=int, default=16)
    p.add_argument(
        "--batching-parameters", help="BatchingParameters file (default: TF Serving's defaults)"
    )
    p.add_argument("--swaps", type=int, default=3, help="hot swaps per warmup setting")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument(
        "--sections",
        nargs="+",
        default=["latency", "batching", "warmup"],
        choices=["latency", "batching", "warmup"],
    )
    p.add_argument(
        "--server-in-process",
        action="store_true",
        help="latency: run the server in the benchmark's process (sharing its GIL and cores)",
    )
    p.add_argument("--log", default="bench-serving.log", help="the servers' logs go here")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    store = ModelStore(ServedModel(args.model_name, args.model_base_path), warmup=False)
    loaded = store.poll_once()
    if loaded is None:
        raise SystemExit(
            f"error: no model version under {args.model_base_path}; run the pipeline first"
        )
    print(f"model {args.model_name} version {loaded.version}; server logs in {args.log}")
    results: Dict[str, List[Dict[str, object]]] = {}
    if "latency" in args.sections:
        results["latency"] = latency(args, loaded.signatures[C.SERVING_DEFAULT], args.log)
    if "batching" in args.sections:
        results["batching"] = batching(args, args.log)
    if "warmup" in args.sections:
        results["warmup"] = hot_swap(args, loaded.path, list(loaded.signatures), args.log)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
