"""micrograd_gen.io: Keras legacy HDF5 weights (write, read by order and by name), Keras 3
`.weights.h5`, and every way a file can be wrong. Fixtures are written here, by our own writer or
by h5py following Keras's layouts; nothing is downloaded."""
import h5py
import numpy as np
import pytest

from micrograd_gen import Tensor, io
from micrograd_gen.io import WeightFileError


# ---- a tiny model that follows the layer protocol (model.layers, name, weights, weight_names) ----

class _Layer:
    weight_shapes = {}

    def __init__(self, name, dtype=np.float32, seed=0, **shapes):
        rng = np.random.default_rng(seed)
        self.name = name
        self.weight_names = list(shapes or self.weight_shapes)
        self.weights = [Tensor(rng.standard_normal(s).astype(dtype), dtype=dtype)
                        for s in (shapes or self.weight_shapes).values()]

    def get_weights(self):
        return [w.numpy().copy() for w in self.weights]

    def set_weights(self, arrays):
        if len(arrays) != len(self.weights):
            raise ValueError(f"{self.name}: {len(arrays)} arrays for {len(self.weights)} weights")
        for w, a in zip(self.weights, arrays):
            if tuple(a.shape) != w.shape:
                raise ValueError(f"{self.name}: shape {a.shape} for {w.shape}")
            w.data = np.array(a, dtype=w.dtype)


class Conv2D(_Layer):
    def __init__(self, name, cin, cout, k=3, dtype=np.float32, seed=0):
        super().__init__(name, dtype, seed, kernel=(k, k, cin, cout), bias=(cout,))


class MaxPooling2D(_Layer):
    pass


class InputLayer(_Layer):
    pass


class BatchNormalization(_Layer):
    def __init__(self, name, c, seed=0):
        super().__init__(name, np.float32, seed, beta=(c,), moving_mean=(c,), moving_variance=(c,))


class Model:
    def __init__(self, layers):
        self.layers = layers

    def weights(self):
        return [w for l in self.layers for w in l.get_weights()]


def two_conv(seed=0, names=("conv_a", "conv_b"), dtype=np.float32, cout=4):
    return Model([InputLayer("input_1"),
                  Conv2D(names[0], 3, cout, dtype=dtype, seed=seed),
                  MaxPooling2D("pool"),
                  Conv2D(names[1], cout, 5, k=1, dtype=dtype, seed=seed + 1)])


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def assert_untouched(model, before):
    assert_same(model.weights(), before)


# ---- round trips -------------------------------------------------------------------------------

def test_save_writes_keras_legacy_layout(tmp_path):
    path = io.save_weights(two_conv(), tmp_path / "m.h5")
    with h5py.File(path, "r") as f:
        assert [n.decode() for n in f.attrs["layer_names"]] == ["input_1", "conv_a", "pool", "conv_b"]
        assert f.attrs["backend"] == b"tensorflow"
        assert [n.decode() for n in f["conv_a"].attrs["weight_names"]] == \
            ["conv_a/kernel:0", "conv_a/bias:0"]
        assert f["conv_a"]["conv_a"]["kernel:0"].shape == (3, 3, 3, 4)  # the slash is a subgroup
        assert f["conv_b/conv_b/bias:0"].shape == (5,)
        assert len(f["pool"].attrs["weight_names"]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name != "m.h5"]  # no temp file left


@pytest.mark.parametrize("by_name", [False, True])
def test_round_trip(tmp_path, by_name):
    src = two_conv(seed=1)
    io.save_weights(src, tmp_path / "m.h5")
    dst = two_conv(seed=7)
    pairs = io.load_weights(dst, tmp_path / "m.h5", by_name=by_name)
    assert pairs == [("conv_a", "conv_a"), ("conv_b", "conv_b")]
    assert_same(dst.weights(), src.weights())


