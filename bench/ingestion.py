"""Ingestion benchmark: events/s, events/s per core and peak memory of
InteractionLogExampleGen on synthetic logs, on this machine.

    python -m bench.ingestion --events 100000 1000000 3000000
    python -m bench.ingestion --events 1000000 --heavy-share 0.1   # one user: 10% of events
    python -m bench.ingestion --events 200000 --users 2000 20000   # memory vs. users
    python -m bench.ingestion --graph-only ...   # the Beam graph alone, no TFX around it
    python -m bench.ingestion --events 1000000 --heavy-share 0.1 --days 330 --key-sizes

By default the component runs as a pipeline runs it (LocalDagRunner, ML
Metadata, the executor, its own Beam pipeline): its seconds count every
start-up. Events/s per core = good events / (seconds x cores the runner
uses: 1 in memory, the worker count with multi-processing); "cpu cores" is
the CPU time of the process and its workers over the wall time. Peak
memory is the RSS of this process and its Beam workers together.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import random
import resource
import shutil
import tempfile
import time
from typing import Dict, List

from trainer import keras_env as _keras_env  # noqa: F401  (before TF)

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from bench.memory import PeakMemory
from components import example_files
from components import log_example_gen as gen
from components.log_config import LogConfig
from datagen import synthetic
from pipeline import configs

EVENTS_PER_IMPRESSION = 1.55  # measured ratio of the default generator
HEAVY_USER = "u-heavy"


def make_logs(out_dir: str, events: int, users: int, days: int = 60) -> Dict:
    impressions = int(events / EVENTS_PER_IMPRESSION)
    config = synthetic.GeneratorConfig(
        num_users=users,
        num_items=max(400, users // 10),
        num_impressions=impressions,
        num_files=8,
        seed=1,
        days=days,
    )
    return synthetic.ensure_dataset(out_dir, config)


def make_heavy_user(source_dir: str, out_dir: str, share: float, seed: int = 1) -> None:
    """A copy of ``source_dir`` where whole sessions move to ``HEAVY_USER``
    until it holds ``share`` of all events."""
    if os.path.exists(os.path.join(out_dir, "done")):
        return
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.copytree(source_dir, out_dir, ignore=shutil.ignore_patterns("events"))
    files = sorted(glob.glob(os.path.join(source_dir, "events", "*")))
    sessions: Dict[str, int] = {}
    for path in files:
        with (gzip.open if path.endswith(".gz") else open)(path, "rt") as f:
            for line in f:
                session = json.loads(line).get("session_id")
                sessions[session] = sessions.get(session, 0) + 1
    total, moved, heavy = sum(sessions.values()), 0, set()
    order = sorted(sessions)
    random.Random(seed).shuffle(order)
    for session in order:
        if moved >= share * total:
            break
        heavy.add(session)
        moved += sessions[session]
    os.makedirs(os.path.join(out_dir, "events"))
    for path in files:
        target = os.path.join(out_dir, "events", os.path.basename(path))
        with (
            (gzip.open if path.endswith(".gz") else open)(path, "rt") as f,
            (gzip.open if target.endswith(".gz") else open)(target, "wt") as out,
        ):
            for line in f:
                row = json.loads(line)
                if row.get("session_id") in heavy:
                    row["user_id"] = HEAVY_USER
                out.write(json.dumps(row) + "\n")
    open(os.path.join(out_dir, "done"), "w").close()


def largest_keys(input_base: str, config: LogConfig) -> Dict[str, int]:
    """Events in the largest key of the example walk: by (user shard, time
    bucket), look-ahead copies included, and by user shard alone (each user
    whole, as before time buckets)."""
    from components import time_buckets as tb

    width, horizon = config.bucket_seconds, config.label_horizon
    by_bucket: Dict[tuple, int] = {}
    by_shard: Dict[int, int] = {}
    for path in sorted(glob.glob(os.path.join(input_base, "events", "*"))):
        with (gzip.open if path.endswith(".gz") else open)(path, "rt") as f:
            for line in f:
                row = json.loads(line)
                shard, ts = tb.shard_of(row["user_id"]), int(row["timestamp"])
                keys = [(shard, tb.bucket_of(ts, width))]
                ahead = tb.ahead_bucket(ts, width, horizon)
                if ahead is not None:
                    keys.append((shard, ahead))
                for key in keys:
                    by_bucket[key] = by_bucket.get(key, 0) + 1
                by_shard[shard] = by_shard.get(shard, 0) + 1
    return {"largest_key": max(by_bucket.values()), "largest_user_shard": max(by_shard.values())}


def _cpu_seconds() -> float:
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _run_graph(input_base: str, out_dir: str, beam_args: List[str]) -> str:
    """The ingestion Beam graph alone; returns the report's path."""
    with beam.Pipeline(options=PipelineOptions(beam_args)) as pipeline:
        splits = gen.build_ingestion(
            pipeline, input_base, LogConfig(), out_dir, max_timestamp=int(time.time()) + 86400
        )
        for name, split in splits.items():
            _ = split | f"Write[{name}]" >> example_files.WriteExampleFiles(
                os.path.join(out_dir, f"Split-{name}")
            )
    return os.path.join(out_dir, gen.REPORT_FILE)


