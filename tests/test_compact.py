"""Compact serving models (``trainer/compact.py``): float16 and int8 weights
score like the full model, the export holds only the compact weights, uses
only TF Serving's ops and loads in a fresh process; the TFLite ranking heads
agree with the Keras heads."""

import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from serving import tf_serving_ops
from tests.test_model import VOCABS, _batch, _split
from trainer import compact
from trainer import features as F
from trainer.config import ModelConfig
from trainer.data import MODEL_INPUTS
from trainer.model import build_model

# Agreement with the full model on the tiny model's outputs (probabilities,
# cosines and 1-5 ratings): int8 rounds each weight to 1/254 of its column's
# or row's largest value.
TOLERANCE = {"float16": 0.01, "int8": 0.05}
MIN_ELEMENTS = 64  # the tiny model's tables are small: compact them too


def _network(seed: int = 0):
    tf.keras.utils.set_random_seed(seed)
    return build_model(ModelConfig(embedding_dim=32, text_dim=32), VOCABS).network


def _inputs(n: int = 32):
    inputs, _, _ = _split(_batch(n))
    return {name: value for name, value in inputs.items() if name in MODEL_INPUTS}


def _outputs(network, inputs):
    return {name: value.numpy() for name, value in network(inputs, training=False).items()}


@pytest.mark.parametrize("kind", compact.KINDS)
def test_compact_weights_score_like_the_full_model(kind):
    network, inputs = _network(), _inputs()
    full = _outputs(network, inputs)
    before = {id(w): w for w in network.weights}  # kept alive: ids stay unique
    done = compact.compact_weights([network], kind, min_elements=MIN_ELEMENTS)
    # Every id table and tower kernel, the text encoder's token table too.
    names = " ".join(name for name, _ in done)
    for part in ("user_id_xf_embedding", "item_id_xf_embedding", "user_tower", "interaction"):
        assert part in names, (part, names)
    after = {id(w) for w in network.weights}
    assert len(set(before) - after) == len(done)  # the originals left the weights
    stored = [w for w in network.weights if id(w) not in before and w.dtype.name == kind]
    assert len(stored) == len(done)
    compacted = _outputs(network, inputs)
    for name, value in full.items():
        assert np.max(np.abs(compacted[name] - value)) <= TOLERANCE[kind], name
    assert any(np.any(compacted[name] != value) for name, value in full.items())  # it did change


def test_an_int8_table_lookup_widens_only_the_rows_it_reads():
    table = tf.Variable(np.random.default_rng(0).normal(size=(100, 16)).astype("float32"))
    weight = compact.CompactWeight(table, "int8", by_row=True)
    rows = tf.constant([3, 97, 3])
    np.testing.assert_allclose(
        tf.gather(weight, rows).numpy(), tf.gather(table, rows).numpy(), atol=0.03
    )
    np.testing.assert_allclose(
        tf.convert_to_tensor(weight).numpy(), table.numpy(), atol=np.abs(table.numpy()).max() / 127
    )
    assert weight.values.dtype == tf.int8 and weight.scale.shape == (100, 1)
    # An all-zero row keeps scale 1 (no division by zero) and reads as zeros.
    zero = compact.CompactWeight(tf.Variable(np.zeros((4, 16), "float32")), "int8", by_row=True)
    assert np.all(tf.convert_to_tensor(zero).numpy() == 0)


_RELOAD = """
import json, sys
from trainer import keras_env  # noqa: F401
import numpy as np, tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
inputs = {k: tf.constant(v) for k, v in np.load(sys.argv[2]).items()}
out = model.signatures["serving_default"](**inputs)
print(json.dumps({k: v.numpy().tolist() for k, v in out.items()}))
"""


def _save(network, inputs, export_dir):
    spec = {k: tf.TensorSpec([None, *v.shape[1:]], v.dtype, name=k) for k, v in inputs.items()}

    @tf.function(input_signature=[spec])
    def serve(features):
        return network(features, training=False)

    network.save(
        export_dir,
        save_format="tf",
        include_optimizer=False,
        signatures={"serving_default": serve.get_concrete_function()},
    )


