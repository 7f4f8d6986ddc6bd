"""TF Serving warmup records: written at export, one per client signature and
batch size, each a request the exported model answers.

The model is real but tiny and untrained: Transform analysed over a few
dozen impressions in process, the network built from its vocabularies and
exported with ``export_serving_model``, as the Trainer does (no pipeline run).
"""

from trainer import keras_env as _keras_env  # noqa: F401  (before TF)

import collections
import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.options.pipeline_options import PipelineOptions
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

from components.atomic_pusher import push_atomically
from schemas import SCHEMA_PATH
from tests.conftest import CATALOG
from trainer import export, warmup
from trainer import features as F
from trainer import serving_contract as C
from trainer import transform as transform_lib
from trainer.catalog import TRAIN_IMPRESSIONS
from trainer.config import ModelConfig
from trainer.data import ITEM_INPUTS
from trainer.model import build_model
from trainer.pretrained_text import no_pretrained_text
from trainer.task import vocab_sizes

ITEMS = [
    {
        F.ITEM_ID: item["item_id"],
        F.ITEM_TITLE: item["title"],
        F.ITEM_DESCRIPTION: item["description"],
        F.ITEM_CATEGORY: item["category"],
    }
    for item in CATALOG
] + [
    {
        F.ITEM_ID: "d",
        F.ITEM_TITLE: "Mountain hiking trip",
        F.ITEM_DESCRIPTION: "travel trail map",
        F.ITEM_CATEGORY: "travel",
    },
    {
        F.ITEM_ID: "e",
        F.ITEM_TITLE: "Stock market news",
        F.ITEM_DESCRIPTION: "finance invest",
        F.ITEM_CATEGORY: "finance",
    },
]
USERS = ("u1", "u2", "u3", "u4")
RECOMMEND_K = 3
SERVED = (C.SERVING_DEFAULT, C.PREDICT, C.RECOMMEND)


def _impressions():
    """Each user sees every item in turn, the earlier ones as their history."""
    rows = []
    for u, user in enumerate(USERS):
        for n, item in enumerate(ITEMS):
            history = ITEMS[:n]
            rows.append(
                {
                    F.EVENT_ID: [f"{user}-{n}"],
                    F.TIMESTAMP: [1_700_000_000 + n],
                    F.USER_ID: [user],
                    **{name: [value] for name, value in item.items()},
                    F.HISTORY_TITLES: [F.HISTORY_SEPARATOR.join(h[F.ITEM_TITLE] for h in history)],
                    F.HISTORY_ITEM_IDS: [h[F.ITEM_ID] for h in history],
                    F.HISTORY_CATEGORIES: [h[F.ITEM_CATEGORY] for h in history],
                    F.USER_PROFILE: ["likes music" if u % 2 else ""],
                    F.CLICK: [(u + n) % 2],
                    F.PURCHASE: [int((u + n) % 4 == 0)],
                    F.RATING: [float(1 + (u + n) % 5)],
                    F.RATING_WEIGHT: [float(n % 2)],
                    F.IMPRESSION_WEIGHT: [1.0],
                }
            )
    return rows


def _transform_output(out_dir: str, temp_dir: str) -> tft.TFTransformOutput:
    """Transform's analysis of ``_impressions`` over the curated schema."""
    schema = text_format.Parse(open(SCHEMA_PATH).read(), schema_pb2.Schema())
    raw_metadata = dataset_metadata.DatasetMetadata(schema)
    options = PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"])
    with beam.Pipeline(options=options) as pipeline, tft_beam.Context(temp_dir=temp_dir):
        raw = pipeline | beam.Create(_impressions())
        transform_fn = (raw, raw_metadata) | tft_beam.AnalyzeDataset(transform_lib.preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(out_dir)
    # What TFX's Transform writes beside the graph: the raw data's schema.
    metadata_io.write_metadata(
        raw_metadata, os.path.join(out_dir, tft.TFTransformOutput.RAW_METADATA_DIR)
    )
    return tft.TFTransformOutput(out_dir)


def _serialized(rows) -> tf.Tensor:
    def feature(values):
        if isinstance(values[0], int):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        if isinstance(values[0], float):
            return tf.train.Feature(float_list=tf.train.FloatList(value=values))
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))

    return tf.constant(
        [
            tf.train.Example(
                features=tf.train.Features(
                    feature={name: feature(values) for name, values in row.items() if values}
                )
            ).SerializeToString()
            for row in rows
        ]
    )


