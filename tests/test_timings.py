"""FitTimer and StepFitTimer: fit's seconds split into the first step (StepFitTimer
only), the other steps and validation."""

import json

from trainer import keras_env as _keras_env  # noqa: F401

import numpy as np
import tensorflow as tf

import pytest

from trainer.timings import FitTimer, PhaseClock, StepFitTimer, fit_timer


class _Clock(tf.keras.callbacks.Callback):
    """A fake clock the fit moves on: 1 s a training batch, 10 s a validation
    batch, 100 s at each epoch's end and 1,000 s at the training's end (the
    work of other callbacks), so each part's seconds are known exactly."""

    def __init__(self):
        super().__init__()
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def on_train_batch_end(self, batch, logs=None):
        self.now += 1.0

    def on_test_batch_end(self, batch, logs=None):
        self.now += 10.0

    def on_epoch_end(self, epoch, logs=None):
        self.now += 100.0

    def on_train_end(self, logs=None):
        self.now += 1000.0


def _fit(validate: bool, epochs: int = 2, timer_class=StepFitTimer):
    model = tf.keras.Sequential([tf.keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
    clock = _Clock()
    timer = timer_class(clock)
    model.fit(
        x,
        y,
        batch_size=2,
        epochs=epochs,
        validation_data=(x, y) if validate else None,
        callbacks=[clock, timer],
        verbose=0,
    )
    return timer.seconds


def test_validation_and_training_seconds_are_told_apart():
    # 2 epochs of 4 training batches, each followed by 4 validation batches.
    assert _fit(validate=True) == {
        "first_train_step": 1.0,
        "train_steps": 7.0,
        "validation": 80.0,
        "validation_passes": 2,
        "callbacks": 1200.0,
    }


def test_training_without_validation_counts_every_step():
    # Without validation an epoch's end cannot be told from its last step.
    assert _fit(validate=False, epochs=3) == {
        "first_train_step": 1.0,
        "train_steps": 311.0,
        "validation": 0.0,
        "validation_passes": 0,
        "callbacks": 1000.0,
    }


def test_the_epoch_level_timer_counts_the_first_step_with_the_others():
    assert _fit(validate=True, timer_class=FitTimer) == {
        "train_steps": 8.0,
        "validation": 80.0,
        "validation_passes": 2,
        "callbacks": 1200.0,
    }


@pytest.mark.parametrize("batch_hooks", [True, False])
def test_the_timer_has_batch_hooks_only_where_the_strategy_allows_them(batch_hooks):
    # ParameterServerStrategy's fit refuses any callback for which Keras finds
    # batch hooks (tf_keras _disallow_batch_hooks_in_ps_strategy): CI failed so.
    timer = fit_timer(batch_hooks=batch_hooks)
    assert timer._implements_train_batch_hooks() is batch_hooks
    assert timer._implements_test_batch_hooks() is False
    assert timer._implements_predict_batch_hooks() is False


def test_timings_json_holds_the_phases_and_the_parts(tmp_path):
    clock = PhaseClock()
    clock.lap("setup")
    clock.lap("fit")
    clock.write(str(tmp_path / "timings.json"), fit_parts={"validation": 1.5})
    written = json.load(open(tmp_path / "timings.json"))
    assert set(written) == {"setup", "fit", "fit_parts"}
    assert written["fit_parts"] == {"validation": 1.5}
