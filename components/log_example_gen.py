"""InteractionLogExampleGen: a TFX ExampleGen that reads raw interaction logs.

Reads JSON Lines event logs (plain or gzip) and an item catalogue under
``input_base`` with Beam, groups the events per user, and emits one
tf.Example per impression with the item's text and category and the user's
click history. Splits follow the ``output_config`` (hash split by default).
"""
from __future__ import annotations

import collections
import os
from typing import Any, Dict, Optional

import apache_beam as beam
import tensorflow as tf
from tfx.components.example_gen import base_example_gen_executor, driver
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import channel, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter

from components import interaction_logs as logs

CATALOG_PATTERN_KEY = "catalog_pattern"
HISTORY_LENGTH_KEY = "history_length"
CODE_VERSION_KEY = "code_version"  # part of the cache key; not read by the executor
_NAMESPACE = "interaction_logs"


def _check_matches(pattern: str, what: str) -> None:
    if not tf.io.gfile.glob(pattern):
        raise FileNotFoundError(f"No {what} files match {pattern!r}.")


class _UserExamplesFn(beam.DoFn):
    """Builds the examples of one user and reports counts as Beam metrics."""

    def __init__(self, history_length: int):
        self._history_length = history_length

    def process(self, keyed_events, catalog):
        _, events = keyed_events
        counts: collections.Counter = collections.Counter()
        yield from logs.user_examples(events, catalog, self._history_length, counts)
        for name, value in counts.items():
            beam.metrics.Metrics.counter(_NAMESPACE, name).inc(value)


def _parse_event(file_and_line):
    source, line = file_and_line
    beam.metrics.Metrics.counter(_NAMESPACE, "lines").inc()
    event = logs.parse_event(line, source)
    return event["user_id"], event


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _InteractionLogsToExample(pipeline: beam.Pipeline, exec_properties: Dict[str, Any],
                              split_pattern: str) -> beam.pvalue.PCollection:
    input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    events_glob = os.path.join(input_base, split_pattern)
    catalog_glob = os.path.join(input_base, exec_properties[CATALOG_PATTERN_KEY])
    _check_matches(events_glob, "event log")
    _check_matches(catalog_glob, "item catalogue")

    catalog = (
        pipeline
        | "ReadCatalog" >> beam.io.ReadFromTextWithFilename(catalog_glob)
        | "DropEmptyCatalogLines" >> beam.Filter(lambda fl: fl[1].strip())
        | "ParseCatalog" >> beam.MapTuple(lambda source, line: logs.parse_item(line, source)))
    return (
        pipeline
        | "ReadEvents" >> beam.io.ReadFromTextWithFilename(events_glob)
        | "DropEmptyLines" >> beam.Filter(lambda fl: fl[1].strip())
        | "ParseEvents" >> beam.Map(_parse_event)
        | "GroupByUser" >> beam.GroupByKey()
        | "BuildExamples" >> beam.ParDo(
            _UserExamplesFn(int(exec_properties[HISTORY_LENGTH_KEY])),
            catalog=beam.pvalue.AsDict(catalog)))


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """Beam executor turning interaction logs into tf.Examples."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _InteractionLogsToExample


class InteractionLogExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        CATALOG_PATTERN_KEY: ExecutionParameter(type=str),
        HISTORY_LENGTH_KEY: ExecutionParameter(type=int),
        CODE_VERSION_KEY: ExecutionParameter(type=str, optional=True),
    }


def default_output_config() -> example_gen_pb2.Output:
    """Hash split: 4/5 train, 1/5 eval."""
    return example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
        example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=4),
        example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1),
    ]))


class InteractionLogExampleGen(base_beam_component.BaseBeamComponent):
    """ExampleGen over raw interaction logs plus an item catalogue."""

    SPEC_CLASS = InteractionLogExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
    DRIVER_CLASS = driver.FileBasedDriver

    def __init__(self, input_base: str, events_pattern: str = "events/*",
                 catalog_pattern: str = "items.jsonl*", history_length: int = 10,
                 output_config: Optional[example_gen_pb2.Output] = None,
                 code_version: Optional[str] = None):
        input_config = example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name="events", pattern=events_pattern)])
        spec = InteractionLogExampleGenSpec(
            input_base=input_base,
            input_config=input_config,
            output_config=output_config or default_output_config(),
            custom_config=None,
            range_config=None,
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            catalog_pattern=catalog_pattern,
            history_length=history_length,
            code_version=code_version,
            examples=channel.Channel(type=standard_artifacts.Examples))
        super().__init__(spec=spec)

