"""DriftGate: stops the run when today's data drifted from the last run's.

The curated schema carries TFDV drift comparators (L-infinity for categorical
features, Jensen-Shannon divergence for numeric ones, each with its
threshold). TFDV compares each split's statistics with the same split of the
previous run's (``previous_statistics``, resolved from ML Metadata before this
run's StatisticsGen writes its own): a distance above a threshold is an
anomaly, and like any anomaly it stops the run before Transform, naming the
feature and the distance. The first run, with nothing to compare with, passes.
"""

import os
from typing import Dict, List

import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils

from trainer import features as F

DRIFT_REASONS = frozenset(
    name for name in anomalies_pb2.AnomalyInfo.Type.keys() if name.startswith("COMPARATOR_")
)


# The comparators a new schema starts with (``recsys-pipeline infer-schema``;
# the shipped schemas carry the same): (comparator, threshold) per feature.
DEFAULT_DRIFT_COMPARATORS = {
    F.ITEM_CATEGORY: ("infinity_norm", 0.25),
    F.CLICK: ("infinity_norm", 0.25),
    F.RATING: ("jensen_shannon_divergence", 0.25),
}


class DataDriftError(RuntimeError):
    """Today's data drifted beyond the schema's thresholds."""


def _split_statistics(artifact) -> Dict[str, statistics_pb2.DatasetFeatureStatisticsList]:
    out = {}
    for split in artifact_utils.decode_split_names(artifact.split_names):
        path = os.path.join(artifact_utils.get_split_uri([artifact], split), "FeatureStats.pb")
        if tf.io.gfile.exists(path):
            out[split] = tfdv.load_stats_binary(path)
    return out


def comparator_reasons(anomalies: anomalies_pb2.Anomalies) -> Dict[str, List[str]]:
    """{feature: the descriptions of its drift or skew comparator anomalies}."""
    out = {}
    for feature, info in sorted(anomalies.anomaly_info.items()):
        reasons = [
            r.description or r.short_description
            for r in info.reason
            if anomalies_pb2.AnomalyInfo.Type.Name(r.type) in DRIFT_REASONS
        ]
        if reasons:
            out[feature] = reasons
    return out


def drift_lines(
    current: Dict[str, statistics_pb2.DatasetFeatureStatisticsList],
    previous: Dict[str, statistics_pb2.DatasetFeatureStatisticsList],
    schema,
) -> List[str]:
    """One line per feature whose distance to the previous statistics is above
    its comparator's threshold, in each split both runs have."""
    lines = []
    for split in sorted(set(current) & set(previous)):
        anomalies = tfdv.validate_statistics(
            current[split], schema, previous_statistics=previous[split]
        )
        for feature, reasons in comparator_reasons(anomalies).items():
            lines.append(f"split {split!r}, feature {feature!r}: " + "; ".join(reasons))
    return lines


@tfx.dsl.components.component
def DriftGate(
    statistics: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleStatistics],
    schema: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Schema],
    previous_statistics: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.ExampleStatistics
    ] = None,
):
    """Raises DataDriftError listing every drifted feature, if there is any."""
    if previous_statistics is None or previous_statistics.id == statistics.id:
        return  # the first run, or the same statistics (a cached ExampleGen)
    schema_proto = tfdv.load_schema_text(os.path.join(schema.uri, "schema.pbtxt"))
    lines = drift_lines(
        _split_statistics(statistics), _split_statistics(previous_statistics), schema_proto
    )
    if lines:
        raise DataDriftError(
            "Today's data drifted from the last run's beyond the schema's drift_comparator "
            "thresholds; the run stops here:\n  " + "\n  ".join(lines) + "\nIf the change is "
            "expected, loosen the feature's drift_comparator in the schema; a different "
            "dataset takes its own --work-dir."
        )
