"""The Tuner's search space and settings: bad configs are refused by name,
generated ones either validate or raise ValueError, tuned values reach the
ModelConfig."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer import search_space as S
from trainer.config import ModelConfig
from trainer.task import tuned_values


def test_the_default_space_names_tunable_model_fields_and_validates():
    tuning = S.TuningConfig()
    assert set(tuning.space()) == set(S.SEARCH_SPACE)
    assert not set(S.SEARCH_SPACE) & S.NOT_TUNABLE
    assert S.TuningConfig.from_dict(tuning.to_dict()) == tuning


@pytest.mark.parametrize(
    "values, named",
    [
        ({"max_trials": 0}, "max_trials"),
        ({"trial_steps": "10"}, "trial_steps"),
        ({"algorithm": "grid"}, "algorithm"),
        ({"objective": "loss"}, "objective"),
        ({"hyperparameters": ["nope"]}, "nope"),
        ({"hyperparameters": []}, "hyperparameters"),
        ({"search_space": {"batch_size": {"type": "choice", "values": [8]}}}, "batch_size"),
        ({"search_space": {"seed": {"type": "int", "min": 1, "max": 2}}}, "seed"),
        ({"search_space": {"dropout": {"type": "float", "min": 0.5, "max": 0.1}}}, "dropout"),
        ({"search_space": {"dropout": {"type": "float", "min": 0.0, "max": 0.5, "x": 1}}}, "x"),
        (
            {
                "search_space": {
                    "learning_rate": {"type": "float", "min": 0, "max": 1, "sampling": "log"}
                }
            },
            "learning_rate",
        ),
        (
            {"search_space": {"retrieval_temperature": {"type": "choice", "values": [-1.0]}}},
            "retrieval_temperature",
        ),
        ({"search_space": {"tower_dim": {"type": "choice", "values": []}}}, "tower_dim"),
        ({"search_space": {"tower_dim": "big"}}, "tower_dim"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_tuning_configs_are_refused_by_name(values, named):
    with pytest.raises(ValueError, match=named):
        S.TuningConfig.from_dict(values)


specs = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("choice"),
            "values": st.lists(st.one_of(st.integers(-5, 300), st.floats(-1, 2)), max_size=4),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["float", "int"]),
            "min": st.one_of(st.integers(-3, 50), st.floats(allow_nan=True, allow_infinity=True)),
            "max": st.one_of(st.integers(-3, 50), st.floats(allow_nan=True, allow_infinity=True)),
        }
    ),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from([*S.SEARCH_SPACE, "batch_size", "unknown"]), spec=specs)
def test_generated_ranges_validate_or_are_refused_by_name(name, spec):
    try:
        tuning = S.TuningConfig.from_dict({"search_space": {name: spec}})
    except ValueError as error:
        assert repr(name) in str(error)
        return
    assert tuning.space()[name] == spec


def test_tuned_values_reach_the_model_config_and_unknown_ones_are_refused():
    config = ModelConfig(batch_size=64)
    tuned = S.apply_hyperparameters(
        config, tuned_values({"space": [], "values": {"tower_dim": 32, "dropout": 0.2}})
    )
    assert (tuned.tower_dim, tuned.dropout, tuned.batch_size) == (32, 0.2, 64)
    assert S.apply_hyperparameters(config, tuned_values(None)) == config
    with pytest.raises(ValueError, match="batch_size"):
        S.apply_hyperparameters(config, {"batch_size": 8})
    with pytest.raises(ValueError, match="values"):
        tuned_values({"learning_rate": 0.1})
