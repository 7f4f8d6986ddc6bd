"""The single source of truth for feature, label and task names.

ExampleGen writes these features, the curated schema in ``schemas/`` declares
them, Transform, the model, the Evaluator config and serving all read them.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

# Raw features written by the interaction-log ExampleGen.
USER_ID = "user_id"
ITEM_ID = "item_id"
ITEM_TITLE = "item_title"
ITEM_DESCRIPTION = "item_description"
ITEM_CATEGORY = "item_category"
HISTORY_TITLES = "history_titles"
HISTORY_ITEM_IDS = "history_item_ids"  # a list, newest last
HISTORY_CATEGORIES = "history_categories"  # categories of the history items (interest label)
USER_PROFILE = "user_profile"  # text from the optional user table
TIMESTAMP = "timestamp"
EVENT_ID = "event_id"

# Raw labels and weights (one example per impression).
CLICK = "click"
PURCHASE = "purchase"
RATING = "rating"
# The rating scale when the log config names none (``LogConfig.rating_min``/``_max``);
# the rating head centres on it and its default RMSE bar scales with its width.
DEFAULT_RATING_RANGE = (1.0, 5.0)
RATING_WEIGHT = "rating_weight"
# Weight of an impression for the click task (1.0 unless logs are importance-weighted).
IMPRESSION_WEIGHT = "impression_weight"

HISTORY_SEPARATOR = " | "


@dataclasses.dataclass(frozen=True)
class RawFeature:
    """A feature of the raw tf.Example, with its dtype ("string", "int", "float")."""

    name: str
    dtype: str
    role: str  # "model" (serving input), "label", "weight" or "meta"
    varlen: bool = False  # a list of values rather than exactly one
    optional: bool = False  # serving requests may leave it out (empty)


RAW_FEATURES: Tuple[RawFeature, ...] = (
    RawFeature(EVENT_ID, "string", "meta"),
    RawFeature(TIMESTAMP, "int", "meta"),
    RawFeature(USER_ID, "string", "model"),
    RawFeature(ITEM_ID, "string", "model"),
    RawFeature(ITEM_TITLE, "string", "model"),
    RawFeature(ITEM_DESCRIPTION, "string", "model", optional=True),
    RawFeature(ITEM_CATEGORY, "string", "model"),
    RawFeature(HISTORY_TITLES, "string", "model", optional=True),
    RawFeature(HISTORY_ITEM_IDS, "string", "model", varlen=True, optional=True),
    RawFeature(USER_PROFILE, "string", "model", optional=True),
    RawFeature(HISTORY_CATEGORIES, "string", "label", varlen=True, optional=True),
    RawFeature(CLICK, "int", "label"),
    RawFeature(PURCHASE, "int", "label"),
    RawFeature(RATING, "float", "label"),
    RawFeature(RATING_WEIGHT, "float", "weight"),
    RawFeature(IMPRESSION_WEIGHT, "float", "weight"),
)

SERVING_FEATURES: Tuple[str, ...] = tuple(f.name for f in RAW_FEATURES if f.role == "model")


def transformed_name(name: str) -> str:
    """Name of a feature after TF Transform."""
    return f"{name}_xf"


# Transformed model inputs.
USER_ID_XF = transformed_name(USER_ID)
ITEM_ID_XF = transformed_name(ITEM_ID)
ITEM_CATEGORY_XF = transformed_name(ITEM_CATEGORY)
ITEM_TOKENS_XF = "item_tokens_xf"
HISTORY_TOKENS_XF = "history_tokens_xf"
HISTORY_ITEM_IDS_XF = transformed_name(HISTORY_ITEM_IDS)  # raw ids, newest last, "" padded
# The same ids as item-vocabulary indices (ITEM_ID_XF's space), -1 padded: the
# user tower's sequence encoder (``trainer/history_encoder.py``) reads them.
HISTORY_ITEM_INDEX_XF = "history_item_index_xf"
# The frozen pretrained encoder's features (``trainer/pretrained_text.py``),
# looked up by raw item id in the catalogue's text embeddings: the item's, and
# the mean over the user's history items. Zero-width with the encoder off.
ITEM_TEXT_VECTOR = "item_text_vector"
HISTORY_TEXT_VECTOR = "history_text_vector"
# The item text's WordPiece ids, for an encoder fine-tuned in the item tower
# (``ModelConfig.fine_tune_text_encoder``); zero-width otherwise. The item's
# vector is then computed in the network and ITEM_TEXT_VECTOR is zero-width.
ITEM_TEXT_TOKEN_IDS = "item_text_token_ids"
# Labels computed by TF Transform.
HISTORY_CATEGORIES_XF = transformed_name(HISTORY_CATEGORIES)  # category ids, varlen
INTEREST_WEIGHT = "interest_weight"  # 1 when the user has a history, else 0
# Dense multi-hot interest label, from the ``transform_features`` signature (TFMA).
INTEREST_LABELS = "interest_labels"
# Retrieval evaluation in TFMA: the ``evaluate`` signature outputs, per example,
# whether the example's item ranks within the user's top k over the whole
# catalogue; the mean over clicked impressions (weight x click, an output of
# ``transform_features``) is recall@k.
RETRIEVAL_POSITIVE_WEIGHT = "retrieval_positive_weight"
RETRIEVAL_HIT_PREFIX = "retrieval_hit_at_"  # + k: ``serving_contract.retrieval_hit_output``

# Vocabulary files written by TF Transform.
TEXT_VOCAB = "text_tokens"
ID_VOCABS: Dict[str, str] = {
    USER_ID: USER_ID,
    ITEM_ID: ITEM_ID,
    ITEM_CATEGORY: ITEM_CATEGORY,
}

ITEM_TEXT_LENGTH = 32
HISTORY_TEXT_LENGTH = 48
# The most of those the user profile text (user table, past reviews) may fill.
USER_PROFILE_TOKENS = 16
# The newest history item ids Transform keeps (``ModelConfig.history_length`` <= it).
HISTORY_IDS_LENGTH = 50


TASK_KINDS = ("retrieval", "binary", "regression", "multiclass", "multilabel")


@dataclasses.dataclass(frozen=True)
class Task:
    """A task head: its kind, label, example-weight feature (after Transform) and
    its defaults for training and blessing.

    A weight of 0 marks an example without a label for that task, and a batch
    whose weights are all 0 adds no loss for it. What the kind does (output
    layer, loss, metrics) is its class in ``trainer/task_kinds.py``:

    * ``retrieval``: two-tower in-batch softmax; the label (click) marks the
      positive user-item pairs.
    * ``binary``/``regression``: one score per example from the joint towers.
    * ``multiclass``: the item's category from the item tower (text branch).
    * ``multilabel``: the user's interests over categories from the user tower.
    """

    name: str
    label: str
    kind: str
    weight: str
    # ESMM: the output is p(parent) * p(own head), trained on every impression
    # (e.g. conversion = pCTR * pCVR), so it is modelled over the entire space.
    esmm_parent: str | None = None
    # Weight of the task's loss in the joint loss (``ModelConfig.task_weights`` overrides).
    loss_weight: float = 1.0
    # Blessing: the gating metric's absolute bound (a floor when higher is better,
    # a ceiling otherwise; ``--eval-thresholds`` overrides) and how far it may
    # fall behind the last blessed model.
    threshold: float = 0.0
    regression_tolerance: float = 0.01

    def __post_init__(self):
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task {self.name!r}: kind {self.kind!r} is not one of {TASK_KINDS}")


TASKS: Tuple[Task, ...] = (
    Task(
        name="retrieval",
        label=CLICK,
        kind="retrieval",
        weight=IMPRESSION_WEIGHT,
        loss_weight=0.5,
        threshold=0.05,
        regression_tolerance=0.02,
    ),
    Task(name="click", label=CLICK, kind="binary", weight=IMPRESSION_WEIGHT, threshold=0.6),
    Task(
        name="conversion",
        label=PURCHASE,
        kind="binary",
        weight=IMPRESSION_WEIGHT,
        esmm_parent="click",
        threshold=0.6,
    ),
    Task(
        name="rating",
        label=RATING,
        kind="regression",
        weight=RATING_WEIGHT,
        loss_weight=0.5,
        threshold=1.5,
        regression_tolerance=0.05,
    ),
    Task(
        name="category",
        label=ITEM_CATEGORY_XF,
        kind="multiclass",
        weight=IMPRESSION_WEIGHT,
        loss_weight=0.2,
        threshold=0.2,
        regression_tolerance=0.05,
    ),
    Task(
        name="interest",
        label=HISTORY_CATEGORIES_XF,
        kind="multilabel",
        weight=INTEREST_WEIGHT,
        loss_weight=0.2,
        threshold=0.6,
        regression_tolerance=0.02,
    ),
)
TASK_NAMES: List[str] = [t.name for t in TASKS]


def task(name: str) -> Task:
    """Looks a task up by name, with a clear error for an unknown one."""
    for t in TASKS:
        if t.name == name:
            return t
    raise KeyError(f"unknown task {name!r}; known tasks: {TASK_NAMES}")
