"""Client for the recommender, over TF Serving's gRPC stubs or its REST API.

Works against the local ``serving.server`` and the real TF Serving alike;
``transport="rest"`` (``--transport rest``, target ``host:8501``) talks
TF Serving's REST JSON instead of gRPC (``transports``).

Scoring uses the ``serving_default`` signature: one input, ``examples``, a
1-D string tensor of serialized ``tf.train.Example``s holding the raw
features (see ``make_example``); the outputs are one tensor per task
(``[batch, 1]``, or ``[batch, categories]`` for ``category`` and
``interest``). Retrieval uses the ``recommend`` signature: one string tensor
per user feature (``serving_contract.RECOMMEND_FEATURES``) in, ``item_ids`` and ``scores``
``[batch, K]`` out.

    recsys-client --target 127.0.0.1:8500 recommend --catalog data/items.jsonl \\
        --user-id u00001 --history "Jazz piano | Guitar song" --k 10
"""

from __future__ import annotations

import argparse
import json
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from trainer import keras_env as _keras_env  # noqa: F401  (before TF)

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

from serving.tensors import fill_tensor_proto
from serving.tls import ClientTls
from serving.transports import GrpcTransport, RestTransport, statuses
from trainer import features as F
from trainer import serving_contract as C

ITEM_FIELDS = {
    F.ITEM_ID: "item_id",
    F.ITEM_TITLE: "title",
    F.ITEM_DESCRIPTION: "description",
    F.ITEM_CATEGORY: "category",
}


def request_string(value: object) -> str:
    """A feature value as a named-input string; a list (history item ids) is
    joined with the history separator, as ``predict``/``recommend`` split it."""
    if isinstance(value, (list, tuple)):
        return F.HISTORY_SEPARATOR.join(str(v) for v in value)
    return str(value or "")


def _as_list(value: object) -> List[str]:
    """Item ids given as a list or as one "a | b" string -> a list."""
    if isinstance(value, (list, tuple, set)):
        return [str(v) for v in value]
    return [v.strip() for v in str(value or "").split(F.HISTORY_SEPARATOR.strip()) if v.strip()]


def make_example(features: Mapping[str, object]) -> bytes:
    """A serialized tf.Example of raw serving features (strings, or a list for lists)."""
    unknown = sorted(set(features) - set(F.SERVING_FEATURES))
    if unknown:
        raise ValueError(f"unknown features {unknown}; the model takes {list(F.SERVING_FEATURES)}")
    feature = {}
    for name, value in features.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        feature[name] = tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[str(v).encode("utf-8") for v in values])
        )
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def item_features(item: Mapping[str, object]) -> Dict[str, object]:
    """Catalogue row (item_id, title, description, category) -> raw item features."""
    return {feature: item.get(field) or "" for feature, field in ITEM_FIELDS.items()}


