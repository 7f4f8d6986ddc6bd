"""Fine-tuning the pretrained encoder in the item tower (a tiny random BERT
in Hugging Face's layout stands in for MiniLM): the switch, which layers
train and at what rate, and how items unknown to the catalogue are read."""

from trainer import keras_env  # noqa: F401  (must run before TF)

import numpy as np
import pytest
import tensorflow as tf

from tests.test_bert_checkpoint import tiny_checkpoint
from tests.test_model import NUM_CATEGORIES, VOCABS, _batch
from trainer import features as F
from trainer.config import ModelConfig
from trainer.data import split_labels
from trainer.model import PRETRAINED_TEXT_DIM, PRETRAINED_TEXT_LENGTH, build_model
from trainer.pretrained_text import PretrainedTextFeatures, item_text
from trainer.sentence_encoder import SentenceEncoder, resolve_preset, sentence_embeddings

LENGTH = 12  # WordPiece ids per item text
TEXTS = [f"jazz piano song {k}" + (" cafe crème" if k % 3 else "") for k in range(13)]
IDS = np.array([f"i{k}" for k in range(13)], dtype=object)


def test_the_switch_follows_the_gpu_unless_it_is_set():
    assert not ModelConfig().fine_tunes(gpu=False) and ModelConfig().fine_tunes(gpu=True)
    assert not ModelConfig(fine_tune_text_encoder=False).fine_tunes(gpu=True)
    assert ModelConfig(fine_tune_text_encoder=True).fine_tunes(gpu=False)
    assert not ModelConfig(pretrained_text_encoder=None).fine_tunes(gpu=True)
    with pytest.raises(ValueError, match="needs a pretrained_text_encoder"):
        ModelConfig(pretrained_text_encoder=None, fine_tune_text_encoder=True)
    for bad in ({"fine_tune_layers": 0}, {"fine_tune_learning_rate": 0.0}):
        with pytest.raises(ValueError, match="fine_tune"):
            ModelConfig(**bad)


@pytest.fixture()
def features(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_CACHE_DIR", str(tmp_path / "encoders"))
    encoder = SentenceEncoder(resolve_preset(tiny_checkpoint(tmp_path / "bert")), LENGTH)
    vectors = encoder(tf.constant(TEXTS)).numpy()
    return PretrainedTextFeatures(IDS, vectors, encoder, fine_tune_texts=TEXTS)


def _fine_tuned_batch(features, n=32, seed=0):
    batch = _batch(n, seed)
    return features.add_to({**batch, F.HISTORY_ITEM_IDS_XF: tf.fill([n, 3], "i1")})


def _variables(layer):
    return [v.numpy().copy() for v in layer.weights]


def test_only_the_top_layers_train_and_at_their_own_rate(features):
    config = ModelConfig(
        fine_tune_text_encoder=True, fine_tune_layers=1, learning_rate=1e-2, dropout=0.0
    )
    sizes = {**VOCABS, PRETRAINED_TEXT_DIM: features.dim, PRETRAINED_TEXT_LENGTH: LENGTH}
    backbone = features.encoder.backbone
    model = build_model(config, sizes, text_backbone=backbone)
    batch = _fine_tuned_batch(features)
    assert batch[F.ITEM_TEXT_VECTOR].shape == (32, 0)  # computed in the network instead
    inputs, labels, weights = split_labels(batch, config.active_tasks(), NUM_CATEGORIES)
    top, bottom = (
        backbone.get_layer("transformer_layer_1"),
        backbone.get_layer("transformer_layer_0"),
    )
    embedding = backbone.get_layer("token_embedding")
    tower = model.network.get_layer("item_model").get_layer("item_tower")
    before = {layer.name: _variables(layer) for layer in (top, bottom, embedding, tower)}
    steps = 3
    model.fit(
        tf.data.Dataset.from_tensors((inputs, labels, weights)).repeat(),
        steps_per_epoch=steps,
        epochs=1,
        verbose=0,
    )

    def moved(layer):
        return max(np.abs(a - b).max() for a, b in zip(_variables(layer), before[layer.name]))

    assert moved(bottom) == 0 and moved(embedding) == 0  # frozen below the top layer
    # Adam moves a weight by at most about its learning rate per step.
    assert 0 < moved(top) <= steps * config.fine_tune_learning_rate * 1.01
    assert moved(tower) > 10 * steps * config.fine_tune_learning_rate
    assert {id(v) for v in top.trainable_weights} <= {id(v) for v in model.encoder_variables}


def test_the_fine_tuned_encoder_starts_from_the_catalogue_vectors(features):
    rows = features.item_token_ids(tf.constant(IDS.astype(str)))
    assert rows.shape == (13, LENGTH)
    np.testing.assert_allclose(
        sentence_embeddings(features.encoder.backbone, rows, training=False).numpy(),
        features.vectors.numpy()[1:],
        atol=1e-5,
    )


def test_an_unknown_item_is_tokenized_from_its_text(features):
    got = features.item_token_ids(
        tf.constant(["i3", "brand-new", "", "i5"]),
        item_text(tf.constant([TEXTS[0], TEXTS[3], "", "ignored"]), tf.constant([""] * 4)),
    ).numpy()
    tokens = features.encoder.token_ids(tf.constant([TEXTS[3] + " "])).numpy()[0]
    table = features.token_ids.numpy()
    np.testing.assert_array_equal(got[0], table[4])  # a known id keeps its catalogue text
    np.testing.assert_array_equal(got[1], tokens)  # an unknown one is read from its text
    assert not got[2].any()  # no item at all: padding only
    np.testing.assert_array_equal(got[3], table[6])
