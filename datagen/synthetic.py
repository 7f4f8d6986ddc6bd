"""Deterministic synthetic interaction logs with learnable structure.

Writes what a recommender service would log, under one directory::

    events/part-00000.jsonl ...   impression, click, purchase and rating events
    items.jsonl                   the item catalogue (title, description, category)
    truth.jsonl                   per impression, the true click probability
    manifest.json                 generator settings and summary figures

Structure a model can learn: every user has interests over categories, item
text is drawn mostly from its category's words, the click probability rises
with the user's interest in the item's category and the item's quality, and
ratings follow interest and quality. ``truth.jsonl`` lets model AUC be compared
with the Bayes-optimal AUC.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from typing import Dict, List

import numpy as np

CATEGORY_WORDS: Dict[str, List[str]] = {
    "music": "guitar piano song album concert melody rhythm band jazz vinyl chorus drum".split(),
    "sports": "football tennis match team goal league coach stadium sprint trophy racket score".split(),
    "cooking": "recipe pasta kitchen bake spice sauce oven grill dessert chef flavor soup".split(),
    "travel": "journey island hotel flight beach mountain passport museum route cruise hiking city".split(),
    "science": "physics quantum galaxy molecule experiment theory planet cell energy laboratory genome atom".split(),
    "fashion": "dress jacket style runway denim fabric sneaker designer boutique silk trend collar".split(),
    "gaming": "console quest level player arcade dungeon puzzle strategy controller pixel boss multiplayer".split(),
    "finance": "budget invest stock savings market loan credit portfolio tax crypto dividend bank".split(),
}
FILLER_WORDS = (
    "the new best guide complete ultimate classic modern daily simple "
    "essential deluxe edition collection series volume"
).split()
EPOCH_START = 1767225600  # 2026-01-01T00:00:00Z


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Size and shape of the generated logs."""

    num_users: int = 500
    num_items: int = 400
    num_impressions: int = 20_000
    impressions_per_session: int = 8
    days: int = 60
    num_files: int = 2
    seed: int = 42


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _item_text(rng: np.random.Generator, category: str, categories: List[str]):
    own = CATEGORY_WORDS[category]

    def words(n: int) -> List[str]:
        out = []
        for _ in range(n):
            r = rng.random()
            if r < 0.75:
                out.append(own[rng.integers(len(own))])
            elif r < 0.9:
                out.append(FILLER_WORDS[rng.integers(len(FILLER_WORDS))])
            else:  # a little noise from another category
                other = CATEGORY_WORDS[categories[rng.integers(len(categories))]]
                out.append(other[rng.integers(len(other))])
        return out

    title = " ".join(words(3)).capitalize()
    description = " ".join(words(10)) + "."
    return title, description


def _pick_item(
    rng: np.random.Generator, interest: np.ndarray, items_by_cat: List[np.ndarray], num_items: int
) -> int:
    if rng.random() < 0.5:
        candidates = items_by_cat[rng.choice(len(interest), p=interest)]
        if len(candidates):
            return int(rng.choice(candidates))
    return int(rng.integers(num_items))


