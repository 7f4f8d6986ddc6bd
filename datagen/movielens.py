"""MovieLens-100K: the original files -> this pipeline's inputs.

The ratings need no code: ``u.data`` (tab-separated, no header) is ingested
as it is, by the log config this writes (``LOG_CONFIG``): every rating row
implies an impression, a click and the rating, and a purchase (conversion)
when the rating is >= 4; event ids come from a hash of the row; one unrated
movie per rating, uniformly drawn and never one the user rated, is sampled as
an unclicked impression, so the click task has negatives (deterministic by
seed). Only the tables whose layout a config cannot express are converted::

    events/u.data       the ratings, copied
    items.jsonl         title; release date as description; the genre flag
                        columns as genres: the first is the category, all are tags
    users.jsonl         age, gender, occupation (not the zip code)
    log_config.json     the LogConfig to ingest it with (--log-config)

    recsys-movielens ../shared/data/movielens-100k data/movielens
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Dict, List

from datagen.synthetic import write_jsonl

# Pass with --log-config; validate with --schema schemas/movielens_schema.pbtxt.
LOG_CONFIG: Dict[str, Any] = {
    "events_pattern": "events/u.data",
    "events_format": "csv",
    "csv_delimiters": {"events": "\t"},
    "csv_columns": {"events": ["user_id", "item_id", "rating", "timestamp"]},
    "catalog_pattern": "items.jsonl",
    "users_pattern": "users.jsonl",
    "row_implies": ["impression", "click", "rating"],
    "purchase_min_rating": 4,
    "derive_event_ids": True,
    "negatives_per_positive": 1,
}
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


def _rating(line: str) -> float:
    """A u.data line's rating; 0 for a malformed line (ingestion dead-letters it)."""
    try:
        return float(line.split("\t")[2])
    except (IndexError, ValueError):
        return 0.0


def convert(
    source_dir: str,
    out_dir: str,
    negatives_per_rating: int = 1,
    seed: int = 42,
    max_ratings: int | None = None,
) -> Dict:
    """Writes the inputs and their log config under ``out_dir``; returns counts."""
    check_source(source_dir)
    items = read_items(source_dir)
    ratings = _lines(os.path.join(source_dir, "u.data"))[:max_ratings]
    os.makedirs(os.path.join(out_dir, "events"), exist_ok=True)
    with open(os.path.join(out_dir, "events", "u.data"), "w") as f:
        f.writelines(line + "\n" for line in ratings)
    write_jsonl(os.path.join(out_dir, "items.jsonl"), items)
    write_jsonl(os.path.join(out_dir, "users.jsonl"), read_users(source_dir))
    log_config = {
        **LOG_CONFIG,
        "negatives_per_positive": negatives_per_rating,
        "negative_seed": seed,
    }
    with open(os.path.join(out_dir, "log_config.json"), "w") as f:
        json.dump(log_config, f, indent=2)
    counts = {
        "ratings": len(ratings),
        "items": len(items),
        "conversions": sum(_rating(line) >= 4 for line in ratings),
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
