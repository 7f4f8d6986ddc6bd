"""TextEmbedder: every catalogue item's text through the frozen pretrained
encoder once, in Beam (RunInference), with a cache.

Reads the items of every split of ExampleGen's examples (an item's text is
its title and description, as Transform joins them; the newest example's
text wins when it changed), looks each text up in the cache by a hash of the
encoder and the text, embeds only the misses with ``RunInference`` and adds
them to the cache. Writes the item table (``trainer/embedding_table.py``) and
``embedding_report.json`` (items, embedded, cache hits, items/s). Scales out
with the other Beam stages through the pipeline's Beam arguments.
"""

# No "from __future__ import annotations": TFX reads the component's type hints.

import hashlib
import logging
import os
import time
import uuid
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference import base as inference
from tfx import v1 as tfx
from tfx.types import artifact, artifact_utils

from trainer import embedding_table as table
from trainer import features as F

_NAMESPACE = "text_embedder"
_BATCH = 64


class TextEmbeddings(artifact.Artifact):
    """Item id -> pretrained text embedding, with the encoder that made them."""

    # namespace.Name: the form Kubeflow Pipelines v2 requires of custom artifact types.
    TYPE_NAME = "recsys.TextEmbeddings"


def item_text(title: str, description: str) -> str:
    """An item's text, as Transform joins it for the text encoder."""
    return f"{title} {description}"


def text_key(fingerprint: str, text: str) -> bytes:
    return hashlib.sha256(f"{fingerprint}\0{text}".encode("utf-8")).hexdigest().encode()


def _items_of(record: bytes) -> Iterable[Tuple[str, Tuple[int, str]]]:
    """(item id, (timestamp, text)) of one serialized tf.Example."""
    import tensorflow as tf

    feature = tf.train.Example.FromString(record).features.feature

    def text(name: str) -> str:
        values = feature[name].bytes_list.value if name in feature else []
        return values[0].decode("utf-8", "replace") if values else ""

    item = text(F.ITEM_ID)
    if item:
        stamp = feature[F.TIMESTAMP].int64_list.value if F.TIMESTAMP in feature else []
        yield (
            item,
            (
                int(stamp[0]) if stamp else 0,
                item_text(text(F.ITEM_TITLE), text(F.ITEM_DESCRIPTION)),
            ),
        )


class SentenceEncoderHandler(inference.ModelHandler):
    """RunInference's handle on ``trainer.sentence_encoder.SentenceEncoder``:
    batches of texts -> L2-normalised embeddings."""

    def __init__(self, preset: str, max_length: int, batch_size: int = _BATCH):
        self._preset, self._max_length, self._batch_size = preset, max_length, batch_size

    def load_model(self):
        from trainer import keras_env  # noqa: F401  (before TF, in Beam workers too)

        import tensorflow as tf

        from trainer.sentence_encoder import SentenceEncoder

        encoder = SentenceEncoder(self._preset, self._max_length)
        encoder.embed = tf.function(
            encoder.__call__, input_signature=[tf.TensorSpec([None], tf.string)]
        )
        return encoder

    def run_inference(
        self, batch: Sequence[str], model, inference_args=None
    ) -> List[inference.PredictionResult]:
        import tensorflow as tf

        vectors = model.embed(tf.constant(list(batch))).numpy()
        return [inference.PredictionResult(text, v) for text, v in zip(batch, vectors)]

    def batch_elements_kwargs(self) -> Dict[str, Any]:
        return {"min_batch_size": 1, "max_batch_size": self._batch_size}

    def get_metrics_namespace(self) -> str:
        return _NAMESPACE


def _split_cache(joined: Tuple[bytes, Dict[str, list]]):
    """One text: its cached vector for each of its items, or (key, text) to embed."""
    key, groups = joined
    items = groups["items"]
    if not items:
        return
    if groups["cached"]:
        beam.metrics.Metrics.counter(_NAMESPACE, "cache_hits").inc(len(items))
        for item, text in items:
            yield beam.pvalue.TaggedOutput("hits", (item, (groups["cached"][0], text)))
    else:
        beam.metrics.Metrics.counter(_NAMESPACE, "embedded").inc()
        yield beam.pvalue.TaggedOutput("misses", (key, (items[0][1], [i for i, _ in items])))


def _new_rows(joined: Tuple[bytes, Dict[str, list]]):
    """One newly embedded text -> (item, (vector, text)) for each of its items."""
    _, groups = joined
    text, items = groups["items"][0]
    for item in items:
        yield item, (groups["vector"][0], text)


