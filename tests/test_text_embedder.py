"""The frozen sentence encoder and the catalogue embedding step (Beam
RunInference with a cache by encoder and text)."""

from trainer import keras_env  # noqa: F401  (must run before TF)

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf
import tokenizers

from components import text_embedder
from tests.bert_reference import sentence_embeddings
from tests.test_bert_checkpoint import tiny_checkpoint
from trainer import embedding_table
from trainer import features as F
from trainer.bert_checkpoint import BertCheckpoint, CheckpointError, installed_minilm
from trainer.sentence_encoder import MINILM, SentenceEncoder, resolve_preset

SENTENCES = [
    "A jazz piano album",
    "Crème brûlée, naïvely made",
    "東京の夜景",
    "Rock 'n' roll!!! (1969)",
    "",
    "an unbelievably long-winded description " * 20,
    "Sci-Fi & Fantasy",
    "the the the",
    "Ångström über straße",
    "emoji 🎸🎹",
    "C++ for beginners, 3rd ed.",
    "children's animation",
]


def _write_examples(path, items, timestamp=0):
    """A gzipped TFRecord of tf.Examples, one per (item id, title, description)."""
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for item, title, description in items:
            feature = {
                F.ITEM_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[item.encode()])),
                F.ITEM_TITLE: tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[title.encode()])
                ),
                F.ITEM_DESCRIPTION: tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[description.encode()])
                ),
                F.TIMESTAMP: tf.train.Feature(int64_list=tf.train.Int64List(value=[timestamp])),
            }
            writer.write(
                tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
            )
    return str(path)


def test_minilm_sentence_embeddings_match_an_independent_implementation(tmp_path):
    checkpoint_dir = installed_minilm(str(tmp_path / "unpacked"))
    encoder = SentenceEncoder(resolve_preset(MINILM), max_length=128)
    reference = tokenizers.Tokenizer.from_file(os.path.join(checkpoint_dir, "tokenizer.json"))
    reference.enable_truncation(128)
    reference.no_padding()
    encodings = [reference.encode(s).ids for s in SENTENCES]
    ids = np.zeros((len(SENTENCES), max(map(len, encodings))), np.int64)
    for row, encoding in enumerate(encodings):
        ids[row, : len(encoding)] = encoding
    checkpoint = BertCheckpoint.load(checkpoint_dir)
    expected = sentence_embeddings(checkpoint.weights, checkpoint.config, ids)
    ours = encoder(tf.constant(SENTENCES)).numpy()
    assert np.abs(ours - expected).max() <= 1e-4


