"""A pretrained keras-nlp preset read from a local directory as the text encoder."""

import functools

import keras_nlp
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam

import schemas
from trainer import features as F
from trainer import transform
from trainer.config import ModelConfig
from trainer.model import build_model
from trainer.bert_preset import write_preset
from trainer.text_encoder import preset_vocabulary

VOCABULARY = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "jazz",
    "piano",
    "song",
    "album",
    "tennis",
]


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """A tiny BERT as a keras-nlp preset directory (``bert_preset.write_preset``)."""
    path = tmp_path_factory.mktemp("bert_preset")
    backbone = keras_nlp.models.BertBackbone(
        vocabulary_size=len(VOCABULARY),
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=64,
    )
    tokenizer = keras_nlp.models.BertTokenizer(vocabulary=VOCABULARY)
    write_preset(backbone, tokenizer, str(path))
    return str(path), backbone


def test_the_model_starts_from_the_preset_weights(preset):
    path, saved = preset
    config = ModelConfig(text_encoder_preset=path, tasks=("click", "category"))
    vocabs = {
        F.USER_ID_XF: 5,
        F.ITEM_ID_XF: 5,
        F.ITEM_CATEGORY_XF: 3,
        F.TEXT_VOCAB: len(VOCABULARY),
    }
    model = build_model(config, vocabs)
    loaded = next(
        layer
        for layer in model.network.text_encoder.layers
        if isinstance(layer, keras_nlp.models.Backbone)
    )
    assert len(loaded.weights) == len(saved.weights)
    for mine, theirs in zip(loaded.weights, saved.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    n = 4
    inputs = {
        F.USER_ID_XF: tf.zeros([n], tf.int64),
        F.ITEM_ID_XF: tf.zeros([n], tf.int64),
        F.ITEM_CATEGORY_XF: tf.zeros([n], tf.int64),
        F.ITEM_TOKENS_XF: tf.constant([[5, 6, 1] + [0] * (F.ITEM_TEXT_LENGTH - 3)] * n, tf.int64),
        F.HISTORY_TOKENS_XF: tf.constant([[7] + [0] * (F.HISTORY_TEXT_LENGTH - 1)] * n, tf.int64),
    }
    outputs = model(inputs)
    assert outputs["click"].shape == (n, 1) and np.all(np.isfinite(outputs["category"].numpy()))


def test_transform_looks_words_up_in_the_preset_vocabulary(preset, tmp_path):
    path, _ = preset
    schema = tfdv.load_schema_text(schemas.SCHEMA_PATH)
    row = {
        f.name: (
            [] if f.varlen else [b""] if f.dtype == "string" else [0] if f.dtype == "int" else [0.0]
        )
        for f in F.RAW_FEATURES
    }
    row.update(
        {
            F.ITEM_TITLE: [b"Jazz piano"],
            F.ITEM_DESCRIPTION: [b"unheard-of album"],
            F.HISTORY_TITLES: [b"Tennis song"],
            F.ITEM_ID: [b"i1"],
            F.USER_ID: [b"u1"],
            F.ITEM_CATEGORY: [b"music"],
            F.HISTORY_CATEGORIES: [b"music"],
        }
    )
    fn = functools.partial(
        transform.preprocessing_fn,
        custom_config={transform.TEXT_VOCABULARY_FILE: preset_vocabulary(path)},
    )
    with tft_beam.Context(temp_dir=str(tmp_path / "tft"), force_tf_compat_v1=False):
        (transformed, _), transform_fn = (
            [row],
            tft.DatasetMetadata(schema),
        ) | tft_beam.AnalyzeAndTransformDataset(fn)
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / "graph"))
    item = list(transformed[0][F.ITEM_TOKENS_XF])
    # jazz piano unheard of album -> 5 6 [UNK] [UNK] 8, then padding.
    assert item[:5] == [5, 6, 1, 1, 8] and set(item[5:]) == {0}
    assert list(transformed[0][F.HISTORY_TOKENS_XF])[:2] == [9, 7]
    assets = tf.io.gfile.listdir(str(tmp_path / "graph" / "transform_fn" / "assets"))
    assert "vocabulary.txt" in assets  # the vocabulary travels with the graph
