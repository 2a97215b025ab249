"""Pooling, upsampling and bilinear resize against direct NumPy loops written from TensorFlow's
definitions, plus gradient checks (pooling's on the reference ops; tests/test_accel.py holds the
fast pooling against them)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import micrograd_gen as mg
from micrograd_gen import ops
from micrograd_gen.ops.resize import interpolation_matrix
from strategies import check_op_gradient


def keras_pads(n, k, s, padding):
    if padding == "valid":
        return 0, (n - k) // s + 1
    out = -(-n // s)
    return max((out - 1) * s + k - n, 0) // 2, out


def reference_pool(x, pool, strides, padding, kind):
    """Windows clipped to the real cells: max never sees padding, mean divides by real cells."""
    N, H, W, C = x.shape
    top, OH = keras_pads(H, pool[0], strides[0], padding)
    left, OW = keras_pads(W, pool[1], strides[1], padding)
    y = np.zeros((N, OH, OW, C))
    for i in range(OH):
        for j in range(OW):
            r0, c0 = i * strides[0] - top, j * strides[1] - left
            window = x[:, max(r0, 0):r0 + pool[0], max(c0, 0):c0 + pool[1]]
            y[:, i, j] = window.max(axis=(1, 2)) if kind == "max" else window.mean(axis=(1, 2))
    return y


def reference_resize(x, out_h, out_w):
    """Half-pixel bilinear, one output pixel at a time (tf.image.resize, antialias=False)."""
    N, H, W, C = x.shape

    def source(i, n_in, n_out):
        s = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
        low = int(np.floor(s))
        return low, min(low + 1, n_in - 1), s - low

    y = np.zeros((N, out_h, out_w, C))
    for i in range(out_h):
        r0, r1, t = source(i, H, out_h)
        for j in range(out_w):
            c0, c1, u = source(j, W, out_w)
            y[:, i, j] = ((1 - t) * ((1 - u) * x[:, r0, c0] + u * x[:, r0, c1])
                          + t * ((1 - u) * x[:, r1, c0] + u * x[:, r1, c1]))
    return y


pool_cases = st.fixed_dictionaries({
    "n": st.integers(1, 2), "h": st.integers(1, 7), "w": st.integers(1, 7), "c": st.integers(1, 3),
    "pool": st.tuples(st.integers(1, 3), st.integers(1, 3)),
    "strides": st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))),
    "padding": st.sampled_from(["same", "valid"]),
})


def fits(case):
    return case["padding"] == "same" or (case["pool"][0] <= case["h"] and
                                         case["pool"][1] <= case["w"])


def distinct_values(shape, seed):
    """A shuffled grid: no ties, so the max (and its gradient) is well defined."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.prod(shape)).reshape(shape) / np.prod(shape) * 4.0 - 2.0


@given(pool_cases.filter(fits), st.sampled_from(["max", "avg"]))
def test_pool_forward(case, kind):
    shape = (case["n"], case["h"], case["w"], case["c"])
    x = distinct_values(shape, 0)
    strides = case["strides"] or case["pool"]
    fn = ops.max_pool2d if kind == "max" else ops.avg_pool2d
    y = fn(mg.Tensor(x, dtype=np.float64), case["pool"], strides=case["strides"],
           padding=case["padding"])
    np.testing.assert_allclose(y.numpy(), reference_pool(x, case["pool"], strides,
                                                         case["padding"], kind),
                               rtol=1e-10, atol=1e-12)


@given(pool_cases.filter(fits), st.sampled_from(["max", "avg"]))
def test_pool_forward_float32(case, kind):
    shape = (case["n"], case["h"], case["w"], case["c"])
    x = distinct_values(shape, 1).astype(np.float32)
    strides = case["strides"] or case["pool"]
    fn = ops.max_pool2d if kind == "max" else ops.avg_pool2d
    y = fn(mg.Tensor(x), case["pool"], strides=case["strides"], padding=case["padding"])
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), reference_pool(x.astype(np.float64), case["pool"],
                                                         strides, case["padding"], kind),
                               rtol=1e-5, atol=1e-6)


