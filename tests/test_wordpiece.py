"""The in-graph WordPiece tokenization gives exactly the ids of the checkpoint's
own tokenizer (Hugging Face ``tokenizers`` on the same ``tokenizer.json``), and
its graph runs on the stock TF Serving model server."""

from trainer import keras_env  # noqa: F401  (must run before TF)

import os
import random
import re
import unicodedata

import pytest
import tensorflow as tf
import tokenizers

from serving import tf_serving_ops
from trainer.bert_checkpoint import installed_minilm, read_tokenizer
from trainer.wordpiece import WordPieceSettings, WordPieceTokenizer

LENGTH = 48

# Code points of long-assigned blocks (Unicode <= 6), so that the Unicode
# versions of ICU, RE2 and tokenizers' Rust tables classify them alike.
BLOCKS = (
    (0x20, 0x7E),  # ASCII
    (0x00, 0x1F),  # controls, tab, newline
    (0x80, 0x24F),  # Latin-1, C1 controls, Latin extended
    (0x300, 0x36F),  # combining diacritics
    (0x370, 0x3FF),  # Greek
    (0x400, 0x4FF),  # Cyrillic
    (0x5D0, 0x5EA),  # Hebrew
    (0x621, 0x64A),  # Arabic letters
    (0x905, 0x939),  # Devanagari
    (0xE01, 0xE30),  # Thai
    (0x2000, 0x206F),  # general punctuation, spaces, zero-width and bidi controls
    (0x20A0, 0x20B5),  # currency
    (0x2100, 0x218F),  # letterlike, number forms
    (0x3000, 0x303F),  # CJK punctuation, ideographic space
    (0x3041, 0x3096),  # Hiragana
    (0x30A1, 0x30FA),  # Katakana
    (0x4E00, 0x9FA5),  # CJK ideographs
    (0xAC00, 0xD7A3),  # Hangul syllables (NFD splits them into jamo)
    (0xFB00, 0xFB06),  # ligatures
    (0xFEFF, 0xFEFF),  # byte-order mark
    (0xFF01, 0xFF5E),  # fullwidth forms
    (0xFFFD, 0xFFFD),  # replacement character
    (0x1F300, 0x1F64F),  # emoji
    (0x20000, 0x2A6D6),  # CJK extension B
)
WORDS = ["hello", "naïve", "café", "Straße", "ΣΟΦΙΑ", "İstanbul", "e-mail", "don't", "x" * 150]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    """(our tokenizer, the reference) for the installed MiniLM's tokenizer.json."""
    directory = installed_minilm(str(tmp_path_factory.mktemp("minilm")))
    path = os.path.join(directory, "tokenizer.json")
    spec = read_tokenizer(path)
    vocabulary = os.path.join(str(tmp_path_factory.mktemp("vocab")), "vocab.txt")
    with open(vocabulary, "w", encoding="utf-8") as f:
        f.write("\n".join(spec.vocabulary) + "\n")
    settings = WordPieceSettings(
        vocabulary,
        spec.lowercase,
        spec.strip_accents,
        spec.unk_token,
        spec.max_input_chars_per_word,
    )
    reference = tokenizers.Tokenizer.from_file(path)
    reference.no_padding()
    reference.enable_truncation(LENGTH)
    return WordPieceTokenizer(settings), reference


def _generated_texts(n: int, seed: int) -> list:
    rng = random.Random(seed)

    def char() -> str:
        while True:
            low, high = rng.choice(BLOCKS)
            c = chr(rng.randint(low, high))
            if unicodedata.category(c) not in ("Cn", "Cs"):
                return c

    def word() -> str:
        if rng.random() < 0.2:
            return rng.choice(WORDS)
        size = rng.choice([1, 2, 5, 12, 40, 101, 130])
        return "".join(char() for _ in range(size))

    return [
        "".join(word() + rng.choice(["", " ", "  ", "\t", "-", "!!", "\u3000"]) for _ in range(k))
        for k in (rng.randint(0, 12) for _ in range(n))
    ]


def _ours(tokenizer, texts) -> list:
    ids = tokenizer(tf.constant(texts), LENGTH).numpy()
    return [[int(i) for i in row if i != 0] for row in ids]