def test_by_order_ignores_names_and_by_name_needs_them(tmp_path):
    src = two_conv(seed=1)
    io.save_weights(src, tmp_path / "m.h5")
    other = two_conv(seed=7, names=("first", "second"))
    io.load_weights(other, tmp_path / "m.h5")
    assert_same(other.weights(), src.weights())
    fresh = two_conv(seed=7, names=("first", "second"))
    before = fresh.weights()
    with pytest.raises(WeightFileError, match="no layer of the model is in the file"):
        io.load_weights(fresh, tmp_path / "m.h5", by_name=True)
    assert_untouched(fresh, before)


def test_by_name_ignores_extra_file_layers_and_rejects_missing_ones(tmp_path):
    src = two_conv(seed=1)
    io.save_weights(src, tmp_path / "m.h5")
    subset = Model([Conv2D("conv_a", 3, 4, seed=3)])
    io.load_weights(subset, tmp_path / "m.h5", by_name=True)  # conv_b in the file is ignored
    assert_same(subset.weights(), src.layers[1].get_weights())
    bigger = Model([Conv2D("conv_a", 3, 4), Conv2D("conv_c", 4, 2)])
    before = bigger.weights()
    with pytest.raises(WeightFileError, match=r"m\.h5.*'conv_c'.*not in the file"):
        io.load_weights(bigger, tmp_path / "m.h5", by_name=True)
    assert_untouched(bigger, before)


def test_float64_model_takes_float32_file(tmp_path):
    src = two_conv(seed=1)
    io.save_weights(src, tmp_path / "m.h5")
    dst = two_conv(seed=2, dtype=np.float64)
    io.load_weights(dst, tmp_path / "m.h5")
    assert dst.layers[1].weights[0].dtype == np.float64
    np.testing.assert_array_equal(dst.layers[1].get_weights()[0], src.layers[1].get_weights()[0])


def test_split_layer_names(tmp_path):
    # Over 64 KB of names: Keras writes layer_names0, layer_names1, ... and so do we.
    names = [f"layer_{i:03d}_" + "x" * 220 for i in range(300)]  # 300 x 229 bytes
    src = Model([_Layer(n, seed=i, bias=(2,)) for i, n in enumerate(names)])
    io.save_weights(src, tmp_path / "big.h5")
    with h5py.File(tmp_path / "big.h5", "r") as f:
        assert "layer_names" not in f.attrs and "layer_names1" in f.attrs
    dst = Model([_Layer(n, seed=i + 9, bias=(2,)) for i, n in enumerate(names)])
    io.load_weights(dst, tmp_path / "big.h5", by_name=True)
    assert_same(dst.weights(), src.weights())


def test_reads_split_weight_names_and_model_weights_group(tmp_path):
    # A Keras 2 whole-model file keeps the weights under /model_weights; weight_names may be split.
    path = tmp_path / "full.h5"
    kernel, bias = np.ones((3, 3, 3, 4), np.float32), np.arange(4, dtype=np.float32)
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = b'{"class_name": "Sequential"}'
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = np.array([b"conv_a"])
        layer = g.create_group("conv_a")
        layer.attrs["weight_names0"] = np.array([b"conv_a/kernel:0"])
        layer.attrs["weight_names1"] = np.array([b"conv_a/bias:0"])
        layer["conv_a/kernel:0"] = kernel
        layer["conv_a/bias:0"] = bias
    model = Model([Conv2D("conv_a", 3, 4)])
    io.load_weights(model, path)
    assert_same(model.weights(), [kernel, bias])
    assert list(io.read_weights(path)) == ["conv_a"]


