"""Ingestion benchmark: events/s and peak memory of InteractionLogExampleGen's
Beam graph on synthetic logs, on this machine.

    python -m bench.ingestion --events 100000 1000000
    python -m bench.ingestion --events 200000 --users 2000 20000   # memory vs. users

Peak memory is the RSS of this process and its Beam workers together.
"""

from __future__ import annotations

import argparse
import json
import os
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


def make_logs(out_dir: str, events: int, users: int) -> Dict:
    impressions = int(events / EVENTS_PER_IMPRESSION)
    config = synthetic.GeneratorConfig(
        num_users=users,
        num_items=max(400, users // 10),
        num_impressions=impressions,
        num_files=8,
        seed=1,
    )
    return synthetic.ensure_dataset(out_dir, config)


def run_ingestion(input_base: str, out_dir: str, beam_args: List[str]) -> Dict:
    shutil.rmtree(out_dir, ignore_errors=True)
    start = time.perf_counter()
    with PeakMemory() as memory:
        with beam.Pipeline(options=PipelineOptions(beam_args)) as pipeline:
            splits = gen.build_ingestion(
                pipeline, input_base, LogConfig(), out_dir, max_timestamp=int(time.time()) + 86400
            )
            for name, split in splits.items():
                _ = split | f"Write[{name}]" >> example_files.WriteExampleFiles(
                    os.path.join(out_dir, f"Split-{name}")
                )
    seconds = time.perf_counter() - start
    with open(os.path.join(out_dir, gen.REPORT_FILE)) as f:
        report = json.load(f)
    return {
        "seconds": round(seconds, 1),
        "peak_mib": round(memory.peak_mib),
        "events": report["good_event_rows"],
        "examples": report.get("examples_train", 0) + report.get("examples_eval", 0),
        "events_per_s": round(report["good_event_rows"] / seconds),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--users", type=int, nargs="+", default=[10_000])
    parser.add_argument(
        "--mode", choices=["multi_processing", "in_memory"], default="multi_processing"
    )
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "recsys-bench"))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    beam_args = [
        "--runner=DirectRunner",
        *(
            configs.MULTI_PROCESSING_ARGS
            if args.mode == "multi_processing"
            else configs.IN_MEMORY_ARGS
        ),
    ]
    results = []
    print(
        f"{'events':>10} {'users':>7} {'mode':>17} {'seconds':>8} {'events/s':>9} "
        f"{'peak MiB':>9} {'examples':>9}"
    )
    for users in args.users:
        for events in args.events:
            data = os.path.join(args.work_dir, f"logs-{events}-{users}")
            make_logs(data, events, users)
            row = {
                "users": users,
                "mode": args.mode,
                **run_ingestion(data, os.path.join(args.work_dir, "out"), beam_args),
            }
            results.append(row)
            print(
                f"{row['events']:>10} {users:>7} {args.mode:>17} {row['seconds']:>8} "
                f"{row['events_per_s']:>9} {row['peak_mib']:>9} {row['examples']:>9}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
