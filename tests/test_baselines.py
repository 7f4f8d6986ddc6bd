"""The quality benchmark's baselines and protocol on hand-made data, against
values worked out by hand."""

import numpy as np
import pytest

from bench import baselines as B
from bench.protocol import KS, EvalProtocol, auc, score_baseline
from trainer import features as F


def split(rows):
    """(user, item, timestamp, click, rating or None) -> the columns read_split gives."""
    user, item, ts, click, rating = zip(*rows)
    return {
        F.USER_ID: np.array(user),
        F.ITEM_ID: np.array(item),
        F.TIMESTAMP: np.array(ts),
        F.CLICK: np.array(click),
        F.PURCHASE: np.zeros(len(rows), int),
        F.RATING: np.array([r or 0.0 for r in rating]),
        F.RATING_WEIGHT: np.array([0.0 if r is None else 1.0 for r in rating]),
    }


TRAIN = split(
    [
        ("u1", "a", 1, 1, 4.0),
        ("u1", "b", 2, 1, 2.0),
        ("u2", "a", 1, 1, 5.0),
        ("u2", "c", 2, 0, None),
    ]
)
TEXTS = {"a": "jazz piano", "b": "tennis match", "c": "jazz guitar"}


def interactions(train=TRAIN):
    return B.Interactions(train, ["a", "b", "c"], ["u1", "u2"])


def test_global_mean_and_popularity():
    data = interactions()
    assert B.GlobalMean(data).rating(np.array([0]), np.array([2]))[0] == pytest.approx(11 / 3)
    np.testing.assert_array_equal(B.Popularity(data).user_scores(np.array([1])), [[2, 1, 0]])


def test_biases_recover_an_additive_matrix_and_shrink_with_regularisation():
    # r = 3.5 + b_u + b_i exactly: u1 (+0.5), u2 (-0.5); a (+1), b (-1).
    train = split(
        [("u1", "a", 1, 1, 5.0), ("u1", "b", 1, 1, 3.0), ("u2", "a", 1, 1, 4.0),
         ("u2", "b", 1, 1, 2.0)]
    )  # fmt: skip
    data = interactions(train)
    users, items = data.users_of(train[F.USER_ID]), data.items_of(train[F.ITEM_ID])
    exact = B.Biases(data, reg=1e-9)
    np.testing.assert_allclose(exact.rating(users, items), train[F.RATING], atol=1e-6)
    assert exact.rating(np.array([-1]), np.array([-1]))[0] == pytest.approx(3.5)  # unknowns
    shrunk = B.Biases(data, reg=1e9)
    np.testing.assert_allclose(shrunk.rating(users, items), 3.5, atol=1e-6)
    mf = B.MatrixFactorization(data, factors=2, bias_reg=1e-9)
    np.testing.assert_allclose(mf.rating(users, items), train[F.RATING], atol=0.05)


def test_ease_weights_by_hand():
    # X = [[1, 1, 0], [1, 0, 0]], lambda 1: G^-1 = [[2, -1, 0], [-1, 3, 0], [0, 0, 5]] / 5,
    # B_ab = 1/3, B_ba = 1/2, zero diagonal.
    ease = B.Ease(interactions(), reg=1.0)
    np.testing.assert_allclose(ease.weights, [[0, 1 / 3, 0], [1 / 2, 0, 0], [0, 0, 0]], atol=1e-9)
    np.testing.assert_allclose(ease.user_scores(np.array([0, 1])), [[0.5, 1 / 3, 0], [0, 1 / 3, 0]])
    # A history is folded in: a user unseen in training who clicked "a" scores like u2.
    np.testing.assert_allclose(ease.history_scores(np.array([[1.0, 0, 0]])), [[0, 1 / 3, 0]])


def test_tfidf_profile_by_hand():
    # Smooth idf over 3 texts: jazz ln(4/3)+1, piano and guitar ln(2)+1; u2 clicked only "a".
    jazz, other = np.log(4 / 3) + 1, np.log(2) + 1
    scores = B.TfidfProfile(interactions(), TEXTS).user_scores(np.array([1]))
    np.testing.assert_allclose(scores, [[1.0, 0.0, jazz**2 / (jazz**2 + other**2)]], atol=1e-6)
    folded = B.TfidfProfile(interactions(), TEXTS).history_scores(np.array([[1.0, 0, 0]]))
    np.testing.assert_allclose(folded, scores, atol=1e-6)


def test_recall_leaves_out_what_the_user_clicked_before_and_ties_count_half():
    test = split(
        [
            ("u1", "c", 5, 1, None),  # u1 clicked a and b before: only c is left, rank 0
            ("u2", "b", 5, 1, None),  # u2 clicked a before; b ties c
            ("u2", "c", 6, 0, None),
        ]
    )
    protocol = EvalProtocol(TRAIN, test, {"all": np.ones(3, bool)})
    assert protocol.seen_before(0) == ["a", "b"] and protocol.seen_before(2) == ["a", "b"]
    index = {"a": 0, "b": 1, "c": 2}
    scores = np.array([[9.0, 9.0, 0.0], [9.0, 1.0, 1.0]])
    hits = protocol.rank_hits(protocol.positives, scores, index)
    np.testing.assert_array_equal(hits[:, 0], [1, 1])  # ranks 0 and 0.5: both under any k
    assert KS == (10, 100)
    top = protocol.top_k_hits(protocol.positives, np.array([[b"c"], [b"c"]]))
    np.testing.assert_array_equal(top[:, 0], [1, 0])


def test_every_baseline_scores_every_metric_and_cold_items_are_scored_by_text_only():
    test = split([("u2", "a", 5, 1, 3.0), ("u2", "c", 6, 1, 4.0), ("u1", "c", 7, 0, None)])
    cold = test[F.ITEM_ID] == "c"
    protocol = EvalProtocol(TRAIN, test, {"all": np.ones(3, bool), "cold_items": cold})
    data = B.Interactions(TRAIN, protocol.catalogue, protocol.users)
    results = {name: score_baseline(make(data, TEXTS), protocol, data)
               for name, make in B.BASELINES.items()}  # fmt: skip
    assert set(results["biases"]["all"]) == {
        "rating_rmse", "click_auc", "recall_at_10", "recall_at_100", "rows"
    }  # fmt: skip
    assert set(results["ease"]["all"]) == {"click_auc", "recall_at_10", "recall_at_100", "rows"}
    assert set(results["global_mean"]["all"]) == {"rating_rmse", "click_auc", "rows"}
    assert results["global_mean"]["all"]["rating_rmse"] == pytest.approx(
        np.sqrt(((3 - 11 / 3) ** 2 + (4 - 11 / 3) ** 2) / 2)
    )
    # Before "c", u2 clicked only "jazz piano" (twice), nearer "jazz guitar" than u1's
    # mean of it and "tennis match".
    assert results["tfidf_profile"]["cold_items"]["click_auc"] == 1.0
    assert auc(np.array([1, 1]), np.array([0.1, 0.2])) is None
