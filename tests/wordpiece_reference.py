"""BERT's own tokenization algorithm in pure Python (after google-research/bert's
``tokenization.py``): an independent reference for the tokenizers the pipeline uses."""

import unicodedata
from typing import Dict, List


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def basic_tokens(text: str, lowercase: bool = True, strip_accents: bool = True) -> List[str]:
    cleaned = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        cleaned.append(" " if _is_whitespace(ch) else ch)
    spaced = "".join(f" {ch} " if _is_cjk(ord(ch)) else ch for ch in cleaned)
    tokens = []
    for token in spaced.split():
        if lowercase:
            token = token.lower()
        if strip_accents:
            token = "".join(
                c for c in unicodedata.normalize("NFD", token) if unicodedata.category(c) != "Mn"
            )
        piece = ""
        for ch in token:
            if _is_punctuation(ch):
                if piece:
                    tokens.append(piece)
                tokens.append(ch)
                piece = ""
            else:
                piece += ch
        if piece:
            tokens.append(piece)
    return tokens


def wordpiece_ids(
    text: str,
    vocab: Dict[str, int],
    lowercase: bool = True,
    strip_accents: bool = True,
    unk: str = "[UNK]",
    max_chars: int = 100,
) -> List[int]:
    """Token ids of ``text`` (no [CLS]/[SEP]): basic tokens, then greedy longest-match."""
    ids = []
    for token in basic_tokens(text, lowercase, strip_accents):
        if len(token) > max_chars:
            ids.append(vocab[unk])
            continue
        pieces, start = [], 0
        while start < len(token):
            end, match = len(token), None
            while start < end:
                candidate = ("##" if start else "") + token[start:end]
                if candidate in vocab:
                    match = candidate
                    break
                end -= 1
            if match is None:
                pieces = [unk]
                break
            pieces.append(match)
            start = end
        ids.extend(vocab[p] for p in pieces)
    return ids