def test_ids_match_the_checkpoints_own_tokenizer_on_generated_text(minilm):
    tokenizer, reference = minilm
    texts = _generated_texts(1500, seed=7)
    mismatches = [
        (t, reference.encode(t).tokens)
        for t, ours in zip(texts, _ours(tokenizer, texts))
        if ours != reference.encode(t).ids
    ]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} differ, e.g. {mismatches[:3]}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \t\n ",
        "Crème Brûlée — 100% naïve!!!",
        "東京タワー 日本語のテキスト",
        "한국어 텍스트",
        "😀👍🏽🎉 emoji",
        "?!?!...,,,;;;",
        "a" * 99 + " " + "b" * 100 + " " + "c" * 101,
        "é" * 101,
        "ΣΑΣ ΟΔΥΣΣΕΥΣ",
        "zero\u200bwidth\ufeffbom\u00a0nbsp\x00nul\ufffd",
        "word " * 200,
    ],
)
def test_accents_cjk_emoji_punctuation_and_long_words(minilm, text):
    tokenizer, reference = minilm
    assert _ours(tokenizer, [text]) == [reference.encode(text).ids]


def test_truncation_keeps_cls_and_sep_and_pads_with_zero(minilm):
    tokenizer, _ = minilm
    ids = tokenizer(tf.constant(["word " * 200, "one", ""]), 8).numpy()
    cls, sep = tokenizer.cls_id, tokenizer.sep_id
    assert ids.shape == (3, 8)
    assert list(ids[0, [0, -1]]) == [cls, sep] and 0 not in ids[0]
    assert list(ids[1, :3]) == [cls, ids[1, 1], sep] and not ids[1, 3:].any()
    assert list(ids[2]) == [cls, sep] + [0] * 6


def test_bytes_that_are_not_utf8_are_dropped_not_an_error(minilm):
    tokenizer, _ = minilm
    ids = tokenizer(tf.constant([b"caf\xc3", b"\xff\xfe ok \x80"]), 8).numpy()
    cls, sep = tokenizer.cls_id, tokenizer.sep_id
    assert list(ids[0][:2]) != [cls, sep]  # "caf" survives
    assert [int(i) for i in ids[1] if i] == [cls, tokenizer.table.lookup(tf.constant("ok")), sep]


def test_a_vocabulary_without_what_the_graph_needs_names_the_file(tmp_path):
    for lines, problem in (
        (["[UNK]", "[CLS]", "[SEP]"], "no ['[PAD]']"),
        (["[CLS]", "[PAD]", "[SEP]", "[UNK]"], "line 0 must be [PAD]"),
        (["[PAD]", "[CLS]", "[SEP]", "[UNK]", "a", "a"], "repeats"),
    ):
        path = tmp_path / "vocab.txt"
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(ValueError, match=re.escape(problem)) as error:
            WordPieceTokenizer(WordPieceSettings(str(path)))
        assert str(path) in str(error.value)
    with pytest.raises(ValueError, match="needs length >= 3"):
        path.write_text("[PAD]\n[CLS]\n[SEP]\n[UNK]\n")
        WordPieceTokenizer(WordPieceSettings(str(path)))(tf.constant(["a"]), 2)


def test_settings_travel_with_a_preset_directory(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[CLS]\n[SEP]\n[UNK]\n")
    settings = WordPieceSettings(str(tmp_path / "vocab.txt"), lowercase=False, strip_accents=False)
    settings.write(str(tmp_path))
    assert WordPieceSettings.read(str(tmp_path)) == settings
    (tmp_path / "wordpiece.json").write_text('{"vocabulary_file": "vocab.txt", "casing": 1}')
    with pytest.raises(ValueError, match="wordpiece.json.*casing"):
        WordPieceSettings.read(str(tmp_path))


def test_the_tokenization_graph_runs_on_stock_tf_serving(minilm, tmp_path):
    tokenizer, _ = minilm
    module = tf.Module()
    module.tokenizer_table = tokenizer.table
    module.serve = tf.function(
        lambda text: {"ids": tokenizer(text, LENGTH)},
        input_signature=[tf.TensorSpec([None], tf.string)],
    )
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve})
    ops = tf_serving_ops.saved_model_ops(str(tmp_path))
    assert {"WordpieceTokenizeWithOffsets", "NormalizeUTF8", "RegexSplitWithOffsets"} <= ops
    assert tf_serving_ops.unsupported_ops(str(tmp_path)) == []
    # The check can fail: an op from outside TF Serving's list is reported.
    assert tf_serving_ops.unsupported_ops(str(tmp_path), supported=ops - {"NormalizeUTF8"}) == [
        "NormalizeUTF8"
    ]
    loaded = tf.saved_model.load(str(tmp_path))
    served = loaded.signatures["serving_default"](tf.constant(["café!"]))["ids"].numpy()
    assert (served == tokenizer(tf.constant(["café!"]), LENGTH).numpy()).all()
