"""The retrieval task's logQ correction on a hand-made batch, and the item
frequencies it reads."""

from trainer import keras_env  # noqa: F401  (must run before TF)

import numpy as np
import tensorflow as tf

from trainer import features as F
from trainer import task_kinds
from trainer.config import ModelConfig
from trainer.data import ITEM_INPUTS, ITEM_KEY, USER_INPUTS
from trainer.item_frequency import ITEM_PROBABILITY, ItemFrequencies

USERS = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], np.float32)
ITEMS = np.array([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]], np.float32)
PROBABILITY = np.array([0.7, 0.2, 0.1], np.float32)
TEMPERATURE = 0.5


class Towers:
    """Fixed embeddings for the three users and their three items."""

    def user_model(self, inputs, training=False):
        return {"embedding": tf.constant(USERS)}

    def item_model(self, inputs, training=False):
        return {"embedding": tf.constant(ITEMS)}


def _losses(logq: bool) -> np.ndarray:
    config = ModelConfig(retrieval_temperature=TEMPERATURE, logq_correction=logq)
    head = task_kinds.kind_of(F.task("retrieval"))
    head.prepare_training(config)
    inputs = {name: tf.zeros([3]) for name in (*USER_INPUTS, *ITEM_INPUTS)}
    inputs[ITEM_KEY] = tf.constant([11, 12, 13], tf.int64)
    inputs[ITEM_PROBABILITY] = tf.constant(PROBABILITY)
    step = task_kinds.Step(Towers(), inputs, {}, {}, {}, training=True)
    return head.per_example_loss(step).numpy()


def _expected(correction: np.ndarray) -> np.ndarray:
    logits = USERS @ ITEMS.T / TEMPERATURE - correction[None, :]
    logits -= logits.max(axis=1, keepdims=True)
    return -np.log(np.exp(np.diag(logits)) / np.exp(logits).sum(axis=1))


def test_logq_subtracts_the_log_sampling_probability_from_each_candidate():
    np.testing.assert_allclose(_losses(logq=False), _expected(np.zeros(3)), rtol=1e-5)
    corrected = _losses(logq=True)
    np.testing.assert_allclose(corrected, _expected(np.log(PROBABILITY)), rtol=1e-5)
    # The rarest item's positive gains the most (-log 0.1) over its negatives:
    # its loss falls; the most sampled item's (-log 0.7) rises.
    plain = _losses(logq=False)
    assert corrected[2] < plain[2] and corrected[0] > plain[0]


def test_item_frequencies_are_shares_of_the_training_impressions():
    frequencies = ItemFrequencies({"a": 6, "b": 3, "c": 0})
    got = frequencies.add_to({F.ITEM_ID: tf.constant([["a"], ["b"], ["c"], ["never"]])})
    # "c" (no training impression) and unknown ids count as one impression.
    np.testing.assert_allclose(got[ITEM_PROBABILITY].numpy(), [0.6, 0.3, 0.1, 0.1], rtol=1e-6)
    empty = ItemFrequencies({}).add_to({F.ITEM_ID: tf.constant(["x"])})
    assert empty[ITEM_PROBABILITY].numpy().tolist() == [1.0]
