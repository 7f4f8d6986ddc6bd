"""What each task kind does, in one class per kind, and the registry from kind to class.

A ``Task`` record (``trainer/features.py``) names a task, its label, weight and
kind; the kind's class here owns everything that differs by kind: the output
layer, the label as the model sees it, the per-example loss, the Keras metric
and the TFMA metric specs. The model, the input pipeline, the Evaluator config,
the serving contract and the reports ask the class instead of testing the kind,
so a new kind is one class plus one registry entry, and a new task of an
existing kind is one ``Task`` record.

The retrieval kind's export (the ``recommend`` signature and the hit outputs of
``evaluate``) belongs to the serving contract; its training loss and
validation recall are here.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Type

import tensorflow as tf
import tensorflow_recommenders as tfrs

from trainer import features as F
from trainer import serving_contract as C

keras = tf.keras

# (TFMA metric class name, **its config) -> that metric with the task's blessing gate.
GatedMetric = Callable[..., object]


@dataclasses.dataclass(frozen=True)
class Towers:
    """What a task head may read: the two towers' outputs and their interaction."""

    user: Mapping[str, tf.Tensor]  # "vector", "embedding" (L2-normalised)
    item: Mapping[str, tf.Tensor]  # "vector", "embedding", "text"
    joint: tf.Tensor  # the user x item interaction layer
    num_categories: int  # item-category vocabulary plus out-of-vocabulary
    # (task name, head name) -> that head's own user plus item bias, [batch, 1]
    # (None: off for the task).
    id_biases: Callable[[str, str], Optional[tf.Tensor]] = lambda task, head: None
    rating_range: Tuple[float, float] = F.DEFAULT_RATING_RANGE  # (min, max) of the ratings

    def biased(self, task: str, head: str, value: tf.Tensor) -> tf.Tensor:
        """``value`` plus the head's id biases, when they are on for ``task``."""
        bias = self.id_biases(task, head)
        if bias is None:
            return value
        return keras.layers.Add(dtype="float32", name=f"{head}_biased")([value, bias])


@dataclasses.dataclass
class Step:
    """One training or evaluation step, as a task's loss sees it."""

    network: keras.Model  # ``build_network``'s model, with ``user_model``/``item_model``
    inputs: Mapping[str, tf.Tensor]
    outputs: Mapping[str, tf.Tensor]
    labels: Mapping[str, tf.Tensor]
    weights: Mapping[str, tf.Tensor]
    training: bool
    # Tensors a task's loss computes and its validation metrics reuse.
    cache: Dict[str, tf.Tensor] = dataclasses.field(default_factory=dict)


