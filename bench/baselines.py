"""Strong classic baselines, scored exactly as the pipeline's model is.

Every model here is fitted on the train split's impressions and scored on the
eval split with the protocol of ``bench.protocol``: rating RMSE over rated
eval impressions, click AUC over all eval impressions, and recall@K over
clicked eval impressions, ranking the whole catalogue with the items the user
clicked before that impression excluded. The ranking baselines score a user
from the items they clicked before the impression (``history_scores``: the
same history the pipeline's model reads), folded in at scoring time as a
production deployment of them would, not from their training rows alone.

* ``global_mean``: the mean train rating (ratings only).
* ``popularity``: train clicks per item.
* ``biases``: regularised user + item rating biases (alternating closed form).
* ``mf``: matrix factorisation: biased explicit ALS for ratings, implicit
  ALS (Hu, Koren & Volinsky 2008) on clicks for ranking.
* ``ease``: EASE (Steck 2019), the closed-form item-item model on clicks.
* ``tfidf_profile``: the user's mean TF-IDF vector of their train clicks'
  item text, cosine against each item's (the text baseline; scores cold items).
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Sequence

import numpy as np

from trainer import features as F

Columns = Mapping[str, np.ndarray]


class Interactions:
    """Train clicks and ratings as index arrays over the users and catalogue."""

    def __init__(self, train: Columns, items: Sequence[str], users: Sequence[str]):
        self.items = list(items)
        self.users = list(users)
        self.item_index = {item: i for i, item in enumerate(self.items)}
        self.user_index = {user: u for u, user in enumerate(self.users)}
        clicked = train[F.CLICK].astype(int) == 1
        self.click_users = self.users_of(train[F.USER_ID][clicked])
        self.click_items = self.items_of(train[F.ITEM_ID][clicked])
        rated = train[F.RATING_WEIGHT].astype(float) > 0
        self.rating_users = self.users_of(train[F.USER_ID][rated])
        self.rating_items = self.items_of(train[F.ITEM_ID][rated])
        self.ratings = train[F.RATING][rated].astype(np.float64)

    def users_of(self, ids: np.ndarray) -> np.ndarray:
        return np.array([self.user_index.get(u, -1) for u in ids], dtype=np.int64)

    def items_of(self, ids: np.ndarray) -> np.ndarray:
        return np.array([self.item_index.get(i, -1) for i in ids], dtype=np.int64)

    def click_matrix(self) -> np.ndarray:
        """Users x items, 1.0 where the user clicked the item in train."""
        matrix = np.zeros((len(self.users), len(self.items)), np.float32)
        matrix[self.click_users, self.click_items] = 1.0
        return matrix


class Baseline:
    """Per-user item scores (ranking and click) and per-pair ratings."""

    name = "baseline"
    rates = True  # predicts ratings
    ranks = True  # scores items for users

    def user_scores(self, users: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def history_scores(self, histories: np.ndarray) -> np.ndarray:
        """[rows, items] 0/1 of the items clicked before each impression ->
        [rows, items] scores; by default the scores do not depend on the user."""
        return self.user_scores(np.full(len(histories), -1))

    def rating(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class GlobalMean(Baseline):
    name, ranks = "global_mean", False

    def __init__(self, data: Interactions):
        self.mean = float(data.ratings.mean()) if len(data.ratings) else 0.0

    def rating(self, users, items):
        return np.full(len(users), self.mean)


class Popularity(Baseline):
    name, rates = "popularity", False

    def __init__(self, data: Interactions):
        self.counts = np.bincount(data.click_items, minlength=len(data.items)).astype(np.float32)

    def user_scores(self, users):
        return np.tile(self.counts, (len(users), 1))


def fit_biases(
    users: np.ndarray, items: np.ndarray, ratings: np.ndarray, shape, reg: float, sweeps: int = 15
):
    """Mean, user and item biases minimising squared error + reg * (|b_u|^2 + |b_i|^2)."""
    mean = float(ratings.mean()) if len(ratings) else 0.0
    user_bias, item_bias = np.zeros(shape[0]), np.zeros(shape[1])
    for _ in range(sweeps):
        residual = ratings - mean - item_bias[items]
        user_bias = np.bincount(users, residual, shape[0]) / (
            np.bincount(users, minlength=shape[0]) + reg
        )
        residual = ratings - mean - user_bias[users]
        item_bias = np.bincount(items, residual, shape[1]) / (
            np.bincount(items, minlength=shape[1]) + reg
        )
    return mean, user_bias, item_bias


class Biases(Baseline):
    name = "biases"

    def __init__(self, data: Interactions, reg: float = 5.0):
        shape = (len(data.users), len(data.items))
        self.mean, self.user_bias, self.item_bias = fit_biases(
            data.rating_users, data.rating_items, data.ratings, shape, reg
        )

    def rating(self, users, items):
        known_u, known_i = users >= 0, items >= 0
        return (
            self.mean
            + np.where(known_u, self.user_bias[np.maximum(users, 0)], 0.0)
            + np.where(known_i, self.item_bias[np.maximum(items, 0)], 0.0)
        )

    def user_scores(self, users):
        return np.tile(self.item_bias, (len(users), 1))


def als_solve(fixed: np.ndarray, rows: np.ndarray, reg: float, alpha: float) -> np.ndarray:
    """Implicit ALS's least-squares step: each 0/1 row's factors given the
    other side's ``fixed`` factors (also the fold-in of a new user's history)."""
    factors = fixed.shape[1]
    gram, eye = fixed.T @ fixed, reg * np.eye(factors)
    out = np.zeros((rows.shape[0], factors))
    for r in range(rows.shape[0]):
        f = fixed[np.flatnonzero(rows[r])]
        out[r] = np.linalg.solve(gram + alpha * f.T @ f + eye, (1.0 + alpha) * f.sum(axis=0))
    return out


def implicit_als(
    clicks: np.ndarray, factors: int, reg: float, alpha: float, sweeps: int, seed: int
) -> tuple:
    """Implicit-feedback ALS on a dense users x items 0/1 matrix (confidence 1 + alpha)."""
    rng = np.random.default_rng(seed)
    n_users, n_items = clicks.shape
    x = rng.normal(0, 0.01, (n_users, factors))
    y = rng.normal(0, 0.01, (n_items, factors))
    for _ in range(sweeps):
        x = als_solve(y, clicks, reg, alpha)
        y = als_solve(x, clicks.T, reg, alpha)
    return x, y


def explicit_als(
    data: Interactions, factors: int, reg: float, bias_reg: float, sweeps: int, seed: int
):
    """Biased MF on ratings: biases first, then ALS factors on the residual."""
    shape = (len(data.users), len(data.items))
    mean, bu, bi = fit_biases(data.rating_users, data.rating_items, data.ratings, shape, bias_reg)
    residual = data.ratings - mean - bu[data.rating_users] - bi[data.rating_items]
    rng = np.random.default_rng(seed)
    p = rng.normal(0, 0.01, (shape[0], factors))
    q = rng.normal(0, 0.01, (shape[1], factors))
    eye = reg * np.eye(factors)
    by_user = [np.flatnonzero(data.rating_users == u) for u in range(shape[0])]
    by_item = [np.flatnonzero(data.rating_items == i) for i in range(shape[1])]
    for _ in range(sweeps):
        for u, rows in enumerate(by_user):
            f = q[data.rating_items[rows]]
            p[u] = np.linalg.solve(f.T @ f + eye, f.T @ residual[rows])
        for i, rows in enumerate(by_item):
            f = p[data.rating_users[rows]]
            q[i] = np.linalg.solve(f.T @ f + eye, f.T @ residual[rows])
    return mean, bu, bi, p, q


class MatrixFactorization(Baseline):
    name = "mf"

    def __init__(self, data: Interactions, factors: int = 32, bias_reg: float = 5.0, seed: int = 0):
        self.mean, self.bu, self.bi, self.p, self.q = explicit_als(
            data, factors=factors, reg=10.0, bias_reg=bias_reg, sweeps=8, seed=seed
        )
        self.implicit_reg, self.alpha = 1.0, 10.0
        self.x, self.y = implicit_als(
            data.click_matrix(),
            factors=factors,
            reg=self.implicit_reg,
            alpha=self.alpha,
            sweeps=8,
            seed=seed,
        )

    def rating(self, users, items):
        known = (users >= 0) & (items >= 0)
        u, i = np.maximum(users, 0), np.maximum(items, 0)
        dot = np.einsum("nf,nf->n", self.p[u], self.q[i])
        biases = np.where(users >= 0, self.bu[u], 0) + np.where(items >= 0, self.bi[i], 0)
        return self.mean + biases + np.where(known, dot, 0.0)

    def user_scores(self, users):
        return np.where(users[:, None] >= 0, self.x[np.maximum(users, 0)] @ self.y.T, 0.0)

    def history_scores(self, histories):
        return als_solve(self.y, histories, self.implicit_reg, self.alpha) @ self.y.T


class Ease(Baseline):
    name, rates = "ease", False

    def __init__(self, data: Interactions, reg: float = 500.0):
        self.clicks = data.click_matrix()
        gram = (self.clicks.T @ self.clicks).astype(np.float64)
        gram[np.diag_indices_from(gram)] += reg
        inverse = np.linalg.inv(gram)
        self.weights = -inverse / np.diag(inverse)
        self.weights[np.diag_indices_from(self.weights)] = 0.0

    def user_scores(self, users):
        rows = np.where(users[:, None] >= 0, self.clicks[np.maximum(users, 0)], 0.0)
        return rows @ self.weights

    def history_scores(self, histories):
        return histories @ self.weights


class TfidfProfile(Baseline):
    name, rates = "tfidf_profile", False

    def __init__(self, data: Interactions, item_texts: Mapping[str, str]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = [item_texts.get(item, "") for item in data.items]
        self.vectors = TfidfVectorizer(sublinear_tf=True, min_df=1).fit_transform(texts)
        self.profiles = self._profiles(data.click_matrix())

    def _profiles(self, clicks: np.ndarray) -> np.ndarray:
        from sklearn.preprocessing import normalize

        counts = np.maximum(clicks.sum(axis=1, keepdims=True), 1.0)
        return normalize(np.asarray(self.vectors.T @ (clicks / counts).T).T)

    def user_scores(self, users):
        rows = np.where(users[:, None] >= 0, self.profiles[np.maximum(users, 0)], 0.0)
        return np.asarray(self.vectors @ rows.T).T

    def history_scores(self, histories):
        return np.asarray(self.vectors @ self._profiles(histories).T).T


BASELINES: Dict[str, Callable[..., Baseline]] = {
    "global_mean": lambda data, texts: GlobalMean(data),
    "popularity": lambda data, texts: Popularity(data),
    "biases": lambda data, texts: Biases(data),
    "mf": lambda data, texts: MatrixFactorization(data),
    "ease": lambda data, texts: Ease(data),
    "tfidf_profile": lambda data, texts: TfidfProfile(data, texts),
}
