"""Pooling's fast path in cache-sized bands of rows (accel/pool.py): every band size gives the
reference's numbers, and average pooling's stride-1 backward (a window sum of the padded share)
is the reference's adjoint for every pool size and padding. Pooling at the default thresholds,
on drawn shapes, is in test_accel.py."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import micrograd_gen as mg
from micrograd_gen import ops
from micrograd_gen.accel import pool as fast_pool
from micrograd_gen.ops.pool import _PoolGeometry


def both_paths(fn, x, g_seed):
    results = []
    for fast in (True, False):
        with mg.fast_paths(fast):
            t = mg.Tensor(x, requires_grad=True, dtype=x.dtype)
            y = fn(t)
            y.backward(np.random.default_rng(g_seed).standard_normal(y.shape).astype(x.dtype))
            results.append((y.numpy(), t.grad))
    return results


def in_bands(fn, h, w, ties, seed, dtype, band_bytes):
    """both_paths on a drawn (2, h, w, 3) input (small integers, many tied, when `ties`), every
    input cut into bands over the threads: two per thread at 512 KB a band, at 1 byte as many as
    the windows' overlap allows."""
    rng = np.random.default_rng(seed)
    shape = (2, h, w, 3)
    x = (np.maximum(rng.integers(-2, 3, shape), 0) if ties
         else rng.standard_normal(shape)).astype(dtype)
    saved = fast_pool._BAND_BYTES, fast_pool._PARALLEL_BYTES
    fast_pool._BAND_BYTES, fast_pool._PARALLEL_BYTES = band_bytes, 0
    try:
        return both_paths(fn, x, seed)
    finally:
        fast_pool._BAND_BYTES, fast_pool._PARALLEL_BYTES = saved


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 24), w=st.integers(1, 9), pool=st.integers(1, 4), stride=st.integers(1, 3),
       padding=st.sampled_from(["same", "valid"]), kind=st.sampled_from(["max", "avg"]),
       band_bytes=st.sampled_from([1, 64, 1 << 19]), ties=st.booleans(), seed=st.integers(0, 99))
def test_every_band_size_gives_the_reference(h, w, pool, stride, padding, kind, band_bytes,
                                             ties, seed):
    if padding == "valid" and pool > min(h, w):
        return
    fn = ops.max_pool2d if kind == "max" else ops.avg_pool2d
    (y, dx), (want_y, want_dx) = in_bands(
        lambda t: fn(t, pool, strides=stride, padding=padding), h, w, ties, seed, np.float64,
        band_bytes)
    if kind == "max":          # max pooling picks the same cells: exact
        np.testing.assert_array_equal(y, want_y)
        if stride >= pool:     # one window per cell (overlapping windows may add in another order)
            np.testing.assert_array_equal(dx, want_dx)
    np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 13), w=st.integers(1, 13), pool=st.integers(1, 3),
       padding=st.sampled_from(["same", "valid"]), band_bytes=st.sampled_from([1, 64, 1 << 19]),
       ties=st.booleans(), seed=st.integers(0, 99))
def test_windows_that_tile_the_input_give_the_reference(h, w, pool, padding, band_bytes, ties,
                                                        seed):
    """Stride = pool (VGG's 2x2 / 2): max pooling's backward reads the input as whole windows
    (_tiled_max_pool2d_backward); rows and columns no window reaches get zeros, ties go to the
    first maximal cell."""
    if padding == "valid" and pool > min(h, w):
        return
    (y, dx), (want_y, want_dx) = in_bands(
        lambda t: ops.max_pool2d(t, pool, strides=pool, padding=padding), h, w, ties, seed,
        np.float32, band_bytes)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(dx, want_dx)


