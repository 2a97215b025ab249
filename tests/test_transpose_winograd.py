"""accel/transpose_winograd.py: a 4x4 stride-2 'same' transposed convolution's backward as four
2x2 correlations on g's stride phases through Winograd F(4x4, 2x2): its transform matrices, its
dX, dK and dBias against the reference on drawn shapes (float64 to 1e-12, float32 to Winograd's
5e-5 of the largest value), through ops.conv2d_transpose (a fused ReLU, one gradient or both),
which layers it takes, how it cuts its bands, and dK the same to the bit from run to run."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import micrograd_gen as mg
from micrograd_gen import ops
from micrograd_gen.accel import transpose_winograd as tw
from micrograd_gen.ops.conv import ConvGeometry

TOLERANCE = {np.float32: 5e-5, np.float64: 1e-12}


def relative_error(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)


def test_the_transforms_compute_a_two_tap_correlation():
    rng = np.random.default_rng(0)
    for _ in range(20):
        d, g = rng.standard_normal(5), rng.standard_normal(2)
        np.testing.assert_allclose(tw._AT @ ((tw._G @ g) * (tw._BT @ d)),
                                   [d[i:i + 2] @ g for i in range(4)], rtol=1e-12, atol=1e-12)


def geometry(N, OH, OW, C):
    """The conv2d whose input gradient a 4x4 / 2 'same' transposed convolution to (2*OH, 2*OW)
    is (ConvGeometry.of with that padding)."""
    return ConvGeometry.of((N, 2 * OH, 2 * OW, C), (4, 4, C, 1), (2, 2), "same")


def reference(x, kernel, g, relu=False):
    """conv2d_transpose's (dX, dK, dBias) on the reference path."""
    dtype = x.dtype
    with mg.fast_paths(False):
        xt, kt, bt = (mg.Tensor(a, requires_grad=True, dtype=dtype)
                      for a in (x, kernel, np.zeros(kernel.shape[2], dtype)))
        ops.conv2d_transpose(xt, kt, bt, strides=2, padding="same", relu=relu).backward(g)
    return xt.grad, kt.grad, bt.grad


@settings(max_examples=25, deadline=None)
@given(N=st.integers(1, 3), OH=st.integers(1, 9), OW=st.integers(1, 9),
       C=st.sampled_from([1, 3, 8]), F=st.sampled_from([1, 2, 5]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2 ** 16))
def test_gradients_are_the_reference(N, OH, OW, C, F, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, OH, OW, F)).astype(dtype)
    kernel = rng.standard_normal((4, 4, C, F)).astype(dtype)         # (kh, kw, out, in)
    g = rng.standard_normal((N, 2 * OH, 2 * OW, C)).astype(dtype)
    dx, dk, db = tw.backward(g, x, kernel, geometry(N, OH, OW, C), True, True, True)
    want = reference(x, kernel, g)
    for got, expected in zip((dx, dk, db), want):
        assert got.shape == expected.shape and got.dtype == dtype
    assert relative_error(dx, want[0]) < TOLERANCE[dtype]
    assert relative_error(dk, want[1]) < TOLERANCE[dtype]
    # dBias is a plain sum of g over every pixel: its rounding grows with the terms, not with the
    # result, which cancels (324 normals summed to 0.0243: both paths 1e-6 off the exact sum)
    scale = np.abs(g).reshape(-1, C).sum(axis=0).max()
    assert np.abs(db - want[2]).max() / scale < TOLERANCE[dtype]


@pytest.mark.parametrize("need_dx, need_dk, relu", [(True, True, False), (True, False, False),
                                                    (False, True, False), (True, True, True)])
def test_the_op_takes_this_route_where_it_fits(monkeypatch, need_dx, need_dk, relu):
    """Through ops.conv2d_transpose (one gradient or both, a fused ReLU's mask on g), with the
    channel floor lowered so that a small layer takes the route."""
    monkeypatch.setattr(tw, "_MIN_CHANNELS", 1)
    taken = []
    original = tw.backward
    monkeypatch.setattr(tw, "backward", lambda *a: taken.append(a[4:6]) or original(*a))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 5, 3)).astype(np.float32)
    kernel = rng.standard_normal((4, 4, 4, 3)).astype(np.float32)
    g = rng.standard_normal((2, 12, 10, 4)).astype(np.float32)
    xt = mg.Tensor(x, requires_grad=need_dx)
    kt = mg.Tensor(kernel, requires_grad=need_dk)
    with mg.fast_paths(True):                  # also where CI runs with MICROGRAD_GEN_FAST=0
        ops.conv2d_transpose(xt, kt, strides=2, padding="same", relu=relu).backward(g)
    assert taken == [(need_dx, need_dk)]
    want_dx, want_dk, _ = reference(x, kernel, g, relu)
    if need_dx:
        assert relative_error(xt.grad, want_dx) < TOLERANCE[np.float32]
    if need_dk:
        assert relative_error(kt.grad, want_dk) < TOLERANCE[np.float32]


