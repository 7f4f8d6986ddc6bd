"""BERT WordPiece tokenization as TF ops: the token ids of a checkpoint's own
tokenizer (Hugging Face ``tokenizers``' BertNormalizer, BertPreTokenizer,
WordPiece and the ``[CLS] text [SEP]`` template), computed in the graph.

Transform, the catalogue embedding step and the serving graph all tokenize
with this one class, so the ids the encoder saw at training are the ids it
sees at serving. The ops are core TF plus three tensorflow-text kernels
(``NormalizeUTF8``, ``RegexSplitWithOffsets``, ``WordpieceTokenizeWithOffsets``),
which the stock TF Serving model server registers (``serving/tf_serving_ops.py``).

Deliberate differences from ``tokenizers``: text that spells a special token
(``"[CLS]"``) is split like any other text, so input cannot inject control
tokens; unassigned code points (category Cn, which RE2 cannot name) are kept
and become ``[UNK]`` where ``tokenizers`` drops them; bytes that are not UTF-8
are replaced by U+FFFD and dropped (``tokenizers`` only accepts valid text).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Dict, List, Mapping, Optional

import tensorflow as tf
import tensorflow_text as tf_text

SETTINGS_FILE = "wordpiece.json"  # written into a converted preset beside its vocabulary
PAD, CLS, SEP = "[PAD]", "[CLS]", "[SEP]"

# tokenizers' BertNormalizer, as RE2 classes. Control characters: categories
# Cc, Cf, Co, Cs and U+FFFD, except tab, newline and carriage return, which
# count as whitespace; whitespace: Unicode White_Space that is not Cc.
_WHITESPACE_CONTROLS = r"[\t\n\r]"
_CONTROLS = r"[\p{Cc}\p{Cf}\p{Co}\p{Cs}\x{FFFD}]"
_WHITESPACE = r"[\x{20}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]"
_CJK = (
    r"([\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}"
    r"\x{2B740}-\x{2B81F}\x{2B920}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}])"
)
# BertPreTokenizer: ASCII punctuation and Unicode P* are tokens of their own.
_PUNCTUATION = r"[!-/:-@\[-`{-~\p{P}]"


@dataclasses.dataclass(frozen=True)
class WordPieceSettings:
    """How a checkpoint tokenizes; the vocabulary file has one token per line, by id."""

    vocabulary_file: str
    lowercase: bool = True
    strip_accents: bool = True
    unk_token: str = "[UNK]"
    max_input_chars_per_word: int = 100

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "WordPieceSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown WordPiece settings {unknown}; known: {sorted(known)}")
        return cls(**values)

    def write(self, directory: str) -> str:
        """Saves the settings (vocabulary path relative to ``directory``)."""
        values = self.to_dict()
        values["vocabulary_file"] = os.path.relpath(self.vocabulary_file, directory)
        path = os.path.join(directory, SETTINGS_FILE)
        with open(path, "w") as f:
            json.dump(values, f, indent=2)
        return path

    @classmethod
    def read(cls, directory: str) -> "WordPieceSettings":
        """The settings a converted preset carries (``write``)."""
        path = os.path.join(directory, SETTINGS_FILE)
        try:
            with open(path) as f:
                values = json.load(f)
            settings = cls.from_dict(values)
        except (OSError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: not WordPiece settings ({e})") from e
        return dataclasses.replace(
            settings, vocabulary_file=os.path.join(directory, settings.vocabulary_file)
        )

    def vocabulary(self) -> List[str]:
        """The tokens by id, checked for what the graph relies on."""
        with tf.io.gfile.GFile(self.vocabulary_file) as f:
            tokens = f.read().split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
        missing = [t for t in (PAD, CLS, SEP, self.unk_token) if t not in tokens]
        if missing:
            raise ValueError(f"{self.vocabulary_file}: the vocabulary has no {missing}")
        if tokens[0] != PAD:
            raise ValueError(f"{self.vocabulary_file}: line 0 must be {PAD}, found {tokens[0]!r}")
        if len(set(tokens)) != len(tokens):
            raise ValueError(f"{self.vocabulary_file}: the vocabulary repeats tokens")
        return tokens


def vocabulary_table(settings: WordPieceSettings) -> tf.lookup.StaticHashTable:
    """token -> id, read from the vocabulary file (an asset in a SavedModel);
    ``WordPieceTokenizer`` checks the file first."""
    return tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            settings.vocabulary_file,
            tf.string,
            tf.lookup.TextFileIndex.WHOLE_LINE,
            tf.int64,
            tf.lookup.TextFileIndex.LINE_NUMBER,
        ),
        default_value=-1,
    )


class WordPieceTokenizer:
    """Text [batch] -> ``[CLS] pieces [SEP]`` ids [batch, length], 0-padded.

    ``make_table`` builds the vocabulary table; Transform passes one that
    tracks the table as a TFT asset (``tft.annotators.make_and_track_object``).
    """

    def __init__(
        self,
        settings: WordPieceSettings,
        make_table: Optional[Callable[[], tf.lookup.StaticHashTable]] = None,
    ):
        self.settings = settings
        vocabulary = settings.vocabulary()
        self.cls_id, self.sep_id = vocabulary.index(CLS), vocabulary.index(SEP)
        self.table = (make_table or (lambda: vocabulary_table(settings)))()
        self._wordpiece = tf_text.WordpieceTokenizer(
            self.table,
            suffix_indicator="##",
            # Long words are [UNK] by characters (below), as tokenizers counts them.
            max_bytes_per_word=4 * settings.max_input_chars_per_word + 4,
            token_out_type=tf.int64,
            unknown_token=settings.unk_token,
            split_unknown_characters=False,
        )

    def normalize(self, text: tf.Tensor) -> tf.Tensor:
        """BertNormalizer: clean, space out CJK, strip accents, lower-case."""
        text = tf.strings.unicode_transcode(
            tf.reshape(text, [-1]), "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
        )
        text = tf.strings.regex_replace(text, _WHITESPACE_CONTROLS, " ")
        text = tf.strings.regex_replace(text, _CONTROLS, "")
        text = tf.strings.regex_replace(text, _WHITESPACE, " ")
        text = tf.strings.regex_replace(text, _CJK, r" \1 ")
        if self.settings.strip_accents:
            text = tf.strings.regex_replace(tf_text.normalize_utf8(text, "NFD"), r"\p{Mn}", "")
        if self.settings.lowercase:
            # ICU lower-cases a word-final capital sigma to ς; tokenizers maps
            # each character on its own (Σ -> σ), as BERT's vocabulary expects.
            text = tf.strings.lower(
                tf.strings.regex_replace(text, "\u03a3", "\u03c3"), encoding="utf-8"
            )
        return text

    def words(self, text: tf.Tensor) -> tf.RaggedTensor:
        """Normalized words and punctuation marks [batch, (words)]."""
        words = tf_text.regex_split(
            self.normalize(text), f" +|({_PUNCTUATION})", keep_delim_regex_pattern=_PUNCTUATION
        )
        too_long = (
            tf.strings.length(words.flat_values, unit="UTF8_CHAR")
            > self.settings.max_input_chars_per_word
        )
        return words.with_flat_values(
            tf.where(too_long, self.settings.unk_token, words.flat_values)
        )

    def piece_ids(self, text: tf.Tensor) -> tf.RaggedTensor:
        """WordPiece ids [batch, (pieces)], without ``[CLS]``/``[SEP]``."""
        return self._wordpiece.tokenize(self.words(text)).merge_dims(1, 2)

    def __call__(self, text: tf.Tensor, length: int) -> tf.Tensor:
        """``[CLS]`` + the first ``length - 2`` pieces + ``[SEP]``, 0-padded to ``length``."""
        if length < 3:
            raise ValueError(f"a WordPiece sequence needs length >= 3, not {length}")
        pieces = self.piece_ids(text)[:, : length - 2]
        rows = pieces.nrows()
        cls = tf.RaggedTensor.from_tensor(tf.fill(tf.stack([rows, 1]), self.cls_id))
        sep = tf.RaggedTensor.from_tensor(tf.fill(tf.stack([rows, 1]), self.sep_id))
        packed = tf.concat([tf.cast(cls, tf.int64), pieces, tf.cast(sep, tf.int64)], axis=1)
        return packed.to_tensor(default_value=0, shape=[None, length])
