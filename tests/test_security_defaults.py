"""Security defaults: no untrusted deserialisation, validated configuration names."""

import os
import re

import pytest

from pipeline import configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("bench", "components", "datagen", "pipeline", "schemas", "serving", "trainer")
# Calls that run code or rebuild arbitrary objects from bytes.
UNSAFE = re.compile(
    r"\b(pickle|cPickle|dill|cloudpickle|marshal|shelve)\.loads?\(|\byaml\.load\(|"
    r"\byaml\.unsafe_load|\beval\(|\bexec\(|shell\s*=\s*True|\bos\.system\("
)


def _sources():
    for package in PACKAGES:
        for root, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    yield os.path.join(root, name)


def test_no_code_deserialises_pickles_or_evaluates_strings():
    sources = list(_sources())
    assert len(sources) > 20
    offending = [
        f"{os.path.relpath(path, ROOT)}:{n}: {line.strip()}"
        for path in sources
        for n, line in enumerate(open(path, encoding="utf-8"), 1)
        if UNSAFE.search(line)
    ]
    assert offending == []


def test_the_scan_catches_an_unsafe_call():
    assert UNSAFE.search("data = pickle.loads(blob)") and UNSAFE.search("yaml.load(f)")
    assert UNSAFE.search("subprocess.run(cmd, shell=True)") and not UNSAFE.search(
        "json.loads(text)"
    )


@pytest.mark.parametrize(
    "field,value",
    [
        ("model_name", "../../etc"),
        ("model_name", "a/b"),
        ("model_name", ".."),
        ("model_name", ""),
        ("pipeline_name", "x y"),
        ("train_steps", 0),
        ("eval_steps", -1),
        ("work_dir", " "),
    ],
)
def test_run_config_rejects_names_that_escape_their_directory_and_bad_sizes(field, value):
    with pytest.raises(ValueError, match=field):
        configs.RunConfig(data_dir="logs", **{field: value})


def test_a_valid_run_config_passes():
    config = configs.RunConfig(
        data_dir="logs", model_name="recommender-v2.1", pipeline_name="recsys_prod"
    )
    assert config.push_base.endswith(os.path.join("serving", "recommender-v2.1"))
