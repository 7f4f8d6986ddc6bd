"""Lists of events as one bytes value, so Beam moves a batch without coding
each dict."""

from __future__ import annotations

import json
from typing import Any, Dict, List

import orjson


def pack(events: List[Any]) -> bytes:
    """``events`` (dicts or lists of strings and numbers, as a normalized
    event holds) as JSON: by orjson, or by ``json`` for what orjson refuses (a
    lone surrogate, an int past 64 bits). The first byte says which."""
    try:
        return b"o" + orjson.dumps(events)
    except TypeError:
        return b"j" + json.dumps(events, separators=(",", ":")).encode("ascii")


def unpack(packed: bytes) -> List[Dict[str, Any]]:
    body = packed[1:]
    return orjson.loads(body) if packed[:1] == b"o" else json.loads(body)
