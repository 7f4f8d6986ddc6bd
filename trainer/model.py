"""The multi-task two-tower recommender with one shared keras-nlp text encoder.

``build_network`` is the functional graph (transformed features -> one output
per task) that is exported; ``MultiTaskRecommender`` wraps it with the joint
training step: per-task weighted losses, a task without labels in a batch adds
nothing, and static or learned (uncertainty) task weights combine them.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional

import tensorflow as tf

from trainer import features as F
from trainer import task_kinds
from trainer.config import ModelConfig
from trainer.data import ITEM_INPUTS, MODEL_INPUTS, USER_INPUTS
from trainer.history_encoder import HistoryEncoder
from trainer.sentence_encoder import FineTunedTextEncoder, train_top_layers
from trainer.text_encoder import MaskedMeanPooling, build_text_encoder  # noqa: F401  (re-export)

keras = tf.keras

_EPSILON = 1e-9


# ``vocab_sizes`` keys: the pretrained text vectors' width (0: the encoder is
# off) and the item text's WordPiece length when the encoder is fine-tuned
# (0: it is frozen and the item's vector is an input).
PRETRAINED_TEXT_DIM = "pretrained_text_dim"
PRETRAINED_TEXT_LENGTH = "pretrained_text_length"
_VECTORS = (F.ITEM_TEXT_VECTOR, F.HISTORY_TEXT_VECTOR)


def _inputs(names, vocab_sizes: Mapping[str, int]) -> Dict[str, keras.Input]:
    pretrained_dim = int(vocab_sizes.get(PRETRAINED_TEXT_DIM, 0))
    token_length = int(vocab_sizes.get(PRETRAINED_TEXT_LENGTH, 0))
    lengths = {
        F.ITEM_TOKENS_XF: F.ITEM_TEXT_LENGTH,
        F.HISTORY_TOKENS_XF: F.HISTORY_TEXT_LENGTH,
        F.ITEM_TEXT_VECTOR: 0 if token_length else pretrained_dim,
        F.HISTORY_TEXT_VECTOR: pretrained_dim,
        F.ITEM_TEXT_TOKEN_IDS: token_length,
        F.HISTORY_ITEM_INDEX_XF: F.HISTORY_IDS_LENGTH,
    }
    return {
        name: keras.Input(
            shape=(lengths[name],) if name in lengths else (),
            dtype=tf.float32 if name in _VECTORS else tf.int64,
            name=name,
        )
        for name in names
    }


def _l2_normalize(name: str) -> keras.layers.Layer:
    return keras.layers.Lambda(
        lambda x: tf.math.l2_normalize(tf.cast(x, tf.float32), axis=-1), dtype="float32", name=name
    )


class IdDropout(keras.layers.Layer):
    """In training, replaces each id by the out-of-vocabulary index with
    probability ``rate``: the towers learn to score an item from its text and
    category alone, as they must for items first seen after training."""

    def __init__(self, rate: float, oov_index: int, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.oov_index = float(rate), int(oov_index)

    def call(self, ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        if not training or self.rate <= 0:
            return ids
        dropped = tf.random.uniform(tf.shape(ids)) < self.rate
        return tf.where(dropped, tf.cast(self.oov_index, ids.dtype), ids)


def build_network(
    config: ModelConfig,
    vocab_sizes: Mapping[str, int],
    text_backbone: Optional[keras.Model] = None,
) -> keras.Model:
    """Transformed features -> {task name: output} for the active tasks.

    The model carries ``user_model`` and ``item_model`` (the towers, returning
    L2-normalised retrieval embeddings) and ``text_encoder``; each task's head
    is its kind's ``build_output`` (``trainer/task_kinds.py``).

    Args:
      config: the hyperparameters and the active tasks.
      vocab_sizes: embedding table sizes by transformed id feature name,
        ``F.TEXT_VOCAB`` for the lexical encoder's vocabulary and
        ``PRETRAINED_TEXT_DIM`` for the pretrained text vectors (0 or absent: off)
        and ``PRETRAINED_TEXT_LENGTH`` (> 0: the encoder is fine-tuned).
      text_backbone: the pretrained backbone to fine-tune in the item tower
        (``sentence_encoder.train_top_layers`` decides which layers train);
        required with ``PRETRAINED_TEXT_LENGTH``.
    """
    max_length = max(F.ITEM_TEXT_LENGTH, F.HISTORY_TEXT_LENGTH)
    text_encoder = build_text_encoder(
        config.text_dim,
        config.text_heads,
        config.text_layers,
        config.text_intermediate_dim,
        config.dropout,
        vocab_sizes[F.TEXT_VOCAB],
        max_length,
    )
    pretrained_dim = int(vocab_sizes.get(PRETRAINED_TEXT_DIM, 0))
    # One adapter for the item's and the history's pretrained vectors: the
    # frozen encoder's space, projected once for both towers.
    adapter = (
        keras.layers.Dense(config.text_dim, name="pretrained_text_adapter")
        if pretrained_dim
        else keras.layers.Identity(name="pretrained_text_off")
    )

    fine_tuned = int(vocab_sizes.get(PRETRAINED_TEXT_LENGTH, 0)) > 0
    if fine_tuned and text_backbone is None:
        raise ValueError("a fine-tuned text encoder needs its text_backbone")
    fine_tuned_encoder = (
        FineTunedTextEncoder(text_backbone, name="fine_tuned_text_encoder") if fine_tuned else None
    )

    embeddings = {
        name: keras.layers.Embedding(
            vocab_sizes[name], config.embedding_dim, name=f"{name}_embedding"
        )
        for name in (F.USER_ID_XF, F.ITEM_ID_XF, F.ITEM_CATEGORY_XF)
    }

    def embedding(inputs, name: str) -> tf.Tensor:
        return embeddings[name](inputs[name])

    user_in = _inputs(USER_INPUTS, vocab_sizes)
    user_features = [
        embedding(user_in, F.USER_ID_XF),
        text_encoder(user_in[F.HISTORY_TOKENS_XF]),
        adapter(user_in[F.HISTORY_TEXT_VECTOR]),
    ]
    if config.history_length:
        user_features.append(
            HistoryEncoder(
                embeddings[F.ITEM_ID_XF],
                config.history_length,
                config.text_heads,
                config.history_layers,
                config.text_intermediate_dim,
                config.dropout,
                name="history_encoder",
            )(user_in[F.HISTORY_ITEM_INDEX_XF])
        )
    user_vector = keras.layers.Dense(config.tower_dim, activation="relu", name="user_tower")(
        keras.layers.Concatenate(name="user_features")(user_features)
    )
    user_embedding = _l2_normalize("user_embedding")(
        keras.layers.Dense(config.embedding_dim, name="user_projection")(user_vector)
    )
    user_model = keras.Model(
        user_in, {"vector": user_vector, "embedding": user_embedding}, name="user_model"
    )

    item_in = _inputs(ITEM_INPUTS, vocab_sizes)
    item_text = text_encoder(item_in[F.ITEM_TOKENS_XF])
    item_pretrained = (
        fine_tuned_encoder(item_in[F.ITEM_TEXT_TOKEN_IDS])
        if fine_tuned_encoder is not None
        else item_in[F.ITEM_TEXT_VECTOR]
    )
    item_vector = keras.layers.Dense(config.tower_dim, activation="relu", name="item_tower")(
        keras.layers.Concatenate(name="item_features")(
            [
                embeddings[F.ITEM_ID_XF](
                    IdDropout(
                        config.item_id_dropout,
                        oov_index=vocab_sizes[F.ITEM_ID_XF] - 1,
                        name="item_id_dropout",
                    )(item_in[F.ITEM_ID_XF])
                ),
                embedding(item_in, F.ITEM_CATEGORY_XF),
                item_text,
                adapter(item_pretrained),
            ]
        )
    )
    item_embedding = _l2_normalize("item_embedding")(
        keras.layers.Dense(config.embedding_dim, name="item_projection")(item_vector)
    )
    item_model = keras.Model(
        item_in,
        {"vector": item_vector, "embedding": item_embedding, "text": item_text},
        name="item_model",
    )

    inputs = _inputs(MODEL_INPUTS, vocab_sizes)
    user = user_model({name: inputs[name] for name in USER_INPUTS})
    item = item_model({name: inputs[name] for name in ITEM_INPUTS})
    joint = keras.layers.Concatenate(name="user_item")(
        [user["vector"], item["vector"], keras.layers.Multiply()([user["vector"], item["vector"]])]
    )
    joint = keras.layers.Dropout(config.dropout)(joint)
    joint = keras.layers.Dense(config.tower_dim, activation="relu", name="interaction")(joint)

    def id_biases(task: str, head: str) -> Optional[tf.Tensor]:
        """The user's plus the item's learned bias for one head of ``task``, [batch, 1]."""
        if task not in config.id_biases:
            return None
        return keras.layers.Add(dtype="float32", name=f"{head}_id_biases")(
            [
                # A scalar per id, starting at 0, L2-penalised over the table.
                keras.layers.Embedding(
                    vocab_sizes[name],
                    1,
                    embeddings_initializer="zeros",
                    embeddings_regularizer=keras.regularizers.l2(config.id_bias_l2),
                    dtype="float32",
                    name=f"{head}_{name}_bias",
                )(inputs[name])
                for name in (F.USER_ID_XF, F.ITEM_ID_XF)
            ]
        )

    towers = task_kinds.Towers(
        user, item, joint, vocab_sizes[F.ITEM_CATEGORY_XF], id_biases, config.rating_range
    )
    outputs: Dict[str, tf.Tensor] = {}
    # Heads compute in float32 even under mixed precision.
    for task in config.active_tasks():
        outputs[task.name] = task_kinds.kind_of(task).build_output(towers, outputs)
    network = keras.Model(inputs, outputs, name="multitask_recommender")
    network.user_model, network.item_model, network.text_encoder = (
        user_model,
        item_model,
        text_encoder,
    )
    return network


def vocabulary_axes(network: keras.Model) -> Dict[int, tuple]:
    """{id(variable): (vocabulary name, axis)} for every weight of
    ``network`` indexed by a Transform vocabulary: the id embeddings and id
    biases (rows), the text encoder's token embedding (rows), and the
    per-category heads (output columns). What a warm start remaps when a
    vocabulary changes (``trainer/warm_start.py``); the layer names are the
    ones ``build_network`` gives."""
    import keras_nlp

    by_xf = {F.transformed_name(raw): vocab for raw, vocab in F.ID_VOCABS.items()}
    per_category = {
        task.name for task in F.TASKS if getattr(task_kinds.kind_of(task), "per_category", False)
    }
    axes: Dict[int, tuple] = {}
    for layer in network.submodules:
        if isinstance(layer, keras_nlp.layers.TokenAndPositionEmbedding):
            axes[id(layer.token_embedding.embeddings)] = (F.TEXT_VOCAB, 0)
        elif isinstance(layer, keras.layers.Embedding):
            for xf, vocab in by_xf.items():
                if layer.name == f"{xf}_embedding" or layer.name.endswith(f"_{xf}_bias"):
                    axes[id(layer.embeddings)] = (vocab, 0)
        elif isinstance(layer, keras.layers.Dense) and layer.name in per_category:
            axes[id(layer.kernel)] = (F.ID_VOCABS[F.ITEM_CATEGORY], 1)
            axes[id(layer.bias)] = (F.ID_VOCABS[F.ITEM_CATEGORY], 0)
    return axes


class TaskWeighting(keras.layers.Layer):
    """Combines per-task losses into one.

    static: sum_i w_i L_i. uncertainty (Kendall, Gal & Cipolla 2018):
    sum_i w_i exp(-s_i) L_i + s_i with a learned log-variance s_i per task.
    A task absent from the batch (present_i = 0) adds neither term.
    """

    def __init__(
        self, task_names: List[str], static_weights: Mapping[str, float], learned: bool, **kwargs
    ):
        super().__init__(dtype="float32", **kwargs)
        self.task_names = list(task_names)
        self.static = tf.constant([float(static_weights.get(n, 1.0)) for n in self.task_names])
        self.learned = learned
        self.log_variance = (
            self.add_weight(
                name="log_variance",
                shape=(len(self.task_names),),
                initializer="zeros",
                trainable=True,
            )
            if learned
            else None
        )

    def call(self, losses: Mapping[str, tf.Tensor], present: Mapping[str, tf.Tensor]) -> tf.Tensor:
        loss = tf.stack([tf.cast(losses[n], tf.float32) for n in self.task_names])
        mask = tf.stack([tf.cast(present[n], tf.float32) for n in self.task_names])
        if not self.learned:
            return tf.reduce_sum(mask * self.static * loss)
        s = self.log_variance
        return tf.reduce_sum(mask * (self.static * tf.exp(-s) * loss + s))

    def effective_weights(self) -> Dict[str, tf.Tensor]:
        weights = self.static * (tf.exp(-self.log_variance) if self.learned else 1.0)
        return {name: weights[i] for i, name in enumerate(self.task_names)}


class MultiTaskRecommender(keras.Model):
    """Trains ``build_network``'s heads jointly; ``network`` is what gets exported."""

    def __init__(
        self,
        config: ModelConfig,
        vocab_sizes: Mapping[str, int],
        text_backbone: Optional[keras.Model] = None,
        **kwargs,
    ):
        super().__init__(name="multitask_trainer", **kwargs)
        self.config = config
        self.vocab_sizes = dict(vocab_sizes)
        self.tasks = config.active_tasks()
        # The fine-tuned encoder's variables get their own (lower) learning rate.
        self.encoder_variables = (
            train_top_layers(text_backbone, config.fine_tune_layers)
            if text_backbone is not None
            else []
        )
        self.encoder_optimizer = None
        self.network = build_network(config, vocab_sizes, text_backbone)
        self.weighting = TaskWeighting(
            [t.name for t in self.tasks],
            config.effective_task_weights(),
            learned=config.loss_weighting == "uncertainty",
        )
        self._heads = [task_kinds.kind_of(t) for t in self.tasks]
        for head in self._heads:
            head.prepare_training(config)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.task_loss_trackers = {
            t.name: keras.metrics.Mean(name=f"{t.name}_loss") for t in self.tasks
        }
        self.task_metrics = {
            h.task.name: m for h in self._heads if (m := h.keras_metric()) is not None
        }

    def get_config(self) -> Dict[str, object]:
        return {"config": self.config.to_dict(), "vocab_sizes": dict(self.vocab_sizes)}

    def set_candidates(
        self, candidates: tf.data.Dataset, num_candidates: int, in_graph: bool = False
    ) -> None:
        """Validation retrieval metrics over a batched catalogue dataset of item
        inputs with ``ITEM_KEY``: recall@k for each ``config.retrieval_ks``
        (``in_graph``: the catalogue embedded inside each step, see
        ``task_kinds.InGraphTopK``)."""
        ks = tuple(min(k, num_candidates) for k in self.config.retrieval_ks)
        for head in self._heads:
            if isinstance(head, task_kinds.Retrieval):
                head.set_candidates(self.network.item_model, candidates, ks, in_graph)

    def evaluate(self, *args, **kwargs):
        """Keras ``evaluate`` (``fit`` validates through it), after each task
        head's ``before_validation`` (the catalogue embedded for recall@k)."""
        for head in self._heads:
            head.before_validation()
        return super().evaluate(*args, **kwargs)

    @property
    def metrics(self) -> List[keras.metrics.Metric]:
        return [
            self.loss_tracker,
            *self.task_loss_trackers.values(),
            *self.task_metrics.values(),
            *self._validation_metrics(),
        ]

    def _validation_metrics(self) -> List[keras.metrics.Metric]:
        return [m for head in self._heads for m in head.validation_metrics()]

    def call(self, inputs: Mapping[str, tf.Tensor], training: bool = False) -> Dict[str, tf.Tensor]:
        return self.network({name: inputs[name] for name in MODEL_INPUTS}, training=training)

    def _task_losses(self, inputs, labels, weights, training: bool):
        """Each task's weighted mean loss over the *global* batch, and whether
        it had any label there. Under a multi-replica strategy a replica's
        loss is its share, scaled so that the losses summed over replicas
        and divided by their number (``train_step``) are the global mean:
        a replica without ratings adds none, instead of the mean of
        per-replica means (TensorFlow's ``compute_average_loss`` semantics,
        with example weights)."""
        outputs = self(inputs, training=training)
        step = task_kinds.Step(self.network, inputs, outputs, labels, weights, training)
        sums, weight_sums = {}, {}
        for head in self._heads:
            weight = head.loss_weight(step)
            per_example = head.per_example_loss(step)
            sums[head.task.name] = tf.reduce_sum(weight * tf.cast(per_example, tf.float32))
            weight_sums[head.task.name] = tf.reduce_sum(weight)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        names = list(weight_sums)
        global_weights = tf.stack([weight_sums[n] for n in names])
        if replicas > 1:
            context = tf.distribute.get_replica_context()
            global_weights = context.all_reduce(tf.distribute.ReduceOp.SUM, global_weights)
        losses, present = {}, {}
        for i, name in enumerate(names):
            losses[name] = replicas * sums[name] / tf.maximum(global_weights[i], _EPSILON)
            present[name] = tf.cast(global_weights[i] > 0, tf.float32)
        return step, losses, present

    def _update_metrics(self, step, losses, present, total) -> Dict[str, tf.Tensor]:
        self.loss_tracker.update_state(total)
        for name, tracker in self.task_loss_trackers.items():
            tracker.update_state(losses[name], sample_weight=present[name])
        for head in self._heads:
            name = head.task.name
            if name in self.task_metrics:
                head.update_metric(
                    self.task_metrics[name],
                    step.labels[name],
                    step.outputs[name],
                    step.weights[name],
                )
        validation = set(map(id, self._validation_metrics()))
        return {m.name: m.result() for m in self.metrics if id(m) not in validation}

    def train_step(self, data):
        inputs, labels, weights = data
        with tf.GradientTape() as tape:
            step, losses, present = self._task_losses(inputs, labels, weights, training=True)
            total = self.weighting(losses, present)
            regularization = tf.add_n(self.losses) if self.losses else 0.0
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            loss = (total + regularization) / replicas
        self._apply_gradients(loss, tape)
        logs = self._update_metrics(step, losses, present, total)
        if self.weighting.learned:
            logs.update(
                {
                    f"{name}_task_weight": value
                    for name, value in self.weighting.effective_weights().items()
                }
            )
        return logs

    def _apply_gradients(self, loss: tf.Tensor, tape: tf.GradientTape) -> None:
        """One optimizer step; a fine-tuned encoder's variables take theirs
        from ``encoder_optimizer``. Under mixed precision the main optimizer
        scales the loss and skips non-finite steps; the encoder's gradients
        are zeroed on such steps."""
        if self.encoder_optimizer is None:
            self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
            return
        encoder = {id(v) for v in self.encoder_variables}
        pairs = self.optimizer.compute_gradients(loss, self.trainable_variables, tape=tape)
        rest = [(g, v) for g, v in pairs if id(v) not in encoder]
        tuned = [(g, v) for g, v in pairs if id(v) in encoder and g is not None]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g, _ in tuned])
        self.optimizer.apply_gradients(rest)
        self.encoder_optimizer.apply_gradients(
            [(tf.where(finite, g, tf.zeros_like(g)), v) for g, v in tuned]
        )

    def test_step(self, data):
        inputs, labels, weights = data
        step, losses, present = self._task_losses(inputs, labels, weights, training=False)
        total = self.weighting(losses, present)
        logs = self._update_metrics(step, losses, present, total)
        for head in self._heads:
            logs.update(head.validation_logs(step))
        return logs

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        keras_function = super().make_train_function(force)
        self.train_function = _without_autograph(keras_function)
        if getattr(self, "train_tf_function", None) is keras_function:
            self.train_tf_function = self.train_function  # the graph TensorBoard writes
        return self.train_function

    def make_test_function(self, force=False):
        if self.test_function is not None and not force:
            return self.test_function
        # XLA compiles the training step only.
        jit, self._jit_compile = self._jit_compile, False
        try:
            self.test_function = _without_autograph(super().make_test_function(force))
        finally:
            self._jit_compile = jit
        return self.test_function