def test_optimizer_state_round_trip(tmp_path):
    class Opt:
        def __init__(self, state=None):
            self.state = state

        def get_state(self):
            return self.state

        def set_state(self, state):
            self.state = state

    state = {"step": 12, "learning_rate": 0.01, "nesterov": False, "name": "rmsprop",
             "schedule": None, "velocities": [np.ones((3, 3, 3, 4)), np.zeros(4)],
             "nested": {"rho": np.float32(0.9)}, "m/0": np.full((2, 2), 3.0), "100%": 1.5}
    io.save_weights(two_conv(), tmp_path / "m.h5", optimizer=Opt(state))
    opt = Opt()
    io.load_weights(two_conv(seed=3), tmp_path / "m.h5", optimizer=opt)
    got = opt.state
    assert got["step"] == 12 and isinstance(got["step"], int)
    assert got["learning_rate"] == 0.01 and got["nesterov"] is False
    assert got["name"] == "rmsprop" and got["schedule"] is None
    assert isinstance(got["velocities"], list) and len(got["velocities"]) == 2
    np.testing.assert_array_equal(got["velocities"][0], state["velocities"][0])
    assert got["nested"]["rho"] == np.float32(0.9)
    np.testing.assert_array_equal(got["m/0"], state["m/0"])  # optim's flat "<slot>/<i>" keys
    assert got["100%"] == 1.5
    # A file saved without state cannot resume an optimiser; the model is left as it was.
    io.save_weights(two_conv(seed=5), tmp_path / "plain.h5")
    model = two_conv(seed=3)
    before = model.weights()
    with pytest.raises(WeightFileError, match="no optimiser state"):
        io.load_weights(model, tmp_path / "plain.h5", optimizer=Opt())
    assert_untouched(model, before)


def test_save_is_atomic(tmp_path):
    path = tmp_path / "m.h5"
    io.save_weights(two_conv(seed=1), path)
    good = path.read_bytes()
    broken = two_conv(seed=2)

    def fail():
        raise RuntimeError("disk full")
    broken.layers[3].get_weights = fail
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_weights(broken, path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["m.h5"]


def test_duplicate_layer_names_cannot_be_saved(tmp_path):
    with pytest.raises(ValueError, match="conv_a"):
        io.save_weights(two_conv(names=("conv_a", "conv_a")), tmp_path / "m.h5")


# ---- every way a file can be wrong -----------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.h5"
    io.save_weights(two_conv(seed=1), path)
    return path


def test_shape_mismatch_names_file_layer_and_both_shapes(saved):
    model = two_conv(seed=4, cout=6)
    before = model.weights()
    with pytest.raises(WeightFileError) as e:
        io.load_weights(model, saved)
    msg = str(e.value)
    assert str(saved) in msg and "conv_a" in msg and "(3, 3, 3, 4)" in msg and "(3, 3, 3, 6)" in msg
    assert_untouched(model, before)


def test_mismatch_in_a_later_layer_assigns_nothing(saved):
    model = Model([Conv2D("conv_a", 3, 4, seed=4), Conv2D("conv_b", 4, 5, k=3, seed=5)])
    before = model.weights()
    with pytest.raises(WeightFileError, match=r"conv_b.*\(1, 1, 4, 5\).*\(3, 3, 4, 5\)"):
        io.load_weights(model, saved)
    assert_untouched(model, before)  # conv_a matched but must not have been loaded either


def test_another_models_file(saved):
    model = Model([Conv2D("c1", 3, 4), Conv2D("c2", 4, 4), Conv2D("c3", 4, 5, k=1)])
    before = model.weights()
    with pytest.raises(WeightFileError, match="file has 2 layers with weights, the model has 3"):
        io.load_weights(model, saved)
    assert_untouched(model, before)


def test_layer_weight_count_mismatch(saved):
    model = Model([BatchNormalization("conv_a", 4), Conv2D("conv_b", 4, 5, k=1)])
    with pytest.raises(WeightFileError, match=r"conv_a.*3 weights.*file has 2"):
        io.load_weights(model, saved)


def test_set_weights_failure_rolls_back(saved):
    model = two_conv(seed=4)
    before = model.weights()

    def refuse(arrays):
        raise ValueError("refused")
    model.layers[3].set_weights = refuse
    with pytest.raises(ValueError, match="refused"):
        io.load_weights(model, saved)
    assert_untouched(model, before)


@pytest.mark.parametrize("content, hint", [
    (b"", "empty"),
    (b"<!DOCTYPE html><html><body>Access denied</body></html>", "web page"),
    (b"PK\x03\x04 something zipped", "zip archive"),
    (b"\x00\x01 just some bytes", "not an HDF5"),
])
def test_not_hdf5(tmp_path, content, hint):
    path = tmp_path / "weights.h5"
    path.write_bytes(content)
    model = two_conv()
    before = model.weights()
    with pytest.raises(WeightFileError, match=hint) as e:
        io.load_weights(model, path)
    assert str(path) in str(e.value)
    assert_untouched(model, before)


def test_truncated_download(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    model = two_conv(seed=4)
    before = model.weights()
    with pytest.raises(WeightFileError, match="truncated") as e:
        io.load_weights(model, saved)
    assert str(saved) in str(e.value)
    assert_untouched(model, before)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        io.load_weights(two_conv(), tmp_path / "nope.h5")
    with pytest.raises(WeightFileError, match="folder"):
        io.load_weights(two_conv(), tmp_path)


def test_hdf5_that_is_not_a_weight_file(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 2))
    with pytest.raises(WeightFileError, match="not a Keras weight file"):
        io.load_weights(two_conv(), path)


def test_listed_weight_missing_from_file(tmp_path):
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"conv_a"])
        f.create_group("conv_a").attrs["weight_names"] = np.array([b"conv_a/kernel:0"])
    with pytest.raises(WeightFileError, match="'conv_a/kernel:0'.*not in the file"):
        io.load_weights(Model([Conv2D("conv_a", 3, 4)]), path)