class RecommenderClient:
    """Scores and recommends through a TF Serving-compatible server."""

    def __init__(
        self,
        target: str = "127.0.0.1:8500",
        model_name: str = "recommender",
        timeout: float = 30.0,
        max_message_bytes: int = 64 * 2**20,
        tls: Optional[ClientTls] = None,
        server_name: Optional[str] = None,
        transport: str = "grpc",
        version_label: str = "",
    ):
        """Opens a channel to the server (requests are sent on demand).

        Args:
          target: the server's ``host:port`` (its REST port with ``transport="rest"``).
          model_name: the model the requests name.
          timeout: seconds each call may take (the gRPC deadline).
          max_message_bytes: largest request or response message.
          tls: talk TLS (mutual with a client certificate).
          server_name: the name the server's certificate was issued for, when
            it is not the host in ``target``.
          transport: ``grpc`` or ``rest`` (TF Serving's REST API; no TLS).
          version_label: requests name this label (e.g. ``stable``), unless
            a call names a version.
        """
        self.model_name, self.timeout, self.version_label = model_name, timeout, version_label
        if transport == "grpc":
            self._transport = GrpcTransport(target, timeout, max_message_bytes, tls, server_name)
        elif transport == "rest":
            if tls:
                raise ValueError("the REST transport is plain HTTP, as TF Serving's; use gRPC")
            self._transport = RestTransport(target, timeout)
        else:
            raise ValueError(f"transport must be 'grpc' or 'rest', got {transport!r}")
        self.transport = transport

    def _spec(self, request, version: Optional[int] = None, signature: str = "") -> None:
        request.model_spec.name = self.model_name
        if signature:
            request.model_spec.signature_name = signature
        if version is not None:
            request.model_spec.version.value = version
        elif self.version_label:
            request.model_spec.version_label = self.version_label

    def close(self) -> None:
        self._transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        self._transport.wait_ready(timeout)

    def status(self) -> List[Tuple[int, str]]:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.model_name
        return statuses(self._transport.status(request))

    def signatures(self, version: Optional[int] = None) -> Dict[str, object]:
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._spec(request, version)
        request.metadata_field.append("signature_def")
        return self._transport.metadata(request)

    def predict(
        self,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        version: Optional[int] = None,
    ) -> Tuple[Dict[str, np.ndarray], Optional[int]]:
        """Runs any signature on NumPy inputs; returns (outputs, the version
        that answered; ``None`` over REST, whose answer does not name it)."""
        request = predict_pb2.PredictRequest()
        self._spec(request, version, signature)
        for name, value in inputs.items():
            fill_tensor_proto(request.inputs[name], value)
        return self._transport.predict(request)

    def predict_examples(
        self, rows: Sequence[Mapping[str, object]], version: Optional[int] = None
    ) -> Tuple[Dict[str, np.ndarray], Optional[int]]:
        """Runs ``serving_default`` on raw feature rows; returns (outputs, model version)."""
        examples = np.asarray([make_example(r) for r in rows], dtype=object)
        return self.predict(C.SERVING_DEFAULT, {C.EXAMPLES: examples}, version)

    def score(
        self, user: Mapping[str, object], items: Sequence[Mapping[str, object]]
    ) -> Dict[str, np.ndarray]:
        """Every task's output for the user paired with each catalogue item:
        ``[items]`` for one-score tasks, ``[items, categories]`` for the others."""
        outputs, _ = self.predict_examples([{**user, **item_features(item)} for item in items])
        shaped = {name: value.reshape(len(items), -1) for name, value in outputs.items()}
        return {
            name: value[:, 0] if value.shape[1] == 1 else value for name, value in shaped.items()
        }

    def retrieve(
        self,
        user: Mapping[str, object],
        version: Optional[int] = None,
        exclude: Iterable[str] = (),
    ) -> List[Tuple[str, float]]:
        """The model's top-K (item_id, score) for a user from its ``recommend``
        signature (two-tower retrieval over the whole catalogue), leaving out
        the user's ``history_item_ids`` and ``exclude``."""
        user = {**user, C.EXCLUDE_ITEM_IDS: [*_as_list(user.get(C.EXCLUDE_ITEM_IDS)), *exclude]}
        inputs = {
            name: np.asarray([request_string(user.get(name)).encode("utf-8")], dtype=object)
            for name in C.RECOMMEND_FEATURES
        }
        outputs, _ = self.predict(C.RECOMMEND, inputs, version)
        ids, scores = outputs[C.ITEM_IDS][0], outputs[C.SCORES][0]
        return [(i.decode("utf-8"), float(s)) for i, s in zip(ids, scores) if i]

    def recommend(
        self,
        user: Mapping[str, object],
        catalog: Sequence[Mapping[str, object]],
        k: int = 10,
        exclude: Iterable[str] = (),
        batch_size: int = 256,
        task: Optional[str] = None,
        retrieve_first: bool = False,
    ) -> List[Tuple[str, float]]:
        """Top-``k`` (item_id, score) ranked by ``task``'s output (None: the
        first of ``RANKING_TASKS`` the model serves, since a run may switch a
        task off for lack of labels), over the whole catalogue or, with
        ``retrieve_first``, over the items the ``recommend`` signature
        retrieves (retrieval, then ranking)."""
        excluded = set(exclude)
        candidates = [item for item in catalog if str(item["item_id"]) not in excluded]
        if retrieve_first:
            by_id = {str(item["item_id"]): item for item in candidates}
            candidates = [by_id[i] for i, _ in self.retrieve(user, exclude=excluded) if i in by_id]
        scores: List[float] = []
        for start in range(0, len(candidates), batch_size):
            outputs = self.score(user, candidates[start : start + batch_size])
            task = task or next((t for t in RANKING_TASKS if t in outputs), None)
            if task not in outputs:
                raise ValueError(
                    f"the served model has no {task!r} output (a task off in its run?); "
                    f"it serves {sorted(outputs)}"
                )
            scores.extend(outputs[task].tolist())
        order = np.argsort(-np.asarray(scores), kind="stable")[:k]
        return [(str(candidates[i]["item_id"]), float(scores[i])) for i in order]


