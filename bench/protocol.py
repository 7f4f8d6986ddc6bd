"""The one scoring protocol every model in the quality benchmarks is held to.

On the eval split of the pipeline's own ExampleGen output:

* ``rating_rmse`` over rated eval impressions;
* ``click_auc`` over all eval impressions (``conversion_auc`` likewise, for
  models with a conversion score);
* ``recall_at_<k>`` over clicked eval impressions: a hit when the clicked item
  is among the top k of the whole catalogue (every item of either split),
  **leaving out the items that user clicked before that impression** (in either
  split). Ties count half: the rank is the number of items scored higher plus
  half of those scored the same.

Metrics are computed on named subsets of the eval rows, e.g. ``all`` and
``cold_items`` (impressions of items held out of training entirely).
"""

from __future__ import annotations

import bisect
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from trainer import features as F

KS = (10, 100)
Columns = Mapping[str, np.ndarray]


def auc(labels: np.ndarray, scores: np.ndarray) -> Optional[float]:
    """ROC AUC by the rank-sum formula (ties get average ranks); None without
    both classes."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


class EvalProtocol:
    """The eval rows, the catalogue, and what each user clicked when."""

    def __init__(self, train: Columns, test: Columns, subsets: Mapping[str, np.ndarray]):
        self.train, self.test = train, test
        self.catalogue = sorted(set(train[F.ITEM_ID]) | set(test[F.ITEM_ID]))
        self.users = sorted(set(train[F.USER_ID]) | set(test[F.USER_ID]))
        self.subsets = {name: np.asarray(mask, bool) for name, mask in subsets.items()}
        clicks: Dict[str, List] = {}
        for split in (train, test):
            for user, item, ts, click in zip(
                split[F.USER_ID], split[F.ITEM_ID], split[F.TIMESTAMP], split[F.CLICK]
            ):
                if int(click) == 1:
                    clicks.setdefault(user, []).append((int(ts), item))
        self._clicks = {user: sorted(rows) for user, rows in clicks.items()}
        self._times = {user: [ts for ts, _ in rows] for user, rows in self._clicks.items()}
        self.positives = np.flatnonzero(test[F.CLICK].astype(int) == 1)

    def seen_before(self, row: int) -> List[str]:
        """Items the row's user clicked strictly before the row's impression."""
        user = self.test[F.USER_ID][row]
        cut = bisect.bisect_left(self._times.get(user, []), int(self.test[F.TIMESTAMP][row]))
        return [item for _, item in self._clicks.get(user, [])[:cut]]

    def rank_hits(
        self, rows: np.ndarray, user_scores: np.ndarray, item_index: Mapping[str, int]
    ) -> np.ndarray:
        """Per positive row and k: 1.0 when its item ranks in the top k.

        ``rows``: eval rows (positives); ``user_scores`` [rows, items]: the row's
        user's score of every item, columns in ``item_index`` order."""
        hits = np.zeros((len(rows), len(KS)))
        for j, row in enumerate(rows):
            scores = user_scores[j].astype(np.float64).copy()
            seen = [item_index[i] for i in self.seen_before(row) if i in item_index]
            scores[seen] = -np.inf
            own = scores[item_index[self.test[F.ITEM_ID][row]]]
            rank = (scores > own).sum() + ((scores == own).sum() - 1) / 2
            hits[j] = [rank < k for k in KS]
        return hits

    def top_k_hits(self, rows: np.ndarray, top_items: np.ndarray) -> np.ndarray:
        """``rank_hits`` for a model that returns its top items with the seen
        ones already left out (``recommend`` given ``exclude_item_ids``)."""
        hits = np.zeros((len(rows), len(KS)))
        for j, row in enumerate(rows):
            target = self.test[F.ITEM_ID][row]
            ranked = [i.decode() if isinstance(i, bytes) else i for i in top_items[j]]
            hits[j] = [target in ranked[:k] for k in KS]
        return hits

    def metrics(
        self,
        hits: Optional[np.ndarray],
        click: Optional[np.ndarray] = None,
        rating: Optional[np.ndarray] = None,
        conversion: Optional[np.ndarray] = None,
    ) -> Dict[str, Dict[str, Optional[float]]]:
        """Per subset: every metric the model has scores for.

        ``hits`` [positives, len(KS)] (``rank_hits``); the rest [eval rows]."""
        out: Dict[str, Dict[str, Optional[float]]] = {}
        rated = self.test[F.RATING_WEIGHT].astype(float) > 0
        for name, mask in self.subsets.items():
            values: Dict[str, Optional[float]] = {}
            if rating is not None:
                keep = mask & rated
                err = rating[keep] - self.test[F.RATING][keep].astype(float)
                values["rating_rmse"] = float(np.sqrt(np.mean(err**2))) if keep.any() else None
            if click is not None:
                values["click_auc"] = auc(self.test[F.CLICK][mask].astype(int), click[mask])
            if conversion is not None:
                labels = self.test[F.PURCHASE][mask].astype(int)
                values["conversion_auc"] = auc(labels, conversion[mask])
            if hits is not None:
                in_subset = mask[self.positives]
                for k, column in zip(KS, hits.T, strict=True):
                    values[f"recall_at_{k}"] = (
                        float(column[in_subset].mean()) if in_subset.any() else None
                    )
            values["rows"] = int(mask.sum())
            out[name] = values
        return out


