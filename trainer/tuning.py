"""TFX Tuner entry point (``tuner_fn``): a KerasTuner search over
``trainer/search_space.py``'s ranges, each trial the Trainer's own model.

The data, catalogue and text features are prepared once (``task.prepare_inputs``)
and every trial builds, trains and validates ``task.build_trainable`` on them.
Trials are ranked by ``TuningConfig.objective``: by default the tasks'
selection score, each task's metric relative to the first trial's first
epoch, so that every trial is measured against the same reference.
"""

from __future__ import annotations

import gc
import logging
from typing import Any, Dict, Mapping

from trainer import keras_env as _keras_env  # noqa: F401  (must run before TF)

import keras_tuner
import numpy as np
from tfx.components.trainer.fn_args_utils import FnArgs
from tfx.components.tuner.component import TunerFnResult

from trainer import selection, task
from trainer.config import CONFIG_KEY, TUNING_KEY, ModelConfig
from trainer.search_space import TuningConfig, apply_hyperparameters

PROJECT = "recsys_tuning"


def hyperparameters(space: Mapping[str, Mapping[str, Any]]) -> keras_tuner.HyperParameters:
    """KerasTuner's search space for ``space`` (``TuningConfig.space()``)."""
    hp = keras_tuner.HyperParameters()
    for name, spec in space.items():
        if spec["type"] == "choice":
            hp.Choice(name, list(spec["values"]))
        elif spec["type"] == "int":
            hp.Int(name, spec["min"], spec["max"], step=spec.get("step"))
        else:
            hp.Float(
                name,
                spec["min"],
                spec["max"],
                step=spec.get("step"),
                sampling=spec.get("sampling", "linear"),
            )
    return hp


def objective(tuning: TuningConfig) -> keras_tuner.Objective:
    """What ranks trials, with its direction."""
    key, mode = selection.monitor(tuning.objective)
    return keras_tuner.Objective(key, direction=mode)


class RecommenderTuner(keras_tuner.engine.base_tuner.BaseTuner):
    """Runs each trial as the Trainer would: the multi-task model built from
    the base ModelConfig with the trial's values, trained ``train_steps``,
    validated every epoch; the trial's score is its best epoch's.

    (KerasTuner's own ``Tuner`` builds Keras 3 models; the project's are
    tf_keras, so trials are run here.)
    """

    def __init__(
        self, oracle, base_config: ModelConfig, inputs, train_steps: int, eval_steps: int, **kwargs
    ):
        super().__init__(oracle, **kwargs)
        self.base_config = base_config
        self.inputs = inputs
        self.train_steps = train_steps
        self.eval_steps = eval_steps
        self.reference: Dict[str, float] = {}

    def run_trial(self, trial, *args, **kwargs) -> Dict[str, float]:
        config = apply_hyperparameters(self.base_config, trial.hyperparameters.values)
        logging.info("Trial %s: %s", trial.trial_id, trial.hyperparameters.values)
        key, mode = selection.monitor(self.oracle.objective.name)
        with task.reproducible(config):
            model = task.build_trainable(config, self.inputs)
            history = task.fit(
                model,
                config,
                self.inputs,
                self.train_steps,
                self.eval_steps,
                [
                    selection.TaskSelection(
                        selection.task_metrics(config.active_tasks(), config.retrieval_ks),
                        reference=self.reference,
                    )
                ],
            )
        values = [float(v) for v in history.history.get(key, [])]
        finite = [v for v in values if np.isfinite(v)]
        if not finite:
            raise keras_tuner.errors.FailedTrialError(
                f"trial {trial.trial_id} logged no finite {key!r} "
                f"(logged: {sorted(history.history)})"
            )
        score = max(finite) if mode == "max" else min(finite)
        logging.info("Trial %s: %s %.4f", trial.trial_id, key, score)
        del model
        gc.collect()
        return {key: score}


def tuner_fn(fn_args: FnArgs) -> TunerFnResult:
    """The TFX Tuner's search: ``custom_config`` carries the base ModelConfig
    (``CONFIG_KEY``) and the TuningConfig (``TUNING_KEY``); TrainArgs and
    EvalArgs give each trial's steps."""
    custom = fn_args.custom_config or {}
    base = ModelConfig.from_dict(custom.get(CONFIG_KEY))
    tuning = TuningConfig.from_dict(custom.get(TUNING_KEY))
    with task.reproducible(base):
        inputs = task.prepare_inputs(fn_args, base)
    oracle_class = (
        keras_tuner.oracles.BayesianOptimizationOracle
        if tuning.algorithm == "bayesian"
        else keras_tuner.oracles.RandomSearchOracle
    )
    oracle = oracle_class(
        objective=objective(tuning),
        max_trials=tuning.max_trials,
        hyperparameters=hyperparameters(tuning.space()),
        tune_new_entries=False,
        allow_new_entries=False,
        seed=tuning.seed,
    )
    tuner = RecommenderTuner(
        oracle,
        base_config=base,
        inputs=inputs,
        train_steps=fn_args.train_steps or tuning.trial_steps,
        eval_steps=fn_args.eval_steps or tuning.eval_steps,
        directory=fn_args.working_dir,
        project_name=PROJECT,
        overwrite=True,
    )
    return TunerFnResult(tuner=tuner, fit_kwargs={})