@settings(max_examples=15)
@given(pool_cases.filter(fits), st.sampled_from(["max", "avg"]))
def test_pool_gradient(case, kind):
    shape = (case["n"], case["h"], case["w"], case["c"])
    x = distinct_values(shape, 2)
    fn = ops.max_pool2d if kind == "max" else ops.avg_pool2d
    with mg.fast_paths(False):
        check_op_gradient(lambda x: fn(x, case["pool"], strides=case["strides"],
                                       padding=case["padding"]), x)


def test_max_pool_never_picks_padding():
    x = -np.ones((1, 3, 3, 1)) * np.arange(1, 10).reshape(1, 3, 3, 1)   # all negative
    y = ops.max_pool2d(mg.Tensor(x, dtype=np.float64), 2, strides=2, padding="same").numpy()
    # windows (0, 1), (2) per axis: the bottom-right window holds only x[2, 2] = -9
    np.testing.assert_array_equal(y[0, :, :, 0], [[-1, -3], [-7, -9]])


def test_avg_pool_divides_by_real_cells():
    x = np.ones((1, 3, 3, 1))
    y = ops.avg_pool2d(mg.Tensor(x, dtype=np.float64), 3, strides=1, padding="same").numpy()
    np.testing.assert_array_equal(y, np.ones((1, 3, 3, 1)))   # not 4/9 at the corners


def test_max_pool_ties_send_the_gradient_to_the_first_cell():
    x = mg.Tensor(np.zeros((1, 2, 2, 1)), requires_grad=True, dtype=np.float64)
    ops.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad[0, :, :, 0], [[1, 0], [0, 0]])


@pytest.mark.parametrize("pool, strides, padding", [(3, 2, "valid"), (3, 2, "same"),
                                                     (2, 3, "valid"), ((3, 2), (1, 2), "same")])
def test_max_pool_ties_with_strides_follow_the_first_cell_rule(pool, strides, padding):
    """Inputs full of ties (a ReLU's zeros, a few levels): every window sends its gradient to its
    first (row-major) maximal cell, through the stride-phase split of the backward."""
    rng = np.random.default_rng(7)
    x = np.maximum(rng.integers(-2, 3, (2, 9, 8, 3)), 0).astype(np.float64)
    t = mg.Tensor(x, requires_grad=True, dtype=np.float64)
    y = ops.max_pool2d(t, pool, strides=strides, padding=padding)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    (kh, kw), (sh, sw) = [(v, v) if isinstance(v, int) else v for v in (pool, strides)]
    top = left = 0
    if padding == "same":
        top = max((y.shape[1] - 1) * sh + kh - 9, 0) // 2
        left = max((y.shape[2] - 1) * sw + kw - 8, 0) // 2
    expected = np.zeros_like(x)
    for n in range(2):
        for i in range(y.shape[1]):
            for j in range(y.shape[2]):
                for c in range(3):
                    r0, c0 = i * sh - top, j * sw - left
                    cells = [(r, q) for r in range(max(r0, 0), min(r0 + kh, 9))
                             for q in range(max(c0, 0), min(c0 + kw, 8))]
                    best = max(x[n, r, q, c] for r, q in cells)
                    r, q = next(cell for cell in cells if x[n, cell[0], cell[1], c] == best)
                    expected[n, r, q, c] += g[n, i, j, c]
    np.testing.assert_allclose(t.grad, expected, rtol=1e-12, atol=1e-12)


def test_vgg_pool_shapes():
    x = mg.Tensor(np.zeros((1, 25, 37, 2)))
    assert ops.max_pool2d(x, 2).shape == (1, 12, 18, 2)
    assert ops.max_pool2d(x, 2, padding="same").shape == (1, 13, 19, 2)
    assert ops.avg_pool2d(x, 3, strides=1, padding="same").shape == (1, 25, 37, 2)