def test_non_numeric_dataset_is_refused(tmp_path):
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"conv_a"])
        g = f.create_group("conv_a")
        g.attrs["weight_names"] = np.array([b"kernel:0", b"bias:0"])
        g["kernel:0"] = np.zeros((3, 3, 3, 4), np.float32)
        g.create_dataset("bias:0", data=np.array([b"cos(x)"] * 4))
    with pytest.raises(WeightFileError, match="not a numeric array"):
        io.load_weights(Model([Conv2D("conv_a", 3, 4)]), path)


# ---- Keras 3 `.weights.h5` ---------------------------------------------------------------------------

def _write_keras3(path, groups):
    """Keras 3's saving_lib layout: root vars/, layers/<snake_class>[_k]/vars/<i>."""
    with h5py.File(path, "w") as f:
        f.create_group("vars")
        layers = f.create_group("layers")
        for key, arrays in groups.items():
            g = layers.create_group(key)
            v = g.create_group("vars")
            for i, a in enumerate(arrays):
                v[str(i)] = a
        f.create_group("optimizer").create_group("vars")["0"] = np.int64(3)


def test_keras3_weights_file(tmp_path):
    rng = np.random.default_rng(0)
    k0, b0 = rng.standard_normal((3, 3, 3, 4)).astype("f4"), rng.standard_normal(4).astype("f4")
    k1, b1 = rng.standard_normal((1, 1, 4, 5)).astype("f4"), rng.standard_normal(5).astype("f4")
    path = tmp_path / "model.weights.h5"
    with h5py.File(path, "w"):
        pass
    _write_keras3(path, {"input_layer": [], "conv2d": [k0, b0], "max_pooling2d": [],
                         "conv2d_1": [k1, b1]})
    model = two_conv(seed=5)
    io.load_weights(model, path)
    assert_same(model.weights(), [k0, b0, k1, b1])
    model = two_conv(seed=5)
    io.load_weights(model, path, by_name=True)  # no names in the file: class and position decide
    assert_same(model.weights(), [k0, b0, k1, b1])
    assert set(io.read_weights(path)) == {"layers/conv2d", "layers/conv2d_1", "optimizer"}


def test_keras3_ten_or_more_layers_keep_their_order(tmp_path):
    # h5py lists groups alphabetically (conv2d_10 before conv2d_2); matching goes by key, not order.
    n = 12
    arrays = {("conv2d" if i == 0 else f"conv2d_{i}"): [np.full((1, 1, 2, 2), i, "f4"),
                                                        np.full(2, i, "f4")] for i in range(n)}
    _write_keras3(tmp_path / "w.weights.h5", arrays)
    model = Model([Conv2D(f"c{i}", 2, 2, k=1) for i in range(n)])
    io.load_weights(model, tmp_path / "w.weights.h5")
    assert [float(l.get_weights()[1][0]) for l in model.layers] == list(range(n))


