"""Shared fixtures: small generated logs and hand-made log directories."""

import json
import os

from trainer import keras_env as _keras_env  # noqa: F401  (before TF)

import pytest

from datagen import synthetic


@pytest.fixture(scope="session")
def small_logs(tmp_path_factory):
    """A few thousand synthetic events (shared, read-only)."""
    out = tmp_path_factory.mktemp("logs")
    synthetic.generate(
        str(out),
        synthetic.GeneratorConfig(num_users=120, num_items=150, num_impressions=3000, seed=7),
    )
    return str(out)


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")


CATALOG = [
    {"item_id": "a", "title": "Jazz piano", "description": "song album", "category": "music"},
    {"item_id": "b", "title": "Tennis match", "description": "team goal", "category": "sports"},
    {
        "item_id": "c",
        "title": "Pasta recipe",
        "description": "kitchen sauce",
        "category": "cooking",
    },
]


def event(event_id, kind, item, ts, user="u1", session="s1", **extra):
    return {
        "event_id": event_id,
        "event_type": kind,
        "user_id": user,
        "item_id": item,
        "timestamp": ts,
        "session_id": session,
        **extra,
    }
