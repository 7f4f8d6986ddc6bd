"""Warm start: known ids keep their learned rows wherever the new vocabulary
puts them, new ids keep their fresh initialisation, the rest is copied."""

import os

import numpy as np
import pytest
import tensorflow as tf

from trainer import features as F
from trainer import warm_start as W
from trainer.config import ModelConfig
from trainer.model import PRETRAINED_TEXT_DIM, build_network

CATEGORY = F.ID_VOCABS[F.ITEM_CATEGORY]
OLD = {
    F.ID_VOCABS[F.USER_ID]: [f"u{i}" for i in range(10)],
    F.ID_VOCABS[F.ITEM_ID]: [f"i{i}" for i in range(12)],
    CATEGORY: ["books", "music", "games", "tools"],
    F.TEXT_VOCAB: [f"w{i}" for i in range(48)],
}
# Next day: ids reordered by frequency, one user gone, new ids and words.
NEW = {
    F.ID_VOCABS[F.USER_ID]: ["u_new", *[f"u{i}" for i in range(9, -1, -1) if i != 3]],
    F.ID_VOCABS[F.ITEM_ID]: [f"i{i}" for i in range(11, -1, -1)] + ["i_new1", "i_new2"],
    CATEGORY: ["games", "garden", "books", "tools", "music"],
    F.TEXT_VOCAB: ["w_new", *[f"w{i}" for i in range(47, -1, -1)]],
}
CONFIG = ModelConfig(pretrained_text_encoder=None)


def _sizes(vocabularies):
    return W.vocabulary_sizes(vocabularies, {PRETRAINED_TEXT_DIM: 0})


def _export(network, path, vocabularies):
    network.save(str(path), save_format="tf")
    for name, entries in vocabularies.items():
        (path / "assets").mkdir(exist_ok=True)
        (path / "assets" / name).write_text("\n".join(entries) + "\n")
    return str(path)


def _weight(network, name):
    (weight,) = [w for w in network.weights if w.name == name]
    return weight.numpy()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tf.keras.utils.set_random_seed(1)
    old = build_network(CONFIG, _sizes(OLD))
    return old, _export(old, tmp_path_factory.mktemp("base") / "model", OLD)


def test_known_ids_keep_their_rows_and_new_ids_their_initialisation(base):
    old, base_dir = base
    tf.keras.utils.set_random_seed(2)
    new = build_network(CONFIG, _sizes(NEW))
    fresh = {w.name: w.numpy() for w in new.weights}
    report = W.warm_start(new, CONFIG, _sizes(NEW), base_dir, NEW)
    assert report.applied and not report.skipped, report.summary()

    users = "user_id_xf_embedding/embeddings:0"
    was, now = _weight(old, users), _weight(new, users)
    old_users, new_users = OLD[F.ID_VOCABS[F.USER_ID]], NEW[F.ID_VOCABS[F.USER_ID]]
    for user in ("u0", "u5", "u9"):  # learned rows follow the id to its new index
        np.testing.assert_array_equal(now[new_users.index(user)], was[old_users.index(user)])
    np.testing.assert_array_equal(now[0], fresh[users][0])  # u_new: its own initialisation
    np.testing.assert_array_equal(now[len(new_users)], was[len(old_users)])  # the unknown bucket

    items = "history_encoder/item_id_xf_embedding/embeddings:0"
    old_items, new_items = OLD[F.ID_VOCABS[F.ITEM_ID]], NEW[F.ID_VOCABS[F.ITEM_ID]]
    np.testing.assert_array_equal(
        _weight(new, items)[new_items.index("i4")], _weight(old, items)[old_items.index("i4")]
    )
    bias = "rating_item_id_xf_bias/embeddings:0"
    np.testing.assert_array_equal(
        _weight(new, bias)[new_items.index("i7")], _weight(old, bias)[old_items.index("i7")]
    )

    # The category head's output columns follow the category.
    kernel = "category/kernel:0"
    old_c, new_c = OLD[CATEGORY], NEW[CATEGORY]
    np.testing.assert_array_equal(
        _weight(new, kernel)[:, new_c.index("music")], _weight(old, kernel)[:, old_c.index("music")]
    )
    np.testing.assert_array_equal(
        _weight(new, kernel)[:, new_c.index("garden")], fresh[kernel][:, new_c.index("garden")]
    )
    # Token rows shift by the padding and unknown rows.
    tokens = [w for w in new.weights if w.name.startswith("token_and_position_embedding")][0]
    old_tokens = [w for w in old.weights if w.name.startswith("token_and_position_embedding")][0]
    new_words = NEW[F.TEXT_VOCAB]
    np.testing.assert_array_equal(
        tokens.numpy()[new_words.index("w10") + 2], old_tokens.numpy()[10 + 2]
    )
    np.testing.assert_array_equal(tokens.numpy()[:2], old_tokens.numpy()[:2])
    # Everything else is copied.
    np.testing.assert_array_equal(
        _weight(new, "user_tower/kernel:0"), _weight(old, "user_tower/kernel:0")
    )
    assert report.copied == len(new.weights)
    assert report.remapped[F.ID_VOCABS[F.USER_ID]][1] == len(new_users) + 1


def test_a_base_model_of_another_shape_is_skipped_and_nothing_changes(base, tmp_path):
    _, base_dir = base
    other = ModelConfig(pretrained_text_encoder=None, embedding_dim=16)
    new = build_network(other, _sizes(NEW))
    before = [w.numpy() for w in new.weights]
    report = W.warm_start(new, other, _sizes(NEW), base_dir, NEW)
    assert not report.applied and "training from scratch" in report.summary()
    for was, weight in zip(before, new.weights):
        np.testing.assert_array_equal(was, weight.numpy())


def test_a_warm_started_run_trains_at_its_own_learning_rate_only_when_it_took_over(base, tmp_path):
    _, base_dir = base
    config = ModelConfig(pretrained_text_encoder=None, warm_start_learning_rate=1e-4)
    taken = W.warm_start(build_network(config, _sizes(NEW)), config, _sizes(NEW), base_dir, NEW)
    assert taken.applied and W.learning_rate(taken, config) == 1e-4
    assert W.learning_rate(taken, CONFIG) is None  # not set: learning_rate stays
    skipped = W.WarmStartReport(base_model=str(tmp_path), reason="another shape")
    assert W.learning_rate(skipped, config) is None
    with pytest.raises(ValueError, match="warm_start_learning_rate"):
        ModelConfig(warm_start_learning_rate=0.0)


def test_a_base_model_without_its_vocabularies_is_named(base, tmp_path):
    old, _ = base
    bare = str(tmp_path / "bare")
    old.save(bare, save_format="tf")
    new = build_network(CONFIG, _sizes(NEW))
    report = W.warm_start(new, CONFIG, _sizes(NEW), bare, NEW)
    assert not report.applied
    assert os.path.join(bare, "assets") in report.reason and "vocabulary" in report.reason


def test_row_maps_cover_the_shared_entries_and_the_special_rows():
    new_rows, old_rows = W.row_map(["a", "b", "c"], ["c", "x", "a"], F.ID_VOCABS[F.ITEM_ID])
    assert list(zip(new_rows, old_rows)) == [(0, 2), (2, 0), (3, 3)]  # 3: the unknown bucket
    new_rows, old_rows = W.row_map(["a", "b"], ["b", "a"], F.TEXT_VOCAB)
    assert list(zip(new_rows, old_rows)) == [(0, 0), (1, 1), (2, 3), (3, 2)]
