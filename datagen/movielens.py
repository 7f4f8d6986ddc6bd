"""MovieLens-100K adapter: the original files -> this pipeline's log format.

Reads ``u.data``, ``u.item``, ``u.user`` and ``u.genre`` from a local path
(the data is never shipped with the project) and writes, as the synthetic
generator does::

    events/part-00000.jsonl   per rating: impression, click, rating, and a
                              purchase (conversion) when the rating is >= 4;
                              plus sampled unrated impressions as negatives
    items.jsonl               title; release date as description; genres as
                              tags, the first genre as category
    users.jsonl               age, gender, occupation
    log_config.json           the LogConfig to ingest it with (--log-config)

Each rated movie counts as clicked. ``negatives_per_rating`` unrated movies
per rating are logged as impressions without a click (at the same time, in
their own session), so the click task has negatives. Deterministic by seed.

    recsys-movielens ../shared/data/movielens-100k data/movielens
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List

import numpy as np

from datagen.synthetic import write_jsonl

# Pass with --log-config; validate with --schema schemas/movielens_schema.pbtxt.
LOG_CONFIG = {"users_pattern": "users.jsonl", "catalog_pattern": "items.jsonl"}
REQUIRED_FILES = ("u.data", "u.item", "u.user", "u.genre")
ENCODING = "latin-1"


def _lines(path: str) -> List[str]:
    with open(path, encoding=ENCODING) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def check_source(source_dir: str) -> None:
    missing = [f for f in REQUIRED_FILES if not os.path.exists(os.path.join(source_dir, f))]
    if missing:
        raise FileNotFoundError(f"MovieLens-100K files {missing} not found in {source_dir!r}")


def read_items(source_dir: str) -> List[Dict]:
    genres = [line.split("|")[0] for line in _lines(os.path.join(source_dir, "u.genre"))]
    items = []
    for line in _lines(os.path.join(source_dir, "u.item")):
        parts = line.split("|")
        flags = parts[5 : 5 + len(genres)]
        names = [g for g, flag in zip(genres, flags) if flag == "1"] or ["unknown"]
        items.append(
            {
                "item_id": parts[0],
                "title": parts[1],
                "description": f"released {parts[2] or 'unknown'}",
                "category": names[0],
                "tags": names,
            }
        )
    return items


def read_users(source_dir: str) -> List[Dict]:
    users = []
    for line in _lines(os.path.join(source_dir, "u.user")):
        user_id, age, gender, occupation, _zip = line.split("|")
        users.append(
            {"user_id": user_id, "age": int(age), "gender": gender, "occupation": occupation}
        )
    return users


def convert(
    source_dir: str,
    out_dir: str,
    negatives_per_rating: int = 1,
    seed: int = 42,
    max_ratings: int | None = None,
) -> Dict:
    """Writes the log files under ``out_dir``; returns counts."""
    check_source(source_dir)
    rng = np.random.default_rng(seed)
    items = read_items(source_dir)
    item_ids = [i["item_id"] for i in items]
    ratings = [line.split("\t") for line in _lines(os.path.join(source_dir, "u.data"))]
    if max_ratings:
        ratings = ratings[:max_ratings]
    rated: Dict[str, set] = {}
    for user, item, _, _ in ratings:
        rated.setdefault(user, set()).add(item)

    events: List[Dict] = []
    for n, (user, item, rating, ts) in enumerate(ratings):
        base = {"user_id": user, "item_id": item, "timestamp": int(ts), "session_id": f"r{n}"}
        events.append({**base, "event_id": f"r{n}-imp", "event_type": "impression"})
        events.append({**base, "event_id": f"r{n}-clk", "event_type": "click"})
        if int(rating) >= 4:
            events.append({**base, "event_id": f"r{n}-buy", "event_type": "purchase"})
        events.append(
            {**base, "event_id": f"r{n}-rat", "event_type": "rating", "rating": int(rating)}
        )
        for k in range(negatives_per_rating):
            other = item_ids[rng.integers(len(item_ids))]
            while other in rated[user]:
                other = item_ids[rng.integers(len(item_ids))]
            events.append(
                {
                    "user_id": user,
                    "item_id": other,
                    "timestamp": int(ts),
                    "session_id": f"r{n}-n{k}",
                    "event_id": f"r{n}-neg{k}",
                    "event_type": "impression",
                }
            )
    events.sort(key=lambda e: (e["timestamp"], e["event_id"]))
    os.makedirs(os.path.join(out_dir, "events"), exist_ok=True)
    write_jsonl(os.path.join(out_dir, "events", "part-00000.jsonl"), events)
    write_jsonl(os.path.join(out_dir, "items.jsonl"), items)
    write_jsonl(os.path.join(out_dir, "users.jsonl"), read_users(source_dir))
    with open(os.path.join(out_dir, "log_config.json"), "w") as f:
        json.dump(LOG_CONFIG, f, indent=2)
    counts = {
        "ratings": len(ratings),
        "events": len(events),
        "items": len(items),
        "conversions": sum(int(r[2]) >= 4 for r in ratings),
    }
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(
            {
                "source": "movielens-100k",
                "negatives_per_rating": negatives_per_rating,
                "seed": seed,
                **counts,
            },
            f,
            indent=2,
        )
    return counts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source_dir", help="folder with u.data, u.item, u.user, u.genre")
    parser.add_argument("out_dir")
    parser.add_argument("--negatives-per-rating", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    print(json.dumps(convert(args.source_dir, args.out_dir, args.negatives_per_rating, args.seed)))


if __name__ == "__main__":
    main()
