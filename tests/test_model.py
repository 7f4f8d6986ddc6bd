"""The multi-task Keras model on random transformed inputs."""
import keras_nlp
import numpy as np
import tensorflow as tf

from trainer import features as F
from trainer.config import ModelConfig
from trainer.data import split_labels
from trainer.model import build_model

VOCABS = {F.USER_ID_XF: 11, F.ITEM_ID_XF: 13, F.ITEM_CATEGORY_XF: 5, F.TEXT_VOCAB: 50}


def _batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    tokens = lambda length: np.where(rng.random((n, length)) < 0.6, rng.integers(2, 50, (n, length)), 0)
    return {
        F.USER_ID_XF: rng.integers(0, 11, n), F.ITEM_ID_XF: rng.integers(0, 13, n),
        F.ITEM_CATEGORY_XF: rng.integers(0, 5, n),
        F.ITEM_TOKENS_XF: tokens(F.ITEM_TEXT_LENGTH), F.HISTORY_TOKENS_XF: tokens(F.HISTORY_TEXT_LENGTH),
        F.CLICK: rng.integers(0, 2, n).astype("float32"), F.PURCHASE: (rng.random(n) < 0.2).astype("float32"),
        F.RATING: rng.integers(1, 6, n).astype("float32"),
        F.RATING_WEIGHT: (rng.random(n) < 0.5).astype("float32"),
        F.IMPRESSION_WEIGHT: np.ones(n, "float32"),
    }


def test_every_task_output_is_finite_with_batch_shape():
    model = build_model(ModelConfig(), VOCABS)
    inputs, _, _ = split_labels({k: tf.constant(v) for k, v in _batch().items()})
    outputs = model(inputs)
    assert set(outputs) == set(F.TASK_NAMES)
    for name, value in outputs.items():
        assert value.shape == (16, 1), name
        assert np.all(np.isfinite(value.numpy())), name
    assert np.all((outputs["click"].numpy() > 0) & (outputs["click"].numpy() < 1))
    # ESMM: p(conversion) = p(click) * p(conversion | click) <= p(click)
    assert np.all(outputs["conversion"].numpy() <= outputs["click"].numpy() + 1e-7)


def test_one_text_encoder_is_shared_by_both_towers():
    model = build_model(ModelConfig(), VOCABS)
    encoders = [layer for layer in model.layers if layer.name == "text_encoder"]
    assert len(encoders) == 1
    # Called on the history (user tower) and on the item text (item tower).
    assert len(encoders[0].inbound_nodes) == 2
    embeddings = [layer for layer in encoders[0].layers
                  if isinstance(layer, keras_nlp.layers.TokenAndPositionEmbedding)]
    assert len(embeddings) == 1
    assert not any(isinstance(layer, keras_nlp.layers.TokenAndPositionEmbedding) for layer in model.layers)
    encoder_vars = {id(w) for w in encoders[0].weights}
    assert encoder_vars <= {id(w) for w in model.trainable_weights}


def test_joint_training_lowers_the_loss_and_ignores_unweighted_ratings():
    batch = {k: tf.constant(v) for k, v in _batch(64, seed=1).items()}
    data = tf.data.Dataset.from_tensors(batch).map(split_labels).repeat()
    model = build_model(ModelConfig(learning_rate=1e-2, dropout=0.0), VOCABS)
    before = model.evaluate(data, steps=1, verbose=0, return_dict=True)
    model.fit(data, steps_per_epoch=40, epochs=1, verbose=0)
    after = model.evaluate(data, steps=1, verbose=0, return_dict=True)
    assert after["click_loss"] < before["click_loss"]
    assert after["rating_loss"] < before["rating_loss"]
    assert after["conversion_loss"] < before["conversion_loss"]


def test_unknown_config_key_is_rejected():
    import pytest
    with pytest.raises(ValueError, match="embeding_dim"):
        ModelConfig.from_dict({"embeding_dim": 8})


def test_tasks_can_be_switched_off():
    config = ModelConfig(tasks=("click", "rating"))
    model = build_model(config, VOCABS)
    inputs, labels, weights = split_labels({k: tf.constant(v) for k, v in _batch().items()},
                                           config.active_tasks())
    assert set(model(inputs)) == set(labels) == set(weights) == {"click", "rating"}
    assert not any("conversion" in layer.name for layer in model.layers)
    import pytest
    with pytest.raises(ValueError, match="needs task 'click'"):
        ModelConfig(tasks=("conversion",))
    with pytest.raises(KeyError, match="retrieval"):
        ModelConfig(tasks=("retrieval",))


def test_training_callbacks_checkpoint_and_stop_early(tmp_path):
    from trainer.task import accelerator_setup, training_callbacks
    names = [type(c).__name__ for c in training_callbacks(ModelConfig(), str(tmp_path))]
    assert names == ["TensorBoard", "ModelCheckpoint", "EarlyStopping"]
    assert "EarlyStopping" not in [type(c).__name__ for c in
                                   training_callbacks(ModelConfig(early_stopping_patience=0), str(tmp_path))]
    strategy, jit = accelerator_setup(ModelConfig())
    if not tf.config.list_physical_devices("GPU"):
        assert jit is False and not isinstance(strategy, tf.distribute.MirroredStrategy)
