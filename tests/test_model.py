"""The multi-task model on random transformed inputs."""

import keras_nlp
import numpy as np
import pytest
import tensorflow as tf

from trainer import features as F
from trainer.catalog import catalog_dataset
from trainer.config import ModelConfig
from trainer.data import ITEM_KEY, multi_hot, split_labels
from trainer.model import PRETRAINED_TEXT_DIM, build_model

NUM_CATEGORIES = 5
TEXT_DIM = 8  # the pretrained text vectors' width
VOCABS = {
    F.USER_ID_XF: 11,
    F.ITEM_ID_XF: 13,
    F.ITEM_CATEGORY_XF: NUM_CATEGORIES,
    F.TEXT_VOCAB: 50,
    PRETRAINED_TEXT_DIM: TEXT_DIM,
}


def _unit(rng, n):
    v = rng.normal(size=(n, TEXT_DIM)).astype("float32")
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _history(rng, n):
    """Item indices, oldest first, -1 padded, 0 to HISTORY_IDS_LENGTH items per user."""
    lengths = rng.integers(0, F.HISTORY_IDS_LENGTH + 1, n)
    index = rng.integers(0, 13, (n, F.HISTORY_IDS_LENGTH))
    return np.where(np.arange(F.HISTORY_IDS_LENGTH) < lengths[:, None], index, -1)


def _batch(n=16, seed=0, rated=0.5):
    rng = np.random.default_rng(seed)

    def tokens(length):
        return np.where(rng.random((n, length)) < 0.6, rng.integers(2, 50, (n, length)), 0)

    items = rng.integers(0, 13, n)
    history_categories = tf.sparse.from_dense(rng.integers(0, NUM_CATEGORIES, (n, 2)) + 1)
    history_categories = tf.SparseTensor(
        history_categories.indices, history_categories.values - 1, history_categories.dense_shape
    )
    batch = {
        F.USER_ID_XF: rng.integers(0, 11, n),
        F.ITEM_ID_XF: items,
        F.ITEM_ID: np.array([f"i{i}".encode() for i in items]),
        F.ITEM_CATEGORY_XF: items % NUM_CATEGORIES,
        F.ITEM_TOKENS_XF: tokens(F.ITEM_TEXT_LENGTH),
        F.HISTORY_TOKENS_XF: tokens(F.HISTORY_TEXT_LENGTH),
        F.ITEM_TEXT_VECTOR: _unit(np.random.default_rng(100), 13)[items],
        F.HISTORY_TEXT_VECTOR: _unit(rng, n),
        F.ITEM_TEXT_TOKEN_IDS: np.zeros((n, 0), np.int64),  # the encoder is frozen
        F.HISTORY_ITEM_INDEX_XF: _history(rng, n),
        F.CLICK: rng.integers(0, 2, n).astype("float32"),
        F.PURCHASE: (rng.random(n) < 0.2).astype("float32"),
        F.RATING: rng.integers(1, 6, n).astype("float32"),
        F.RATING_WEIGHT: (rng.random(n) < rated).astype("float32"),
        F.IMPRESSION_WEIGHT: np.ones(n, "float32"),
        F.INTEREST_WEIGHT: np.ones(n, "float32"),
    }
    batch = {k: tf.constant(v) for k, v in batch.items()}
    batch[F.HISTORY_CATEGORIES_XF] = history_categories
    return batch


def _split(batch, config=None):
    tasks = (config or ModelConfig()).active_tasks()
    return split_labels(batch, tasks, NUM_CATEGORIES)


def _catalog():
    rng = np.random.default_rng(3)
    return {
        F.ITEM_ID: np.array([f"i{i}".encode() for i in range(13)], dtype=object),
        F.ITEM_ID_XF: np.arange(13),
        F.ITEM_CATEGORY_XF: np.arange(13) % NUM_CATEGORIES,
        F.ITEM_TOKENS_XF: rng.integers(0, 50, (13, F.ITEM_TEXT_LENGTH)),
        F.ITEM_TEXT_VECTOR: _unit(np.random.default_rng(100), 13),
        F.ITEM_TEXT_TOKEN_IDS: np.zeros((13, 0), np.int64),
    }