def _dir_bytes(path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def test_the_int8_export_holds_only_int8_tables_loads_in_a_fresh_process_on_stock_ops(tmp_path):
    network, inputs = _network(), _inputs(8)
    _save(network, inputs, str(tmp_path / "full"))
    done = compact.compact_weights([network], "int8", min_elements=MIN_ELEMENTS)
    expected = _outputs(network, inputs)
    _save(network, inputs, str(tmp_path / "int8"))

    # The checkpoint holds the network's weights as they are now: no float32
    # copy of a compacted one is left behind.
    reader = tf.train.load_checkpoint(str(tmp_path / "int8" / "variables" / "variables"))
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    saved = Counter((tuple(shapes[k]), dtypes[k].name) for k in shapes if dtypes[k] != tf.string)
    assert saved == Counter((tuple(w.shape), w.dtype.name) for w in network.weights)
    assert sum(n for (_, dtype), n in saved.items() if dtype == "int8") == len(done)
    assert _dir_bytes(tmp_path / "int8" / "variables") < 0.5 * _dir_bytes(
        tmp_path / "full" / "variables"
    )
    assert tf_serving_ops.unsupported_ops(str(tmp_path / "int8")) == []

    np.savez(tmp_path / "inputs.npz", **{k: v.numpy() for k, v in inputs.items()})
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    reloaded = subprocess.run(
        [sys.executable, "-c", _RELOAD, str(tmp_path / "int8"), str(tmp_path / "inputs.npz")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert reloaded.returncode == 0, reloaded.stderr[-3000:]
    outputs = json.loads(reloaded.stdout.strip().splitlines()[-1])
    for name, value in expected.items():
        np.testing.assert_allclose(np.array(outputs[name]), value, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("mode, tolerance", [("float32", 1e-5), ("int8", 0.05)])
def test_the_tflite_ranking_heads_agree_with_the_keras_heads(mode, tolerance):
    network, inputs = _network(), _inputs(8)
    tasks = compact.ranking_task_names(F.TASK_NAMES)
    assert tasks == ["click", "conversion", "rating"]
    heads = compact.ranking_heads(network, tasks)
    feed = tf.keras.Model(network.input, compact.ranking_inputs(network))(inputs)
    full = _outputs(network, inputs)
    keras_heads = {k: v.numpy() for k, v in heads(feed).items()}
    for name in tasks:
        np.testing.assert_allclose(keras_heads[name], full[name], atol=1e-5, err_msg=name)

    interpreter = tf.lite.Interpreter(
        model_content=compact.tflite_ranking_heads(network, F.TASK_NAMES, int8=mode == "int8")
    )
    runner = interpreter.get_signature_runner()
    signature = interpreter.get_signature_list()["serving_default"]
    assert set(signature["outputs"]) == set(tasks)
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not any(op.startswith("Flex") for op in ops), ops  # TFLite builtins only
    got = runner(**{k: tf.cast(v, interpreter_dtype(runner, k)).numpy() for k, v in feed.items()})
    for name in tasks:
        np.testing.assert_allclose(got[name], full[name], atol=tolerance, err_msg=name)


def interpreter_dtype(runner, name: str):
    return runner.get_input_details()[name]["dtype"]


def test_an_unknown_compact_kind_is_refused():
    with pytest.raises(ValueError, match="compact kind"):
        compact.compact_weights([_network()], "int4")


@settings(max_examples=40, deadline=None)
@given(
    key=st.sampled_from(["compact_weights", "tflite_ranking_heads"]),
    value=st.one_of(
        st.none(),
        st.sampled_from(["float16", "int8", "float32", "INT8", "", "int4"]),
        st.text(max_size=8),
        st.integers(),
        st.booleans(),
    ),
)
def test_generated_compact_settings_are_taken_or_named_in_the_error(key, value):
    allowed = {
        "compact_weights": (None, "float16", "int8"),
        "tflite_ranking_heads": (None, "float32", "int8"),
    }[key]
    if any(value is a or (isinstance(value, str) and value == a) for a in allowed):
        assert getattr(ModelConfig.from_dict({key: value}), key) == value
    else:
        with pytest.raises(ValueError, match=key):
            ModelConfig.from_dict({key: value})