def _run_component(input_base: str, out_dir: str, beam_args: List[str]) -> str:
    """InteractionLogExampleGen alone under LocalDagRunner; returns the report's path."""
    from tfx.orchestration import metadata
    from tfx.orchestration import pipeline as tfx_pipeline
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    component = gen.InteractionLogExampleGen(input_base=input_base, log_config=LogConfig())
    root = os.path.join(out_dir, "pipeline_root")
    LocalDagRunner().run(
        tfx_pipeline.Pipeline(
            pipeline_name="ingestion-bench",
            pipeline_root=root,
            components=[component],
            metadata_connection_config=metadata.sqlite_metadata_connection_config(
                os.path.join(out_dir, "metadata.sqlite")
            ),
            beam_pipeline_args=beam_args,
            enable_cache=False,
        )
    )
    (report,) = glob.glob(os.path.join(root, "InteractionLogExampleGen", "*", "*", gen.REPORT_FILE))
    return report


def run_ingestion(
    input_base: str, out_dir: str, beam_args: List[str], cores: int, graph_only: bool = False
) -> Dict:
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    cpu, start = _cpu_seconds(), time.perf_counter()
    with PeakMemory() as memory:
        run = _run_graph if graph_only else _run_component
        report_path = run(input_base, out_dir, beam_args)
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu
    with open(report_path) as f:
        report = json.load(f)
    events = report["good_event_rows"]
    return {
        "seconds": round(seconds, 1),
        "peak_mib": round(memory.peak_mib),
        "events": events,
        "examples": report.get("examples_train", 0) + report.get("examples_eval", 0),
        "events_per_s": round(events / seconds),
        "cores": cores,
        "events_per_s_per_core": round(events / (seconds * cores)),
        "cpu_cores": round(cpu / seconds, 2),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--users", type=int, nargs="+", default=[10_000])
    parser.add_argument(
        "--heavy-share",
        type=float,
        default=0.0,
        help="move whole sessions to one user until it holds this share of the events",
    )
    parser.add_argument("--mode", choices=["multi_processing", "in_memory"], default="in_memory")
    parser.add_argument("--workers", type=int, default=2, help="with --mode multi_processing")
    parser.add_argument("--graph-only", action="store_true", help="the Beam graph, without TFX")
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "recsys-bench"))
    parser.add_argument("--days", type=int, default=60, help="the logs' time span")
    parser.add_argument(
        "--key-sizes",
        action="store_true",
        help="also count the events of the largest walk key (a second read of the logs)",
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.mode == "multi_processing":
        runner_args, cores = (
            [
                "--direct_running_mode=multi_processing",
                f"--direct_num_workers={args.workers}",
            ],
            args.workers,
        )
    else:
        runner_args, cores = configs.IN_MEMORY_ARGS, 1
    beam_args = ["--runner=DirectRunner", *runner_args]
    results = []
    print(
        f"{'events':>10} {'users':>7} {'heavy':>6} {'mode':>17} {'seconds':>8} {'events/s':>9} "
        f"{'per core':>9} {'cpu cores':>9} {'peak MiB':>9} {'examples':>9}"
    )
    for users in args.users:
        for events in args.events:
            suffix = "" if args.days == 60 else f"-{args.days}d"
            data = os.path.join(args.work_dir, f"logs-{events}-{users}{suffix}")
            make_logs(data, events, users, args.days)
            if args.heavy_share:
                heavy = f"{data}-heavy{args.heavy_share:g}"
                make_heavy_user(data, heavy, args.heavy_share)
                data = heavy
            row = {
                "users": users,
                "heavy_share": args.heavy_share,
                "mode": args.mode,
                "what": "graph" if args.graph_only else "component",
                **run_ingestion(
                    data, os.path.join(args.work_dir, "out"), beam_args, cores, args.graph_only
                ),
            }
            if args.key_sizes:
                row.update(largest_keys(data, LogConfig()))
            results.append(row)
            print(
                f"{row['events']:>10} {users:>7} {args.heavy_share:>6g} {args.mode:>17} "
                f"{row['seconds']:>8} {row['events_per_s']:>9} {row['events_per_s_per_core']:>9} "
                f"{row['cpu_cores']:>9} {row['peak_mib']:>9} {row['examples']:>9}",
                flush=True,
            )
            if args.key_sizes:
                print(
                    f"{'':>10} largest walk key: {row['largest_key']} events "
                    f"(by user shard alone: {row['largest_user_shard']})",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
