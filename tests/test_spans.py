"""Logs in dated (or numbered) folders: a run reads the newest span or a
rolling window of spans, and records which in ML Metadata."""

import os

import pytest

from components.log_config import LogConfig
from components.spans import select_spans
from tests.conftest import CATALOG, event, write_jsonl
from tests.test_log_example_gen import _value, ingest
from trainer import features as F

DAY = 86_400
T0 = 1_764_000_000  # 2025-11-24T16:00:00Z
DATED = "events/{YYYY}-{MM}-{DD}/*.jsonl"


def _dated_logs(base, days=("2025-11-24", "2025-11-26", "2025-11-27")):
    """One folder per day; each day's impressions (and clicks) happen that day."""
    write_jsonl(str(base / "items.jsonl"), CATALOG)
    for day in days:
        offset = {"2025-11-24": 0, "2025-11-25": 1, "2025-11-26": 2, "2025-11-27": 3}[day]
        rows = []
        for i in range(6):
            ts = T0 + offset * DAY + i * 600
            item = CATALOG[i % len(CATALOG)]["item_id"]
            rows.append(event(f"{day}-i{i}", "impression", item, ts, user=f"u{i % 2}"))
            if i % 2:
                rows.append(event(f"{day}-c{i}", "click", item, ts + 30, user=f"u{i % 2}"))
        write_jsonl(str(base / "events" / day / "part-0.jsonl"), rows)


def test_the_newest_span_or_a_window_of_them_with_days_missing(tmp_path):
    _dated_logs(tmp_path)
    newest = select_spans(str(tmp_path), DATED)
    assert newest.patterns == ("events/2025-11-27/*.jsonl",)
    assert newest.describe() == "span 2025-11-27"
    window = select_spans(str(tmp_path), DATED, 4)
    assert window.patterns == (
        "events/2025-11-24/*.jsonl", "events/2025-11-26/*.jsonl", "events/2025-11-27/*.jsonl",
    )  # fmt: skip
    assert window.describe() == (
        "spans 2025-11-24..2025-11-27 (3 read), missing in the window: 2025-11-25"
    )
    assert select_spans(str(tmp_path), "events/*/*.jsonl", 3).patterns == ("events/*/*.jsonl",)
    with pytest.raises(ValueError, match="no span of the events pattern"):
        select_spans(str(tmp_path), "logs/{SPAN}/*.jsonl")


def test_numbered_spans_sort_as_numbers(tmp_path):
    for span in (3, 10, 9):
        write_jsonl(str(tmp_path / f"span-{span}" / "a.jsonl"), [{}])
    spans = select_spans(str(tmp_path), "span-{SPAN}/*.jsonl", 2)
    assert spans.spans == (9, 10) and spans.describe() == "spans 9..10 (2 read)"


def test_a_run_over_a_window_reads_only_its_spans_and_splits_by_time(tmp_path):
    _dated_logs(tmp_path)
    config = LogConfig(events_pattern=DATED, span_window=2, catalog_pattern="items.jsonl")
    examples, report, dead = ingest(tmp_path, config, tmp_path / "out")
    every = examples["train"] + examples["eval"]
    days = {_value(e, F.EVENT_ID)[:10] for e in every}
    assert days == {"2025-11-26", "2025-11-27"} and dead == []
    assert report["good_event_rows"] == 2 * 9
    # Leak-free across spans: every eval impression is later than every train one.
    assert max(_value(e, F.TIMESTAMP) for e in examples["train"]) < min(
        _value(e, F.TIMESTAMP) for e in examples["eval"]
    )


