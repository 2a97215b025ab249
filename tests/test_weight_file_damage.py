"""Damaged and poisoned weight files (issue 19, rules 2 and 7): every failure to load is the
documented WeightFileError, and a failed load leaves the model exactly as it was.

The fuzz tests flip bytes of small weight files this module writes (seeded, a few hundred each):
a flipped byte lands in the HDF5 superblock, an object header, an attribute holding the layer
names, a B-tree or the weights themselves. Whatever h5py makes of it, the load either succeeds or
raises WeightFileError; nothing else escapes, and nothing is half-assigned.
"""
import collections

import h5py
import numpy as np
import pytest

from micrograd_gen import io
from micrograd_gen.io import WeightFileError
from test_io import _write_keras3, assert_untouched, two_conv

MUTATIONS = 300


def mutate(data, rng):
    """One seeded damage: a few random bytes replaced, single bits flipped, or the tail cut."""
    damaged = bytearray(data)
    kind = rng.integers(0, 3)
    if kind == 0:
        for _ in range(int(rng.integers(1, 9))):
            damaged[int(rng.integers(0, len(damaged)))] = int(rng.integers(0, 256))
    elif kind == 1:
        for _ in range(int(rng.integers(1, 4))):
            damaged[int(rng.integers(0, len(damaged)))] ^= 1 << int(rng.integers(0, 8))
    else:
        del damaged[int(rng.integers(len(damaged) // 4, len(damaged))):]
    return bytes(damaged)


def fuzz(tmp_path, source, load, seed):
    """Load MUTATIONS damaged copies of `source` into fresh models; returns Counter of outcomes
    and asserts the rule on each."""
    data = source.read_bytes()
    rng = np.random.default_rng(seed)
    outcomes = collections.Counter()
    damaged_path = tmp_path / "damaged.h5"
    for k in range(MUTATIONS):
        damaged_path.write_bytes(mutate(data, rng))
        model = two_conv(seed=7)
        before = model.weights()
        try:
            load(model, damaged_path)
        except WeightFileError as e:
            outcomes["WeightFileError"] += 1
            assert str(damaged_path) in str(e), f"mutation {k}: the message names no file: {e}"
            assert len(str(e).splitlines()) == 1, f"mutation {k}: not one line: {e}"
            assert_untouched(model, before)
        except Exception as e:  # noqa: BLE001  the point of the test: nothing else may escape
            pytest.fail(f"mutation {k} (seed {seed}) raised {type(e).__name__}: {e}")
        else:
            outcomes["loaded"] += 1
            # what loaded is finite: damage that made NaN or inf of a weight is refused
            assert all(np.isfinite(w).all() for w in model.weights()), f"mutation {k}"
    assert sum(outcomes.values()) == MUTATIONS
    return outcomes


def test_fuzz_legacy_weight_file(tmp_path):
    source = tmp_path / "two_conv.h5"
    io.save_weights(two_conv(seed=0), source)
    outcomes = fuzz(tmp_path, source, io.load_weights, seed=19)
    # both outcomes occur: the damage reached the metadata and the data
    assert outcomes["WeightFileError"] >= 50 and outcomes["loaded"] >= 20, outcomes


def test_fuzz_legacy_weight_file_by_name(tmp_path):
    source = tmp_path / "two_conv.h5"
    io.save_weights(two_conv(seed=0), source)
    outcomes = fuzz(tmp_path, source, lambda m, p: io.load_weights(m, p, by_name=True), seed=20)
    assert outcomes["WeightFileError"] >= 50, outcomes


def test_fuzz_keras3_weight_file(tmp_path):
    rng = np.random.default_rng(0)
    source = tmp_path / "two_conv.weights.h5"
    _write_keras3(source, {"input_layer": [], "max_pooling2d": [],
                           "conv2d": [rng.standard_normal((3, 3, 3, 4)).astype("f4"),
                                      rng.standard_normal(4).astype("f4")],
                           "conv2d_1": [rng.standard_normal((1, 1, 4, 5)).astype("f4"),
                                        rng.standard_normal(5).astype("f4")]})
    io.load_weights(two_conv(seed=7), source)  # the undamaged file loads
    outcomes = fuzz(tmp_path, source, io.load_weights, seed=21)
    assert outcomes["WeightFileError"] >= 50, outcomes


def test_read_weights_of_damaged_files_raises_weight_file_error(tmp_path):
    source = tmp_path / "two_conv.h5"
    io.save_weights(two_conv(seed=0), source)
    data, rng = source.read_bytes(), np.random.default_rng(22)
    damaged_path = tmp_path / "damaged.h5"
    failures = 0
    for _ in range(100):
        damaged_path.write_bytes(mutate(data, rng))
        try:
            io.read_weights(damaged_path)
        except WeightFileError:
            failures += 1
    assert failures >= 10


# ---- NaN and inf in the weights (rule 2) -------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("layout", ["legacy", "keras3"])
def test_non_finite_weights_are_refused_naming_the_layer(tmp_path, bad, layout):
    good = two_conv(seed=0).weights()
    poisoned = [w.copy() for w in good]
    poisoned[2][0, 0, 1, 3] = bad  # conv_b's kernel
    if layout == "legacy":
        path = tmp_path / "w.h5"
        io.save_weights(two_conv(seed=0), path)
        with h5py.File(path, "r+") as f:
            f["conv_b/conv_b/kernel:0"][...] = poisoned[2]
        where = r"layer 'conv_b' weight 'conv_b/kernel:0' \(1, 1, 4, 5\) holds 1 NaN or infinite"
    else:
        path = tmp_path / "w.weights.h5"
        _write_keras3(path, {"conv2d": poisoned[:2], "conv2d_1": poisoned[2:]})
        # (how a Keras 3 file names the group and the variable is the Keras 3 reader's business)
        where = r"layer 'conv_b' \(file layer '[\w/]*conv2d_1'\) weight '[\w/]*vars/0' .* holds 1 NaN"
    model = two_conv(seed=7)
    before = model.weights()
    with pytest.raises(WeightFileError, match=where):
        io.load_weights(model, path)
    assert_untouched(model, before)  # conv_a, before conv_b in the file, was not assigned either


def test_integer_weights_need_no_finiteness_check(tmp_path):
    # An int dataset cannot hold NaN; it loads (cast to the model's dtype) as before.
    path = tmp_path / "w.h5"
    io.save_weights(two_conv(seed=0), path)
    with h5py.File(path, "r+") as f:
        del f["conv_a/conv_a/bias:0"]
        f["conv_a/conv_a/bias:0"] = np.arange(4, dtype=np.int32)
    model = two_conv(seed=7)
    io.load_weights(model, path)
    np.testing.assert_array_equal(model.weights()[1], [0, 1, 2, 3])


# ---- a checkpoint with optimiser state -----------------------------------------------------------

def trained_dense(seed):
    """A two-layer Dense model and an Adam that has taken two steps (so it has its slots)."""
    from micrograd_gen import Tensor, nn, optim
    nn.set_seed(seed)
    model = nn.Sequential([nn.Input((3,)), nn.Dense(4, name="d1"), nn.Dense(2, name="d2")])
    opt = optim.Adam(model.parameters(), learning_rate=0.01)
    x = Tensor(np.random.default_rng(seed).standard_normal((5, 3)).astype("f4"))
    for _ in range(2):
        loss = (model(x) * model(x)).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def snapshot(model, opt):
    state = opt.get_state()
    return ([w.copy() for w in model.get_weights()],
            {k: np.array(v, copy=True) for k, v in state.items()})


def assert_same_snapshot(a, b, what):
    assert len(a[0]) == len(b[0]) and a[1].keys() == b[1].keys(), what
    for x, y in zip(a[0], b[0]):
        np.testing.assert_array_equal(x, y, err_msg=what)
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k], err_msg=f"{what}: optimiser {k}")


def test_fuzz_checkpoint_with_optimizer_state(tmp_path):
    source = tmp_path / "ckpt.h5"
    model, opt = trained_dense(0)
    io.save_weights(model, source, optimizer=opt)
    data, rng = source.read_bytes(), np.random.default_rng(23)
    damaged_path = tmp_path / "damaged.h5"
    outcomes = collections.Counter()
    target, target_opt = trained_dense(1)  # one pair: each try compares with its own snapshot
    for k in range(MUTATIONS):
        damaged_path.write_bytes(mutate(data, rng))
        before = snapshot(target, target_opt)
        try:
            io.load_weights(target, damaged_path, optimizer=target_opt)
        except WeightFileError as e:
            outcomes["WeightFileError"] += 1
            assert len(str(e).splitlines()) == 1, f"mutation {k}: not one line: {e}"
            assert_same_snapshot(snapshot(target, target_opt), before, f"mutation {k}")
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"mutation {k} raised {type(e).__name__}: {e}")
        else:
            outcomes["loaded"] += 1
            weights, state = snapshot(target, target_opt)
            assert all(np.isfinite(w).all() for w in weights)
            assert all(np.isfinite(v).all() for v in state.values())
    assert outcomes["WeightFileError"] >= 50, outcomes


