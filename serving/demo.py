"""The end of a local run: serve the pushed model and ask it for recommendations over gRPC."""

from __future__ import annotations

import glob
import logging
import os
from typing import Dict, List, Optional

import tensorflow as tf

from components.log_config import LogConfig
from serving.catalog import load_catalog
from serving.client import RecommenderClient
from serving.server import ModelServer
from trainer import features as F
from trainer import serving_contract as C

log = logging.getLogger(__name__)


def _text(example: tf.train.Example, name: str) -> List[str]:
    return [v.decode("utf-8") for v in example.features.feature[name].bytes_list.value]


def sample_user(examples_uri: str) -> Optional[Dict[str, object]]:
    """The raw user features of an eval example with a click history."""
    files = sorted(glob.glob(os.path.join(examples_uri, "Split-eval", "*.gz")))
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").take(2000):
        example = tf.train.Example.FromString(record.numpy())
        if _text(example, F.HISTORY_ITEM_IDS):
            return {
                F.USER_ID: _text(example, F.USER_ID)[0],
                F.HISTORY_TITLES: _text(example, F.HISTORY_TITLES)[0],
                F.USER_PROFILE: _text(example, F.USER_PROFILE)[0],
                F.HISTORY_ITEM_IDS: _text(example, F.HISTORY_ITEM_IDS),
                "seen": _text(example, F.HISTORY_ITEM_IDS),
            }
    return None


def recommend_over_grpc(
    model_name: str,
    push_base: str,
    data_dir: str,
    examples_uri: str,
    log_config: LogConfig = LogConfig(),
    k: int = 10,
) -> Optional[Dict[str, object]]:
    """Starts the local server on the pushed model, queries it, stops it.

    Two stages, as in production: the ``recommend`` signature retrieves the
    user's top items from the whole catalogue, the click head ranks them."""
    user = sample_user(examples_uri)
    catalog = load_catalog(data_dir, log_config)
    if user is None or not catalog:
        log.warning("no eval user with a history or no catalogue: skipping the gRPC query")
        return None
    seen = user.pop("seen")
    with ModelServer(model_name, push_base, port=0) as server:
        with RecommenderClient(server.address, model_name) as client:
            retrieve_first = C.RECOMMEND in client.signatures()
            top = client.recommend(user, catalog, k=k, exclude=seen, retrieve_first=retrieve_first)
            version = client.status()[0][0]
    titles = {item["item_id"]: item["title"] for item in catalog}
    return {
        "server": server.address,
        "version": version,
        "user": user,
        "retrieved_first": retrieve_first,
        "recommendations": [{"item_id": i, "score": s, "title": titles[i]} for i, s in top],
    }


def format_recommendations(result: Dict[str, object]) -> str:
    user = result["user"]
    how = (
        "retrieved, then ranked by p(click)"
        if result.get("retrieved_first")
        else "ranked by p(click)"
    )
    lines = [
        f"  recommendations over gRPC ({result['server']}, version {result['version']}) "
        f"for user {user[F.USER_ID]} ({how})",
        f"    history: {user[F.HISTORY_TITLES][:150]}",
    ]
    for rank, row in enumerate(result["recommendations"], 1):
        lines.append(
            f"    {rank:>2}. {row['item_id']:<8} p(click)={row['score']:.3f}  {row['title']}"
        )
    return "\n".join(lines)
