"""Where a Trainer run's seconds go: its phases (setup, fit, export) and,
inside ``fit``, the first training step (tracing and the input pipeline's
start), the other training steps and the validation passes."""

from __future__ import annotations

import json
import time
from typing import Callable, Dict

from trainer import keras_env as _keras_env  # noqa: F401  (must run before TF)

import tensorflow as tf


class PhaseClock:
    """Wall seconds of the Trainer's phases, lap by lap."""

    def __init__(self) -> None:
        self.seconds: Dict[str, float] = {}
        self._last = time.monotonic()

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.seconds[phase] = round(now - self._last, 2)
        self._last = now

    def write(self, path: str, **parts: Dict[str, float]) -> None:
        """``timings.json``: the phases, and any breakdowns given as ``parts``."""
        with tf.io.gfile.GFile(path, "w") as f:
            json.dump({**self.seconds, **parts}, f, indent=2)


class FitTimer(tf.keras.callbacks.Callback):
    """Splits ``fit``'s wall time with epoch-level hooks only (the ones
    ``ParameterServerStrategy`` allows): ``train_steps`` (training, its
    tracing included), ``validation`` (every pass, its tracing included, with
    the number of passes) and ``callbacks`` (the other callbacks' work between
    the first and the last of them: checkpoints, backups, logs). Put it last
    in the callback list, so that it sees the others' work as done."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self.seconds: Dict[str, float] = {"train_steps": 0.0}
        self.seconds.update(validation=0.0, validation_passes=0, callbacks=0.0)
        self._started = 0.0
        self._validating = False

    def on_train_begin(self, logs=None) -> None:
        self._started = self._clock()

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._add("callbacks")
        self._validating = False

    def on_test_begin(self, logs=None) -> None:
        self._add("train_steps")
        self._validating = True

    def on_test_end(self, logs=None) -> None:
        self._add("validation")
        self.seconds["validation_passes"] += 1

    def on_epoch_end(self, epoch, logs=None) -> None:
        self._add("callbacks" if self._validating else "train_steps")

    def on_train_end(self, logs=None) -> None:
        self._add("callbacks")

    def _add(self, part: str) -> None:
        now = self._clock()
        self.seconds[part] = round(self.seconds[part] + now - self._started, 2)
        self._started = now


class StepFitTimer(FitTimer):
    """:class:`FitTimer` that also tells the first training step (tracing the
    train function, filling the input pipeline) from the others, by a
    batch-level hook: not for ``ParameterServerStrategy``, which refuses
    batch-level callbacks."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self.seconds = {"first_train_step": 0.0, **self.seconds}
        self._first_done = False

    def on_train_batch_end(self, batch, logs=None) -> None:
        if not self._first_done:
            self._first_done = True
            self._add("first_train_step")


def fit_timer(batch_hooks: bool) -> FitTimer:
    """The fit timer a strategy allows: :class:`StepFitTimer` where batch-level
    callbacks may run, else the epoch-level :class:`FitTimer`."""
    return StepFitTimer() if batch_hooks else FitTimer()