def _without_autograph(function):
    """Keras's step ``tf.function`` traced without AutoGraph. The steps use
    TensorFlow's own control flow (``tf.cond``, ``tf.where``), so there is
    nothing to convert, and converting every layer's ``call`` on each trace
    took most of the 20 s the first training step spent tracing. Keras's
    function is kept where it is no ``tf.function`` (run eagerly, or
    scheduled by a parameter-server coordinator)."""
    python_function = getattr(function, "python_function", None)
    if python_function is None:
        return function
    return tf.function(python_function, reduce_retracing=True, autograph=False)


def build_model(
    config: ModelConfig,
    vocab_sizes: Mapping[str, int],
    jit_compile: bool = False,
    mixed_precision: bool = False,
    text_backbone: Optional[keras.Model] = None,
) -> MultiTaskRecommender:
    """The compiled trainer model (call it, fit it; export ``model.network``).

    With ``mixed_precision`` its layers compute in float16 (heads, embeddings
    and losses stay float32) and the optimizer scales the loss. The policy is
    set only while the model is built: layers that TFRS creates during
    training (accidental-hit removal, top-K) then stay float32.

    Args:
      config: the hyperparameters and the active tasks.
      vocab_sizes: embedding table sizes (see ``build_network``).
      jit_compile: compile the training step with XLA.
      mixed_precision: float16 compute with float32 heads and losses.
      text_backbone: the pretrained backbone to fine-tune (see ``build_network``);
        its variables train at ``config.fine_tune_learning_rate``.
    """
    previous = keras.mixed_precision.global_policy()
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = MultiTaskRecommender(config, vocab_sizes, text_backbone)
        if text_backbone is not None:
            model.encoder_optimizer = keras.optimizers.Adam(config.fine_tune_learning_rate)
        # Losses and metrics live in the model's own steps; weighted_metrics=[]
        # tells Keras the (inputs, labels, weights) triples are intended.
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            weighted_metrics=[],
            jit_compile=jit_compile,
        )
        # The steps return metric results, already the same on every replica:
        # Keras' default ("auto": a sum over replicas) would log n times them.
        model.distribute_reduction_method = "first"
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return model