def test_nan_in_the_optimizer_state_is_refused(tmp_path):
    model, opt = trained_dense(0)
    path = tmp_path / "ckpt.h5"
    io.save_weights(model, path, optimizer=opt)
    with h5py.File(path, "r+") as f:
        key = next(k for k in f[io.OPTIMIZER_GROUP] if k.startswith("m"))
        f[io.OPTIMIZER_GROUP][key][0] = np.nan
    target, target_opt = trained_dense(1)
    before = snapshot(target, target_opt)
    with pytest.raises(WeightFileError,
                       match=r"optimiser state 'momentum/\d' holds NaN or infinite"):
        io.load_weights(target, path, optimizer=target_opt)
    assert_same_snapshot(snapshot(target, target_opt), before, "after the refusal")


def test_a_state_for_another_optimizer_is_a_weight_file_error(tmp_path):
    from micrograd_gen import optim
    model, opt = trained_dense(0)
    path = tmp_path / "ckpt.h5"
    io.save_weights(model, path, optimizer=opt)  # Adam: m/i and v/i
    target, _ = trained_dense(1)
    sgd = optim.SGD(target.parameters(), learning_rate=0.1, momentum=0.9)
    before = [w.copy() for w in target.get_weights()]
    with pytest.raises(WeightFileError, match="optimiser state in the file does not fit SGD"):
        io.load_weights(target, path, optimizer=sgd)
    for a, b in zip(target.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_strings_are_fixed_length_and_old_variable_length_ones_still_load(tmp_path):
    # A variable-length string lives in HDF5's global heap; damage there hangs or crashes HDF5
    # (both seen in the fuzz above before the writer changed), so none is written any more.
    model, opt = trained_dense(0)
    path = tmp_path / "ckpt.h5"
    io.save_weights(model, path, optimizer=opt)
    variable_length = []

    def visit(name, obj):
        for key in obj.attrs:
            if h5py.check_string_dtype(obj.attrs.get_id(key).dtype) is not None and \
                    h5py.check_string_dtype(obj.attrs.get_id(key).dtype).length is None:
                variable_length.append(f"{name}@{key}")
    with h5py.File(path, "r") as f:
        f.visititems(visit)
    assert variable_length == []
    # a file from before (kind attributes as variable-length str) loads as it did
    with h5py.File(path, "r+") as f:
        state = f[io.OPTIMIZER_GROUP]
        state.attrs["kind"] = "dict"
        for key in state:
            state[key].attrs["kind"] = state[key].attrs["kind"].decode()
    target, target_opt = trained_dense(1)
    io.load_weights(target, path, optimizer=target_opt)
    assert_same_snapshot(snapshot(target, target_opt), snapshot(model, opt), "old layout")