def test_which_layers_it_takes():
    g, x, kernel = (np.zeros(s, np.float32) for s in ((1, 8, 8, 512), (1, 4, 4, 2), (4, 4, 512, 2)))
    assert tw.fits(geometry(1, 4, 4, 512), g, x, kernel)
    assert tw.fits(geometry(1, 4, 4, 512), g, None, kernel)                   # dX alone
    assert not tw.fits(geometry(1, 4, 4, 128), g[..., :128], x, kernel[:, :, :128])   # narrow
    assert not tw.fits(geometry(1, 4, 4, 512), g.astype(np.float64), x, kernel)       # mixed
    three = ConvGeometry.of((1, 8, 8, 512), (3, 3, 512, 2), (2, 2), "same")
    assert not tw.fits(three, g, x, kernel[:3, :3])                          # 3x3 kernel
    valid = ConvGeometry.of((1, 10, 10, 512), (4, 4, 512, 2), (2, 2), "valid")
    assert not tw.fits(valid, np.zeros((1, 10, 10, 512), np.float32), x, kernel)


@pytest.mark.parametrize("N, rows, cols", [(32, 8, 8), (1, 40, 40), (3, 2, 3), (1, 1, 1),
                                           (5, 70, 2)])
def test_bands_cover_every_tile_once(N, rows, cols):
    covered = np.zeros((N, rows), int)
    for n0, n1, r0, r1 in tw._bands(N, rows, cols):
        assert n1 > n0 and r1 > r0
        covered[n0:n1, r0:r1] += 1
    assert (covered == 1).all()


def test_kernel_gradient_is_the_same_from_run_to_run():
    """Each thread sums the same bands every run (for_chunks' fixed slots)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((9, 4, 4, 3)).astype(np.float32)
    kernel = rng.standard_normal((4, 4, 2, 3)).astype(np.float32)
    g = rng.standard_normal((9, 8, 8, 2)).astype(np.float32)
    geom = geometry(9, 4, 4, 2)
    saved = tw._BAND_TILES
    tw._BAND_TILES = 4                                   # many bands over the threads
    try:
        first, again = (tw.backward(g, x, kernel, geom, False, True)[1] for _ in range(2))
    finally:
        tw._BAND_TILES = saved
    assert first.tobytes() == again.tobytes()


@settings(max_examples=20, deadline=None)
@given(N=st.integers(1, 3), OH=st.integers(1, 9), OW=st.integers(1, 9),
       C=st.sampled_from([1, 4, 7]), F=st.sampled_from([1, 3]), bias=st.booleans(),
       relu=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2 ** 16))
def test_forward_is_the_reference(N, OH, OW, C, F, bias, relu, dtype, seed):
    """Each output phase (p, q) as a 2x2 correlation of x through F(4x4, 2x2), bias and ReLU
    applied before its pixels are written."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, OH, OW, F)).astype(dtype)
    kernel = rng.standard_normal((4, 4, C, F)).astype(dtype)
    b = rng.standard_normal(C).astype(dtype) if bias else None
    y = tw.forward(x, kernel, geometry(N, OH, OW, C), b, relu)
    with mg.fast_paths(False), mg.no_grad():
        want = ops.conv2d_transpose(mg.Tensor(x, dtype=dtype), mg.Tensor(kernel, dtype=dtype),
                                    None if b is None else mg.Tensor(b, dtype=dtype),
                                    strides=2, padding="same", relu=relu).numpy()
    assert y.shape == want.shape and y.dtype == dtype
    assert relative_error(y, want) < TOLERANCE[dtype]


def test_the_forward_takes_wide_layers_only(monkeypatch):
    taken = []
    original = tw.forward
    monkeypatch.setattr(tw, "forward", lambda *a: taken.append(a[0].shape) or original(*a))
    x = np.random.default_rng(3).standard_normal((1, 4, 4, 2)).astype(np.float32)
    for channels in (8, 512):
        kernel = np.full((4, 4, channels, 2), 0.1, np.float32)
        with mg.fast_paths(True), mg.no_grad():
            ops.conv2d_transpose(mg.Tensor(x), mg.Tensor(kernel), strides=2, padding="same")
    assert taken == [(1, 4, 4, 2)]                       # the 512-channel layer alone
    assert tw.forward_fits(geometry(1, 4, 4, 512), x, np.zeros((4, 4, 512, 2), np.float32))
    assert not tw.forward_fits(geometry(1, 4, 4, 256), x, np.zeros((4, 4, 256, 2), np.float32))