@pytest.mark.parametrize("pool, stride", [(3, 1), (3, 2), (2, 1), (4, 1), (1, 1)])
def test_bands_of_one_wave_never_share_rows(pool, stride):
    """Max pooling's backward runs every other band at once; a band writes pool - stride rows
    past its own, so bands are at least that long."""
    x = np.zeros((1, 40, 5, 2))
    geom = _PoolGeometry(x, pool, stride, "same", "max_pool2d")
    saved = fast_pool._BAND_BYTES
    fast_pool._BAND_BYTES = 1
    try:
        bands = fast_pool._bands(geom, 1 << 30, np)
    finally:
        fast_pool._BAND_BYTES = saved
    assert bands[0][0] == 0 and bands[-1][1] == geom.OH and len(bands) > 1
    assert all(a[1] == b[0] for a, b in zip(bands, bands[1:]))
    for wave in (bands[0::2], bands[1::2]):
        written = [(i0 * stride, (i1 - 1) * stride + pool) for i0, i1 in wave]
        assert all(a[1] <= b[0] for a, b in zip(written, written[1:]))


@pytest.mark.parametrize("pool, stride, routed", [
    (3, 2, True), (3, 1, True), ((1, 3), (1, 2), True), (2, 2, False), (2, 3, False)])
def test_overlapping_windows_keep_their_maxima_for_backward(pool, stride, routed):
    """Where windows overlap, the forward keeps each window's first maximal cell (as an index
    into the padded input) when asked, and backward scatters g there: the reference's numbers to
    the last bit, ties (a ReLU's zeros) and cells shared by several windows included."""
    rng = np.random.default_rng(3)
    x = np.maximum(rng.integers(-2, 3, (2, 11, 13, 4)), 0).astype(np.float32)
    geom = _PoolGeometry(x, pool, stride, "same", "max_pool2d")
    y, route = fast_pool.max_pool2d_forward(geom.pad(x, -np.inf), geom, keep_route=True)
    assert (route is not None) == routed
    assert fast_pool.max_pool2d_forward(geom.pad(x, -np.inf), geom)[1] is None   # not asked
    if routed:
        assert route.dtype == np.int32 and route.shape == y.shape
    (y, dx), (want_y, want_dx) = both_paths(
        lambda t: ops.max_pool2d(t, pool, strides=stride, padding="same"), x, 4)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(dx, want_dx)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(3, 25), w=st.integers(3, 14), padding=st.sampled_from(["same", "valid"]),
       band_bytes=st.sampled_from([1, 64, 1 << 19]), ties=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 99))
def test_a_3x3_stride_2_pool_routes_g_as_the_reference(h, w, padding, band_bytes, ties, dtype,
                                                       seed):
    """InceptionV3's 3x3 / 2 max pools: the forward keeps each window's cell band by band and
    backward scatters g there: the reference's dX to the last bit, for odd and even sizes (where
    no window reaches the last row or column), ties and cells shared by two or four windows."""
    (y, dx), (want_y, want_dx) = in_bands(
        lambda t: ops.max_pool2d(t, 3, strides=2, padding=padding), h, w, ties, seed, dtype,
        band_bytes)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(dx, want_dx)


def test_a_nan_in_g_spreads_over_its_window_on_both_paths():
    """The reference multiplies g by each tap's mask, so a NaN in g reaches every cell of its
    window (NaN * 0 is NaN); the fast path walks the taps then too, as a scatter into each
    window's kept cell would not."""
    x = np.random.default_rng(8).standard_normal((1, 9, 11, 2)).astype(np.float32)
    results = []
    for fast in (True, False):
        with mg.fast_paths(fast):
            t = mg.Tensor(x, requires_grad=True)
            y = ops.max_pool2d(t, 3, strides=2)
            g = np.ones(y.shape, np.float32)
            g[0, 1, 2, 1] = np.nan
            y.backward(g)
            results.append(t.grad)
    np.testing.assert_array_equal(results[0], results[1])
    assert np.isnan(results[0][0, 2:5, 4:7, 1]).all()


def test_a_window_holding_nan_gets_no_gradient_on_either_path():
    """np.maximum carries a NaN into the window's max, which then equals no cell: the reference
    gives that window's cells nothing, and so does the fast path (it walks the taps then)."""
    x = np.random.default_rng(6).standard_normal((1, 9, 9, 2)).astype(np.float32)
    x[0, 4, 4, 1] = np.nan
    (y, dx), (want_y, want_dx) = both_paths(lambda t: ops.max_pool2d(t, 3, strides=2), x, 7)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(dx, want_dx)
    assert np.isfinite(dx).all() and dx[0, 3:6, 3:6, 1].sum() == 0
