"""Request logging (TF Serving's logging_config) and the skew check on it."""

import glob

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_serving.apis import predict_pb2

import schemas
from pipeline import skew
from serving.model_config import ServedModel, read_model_config_file
from serving.request_log import RequestLogger, RequestLogging
from serving.server import ModelServer
from serving.serving_protos import ConfigFileError
from serving.tensors import fill_tensor_proto
from tests.serving_fixtures import push_toy
from tests.test_serving_apis import MODEL, _grpc, _rows
from trainer import features as F
from trainer import serving_contract as C


def _predict_request(categories):
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "recommender", C.PREDICT
    for name in C.PREDICT_FEATURES:
        values = categories if name == F.ITEM_CATEGORY else ["x"] * len(categories)
        if name == F.HISTORY_ITEM_IDS:
            values = ["a | b"] * len(categories)
        fill_tensor_proto(request.inputs[name], np.asarray([v.encode() for v in values], object))
    return request


def _records(prefix):
    return list(skew.read_request_log(f"{prefix}-*.tfrecord"))


def test_a_sample_is_logged_in_rotated_files_that_never_grow_without_bound(tmp_path):
    prefix = str(tmp_path / "logs" / "requests")
    logger = RequestLogger(RequestLogging(prefix, 1.0, max_records_per_file=3, max_files=2))
    response = predict_pb2.PredictResponse()
    response.model_spec.name = "recommender"
    for n in range(10):
        logger.maybe_log(_predict_request([f"c{n}"]), response)
    logger.close()
    files = sorted(glob.glob(prefix + "-*.tfrecord"))
    assert len(files) == 2 and logger.logged == 10 and logger.errors == 0
    records = _records(prefix)
    assert len(records) == 4  # the newest 3 + 1: the files of the first 6 were dropped
    assert records[-1].predict_log.request.inputs[F.ITEM_CATEGORY].string_val == [b"c9"]
    assert records[0].log_metadata.sampling_config.sampling_rate == 1.0
    sampled = RequestLogger(RequestLogging(str(tmp_path / "half"), 0.25), seed=3)
    for _ in range(2000):
        sampled.maybe_log(_predict_request(["c"]), response)
    assert 400 < sampled.logged < 600


def test_the_model_config_file_sets_logging_and_bad_settings_are_named(tmp_path):
    def config(logging):
        path = tmp_path / "models.config"
        path.write_text(
            f'model_config_list {{ config {{ name: "m" base_path: "{tmp_path}" '
            f"logging_config {{ {logging} }} }} }}"
        )
        return str(path)

    (model,) = read_model_config_file(config(
        'log_collector_config { type: "file" filename_prefix: "/l/r" } '
        "sampling_config { sampling_rate: 0.1 }"
    ))  # fmt: skip
    assert model.logging == RequestLogging("/l/r", 0.1)
    for bad, words in [
        ('log_collector_config { type: "kafka" filename_prefix: "/l" } '
         "sampling_config { sampling_rate: 0.1 }", "only 'file'"),
        ('log_collector_config { filename_prefix: "/l" }', "sampling_rate 0.0"),
        ("log_collector_config { } sampling_config { sampling_rate: 0.5 }", "filename_prefix"),
        ('log_collector_config { filename_prefix: "/l" } sampling_config { sampling_rate: 2 }',
         "sampling_rate 2.0"),
    ]:  # fmt: skip
        with pytest.raises(ConfigFileError, match=words):
            read_model_config_file(config(bad))


def test_the_server_logs_the_predict_calls_it_answers(tmp_path):
    base = str(tmp_path / MODEL)
    push_toy(base, 1, str(tmp_path / "scratch"))
    prefix = str(tmp_path / "logs" / "toy")
    model = ServedModel(MODEL, base, logging=RequestLogging(prefix, 1.0))
    server = ModelServer(models=[model], port=0).start()
    try:
        with _grpc(server) as client:
            for i in range(3):
                client.predict("features", _rows(2, start=i))
    finally:
        server.stop()
    records = _records(prefix)
    assert len(records) == 3
    assert records[0].predict_log.request.model_spec.signature_name == "features"
    assert records[0].predict_log.response.model_spec.version.value == 1
    assert set(records[0].predict_log.response.outputs)  # the answer is logged too


def test_skew_between_logged_requests_and_training_is_found_and_plotted(tmp_path):
    prefix = str(tmp_path / "requests")
    logger = RequestLogger(RequestLogging(prefix, 1.0))
    response = predict_pb2.PredictResponse()
    for _ in range(20):  # today's requests are nearly all for one category
        logger.maybe_log(_predict_request(["music"] * 9 + ["sports"]), response)
    example = tf.train.Example()
    example.features.feature[F.ITEM_CATEGORY].bytes_list.value.append(b"sports")
    examples = predict_pb2.PredictRequest()
    examples.model_spec.signature_name = C.SERVING_DEFAULT
    fill_tensor_proto(
        examples.inputs[C.EXAMPLES], np.asarray([example.SerializeToString()], object)
    )
    logger.maybe_log(examples, response)
    logger.close()
    signature, rows = skew.request_rows(_records(prefix)[0])
    assert signature == C.PREDICT and rows[0][F.HISTORY_ITEM_IDS] == ["a", "b"]
    serving, counts = skew.request_statistics(f"{prefix}-*.tfrecord", str(tmp_path / "out"))
    assert counts == {C.PREDICT: 200, C.SERVING_DEFAULT: 1}
    training = tfdv.generate_statistics_from_dataframe(
        pd.DataFrame({F.ITEM_CATEGORY: ["music", "sports", "cooking", "travel"] * 50})
    )
    schema = tfdv.load_schema_text(schemas.SCHEMA_PATH)
    (line,) = skew.skew_lines(training, serving, schema)
    assert line.startswith("feature 'item_category': ") and "threshold 0.25" in line
    assert skew.skew_lines(training, training, schema) == []
    skew.plot_skew(training, serving, [F.ITEM_CATEGORY], str(tmp_path / "skew.png"))
    assert (tmp_path / "skew.png").stat().st_size > 1000


def test_the_skew_command_names_a_missing_log_or_run(tmp_path, capsys):
    assert skew.main(["--request-log", str(tmp_path / "none-*"), "--work-dir", str(tmp_path)]) == 2
    assert "no training statistics" in capsys.readouterr().err