def _catalog(tf_transform_output: tft.TFTransformOutput):
    """The catalogue as ``trainer.catalog.collect_catalog`` builds it: each
    item's raw id and transformed item-tower inputs."""
    rows = {row[F.ITEM_ID][0]: row for row in _impressions()}.values()
    raw = tf.io.parse_example(_serialized(rows), tf_transform_output.raw_feature_spec())
    transformed = no_pretrained_text().add_to(tf_transform_output.transform_raw_features(raw))
    catalog = {name: transformed[name].numpy() for name in ITEM_INPUTS}
    catalog[F.ITEM_ID] = np.array([row[F.ITEM_ID][0].encode() for row in rows], dtype=object)
    catalog[TRAIN_IMPRESSIONS] = np.full(len(rows), len(USERS), np.int64)
    return catalog


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(export dir, Transform output, catalogue) of a tiny exported model."""
    root = tmp_path_factory.mktemp("warmup")
    tf_transform_output = _transform_output(str(root / "transform"), str(root / "tmp"))
    catalog = _catalog(tf_transform_output)
    config = ModelConfig(pretrained_text_encoder=None, tower_dim=8, recommend_k=RECOMMEND_K)
    network = build_model(config, vocab_sizes(tf_transform_output)).network
    export_dir = str(root / "model")
    export.export_serving_model(
        network, tf_transform_output, export_dir, catalog=catalog, recommend_k=RECOMMEND_K
    )
    return export_dir, tf_transform_output, catalog


def _batch_size(request) -> int:
    (size,) = {tf.make_ndarray(tensor).shape[0] for tensor in request.inputs.values()}
    return size


def test_every_warmup_record_runs_against_the_exported_model(exported):
    export_dir, tf_transform_output, _ = exported
    path = os.path.join(export_dir, "assets.extra", "tf_serving_warmup_requests")
    # Read as TF Serving and the local server read it: uncompressed TFRecord of PredictionLog.
    logs = [
        prediction_log_pb2.PredictionLog.FromString(record.numpy())
        for record in tf.data.TFRecordDataset(path)
    ]
    assert all(log.WhichOneof("log_type") == "predict_log" for log in logs)
    requests = [log.predict_log.request for log in logs]
    shapes = collections.Counter(
        (request.model_spec.signature_name, _batch_size(request)) for request in requests
    )
    assert shapes == {(name, size): 1 for name in SERVED for size in warmup.WARMUP_BATCH_SIZES}
    assert all(request.model_spec.name == "" for request in requests)

    model = tf.saved_model.load(export_dir)
    num_categories = tf_transform_output.vocabulary_size_by_name(F.ITEM_CATEGORY) + 1
    expected = C.expected_signatures(F.TASK_NAMES, num_categories, recommend_k=RECOMMEND_K)
    for request in requests:
        name = request.model_spec.signature_name
        signature = model.signatures[name]
        assert set(request.inputs) == set(signature.structured_input_signature[1]), name
        outputs = signature(
            **{key: tf.constant(tf.make_ndarray(value)) for key, value in request.inputs.items()}
        )
        assert set(outputs) == set(expected[name].outputs), name
        for key, value in outputs.items():
            assert value.shape[0] == _batch_size(request), (name, key)
            if value.dtype.is_floating:
                assert np.all(np.isfinite(value.numpy()) | (value.numpy() == C.EXCLUDED_SCORE))


def test_the_requests_carry_catalogue_items_and_an_unseen_user_and_item(exported):
    export_dir, tf_transform_output, catalog = exported
    requests = warmup.read_warmup_requests(export_dir)
    (batched,) = [
        r for r in requests if r.model_spec.signature_name == C.PREDICT and _batch_size(r) > 1
    ]
    columns = {name: tf.make_ndarray(value).tolist() for name, value in batched.inputs.items()}
    catalogue_ids = set(catalog[F.ITEM_ID])
    assert set(columns[F.ITEM_ID][:-1]) <= catalogue_ids
    assert columns[F.ITEM_ID][-1] == warmup.UNSEEN_ITEM_ID.encode()
    assert columns[F.USER_ID][-1] == warmup.UNSEEN_USER_ID.encode()
    assert set(columns[F.USER_ID][:-1]) <= {u.encode() for u in USERS}
    by_id = {i[F.ITEM_ID].encode(): i for i in ITEMS}
    for item_id, title, category in zip(
        columns[F.ITEM_ID][:-1], columns[F.ITEM_TITLE], columns[F.ITEM_CATEGORY]
    ):
        # The item's own words (the vocabulary keeps those seen twice) and category.
        text = by_id[item_id][F.ITEM_TITLE] + " " + by_id[item_id][F.ITEM_DESCRIPTION]
        words = transform_lib.tokenize(tf.constant([text])).flat_values.numpy()
        assert title and set(title.split()) <= set(words), item_id
        assert category == by_id[item_id][F.ITEM_CATEGORY].encode()
    histories = [row.split(b" | ") for row in columns[F.HISTORY_ITEM_IDS] if row]
    assert histories and all(set(h) <= catalogue_ids for h in histories)
    assert b"" in columns[F.HISTORY_ITEM_IDS]  # an empty history too
    (example,) = [
        r
        for r in requests
        if r.model_spec.signature_name == C.SERVING_DEFAULT and _batch_size(r) == 1
    ]
    parsed = tf.io.parse_example(
        tf.make_ndarray(example.inputs[C.EXAMPLES]),
        export.serving_raw_feature_spec(tf_transform_output),
    )
    assert parsed[F.ITEM_ID].numpy()[0, 0] == columns[F.ITEM_ID][0]


def test_no_warmup_for_the_labelled_signatures_or_a_missing_recommend(exported):
    _, tf_transform_output, _ = exported
    rows = warmup.request_rows(tf_transform_output)  # no catalogue: the item vocabulary
    assert len(rows) == max(warmup.WARMUP_BATCH_SIZES)
    assert {r[F.ITEM_ID] for r in rows[:-1]} <= {i[F.ITEM_ID] for i in ITEMS}
    signatures = [C.SERVING_DEFAULT, C.PREDICT, C.TRANSFORM_FEATURES, C.EVALUATE]
    requests = warmup.warmup_requests(signatures, rows, batch_sizes=(1, 2, 3))
    assert [(r.model_spec.signature_name, _batch_size(r)) for r in requests] == [
        (name, size) for name in (C.SERVING_DEFAULT, C.PREDICT) for size in (1, 2, 3)
    ]
    assert set(requests[3].inputs) == set(C.PREDICT_FEATURES)
    with pytest.raises(ValueError, match="1000"):
        warmup.warmup_requests([C.PREDICT], rows, batch_sizes=[1] * 1001)
    with pytest.raises(ValueError, match="transform_features"):
        warmup.signature_inputs(C.TRANSFORM_FEATURES)


def test_the_pusher_carries_the_warmup_file(exported, tmp_path):
    export_dir, _, _ = exported
    pushed = push_atomically(export_dir, str(tmp_path / "serving" / "model"), "7")
    assert os.path.exists(os.path.join(pushed, "assets.extra", "tf_serving_warmup_requests"))
    assert [r.SerializeToString() for r in warmup.read_warmup_requests(pushed)] == [
        r.SerializeToString() for r in warmup.read_warmup_requests(export_dir)
    ]
    assert warmup.read_warmup_requests(str(tmp_path)) == []
