"""Serving signatures, as ``serving_contract`` names them; every one applies
the TF Transform graph itself."""

from __future__ import annotations

from typing import Dict, Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from trainer import features as F
from trainer import serving_contract as C
from trainer import task_kinds, warmup
from trainer.catalog import catalog_dataset
from trainer.data import ITEM_INPUTS, MODEL_INPUTS, USER_INPUTS, multi_hot
from trainer.pretrained_text import PretrainedTextFeatures, item_text, no_pretrained_text

_SCORE_TOLERANCE = 1e-5


def serving_raw_feature_spec(tf_transform_output: tft.TFTransformOutput):
    """The raw features a client sends (no labels or metadata).

    Optional text features default to the empty string when left out.
    """
    spec = tf_transform_output.raw_feature_spec()
    serving = {}
    for feature in F.RAW_FEATURES:
        if feature.role != "model":
            continue
        parse_spec = spec[feature.name]
        if feature.optional and isinstance(parse_spec, tf.io.FixedLenFeature):
            parse_spec = tf.io.FixedLenFeature(
                parse_spec.shape,
                parse_spec.dtype,
                default_value=[""] * max(1, int(sum(parse_spec.shape))),
            )
        serving[feature.name] = parse_spec
    return serving


def _complete(raw: Mapping[str, tf.Tensor], batch_size: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Fills the model features a signature does not take with empty values."""
    full = dict(raw)
    for feature in F.RAW_FEATURES:
        if feature.role != "model" or feature.name in full:
            continue
        if feature.varlen:
            full[feature.name] = tf.SparseTensor(
                tf.zeros([0, 2], tf.int64),
                tf.constant([], tf.string),
                tf.stack([tf.cast(batch_size, tf.int64), tf.constant(0, tf.int64)]),
            )
        else:
            full[feature.name] = tf.fill(tf.stack([batch_size, 1]), "")
    return full


def history_ids_from_string(joined: tf.Tensor) -> tf.SparseTensor:
    """``predict``/``recommend``'s ``history_item_ids`` ("a | b", newest last)
    -> the varlen feature Transform reads [batch, None]."""
    return _split_ids(joined).to_sparse()


def _raw_requests(features: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Named string inputs [batch] -> raw features as Transform parses them."""
    raw = {
        n: tf.reshape(v, [-1, 1])
        for n, v in features.items()
        if n not in (F.HISTORY_ITEM_IDS, C.EXCLUDE_ITEM_IDS)
    }
    if F.HISTORY_ITEM_IDS in features:
        raw[F.HISTORY_ITEM_IDS] = history_ids_from_string(features[F.HISTORY_ITEM_IDS])
    return _complete(raw, tf.shape(features[F.USER_ID])[0])


def _named(outputs: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    return {name: tf.identity(value, name=name) for name, value in outputs.items()}


def attach_serving_signatures(
    network: tf.keras.Model,
    tf_transform_output: tft.TFTransformOutput,
    catalog: Mapping[str, np.ndarray] | None,
    recommend_k: int,
    retrieval_ks: Sequence[int] = C.DEFAULT_RETRIEVAL_KS,
    text_features: PretrainedTextFeatures | None = None,
) -> Dict:
    """Builds the signatures; the TFT layer, the pretrained text features, the
    catalogue embeddings and the top-K index become attributes of ``network``
    so the SavedModel tracks their tables and variables
    (tensorflow/transform#237, tensorflow/recommenders#131)."""
    network.tft_layer = tf_transform_output.transform_features_layer()
    network.pretrained_text = text_features or no_pretrained_text()
    raw_spec = serving_raw_feature_spec(tf_transform_output)
    retrieval_task = task_kinds.retrieval_task(network.output_names)
    retrieval = catalog is not None and retrieval_task is not None
    if retrieval:
        network.catalog_embeddings = tf.Variable(
            _embed_catalog(network, catalog), trainable=False, name="catalog_embeddings"
        )

    def model_inputs(raw: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        transformed = network.pretrained_text.add_to(
            network.tft_layer(dict(raw)), item_text(raw[F.ITEM_TITLE], raw[F.ITEM_DESCRIPTION])
        )
        return {name: transformed[name] for name in MODEL_INPUTS}

    def run(raw: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        return _named(network(model_inputs(raw), training=False))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=C.EXAMPLES)])
    def serve_tf_examples(serialized: tf.Tensor):
        return run(tf.io.parse_example(serialized, raw_spec))

    @tf.function(
        input_signature=[
            {name: tf.TensorSpec([None], tf.string, name=name) for name in C.PREDICT_FEATURES}
        ]
    )
    def predict(features):
        return run(_raw_requests(features))

    positives = task_kinds.retrieval_task(F.TASK_NAMES)
    num_categories = tf_transform_output.vocabulary_size_by_name(F.ID_VOCABS[F.ITEM_CATEGORY]) + 1
    full_spec = tf_transform_output.raw_feature_spec()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=C.EXAMPLES)])
    def transform_features(serialized: tf.Tensor):
        """Labelled examples -> the transformed labels and weights TFMA
        evaluates with (``preprocessing_function_names``)."""
        transformed = network.tft_layer(tf.io.parse_example(serialized, full_spec))
        outputs = {
            name: value
            for name, value in transformed.items()
            if isinstance(value, tf.Tensor) and value.dtype != tf.string
        }
        outputs[F.INTEREST_LABELS] = multi_hot(transformed[F.HISTORY_CATEGORIES_XF], num_categories)
        if positives is not None:  # retrieval's clicked impressions, on or not
            outputs[F.RETRIEVAL_POSITIVE_WEIGHT] = (
                transformed[positives.weight] * transformed[positives.label]
            )
        return outputs

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=C.EXAMPLES)])
    def evaluate(serialized: tf.Tensor):
        inputs = model_inputs(tf.io.parse_example(serialized, raw_spec))
        outputs = _named(network(inputs, training=False))
        if retrieval:
            outputs.update(_retrieval_hits(network, inputs, retrieval_ks))
        return outputs

    signatures = {
        C.SERVING_DEFAULT: serve_tf_examples,
        C.PREDICT: predict,
        C.TRANSFORM_FEATURES: transform_features,
        C.EVALUATE: evaluate,
    }
    if retrieval:
        signatures[C.RECOMMEND] = _recommend_signature(network, catalog, recommend_k)
    return signatures