class TaskKind:
    """A task of one kind: build its head, read its label, score it.

    Subclasses set the class attributes and override what differs.
    """

    kind: ClassVar[str]
    # The TFMA metric that gates blessing, and whether higher is better.
    tfma_metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    tfma_extras: ClassVar[Tuple[str, ...]] = ("ExampleCount",)
    # The gating metric's key in TFMA results, for the per-category report
    # columns (None: not reported per category).
    report_metric: ClassVar[Optional[str]] = None
    report_label: ClassVar[str] = ""
    per_category: ClassVar[bool] = False  # one output column per item category

    def __init__(self, task: F.Task):
        self.task = task

    # --- the network -------------------------------------------------------
    def build_output(self, towers: Towers, outputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """This task's output tensor; ``outputs`` holds the heads built before it."""
        raise NotImplementedError

    def output_width(self, num_categories: int) -> int:
        """Columns of the output (after the batch dimension)."""
        return num_categories if self.per_category else 1

    # --- labels and losses -------------------------------------------------
    def prepare_training(self, config) -> None:
        """Creates what training needs beyond the output layer (``config``: ModelConfig)."""

    def label(self, batch: Mapping[str, tf.Tensor], num_categories: Optional[int]) -> tf.Tensor:
        """The label from a transformed batch: float ``[batch, 1]`` by default."""
        return tf.reshape(tf.cast(batch[self.task.label], tf.float32), [-1, 1])

    def loss_weight(self, step: Step) -> tf.Tensor:
        """Per-example weight of the loss (0 keeps an example out), ``[batch]``."""
        return tf.cast(step.weights[self.task.name], tf.float32)

    def per_example_loss(self, step: Step) -> tf.Tensor:
        """Unweighted loss per example, ``[batch]``."""
        raise NotImplementedError

    # --- Keras metrics -----------------------------------------------------
    def keras_metric(self) -> Optional[keras.metrics.Metric]:
        """The metric tracked in training and validation logs, if any."""
        return None

    def update_metric(
        self, metric: keras.metrics.Metric, label: tf.Tensor, output: tf.Tensor, weight: tf.Tensor
    ) -> None:
        metric.update_state(label, output, sample_weight=weight)

    def validation_metrics(self) -> List[keras.metrics.Metric]:
        """Metrics beyond ``keras_metric`` that validation fills (reset each epoch)."""
        return []

    def selection_metric(self, retrieval_ks: Sequence[int]) -> Optional[Tuple[str, bool]]:
        """(logged metric name, higher is better) that picks this task's best epoch."""
        metric = self.keras_metric()
        return (metric.name, self.higher_is_better) if metric is not None else None

    def before_validation(self) -> None:
        """Runs before each validation pass, outside the step (eagerly)."""

    def validation_logs(self, step: Step) -> Dict[str, tf.Tensor]:
        """Updates ``validation_metrics`` and returns their values for the logs."""
        return {}

    # --- TFMA --------------------------------------------------------------
    @property
    def tfma_label(self) -> str:
        """The label key TFMA reads: a raw feature or a ``transform_features`` output."""
        return self.task.label

    def tfma_keys(self, retrieval_ks: Sequence[int]) -> Dict[str, Tuple[str, str]]:
        """{evaluated output: (label key, example-weight key)}."""
        return {self.task.name: (self.tfma_label, self.task.weight)}

    def tfma_specs(self, gated: GatedMetric, retrieval_ks: Sequence[int]) -> List[object]:
        """TFMA MetricsSpecs of this task: the gated metric and the reported extras."""
        import tensorflow_model_analysis as tfma

        metrics = [gated(self.tfma_metric)]
        metrics.extend(tfma.MetricConfig(class_name=name) for name in self.tfma_extras)
        return [
            tfma.MetricsSpec(
                output_names=[self.task.name], metrics=metrics, aggregate=self.tfma_aggregate()
            )
        ]

    def tfma_aggregate(self) -> Optional[object]:
        return None

    def owns_output(self, output_name: str) -> bool:
        """Whether an evaluated output is this task's."""
        return output_name == self.task.name

    def report_columns(self, outputs: Sequence[str]) -> Dict[Tuple[str, str], str]:
        """{(output, TFMA metric key): column title} of the per-category report."""
        if self.report_metric is None:
            return {}
        return {(self.task.name, self.report_metric): f"{self.task.name} {self.report_label}"}


class Binary(TaskKind):
    """One probability per example from the joint towers (plus the head's
    user and item logit biases); with ``esmm_parent``,
    p(parent) x p(own | parent), trained on every impression (ESMM)."""

    kind = "binary"
    tfma_metric = "AUC"
    tfma_extras = ("Calibration", "MeanLabel", "MeanPrediction", "ExampleCount")
    report_metric, report_label = "auc", "AUC"

    def build_output(self, towers: Towers, outputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        name, parent = self.task.name, self.task.esmm_parent
        if not parent:
            return self._probability(towers, name)
        own = self._probability(towers, f"{name}_given_{parent}")
        return keras.layers.Multiply(name=name, dtype="float32")([outputs[parent], own])

    def _probability(self, towers: Towers, head: str) -> tf.Tensor:
        logit = keras.layers.Dense(1, dtype="float32", name=f"{head}_logit")(towers.joint)
        return keras.layers.Activation("sigmoid", dtype="float32", name=head)(
            towers.biased(self.task.name, head, logit)
        )

    def per_example_loss(self, step: Step) -> tf.Tensor:
        return keras.losses.binary_crossentropy(
            step.labels[self.task.name], step.outputs[self.task.name]
        )

    def keras_metric(self) -> keras.metrics.Metric:
        return keras.metrics.AUC(name=f"{self.task.name}_auc")


class Regression(TaskKind):
    """A rating from the joint towers plus the head's user and item biases,
    centred on the middle of the rating range and scaled to its width (on
    1-5: offset 3, scale 1)."""

    kind = "regression"
    tfma_metric = "RootMeanSquaredError"
    higher_is_better = False
    tfma_extras = ("MeanAbsoluteError", "ExampleCount")
    report_metric, report_label = "root_mean_squared_error", "RMSE"

    def build_output(self, towers: Towers, outputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        raw = keras.layers.Dense(1, dtype="float32", name=f"{self.task.name}_raw")(towers.joint)
        raw = towers.biased(self.task.name, self.task.name, raw)
        low, high = towers.rating_range
        default_low, default_high = F.DEFAULT_RATING_RANGE
        scale = (high - low) / (default_high - default_low)
        return keras.layers.Rescaling(
            scale, offset=(low + high) / 2, dtype="float32", name=self.task.name
        )(raw)

    def per_example_loss(self, step: Step) -> tf.Tensor:
        error = step.labels[self.task.name] - step.outputs[self.task.name]
        return tf.reduce_mean(tf.square(error), axis=-1)

    def keras_metric(self) -> keras.metrics.Metric:
        return keras.metrics.RootMeanSquaredError(name=f"{self.task.name}_rmse")


class Multiclass(TaskKind):
    """The item's category from the item's text alone: the category embedding is
    an input of the item tower, so predicting it from the tower would be a copy."""

    kind = "multiclass"
    tfma_metric = "SparseCategoricalAccuracy"
    report_metric, report_label = "sparse_categorical_accuracy", "accuracy"
    per_category = True

    def build_output(self, towers: Towers, outputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return keras.layers.Dense(
            towers.num_categories, activation="softmax", dtype="float32", name=self.task.name
        )(towers.item["text"])

    def label(self, batch: Mapping[str, tf.Tensor], num_categories: Optional[int]) -> tf.Tensor:
        return tf.reshape(batch[self.task.label], [-1])

    def per_example_loss(self, step: Step) -> tf.Tensor:
        return keras.losses.sparse_categorical_crossentropy(
            step.labels[self.task.name], step.outputs[self.task.name]
        )

    def keras_metric(self) -> keras.metrics.Metric:
        return keras.metrics.SparseCategoricalAccuracy(name=f"{self.task.name}_accuracy")


class Multilabel(TaskKind):
    """The user's interests over item categories, from the user tower; AUC over
    every (example, category) pair (micro-averaged in TFMA)."""

    kind = "multilabel"
    tfma_metric = "AUC"
    per_category = True

    def build_output(self, towers: Towers, outputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return keras.layers.Dense(
            towers.num_categories, activation="sigmoid", dtype="float32", name=self.task.name
        )(towers.user["vector"])

    def label(self, batch: Mapping[str, tf.Tensor], num_categories: Optional[int]) -> tf.Tensor:
        if num_categories is None:
            raise ValueError(f"task {self.task.name!r} needs num_categories")
        from trainer.data import multi_hot

        return multi_hot(batch[self.task.label], num_categories)

    def per_example_loss(self, step: Step) -> tf.Tensor:
        return keras.losses.binary_crossentropy(
            step.labels[self.task.name], step.outputs[self.task.name]
        )

    def keras_metric(self) -> keras.metrics.Metric:
        return keras.metrics.AUC(name=f"{self.task.name}_auc")

    def update_metric(self, metric, label, output, weight) -> None:
        # Every (example, category) pair, weighted by its example.
        weight = tf.broadcast_to(weight[:, tf.newaxis], tf.shape(output))
        metric.update_state(label, output, sample_weight=weight)

    @property
    def tfma_label(self) -> str:
        return F.INTEREST_LABELS  # the dense multi-hot label of ``transform_features``

    def tfma_aggregate(self) -> object:
        import tensorflow_model_analysis as tfma

        return tfma.AggregationOptions(micro_average=True)


class RecallAtK(tfrs.metrics.FactorizedTopK):
    """TFRS FactorizedTopK (top-K hit rate of the true item, i.e. recall@k with one
    positive per query) with the ``reset_state`` that tf_keras calls."""

    def reset_state(self) -> None:
        for metric in self._top_k_metrics:
            metric.reset_state()


class InGraphTopK(tfrs.layers.factorized_top_k.TopK):
    """Exact top-k over the whole catalogue embedded inside the calling step:
    one matmul with every item's embedding, no captured ``tf.data.Dataset``.
    TFRS's ``Streaming`` captures the catalogue dataset, which a
    ``ParameterServerStrategy`` worker cannot receive from the coordinator;
    this one's catalogue travels as ordinary tensors (``features``, ``keys``)."""

    def __init__(self, embed: Callable[[], tf.Tensor], keys: tf.Tensor, k: int):
        super().__init__(k=k)
        self._embed = [embed]  # a list: Keras must not track the item tower twice
        self._keys = keys

    def index(self, candidates, identifiers=None):
        raise NotImplementedError("InGraphTopK embeds its catalogue at each call")

    def call(self, queries: tf.Tensor, k: Optional[int] = None):
        scores = tf.matmul(
            tf.cast(queries, tf.float32), tf.cast(self._embed[0](), tf.float32), transpose_b=True
        )
        values, index = tf.math.top_k(scores, k=k if k is not None else self._k)
        return values, tf.gather(self._keys, index)

    def is_exact(self) -> bool:
        return True


class CatalogueTopK(tfrs.layers.factorized_top_k.TopK):
    """Exact top-k over the catalogue's item embeddings, computed once per
    validation pass (``refresh``) and kept in a non-trainable variable:
    each step is one matmul. TFRS's ``Streaming`` runs the item tower over
    the whole catalogue again in every validation step; memory here is the
    catalogue times the embedding width (64 MiB for 1M items at 16 floats)."""

    def __init__(
        self,
        embed: Callable[[], tf.Tensor],
        keys: tf.Tensor,
        dim: int,
        k: int,
    ):
        super().__init__(k=k)
        self._embed = [embed]  # a list: Keras must not track the item tower twice
        self._keys = keys
        self._embeddings = tf.Variable(
            tf.zeros([int(keys.shape[0]), dim], tf.float32),
            trainable=False,
            name="catalogue_embeddings",
        )

    def refresh(self) -> None:
        """Embeds the catalogue with the item tower's current weights."""
        self._embeddings.assign(tf.cast(self._embed[0](), tf.float32))

    def index(self, candidates, identifiers=None):
        raise NotImplementedError("CatalogueTopK embeds its catalogue in refresh()")

    def call(self, queries: tf.Tensor, k: Optional[int] = None):
        scores = tf.matmul(tf.cast(queries, tf.float32), self._embeddings, transpose_b=True)
        values, index = tf.math.top_k(scores, k=k if k is not None else self._k)
        return values, tf.gather(self._keys, index)

    def is_exact(self) -> bool:
        return True


class Retrieval(TaskKind):
    """Two towers scored by the dot product of their L2-normalised embeddings,
    trained with an in-batch softmax over the clicked pairs (TFRS Retrieval);
    validation reports recall@k over the whole catalogue (``set_candidates``)."""

    kind = "retrieval"
    tfma_metric = "MeanPrediction"  # the mean of the hit outputs over clicked impressions

    def __init__(self, task: F.Task):
        super().__init__(task)
        self.loss: Optional[tfrs.tasks.Retrieval] = None
        self.top_k: Optional[RecallAtK] = None
        self.ks: Tuple[int, ...] = ()
        self.logq_correction = False

    def prepare_training(self, config) -> None:
        self.logq_correction = config.logq_correction
        self.loss = tfrs.tasks.Retrieval(
            loss=keras.losses.CategoricalCrossentropy(
                from_logits=True, reduction=keras.losses.Reduction.NONE
            ),
            temperature=config.retrieval_temperature,
            remove_accidental_hits=True,
            metrics=None,
        )
        # Scores and softmax in float32 under mixed precision too (TFRS's task
        # takes no dtype argument; without this it casts only the queries).
        self.loss._set_dtype_policy(keras.mixed_precision.Policy("float32"))

    def build_output(self, towers: Towers, outputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return keras.layers.Dot(axes=1, dtype="float32", name=self.task.name)(
            [towers.user["embedding"], towers.item["embedding"]]
        )

    def loss_weight(self, step: Step) -> tf.Tensor:
        # The positives: clicked impressions.
        label = tf.reshape(tf.cast(step.labels[self.task.name], tf.float32), [-1])
        return super().loss_weight(step) * label

    def per_example_loss(self, step: Step) -> tf.Tensor:
        from trainer.data import ITEM_INPUTS, ITEM_KEY, USER_INPUTS

        user = step.network.user_model(
            {n: step.inputs[n] for n in USER_INPUTS}, training=step.training
        )
        item = step.network.item_model(
            {n: step.inputs[n] for n in ITEM_INPUTS}, training=step.training
        )
        step.cache[f"{self.task.name}_query"] = user["embedding"]
        from trainer.item_frequency import ITEM_PROBABILITY

        ids = step.inputs[ITEM_KEY] if ITEM_KEY in step.inputs else step.inputs[F.ITEM_ID_XF]
        return self.loss(
            user["embedding"],
            item["embedding"],
            candidate_ids=ids,
            # logQ: popular items are in-batch negatives more often; subtracting
            # log(p) keeps the softmax from learning to demote them for it.
            candidate_sampling_probability=(
                step.inputs.get(ITEM_PROBABILITY) if self.logq_correction else None
            ),
            compute_metrics=False,
            compute_batch_metrics=False,
        )

    def set_candidates(
        self,
        item_model: keras.Model,
        candidates: tf.data.Dataset,
        ks: Sequence[int],
        in_graph: bool = False,
    ) -> None:
        """Validation recall@k over a batched catalogue of item inputs with
        ``ITEM_KEY``: embedded once per validation pass (``CatalogueTopK``),
        or with ``in_graph`` embedded whole inside each step (``InGraphTopK``,
        for ``ParameterServerStrategy``; memory grows with batch x catalogue)."""
        from trainer.data import ITEM_INPUTS, ITEM_KEY

        self.ks = tuple(ks)
        batches = list(candidates)
        keys = tf.concat([b[ITEM_KEY] for b in batches], 0)
        if in_graph:
            catalogue = {n: tf.concat([b[n] for b in batches], 0) for n in ITEM_INPUTS}
            top_k = InGraphTopK(
                lambda: item_model(catalogue, training=False)["embedding"], keys, max(self.ks)
            )
        else:

            @tf.function
            def embed_batch(batch):
                return item_model(batch, training=False)["embedding"]

            def embed():
                return tf.concat([embed_batch({n: b[n] for n in ITEM_INPUTS}) for b in batches], 0)

            dim = int(item_model.output["embedding"].shape[-1])
            top_k = CatalogueTopK(embed, keys, dim, max(self.ks))
        self.top_k = RecallAtK(candidates=top_k, ks=self.ks, name="retrieval_top_k")

    def before_validation(self) -> None:
        if self.top_k is not None and isinstance(self.top_k._candidates, CatalogueTopK):
            self.top_k._candidates.refresh()

    def validation_metrics(self) -> List[keras.metrics.Metric]:
        return [self.top_k] if self.top_k is not None else []

    def selection_metric(self, retrieval_ks: Sequence[int]) -> Optional[Tuple[str, bool]]:
        return (f"{self.task.name}_recall_at_{max(retrieval_ks)}", True)

    def validation_logs(self, step: Step) -> Dict[str, tf.Tensor]:
        query = step.cache.get(f"{self.task.name}_query")
        if self.top_k is None or query is None:
            return {}
        from trainer.data import ITEM_KEY

        self.top_k.update_state(
            query,
            query,
            true_candidate_ids=step.inputs[ITEM_KEY],
            sample_weight=self.loss_weight(step),
        )
        return {
            f"{self.task.name}_recall_at_{k}": value
            for k, value in zip(self.ks, self.top_k.result(), strict=True)
        }

    def tfma_keys(self, retrieval_ks: Sequence[int]) -> Dict[str, Tuple[str, str]]:
        return {
            C.retrieval_hit_output(k): (self.task.label, F.RETRIEVAL_POSITIVE_WEIGHT)
            for k in retrieval_ks
        }

    def tfma_specs(self, gated: GatedMetric, retrieval_ks: Sequence[int]) -> List[object]:
        """recall@k: the mean of ``evaluate``'s per-example hits over clicked
        impressions; the largest k is gated."""
        import tensorflow_model_analysis as tfma

        specs = []
        for k in sorted(retrieval_ks):
            name = f"recall_at_{k}"
            metric = (
                gated(self.tfma_metric, name=name)
                if k == max(retrieval_ks)
                else tfma.MetricConfig(
                    class_name=self.tfma_metric, config=json.dumps({"name": name})
                )
            )
            specs.append(
                tfma.MetricsSpec(output_names=[C.retrieval_hit_output(k)], metrics=[metric])
            )
        return specs

    def owns_output(self, output_name: str) -> bool:
        return output_name.startswith(F.RETRIEVAL_HIT_PREFIX) or output_name == self.task.name

    def report_columns(self, outputs: Sequence[str]) -> Dict[Tuple[str, str], str]:
        """Recall at the largest k evaluated."""
        prefix = F.RETRIEVAL_HIT_PREFIX
        ks = [int(o[len(prefix) :]) for o in outputs if o.startswith(prefix)]
        if not ks:
            return {}
        k = max(ks)
        return {(C.retrieval_hit_output(k), f"recall_at_{k}"): f"{self.task.name} recall@{k}"}


KINDS: Dict[str, Type[TaskKind]] = {
    cls.kind: cls for cls in (Retrieval, Binary, Regression, Multiclass, Multilabel)
}
assert tuple(sorted(KINDS)) == tuple(sorted(F.TASK_KINDS)), "features.TASK_KINDS and KINDS differ"


def kind_of(task: F.Task) -> TaskKind:
    """A task's kind object (cheap: training state is made by ``prepare_training``)."""
    return KINDS[task.kind](task)


def retrieval_task(task_names: Sequence[str]) -> Optional[F.Task]:
    """The active retrieval task, whose export is the ``recommend`` signature and
    ``evaluate``'s hit outputs (the serving contract), if one is on."""
    tasks = (F.task(name) for name in task_names)
    return next((t for t in tasks if isinstance(kind_of(t), Retrieval)), None)


def task_of_output(output_name: str, tasks: Optional[Sequence[F.Task]] = None) -> str:
    """The task an evaluated output belongs to (retrieval's hits at each k are one
    task's recall_at_k metrics); an unknown output is its own name."""
    tasks = F.TASKS if tasks is None else tasks
    return next((t.name for t in tasks if kind_of(t).owns_output(output_name)), output_name)
