"""Hyperparameters of the multi-task model, passed by the pipeline to the Trainer."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Mapping, Optional, Tuple

from trainer import features as F
from trainer import serving_contract as C
from trainer.preset_files import MINILM, check_encoder_source

# The Trainer's custom_config key that carries the ModelConfig (as a dict).
CONFIG_KEY = "model_config"
# The Tuner's custom_config key that carries the TuningConfig (as a dict).
TUNING_KEY = "tuning"
# The Trainer's custom_config key that carries the TextEmbedder output's URI
# (set by ``components.trainer``'s executor from its ``text_embeddings`` input).
TEXT_EMBEDDINGS_URI = "text_embeddings_uri"
COMPACT_MODEL_URI = "compact_model_uri"  # the Trainer's compact_model output
# ... and the TaskSelector's selection (active tasks, why the others are off),
# which the export records (``serving_contract.write_tasks_asset``).
TASK_SELECTION = "task_selection"


def from_known_keys(cls, values: Mapping[str, Any] | None, what: str):
    """``cls(**values)`` for a dataclass, refusing keys it has no field for by name."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; known: {sorted(known)}")
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything that shapes the model and its training, in one place."""

    embedding_dim: int = 32
    text_dim: int = 32
    text_heads: int = 2
    text_layers: int = 1
    text_intermediate_dim: int = 64
    tower_dim: int = 64
    # The user's newest history items (by id, sharing the item tower's id
    # embeddings) through a transformer sequence encoder; 0 turns it off.
    history_length: int = 50
    history_layers: int = 1
    # Share of training examples whose item id is replaced by the unknown id,
    # so the towers also learn to score items from text (cold items). Off: 0.1
    # showed no gain on MovieLens cold items (BENCHMARKS.md).
    item_id_dropout: float = 0.0
    dropout: float = 0.1
    # The scalar tasks (rating, click, conversion) whose heads add their own
    # learned user bias and item bias (to the rating, or to the logit) to what
    # they read from the joint towers, as biased matrix factorisation does;
    # ``id_bias_l2`` is the L2 penalty on the bias tables (rare ids shrink
    # towards the global level). The rating only by default: on MovieLens-100K
    # the click's biases lowered both click AUC and RMSE (BENCHMARKS.md).
    id_biases: Tuple[str, ...] = ("rating",)
    # The ratings' (min, max): the rating head centres on its middle and spans
    # it; the pipeline sets it from the log config's rating_min/rating_max.
    rating_range: Tuple[float, float] = F.DEFAULT_RATING_RANGE
    id_bias_l2: float = 1e-4
    learning_rate: float = 3e-3
    batch_size: int = 128
    epochs: int = 3
    # Per-run overrides of the tasks' loss weights (``Task.loss_weight``), by task name.
    task_weights: Mapping[str, float] = dataclasses.field(default_factory=dict)
    # "static": sum of task weights x task losses; "uncertainty": learned
    # homoscedastic-uncertainty weights (Kendall et al., 2018) on top of them.
    loss_weighting: str = "static"
    retrieval_temperature: float = 0.1  # softmax temperature over L2-normalised embeddings
    # Subtract log(item's share of training impressions) from in-batch scores.
    logq_correction: bool = True
    retrieval_ks: Tuple[int, ...] = (
        C.DEFAULT_RETRIEVAL_KS
    )  # recall cut-offs (validation, ``evaluate``)
    recommend_k: int = (
        C.DEFAULT_RECOMMEND_K
    )  # items returned by the exported ``recommend`` signature
    # The frozen pretrained text encoder whose catalogue embeddings feed both
    # towers beside the from-scratch lexical encoder: MINILM (the installed
    # package), a local BERT checkpoint or keras-nlp preset directory; None
    # turns it off (the from-scratch encoder alone).
    pretrained_text_encoder: Optional[str] = MINILM
    pretrained_text_length: int = 128  # WordPiece tokens per item text
    # Fine-tune the pretrained encoder inside the item tower (its top
    # ``fine_tune_layers`` transformer layers; more than it has: all of it,
    # embeddings included) at ``fine_tune_learning_rate``: True, False, or
    # None for on when a GPU is present. The user side keeps the frozen
    # catalogue vectors of its history items.
    fine_tune_text_encoder: Optional[bool] = None
    fine_tune_layers: int = 2
    fine_tune_learning_rate: float = 5e-5
    # Names of the tasks to train and serve; None: those the data has labels
    # for (the pipeline's TaskSelector: at least ``min_task_labels`` positives,
    # or rated examples, in train and in eval), every task outside a pipeline.
    tasks: Optional[Tuple[str, ...]] = None
    min_task_labels: int = 50
    early_stopping_patience: int = 2  # epochs without a better selection metric; 0: off
    # What picks the kept epoch and stops early: "tasks" (every task's own
    # validation metric, ``trainer/selection.py``), "val_loss", or one logged metric.
    selection_metric: str = "tasks"
    mixed_precision: bool = True  # on GPU only
    xla: bool = True  # on GPU only
    # Seeds weights, dropout and the shuffle of the training data; with
    # ``deterministic`` TF's ops are made deterministic too, so the same
    # transformed examples and config train the same model (a run resumed in
    # the Trainer pushes what an uninterrupted one would).
    seed: int = 42
    deterministic: bool = True
    # Start from the latest blessed model's weights, remapping changed
    # vocabularies (``trainer/warm_start.py``): True, False, or None for on
    # when the logs are read by span (a run per day on new logs).
    warm_start: Optional[bool] = None
    # The learning rate of a run that did start from a base model (None:
    # ``learning_rate``): fine-tuning a trained model on one new span at the
    # from-scratch rate forgets what the older spans taught it.
    warm_start_learning_rate: Optional[float] = None
    # A second, smaller serving model beside the full one (``trainer/compact.py``):
    # None (off), "float16" or "int8" weights; the pipeline gates and pushes
    # it on its own. And the ranking heads as TFLite for devices, in the
    # full export's assets.extra: None (off), "float32" or "int8".
    compact_weights: Optional[str] = None
    tflite_ranking_heads: Optional[str] = None

    def warm_starts(self, spans: bool) -> bool:
        """Whether a pipeline hands the Trainer the latest blessed model."""
        return spans if self.warm_start is None else bool(self.warm_start)

    def __post_init__(self):
        for name in ("tasks", "id_biases", "retrieval_ks", "rating_range"):
            if isinstance(getattr(self, name), str):
                raise ValueError(
                    f"{name} must be a list, got the string {getattr(self, name)!r} "
                    f'(e.g. ["click", "rating"])'
                )
        if self.tasks is not None:
            object.__setattr__(self, "tasks", tuple(self.tasks))
            for name in self.tasks:
                F.task(name)  # raises KeyError naming an unknown task
            if not self.tasks:
                raise ValueError("at least one task must be on")
        names = set(self.active_task_names())
        for task in self.active_tasks():
            if task.esmm_parent and task.esmm_parent not in names:
                raise ValueError(
                    f"task {task.name!r} is p({task.esmm_parent}) x p({task.name} | "
                    f"{task.esmm_parent}): it needs task {task.esmm_parent!r} on too"
                )
        if (
            isinstance(self.min_task_labels, bool)
            or not isinstance(self.min_task_labels, int)
            or (self.min_task_labels < 1)
        ):
            raise ValueError(
                f"min_task_labels must be an integer >= 1, not {self.min_task_labels!r}"
            )
        object.__setattr__(self, "retrieval_ks", tuple(int(k) for k in self.retrieval_ks))
        if self.loss_weighting not in ("static", "uncertainty"):
            raise ValueError(
                f"loss_weighting must be 'static' or 'uncertainty', not {self.loss_weighting!r}"
            )
        if self.retrieval_temperature <= 0:
            raise ValueError("retrieval_temperature must be > 0")
        if self.recommend_k < 1 or not self.retrieval_ks or min(self.retrieval_ks) < 1:
            raise ValueError("recommend_k and every retrieval_ks value must be >= 1")
        if self.pretrained_text_encoder is not None:
            check_encoder_source(self.pretrained_text_encoder)
        if not 0 <= self.history_length <= F.HISTORY_IDS_LENGTH or self.history_layers < 0:
            raise ValueError(
                f"history_length must be 0 (off) .. {F.HISTORY_IDS_LENGTH} (the ids Transform "
                f"keeps) and history_layers >= 0, not {self.history_length}, {self.history_layers}"
            )
        if self.selection_metric != "tasks" and not self.selection_metric.startswith("val_"):
            raise ValueError(
                f"selection_metric must be 'tasks' or a validation log key (val_...), "
                f"not {self.selection_metric!r}"
            )
        if not 0 <= self.item_id_dropout < 1:
            raise ValueError(f"item_id_dropout must be in [0, 1), not {self.item_id_dropout}")
        object.__setattr__(self, "id_biases", tuple(self.id_biases))
        for name in self.id_biases:
            if F.task(name).kind not in ("binary", "regression"):
                raise ValueError(
                    f"id_biases: task {name!r} has no scalar head (only binary and "
                    f"regression tasks take id biases)"
                )
        low, high = (float(v) for v in self.rating_range)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"rating_range must be [min, max] with min < max, not {low}, {high}")
        object.__setattr__(self, "rating_range", (low, high))
        if self.warm_start_learning_rate is not None and not self.warm_start_learning_rate > 0:
            raise ValueError(
                f"warm_start_learning_rate must be > 0 or null, not {self.warm_start_learning_rate}"
            )
        if self.id_bias_l2 < 0:
            raise ValueError(f"id_bias_l2 must be >= 0, not {self.id_bias_l2}")
        if self.compact_weights not in (None, "float16", "int8"):
            raise ValueError(
                f'compact_weights must be null, "float16" or "int8", not {self.compact_weights!r}'
            )
        if self.tflite_ranking_heads not in (None, "float32", "int8"):
            raise ValueError(
                'tflite_ranking_heads must be null, "float32" or "int8", '
                f"not {self.tflite_ranking_heads!r}"
            )
        if self.fine_tune_text_encoder and self.pretrained_text_encoder is None:
            raise ValueError("fine_tune_text_encoder needs a pretrained_text_encoder")
        if self.fine_tune_layers < 1 or self.fine_tune_learning_rate <= 0:
            raise ValueError("fine_tune_layers must be >= 1 and fine_tune_learning_rate > 0")
        if self.pretrained_text_length < 3:
            raise ValueError("pretrained_text_length must be >= 3 ([CLS] text [SEP])")
        unknown = sorted(set(self.task_weights) - {t.name for t in F.TASKS})
        if unknown:
            raise ValueError(f"task_weights names unknown tasks {unknown}")
        object.__setattr__(
            self, "task_weights", {n: float(w) for n, w in dict(self.task_weights).items()}
        )

    def fine_tunes(self, gpu: bool) -> bool:
        """Whether this run fine-tunes the encoder (``gpu``: a GPU is present)."""
        if self.pretrained_text_encoder is None:
            return False
        return gpu if self.fine_tune_text_encoder is None else bool(self.fine_tune_text_encoder)

    def active_tasks(self) -> Tuple[F.Task, ...]:
        """The tasks switched on, in features.TASKS order."""
        return tuple(t for t in F.TASKS if self.tasks is None or t.name in self.tasks)

    def active_task_names(self) -> Tuple[str, ...]:
        return tuple(t.name for t in self.active_tasks())

    def effective_task_weights(self) -> Dict[str, float]:
        """Each active task's loss weight: its ``Task.loss_weight`` unless overridden."""
        return {t.name: self.task_weights.get(t.name, t.loss_weight) for t in self.active_tasks()}

    def to_dict(self) -> Dict[str, Any]:
        return {
            k: (dict(v) if isinstance(v, Mapping) else list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "ModelConfig":
        """Builds a config, rejecting unknown keys with a clear message."""
        return from_known_keys(cls, values, "model config")
