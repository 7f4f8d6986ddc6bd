"""TFX Trainer entry point (``run_fn``): trains and exports the multi-task model."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

from trainer import keras_env as _keras_env  # noqa: F401  (must run before TF)

import tensorflow as tf
import tensorflow_transform as tft
from tensorflow.python.framework import (
    config as framework_config,
)  # disable_op_determinism: not in tf.*
from tfx.components.trainer.fn_args_utils import FnArgs
from tfx.utils import path_utils

from trainer import backup, compact
from trainer import catalog as catalog_lib
from trainer import data, embedding_table, export, plots, selection, timings, warm_start
from trainer import features as F
from trainer import serving_contract as C
from trainer import transform as transform_lib
from trainer.cluster import (
    Cluster,
    check_port_free,
    configure_coordination,
    heartbeat_timeout,
    read_cluster,
    within_peer_timeout,
)
from trainer.config import (
    COMPACT_MODEL_URI,
    CONFIG_KEY,
    TASK_SELECTION,
    TEXT_EMBEDDINGS_URI,
    ModelConfig,
)
from trainer.item_frequency import ItemFrequencies
from trainer.model import PRETRAINED_TEXT_DIM, PRETRAINED_TEXT_LENGTH, build_model
from trainer.pretrained_text import PretrainedTextFeatures, no_pretrained_text
from trainer.search_space import apply_hyperparameters
from trainer.sentence_encoder import SentenceEncoder, resolve_preset


SHARD_BYTES = 256 << 10  # under parameter servers, tables above this are split over them
EXPORT_WAIT_S = 600.0  # how long a worker waits for the chief's export


def accelerator_setup(config: ModelConfig) -> Tuple[tf.distribute.Strategy, bool, bool]:
    """(strategy, jit_compile, mixed_precision): with parameter servers in
    ``TF_CONFIG``, ParameterServerStrategy with the large tables sharded over
    them; with several workers, MultiWorkerMirroredStrategy; on one machine,
    MirroredStrategy over all GPUs with mixed precision and XLA (as
    configured), or the default strategy, float32 and no XLA on CPU."""
    cluster = read_cluster()  # a TF_CONFIG that cannot work stops here, naming the field
    gpus = tf.config.list_physical_devices("GPU")
    accelerated = (bool(gpus) and config.xla, bool(gpus) and config.mixed_precision)
    if cluster is not None and cluster.parameter_server_training:
        check_port_free(cluster)
        logging.info(
            "Coordinating %d worker(s) and %d parameter server(s) with ParameterServerStrategy.",
            len(cluster.cluster.get("worker", [])),
            cluster.parameter_servers,
        )
        partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
            min_shard_bytes=SHARD_BYTES, max_shards=cluster.parameter_servers
        )
        strategy = within_peer_timeout(
            cluster,
            lambda: tf.distribute.ParameterServerStrategy(
                tf.distribute.cluster_resolver.TFConfigClusterResolver(),
                variable_partitioner=partitioner,
            ),
            "ParameterServerStrategy",
        )
        return (strategy, *accelerated)
    if cluster is not None and cluster.multi_worker:
        check_port_free(cluster)
        logging.info(
            "Training as %s %d of %d workers with MultiWorkerMirroredStrategy (%s).",
            cluster.task_type,
            cluster.task_index,
            cluster.num_workers,
            f"{len(gpus)} GPU(s) each" if gpus else "CPU",
        )
        configure_coordination(cluster, heartbeat_timeout())
        strategy = within_peer_timeout(
            cluster, tf.distribute.MultiWorkerMirroredStrategy, "MultiWorkerMirroredStrategy"
        )
        return (strategy, *accelerated)
    if not gpus:
        logging.info("No GPU found: training on CPU.")
        return tf.distribute.get_strategy(), False, False
    logging.info(
        "Training on %d GPU(s) with MirroredStrategy (mixed precision %s, XLA %s).",
        len(gpus),
        config.mixed_precision,
        config.xla,
    )
    return tf.distribute.MirroredStrategy(), config.xla, config.mixed_precision


def parameter_server_training(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.ParameterServerStrategy)


def serve_until_exported(cluster: Cluster, serving_model_dir: str) -> None:
    """A worker or parameter server of parameter-server training: a
    TensorFlow server the chief schedules on, up until the chief's export
    exists (then TFX's executor finds the model and the task ends)."""
    check_port_free(cluster)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    tf.distribute.Server(
        resolver.cluster_spec(),
        job_name=cluster.task_type,
        task_index=cluster.task_index,
        protocol="grpc",
        start=True,
    )
    logging.info(
        "Serving as %s %d for the chief until it exports to %s.",
        cluster.task_type,
        cluster.task_index,
        serving_model_dir,
    )
    wait_for_export(serving_model_dir, timeout=None)


def wait_for_export(serving_model_dir: str, timeout: Optional[float]) -> None:
    """Returns once the chief's SavedModel is in ``serving_model_dir``; a
    ``TimeoutError`` after ``timeout`` seconds (None: no bound)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    marker = os.path.join(serving_model_dir, C.ASSETS_EXTRA, C.TASKS_ASSET)  # the last file
    while not tf.io.gfile.exists(marker):
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(
                f"the chief wrote no model to {serving_model_dir} within {timeout:.0f} s: "
                "is it a directory every worker shares (GCS, NFS)?"
            )
        time.sleep(2)


def training_callbacks(
    config: ModelConfig, model_run_dir: str, backup_dir: Optional[str] = None
) -> List[tf.keras.callbacks.Callback]:
    """The training-state backup (when ``backup_dir`` is given), the tasks'
    selection score, TensorBoard logs, best-so-far checkpoints and early
    stopping, both on ``config.selection_metric``."""
    key, mode = selection.monitor(config.selection_metric)
    callbacks: List[tf.keras.callbacks.Callback] = [
        *([backup.ResumableTraining(backup_dir, max(1, config.epochs))] if backup_dir else []),
        selection.TaskSelection(
            selection.task_metrics(config.active_tasks(), config.retrieval_ks),
            os.path.join(model_run_dir, "best_epochs.json"),
        ),
        tf.keras.callbacks.TensorBoard(
            log_dir=os.path.join(model_run_dir, "tensorboard"), update_freq="epoch"
        ),
        tf.keras.callbacks.ModelCheckpoint(
            os.path.join(model_run_dir, "checkpoints", "best.weights.h5"),
            monitor=key,
            mode=mode,
            save_best_only=True,
            save_weights_only=True,
        ),
    ]
    if config.early_stopping_patience > 0:
        callbacks.append(
            tf.keras.callbacks.EarlyStopping(
                monitor=key,
                mode=mode,
                patience=config.early_stopping_patience,
                restore_best_weights=True,
                verbose=1,
            )
        )
    return callbacks


@contextlib.contextmanager
def reproducible(config: ModelConfig) -> Iterator[None]:
    """Seeds Python, NumPy and TF from ``config.seed``; with ``deterministic``
    TF's ops run deterministically inside the block (slower on GPU, about the
    same on CPU). Op determinism is process-wide, so it is switched back off
    afterwards: a Trainer run in-process leaves its caller as it found it."""
    tf.keras.utils.set_random_seed(config.seed)
    was_enabled = framework_config.is_op_determinism_enabled()
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    logging.info("Seed %d, op determinism %s.", config.seed, config.deterministic)
    try:
        yield
    finally:
        if not was_enabled:
            framework_config.disable_op_determinism()


def vocab_sizes(
    tf_transform_output: tft.TFTransformOutput, pretrained_dim: int = 0, token_length: int = 0
) -> Dict[str, int]:
    """Embedding table sizes: id vocabularies + OOV, the text vocabulary, the
    pretrained text vectors' width and (fine-tuning) the item text's length."""
    sizes = {
        F.transformed_name(raw): transform_lib.id_vocab_size(tf_transform_output, raw)
        for raw in F.ID_VOCABS
    }
    sizes[F.TEXT_VOCAB] = transform_lib.text_vocab_size(tf_transform_output)
    sizes[PRETRAINED_TEXT_DIM] = pretrained_dim
    sizes[PRETRAINED_TEXT_LENGTH] = token_length
    return sizes


def load_text_features(
    config: ModelConfig,
    custom_config: Dict,
    strategy: tf.distribute.Strategy,
    fine_tune: bool = False,
) -> PretrainedTextFeatures:
    """The TextEmbedder's table as model features, with the encoder that made
    it (for items first seen at serving, and the backbone a fine-tuned run
    trains: built in ``strategy``'s scope); zero-width when the encoder is off."""
    if config.pretrained_text_encoder is None:
        return no_pretrained_text()
    uri = (custom_config or {}).get(TEXT_EMBEDDINGS_URI)
    if not uri:
        raise ValueError(
            "pretrained_text_encoder is on but the Trainer got no text embeddings: "
            "wire the TextEmbedder's output into components.trainer.Trainer"
        )
    report = embedding_table.read_report(uri)
    item_ids, vectors, texts = embedding_table.read_table(uri)
    with strategy.scope():
        encoder = SentenceEncoder(
            resolve_preset(config.pretrained_text_encoder), report["max_length"]
        )
    if encoder.fingerprint != report["fingerprint"]:
        raise ValueError(
            f"{uri}: embedded by encoder {report['fingerprint']} ({report['preset']}), but "
            f"pretrained_text_encoder {config.pretrained_text_encoder!r} is now "
            f"{encoder.fingerprint}: re-run the TextEmbedder"
        )
    logging.info(
        "Pretrained text features: %d items x %d from %s (encoder %s).",
        len(item_ids),
        encoder.dim,
        uri,
        f"fine-tuned, top {config.fine_tune_layers} layers" if fine_tune else "frozen",
    )
    if fine_tune and any(text is None for text in texts):
        raise ValueError(
            f"{uri}: table rows without their text (written before fine-tuning existed): "
            "re-run the TextEmbedder"
        )
    return PretrainedTextFeatures(
        item_ids, vectors, encoder, fine_tune_texts=list(texts) if fine_tune else None
    )


def tuned_values(hyperparameters: Optional[Mapping]) -> Dict[str, object]:
    """The values of a Tuner's ``best_hyperparameters`` (KerasTuner's
    ``HyperParameters.get_config()``: ``{"space": ..., "values": ...}``)."""
    if not hyperparameters:
        return {}
    values = hyperparameters.get("values") if isinstance(hyperparameters, Mapping) else None
    if not isinstance(values, Mapping):
        raise ValueError(
            "the Trainer's hyperparameters are not KerasTuner's HyperParameters config "
            f"(a 'values' object): {str(hyperparameters)[:200]}"
        )
    return dict(values)


def run_fn(fn_args: FnArgs) -> None:
    """Trains on the transformed train split, validates on eval, exports
    (under parameter-server training, workers and parameter servers serve
    the chief instead)."""
    cluster = read_cluster()
    if cluster is not None and cluster.serves_only:
        serve_until_exported(cluster, fn_args.serving_model_dir)
        return
    config = ModelConfig.from_dict((fn_args.custom_config or {}).get(CONFIG_KEY))
    tuned = tuned_values(fn_args.hyperparameters)
    if tuned:
        logging.info("Hyperparameters from the Tuner: %s", tuned)
        config = apply_hyperparameters(config, tuned)
    with reproducible(config):
        train_and_export(fn_args, config)


@dataclasses.dataclass
class TrainingInputs:
    """What every model trained on one Transform output shares: the data, the
    catalogue, the text features and the device setup (one per Trainer run,
    one for all of a Tuner's trials)."""

    tf_transform_output: tft.TFTransformOutput
    strategy: tf.distribute.Strategy
    jit_compile: bool
    mixed_precision: bool
    fine_tune: bool
    text_features: PretrainedTextFeatures
    sizes: Dict[str, int]
    catalog: Dict
    train: tf.data.Dataset  # a DatasetCreator under parameter-server training
    evaluation: tf.data.Dataset


def prepare_inputs(fn_args: FnArgs, config: ModelConfig) -> TrainingInputs:
    """Reads the transformed splits, the catalogue and the text features for
    ``config``'s tasks, batch size and encoder."""
    # TFX's Tuner sets transform_graph_path only; the Trainer sets both.
    tf_transform_output = tft.TFTransformOutput(
        fn_args.transform_graph_path or fn_args.transform_output
    )
    tasks = config.active_tasks()
    strategy, jit_compile, mixed_precision = accelerator_setup(config)
    fine_tune = config.fine_tunes(gpu=bool(tf.config.list_physical_devices("GPU")))
    text_features = load_text_features(config, fn_args.custom_config, strategy, fine_tune)
    sizes = vocab_sizes(tf_transform_output, text_features.dim, text_features.token_length)
    num_categories = sizes[F.ITEM_CATEGORY_XF]
    catalog = catalog_lib.collect_catalog(
        [fn_args.train_files, fn_args.eval_files],
        fn_args.data_accessor,
        tf_transform_output,
        text_features=text_features,
    )
    logging.info("Catalogue for retrieval: %d items.", len(catalog[F.ITEM_ID]))
    frequencies = (
        ItemFrequencies(catalog_lib.train_impressions(catalog)) if config.logq_correction else None
    )

    def dataset(files: List[str], shuffle: bool) -> tf.data.Dataset:
        return data.input_fn(
            files,
            fn_args.data_accessor,
            tf_transform_output,
            config.batch_size,
            shuffle=shuffle,
            tasks=tasks,
            num_categories=num_categories,
            seed=config.seed,
            text_features=text_features,
            item_frequencies=frequencies,
        )

    splits = ((fn_args.train_files, True), (fn_args.eval_files, False))
    if parameter_server_training(strategy):
        # Each worker builds its own pipeline and reads every n-th batch.
        datasets = [
            tf.keras.utils.experimental.DatasetCreator(
                lambda context, files=files, shuffle=shuffle: dataset(files, shuffle).shard(
                    context.num_input_pipelines, context.input_pipeline_id
                )
            )
            for files, shuffle in splits
        ]
    else:
        datasets = [dataset(files, shuffle) for files, shuffle in splits]
    return TrainingInputs(
        tf_transform_output,
        strategy,
        jit_compile,
        mixed_precision,
        fine_tune,
        text_features,
        sizes,
        catalog,
        *datasets,
    )


def build_trainable(config: ModelConfig, inputs: TrainingInputs):
    """The compiled model for ``config`` on ``inputs``, its candidates set."""
    with inputs.strategy.scope():
        model = build_model(
            config,
            inputs.sizes,
            jit_compile=inputs.jit_compile,
            mixed_precision=inputs.mixed_precision,
            text_backbone=inputs.text_features.encoder.backbone if inputs.fine_tune else None,
        )
    model.set_candidates(
        catalog_lib.catalog_dataset(inputs.catalog),
        len(inputs.catalog[F.ITEM_ID]),
        in_graph=parameter_server_training(inputs.strategy),  # no dataset can reach a worker
    )
    if parameter_server_training(inputs.strategy):
        on_ps = [v for v in model.variables if "/job:ps" in v.device]
        logging.info(
            "%d variables (shards) on the parameter servers, largest %s.",
            len(on_ps),
            max((v.shape for v in on_ps), key=lambda shape: shape.num_elements(), default=None),
        )
    return model


def fit(
    model,
    config: ModelConfig,
    inputs: TrainingInputs,
    train_steps: int,
    eval_steps: int,
    callbacks: List[tf.keras.callbacks.Callback],
) -> tf.keras.callbacks.History:
    """Trains ``train_steps`` steps over ``config.epochs`` epochs, validating
    ``eval_steps`` steps after each."""
    epochs = max(1, config.epochs)
    return model.fit(
        inputs.train,
        epochs=epochs,
        steps_per_epoch=max(1, train_steps // epochs),
        validation_data=inputs.evaluation,
        validation_steps=max(1, eval_steps or 1),
        verbose=2,
        callbacks=callbacks,
    )


def start_from(
    model, config: ModelConfig, inputs: TrainingInputs, base_model: str, model_run_dir: str
) -> warm_start.WarmStartReport:
    """Warm-starts ``model`` from the base model (the latest blessed one) and
    records what it took over in ``model_run/warm_start.json``."""
    vocabularies = {
        name: [
            v.decode("utf-8") if isinstance(v, bytes) else str(v)
            for v in inputs.tf_transform_output.vocabulary_by_name(name)
        ]
        for name in warm_start.VOCABULARIES
    }
    report = warm_start.warm_start(model.network, config, inputs.sizes, base_model, vocabularies)
    rate = warm_start.learning_rate(report, config)
    if rate is not None:
        model.optimizer.learning_rate = rate
        logging.info("Warm-started: learning rate %g.", rate)
    tf.io.gfile.makedirs(model_run_dir)
    with tf.io.gfile.GFile(os.path.join(model_run_dir, "warm_start.json"), "w") as f:
        json.dump({**dataclasses.asdict(report), "summary": report.summary()}, f, indent=2)
    return report


def output_dirs(fn_args: FnArgs) -> Tuple[str, str]:
    """(model_run_dir, serving_model_dir) this task writes: TFX's on one
    machine and on the chief; a temporary pair on the other workers, which
    must save too (the save is collective) but not over the chief's files."""
    cluster = read_cluster()
    if cluster is None or not cluster.multi_worker or cluster.is_chief:
        return fn_args.model_run_dir, fn_args.serving_model_dir
    scratch = tempfile.mkdtemp(prefix=f"{cluster.task_type}{cluster.task_index}-")
    return os.path.join(scratch, "model_run"), os.path.join(scratch, "serving_model")


def compact_model_dir(fn_args: FnArgs, serving_model_dir: str) -> str:
    """Where the compact model goes: the Trainer's ``compact_model`` output
    (``custom_config``), else beside the serving model (``run_fn`` called
    alone, or a worker's scratch copy)."""
    uri = (fn_args.custom_config or {}).get(COMPACT_MODEL_URI)
    if uri and serving_model_dir == fn_args.serving_model_dir:
        return path_utils.serving_model_dir(uri)
    return os.path.join(os.path.dirname(serving_model_dir), "compact_model")


def train_and_export(fn_args: FnArgs, config: ModelConfig) -> None:
    """The body of ``run_fn``."""
    model_run_dir, serving_model_dir = output_dirs(fn_args)
    clock = timings.PhaseClock()
    inputs = prepare_inputs(fn_args, config)
    fit_timer = timings.fit_timer(batch_hooks=not parameter_server_training(inputs.strategy))
    model = build_trainable(config, inputs)
    model.network.summary(print_fn=logging.info)
    if fn_args.base_model:
        start_from(model, config, inputs, fn_args.base_model, model_run_dir)
    clock.lap("setup")
    history = fit(
        model,
        config,
        inputs,
        fn_args.train_steps,
        fn_args.eval_steps,
        # Every worker backs up to TFX's directory: the chief writes it, the
        # others scratch copies beside it, and a restarted worker reads it.
        [
            *training_callbacks(config, model_run_dir, backup.backup_dir(fn_args.model_run_dir)),
            fit_timer,
        ],
    )
    clock.lap("fit")
    logging.info("Trained %d steps in %.1f s.", fn_args.train_steps, clock.seconds["fit"])

    tf.io.gfile.makedirs(model_run_dir)
    with tf.io.gfile.GFile(os.path.join(model_run_dir, "history.json"), "w") as f:
        json.dump({k: [float(v) for v in vs] for k, vs in history.history.items()}, f, indent=2)
    plots.plot_training_curves(history.history, os.path.join(model_run_dir, "training_curves.png"))
    export.export_serving_model(
        model.network,
        inputs.tf_transform_output,
        serving_model_dir,
        catalog=inputs.catalog,
        recommend_k=config.recommend_k,
        retrieval_ks=config.retrieval_ks,
        text_features=inputs.text_features,
    )
    if config.tflite_ranking_heads:
        compact.write_tflite_ranking_heads(
            model.network,
            config.active_task_names(),
            config.tflite_ranking_heads,
            serving_model_dir,
        )
    selection = (fn_args.custom_config or {}).get(TASK_SELECTION) or {}
    C.write_tasks_asset(serving_model_dir, config.active_task_names(), selection.get("off", {}))
    if config.compact_weights:
        compact.export_compact_model(
            model.network,
            config.compact_weights,
            compact_model_dir(fn_args, serving_model_dir),
            config.active_task_names(),
            selection.get("off", {}),
            tf_transform_output=inputs.tf_transform_output,
            catalog=inputs.catalog,
            recommend_k=config.recommend_k,
            retrieval_ks=config.retrieval_ks,
            text_features=inputs.text_features,
        )
    clock.lap("export")
    clock.write(os.path.join(model_run_dir, "timings.json"), fit_parts=fit_timer.seconds)
    if serving_model_dir != fn_args.serving_model_dir:  # a worker's copy: not the model
        shutil.rmtree(os.path.dirname(serving_model_dir), ignore_errors=True)
        logging.info("Worker export discarded; the chief exports the model.")
        wait_for_export(fn_args.serving_model_dir, timeout=EXPORT_WAIT_S)  # TFX's check follows
        return
    logging.info("Exported the serving model to %s", fn_args.serving_model_dir)
