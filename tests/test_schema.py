"""The curated schemas agree with trainer/features.py and catch bad data."""

import pandas as pd
import pytest
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2

import schemas
from components.anomalies_gate import describe_anomalies
from trainer import features as F

TYPES = {"string": schema_pb2.BYTES, "int": schema_pb2.INT, "float": schema_pb2.FLOAT}


@pytest.mark.parametrize("path", [schemas.SCHEMA_PATH, schemas.MOVIELENS_SCHEMA_PATH])
def test_schema_declares_every_raw_feature_with_its_type(path):
    schema = tfdv.load_schema_text(path)
    declared = {f.name: f for f in schema.feature}
    assert set(declared) == {f.name for f in F.RAW_FEATURES}
    for feature in F.RAW_FEATURES:
        assert declared[feature.name].type == TYPES[feature.dtype], feature.name
        assert declared[feature.name].HasField("shape") != feature.varlen, feature.name


def _stats(rows):
    return tfdv.generate_statistics_from_dataframe(pd.DataFrame(rows))


def _row(**overrides):
    row = {
        F.EVENT_ID: "e1",
        F.TIMESTAMP: 1_700_000_000,
        F.USER_ID: "u",
        F.ITEM_ID: "i",
        F.ITEM_TITLE: "t",
        F.ITEM_DESCRIPTION: "d",
        F.ITEM_CATEGORY: "music",
        F.HISTORY_TITLES: "",
        F.USER_PROFILE: "",
        F.CLICK: 1,
        F.PURCHASE: 0,
        F.RATING: 0.0,
        F.RATING_WEIGHT: 0.0,
        F.IMPRESSION_WEIGHT: 1.0,
    }
    row.update(overrides)
    return row


def test_good_rows_pass_and_broken_rows_are_named():
    schema = tfdv.load_schema_text(schemas.SCHEMA_PATH)
    assert not tfdv.validate_statistics(_stats([_row(), _row(**{F.CLICK: 0})]), schema).anomaly_info
    broken = [_row(**{F.ITEM_CATEGORY: "not-a-category", F.CLICK: 3, F.RATING: 9.0})]
    anomalies = tfdv.validate_statistics(_stats(broken), schema)
    assert {F.ITEM_CATEGORY, F.CLICK, F.RATING} <= set(anomalies.anomaly_info)
    lines = describe_anomalies(anomalies, "train")
    assert any("'item_category'" in line and "train" in line for line in lines)
