"""AnomaliesGate: stops the run when ExampleValidator found anomalies.

ExampleValidator only records anomalies; this gate reads them and fails the
component, so nothing downstream (Transform, Trainer, ...) runs on bad data.
"""

import os
from typing import List

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils


class DataAnomaliesError(RuntimeError):
    """The data does not match the curated schema."""


def describe_anomalies(anomalies: anomalies_pb2.Anomalies, split: str) -> List[str]:
    """One readable line per anomalous feature (or the dataset)."""
    lines = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        reasons = "; ".join(r.description or r.short_description for r in info.reason)
        lines.append(f"split {split!r}, feature {feature!r}: {info.short_description}: {reasons}")
    if anomalies.HasField("dataset_anomaly_info"):
        info = anomalies.dataset_anomaly_info
        lines.append(f"split {split!r}, dataset: {info.short_description}")
    return lines


def read_anomalies(artifact) -> List[str]:
    problems = []
    for split in artifact_utils.decode_split_names(artifact.split_names):
        path = os.path.join(artifact_utils.get_split_uri([artifact], split), "SchemaDiff.pb")
        if not tf.io.gfile.exists(path):
            continue
        anomalies = anomalies_pb2.Anomalies.FromString(tf.io.gfile.GFile(path, "rb").read())
        problems.extend(describe_anomalies(anomalies, split))
    return problems


@tfx.dsl.components.component
def AnomaliesGate(
    anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
):
    """Raises DataAnomaliesError listing every anomaly, if there is any."""
    problems = read_anomalies(anomalies)
    if problems:
        raise DataAnomaliesError(
            "The data does not match the curated schema (schemas/schema.pbtxt); "
            "the run stops here:\n  " + "\n  ".join(problems)
        )