def _embed_catalog(network: tf.keras.Model, catalog: Mapping[str, np.ndarray]) -> tf.Tensor:
    """Every catalogue item's retrieval embedding, in catalogue order."""
    embeddings = [
        network.item_model(
            {n: batch[n] for n in batch if n in network.item_model.input}, training=False
        )["embedding"]
        for batch in catalog_dataset(catalog)
    ]
    return tf.cast(tf.concat(embeddings, axis=0), tf.float32)


def _retrieval_hits(
    network: tf.keras.Model, inputs: Mapping[str, tf.Tensor], ks: Sequence[int]
) -> Dict[str, tf.Tensor]:
    """Per example, 1.0 when its item ranks within the user's top k over the
    catalogue (the rank is the number of catalogue items scoring higher)."""
    user = tf.cast(
        network.user_model({n: inputs[n] for n in USER_INPUTS}, training=False)["embedding"],
        tf.float32,
    )
    item = tf.cast(
        network.item_model({n: inputs[n] for n in ITEM_INPUTS}, training=False)["embedding"],
        tf.float32,
    )
    own_score = tf.reduce_sum(user * item, axis=1, keepdims=True)
    all_scores = tf.matmul(user, network.catalog_embeddings, transpose_b=True)
    # The tolerance keeps the item itself (the same embedding, scored by
    # another kernel) from outranking its own score by rounding.
    rank = tf.reduce_sum(
        tf.cast(all_scores > own_score + _SCORE_TOLERANCE, tf.int32), axis=1, keepdims=True
    )
    return {
        C.retrieval_hit_output(k): tf.identity(
            tf.cast(rank < k, tf.float32), name=C.retrieval_hit_output(k)
        )
        for k in ks
    }


def _split_ids(joined: tf.Tensor) -> tf.RaggedTensor:
    """Strings "a | b" [batch] -> their non-empty item ids [batch, None]."""
    ids = tf.strings.split(tf.reshape(joined, [-1]), F.HISTORY_SEPARATOR.strip())
    ids = ids.with_flat_values(tf.strings.strip(ids.flat_values))
    return tf.ragged.boolean_mask(ids, ids != "")


