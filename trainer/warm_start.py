"""Warm start: a new Trainer run begins from the last blessed model's weights.

The base model (TFX's ``base_model``, from the latest-blessed-model
resolver) is a SavedModel this code exported, with the Transform
vocabularies it was trained on in its ``assets/``. Its weights are read
into a network built with the same config and *its* vocabulary sizes, then
copied into the new network weight by weight (same code, same order):

- a weight indexed by a vocabulary (``model.vocabulary_axes``: id
  embeddings and biases, the token embedding, the per-category heads) keeps
  the rows (or columns) of every id, token or category both vocabularies
  know, wherever the new vocabulary puts it; entries only the new one has
  keep their fresh initialisation; the out-of-vocabulary row is copied;
- every other weight is copied when its shape is unchanged.

A base model that does not fit (another config, another architecture) is
skipped with the reason logged: the run trains from scratch.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainer import features as F
from trainer.config import ModelConfig
from trainer.model import build_network, vocabulary_axes

VOCABULARIES = (*F.ID_VOCABS.values(), F.TEXT_VOCAB)
# Rows before a vocabulary's first entry: the text ids keep 0 for padding
# and 1 for unknown tokens; an id vocabulary's unknown bucket comes after it.
_LEADING_ROWS = {F.TEXT_VOCAB: 2}


@dataclasses.dataclass
class WarmStartReport:
    """What a warm start took over from the base model."""

    base_model: str
    copied: int = 0
    remapped: Dict[str, Tuple[int, int]] = dataclasses.field(default_factory=dict)
    skipped: List[str] = dataclasses.field(default_factory=list)
    reason: Optional[str] = None  # why nothing was taken over

    @property
    def applied(self) -> bool:
        return self.reason is None

    def summary(self) -> str:
        if not self.applied:
            return f"warm start skipped ({self.reason}); training from scratch"
        known = ", ".join(
            f"{vocab} {kept}/{total} known"
            for vocab, (kept, total) in sorted(self.remapped.items())
        )
        return (
            f"warm-started from {self.base_model}: {self.copied} weights taken over ({known})"
            + (f"; {len(self.skipped)} reshaped weights left new" if self.skipped else "")
        )


def read_vocabularies(export_dir: str) -> Dict[str, List[str]]:
    """The Transform vocabularies in an exported model's ``assets/``."""
    vocabularies = {}
    for name in VOCABULARIES:
        path = os.path.join(export_dir, "assets", name)
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"{path}: the base model has no {name!r} vocabulary")
        with tf.io.gfile.GFile(path, "rb") as f:
            vocabularies[name] = f.read().decode("utf-8").splitlines()
    return vocabularies


def vocabulary_sizes(
    vocabularies: Mapping[str, Sequence[str]], sizes: Mapping[str, int]
) -> Dict[str, int]:
    """``sizes`` (``task.vocab_sizes``) with the tables sized for ``vocabularies``."""
    out = dict(sizes)
    for raw, vocab in F.ID_VOCABS.items():
        out[F.transformed_name(raw)] = len(vocabularies[vocab]) + 1  # + the unknown bucket
    out[F.TEXT_VOCAB] = len(vocabularies[F.TEXT_VOCAB]) + _LEADING_ROWS[F.TEXT_VOCAB]
    return out


def row_map(old: Sequence[str], new: Sequence[str], vocab: str) -> Tuple[np.ndarray, np.ndarray]:
    """(new indices, old indices) of the entries both vocabularies hold,
    plus the padding/unknown rows, in table rows."""
    lead = _LEADING_ROWS.get(vocab, 0)
    position = {entry: i for i, entry in enumerate(old)}
    pairs = [(j + lead, position[e] + lead) for j, e in enumerate(new) if e in position]
    if lead:
        pairs += [(r, r) for r in range(lead)]
    else:
        pairs.append((len(new), len(old)))  # the unknown bucket
    pairs.sort()
    return (
        np.array([p[0] for p in pairs], dtype=np.int64),
        np.array([p[1] for p in pairs], dtype=np.int64),
    )


def remap(old: np.ndarray, new: np.ndarray, axis: int, rows: Tuple[np.ndarray, np.ndarray]):
    """``new`` with the slices ``rows`` maps taken from ``old`` along ``axis``."""
    out = np.moveaxis(new.copy(), axis, 0)
    out[rows[0]] = np.moveaxis(old, axis, 0)[rows[1]]
    return np.moveaxis(out, 0, axis)


def _unsuffixed(name: str) -> str:
    """A weight's name without Keras' ``_<n>`` uniquifying suffixes (a second
    network in one process gets ``transformer_encoder_1/...``)."""
    return re.sub(r"_\d+(?=[/:])", "", name)


def warm_start(
    network: tf.keras.Model,
    config: ModelConfig,
    sizes: Mapping[str, int],
    base_model: str,
    vocabularies: Mapping[str, Sequence[str]],
) -> WarmStartReport:
    """Copies ``base_model``'s weights into ``network`` (built for ``sizes``
    and this run's ``vocabularies``), remapping the vocabulary-indexed ones."""
    report = WarmStartReport(base_model)
    try:
        old_vocabularies = read_vocabularies(base_model)
        old_network = build_network(config, vocabulary_sizes(old_vocabularies, sizes))
        status = old_network.load_weights(os.path.join(base_model, "variables", "variables"))
        status.expect_partial().assert_existing_objects_matched()
    except (FileNotFoundError, ValueError, tf.errors.OpError, AssertionError) as e:
        report.reason = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        logging.warning("%s", report.summary())
        return report
    old_weights, new_weights = old_network.weights, network.weights
    names = [_unsuffixed(w.name) for w in old_weights], [_unsuffixed(w.name) for w in new_weights]
    if names[0] != names[1]:
        report.reason = "the base model's weights are not this network's (another architecture)"
        logging.warning("%s", report.summary())
        return report
    axes = vocabulary_axes(network)
    maps = {
        vocab: row_map(old_vocabularies[vocab], vocabularies[vocab], vocab)
        for vocab in VOCABULARIES
    }
    for old, new in zip(old_weights, new_weights):
        old_value, new_value = old.numpy(), new.numpy()
        vocab_axis = axes.get(id(new))
        if vocab_axis is not None:
            vocab, axis = vocab_axis
            if (
                np.delete(old_value.shape, axis).tolist()
                != np.delete(new_value.shape, axis).tolist()
            ):
                report.skipped.append(new.name)
                continue
            new.assign(remap(old_value, new_value, axis, maps[vocab]))
            known = int(np.sum(maps[vocab][0] < new_value.shape[axis]))
            report.remapped[vocab] = (known, new_value.shape[axis])
        elif old_value.shape == new_value.shape:
            new.assign(old_value)
        else:
            report.skipped.append(new.name)
            continue
        report.copied += 1
    logging.info("%s", report.summary())
    return report


def learning_rate(report: WarmStartReport, config: ModelConfig) -> Optional[float]:
    """The learning rate a run trains at after ``report``'s warm start:
    ``warm_start_learning_rate`` when the base model was taken over, else
    None (keep ``learning_rate``)."""
    return config.warm_start_learning_rate if report.applied else None