def test_every_task_output_is_finite_with_its_shape():
    model = build_model(ModelConfig(), VOCABS)
    inputs, _, _ = _split(_batch())
    outputs = model(inputs)
    assert set(outputs) == set(F.TASK_NAMES)
    widths = {"category": NUM_CATEGORIES, "interest": NUM_CATEGORIES}
    for name, value in outputs.items():
        assert value.shape == (16, widths.get(name, 1)), name
        assert np.all(np.isfinite(value.numpy())), name
    assert np.all((outputs["click"].numpy() > 0) & (outputs["click"].numpy() < 1))
    # ESMM: p(conversion) = p(click) * p(conversion | click) <= p(click)
    assert np.all(outputs["conversion"].numpy() <= outputs["click"].numpy() + 1e-7)
    np.testing.assert_allclose(outputs["category"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(np.abs(outputs["retrieval"].numpy()) <= 1.0 + 1e-5)  # cosine of unit embeddings


def test_multi_hot_marks_each_id_once():
    ids = tf.SparseTensor([[0, 0], [0, 1], [2, 0]], tf.constant([1, 1, 3], tf.int64), [3, 2])
    np.testing.assert_array_equal(
        multi_hot(ids, 4).numpy(), [[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
    )


def test_one_text_encoder_is_shared_by_both_towers():
    network = build_model(ModelConfig(), VOCABS).network
    encoder = network.text_encoder
    # Called on the history (user tower) and on the item text (item tower).
    assert encoder in network.user_model.layers and encoder in network.item_model.layers
    embeddings = [
        layer
        for layer in encoder.layers
        if isinstance(layer, keras_nlp.layers.TokenAndPositionEmbedding)
    ]
    assert len(embeddings) == 1
    all_variables = [v for v in network.variables if "token_and_position" in v.name]
    assert len({id(v) for v in all_variables}) == len(embeddings[0].variables)
    encoder_vars = {id(w) for w in encoder.weights}
    assert encoder_vars <= {id(w) for w in network.user_model.trainable_weights}
    assert encoder_vars <= {id(w) for w in network.item_model.trainable_weights}


def _dataset(batch, config=None):
    return tf.data.Dataset.from_tensors(batch).map(lambda b: _split(b, config)).repeat()


def test_joint_training_lowers_every_task_loss():
    data = _dataset(_batch(64, seed=1))
    model = build_model(ModelConfig(learning_rate=1e-2, dropout=0.0), VOCABS)
    before = model.evaluate(data, steps=1, verbose=0, return_dict=True)
    model.fit(data, steps_per_epoch=40, epochs=1, verbose=0)
    after = model.evaluate(data, steps=1, verbose=0, return_dict=True)
    for name in F.TASK_NAMES:
        assert after[f"{name}_loss"] < before[f"{name}_loss"], name


def test_a_task_without_labels_in_the_batch_adds_no_loss_or_gradient():
    batch = _batch(32, seed=2, rated=0.0)  # no rating in the batch
    model = build_model(ModelConfig(), VOCABS)
    inputs, labels, weights = _split(batch)
    _, losses, present = model._task_losses(inputs, labels, weights, training=False)
    assert float(present["rating"]) == 0.0 and float(present["click"]) == 1.0
    head = model.network.get_layer("rating_raw").trainable_variables
    with tf.GradientTape() as tape:
        _, losses, present = model._task_losses(inputs, labels, weights, training=True)
        total = model.weighting(losses, present)
    gradients = tape.gradient(total, head)
    assert all(g is None or float(tf.reduce_max(tf.abs(g))) == 0.0 for g in gradients)


def test_uncertainty_weights_are_trained():
    model = build_model(ModelConfig(loss_weighting="uncertainty"), VOCABS)
    model.fit(_dataset(_batch(32, seed=4)), steps_per_epoch=10, epochs=1, verbose=0)
    log_variance = model.weighting.log_variance.numpy()
    assert log_variance.shape == (len(F.TASK_NAMES),)
    assert np.all(np.abs(log_variance) > 1e-4)
    assert any(v is model.weighting.log_variance for v in model.trainable_variables)
    static = build_model(ModelConfig(), VOCABS)
    assert static.weighting.log_variance is None


def test_validation_reports_recall_at_k_over_the_catalogue():
    config = ModelConfig(retrieval_ks=(1, 5))
    model = build_model(config, VOCABS)
    model.set_candidates(catalog_dataset(_catalog(), batch_size=4), 13)
    data = _dataset(_batch(32, seed=5), config)
    logs = model.evaluate(data, steps=2, verbose=0, return_dict=True)
    assert 0.0 <= logs["retrieval_recall_at_1"] <= logs["retrieval_recall_at_5"] <= 1.0
    assert _split(_batch())[0][ITEM_KEY].dtype == tf.int64


def _streaming_top_k(model, candidates, ks):
    """TFRS's own streaming top-k over the catalogue dataset: the reference."""
    import tensorflow_recommenders as tfrs

    from trainer.data import ITEM_INPUTS, ITEM_KEY
    from trainer.task_kinds import RecallAtK, Retrieval

    item_model = model.network.item_model
    embedded = candidates.map(
        lambda b: (b[ITEM_KEY], item_model({n: b[n] for n in ITEM_INPUTS})["embedding"])
    )
    (head,) = [h for h in model._heads if isinstance(h, Retrieval)]
    streaming = tfrs.layers.factorized_top_k.Streaming(k=max(ks)).index_from_dataset(embedded)
    head.top_k = RecallAtK(candidates=streaming, ks=ks, name="retrieval_top_k")


@pytest.mark.parametrize("top_k", ["cached", "in_graph"])
def test_validation_top_k_gives_tfrs_streaming_recall_after_training(top_k):
    """The catalogue embedded once per validation pass (the default) and the
    one embedded inside each step (parameter servers) report TFRS's
    streaming recall@k, after training moved the item tower: fit's
    validation and a later evaluate both see the current weights."""
    config = ModelConfig(retrieval_ks=(1, 5))
    data = _dataset(_batch(32, seed=5), config)
    candidates = catalog_dataset(_catalog(), batch_size=4)
    recalls = []
    for variant in ("streaming", top_k):
        tf.keras.utils.set_random_seed(3)
        model = build_model(config, VOCABS)
        model.set_candidates(candidates, 13, in_graph=variant == "in_graph")
        if variant == "streaming":
            _streaming_top_k(model, candidates, (1, 5))
        history = model.fit(
            data, steps_per_epoch=2, epochs=2, validation_data=data, validation_steps=2, verbose=0
        )
        logs = model.evaluate(data, steps=2, verbose=0, return_dict=True)
        recalls.append(
            [*history.history["val_retrieval_recall_at_5"], logs["retrieval_recall_at_1"]]
            + [logs["retrieval_recall_at_5"]]
        )
    np.testing.assert_allclose(recalls[1], recalls[0], atol=1e-6)
    assert recalls[0][-1] > 0  # the comparison says something


def test_unknown_config_key_is_rejected():
    with pytest.raises(ValueError, match="embeding_dim"):
        ModelConfig.from_dict({"embeding_dim": 8})
    with pytest.raises(ValueError, match="loss_weighting"):
        ModelConfig(loss_weighting="magic")


def test_fit_writes_tensorboard_logs_with_the_train_graph(tmp_path):
    """The steps traced without AutoGraph are still the functions Keras's
    TensorBoard callback reads the train graph from."""
    config = ModelConfig(retrieval_ks=(1, 5))
    data = _dataset(_batch(32, seed=5), config)
    model = build_model(config, VOCABS)
    model.set_candidates(catalog_dataset(_catalog(), batch_size=4), 13)
    board = tf.keras.callbacks.TensorBoard(log_dir=str(tmp_path), update_freq="epoch")
    model.fit(
        data,
        steps_per_epoch=2,
        epochs=1,
        validation_data=data,
        validation_steps=1,
        callbacks=[board],
        verbose=0,
    )
    assert model.train_tf_function is model.train_function
    assert list((tmp_path / "train").glob("events.out.tfevents.*"))
    assert list((tmp_path / "validation").glob("events.out.tfevents.*"))


def test_tasks_can_be_switched_off():
    config = ModelConfig(tasks=("click", "rating"))
    model = build_model(config, VOCABS)
    inputs, labels, weights = _split(_batch(), config)
    assert set(model(inputs)) == set(labels) == set(weights) == {"click", "rating"}
    assert not any(
        "conversion" in layer.name or layer.name in ("category", "interest", "retrieval")
        for layer in model.network.layers
    )
    model.fit(_dataset(_batch(), config), steps_per_epoch=2, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="needs task 'click'"):
        ModelConfig(tasks=("conversion",))
    with pytest.raises(KeyError, match="ranking"):
        ModelConfig(tasks=("ranking",))


def test_a_remote_or_missing_encoder_is_refused():
    with pytest.raises(ValueError, match="never downloaded"):
        ModelConfig(pretrained_text_encoder="kaggle://keras/bert/keras/bert_tiny_en_uncased")
    with pytest.raises(ValueError, match="local directory"):
        ModelConfig(pretrained_text_encoder="/nonexistent/preset")
    with pytest.raises(ValueError, match="pretrained_text_length"):
        ModelConfig(pretrained_text_length=2)
    assert ModelConfig(pretrained_text_encoder=None).pretrained_text_encoder is None


def test_training_callbacks_checkpoint_and_stop_early(tmp_path):
    from trainer.task import accelerator_setup, training_callbacks

    names = [type(c).__name__ for c in training_callbacks(ModelConfig(), str(tmp_path))]
    assert names == ["TaskSelection", "TensorBoard", "ModelCheckpoint", "EarlyStopping"]
    backed_up = training_callbacks(ModelConfig(), str(tmp_path), str(tmp_path / "backup"))
    assert type(backed_up[0]).__name__ == "ResumableTraining"  # restores before the others start
    assert backed_up[0].backup_dir == str(tmp_path / "backup")
    assert "EarlyStopping" not in [
        type(c).__name__
        for c in training_callbacks(ModelConfig(early_stopping_patience=0), str(tmp_path))
    ]
    strategy, jit, mixed = accelerator_setup(ModelConfig())
    if not tf.config.list_physical_devices("GPU"):
        assert jit is False and mixed is False
        assert not isinstance(strategy, tf.distribute.MirroredStrategy)


GPU_PATH_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from trainer import keras_env  # noqa: F401
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tests.test_model import VOCABS, _batch, _dataset
from trainer.config import ModelConfig
from trainer.model import build_model
# The GPU settings of trainer.task.accelerator_setup: MirroredStrategy over
# the devices with mixed precision; then XLA with mixed precision on one
# device (XLA across logical CPU devices is a known XLA limitation that GPUs
# do not share).
for devices, jit in ((["/cpu:0", "/cpu:1"], False), (["/cpu:0"], True)):
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        model = build_model(ModelConfig(loss_weighting="uncertainty"), VOCABS, jit_compile=jit,
                            mixed_precision=True)
    assert isinstance(model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    assert model.network.get_layer("interaction").compute_dtype == "float16"
    assert model.network.get_layer("click").compute_dtype == "float32"
    history = model.fit(_dataset(_batch(32, seed=6)), steps_per_epoch=3, epochs=2, verbose=0,
                        validation_data=_dataset(_batch(32, seed=7)), validation_steps=1)
    print("replicas", strategy.num_replicas_in_sync, "xla", jit, "loss", history.history["loss"])
"""


def test_the_gpu_training_path_runs_on_two_cpu_replicas():
    """The multi-GPU path (MirroredStrategy with per-replica loss scaling,
    mixed float16 with loss scaling, XLA-compiled training step) on logical
    CPU devices, in a fresh process so they can be configured."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", GPU_PATH_SCRIPT, root],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line.split() for line in proc.stdout.splitlines() if line.startswith("replicas")]
    assert [(line[1], line[3]) for line in lines] == [("2", "False"), ("1", "True")]
    for line in lines:
        losses = json.loads(" ".join(line[5:]))
        assert len(losses) == 2 and all(np.isfinite(losses))


REPLICA_EQUIVALENCE_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from trainer import keras_env  # noqa: F401
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tests.test_model import VOCABS, _batch, _dataset, _split
from trainer.config import ModelConfig
from trainer.model import build_model
# Everything but the retrieval task, whose in-batch negatives are one replica's batch.
config = ModelConfig(dropout=0.0, item_id_dropout=0.0, learning_rate=1e-2,
                     tasks=("click", "conversion", "rating", "category", "interest"))
inputs, _, _ = _split(_batch(16, seed=9), config)
scores = {}
for devices in (["/cpu:0"], ["/cpu:0", "/cpu:1"]):
    tf.keras.utils.set_random_seed(3)
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        model = build_model(config, VOCABS)
    # Ratings on a quarter of the examples: the replicas see different counts.
    model.fit(_dataset(_batch(32, seed=6, rated=0.25), config), steps_per_epoch=8, epochs=1,
              verbose=0)
    scores[len(devices)] = {k: v.numpy().tolist() for k, v in model.network(inputs).items()}
print("SCORES", json.dumps(scores))
"""

# One replica vs two on the same global batch and steps: the losses are
# weighted means over the global batch, so the two train the same model up
# to the order of float sums.
REPLICA_TOLERANCE = 1e-4


def test_two_replicas_train_the_model_one_replica_trains_on_the_same_global_batch():
    """The synchronous data-parallel path (MirroredStrategy in a process,
    MultiWorkerMirroredStrategy across processes: the same replica code and
    all-reduce): 8 steps of a 32-example batch split over two replicas give
    every score of a one-replica run within REPLICA_TOLERANCE, with ratings
    on a quarter of the examples so the replicas hold different label
    counts. (Retrieval is off: its in-batch negatives are one replica's
    batch by design, as in TFRS.)"""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", REPLICA_EQUIVALENCE_SCRIPT, root],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("SCORES"))
    scores = json.loads(line[len("SCORES") :])
    one, two = scores["1"], scores["2"]
    assert set(one) == {"click", "conversion", "rating", "category", "interest"}
    for name in one:
        difference = np.max(np.abs(np.array(one[name]) - np.array(two[name])))
        assert difference <= REPLICA_TOLERANCE, (name, difference)
    untrained = np.array(one["rating"])
    assert np.ptp(untrained) > 0  # trained scores, not constants


def test_op_determinism_is_on_while_training_and_off_after():
    from tensorflow.python.framework import config as framework_config
    from trainer import task

    assert not framework_config.is_op_determinism_enabled()
    with task.reproducible(ModelConfig(seed=7)):
        assert framework_config.is_op_determinism_enabled()
        first = tf.random.uniform([3]).numpy()
    with task.reproducible(ModelConfig(seed=7, deterministic=False)):
        assert not framework_config.is_op_determinism_enabled()
        assert (tf.random.uniform([3]).numpy() == first).all()
    assert not framework_config.is_op_determinism_enabled()


def _history_vector(encoder, rows):
    return encoder(tf.constant(rows, tf.int64)).numpy()


def test_the_history_encoder_reads_order_and_ignores_padding():
    from trainer.history_encoder import HistoryEncoder, recency

    np.testing.assert_array_equal(
        recency(tf.constant([[4, -1, 7, 2, -1], [-1, -1, -1, -1, -1]])).numpy(),
        [[2, -1, 1, 0, -1], [-1] * 5],
    )
    tf.keras.utils.set_random_seed(0)
    embedding = tf.keras.layers.Embedding(13, 8)
    encoder = HistoryEncoder(embedding, length=4, heads=2, layers=1, intermediate_dim=16, dropout=0)
    rng = np.random.default_rng(5)
    for _ in range(20):  # generated histories of 1..4 distinct items in 6 slots
        items = rng.choice(13, rng.integers(1, 5), replace=False)
        slots = np.sort(rng.choice(6, len(items), replace=False))
        row = np.full(6, -1)
        row[slots] = items
        packed = np.concatenate([items, np.full(6 - len(items), -1)])
        got = _history_vector(encoder, [row, packed])
        np.testing.assert_allclose(got[0], got[1], atol=1e-5)  # padding placement: no change
        if len(items) > 1:
            swapped = packed.copy()
            swapped[[0, len(items) - 1]] = swapped[[len(items) - 1, 0]]
            assert np.abs(_history_vector(encoder, [swapped])[0] - got[1]).max() > 1e-4
    # Only the newest `length` items count; an empty history is zeros.
    older = _history_vector(encoder, [[9, 1, 2, 3, 4, -1], [5, 1, 2, 3, 4, -1]])
    np.testing.assert_allclose(older[0], older[1], atol=1e-6)
    assert not _history_vector(encoder, [[-1] * 6]).any()


def test_the_user_tower_shares_the_item_id_embedding_with_the_history():
    network = build_model(ModelConfig(), VOCABS).network
    item_embedding = network.item_model.get_layer(f"{F.ITEM_ID_XF}_embedding")
    history = network.user_model.get_layer("history_encoder")
    assert history.item_embedding is item_embedding
    inputs, _, _ = _split(_batch(4, seed=3))
    before = network.user_model({n: inputs[n] for n in network.user_model.input})["embedding"]
    inputs[F.HISTORY_ITEM_INDEX_XF] = tf.reverse(inputs[F.HISTORY_ITEM_INDEX_XF], axis=[1])
    after = network.user_model({n: inputs[n] for n in network.user_model.input})["embedding"]
    assert np.abs(before.numpy() - after.numpy()).max() > 1e-5  # the order reaches the tower


def test_item_id_dropout_maps_ids_to_the_unknown_id_in_training_only():
    from trainer.model import IdDropout

    layer = IdDropout(0.3, oov_index=99)
    ids = tf.range(20_000, dtype=tf.int64)
    dropped = layer(ids, training=True).numpy()
    assert set(dropped[dropped != ids.numpy()]) == {99}
    assert 0.28 < np.mean(dropped == 99) < 0.32
    np.testing.assert_array_equal(layer(ids, training=False).numpy(), ids.numpy())


def test_generated_values_of_the_new_config_keys_are_taken_or_named_in_the_error():
    rng = np.random.default_rng(11)
    bounds = {
        "history_length": lambda v: 0 <= v <= F.HISTORY_IDS_LENGTH,
        "history_layers": lambda v: v >= 0,
        "item_id_dropout": lambda v: 0 <= v < 1,
        "fine_tune_layers": lambda v: v >= 1,
        "fine_tune_learning_rate": lambda v: v > 0,
        "id_bias_l2": lambda v: v >= 0,
    }
    for _ in range(200):
        key = list(bounds)[rng.integers(len(bounds))]
        value = (
            float(rng.uniform(-2, 2))
            if key in ("item_id_dropout", "fine_tune_learning_rate", "id_bias_l2")
            else int(rng.integers(-5, 80))
        )
        if bounds[key](value):
            assert getattr(ModelConfig.from_dict({key: value}), key) == value
        else:
            with pytest.raises(ValueError, match=key):
                ModelConfig.from_dict({key: value})


def test_each_scalar_head_adds_its_own_user_and_item_biases():
    config = ModelConfig(dropout=0.0, id_biases=("rating", "click", "conversion"))
    network = build_model(config, VOCABS).network
    inputs, _, _ = _split(_batch(16, seed=5))
    inputs = {name: inputs[name] for name in network.input}
    before = network(inputs)
    users, items = inputs[F.USER_ID_XF].numpy(), inputs[F.ITEM_ID_XF].numpy()
    user_table = np.linspace(-1, 1, VOCABS[F.USER_ID_XF])[:, None]
    item_table = np.linspace(0.5, -0.5, VOCABS[F.ITEM_ID_XF])[:, None]
    for head in ("rating", "click"):
        network.get_layer(f"{head}_{F.USER_ID_XF}_bias").embeddings.assign(user_table)
        network.get_layer(f"{head}_{F.ITEM_ID_XF}_bias").embeddings.assign(item_table)
    after = network(inputs)
    shift = user_table[users] + item_table[items]
    np.testing.assert_allclose(after["rating"].numpy() - before["rating"].numpy(), shift, atol=1e-5)

    def logit(p):
        return np.log(p) - np.log1p(-p)

    np.testing.assert_allclose(
        logit(after["click"].numpy()) - logit(before["click"].numpy()), shift, atol=1e-3
    )
    for name in ("retrieval", "category", "interest"):
        np.testing.assert_allclose(after[name].numpy(), before[name].numpy(), atol=1e-6)
    assert network.get_layer(f"conversion_given_click_{F.ITEM_ID_XF}_bias")
    without = build_model(ModelConfig(id_biases=()), VOCABS).network
    assert not [layer for layer in without.layers if layer.name.endswith("_bias")]
    default = build_model(ModelConfig(), VOCABS).network
    assert {layer.name for layer in default.layers if layer.name.endswith("_bias")} == {
        f"rating_{F.USER_ID_XF}_bias",
        f"rating_{F.ITEM_ID_XF}_bias",
    }
    for name in ("retrieval", "category", "nonsense"):
        with pytest.raises((ValueError, KeyError), match=name):
            ModelConfig(id_biases=(name,))


def test_the_item_biases_learn_which_items_are_rated_higher():
    batch = _batch(256, seed=6, rated=1.0)
    items = batch[F.ITEM_ID_XF].numpy()
    offsets = np.linspace(-1.5, 1.5, VOCABS[F.ITEM_ID_XF])
    batch[F.RATING] = tf.constant(3.0 + offsets[items], tf.float32)
    config = ModelConfig(tasks=("rating",), dropout=0.0, id_bias_l2=0.0, learning_rate=1e-2)
    model = build_model(config, VOCABS)
    model.fit(_dataset(batch, config), steps_per_epoch=60, epochs=1, verbose=0)
    learned = model.network.get_layer(f"rating_{F.ITEM_ID_XF}_bias").embeddings.numpy()[:, 0]
    # The biases carry the items' order (the joint towers carry some of it too):
    # every item rated well above the mean has a higher bias than every item
    # rated well below it.
    assert learned[offsets > 0.7].min() > learned[offsets < -0.7].max()
    assert np.corrcoef(learned, offsets)[0, 1] > 0.7


def test_the_rating_head_spans_the_configured_rating_range():
    inputs, _, _ = _split(_batch(8, seed=2))
    outputs = {}
    for rating_range in ((1.0, 5.0), (0.5, 10.0)):
        network = build_model(ModelConfig(dropout=0.0, rating_range=rating_range), VOCABS).network
        feed = {name: inputs[name] for name in network.input}
        raw = network.get_layer("rating_raw")
        raw.kernel.assign(tf.zeros_like(raw.kernel))
        raw.bias.assign(tf.ones_like(raw.bias))  # the raw head says +1 for everyone
        outputs[rating_range] = network(feed)["rating"].numpy()
    np.testing.assert_allclose(outputs[(1.0, 5.0)], 4.0, atol=1e-6)  # 3 + 1: as before
    np.testing.assert_allclose(outputs[(0.5, 10.0)], 5.25 + 9.5 / 4, atol=1e-5)
    for bad in ((5, 1), (1, 1), (float("nan"), 5)):
        with pytest.raises(ValueError, match="rating_range"):
            ModelConfig.from_dict({"rating_range": bad})


def test_the_default_rmse_bar_and_the_trainers_range_follow_the_log_config():
    from components.log_config import LogConfig
    from pipeline import eval_config

    assert eval_config.default_thresholds()["rating"] == F.task("rating").threshold
    wide = eval_config.default_thresholds(None, (1.0, 10.0))
    assert wide["rating"] == pytest.approx(F.task("rating").threshold * 9 / 4)
    assert wide["click"] == F.task("click").threshold
    assert (LogConfig().rating_min, LogConfig().rating_max) == F.DEFAULT_RATING_RANGE


@pytest.mark.parametrize(
    "values,named",
    [
        ({"tasks": "click"}, "tasks must be a list"),
        ({"id_biases": "rating"}, "id_biases must be a list"),
        ({"retrieval_ks": "10"}, "retrieval_ks must be a list"),
        ({"min_task_labels": 0}, "min_task_labels"),
        ({"min_task_labels": 2.5}, "min_task_labels"),
        ({"min_task_labels": True}, "min_task_labels"),
    ],
)
def test_a_string_for_a_list_or_a_bad_label_minimum_is_named(values, named):
    with pytest.raises(ValueError, match=named):
        ModelConfig.from_dict(values)