@pytest.fixture()
def tiny_encoder(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_CACHE_DIR", str(tmp_path / "encoders"))
    return tiny_checkpoint(tmp_path / "checkpoint")


ITEMS = [(f"item{k}", f"jazz piano song {k}", "cafe crème" if k % 2 else "") for k in range(12)]


def test_a_rerun_embeds_only_the_changed_item(tmp_path, tiny_encoder):
    train = _write_examples(tmp_path / "train.gz", ITEMS[:8])
    evaluation = _write_examples(tmp_path / "eval.gz", ITEMS[6:])  # items 6, 7 in both
    cache = str(tmp_path / "cache")
    first = text_embedder.embed_items(
        [train, evaluation], tiny_encoder, cache, str(tmp_path / "a"), 16
    )
    assert (first["items"], first["texts_embedded"], first["cache_hits"]) == (12, 12, 0)

    changed = list(ITEMS)
    changed[3] = ("item3", "a new title", "")
    newer = _write_examples(tmp_path / "newer.gz", [changed[3]], timestamp=5)
    second = text_embedder.embed_items(
        [train, evaluation, newer], tiny_encoder, cache, str(tmp_path / "b"), 16
    )
    assert (second["items"], second["texts_embedded"], second["cache_hits"]) == (12, 1, 11)

    ids, vectors, _ = embedding_table.read_table(str(tmp_path / "b"))
    texts = {item: text_embedder.item_text(t, d) for item, t, d in changed}
    expected = SentenceEncoder(resolve_preset(tiny_encoder), 16)(
        tf.constant([texts[i] for i in ids])
    ).numpy()
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert embedding_table.read_report(str(tmp_path / "b"))["fingerprint"] == first["fingerprint"]


def test_items_that_share_a_text_are_embedded_once(tmp_path, tiny_encoder):
    files = [
        _write_examples(tmp_path / "x.gz", [("a", "same", ""), ("b", "same", ""), ("c", "", "")])
    ]
    report = text_embedder.embed_items(
        files, tiny_encoder, str(tmp_path / "c"), str(tmp_path / "o"), 16
    )
    assert (report["items"], report["texts_embedded"]) == (3, 2)


def test_a_broken_encoder_stops_before_beam_naming_the_file(tmp_path, tiny_encoder):
    files = [_write_examples(tmp_path / "x.gz", ITEMS[:2])]
    weights = os.path.join(tiny_encoder, "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        text_embedder.embed_items(files, tiny_encoder, str(tmp_path / "c"), str(tmp_path / "o"), 16)
    with pytest.raises(CheckpointError, match="never downloaded"):
        text_embedder.embed_items(
            files, "hf://bert-base", str(tmp_path / "c"), str(tmp_path / "o"), 16
        )
    assert not os.path.exists(tmp_path / "o" / embedding_table.REPORT_FILE)


def test_a_corrupt_cache_shard_is_an_error_not_a_silent_miss(tmp_path, tiny_encoder):
    files = [_write_examples(tmp_path / "x.gz", ITEMS[:2])]
    cache = tmp_path / "cache"
    report = text_embedder.embed_items(files, tiny_encoder, str(cache), str(tmp_path / "o"), 16)
    shard = embedding_table.shards(str(cache / report["fingerprint"]))[0]
    with open(shard, "wb") as f:
        f.write(gzip.compress(b"not a tfrecord"))
    with pytest.raises(Exception, match="corrupt|truncated|DataLossError|length"):
        text_embedder.embed_items(files, tiny_encoder, str(cache), str(tmp_path / "p"), 16)


def test_serving_embeds_an_unknown_item_as_the_embedding_step_did(tmp_path, tiny_encoder):
    from trainer.pretrained_text import PretrainedTextFeatures, item_text

    files = [_write_examples(tmp_path / "x.gz", ITEMS)]
    text_embedder.embed_items(files, tiny_encoder, str(tmp_path / "c"), str(tmp_path / "o"), 16)
    ids, vectors, _ = embedding_table.read_table(str(tmp_path / "o"))
    encoder = SentenceEncoder(resolve_preset(tiny_encoder), 16)
    features = PretrainedTextFeatures(ids, vectors, encoder)
    known = list(ids).index("item3")
    _, title, description = ITEMS[3]
    got = features.item_vectors(
        tf.constant(["item3", "brand-new", "", "item5"]),
        item_text(
            tf.constant([title, title, "", "ignored"]), tf.constant([description] * 2 + [""] * 2)
        ),
    ).numpy()
    np.testing.assert_allclose(got[0], vectors[known], atol=1e-6)  # from the table
    np.testing.assert_allclose(got[1], vectors[known], atol=1e-5)  # same text, encoded now
    assert not got[2].any()  # no item at all: zeros, nothing encoded
    np.testing.assert_allclose(got[3], vectors[list(ids).index("item5")], atol=1e-6)
    history = features.history_vectors(tf.constant([["item3", "item5", ""], ["gone", "", ""]]))
    np.testing.assert_allclose(
        history.numpy()[0], (vectors[known] + vectors[list(ids).index("item5")]) / 2, atol=1e-6
    )
    assert not history.numpy()[1].any()  # unknown history items are left out
