"""The catalogue embedding step: texts/s through the frozen encoder, and the
cache on a re-run (all items unchanged, then a share of them changed).

    python -m bench.text_embedding --items 2000 --changed 0.05

Generates a synthetic catalogue (``datagen``), writes one tf.Example per
item, and runs ``components.text_embedder.embed_items`` three times with one
cache: cold, unchanged, and with ``--changed`` of the titles edited.
"""

from __future__ import annotations

from trainer import keras_env as _keras_env  # noqa: F401  (before TF)

import argparse
import json
import os
import shutil
import tempfile
import time
from typing import Dict, List, Tuple

import tensorflow as tf

from components import text_embedder
from trainer import features as F
from trainer.preset_files import MINILM


def _catalogue(n: int, work: str) -> List[Tuple[str, str, str]]:
    """The synthetic generator's catalogue of ``n`` items (id, title, description)."""
    from datagen import synthetic

    out = os.path.join(work, "data")
    synthetic.generate(out, synthetic.GeneratorConfig(num_items=n, num_impressions=1000))
    with open(os.path.join(out, "items.jsonl")) as f:
        items = [json.loads(line) for line in f]
    return [(i["item_id"], i["title"], i["description"]) for i in items]


def _write(path: str, items) -> str:
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for item, title, description in items:
            feature = {
                name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
                for name, value in (
                    (F.ITEM_ID, item),
                    (F.ITEM_TITLE, title),
                    (F.ITEM_DESCRIPTION, description),
                )
            }
            writer.write(
                tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
            )
    return path


def run(items: int, changed: float, encoder: str, max_length: int) -> Dict[str, Dict]:
    work = tempfile.mkdtemp(prefix="bench-text-embedding-")
    try:
        catalogue = _catalogue(items, work)
        cache = os.path.join(work, "cache")
        files = [_write(os.path.join(work, "a.gz"), catalogue)]
        results = {}
        for name in ("cold", "unchanged", "changed"):
            if name == "changed":
                step = max(1, round(1 / changed))
                edited = [
                    (i, f"{t} (new edition)" if k % step == 0 else t, d)
                    for k, (i, t, d) in enumerate(catalogue)
                ]
                files = [_write(os.path.join(work, "b.gz"), edited)]
            started = time.time()
            report = text_embedder.embed_items(
                files, encoder, cache, os.path.join(work, name), max_length
            )
            report["wall_seconds"] = round(time.time() - started, 1)
            report["cache_hit_rate"] = round(report["cache_hits"] / report["items"], 4)
            results[name] = report
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--changed", type=float, default=0.05)
    parser.add_argument("--encoder", default=MINILM)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args(argv)
    results = run(args.items, args.changed, args.encoder, args.max_length)
    print("| run | items | texts embedded | cache hits | hit rate | wall s | texts/s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['items']} | {r['texts_embedded']} | {r['cache_hits']} | "
            f"{r['cache_hit_rate']:.3f} | {r['wall_seconds']} | {r['texts_per_second']} |"
        )
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
