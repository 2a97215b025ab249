"""Keras 3 `.weights.h5` files, written and read by the engine (micrograd_gen/keras3_weights.py).

The expected trees below are what Keras 3.15 writes for the same models (built the same way in
Keras, `model.save_weights("x.weights.h5")`, listed with h5py): paths, dataset shapes and the `name`
attribute of each `vars` group. Keras itself is not used here; the engine's files were also loaded
into those Keras models by hand, and the outputs agreed to float32 rounding, both ways.
"""
import h5py
import numpy as np
import pytest

import micrograd_gen as mg
from micrograd_gen import io, keras3_weights, nn
from micrograd_gen.io import WeightFileError


def functional_with_nested_sequential():
    nn.clear_session()
    inp = nn.Input((8, 8, 3))
    x = nn.Conv2D(4, 3)(inp)
    x = nn.BatchNormalization()(x)
    x = nn.MaxPooling2D()(x)
    x = nn.Flatten()(x)
    x = nn.Sequential([nn.Dense(5), nn.Dense(2)])(x)
    model = nn.Model(inp, x)
    model(np.zeros((1, 8, 8, 3), "f4"))   # the nested Sequential builds on its first call
    return model, np.random.default_rng(1).standard_normal((2, 8, 8, 3)).astype("f4")


def attention_and_lstm():
    nn.clear_session()
    inp = nn.Input((6,), dtype="int32")
    e = nn.Embedding(10, 8)(inp)
    a = nn.MultiHeadAttention(2, 4)(e, e)
    model = nn.Model(inp, nn.LSTM(3)(a))
    return model, np.random.default_rng(1).integers(0, 10, (2, 6)).astype("int32")


class Sampler(nn.Layer):
    def call(self, z):
        return z


class VAE(nn.Model):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential([nn.Input((4,)), nn.Dense(2)])
        self.decoder = nn.Sequential([nn.Input((2,)), nn.Dense(4)])
        self.sampler = Sampler()

    def call(self, x):
        return self.decoder(self.sampler(self.encoder(x)))


def subclassed_vae():
    nn.clear_session()
    model = VAE()
    x = np.random.default_rng(1).standard_normal((2, 4)).astype("f4")
    model(x)
    return model, x


KERAS_TREES = {
    functional_with_nested_sequential: {
        "vars": "functional",
        "layers/input_layer/vars": "input_layer",
        "layers/conv2d/vars": "conv2d",
        "layers/conv2d/vars/0": (3, 3, 3, 4), "layers/conv2d/vars/1": (4,),
        "layers/batch_normalization/vars": "batch_normalization",
        **{f"layers/batch_normalization/vars/{i}": (4,) for i in range(4)},
        "layers/max_pooling2d/vars": "max_pooling2d",
        "layers/flatten/vars": "flatten",
        "layers/sequential/vars": "sequential",
        "layers/sequential/layers/dense/vars": "dense",
        "layers/sequential/layers/dense/vars/0": (36, 5),
        "layers/sequential/layers/dense/vars/1": (5,),
        "layers/sequential/layers/dense_1/vars": "dense_1",
        "layers/sequential/layers/dense_1/vars/0": (5, 2),
        "layers/sequential/layers/dense_1/vars/1": (2,),
    },
    attention_and_lstm: {
        "vars": "functional",
        "layers/input_layer/vars": "input_layer",
        "layers/embedding/vars": "embedding", "layers/embedding/vars/0": (10, 8),
        "layers/multi_head_attention/vars": "multi_head_attention",
        **{f"layers/multi_head_attention/{d}_dense/vars": n
           for d, n in [("query", "query"), ("key", "key"), ("value", "value"),
                        ("output", "attention_output")]},
        **{f"layers/multi_head_attention/{d}_dense/vars/0": (8, 2, 4) for d in ("query", "key", "value")},
        **{f"layers/multi_head_attention/{d}_dense/vars/1": (2, 4) for d in ("query", "key", "value")},
        "layers/multi_head_attention/output_dense/vars/0": (2, 4, 8),
        "layers/multi_head_attention/output_dense/vars/1": (8,),
        "layers/multi_head_attention/_dropout_layer/vars": "dropout",
        "layers/multi_head_attention/_softmax/vars": "softmax",
        "layers/lstm/vars": "lstm",
        "layers/lstm/cell/vars": "lstm_cell",
        "layers/lstm/cell/vars/0": (8, 12), "layers/lstm/cell/vars/1": (3, 12),
        "layers/lstm/cell/vars/2": (12,),
    },
    subclassed_vae: {
        "vars": "vae",
        "decoder/vars": "sequential_1",
        "decoder/layers/dense/vars": "dense_1",
        "decoder/layers/dense/vars/0": (2, 4), "decoder/layers/dense/vars/1": (4,),
        "encoder/vars": "sequential",
        "encoder/layers/dense/vars": "dense",
        "encoder/layers/dense/vars/0": (4, 2), "encoder/layers/dense/vars/1": (2,),
        "layers/sampler/vars": "sampler",   # after `layers` in name order: reached through it
    },
}


