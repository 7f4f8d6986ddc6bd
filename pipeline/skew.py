"""Training-serving skew: the requests a server logged against the data the
model was trained on.

    recsys-pipeline skew --request-log '/logs/requests-*.tfrecord' --work-dir runs/local

Reads the ``PredictionLog`` records the server wrote (``serving/request_log.py``,
TF Serving's ``logging_config``), turns every ``serving_default`` and
``predict`` request into the raw features it carried, computes their TFDV
statistics and compares them with the training split's statistics of the
work dir's latest run by the schema's ``skew_comparator``s. Writes
``<work_dir>/report/skew.md``, a plot of each compared feature's values in
training and in the requests, and the request statistics; exits 1 when a
distance is above its threshold.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

import schemas
from trainer import features as F
from trainer import serving_contract as C

SKEW_REPORT = "skew.md"
SKEW_PLOT = "skew.png"


def request_rows(record) -> Tuple[str, List[Dict[str, List[str]]]]:
    """(signature, the raw model features of each example a logged Predict
    request carried); ``recommend`` requests, user features only, give none."""
    import tensorflow as tf

    request = record.predict_log.request
    signature = request.model_spec.signature_name or C.SERVING_DEFAULT
    if signature == C.SERVING_DEFAULT and C.EXAMPLES in request.inputs:
        rows = []
        for serialized in tf.make_ndarray(request.inputs[C.EXAMPLES]).reshape(-1):
            example = tf.train.Example.FromString(serialized)
            rows.append(
                {
                    name: [v.decode("utf-8", "replace") for v in feature.bytes_list.value]
                    for name, feature in example.features.feature.items()
                    if name in F.SERVING_FEATURES and feature.WhichOneof("kind") == "bytes_list"
                }
            )
        return signature, rows
    if signature == C.PREDICT:
        columns = {
            name: tf.make_ndarray(request.inputs[name]).reshape(-1)
            for name in C.PREDICT_FEATURES
            if name in request.inputs
        }
        size = min((len(v) for v in columns.values()), default=0)
        rows = []
        for i in range(size):
            row = {name: [v[i].decode("utf-8", "replace")] for name, v in columns.items()}
            if F.HISTORY_ITEM_IDS in row:
                ids = row[F.HISTORY_ITEM_IDS][0].split(F.HISTORY_SEPARATOR.strip())
                row[F.HISTORY_ITEM_IDS] = [i.strip() for i in ids if i.strip()]
            rows.append(row)
        return signature, rows
    return signature, []


def read_request_log(pattern: str) -> Iterator:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no request log files match {pattern!r}")
    for raw in tf.data.TFRecordDataset(files):
        yield prediction_log_pb2.PredictionLog.FromString(raw.numpy())


def request_statistics(pattern: str, out_dir: str):
    """TFDV statistics of the logged requests' examples, and counts per signature."""
    import tensorflow as tf
    import tensorflow_data_validation as tfdv

    counts: Dict[str, int] = {}
    path = os.path.join(out_dir, "request_examples.tfrecord")
    os.makedirs(out_dir, exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for record in read_request_log(pattern):
            signature, rows = request_rows(record)
            counts[signature] = counts.get(signature, 0) + len(rows)
            for row in rows:
                feature = {
                    name: tf.train.Feature(
                        bytes_list=tf.train.BytesList(value=[v.encode() for v in values])
                    )
                    for name, values in row.items()
                }
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
    if not sum(counts.values()):
        raise ValueError(f"the request log {pattern!r} holds no serving_default or predict rows")
    stats = tfdv.generate_statistics_from_tfrecord(path, output_path=path + ".stats")
    return stats, counts


def skew_lines(training, serving, schema) -> List[str]:
    """One line per feature whose serving distribution is beyond its
    ``skew_comparator`` threshold from training's."""
    import tensorflow_data_validation as tfdv

    from components.drift_gate import comparator_reasons

    anomalies = tfdv.validate_statistics(training, schema, serving_statistics=serving)
    return [
        f"feature {feature!r}: " + "; ".join(reasons)
        for feature, reasons in comparator_reasons(anomalies).items()
    ]


def _shares(stats, name: str) -> Dict[str, float]:
    for feature in stats.datasets[0].features:
        if feature.path.step == [name] and feature.HasField("string_stats"):
            buckets = feature.string_stats.rank_histogram.buckets
            total = sum(b.sample_count for b in buckets) or 1.0
            return {b.label: b.sample_count / total for b in buckets}
    return {}


def plot_skew(training, serving, names: List[str], path: str) -> None:
    """Each compared feature's top values: share in training and in the requests."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(names), 1, figsize=(9, 3.2 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        train, served = _shares(training, name), _shares(serving, name)
        labels = sorted(set(train) | set(served), key=lambda v: -train.get(v, 0))[:20]
        x = range(len(labels))
        ax.bar([i - 0.2 for i in x], [train.get(v, 0) for v in labels], 0.4, label="training")
        ax.bar([i + 0.2 for i in x], [served.get(v, 0) for v in labels], 0.4, label="requests")
        ax.set_xticks(list(x), labels, rotation=45, ha="right", fontsize=8)
        ax.set_title(name)
        ax.set_ylabel("share")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def latest_training_statistics(metadata_path: str):
    """The train split's statistics of the latest StatisticsGen run in ML Metadata."""
    import tensorflow_data_validation as tfdv
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata

    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(metadata_path))
    artifacts = store.get_artifacts_by_type("ExampleStatistics")
    if not artifacts:
        raise FileNotFoundError(f"no training statistics in {metadata_path!r}: run the pipeline")
    latest = max(artifacts, key=lambda a: a.id)
    return tfdv.load_stats_binary(os.path.join(latest.uri, "Split-train", "FeatureStats.pb"))