def table_rows(models: Mapping[str, Mapping[str, Optional[float]]], metrics: Sequence[str]):
    """Markdown rows "| model | m1 | m2 |", "-" where a model has no such score."""
    for name, values in models.items():
        cells = [f"{values[m]:.4f}" if values.get(m) is not None else "-" for m in metrics]
        yield f"| {name} | " + " | ".join(cells) + " |"


def score_baseline(model, protocol: EvalProtocol, data) -> Dict[str, Dict[str, Optional[float]]]:
    """A ``bench.baselines`` model under the protocol; a ranking model scores
    each eval row from the items its user clicked before it (``history_scores``)."""
    test = protocol.test
    users = data.users_of(test[F.USER_ID])
    items = data.items_of(test[F.ITEM_ID])
    rating = model.rating(users, items) if model.rates else None
    click = hits = None
    if model.ranks:
        click, hits = np.zeros(len(users)), np.zeros((len(protocol.positives), len(KS)))
        positive = np.full(len(users), -1)
        positive[protocol.positives] = np.arange(len(protocol.positives))
        for part in _chunks(np.arange(len(users)), 2048):
            histories = np.zeros((len(part), len(data.items)), np.float32)
            for j, row in enumerate(part):
                seen = [
                    data.item_index[i] for i in protocol.seen_before(row) if i in data.item_index
                ]
                histories[j, seen] = 1.0
            scores = model.history_scores(histories)
            picked = np.where(items[part] >= 0, items[part], 0)
            own = scores[np.arange(len(picked)), picked]
            click[part] = np.where(items[part] >= 0, own, scores.min(axis=1) - 1)
            clicked = positive[part] >= 0
            if clicked.any():
                hits[positive[part][clicked]] = protocol.rank_hits(
                    part[clicked], scores[clicked], data.item_index
                )
    elif rating is not None:
        click = rating
    return protocol.metrics(hits, click=click, rating=rating)


def _chunks(rows: np.ndarray, size: int) -> Sequence[np.ndarray]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def score_exported_model(
    model_dir: str, protocol: EvalProtocol, batch_size: int = 512
) -> Dict[str, Dict[str, Optional[float]]]:
    """The pushed SavedModel under the protocol: ``predict`` for click,
    conversion and rating, ``recommend`` with the seen items excluded."""
    import tensorflow as tf

    from trainer import serving_contract as C

    model = tf.saved_model.load(model_dir)
    predict, recommend = model.signatures[C.PREDICT], model.signatures[C.RECOMMEND]
    test, n = protocol.test, len(protocol.test[F.USER_ID])
    outputs = {name: np.zeros(n) for name in ("click", "conversion", "rating")}
    for rows in _chunks(np.arange(n), batch_size):
        answer = predict(
            **{
                name: tf.constant(test[name][rows].astype(str))
                for name in predict.structured_input_signature[1]
            }
        )
        for name in outputs:
            outputs[name][rows] = answer[name].numpy()[:, 0]
    hits = []
    for rows in _chunks(protocol.positives, batch_size):
        request = {
            name: tf.constant(test[name][rows].astype(str))
            for name in recommend.structured_input_signature[1]
            if name != C.EXCLUDE_ITEM_IDS
        }
        request[C.EXCLUDE_ITEM_IDS] = tf.constant(
            [F.HISTORY_SEPARATOR.join(protocol.seen_before(row)) for row in rows]
        )
        hits.append(protocol.top_k_hits(rows, recommend(**request)[C.ITEM_IDS].numpy()))
    return protocol.metrics(
        np.concatenate(hits) if hits else np.zeros((0, len(KS))),
        click=outputs["click"],
        rating=outputs["rating"],
        conversion=outputs["conversion"],
    )