def test_the_component_records_the_spans_it_read_in_ml_metadata(tmp_path):
    from ml_metadata.metadata_store import metadata_store
    from tfx import v1 as tfx
    from tfx.orchestration import metadata
    from tfx.orchestration import pipeline as tfx_pipeline

    from components.log_example_gen import SPANS_PROPERTY, InteractionLogExampleGen
    from pipeline import configs

    _dated_logs(tmp_path / "data")
    config = LogConfig(events_pattern=DATED, span_window=3, catalog_pattern="items.jsonl",
                       max_bad_fraction=0.5)  # fmt: skip
    db = str(tmp_path / "mlmd.sqlite")
    tfx.orchestration.LocalDagRunner().run(
        tfx_pipeline.Pipeline(
            pipeline_name="spans",
            pipeline_root=str(tmp_path / "root"),
            components=[
                InteractionLogExampleGen(input_base=str(tmp_path / "data"), log_config=config)
            ],  # fmt: skip
            metadata_connection_config=metadata.sqlite_metadata_connection_config(db),
            beam_pipeline_args=["--runner=DirectRunner", *configs.IN_MEMORY_ARGS],
        )
    )
    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(db))
    (examples,) = store.get_artifacts_by_type("Examples")
    assert examples.properties["span"].int_value == 20419  # 2025-11-27, TFX's own property
    assert examples.custom_properties[SPANS_PROPERTY].string_value == (
        "spans 2025-11-26..2025-11-27 (2 read), missing in the window: 2025-11-25"
    )
    assert os.path.exists(os.path.join(examples.uri, "Split-eval"))


@pytest.mark.parametrize("window", [0, -1, True, 1.5])
def test_a_span_window_that_cannot_work_is_named(window):
    with pytest.raises(ValueError, match="span_window"):
        LogConfig(span_window=window)


def test_the_local_runners_input_check_reads_span_patterns(tmp_path):
    """The pre-run check finds a span pattern's files (it globbed the
    pattern literally, so every local run over spans stopped at once) and
    still names a pattern no span matches."""
    from pipeline.local_runner import check_data_dir

    _dated_logs(tmp_path)
    check_data_dir(str(tmp_path), LogConfig(events_pattern=DATED))
    check_data_dir(str(tmp_path), LogConfig(events_pattern="events/{YYYY}-{MM}-{DD}/*"))
    with pytest.raises(SystemExit, match="no event logs"):
        check_data_dir(str(tmp_path), LogConfig(events_pattern="events/span-{SPAN}/*.jsonl"))


def test_the_catalogue_and_user_table_are_read_from_their_newest_snapshot(tmp_path):
    """An item added to the newest catalogue is known; the older snapshot,
    which lacks it, is not read; the same for the user table's profiles."""
    _dated_logs(tmp_path)
    newest = [*CATALOG, {"item_id": "new", "title": "New", "description": "d", "category": "x"}]
    write_jsonl(str(tmp_path / "items" / "2025-11-26.jsonl"), CATALOG[:2])
    write_jsonl(str(tmp_path / "items" / "2025-11-27.jsonl"), newest)
    write_jsonl(str(tmp_path / "users" / "2025-11-20.jsonl"), [{"user_id": "u1", "age": "old"}])
    write_jsonl(str(tmp_path / "users" / "2025-11-27.jsonl"), [{"user_id": "u1", "age": "new"}])
    write_jsonl(
        str(tmp_path / "events" / "2025-11-27" / "part-1.jsonl"),
        [event("n1", "impression", "new", T0 + 3 * DAY + 5000, user="u1")],
    )
    config = LogConfig(
        events_pattern=DATED,
        span_window=2,
        catalog_pattern="items/{YYYY}-{MM}-{DD}.jsonl",
        users_pattern="users/{YYYY}-{MM}-{DD}.jsonl",
    )
    examples, report, dead = ingest(tmp_path, config, tmp_path / "out")
    every = {_value(e, F.EVENT_ID): e for e in examples["train"] + examples["eval"]}
    assert dead == [] and _value(every["n1"], F.ITEM_CATEGORY) == "x"
    assert _value(every["n1"], F.USER_PROFILE) == "age new"
    # c ("Pasta recipe") is missing from the older snapshot: its events were good.
    assert any(_value(e, F.ITEM_ID) == "c" for e in every.values())
    with pytest.raises(ValueError, match="no span of the item catalogue pattern"):
        ingest(tmp_path, LogConfig(catalog_pattern="items/{SPAN}.jsonl"), tmp_path / "o2")