# What ``recommend`` ranks by when not told, in order of preference.
RANKING_TASKS = ("click", "conversion", "rating")


def load_catalog_jsonl(path: str) -> List[Dict[str, object]]:
    with tf.io.gfile.GFile(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Query the recommender over gRPC or REST.")
    p.add_argument("--target", default=None, help="host:port (default 127.0.0.1:8500, REST 8501)")
    p.add_argument("--transport", choices=("grpc", "rest"), default="grpc")
    p.add_argument("--model-name", default="recommender")
    p.add_argument("--version-label", default="", help="ask for this label (e.g. stable)")
    p.add_argument("--tls", action="store_true", help="talk TLS (implied by the --tls-* flags)")
    p.add_argument(
        "--tls-ca",
        help="PEM CA bundle that signed the server's certificate (default: system roots)",
    )
    p.add_argument("--tls-cert", help="PEM client certificate, for mutual TLS (with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument(
        "--tls-server-name", help="the name on the server's certificate, if not the target's host"
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="model versions and their states")
    for name in ("score", "recommend"):
        c = sub.add_parser(name)
        c.add_argument(
            "--catalog", required=True, help="items.jsonl (item_id, title, description, category)"
        )
        c.add_argument("--user-id", required=True)
        c.add_argument(
            "--history", default="", help='titles of recently clicked items, joined by " | "'
        )
        c.add_argument("--profile", default="", help="user profile text")
        c.add_argument(
            "--history-item-ids",
            default="",
            help='ids of recently clicked items, "a | b", newest last',
        )
    sub.choices["score"].add_argument("--item-id", action="append", required=True)
    sub.choices["recommend"].add_argument("--k", type=int, default=10)
    sub.choices["recommend"].add_argument(
        "--retrieve-first",
        action="store_true",
        help="rank only the items the model's recommend signature retrieves (two-stage)",
    )
    args = p.parse_args(argv)
    tls = (
        ClientTls(args.tls_ca, args.tls_cert, args.tls_key)
        if args.tls or args.tls_ca or args.tls_cert or args.tls_key
        else None
    )
    target = args.target or ("127.0.0.1:8501" if args.transport == "rest" else "127.0.0.1:8500")
    with RecommenderClient(
        target,
        args.model_name,
        tls=tls,
        server_name=args.tls_server_name,
        transport=args.transport,
        version_label=args.version_label,
    ) as client:
        if args.command == "status":
            print(json.dumps(client.status()))
            return
        catalog = load_catalog_jsonl(args.catalog)
        user = {
            F.USER_ID: args.user_id,
            F.HISTORY_TITLES: args.history,
            F.USER_PROFILE: args.profile,
            F.HISTORY_ITEM_IDS: args.history_item_ids,
        }
        if args.command == "score":
            by_id = {str(i["item_id"]): i for i in catalog}
            missing = [i for i in args.item_id if i not in by_id]
            if missing:
                raise SystemExit(f"error: items {missing} are not in {args.catalog}")
            scores = client.score(user, [by_id[i] for i in args.item_id])
            for n, item_id in enumerate(args.item_id):
                print(
                    item_id,
                    {task: round(float(v[n]), 4) for task, v in scores.items() if v.ndim == 1},
                )
        else:
            titles = {str(i["item_id"]): i.get("title", "") for i in catalog}
            seen = _as_list(args.history_item_ids)  # already consumed: never recommended
            top = client.recommend(
                user, catalog, args.k, exclude=seen, retrieve_first=args.retrieve_first
            )
            for rank, (item_id, score) in enumerate(top, 1):
                print(f"{rank:>3}. {item_id:<10} {score:.4f}  {titles[item_id]}")


if __name__ == "__main__":
    main()