def main(argv: Optional[List[str]] = None) -> int:
    import tensorflow_data_validation as tfdv

    from pipeline import configs

    p = argparse.ArgumentParser(prog="recsys-pipeline skew", description=__doc__.splitlines()[0])
    p.add_argument("--request-log", required=True, help="glob of the server's request log files")
    p.add_argument("--work-dir", default=configs.RunConfig.work_dir, help="the training run's")
    p.add_argument("--schema", default=schemas.SCHEMA_PATH, help="with skew_comparator entries")
    args = p.parse_args(argv)
    try:
        run = configs.RunConfig(data_dir=None, work_dir=args.work_dir)
        training = latest_training_statistics(run.metadata_path)
        report_dir = os.path.join(args.work_dir, "report")
        serving, counts = request_statistics(args.request_log, os.path.join(report_dir, "skew"))
    except (FileNotFoundError, ValueError) as e:
        print(f"recsys-pipeline skew: {e}", file=sys.stderr)
        return 2
    schema = tfdv.load_schema_text(args.schema)
    compared = [f.name for f in schema.feature if f.HasField("skew_comparator")]
    lines = skew_lines(training, serving, schema)
    plot_skew(training, serving, compared, os.path.join(report_dir, SKEW_PLOT))
    _write_report(os.path.join(report_dir, SKEW_REPORT), args.request_log, counts, compared, lines)
    print(f"requests read: {counts}; features compared: {compared}")
    print("\n".join(lines) if lines else "no skew beyond the schema's skew_comparator thresholds")
    print(f"report: {os.path.join(report_dir, SKEW_REPORT)}")
    return 1 if lines else 0


def _write_report(path, pattern, counts: Mapping[str, int], compared, lines) -> None:
    with open(path, "w") as f:
        f.write(f"# Training-serving skew\n\nRequest log: `{pattern}`; rows per signature: ")
        f.write(", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        f.write(f".\n\nCompared (skew_comparator): {', '.join(compared) or 'none'}.\n\n")
        f.write("\n".join(f"- {line}" for line in lines) or "No skew beyond the thresholds.")
        f.write(f"\n\n![training vs requests]({SKEW_PLOT})\n")