def test_keras3_nested_sublayer_and_errors(tmp_path):
    class LSTM(_Layer):
        weight_shapes = {"kernel": (3, 8), "recurrent_kernel": (2, 8), "bias": (8,)}

    path = tmp_path / "rnn.weights.h5"
    k, r, b = np.ones((3, 8), "f4"), np.full((2, 8), 2, "f4"), np.full(8, 3, "f4")
    with h5py.File(path, "w") as f:
        cell = f.create_group("layers/lstm/cell/vars")
        f.create_group("layers/lstm/vars")
        cell["0"], cell["1"], cell["2"] = k, r, b
    model = Model([LSTM("lstm_7")])
    io.load_weights(model, path)
    assert_same(model.weights(), [k, r, b])

    wrong = Model([LSTM("lstm_7"), Conv2D("c", 3, 4)])
    before = wrong.weights()
    with pytest.raises(WeightFileError, match=r"'c'.*layers/conv2d/vars"):
        io.load_weights(wrong, path)
    assert_untouched(wrong, before)
    with pytest.raises(WeightFileError, match="none of the model's layers"):
        io.load_weights(two_conv(), path)


def test_snake_case_matches_keras():
    from micrograd_gen.keras3_weights import snake_case
    assert [snake_case(n) for n in ["Conv2D", "Conv2DTranspose", "LSTM", "MultiHeadAttention",
                                       "BatchNormalization", "MaxPooling2D", "Dense"]] == \
        ["conv2d", "conv2d_transpose", "lstm", "multi_head_attention", "batch_normalization",
         "max_pooling2d", "dense"]


# ---- the real layers and optimisers ------------------------------------------------------------------

def _nn_two_conv(seed):
    from micrograd_gen import nn
    nn.set_seed(seed)
    return nn.Sequential([nn.Input((8, 8, 3)), nn.Conv2D(4, 3, name="conv_a"),
                          nn.MaxPooling2D(2, name="pool"), nn.Conv2D(5, 1, name="conv_b")])


def test_nn_model_round_trip_and_auto(tmp_path):
    src = _nn_two_conv(1)
    src.save_weights(tmp_path / "m.h5")
    for by_name in (False, True, "auto"):
        dst = _nn_two_conv(2)
        dst.load_weights(tmp_path / "m.h5", by_name=by_name)
        for a, b in zip(src.get_weights(), dst.get_weights()):
            np.testing.assert_array_equal(a, b)
    # auto falls back to the order when the names differ
    from micrograd_gen import nn
    renamed = nn.Sequential([nn.Input((8, 8, 3)), nn.Conv2D(4, 3, name="x1"),
                             nn.Conv2D(5, 1, name="x2")])
    assert io.load_weights(renamed, tmp_path / "m.h5", by_name="auto") == \
        [("x1", "conv_a"), ("x2", "conv_b")]


def test_optimizer_resumes_from_file(tmp_path):
    from micrograd_gen import nn, optim
    nn.set_seed(0)
    model = nn.Sequential([nn.Input((3,)), nn.Dense(4, name="d1"), nn.Dense(2, name="d2")])
    opt = optim.Adam(model.parameters(), learning_rate=0.01)
    x = Tensor(np.random.default_rng(0).standard_normal((5, 3)).astype("f4"))
    for _ in range(3):
        loss = (model(x) * model(x)).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    io.save_weights(model, tmp_path / "ckpt.h5", optimizer=opt)
    nn.set_seed(9)
    model2 = nn.Sequential([nn.Input((3,)), nn.Dense(4, name="d1"), nn.Dense(2, name="d2")])
    opt2 = optim.Adam(model2.parameters(), learning_rate=0.01)
    io.load_weights(model2, tmp_path / "ckpt.h5", optimizer=opt2)
    assert opt2.iterations == opt.iterations == 3
    for a, b in zip(opt.get_state().items(), opt2.get_state().items()):
        assert a[0] == b[0]
        np.testing.assert_array_equal(a[1], b[1])
    for m, o in ((model, opt), (model2, opt2)):  # one more step lands in the same place
        loss = (m(x) * m(x)).mean()
        loss.backward()
        o.step()
    for a, b in zip(model.get_weights(), model2.get_weights()):
        np.testing.assert_array_equal(a, b)
