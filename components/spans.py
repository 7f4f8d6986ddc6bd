"""Spans: logs that arrive in dated (or numbered) folders, one per day.

An events pattern with TFX's span specs, ``{SPAN}`` or ``{YYYY}``/``{MM}``/
``{DD}`` (e.g. ``events/{YYYY}-{MM}-{DD}/*.jsonl.gz``), names one span per
match; a run ingests the newest ``span_window`` of them (the newest only by
default). TFX's own resolver (``example_gen.utils``) turns each span number
into its pattern, as TFX's file-based ExampleGen driver does; a date span's
number is its day since 1970-01-01. Spans missing inside the window (a day
without logs) are skipped and reported.
"""

from __future__ import annotations

import dataclasses
import re
from typing import List, Tuple

from tfx.proto import example_gen_pb2, range_config_pb2


def _example_gen_utils():
    """TFX's span resolution, imported when used: it imports TensorFlow, which
    the CLI keeps out of the process until its quiet terminal is set up."""
    from tfx.components.example_gen import utils

    return utils


@dataclasses.dataclass(frozen=True)
class SpanSelection:
    """The spans a run reads (oldest first), each with its resolved pattern."""

    spans: Tuple[int, ...]
    patterns: Tuple[str, ...]
    missing: Tuple[int, ...] = ()
    dated: bool = False  # date specs: span numbers are days since 1970-01-01

    def name(self, span: int) -> str:
        if not self.dated:
            return str(span)
        return "%04d-%02d-%02d" % _example_gen_utils().span_number_to_date(span)

    def describe(self) -> str:
        """ "spans A..B (n read[, m missing: ...])", or '' for a pattern without spans."""
        if self.spans == (0,) and not self.dated:
            return ""
        first, last = self.name(self.spans[0]), self.name(self.spans[-1])
        text = (
            f"spans {first}..{last} ({len(self.spans)} read)"
            if len(self.spans) > 1
            else (f"span {last}")
        )
        if self.missing:
            text += f", missing in the window: {', '.join(map(self.name, self.missing))}"
        return text


def any_span_glob(pattern: str) -> str:
    """``pattern`` with every span spec a ``*``: the files of all spans (what the
    driver fingerprints, so a new span invalidates the cache)."""
    return re.sub(r"\{(SPAN|VERSION|YYYY|MM|DD)(:\d+)?\}", "*", pattern)


def uses_spans(pattern: str) -> bool:
    """Whether ``pattern`` names spans (a run per day on new logs)."""
    return any_span_glob(pattern) != pattern


def _specs(pattern: str) -> Tuple[bool, bool]:
    """(has {SPAN}, has the date specs); ``ValueError`` for a malformed pattern."""
    split = example_gen_pb2.Input.Split(name="events", pattern=pattern)
    is_span, is_date, _ = _example_gen_utils().verify_split_pattern_specs(split)
    return is_span, is_date


def _resolve(input_base: str, pattern: str, span: int | None) -> Tuple[int, str]:
    split = example_gen_pb2.Input.Split(name="events", pattern=pattern)
    range_config = None
    if span is not None:
        range_config = range_config_pb2.RangeConfig(
            static_range=range_config_pb2.StaticRange(start_span_number=span, end_span_number=span)
        )
    _, found, _ = _example_gen_utils().calculate_splits_fingerprint_span_and_version(
        input_base, [split], range_config
    )
    return found, split.pattern


def select_spans(
    input_base: str, pattern: str, window: int = 1, what: str = "events"
) -> SpanSelection:
    """The newest ``window`` spans matching ``pattern`` under ``input_base``;
    a pattern without span specs is one span, 0, as it is. ``ValueError``
    names the pattern (``what`` it is for) when no span matches."""
    is_span, is_date = _specs(pattern)
    if not (is_span or is_date):
        return SpanSelection((0,), (pattern,))
    try:
        latest, latest_pattern = _resolve(input_base, pattern, None)
    except ValueError as e:
        raise ValueError(f"no span of the {what} pattern {pattern!r} under {input_base!r}") from e
    spans: List[int] = []
    patterns: List[str] = []
    missing: List[int] = []
    for span in range(latest - window + 1, latest):
        try:
            found, resolved = _resolve(input_base, pattern, span)
        except ValueError:  # no files for this span
            missing.append(span)
            continue
        spans.append(found)
        patterns.append(resolved)
    return SpanSelection(
        (*spans, latest),
        (*patterns, latest_pattern),
        tuple(s for s in missing if s >= 0),
        dated=is_date,
    )


def newest_snapshot(input_base: str, pattern: str, what: str) -> SpanSelection:
    """The newest span of a table that is a whole snapshot per span (the
    catalogue, the user table: ``items/{YYYY}-{MM}-{DD}.jsonl``); the pattern
    as it is when it has no span specs."""
    return select_spans(input_base, pattern, 1, what)
