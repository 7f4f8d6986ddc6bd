"""The serving contract: every exported signature, its inputs and outputs.

Named once, as ``features.py`` names the features: ``trainer/export.py``
builds the signatures under these names, the Evaluator config and
``components/compatible_evaluator.py`` call them, ``serving/`` and
``bench/`` query them, and a test checks an exported SavedModel against
``expected_signatures``: every signature, input, output, dtype and shape.

* ``serving_default``: ``examples`` (serialized tf.Example, raw features) ->
  every task's output;
* ``predict``: the raw features as named string tensors -> every task's output;
* ``transform_features``: labelled tf.Examples -> transformed features,
  labels and weights (TFMA's preprocessing function);
* ``evaluate``: tf.Examples -> every task's output plus, with the retrieval
  task, ``retrieval_hit_at_<k>`` (what TFMA scores);
* ``recommend`` (with the retrieval task): a user's raw features -> the
  top-K ``item_ids`` and their ``scores`` over the catalogue.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, Mapping, Optional, Sequence, Tuple

from trainer import features as F

SERVING_DEFAULT = "serving_default"
PREDICT = "predict"
TRANSFORM_FEATURES = "transform_features"
EVALUATE = "evaluate"
RECOMMEND = "recommend"

EXAMPLES = "examples"  # the one input of the tf.Example signatures
ITEM_IDS = "item_ids"  # recommend's outputs
SCORES = "scores"

DEFAULT_RECOMMEND_K = 100  # items ``recommend`` returns
# ``recommend`` never returns these items ("a | b"), nor the history's; with
# fewer items left, the tail is item id "" scored EXCLUDED_SCORE.
EXCLUDE_ITEM_IDS = "exclude_item_ids"
EXCLUDED_SCORE = -3.4028234663852886e38  # the lowest float32
DEFAULT_RETRIEVAL_KS = (10, 100)  # recall cut-offs of ``evaluate`` and validation

# Inputs of ``predict`` (one string per example each) and ``recommend`` (the
# user side only). The varlen history item ids come as one string, "a | b".
PREDICT_FEATURES: Tuple[str, ...] = tuple(
    f.name for f in F.RAW_FEATURES if f.role == "model" and not f.varlen
) + (F.HISTORY_ITEM_IDS,)
RECOMMEND_FEATURES: Tuple[str, ...] = (
    F.USER_ID,
    F.HISTORY_TITLES,
    F.USER_PROFILE,
    F.HISTORY_ITEM_IDS,
    EXCLUDE_ITEM_IDS,
)

# ``transform_features`` outputs besides each task's label and weight:
# (dtype, shape after the batch).
_TRANSFORMED_OUTPUTS: Dict[str, Tuple[str, Tuple[Optional[int], ...]]] = {
    F.USER_ID_XF: ("int64", ()),
    F.ITEM_ID_XF: ("int64", ()),
    F.ITEM_CATEGORY_XF: ("int64", ()),
    F.ITEM_TOKENS_XF: ("int64", (F.ITEM_TEXT_LENGTH,)),
    F.HISTORY_TOKENS_XF: ("int64", (F.HISTORY_TEXT_LENGTH,)),
    F.HISTORY_ITEM_INDEX_XF: ("int64", (F.HISTORY_IDS_LENGTH,)),
    F.RETRIEVAL_POSITIVE_WEIGHT: ("float32", ()),
}


# What an export serves: ``<export>/assets.extra/tasks.json``, {"active": [task
# names], "off": {task: why}}; TF Serving ignores assets.extra, clients and the
# Evaluator read it (a switched-off task has no output in any signature).
ASSETS_EXTRA = "assets.extra"
TASKS_ASSET = "tasks.json"


def write_tasks_asset(
    export_dir: str, active: Sequence[str], off: Optional[Mapping[str, str]] = None
) -> None:
    import tensorflow as tf

    tf.io.gfile.makedirs(os.path.join(export_dir, ASSETS_EXTRA))
    with tf.io.gfile.GFile(os.path.join(export_dir, ASSETS_EXTRA, TASKS_ASSET), "w") as f:
        json.dump({"active": list(active), "off": dict(off or {})}, f, indent=2)


def read_tasks_asset(export_dir: str) -> Optional[Dict[str, object]]:
    """The export's tasks record; None for an export made before it existed."""
    import tensorflow as tf

    path = os.path.join(export_dir, ASSETS_EXTRA, TASKS_ASSET)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def retrieval_hit_output(k: int) -> str:
    """The ``evaluate`` signature's output: 1.0 when the item is in the top ``k``."""
    return f"{F.RETRIEVAL_HIT_PREFIX}{k}"