def build_embedding_pipeline(
    pipeline: beam.Pipeline,
    example_files: List[str],
    cache_files: List[str],
    handler: SentenceEncoderHandler,
    fingerprint: str,
    cache_prefix: str,
    table_prefix: str,
) -> None:
    """Examples -> item table, adding the newly embedded texts to the cache."""
    items = (
        pipeline
        | "ExampleFiles" >> beam.Create(example_files)
        | "ReadExamples" >> beam.io.ReadAllFromTFRecord()
        | "Items" >> beam.FlatMap(_items_of)
        | "NewestText" >> beam.CombinePerKey(max)
        | "ByText" >> beam.Map(lambda kv: (text_key(fingerprint, kv[1][1]), (kv[0], kv[1][1])))
    )
    cached = (
        pipeline
        | "CacheFiles" >> beam.Create(cache_files)
        | "ReadCache" >> beam.io.ReadAllFromTFRecord()
        | "DecodeCache" >> beam.Map(table.decode)
    )
    split = (
        {"items": items, "cached": cached}
        | "JoinCache" >> beam.CoGroupByKey()
        | "SplitCache" >> beam.FlatMap(_split_cache).with_outputs("hits", "misses")
    )
    embedded = (
        split.misses
        | "Texts" >> beam.Map(lambda kv: (kv[0], kv[1][0]))
        | "Embed" >> inference.RunInference(inference.KeyedModelHandler(handler))
        | "Vectors" >> beam.Map(lambda kv: (kv[0], np.asarray(kv[1].inference, np.float32)))
    )
    _ = (
        embedded
        | "CacheRecords" >> beam.MapTuple(table.encode)
        | "WriteCache" >> beam.io.WriteToTFRecord(cache_prefix, file_name_suffix=table.SHARD_SUFFIX)
    )
    item_ids = split.misses | "ItemsOfText" >> beam.Map(lambda kv: (kv[0], kv[1]))
    new_rows = (
        {"vector": embedded, "items": item_ids}
        | "JoinNew" >> beam.CoGroupByKey()
        | "NewRows" >> beam.FlatMap(_new_rows)
    )
    _ = (
        (split.hits, new_rows)
        | "AllRows" >> beam.Flatten()
        | "TableRecords" >> beam.MapTuple(lambda item, row: table.encode(item.encode(), *row))
        | "WriteTable" >> beam.io.WriteToTFRecord(table_prefix, file_name_suffix=table.SHARD_SUFFIX)
    )


def embed_items(
    example_files: List[str],
    encoder: str,
    cache_dir: str,
    output_dir: str,
    max_length: int,
    beam_pipeline: Optional[beam.Pipeline] = None,
) -> Dict[str, Any]:
    """Runs the embedding pipeline; returns (and writes) its report."""
    from trainer import keras_env  # noqa: F401

    import tensorflow as tf

    from trainer import sentence_encoder as se

    if not example_files:
        raise ValueError("no example files to read items from")
    # A missing or broken encoder fails here, naming the file, before Beam starts.
    preset = se.resolve_preset(encoder)
    se.WordPieceTokenizer(se.preset_wordpiece(preset))
    dim, positions = se.preset_shape(preset)
    length = min(max_length, positions)
    fingerprint = se.preset_fingerprint(preset, length)
    encoder_cache = os.path.join(cache_dir, fingerprint)
    tf.io.gfile.makedirs(encoder_cache)
    tf.io.gfile.makedirs(output_dir)
    started = time.time()
    pipeline = beam_pipeline or beam.Pipeline()
    build_embedding_pipeline(
        pipeline,
        example_files,
        table.shards(encoder_cache),
        SentenceEncoderHandler(preset, length),
        fingerprint,
        os.path.join(encoder_cache, f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"),
        os.path.join(output_dir, table.TABLE_PREFIX),
    )
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.time() - started
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics()
        .query(beam.metrics.MetricsFilter().with_namespace(_NAMESPACE))
        .get("counters", [])
    }
    embedded, hits = int(counters.get("embedded", 0)), int(counters.get("cache_hits", 0))
    report = {
        "encoder": encoder,
        "preset": preset,
        "fingerprint": fingerprint,
        "max_length": length,
        "dim": dim,
        "items": len(table.read_table(output_dir)[0]),
        "texts_embedded": embedded,
        "cache_hits": hits,
        "seconds": round(seconds, 2),
        "texts_per_second": round(embedded / seconds, 1) if seconds > 0 else None,
    }
    table.write_report(output_dir, report)
    logging.info(
        "Text embeddings: %d items, %d texts embedded, %d from the cache, %.1f s.",
        report["items"],
        embedded,
        hits,
        seconds,
    )
    return report


def _example_files(examples) -> List[str]:
    import tensorflow as tf

    files: List[str] = []
    for split in artifact_utils.decode_split_names(examples.split_names):
        uri = artifact_utils.get_split_uri([examples], split)
        files.extend(sorted(tf.io.gfile.glob(os.path.join(uri, "*"))))
    return files


@tfx.dsl.components.component(use_beam=True)
def TextEmbedder(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    text_embeddings: tfx.dsl.components.OutputArtifact[TextEmbeddings],
    encoder: tfx.dsl.components.Parameter[str],
    cache_dir: tfx.dsl.components.Parameter[str],
    max_length: tfx.dsl.components.Parameter[int] = 128,
    code_version: tfx.dsl.components.Parameter[str] = "",
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
):
    """Embeds every item's text with the frozen ``encoder`` (see the module)."""
    del code_version  # part of the cache key only
    embed_items(
        _example_files(examples),
        encoder,
        cache_dir,
        text_embeddings.uri,
        max_length,
        beam_pipeline,
    )