def generate(out_dir: str, config: GeneratorConfig = GeneratorConfig()) -> Dict:
    """Writes a synthetic log under ``out_dir`` and returns the manifest."""
    rng = np.random.default_rng(config.seed)
    categories = sorted(CATEGORY_WORDS)
    n_cat = len(categories)

    item_cat = rng.integers(n_cat, size=config.num_items)
    item_quality = rng.normal(0.0, 0.7, size=config.num_items)
    items = []
    for i in range(config.num_items):
        title, description = _item_text(rng, categories[item_cat[i]], categories)
        items.append(
            {
                "item_id": f"i{i:05d}",
                "title": title,
                "description": description,
                "category": categories[item_cat[i]],
            }
        )

    interests = rng.dirichlet(np.full(n_cat, 0.3), size=config.num_users)
    user_bias = rng.normal(0.0, 0.4, size=config.num_users)
    items_by_cat = [np.flatnonzero(item_cat == c) for c in range(n_cat)]

    events: List[Dict] = []
    truth: List[Dict] = []
    n_sessions = max(1, config.num_impressions // config.impressions_per_session)
    session_users = rng.integers(config.num_users, size=n_sessions)
    session_starts = np.sort(rng.integers(0, config.days * 86400, size=n_sessions))
    event_seq = 0

    def new_event(kind: str, user: int, item: int, ts: int, session: str, **extra):
        nonlocal event_seq
        event_seq += 1
        ev = {
            "event_id": f"e{event_seq:09d}",
            "event_type": kind,
            "user_id": f"u{user:05d}",
            "item_id": f"i{item:05d}",
            "timestamp": int(EPOCH_START + ts),
            "session_id": session,
        }
        ev.update(extra)
        events.append(ev)
        return ev

    for s in range(n_sessions):
        user = int(session_users[s])
        session = f"s{s:08d}"
        ts = int(session_starts[s])
        shown = set()
        # Half the slate follows the user's interests, half is exploration;
        # an item is shown at most once per session.
        for _ in range(min(config.impressions_per_session, config.num_items)):
            item = _pick_item(rng, interests[user], items_by_cat, config.num_items)
            while item in shown:
                item = int(rng.integers(config.num_items))
            shown.add(item)
            affinity = interests[user, item_cat[item]]
            p_click = float(_sigmoid(-2.2 + 5.0 * affinity + item_quality[item] + user_bias[user]))
            ts += int(rng.integers(1, 30))
            imp = new_event("impression", user, item, ts, session)
            truth.append({"event_id": imp["event_id"], "click_probability": round(p_click, 6)})
            if rng.random() < p_click:
                new_event("click", user, item, ts + int(rng.integers(1, 20)), session)
                p_buy = float(_sigmoid(-2.0 + 3.0 * affinity + item_quality[item]))
                if rng.random() < p_buy:
                    buy_ts = ts + int(rng.integers(30, 600))
                    new_event("purchase", user, item, buy_ts, session)
                    if rng.random() < 0.7:
                        latent = 1.0 + 4.0 * _sigmoid(
                            -1.0 + 4.0 * affinity + 1.2 * item_quality[item] + rng.normal(0, 0.5)
                        )
                        rating = int(min(5, max(1, round(latent))))
                        new_event(
                            "rating",
                            user,
                            item,
                            buy_ts + int(rng.integers(60, 86400)),
                            session,
                            rating=rating,
                        )

    events.sort(key=lambda e: (e["timestamp"], e["event_id"]))
    os.makedirs(os.path.join(out_dir, "events"), exist_ok=True)
    per_file = math.ceil(len(events) / config.num_files)
    for f in range(config.num_files):
        path = os.path.join(out_dir, "events", f"part-{f:05d}.jsonl")
        write_jsonl(path, events[f * per_file : (f + 1) * per_file])
    write_jsonl(os.path.join(out_dir, "items.jsonl"), items)
    write_jsonl(os.path.join(out_dir, "truth.jsonl"), truth)

    counts: Dict[str, int] = {}
    for e in events:
        counts[e["event_type"]] = counts.get(e["event_type"], 0) + 1
    clicked = {
        (e["session_id"], e["item_id"], e["user_id"]) for e in events if e["event_type"] == "click"
    }
    manifest = {
        "config": dataclasses.asdict(config),
        "event_counts": counts,
        "bayes_click_auc": bayes_click_auc(events, truth, clicked),
    }
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    return manifest


def bayes_click_auc(events: List[Dict], truth: List[Dict], clicked) -> float:
    """AUC of the true click probabilities against the realised clicks."""
    by_id = {e["event_id"]: e for e in events if e["event_type"] == "impression"}
    probs = np.array([t["click_probability"] for t in truth])
    labels = np.array(
        [
            (
                by_id[t["event_id"]]["session_id"],
                by_id[t["event_id"]]["item_id"],
                by_id[t["event_id"]]["user_id"],
            )
            in clicked
            for t in truth
        ]
    )
    return round(roc_auc(labels, probs), 4)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Rank-based ROC AUC (ties averaged)."""
    from scipy.stats import rankdata  # scipy ships with the stack

    labels = labels.astype(bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def write_jsonl(path: str, rows: List[Dict]) -> None:
    """Writes rows as JSON Lines atomically (temp file, then rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
    os.replace(tmp, path)


def ensure_dataset(out_dir: str, config: GeneratorConfig = GeneratorConfig()) -> Dict:
    """Generates the dataset unless ``out_dir`` already holds one from ``config``."""
    manifest_path = os.path.join(out_dir, "manifest.json")
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
        if manifest.get("config") == dataclasses.asdict(config):
            return manifest
    return generate(out_dir, config)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    defaults = GeneratorConfig()
    for field in dataclasses.fields(GeneratorConfig):
        parser.add_argument(
            f"--{field.name.replace('_', '-')}", type=int, default=getattr(defaults, field.name)
        )
    args = vars(parser.parse_args(argv))
    out_dir = args.pop("out_dir")
    manifest = generate(out_dir, GeneratorConfig(**args))
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