@dataclasses.dataclass(frozen=True)
class TensorContract:
    """A signature tensor: dtype name and shape (``None``: any size, the batch first)."""

    dtype: str
    shape: Tuple[Optional[int], ...]


@dataclasses.dataclass(frozen=True)
class SignatureContract:
    inputs: Mapping[str, TensorContract]
    outputs: Mapping[str, TensorContract]


def _batch(dtype: str, *dims: Optional[int]) -> TensorContract:
    return TensorContract(dtype, (None, *dims))


def task_outputs(task_names: Sequence[str], num_categories: int) -> Dict[str, TensorContract]:
    """Every active task's output: ``[batch, 1]``, or ``[batch, categories]``."""
    from trainer.task_kinds import kind_of

    return {
        name: _batch("float32", kind_of(F.task(name)).output_width(num_categories))
        for name in task_names
    }


def _transform_outputs(num_categories: int) -> Dict[str, TensorContract]:
    outputs = {name: _batch(dtype, *dims) for name, (dtype, dims) in _TRANSFORMED_OUTPUTS.items()}
    for feature in F.RAW_FEATURES:
        if feature.role in ("label", "weight") and not feature.varlen:
            outputs[feature.name] = _batch("float32")
    outputs[F.INTEREST_WEIGHT] = _batch("float32")
    outputs[F.INTEREST_LABELS] = _batch("float32", num_categories)
    return outputs


def expected_signatures(
    task_names: Sequence[str],
    num_categories: int,
    recommend_k: int = DEFAULT_RECOMMEND_K,
    retrieval_ks: Sequence[int] = DEFAULT_RETRIEVAL_KS,
    catalog_size: Optional[int] = None,
) -> Dict[str, SignatureContract]:
    """The signatures a model exported with these tasks has.

    Args:
      task_names: the active tasks, in any order.
      num_categories: the item-category vocabulary size plus one (out-of-vocabulary).
      recommend_k: items ``recommend`` returns (at most ``catalog_size``).
      retrieval_ks: recall cut-offs of ``evaluate``'s hit outputs.
      catalog_size: items in the catalogue the model was exported with.
    """
    examples = {EXAMPLES: _batch("string")}
    tasks = task_outputs(task_names, num_categories)
    evaluate = dict(tasks)
    signatures = {
        SERVING_DEFAULT: SignatureContract(examples, tasks),
        PREDICT: SignatureContract({name: _batch("string") for name in PREDICT_FEATURES}, tasks),
        TRANSFORM_FEATURES: SignatureContract(examples, _transform_outputs(num_categories)),
    }
    from trainer.task_kinds import retrieval_task

    if retrieval_task(task_names) is not None:
        evaluate.update({retrieval_hit_output(k): _batch("float32", 1) for k in retrieval_ks})
        k = min(recommend_k, catalog_size) if catalog_size else recommend_k
        signatures[RECOMMEND] = SignatureContract(
            {name: _batch("string") for name in RECOMMEND_FEATURES},
            {ITEM_IDS: _batch("string", k), SCORES: _batch("float32", k)},
        )
    signatures[EVALUATE] = SignatureContract(examples, evaluate)
    return signatures
