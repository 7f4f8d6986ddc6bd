"""How often each item is a training impression: the sampling probability
of a candidate in the retrieval task's in-batch softmax, whose bias the
logQ correction removes (Yi et al., 2019; TFRS ``candidate_sampling_probability``).

Counted over the training split by the catalogue scan; looked up by raw item
id in the input pipeline (outside the Keras graph, so XLA still compiles the
training step). An item the training split never showed gets one impression.
"""

from __future__ import annotations

from typing import Dict, Mapping

import numpy as np
import tensorflow as tf

from trainer import features as F

# The candidate's sampling probability in the model's inputs (not a network input).
ITEM_PROBABILITY = "item_sampling_probability"


class ItemFrequencies(tf.Module):
    """Raw item id -> its share of the training impressions."""

    def __init__(self, counts: Mapping[str, int]):
        super().__init__(name="item_frequencies")
        ids = [str(i) for i in counts]
        values = np.array([max(int(c), 1) for c in counts.values()], np.float64)
        total = float(values.sum()) or 1.0
        self.unseen = 1.0 / total
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(ids or [""], tf.string),
                tf.constant((values / total).astype(np.float32) if ids else [self.unseen]),
            ),
            default_value=self.unseen,
        )

    def add_to(self, batch: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        out = dict(batch)
        out[ITEM_PROBABILITY] = self.table.lookup(tf.reshape(batch[F.ITEM_ID], [-1]))
        return out