def _excluded(scores: tf.Tensor, ids: tf.RaggedTensor, rows: tf.lookup.StaticHashTable):
    """``scores`` [batch, items] with each row's ``ids`` set to the lowest float."""
    row = rows.lookup(ids.flat_values)
    known = row >= 0
    indices = tf.stack([tf.boolean_mask(ids.value_rowids(), known), tf.boolean_mask(row, known)], 1)
    lowest = tf.fill(tf.shape(indices)[:1], C.EXCLUDED_SCORE)
    return tf.tensor_scatter_nd_update(scores, indices, lowest)


def _recommend_signature(network: tf.keras.Model, catalog: Mapping[str, np.ndarray], k: int):
    """Top-``k`` catalogue items by the two-tower score, never one of the
    request's ``history_item_ids`` or ``exclude_item_ids`` (fewer left: the
    tail is item id "" with score ``EXCLUDED_SCORE``). Core TF ops only."""
    ids = [i.decode() if isinstance(i, bytes) else i for i in catalog[F.ITEM_ID]]
    k = min(k, len(ids))
    network.recommend_item_ids = tf.Variable(ids, trainable=False, name="recommend_item_ids")
    network.recommend_rows = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(ids), tf.range(len(ids), dtype=tf.int64)),
        default_value=-1,
    )

    @tf.function(
        input_signature=[
            {name: tf.TensorSpec([None], tf.string, name=name) for name in C.RECOMMEND_FEATURES}
        ]
    )
    def recommend(features):
        transformed = network.tft_layer(_raw_requests(features))
        transformed[F.HISTORY_TEXT_VECTOR] = network.pretrained_text.history_vectors(
            transformed[F.HISTORY_ITEM_IDS_XF]
        )
        user = network.user_model({name: transformed[name] for name in USER_INPUTS}, training=False)
        scores = tf.matmul(
            tf.cast(user["embedding"], tf.float32), network.catalog_embeddings, transpose_b=True
        )
        seen = tf.concat(
            [_split_ids(features[F.HISTORY_ITEM_IDS]), _split_ids(features[C.EXCLUDE_ITEM_IDS])],
            axis=1,
        )
        top_scores, top_rows = tf.math.top_k(_excluded(scores, seen, network.recommend_rows), k)
        kept = top_scores > C.EXCLUDED_SCORE
        item_ids = tf.where(kept, tf.gather(network.recommend_item_ids, top_rows), "")
        return {
            C.ITEM_IDS: tf.identity(item_ids, name=C.ITEM_IDS),
            C.SCORES: tf.identity(top_scores, name=C.SCORES),
        }

    recommend(**{"features": {name: tf.constant(["warmup"]) for name in C.RECOMMEND_FEATURES}})
    return recommend


def export_serving_model(
    network: tf.keras.Model,
    tf_transform_output: tft.TFTransformOutput,
    export_dir: str,
    catalog: Mapping[str, np.ndarray] | None = None,
    recommend_k: int = C.DEFAULT_RECOMMEND_K,
    retrieval_ks: Sequence[int] = C.DEFAULT_RETRIEVAL_KS,
    text_features: PretrainedTextFeatures | None = None,
) -> None:
    """Saves the SavedModel with the signatures ``serving_contract`` names,
    and TF Serving's warmup requests for the ones clients call
    (``trainer/warmup.py``: ``assets.extra/tf_serving_warmup_requests``).

    Args:
      network: the trained multi-task network (``trainer.model``).
      tf_transform_output: Transform's output; its graph goes into every signature.
      export_dir: where the SavedModel goes.
      catalog: transformed catalogue features; with the retrieval task, every
        item is embedded for ``recommend`` and ``evaluate``'s hits.
      recommend_k: items ``recommend`` returns per user (at most the catalogue's size).
      retrieval_ks: the ``retrieval_hit_at_<k>`` outputs of ``evaluate``.
      text_features: the pretrained text features (None: the encoder is off);
        items they do not know are embedded from their text in the graph.
    """
    signatures = attach_serving_signatures(
        network, tf_transform_output, catalog, recommend_k, retrieval_ks, text_features
    )
    network.save(export_dir, save_format="tf", signatures=signatures)
    rows = warmup.request_rows(tf_transform_output, catalog)
    warmup.write_warmup_requests(export_dir, warmup.warmup_requests(signatures, rows))
