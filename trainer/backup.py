"""Fault tolerance inside one Trainer run: Keras' ``BackupAndRestore``.

Every epoch the training state (weights, optimizer slots, the epoch) is
backed up under the Trainer's ``model_run`` directory; a worker that dies
and is restarted by its scheduler (Vertex AI, a Kubernetes job) with the
same Trainer arguments resumes from the last finished epoch instead of the
first. Every worker of a multi-worker job must point at the same directory:
the chief writes it, the others write scratch copies and read the chief's.
A finished ``fit`` deletes the backup, so a new TFX execution (a new
``model_run`` directory) always starts from scratch, which keeps a re-run
pipeline's model identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import os

import tensorflow as tf

BACKUP_DIR = "backup"


def backup_dir(model_run_dir: str) -> str:
    """Where a Trainer run keeps its training-state backup."""
    return os.path.join(model_run_dir, BACKUP_DIR)


class ResumableTraining(tf.keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` once per epoch that says when it resumed."""

    def __init__(self, directory: str, epochs: int):
        super().__init__(backup_dir=directory, save_freq="epoch", delete_checkpoint=True)
        self._epochs = epochs
        self.resumed_at_epoch = 0

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        saved = int(self._training_state._ckpt_saved_epoch.numpy())
        if saved >= 0:  # -1: nothing backed up yet
            self.resumed_at_epoch = saved + 1
            logging.warning(
                "Resumed training from the backup in %s: epoch %d of %d "
                "(epochs before it are not run again and not in history.json).",
                self.backup_dir,
                saved + 2,
                self._epochs,
            )

    def on_train_end(self, logs=None):
        super().on_train_end(logs)  # the chief deletes its backup
        with contextlib.suppress(tf.errors.NotFoundError):
            if not tf.io.gfile.listdir(self.backup_dir):  # the others' copies are gone too
                tf.io.gfile.rmtree(self.backup_dir)