def test_global_avg_pool():
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 5))
    t = mg.Tensor(x, dtype=np.float64)
    np.testing.assert_allclose(ops.global_avg_pool2d(t).numpy(), x.mean(axis=(1, 2)))
    assert ops.global_avg_pool2d(t, keepdims=True).shape == (2, 1, 1, 5)
    check_op_gradient(ops.global_avg_pool2d, x)


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4))
def test_upsample_nearest(sh, sw, h, w):
    x = np.random.default_rng(4).standard_normal((2, h, w, 3))
    y = ops.upsample2d(mg.Tensor(x, dtype=np.float64), size=(sh, sw)).numpy()
    expected = np.zeros((2, h * sh, w * sw, 3))
    for i in range(h * sh):
        for j in range(w * sw):
            expected[:, i, j] = x[:, i // sh, j // sw]
    np.testing.assert_array_equal(y, expected)
    check_op_gradient(lambda t: ops.upsample2d(t, size=(sh, sw)), x)


# ---- bilinear resize ------------------------------------------------------------------------

@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 9), st.integers(1, 9))
def test_resize_bilinear_forward(h, w, out_h, out_w):
    x = np.random.default_rng(5).standard_normal((2, h, w, 3))
    y = ops.resize_bilinear(mg.Tensor(x, dtype=np.float64), (out_h, out_w))
    np.testing.assert_allclose(y.numpy(), reference_resize(x, out_h, out_w), rtol=1e-10,
                               atol=1e-12)
    y32 = ops.resize_bilinear(mg.Tensor(x), (out_h, out_w))
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32.numpy(), reference_resize(x.astype(np.float32).astype(
        np.float64), out_h, out_w), rtol=1e-5, atol=1e-6)


@settings(max_examples=15)
@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 7), st.integers(1, 7))
def test_resize_bilinear_gradient(h, w, out_h, out_w):
    x = np.random.default_rng(6).standard_normal((1, h, w, 2))
    check_op_gradient(lambda t: ops.resize_bilinear(t, (out_h, out_w)), x)


def test_resize_half_pixel_known_values():
    # 2 -> 4 along one axis: src = (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 -> clamp.
    np.testing.assert_allclose(interpolation_matrix(4, 2),
                               [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    # same size is the identity; shrinking by 2 averages neighbours (no antialiasing beyond that)
    np.testing.assert_allclose(interpolation_matrix(5, 5), np.eye(5))
    np.testing.assert_allclose(interpolation_matrix(2, 4), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])


def test_deepdream_octave_round_trip_shapes():
    x = mg.Tensor(np.zeros((1, 400, 600, 3)))
    shapes = [(int(400 / 1.4 ** i), int(600 / 1.4 ** i)) for i in range(3)][::-1]
    assert shapes == [(204, 306), (285, 428), (400, 600)]
    for s in shapes:
        assert ops.resize_bilinear(x, s).shape == (1,) + s + (3,)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_errors(fast):
    with mg.fast_paths(fast):
        check_errors()


def check_errors():
    with pytest.raises(ValueError, match="pool"):
        ops.max_pool2d(mg.Tensor(np.zeros((1, 2, 2, 1))), 3)
    with pytest.raises(ValueError, match="NHWC"):
        ops.avg_pool2d(mg.Tensor(np.zeros((2, 2, 1))), 2)
    with pytest.raises(ValueError, match="max_pool2d: padding"):
        ops.max_pool2d(mg.Tensor(np.zeros((1, 4, 4, 1))), 2, padding="full")
    with pytest.raises(ValueError, match="avg_pool2d: strides"):
        ops.avg_pool2d(mg.Tensor(np.zeros((1, 4, 4, 1))), 2, strides=(1, 0))
    for pool in (ops.max_pool2d, ops.avg_pool2d):
        with pytest.raises(TypeError, match=rf"^{pool.__name__}: x has dtype int64"):
            pool(mg.Tensor(np.zeros((1, 4, 4, 1), np.int64)), 2, padding="same")
