"""``recommend`` never returns an item the request says the user has seen.

The signature is built on a stand-in network (fixed user and catalogue
embeddings) so the exclusion logic is checked against NumPy on generated
catalogues and exclusion lists, without training a model.
"""

import numpy as np
import tensorflow as tf

from trainer import export
from trainer import features as F
from trainer import serving_contract as C
from trainer.pretrained_text import no_pretrained_text


class StandInNetwork(tf.Module):
    """What ``recommend`` reads of the trained network: the user embedding is
    (1, number of characters of the user id)."""

    def __init__(self, catalogue_embeddings: np.ndarray):
        super().__init__()
        self.pretrained_text = no_pretrained_text()
        self.catalog_embeddings = tf.Variable(catalogue_embeddings, dtype=tf.float32)

    def tft_layer(self, raw):
        user_id = tf.reshape(raw[F.USER_ID], [-1])
        return {
            F.USER_ID_XF: tf.cast(tf.strings.length(user_id), tf.float32),
            F.HISTORY_TOKENS_XF: tf.zeros_like(user_id, tf.int64),
            F.HISTORY_ITEM_IDS_XF: tf.fill(tf.stack([tf.size(user_id), 1]), ""),
            F.HISTORY_ITEM_INDEX_XF: tf.fill(tf.stack([tf.size(user_id), 1]), -1),
        }

    def user_model(self, inputs, training=False):
        length = inputs[F.USER_ID_XF]
        return {"embedding": tf.stack([tf.ones_like(length), length], axis=1)}


def _signature(embeddings: np.ndarray, k: int):
    ids = np.array([f"item-{n}" for n in range(len(embeddings))], dtype=object)
    return export._recommend_signature(StandInNetwork(embeddings), {F.ITEM_ID: ids}, k), ids


def _call(recommend, users, history, exclude):
    out = recommend(
        **{
            "features": {
                F.USER_ID: tf.constant(users),
                F.HISTORY_TITLES: tf.constant([""] * len(users)),
                F.USER_PROFILE: tf.constant([""] * len(users)),
                F.HISTORY_ITEM_IDS: tf.constant(history),
                C.EXCLUDE_ITEM_IDS: tf.constant(exclude),
            }
        }
    )
    ids = [[i.decode() for i in row] for row in out[C.ITEM_IDS].numpy()]
    return ids, out[C.SCORES].numpy()


def test_history_and_excluded_items_are_never_recommended():
    embeddings = np.array([[5.0, 0], [4, 0], [3, 0], [2, 0], [1, 0]], np.float32)
    recommend, _ = _signature(embeddings, k=3)
    ids, scores = _call(
        recommend,
        ["u", "u"],
        ["item-0 | not-in-catalogue", ""],
        ["item-2", " item-1 |  | item-0 "],  # spaces and empty entries are ignored
    )
    assert ids == [["item-1", "item-3", "item-4"], ["item-2", "item-3", "item-4"]]
    np.testing.assert_allclose(scores[0], [4, 2, 1])


def test_when_too_few_items_are_left_the_tail_is_empty_ids():
    recommend, _ = _signature(np.array([[3.0, 0], [2, 0], [1, 0]], np.float32), k=3)
    ids, scores = _call(recommend, ["u"], ["item-0 | item-2"], ["item-1 | item-1"])
    assert ids == [["", "", ""]] and (scores == C.EXCLUDED_SCORE).all()
    ids, scores = _call(recommend, ["u"], ["item-1"], [""])
    assert ids == [["item-0", "item-2", ""]] and scores[0, 2] == C.EXCLUDED_SCORE


def test_generated_exclusions_agree_with_numpy():
    rng = np.random.default_rng(7)
    for case in range(20):
        n, k = int(rng.integers(1, 40)), int(rng.integers(1, 12))
        embeddings = rng.normal(size=(n, 2)).astype(np.float32)
        recommend, ids = _signature(embeddings, k)
        users = ["u" * int(rng.integers(1, 6)) for _ in range(int(rng.integers(1, 5)))]
        history, exclude, expected = [], [], []
        for user in users:
            seen = set(rng.choice(ids, size=int(rng.integers(0, n + 1)), replace=True))
            strangers = {f"stranger-{m}" for m in range(int(rng.integers(0, 3)))}
            listed = sorted(seen | strangers)
            cut = int(rng.integers(0, len(listed) + 1))
            history.append(" | ".join(listed[:cut]))
            exclude.append(" | ".join(listed[cut:]))
            scores = embeddings @ np.array([1.0, len(user)], np.float32)
            order = [i for i in np.argsort(-scores, kind="stable") if ids[i] not in seen]
            expected.append([ids[i] for i in order[: min(k, n)]])
        got, _ = _call(recommend, users, history, exclude)
        for row, want in zip(got, expected, strict=True):
            assert row[: len(want)] == want and set(row[len(want) :]) <= {""}, case