def tree(path):
    """{path: name attribute of a vars group, or a dataset's shape}, intermediate groups left out."""
    out = {}

    def visit(name, node):
        if isinstance(node, h5py.Dataset):
            out[name] = tuple(node.shape)
        elif name.split("/")[-1] == "vars":
            out[name] = node.attrs["name"]
            assert dict(node.attrs) == {"name": out[name]}, name
    with h5py.File(path, "r") as f:
        f.visititems(visit)
        assert dict(f.attrs) == {}   # Keras 3 writes no root attributes
    return out


def randomize(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.set_weights([(np.abs(rng.standard_normal(w.shape)) + 0.5 if "variance" in n
                            else 0.3 * rng.standard_normal(w.shape)).astype(w.dtype)
                           for n, w in zip(layer.weight_names, layer.get_weights())])


def run(model, x):
    with mg.no_grad():
        return model(x).numpy()


@pytest.mark.parametrize("build", list(KERAS_TREES), ids=lambda b: b.__name__)
def test_layout_is_keras_3s(build, tmp_path):
    model, _ = build()
    path = model.save_weights(tmp_path / "m.weights.h5")
    assert tree(path) == KERAS_TREES[build]


@pytest.mark.parametrize("build", list(KERAS_TREES), ids=lambda b: b.__name__)
def test_round_trip_gives_the_same_outputs(build, tmp_path):
    model, x = build()
    randomize(model, 7)
    model.save_weights(tmp_path / "m.weights.h5")
    other, _ = build()
    randomize(other, 8)
    assert not np.allclose(run(other, x), run(model, x))
    other.load_weights(tmp_path / "m.weights.h5")
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(run(other, x), run(model, x))


def test_other_names_keep_the_legacy_layout(tmp_path):
    model, x = functional_with_nested_sequential()
    randomize(model, 3)
    for name in ("m.h5", "m.weights.hdf5", "weights.h5"):
        model.save_weights(tmp_path / name)
        with h5py.File(tmp_path / name, "r") as f:
            assert io.file_format(f) == "legacy" and "vars" not in f
    model.save_weights(tmp_path / "m.weights.h5")
    with h5py.File(tmp_path / "m.weights.h5", "r") as f:
        assert io.file_format(f) == "keras3" and "layer_names" not in f.attrs
    other, _ = functional_with_nested_sequential()
    other.load_weights(tmp_path / "m.h5")        # both layouts load
    np.testing.assert_array_equal(run(other, x), run(model, x))


def test_another_architecture_names_the_layer_and_shapes_and_changes_nothing(tmp_path):
    model, _ = functional_with_nested_sequential()
    model.save_weights(tmp_path / "m.weights.h5")
    nn.clear_session()
    inp = nn.Input((8, 8, 3))
    x = nn.Flatten()(nn.MaxPooling2D()(nn.BatchNormalization()(nn.Conv2D(4, 3)(inp))))
    wider = nn.Model(inp, nn.Sequential([nn.Dense(5), nn.Dense(3)])(x))   # 3 outputs, not 2
    wider(np.zeros((1, 8, 8, 3), "f4"))
    before = wider.get_weights()
    with pytest.raises(WeightFileError, match=r"'dense_1'.*kernel: the file has shape \(5, 2\).*"
                                              r"the model has \(5, 3\)"):
        wider.load_weights(tmp_path / "m.weights.h5")
    for a, b in zip(before, wider.get_weights()):
        np.testing.assert_array_equal(a, b)   # nothing assigned, not even the layers that fit

    lstm_model, _ = attention_and_lstm()
    with pytest.raises(WeightFileError, match="none of the model's layers"):
        lstm_model.load_weights(tmp_path / "m.weights.h5")


def test_missing_and_extra_variables_are_named(tmp_path):
    model, _ = attention_and_lstm()
    path = model.save_weights(tmp_path / "m.weights.h5")
    before = model.get_weights()
    with h5py.File(path, "r+") as f:
        del f["layers/lstm/cell/vars/2"]
    with pytest.raises(WeightFileError, match=r"'lstm' \(LSTM\) has 3 weights .* layers/lstm/cell/vars, "
                                              r"the file has 2"):
        model.load_weights(path)
    with h5py.File(path, "r+") as f:
        del f["layers/embedding"]
    with pytest.raises(WeightFileError, match=r"'embedding' \(Embedding\) has no weights in this "
                                              r"Keras 3 file \(looked for layers/embedding/vars"):
        model.load_weights(path)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_reads_keras_3_0s_private_sublayer_names(tmp_path):
    # Keras 3.0-3.3 kept MultiHeadAttention's projections in _query_dense, _key_dense, ...
    model, x = attention_and_lstm()
    randomize(model, 5)
    path = model.save_weights(tmp_path / "m.weights.h5")
    with h5py.File(path, "r+") as f:
        for part in ("query", "key", "value", "output"):
            f.move(f"layers/multi_head_attention/{part}_dense",
                   f"layers/multi_head_attention/_{part}_dense")
    other, _ = attention_and_lstm()
    other.load_weights(path)
    np.testing.assert_array_equal(run(other, x), run(model, x))


def test_optimizer_state_travels_beside_the_weights(tmp_path):
    from micrograd_gen import optim
    model, x = subclassed_vae()
    opt = optim.Adam(model.parameters(), learning_rate=0.01)
    loss = (model(x) ** 2).mean()
    loss.backward()
    opt.step()
    path = io.save_weights(model, tmp_path / "m.weights.h5", optimizer=opt)
    assert set(tree(path)) == set(KERAS_TREES[subclassed_vae]) | {
        k for k in tree(path) if k.startswith(io.OPTIMIZER_GROUP)}   # Keras never looks there
    other, _ = subclassed_vae()
    opt2 = optim.Adam(other.parameters(), learning_rate=0.01)
    io.load_weights(other, path, optimizer=opt2)
    assert opt2.iterations == opt.iterations == 1


def test_an_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    model, _ = subclassed_vae()
    path = model.save_weights(tmp_path / "m.weights.h5")
    old = path.read_bytes()
    calls = []

    def failing(array):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return np.asarray(array)
    monkeypatch.setattr(keras3_weights, "to_numpy", failing)
    with pytest.raises(KeyboardInterrupt):
        model.save_weights(path)
    assert path.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["m.weights.h5"]


def test_saveables_come_in_keras_order():
    model, _ = functional_with_nested_sequential()
    paths = [s.vars_path for s in keras3_weights.saveables(model) if s.weights]
    assert paths == ["layers/conv2d/vars", "layers/batch_normalization/vars",
                     "layers/sequential/layers/dense/vars", "layers/sequential/layers/dense_1/vars"]


def test_the_transformer_is_laid_out_as_the_books_functional_model(tmp_path):
    # The book builds it as keras.Model(inputs, outputs); the engine subclasses Model
    # (keras_functional = True says so). Paths as Keras 3.15 writes them for the book's model.
    from micrograd_gen.generative.transformer_lm import build_transformer_lm
    model = build_transformer_lm(vocab_size=20, sequence_length=8, embed_dim=8, dense_dim=16,
                                 num_heads=2)
    randomize(model, 4)
    path = model.save_weights(tmp_path / "t.weights.h5")
    shapes = {k: v for k, v in tree(path).items() if isinstance(v, tuple)}
    assert shapes["layers/positional_embedding/token_embeddings/vars/0"] == (20, 8)
    assert shapes["layers/positional_embedding/position_embeddings/vars/0"] == (8, 8)
    assert shapes["layers/transformer_decoder/attention_2/query_dense/vars/0"] == (8, 2, 8)
    assert shapes["layers/transformer_decoder/dense_proj/layers/dense_1/vars/0"] == (16, 8)
    assert shapes["layers/transformer_decoder/layernorm_3/vars/1"] == (8,)
    assert shapes["layers/dense/vars/0"] == (8, 20)
    assert len(shapes) == len(model.weights) and tree(path)["layers/input_layer/vars"] == "input_layer"
    other = build_transformer_lm(vocab_size=20, sequence_length=8, embed_dim=8, dense_dim=16,
                                 num_heads=2)
    other.load_weights(path)
    ids = np.random.default_rng(0).integers(1, 20, (2, 8))
    np.testing.assert_array_equal(run(other, ids), run(model, ids))
