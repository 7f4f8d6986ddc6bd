"""The synthetic log generator: deterministic, complete and learnable."""

import collections
import filecmp
import json
import os

import numpy as np

from datagen import synthetic


def _read(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _events(out):
    rows = []
    for name in sorted(os.listdir(os.path.join(out, "events"))):
        rows.extend(_read(os.path.join(out, "events", name)))
    return rows


def _config(seed=3):
    return synthetic.GeneratorConfig(num_users=80, num_items=60, num_impressions=2000, seed=seed)


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    synthetic.generate(a, _config(3))
    synthetic.generate(b, _config(3))
    synthetic.generate(c, _config(4))
    for rel in ["events/part-00000.jsonl", "events/part-00001.jsonl", "items.jsonl", "truth.jsonl"]:
        assert filecmp.cmp(os.path.join(a, rel), os.path.join(b, rel), shallow=False), rel
    assert not filecmp.cmp(
        os.path.join(a, "items.jsonl"), os.path.join(c, "items.jsonl"), shallow=False
    )


def test_logs_are_complete_and_time_ordered(tmp_path):
    out = str(tmp_path)
    manifest = synthetic.generate(out, _config())
    events = _events(out)
    counts = collections.Counter(e["event_type"] for e in events)
    assert counts == manifest["event_counts"]
    assert counts["impression"] == 2000 and counts["click"] > 0 and counts["purchase"] > 0
    assert all(1 <= e["rating"] <= 5 for e in events if e["event_type"] == "rating")
    timestamps = [e["timestamp"] for e in events]
    assert timestamps == sorted(timestamps)
    items = {i["item_id"] for i in _read(os.path.join(out, "items.jsonl"))}
    assert {e["item_id"] for e in events} <= items
    truth = _read(os.path.join(out, "truth.jsonl"))
    impressions = {e["event_id"] for e in events if e["event_type"] == "impression"}
    assert {t["event_id"] for t in truth} == impressions
    assert all(0 < t["click_probability"] < 1 for t in truth)


def test_item_text_reveals_category(tmp_path):
    out = str(tmp_path)
    synthetic.generate(out, _config())
    word_to_cat = {w: c for c, words in synthetic.CATEGORY_WORDS.items() for w in words}
    correct = 0
    items = _read(os.path.join(out, "items.jsonl"))
    for item in items:
        words = (item["title"] + " " + item["description"]).lower().replace(".", "").split()
        votes = collections.Counter(word_to_cat[w] for w in words if w in word_to_cat)
        correct += votes.most_common(1)[0][0] == item["category"]
    assert correct / len(items) > 0.9


def test_clicks_follow_true_probabilities_and_beat_chance(tmp_path):
    out = str(tmp_path)
    manifest = synthetic.generate(out, _config())
    assert manifest["bayes_click_auc"] > 0.7
    events = _events(out)
    clicked = {(e["session_id"], e["item_id"]) for e in events if e["event_type"] == "click"}
    imp = {
        e["event_id"]: (e["session_id"], e["item_id"])
        for e in events
        if e["event_type"] == "impression"
    }
    truth = _read(os.path.join(out, "truth.jsonl"))
    probs = np.array([t["click_probability"] for t in truth])
    labels = np.array([imp[t["event_id"]] in clicked for t in truth])
    # Calibrated: realised click rate matches the mean true probability.
    assert abs(labels.mean() - probs.mean()) < 0.03


def test_users_click_their_favourite_categories_more(tmp_path):
    out = str(tmp_path)
    synthetic.generate(out, _config())
    events = _events(out)
    category = {i["item_id"]: i["category"] for i in _read(os.path.join(out, "items.jsonl"))}
    per_user = collections.defaultdict(collections.Counter)
    for e in events:
        if e["event_type"] == "click":
            per_user[e["user_id"]][category[e["item_id"]]] += 1
    top_share = [
        c.most_common(1)[0][1] / sum(c.values()) for c in per_user.values() if sum(c.values()) >= 10
    ]
    # With 8 categories, no structure would give a top share near 1/8.
    assert np.mean(top_share) > 0.35


def test_ensure_dataset_reuses_matching_output(tmp_path):
    out = str(tmp_path)
    first = synthetic.ensure_dataset(out, _config())
    mtime = os.path.getmtime(os.path.join(out, "items.jsonl"))
    assert synthetic.ensure_dataset(out, _config()) == first
    assert os.path.getmtime(os.path.join(out, "items.jsonl")) == mtime
    synthetic.ensure_dataset(out, _config(seed=9))
    assert json.load(open(os.path.join(out, "manifest.json")))["config"]["seed"] == 9
