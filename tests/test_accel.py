"""Every fast path in micrograd_gen/accel/ against the reference op it replaces, on drawn inputs:
conv2d (every route: shifted, 1x1, thin input, thin output, Winograd; strides, padding,
dilation, bias, fused ReLU, float32 / float64), conv2d_transpose, pooling and matmul, forward and
every gradient. Then the
rules around the switch: MICROGRAD_GEN_FAST=0 never imports accel, importing the package starts
no thread and loads no library, and nothing outside accel/ touches ctypes, threads or malloc."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import micrograd_gen as mg
from micrograd_gen import ops
from micrograd_gen.accel import blas
from micrograd_gen.accel import conv as fast_conv
from micrograd_gen.accel import conv_columns
from micrograd_gen.accel import conv_thin
from micrograd_gen.accel import linalg as fast_linalg
from micrograd_gen.accel import losses as fast_losses
from micrograd_gen.accel import workers
from micrograd_gen.ops.conv import ConvGeometry

TOL = {np.float32: dict(rtol=2e-4, atol=2e-4), np.float64: dict(rtol=1e-10, atol=1e-10)}


def run_both(fn, arrays, g_seed=0, dtype=np.float64):
    """fn(*tensors) and the gradients of <fn, g> for a random g, on the fast path and on the
    reference: ((y, grads...) fast, (y, grads...) reference)."""
    results = []
    for fast in (True, False):
        with mg.fast_paths(fast):
            tensors = [None if a is None else mg.Tensor(a, requires_grad=True, dtype=dtype)
                       for a in arrays]
            y = fn(*tensors)
            g = np.random.default_rng(g_seed).standard_normal(y.shape).astype(dtype)
            y.backward(g)
            results.append([y.numpy()] + [None if t is None else t.grad for t in tensors])
    return results


def assert_same(fast, reference, dtype, names):
    for got, want, name in zip(fast, reference, names):
        if want is None:
            assert got is None, name
            continue
        scale = max(float(np.abs(want).max(initial=0.0)), 1.0)
        np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"],
                                   atol=TOL[dtype]["atol"] * scale, err_msg=name)


# ---- conv2d ----------------------------------------------------------------------------------

conv_cases = st.fixed_dictionaries({
    "n": st.integers(1, 2), "h": st.integers(1, 9), "w": st.integers(1, 9),
    "c": st.sampled_from([1, 3, 15, 16, 17]), "f": st.sampled_from([1, 3, 15, 16, 17]),
    "kh": st.integers(1, 4), "kw": st.integers(1, 4),
    "strides": st.tuples(st.integers(1, 3), st.integers(1, 3)),
    "dilation": st.tuples(st.integers(1, 2), st.integers(1, 2)),
    "padding": st.sampled_from(["same", "valid"]),
    "bias": st.booleans(), "relu": st.booleans(),
    "dtype": st.sampled_from([np.float32, np.float64]),
    "seed": st.integers(0, 2 ** 16),
})


def conv_arrays(case):
    k_eff = [(k - 1) * d + 1 for k, d in zip((case["kh"], case["kw"]), case["dilation"])]
    if case["padding"] == "valid" and (k_eff[0] > case["h"] or k_eff[1] > case["w"]):
        return None
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    x = rng.standard_normal((case["n"], case["h"], case["w"], case["c"])).astype(dtype)
    kernel = rng.standard_normal((case["kh"], case["kw"], case["c"], case["f"])).astype(dtype)
    bias = rng.standard_normal(case["f"]).astype(dtype) if case["bias"] else None
    return x, kernel, bias


@given(conv_cases)
def test_conv2d_fast_path_is_the_reference(case):
    arrays = conv_arrays(case)
    if arrays is None:
        return
    args = dict(strides=case["strides"], padding=case["padding"],
                dilation_rate=case["dilation"], relu=case["relu"])
    fast, reference = run_both(lambda x, k, b: ops.conv2d(x, k, b, **args), arrays,
                               case["seed"], case["dtype"])
    assert fast[0].dtype == case["dtype"]
    assert_same(fast, reference, case["dtype"], ("y", "dx", "dkernel", "dbias"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("c, f, kernel_size, strides, dilation, route", [
    (17, 18, (3, 2), (1, 1), (1, 1), "shifted"),
    (17, 18, (3, 3), (2, 2), (1, 1), "shifted"),       # strided, columns too large (below)
    (16, 20, (3, 3), (1, 2), (2, 1), "shifted"),
    (17, 18, (3, 3), (2, 2), (1, 1), "columns"),       # strided, the kernel trains
    (16, 20, (4, 3), (1, 3), (2, 1), "columns"),
    (24, 16, (1, 1), (1, 1), (1, 1), "shifted"),       # 1x1: x and dY read in place
    (5, 2, (1, 1), (2, 2), (1, 1), "shifted"),
    (3, 16, (3, 3), (1, 1), (1, 1), "thin_input"),     # an RGB image in
    (3, 32, (4, 4), (2, 2), (1, 1), "thin_input"),
    (20, 3, (2, 3), (1, 1), (1, 1), "thin_output"),    # an RGB image out
    (32, 3, (3, 3), (2, 1), (1, 2), "thin_output"),
])
def test_every_route_is_the_reference(c, f, kernel_size, strides, dilation, route, relu, dtype,
                                     monkeypatch):
    rng = np.random.default_rng(c * f)
    x = rng.standard_normal((2, 11, 9, c)).astype(dtype)
    kernel = rng.standard_normal(kernel_size + (c, f)).astype(dtype)
    bias = rng.standard_normal(f).astype(dtype)
    geom = ConvGeometry.of(x.shape, kernel.shape, strides, "same", dilation)
    assert fast_conv._route(fast_conv.shifted_geometry(geom), f) == (
        "shifted" if route == "columns" else route)
    if route == "shifted":      # strided ones too: the route of columns past _MAX_COLUMN_BYTES
        monkeypatch.setattr(conv_columns, "_MAX_COLUMN_BYTES", 0)
    taken = []
    for name in ("forward", "kernel_gradient", "input_gradient"):
        original = getattr(conv_columns, name)
        monkeypatch.setattr(conv_columns, name, lambda *a, _f=original, _n=name:
                            taken.append(_n) or _f(*a))
    args = dict(strides=strides, padding="same", dilation_rate=dilation, relu=relu)
    fast, reference = run_both(lambda x, k, b: ops.conv2d(x, k, b, **args), (x, kernel, bias),
                               dtype=dtype)
    assert taken == (["forward", "kernel_gradient", "input_gradient"] if route == "columns"
                     else [])
    if relu:
        assert (fast[0] == 0).any() and (fast[0] > 0).any()
    assert_same(fast, reference, dtype, ("y", "dx", "dkernel", "dbias"))


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("images, chunk_bytes", [(2, None), (9, 2048), (2, 256)])
def test_first_layer_masks_and_sums_g_in_its_kernel_gradients_chunks(relu, images, chunk_bytes,
                                                                     monkeypatch):
    """A network's first layer (thin input, no gradient for x, the VAE encoder's): the fused
    ReLU's mask and the bias's sums are taken in dK's chunks (whole images, several, bands of
    rows); dK and dBias are the reference's."""
    if chunk_bytes is not None:
        monkeypatch.setattr(conv_thin, "_CHUNK_BYTES", chunk_bytes)
    calls = []
    original = conv_thin.thin_input_backward
    monkeypatch.setattr(conv_thin, "thin_input_backward",
                        lambda *a, **k: calls.append(a[4:6]) or original(*a, **k))
    monkeypatch.setitem(fast_conv._ROUTES, "thin_input",
                        (conv_thin.thin_input_forward, conv_thin.thin_input_backward))
    rng = np.random.default_rng(images)
    x = rng.standard_normal((images, 11, 9, 1))
    kernel, bias = rng.standard_normal((3, 3, 1, 8)), rng.standard_normal(8)
    results = []
    for fast in (True, False):
        with mg.fast_paths(fast):
            tk, tb = (mg.Tensor(a, requires_grad=True, dtype=np.float64) for a in (kernel, bias))
            y = ops.conv2d(x, tk, tb, strides=2, padding="same", relu=relu)
            y.backward(np.random.default_rng(1).standard_normal(y.shape))
            results.append((y.numpy(), tk.grad, tb.grad))
    assert calls == [(False, True)]
    if relu:
        assert (results[0][0] == 0).any()
    assert_same(results[0], results[1], np.float64, ("y", "dkernel", "dbias"))


@pytest.mark.parametrize("need", [(True, False), (False, True)])
def test_one_gradient_only(need):
    """Frozen kernels (DeepDream, style transfer) and frozen inputs: only what is asked for."""
    rng = np.random.default_rng(3)
    x, kernel = rng.standard_normal((1, 8, 7, 16)), rng.standard_normal((3, 3, 16, 17))
    grads = []
    for fast in (True, False):
        with mg.fast_paths(fast):
            tx = mg.Tensor(x, requires_grad=need[0], dtype=np.float64)
            tk = mg.Tensor(kernel, requires_grad=need[1], dtype=np.float64)
            ops.conv2d(tx, tk, strides=2, padding="same").backward(np.ones((1, 4, 4, 17)))
            grads.append((tx.grad, tk.grad))
    for got, want in zip(*grads):
        assert (got is None) == (want is None)
        if want is not None:
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("c, f, strides", [(16, 17, (1, 1)), (3, 16, (2, 2)), (16, 3, (1, 1)),
                                           (17, 16, (2, 1))])
def test_many_small_chunks(monkeypatch, c, f, strides):
    """Chunk edges (and thread hand-offs) in the middle of images change nothing."""
    for name in ("_CHUNK_BYTES", "_DK_CHUNK_BYTES", "_PARALLEL_COPY_BYTES"):
        monkeypatch.setattr(fast_conv, name, 256)
    monkeypatch.setattr(conv_thin, "_CHUNK_BYTES", 256)     # conv_columns' forward too
    monkeypatch.setattr(conv_columns, "_CHUNK_BYTES", 256)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 11, 9, c))
    kernel = rng.standard_normal((3, 3, c, f))
    fast, reference = run_both(
        lambda x, k: ops.conv2d(x, k, strides=strides, padding="same"), (x, kernel))
    assert_same(fast, reference, np.float64, ("y", "dx", "dkernel"))


@pytest.mark.parametrize("shape, strides, trains, dtype, fits", [
    ((2, 11, 9, 17), (2, 2), True, np.float32, True),
    ((2, 11, 9, 17), (2, 1), True, np.float64, True),
    ((2, 11, 9, 17), (1, 1), True, np.float32, False),      # stride 1: shifted or Winograd
    ((2, 11, 9, 17), (2, 2), False, np.float32, False),     # a frozen kernel: no dK to speed up
    ((8, 28, 28, 32), (2, 2), True, np.float32, True),      # the VAE's second layer: 7 MB
    ((512, 28, 28, 32), (2, 2), True, np.float32, False),   # 462 MB of columns
])
def test_columns_take_strided_convolutions_whose_kernel_trains(shape, strides, trains, dtype,
                                                               fits):
    kernel = np.zeros((3, 3, shape[3], 64), dtype)
    geom = ConvGeometry.of(shape, kernel.shape, strides, "same", (1, 1))
    x = np.zeros(shape, dtype)
    assert conv_columns.fits(geom, 64, x, kernel, {} if trains else None) == fits


def test_columns_kept_for_the_kernel_gradient_are_let_go():
    """Forward leaves its columns in the layer's `kept`, and backward takes them out: a graph
    kept alive after backward does not hold them."""
    rng = np.random.default_rng(5)
    x = mg.Tensor(rng.standard_normal((2, 8, 8, 16)), requires_grad=True)
    kernel = mg.Tensor(rng.standard_normal((3, 3, 16, 16)), requires_grad=True)
    with mg.fast_paths(True):
        y = ops.conv2d(x, kernel, strides=2, padding="same")
        kept = y._ctx.kept
        assert kept["columns"].shape == (2, 4, 4, 9, 16)
        y.backward(np.ones(y.shape))
    assert kept == {}


one_row_cases = st.fixed_dictionaries({
    "n": st.integers(1, 3), "h": st.integers(1, 6), "w": st.integers(1, 12),
    "c": st.sampled_from([16, 17, 24]), "f": st.sampled_from([16, 19]), "kw": st.integers(2, 7),
    "padding": st.sampled_from(["same", "valid"]), "bias": st.booleans(), "relu": st.booleans(),
    "trains": st.booleans(), "small_chunks": st.booleans(),
    "dtype": st.sampled_from([np.float32, np.float64]), "seed": st.integers(0, 2 ** 16),
})


@settings(max_examples=40, deadline=None)
@given(one_row_cases)
def test_one_row_kernels_take_their_windows_as_one_product(case):
    """A 1 x k kernel at stride 1 on short rows: forward and dX by accel/conv_1d.py (dK, when the
    kernel trains, by the shifted route), every result the reference's; in chunks of a few rows
    or of whole images."""
    from micrograd_gen.accel import conv_1d
    if case["padding"] == "valid" and case["kw"] > case["w"]:
        return
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    x = rng.standard_normal((case["n"], case["h"], case["w"], case["c"])).astype(dtype)
    kernel = rng.standard_normal((1, case["kw"], case["c"], case["f"])).astype(dtype)
    bias = rng.standard_normal(case["f"]).astype(dtype) if case["bias"] else None
    geom = ConvGeometry.of(x.shape, kernel.shape, (1, 1), case["padding"], (1, 1))
    assume(conv_1d.fits(geom, x, kernel))        # rows short for the kernel: most drawn ones
    taken = []
    forward, input_gradient = conv_1d.forward, conv_1d.input_gradient
    chunk_bytes = conv_1d._CHUNK_BYTES
    try:
        conv_1d.forward = lambda *a, **k: taken.append("forward") or forward(*a, **k)
        conv_1d.input_gradient = lambda *a, **k: taken.append("dx") or input_gradient(*a, **k)
        if case["small_chunks"]:
            conv_1d._CHUNK_BYTES = 1
        results = []
        for fast in (True, False):
            with mg.fast_paths(fast):
                tx = mg.Tensor(x, requires_grad=True, dtype=dtype)
                tk = mg.Tensor(kernel, requires_grad=case["trains"], dtype=dtype)
                tb = None if bias is None else mg.Tensor(bias, requires_grad=True, dtype=dtype)
                y = ops.conv2d(tx, tk, tb, padding=case["padding"], relu=case["relu"])
                y.backward(np.random.default_rng(1).standard_normal(y.shape).astype(dtype))
                results.append([y.numpy(), tx.grad, tk.grad, None if tb is None else tb.grad])
    finally:
        conv_1d.forward, conv_1d.input_gradient = forward, input_gradient
        conv_1d._CHUNK_BYTES = chunk_bytes
    assert taken == ["forward", "dx"]
    assert_same(*results, dtype, ("y", "dx", "dkernel", "dbias"))


@pytest.mark.parametrize("x_shape, kernel_shape, strides, dilation, fits", [
    ((1, 11, 17, 160), (1, 7, 160, 160), (1, 1), (1, 1), True),     # DeepDream's first octave
    ((1, 16, 25, 160), (1, 7, 160, 160), (1, 1), (1, 1), True),     # its second
    ((1, 23, 35, 160), (1, 7, 160, 160), (1, 1), (1, 1), False),    # 400x600: rows too long
    ((1, 11, 17, 160), (7, 1, 160, 160), (1, 1), (1, 1), False),    # no padding columns
    ((1, 11, 17, 160), (1, 7, 160, 160), (1, 2), (1, 1), False),    # strided
    ((1, 11, 17, 160), (1, 3, 160, 160), (1, 1), (1, 2), False),    # dilated
    ((1, 11, 17, 160), (3, 3, 160, 160), (1, 1), (1, 1), False),
])
def test_one_row_kernels_on_short_rows_only(x_shape, kernel_shape, strides, dilation, fits):
    from micrograd_gen.accel import conv_1d
    geom = ConvGeometry.of(x_shape, kernel_shape, strides, "same", dilation)
    x, kernel = np.zeros(x_shape, np.float32), np.zeros(kernel_shape, np.float32)
    assert conv_1d.fits(geom, x, kernel) == fits
    assert not conv_1d.fits(geom, x, kernel.astype(np.float64))


def test_a_frozen_one_row_kernel_keeps_its_turned_copy_while_it_stays_equal(
        monkeypatch, conv_on_the_very_kernel):
    """dX's kernel (taps reversed, channels swapped) is made once for a frozen kernel, again when
    the kernel is changed in place, and every time for one that trains."""
    from micrograd_gen.accel import conv_1d, kept
    monkeypatch.setattr(kept, "_kept", type(kept._kept)())
    made = []
    real = conv_1d._turned
    monkeypatch.setattr(conv_1d, "_turned", lambda k: made.append(k.shape) or real(k))
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 5, 9, 16)).astype(np.float32)
    kernel = rng.standard_normal((1, 5, 16, 20)).astype(np.float32)
    g = rng.standard_normal((1, 5, 9, 20)).astype(np.float32)

    def dx(fast, trains=False):
        return conv_on_the_very_kernel(x, kernel, g, fast, trains)[1]

    for _ in range(2):
        np.testing.assert_allclose(dx(True), dx(False), rtol=1e-5, atol=1e-5)
    assert made == [(1, 5, 16, 20)]
    kernel[0, 2, 3, 4] += 1                           # changed in place
    np.testing.assert_allclose(dx(True), dx(False), rtol=1e-5, atol=1e-5)
    assert len(made) == 2
    dx(True, trains=True)
    dx(True, trains=True)
    assert len(made) == 4


winograd_cases = st.fixed_dictionaries({
    "n": st.integers(1, 2), "h": st.integers(1, 13), "w": st.integers(1, 13),
    "c": st.integers(1, 9), "f": st.integers(1, 9), "padding": st.sampled_from(["same", "valid"]),
    "bias": st.booleans(), "relu": st.booleans(),
    "dtype": st.sampled_from([np.float32, np.float64]), "seed": st.integers(0, 2 ** 16),
})


@settings(max_examples=40, deadline=None)
@given(winograd_cases)
def test_winograd_route_is_the_reference(case):
    """With its thresholds at 1, every 3x3 stride-1 conv2d goes through Winograd (forward, dX
    with the fused ReLU's mask) and the shifted route (dK, dBias)."""
    case.update(kh=3, kw=3, strides=(1, 1), dilation=(1, 1))
    arrays = conv_arrays(case)
    if arrays is None:
        return
    args = dict(padding=case["padding"], relu=case["relu"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fast_conv, "_WINOGRAD_MIN_CHANNELS", 1)
        patch.setattr(fast_conv, "_WINOGRAD_MIN_TILES", 1)
        patch.setattr(fast_conv, "_WINOGRAD_MIN_WORK", 1)
        patch.setattr(fast_conv, "_WINOGRAD_MIN_WORK_FROZEN", 1)
        patch.setattr(fast_conv, "_WINOGRAD_ALONE_MIN_WORK_FROZEN", 1)
        patch.setattr(fast_conv, "_WINOGRAD_ALONE_MIN_TILES", 1)
        fast, reference = run_both(lambda x, k, b: ops.conv2d(x, k, b, **args), arrays,
                                   case["seed"], case["dtype"])
    assert_same(fast, reference, case["dtype"], ("y", "dx", "dkernel", "dbias"))


@pytest.mark.parametrize("height", [130, 62])                     # 528 and 256 tiles
@pytest.mark.parametrize("need", [(True, True, True), (True, False, False),
                                  (False, True, False)])
def test_winograd_at_its_thresholds(monkeypatch, need, height):
    """VGG-like layers that the default thresholds send to Winograd, in float32, each set of
    gradients a frozen or trained layer asks for: several bands of tiles (per-thread dK sums)
    and one band cut along the filters (one dK for all)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, height, 61, 128)).astype(np.float32)
    kernel = (rng.standard_normal((3, 3, 128, 128)) * 0.05).astype(np.float32)
    bias = rng.standard_normal(128).astype(np.float32)
    geom = ConvGeometry.of(x.shape, kernel.shape, (1, 1), "same")
    assert fast_conv._winograd_fits(geom, 128, x, kernel)
    calls = []
    for name in ("_conv3x3", "conv3x3_kernel_gradient"):
        real = getattr(fast_conv.winograd, name)
        monkeypatch.setattr(fast_conv.winograd, name,
                            lambda *a, _f=real, _n=name, **k: calls.append(_n) or _f(*a, **k))
    results = []
    for fast in (True, False):
        with mg.fast_paths(fast):
            tensors = [mg.Tensor(a, requires_grad=r, dtype=np.float32)
                       for a, r in zip((x, kernel, bias), need)]
            y = ops.conv2d(*tensors, padding="same", relu=True)
            y.backward(np.random.default_rng(6).standard_normal(y.shape).astype(np.float32))
            results.append([y.numpy()] + [t.grad for t in tensors])
    # forward, dX (a convolution too) and dK when asked
    dk_calls = need[1]
    assert calls == ["_conv3x3"] * (1 + need[0]) + ["conv3x3_kernel_gradient"] * dk_calls
    assert_same(*results, np.float32, ("y", "dx", "dkernel", "dbias"))


@pytest.mark.parametrize("shape, kernel_shape, strides, dilation, dtype, fits", [
    ((1, 64, 64, 128), (3, 3, 128, 128), (1, 1), (1, 1), np.float32, True),
    ((1, 64, 64, 128), (3, 3, 128, 128), (1, 1), (1, 1), np.float64, True),
    ((1, 64, 64, 128), (3, 3, 128, 128), (2, 2), (1, 1), np.float32, False),   # strided
    ((1, 64, 64, 128), (3, 3, 128, 128), (1, 1), (2, 2), np.float32, False),   # dilated
    ((1, 64, 64, 128), (5, 5, 128, 128), (1, 1), (1, 1), np.float32, False),   # not 3x3
    ((1, 64, 64, 128), (3, 3, 128, 128), (1, 1), (1, 1), np.float16, False),
    ((1, 80, 80, 16), (3, 3, 16, 128), (1, 1), (1, 1), np.float32, False),     # few channels in
    ((1, 80, 80, 128), (3, 3, 128, 16), (1, 1), (1, 1), np.float32, False),    # few out
    ((1, 28, 28, 512), (3, 3, 512, 512), (1, 1), (1, 1), np.float32, False),   # 49 tiles
    ((1, 35, 35, 64), (3, 3, 64, 96), (1, 1), (1, 1), np.float32, False),      # 81, narrow
    ((1, 25, 37, 512), (3, 3, 512, 512), (1, 1), (1, 1), np.float32, True),    # 70, wide
    ((1, 47, 72, 64), (3, 3, 64, 96), (1, 1), (1, 1), np.float32, False),      # 216, narrow
])
def test_winograd_takes_only_what_it_computes_well(shape, kernel_shape, strides, dilation,
                                                   dtype, fits):
    x, kernel = np.zeros(shape, dtype), np.zeros(kernel_shape, dtype)
    geom = ConvGeometry.of(shape, kernel_shape, strides, "same", dilation)
    assert fast_conv._winograd_fits(geom, kernel_shape[3], x, kernel) is fits
    assert not fast_conv._winograd_fits(geom, kernel_shape[3], x, kernel.astype(np.float16))


@pytest.mark.parametrize("shape, kernel_shape, trained, frozen", [
    ((1, 47, 72, 64), (3, 3, 64, 96), False, True),       # 216 tiles: a DeepDream branch's layer
    ((1, 33, 51, 64), (3, 3, 64, 96), False, True),       # 117 tiles
    ((1, 101, 152, 32), (3, 3, 32, 32), False, True),     # 950 tiles of 32 -> 32: the stem's
    ((1, 35, 35, 32), (3, 3, 32, 32), False, False),      # 81 tiles, too little work either way
    ((1, 64, 64, 128), (3, 3, 128, 128), True, True),     # enough for a trained kernel too
])
def test_a_frozen_kernel_takes_winograd_from_less_work(shape, kernel_shape, trained, frozen):
    """Without a kernel gradient to make and with its transform kept, Winograd pays from an
    eighth of the work it needs where the kernel trains (accel/conv.py says what was measured)."""
    x, kernel = np.zeros(shape, np.float32), np.zeros(kernel_shape, np.float32)
    geom = ConvGeometry.of(shape, kernel_shape, (1, 1), "same")
    assert fast_conv._winograd_fits(geom, kernel_shape[3], x, kernel) is trained
    assert fast_conv._winograd_fits(geom, kernel_shape[3], x, kernel, frozen=True) is frozen


@pytest.mark.parametrize("shape, kernel_shape, alone", [
    ((1, 23, 35, 96), (3, 3, 96, 96), True),      # 54 tiles: DeepDream's 204x306 octave
    ((1, 23, 35, 64), (3, 3, 64, 96), True),
    ((1, 23, 35, 48), (3, 3, 48, 64), False),     # narrower: level there, left shifted
    ((1, 17, 17, 64), (3, 3, 64, 96), False),     # 25 tiles, mostly past the edge
])
def test_a_frozen_kernel_on_one_thread_takes_winograd_from_fewer_tiles(shape, kernel_shape,
                                                                      alone):
    """Inside an Inception block's branch (one thread) a frozen kernel takes Winograd from 32
    tiles; the same layer on both threads stays with the shifted route below 64."""
    from micrograd_gen.accel import workers
    x, kernel = np.zeros(shape, np.float32), np.zeros(kernel_shape, np.float32)
    geom = ConvGeometry.of(shape, kernel_shape, (1, 1), "same")
    with workers.alone():
        assert fast_conv._winograd_fits(geom, kernel_shape[3], x, kernel, frozen=True) is alone
        assert not fast_conv._winograd_fits(geom, kernel_shape[3], x, kernel)
    if workers.chunk_pool()[1] > 1:
        assert not fast_conv._winograd_fits(geom, kernel_shape[3], x, kernel, frozen=True)


def test_a_frozen_layer_runs_winograd_forward_and_back_a_trained_one_does_not(monkeypatch):
    """Through the op: the same 3x3 layer (216 tiles of 64 -> 96, fused ReLU) goes to Winograd
    for its forward and dX when its kernel is frozen, to the shifted route when it trains, and
    both give the reference's numbers."""
    rng = np.random.default_rng(11)
    x = np.maximum(rng.standard_normal((1, 47, 72, 64)), 0).astype(np.float32)
    kernel = (rng.standard_normal((3, 3, 64, 96)) * 0.05).astype(np.float32)
    g = rng.standard_normal((1, 47, 72, 96)).astype(np.float32)
    calls = []
    real = fast_conv.winograd._conv3x3
    monkeypatch.setattr(fast_conv.winograd, "_conv3x3",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    for trains in (False, True):
        results = []
        for fast in (True, False):
            with mg.fast_paths(fast):
                tx = mg.Tensor(x, requires_grad=True)
                tk = mg.Tensor(kernel, requires_grad=trains)
                y = ops.conv2d(tx, tk, padding="same", relu=True)
                y.backward(g)
                results.append((y.numpy(), tx.grad))
        assert len(calls) == (0 if trains else 2)       # forward and dX, or neither
        calls.clear()
        for got, want in zip(*results):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# ---- matmul -----------------------------------------------------------------------------------

matmul_cases = st.fixed_dictionaries({
    "m": st.integers(1, 40), "k": st.integers(1, 40), "n": st.integers(1, 40),
    "transposed": st.sampled_from(["", "a", "b", "ab"]), "batch": st.sampled_from([(), (3,)]),
    "dtype": st.sampled_from([np.float32, np.float64]), "seed": st.integers(0, 2 ** 16),
})


@given(matmul_cases)
def test_matmul_fast_path_is_the_reference(case):
    """Every product shared over the workers (threshold at 0): rows, columns or the inner axis
    cut, transposed views in, a Dense layer on a sequence; the product and both gradients."""
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    m, k, n = case["m"], case["k"], case["n"]
    a = rng.standard_normal(case["batch"] + (m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    if "a" in case["transposed"]:
        a = np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
    if "b" in case["transposed"]:
        b = np.ascontiguousarray(b.T).T
    fast_linalg.chunk_pool()                  # the pool runs (as after a model's first conv)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fast_linalg, "_MIN_FLOP", 0)
        fast, reference = run_both(ops.matmul, (a, b), case["seed"], dtype)
    assert_same(fast, reference, dtype, ("y", "da", "db"))


@settings(max_examples=10, deadline=None)
@given(st.integers(2, 5), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9),
       st.booleans(), st.integers(0, 2 ** 16))
def test_attention_products_shared_over_the_workers_are_the_reference(n, heads, tq, d, causal,
                                                                      seed):
    """Multi-head attention with every product through the shared matmul (stacks of heads cut
    along the batch, the projections cut along rows): output and all eleven gradients."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, tq, 4))
    weights = [rng.standard_normal(s) for s in ((4, heads, d), (heads, d), (4, heads, d),
                                                (heads, d), (4, heads, d), (heads, d),
                                                (heads, d, 4), (4,))]

    def attention(x, qk, qb, kk, kb, vk, vb, ok, ob):
        return ops.multi_head_attention(x, x, None, qk, qb, kk, kb, vk, vb, ok, ob,
                                        causal=causal)
    fast_linalg.chunk_pool()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fast_linalg, "_MIN_FLOP", 0)
        fast, reference = run_both(attention, [x] + weights, seed)
    assert_same(fast, reference, np.float64, ["y", "dx"] + [f"dw{i}" for i in range(8)])


def test_matmul_fast_path_takes_large_products_only():
    # Before the worker pool starts, NumPy's BLAS has all its threads: the fast path declines.
    code = ("import numpy as np; from micrograd_gen.accel import linalg; "
            "a = np.ones((1024, 1024), np.float32); "
            "print(linalg.matmul(a, a) is NotImplemented, linalg.started())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.split() == ["True", "False"]
    fast_linalg.chunk_pool()
    big = np.ones((256, 256), np.float32)
    assert fast_linalg.matmul(big[:16], big) is NotImplemented           # 2 MFLOP
    assert fast_linalg.matmul(big, big.astype(np.float64)) is NotImplemented
    c = fast_linalg.matmul(np.ones((1024, 256), np.float32), big)        # 134 MFLOP
    if fast_linalg.chunk_pool()[1] > 1:
        np.testing.assert_array_equal(c, np.full((1024, 256), 256, np.float32))
    else:
        assert c is NotImplemented                                        # one thread: NumPy


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 300), st.integers(1, 40), st.sampled_from([np.float32, np.float64]),
       st.integers(0, 2 ** 16))
def test_column_sums_over_the_workers_are_the_sums(rows, columns, dtype, seed):
    """A bias's gradient, its rows cut over the worker threads (here from any size): the column
    sums, the same numbers every time."""
    a = np.random.default_rng(seed).standard_normal((rows, columns)).astype(dtype)
    fast_linalg.chunk_pool()
    minimum = fast_linalg._MIN_SUM_SIZE
    try:
        fast_linalg._MIN_SUM_SIZE = 0
        sums = fast_linalg.column_sums(a)
        again = fast_linalg.column_sums(a)
    finally:
        fast_linalg._MIN_SUM_SIZE = minimum
    assert sums.dtype == dtype and sums.shape == (columns,)
    tolerance = TOL[dtype] if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sums, a.astype(np.float64).sum(axis=0), **tolerance)
    np.testing.assert_array_equal(sums, again)


# ---- softmax cross-entropy ----------------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(st.integers(1, 40), st.integers(2, 30), st.sampled_from([np.float32, np.float64]),
       st.integers(0, 2 ** 16))
def test_softmax_cross_entropy_rows_over_the_workers_is_the_reference(rows, classes, dtype, seed):
    """Every row's passes are the reference's, so the loss and the gradient are the same
    numbers, bit for bit."""
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((rows, classes)) * 5).astype(dtype)
    labels = rng.integers(0, classes, rows)
    results = []
    fast_losses.chunk_pool()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fast_losses, "_MIN_PARALLEL", 0)
        for fast in (True, False):
            with mg.fast_paths(fast):
                z = mg.Tensor(logits, requires_grad=True, dtype=dtype)
                loss = ops.sparse_categorical_crossentropy(labels, z, from_logits=True,
                                                           reduction="none")
                loss.backward(np.linspace(0.5, 2, rows).astype(dtype))
                results.append((loss.numpy(), z.grad))
    for got, want in zip(*results):
        np.testing.assert_array_equal(got, want)


# ---- conv2d_transpose -------------------------------------------------------------------------

transpose_cases = st.fixed_dictionaries({
    "n": st.integers(1, 2), "h": st.integers(1, 6), "w": st.integers(1, 6),
    "c": st.sampled_from([1, 3, 16, 17]), "f": st.sampled_from([1, 2, 16, 17]),
    "kh": st.integers(1, 5), "kw": st.integers(1, 5),
    "strides": st.tuples(st.integers(1, 3), st.integers(1, 3)),
    "padding": st.sampled_from(["same", "valid"]), "bias": st.booleans(), "relu": st.booleans(),
    "dtype": st.sampled_from([np.float32, np.float64]), "seed": st.integers(0, 2 ** 16),
})


@given(transpose_cases)
def test_conv2d_transpose_fast_path_is_the_reference(case):
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    x = rng.standard_normal((case["n"], case["h"], case["w"], case["c"])).astype(dtype)
    kernel = rng.standard_normal((case["kh"], case["kw"], case["f"], case["c"])).astype(dtype)
    bias = rng.standard_normal(case["f"]).astype(dtype) if case["bias"] else None
    args = dict(strides=case["strides"], padding=case["padding"], relu=case["relu"])
    fast, reference = run_both(lambda x, k, b: ops.conv2d_transpose(x, k, b, **args),
                               (x, kernel, bias), case["seed"], dtype)
    assert_same(fast, reference, dtype, ("y", "dx", "dkernel", "dbias"))


def test_transpose_backward_shares_the_phases_of_g(monkeypatch):
    """With both gradients wanted on the shifted route, the fast path lays g's stride phases out
    once for dX and dK; it must give the reference's two gradients."""
    monkeypatch.setattr(conv_columns, "_MAX_TRANSPOSE_COLUMN_BYTES", 0)
    rng = np.random.default_rng(23)
    x = rng.standard_normal((3, 4, 5, 18))
    kernel = rng.standard_normal((3, 3, 17, 18))
    geom = ConvGeometry.of((3, 8, 10, 17), kernel.shape, (2, 2), "same")
    assert fast_conv._route(fast_conv.shifted_geometry(geom), 18) == "shifted"
    fast, reference = run_both(
        lambda x, k: ops.conv2d_transpose(x, k, strides=2, padding="same"), (x, kernel))
    assert_same(fast, reference, np.float64, ("y", "dx", "dkernel"))


@pytest.mark.parametrize("backward, images, chunk_bytes", [
    ("shifted", 2, None),
    ("columns", 2, None),       # one chunk of whole images
    ("columns", 9, 4096),       # several: g masked and summed chunk by chunk
    ("columns", 2, 256),        # bands of one image's rows: masked and summed before
])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("kernel_size, strides", [((3, 3), (2, 2)), ((1, 1), (2, 2)),
                                                  ((2, 3), (2, 3)), ((3, 3), (1, 1))])
def test_transpose_with_fused_bias_and_relu_is_the_reference(kernel_size, strides, relu, backward,
                                                             images, chunk_bytes, monkeypatch):
    """The VAE's decoder layers on the shifted route: bias and ReLU applied to dX's chunks, the
    ReLU's backward in the copy that lays g out, and adjacent taps merged into one product
    (a 1x1 kernel at stride 2 leaves row phases and column residues that no tap reads). Strided
    kernels wider than 1x1 may take conv_columns' backward instead, which masks g and sums it
    for the bias's gradient as it gathers g's windows: both are held to it."""
    taken = []
    if backward == "shifted":
        monkeypatch.setattr(conv_columns, "_MAX_TRANSPOSE_COLUMN_BYTES", 0)
    if chunk_bytes is not None:
        monkeypatch.setattr(conv_thin, "_CHUNK_BYTES", chunk_bytes)
    original = conv_columns.transpose_backward
    monkeypatch.setattr(conv_columns, "transpose_backward",
                        lambda *a: taken.append(1) or original(*a))
    rng = np.random.default_rng(5)
    x = rng.standard_normal((images, 5, 4, 20)).astype(np.float32)
    kernel = rng.standard_normal(kernel_size + (18, 20)).astype(np.float32)
    bias = rng.standard_normal(18).astype(np.float32)
    fast, reference = run_both(
        lambda x, k, b: ops.conv2d_transpose(x, k, b, strides=strides, padding="same",
                                             relu=relu), (x, kernel, bias), 5, np.float32)
    assert_same(fast, reference, np.float32, ("y", "dx", "dkernel", "dbias"))
    if relu:
        assert (fast[0] == 0).any() and (fast[0] >= 0).all()
    columns = backward == "columns" and strides != (1, 1) and kernel_size != (1, 1)
    assert taken == ([1] if columns else [])


@pytest.mark.parametrize("x_shape, filters, kernel_size, takes", [
    ((128, 7, 7, 64), 64, 3, True),       # the VAE decoder's first layer: 14.5 MB of columns
    ((128, 14, 14, 64), 32, 3, True),     # its second: 29 MB
    ((32, 8, 8, 128), 128, 4, True),      # the DCGAN generator's first: 16 MB
    ((32, 16, 16, 128), 128, 4, False),   # the DCGAN generator's second: 64 MB
    ((2, 7, 7, 64), 64, 1, False),        # a 1x1 kernel has no windows to gather
])
def test_columns_take_small_transposed_convolutions_backward(x_shape, filters, kernel_size, takes):
    x = np.zeros(x_shape, np.float32)
    kernel = np.zeros((kernel_size, kernel_size, filters, x_shape[3]), np.float32)
    n, h, w, _ = x_shape
    geom = ConvGeometry.of((n, 2 * h, 2 * w, filters), kernel.shape, (2, 2), "same")
    g = np.zeros((n, 2 * h, 2 * w, filters), np.float32)
    assert conv_columns.transpose_fits(geom, x, g, kernel) == takes


@pytest.mark.parametrize("fast", [True, False])
def test_transpose_layer_with_relu_is_the_op_then_relu(fast):
    """Conv2DTranspose(activation="relu") fuses the ReLU into the op; it must give what the
    layer without activation followed by ReLU gives, output and every gradient."""
    from micrograd_gen import nn
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 7, 7, 24)).astype(np.float32)
    layers = [nn.Conv2DTranspose(20, 3, strides=2, padding="same", activation=act)
              for act in ("relu", None)]
    bias = rng.standard_normal(20).astype(np.float32)
    results = []
    with mg.fast_paths(fast):
        for layer, then in zip(layers, (lambda y: y, ops.relu)):
            layer.build(x.shape)
            layer.kernel.data[...] = layers[0].kernel.data
            layer.bias.data[...] = bias
            t = mg.Tensor(x, requires_grad=True)
            y = then(layer(t))
            weights = np.linspace(-1, 1, y.size, dtype=np.float32).reshape(y.shape)
            ops.sum(y * mg.Tensor(weights)).backward()
            results.append([y.numpy(), t.grad, layer.kernel.grad, layer.bias.grad])
    assert (results[0][0] == 0).any() and (results[0][0] > 0).any()
    for got, want in zip(*results):
        assert got is not None
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_adjacent_taps_read_as_one_product():
    """A 3x3 kernel at stride 2: taps b = 0 and 1 of each kernel row read one pixel pair, so 9
    taps become 6 products, and each row phase has a product that writes all its residues."""
    geom = ConvGeometry.of((4, 28, 28, 32), (3, 3, 32, 64), (2, 2), "same")
    shifted = fast_conv.shifted_geometry(geom)
    assert [m for _, m, *_ in shifted.runs] == [2, 1, 2, 1, 2, 1]
    assert not shifted.dx_zeros
    pointwise = fast_conv.shifted_geometry(ConvGeometry.of((4, 8, 8, 32), (1, 1, 32, 64),
                                                           (2, 2), "same"))
    assert pointwise.dx_zeros


# ---- pooling ------------------------------------------------------------------------------------

pool_cases = st.fixed_dictionaries({
    "n": st.integers(1, 2), "h": st.integers(1, 9), "w": st.integers(1, 9), "c": st.integers(1, 3),
    "pool": st.tuples(st.integers(1, 3), st.integers(1, 3)),
    "strides": st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))),
    "padding": st.sampled_from(["same", "valid"]), "kind": st.sampled_from(["max", "avg"]),
    "ties": st.booleans(), "dtype": st.sampled_from([np.float32, np.float64]),
    "seed": st.integers(0, 2 ** 16),
})


@given(pool_cases)
def test_pooling_fast_path_is_the_reference(case):
    if case["padding"] == "valid" and (case["pool"][0] > case["h"] or case["pool"][1] > case["w"]):
        return
    rng = np.random.default_rng(case["seed"])
    shape = (case["n"], case["h"], case["w"], case["c"])
    # ties (a ReLU's zeros, a few levels) exercise max pooling's first-maximal-cell rule
    x = (np.maximum(rng.integers(-2, 3, shape), 0) if case["ties"]
         else rng.standard_normal(shape)).astype(case["dtype"])
    fn = ops.max_pool2d if case["kind"] == "max" else ops.avg_pool2d
    fast, reference = run_both(
        lambda t: fn(t, case["pool"], strides=case["strides"], padding=case["padding"]), (x,),
        case["seed"], case["dtype"])
    assert_same(fast, reference, case["dtype"], ("y", "dx"))
    if case["kind"] == "max":   # max and its routing are exact on both paths
        np.testing.assert_array_equal(fast[0], reference[0])
        np.testing.assert_array_equal(fast[1], reference[1])


@pytest.mark.parametrize("pool, strides, padding", [(3, 2, "valid"), (3, 2, "same"),
                                                     (2, 2, "valid"), (3, 1, "same")])
def test_pooling_routes_like_inception_and_vgg(pool, strides, padding):
    x = np.random.default_rng(5).standard_normal((2, 17, 15, 8)).astype(np.float32)
    for fn in (ops.max_pool2d, ops.avg_pool2d):
        fast, reference = run_both(lambda t: fn(t, pool, strides=strides, padding=padding), (x,),
                                   dtype=np.float32)
        assert_same(fast, reference, np.float32, ("y", "dx"))


# ---- the products on row blocks (accel/blas.py) ----------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_gemm_rows_on_row_blocks(dtype):
    """The per-tap products: row blocks of C-ordered arrays, either side transposed, into or onto
    a block of the output (float16 has no BLAS and takes the matmul fallback)."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 7, 4)).astype(dtype)     # rows of 4
    b = rng.standard_normal((12, 5)).astype(dtype)       # rows of 5
    out = np.zeros((9, 5), dtype)
    A, B, O = (blas._Rows(v, v.shape[-1]) for v in (a, b, out))
    flat_a = a.reshape(-1, 4)
    blas.gemm_rows((O, 2, 8), (A, 9, 15), (B, 4, 8))
    expected = np.zeros_like(out)
    expected[2:8] = flat_a[9:15] @ b[4:8]
    tol = 1e-2 if dtype == np.float16 else 1e-6
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)
    blas.gemm_rows((O, 2, 8), (A, 9, 15), (B, 4, 8), accumulate=True)
    np.testing.assert_allclose(out, 2 * expected, rtol=tol, atol=tol)

    square = np.zeros((4, 4), dtype)
    S = blas._Rows(square, 4)
    blas.gemm_rows((S, 0, 4), (A, 0, 6), (A, 6, 12), transpose_a=True)   # (4, 6) @ (6, 4)
    np.testing.assert_allclose(square, flat_a[0:6].T @ flat_a[6:12], rtol=tol, atol=tol)
    blas.gemm_rows((O, 0, 5), (B, 0, 5), (B, 5, 10), transpose_b=True)   # (5, 5) @ (5, 5)
    np.testing.assert_allclose(out[:5], b[0:5] @ b[5:10].T, rtol=tol, atol=tol)


def _recorded_batch(monkeypatch, threads=None):
    """Calls into BLAS's gemm_batch, recorded (it still computes); `threads` fakes BLAS's
    thread count."""
    found, count_threads = blas._batch_gemm()
    calls = []

    def recorder(fn):
        return lambda *args: calls.append(args[14]) or fn(*args)
    monkeypatch.setattr(blas, "_BATCH", ({d: (recorder(fn), i) for d, (fn, i) in found.items()},
                                         count_threads if threads is None else lambda: threads))
    return found, calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("large", [True, False])
def test_gemm_rows_batch_is_its_products_made_in_order(dtype, large, monkeypatch):
    """A chain of products, each adding onto the rows the ones before wrote, either side
    transposed: one call into BLAS on one BLAS thread, the numbers of making them one by one;
    products of 100^3 multiplies or fewer (OpenBLAS's small-matrix path, which crashes inside
    gemm_batch) are made one by one."""
    workers.chunk_pool()                          # NumPy's BLAS on one thread from here on
    found, calls = _recorded_batch(monkeypatch)
    rng = np.random.default_rng(8)
    M, K, N = (300, 160, 48) if large else (20, 8, 6)
    a = rng.standard_normal((M + 40, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    out, square = np.zeros((M + 20, N), dtype), np.zeros((K, N), dtype)
    A, B, BT, O, S = (blas._Rows(v, v.shape[1]) for v in (a, b, b.T.copy(), out, square))
    blas.gemm_rows_batch([((O, 0, M), (A, 0, M), (B, 0, K), False, False, False),
                          ((O, 0, M), (A, 40, M + 40), (B, 0, K), True, False, False),
                          ((O, 20, M + 20), (A, 10, M + 10), (BT, 0, N), True, False, True),
                          ((S, 0, K), (A, 0, M), (O, 0, M), False, True, False)])
    want = np.zeros_like(out)
    want[:M] = a[:M] @ b + a[40:M + 40] @ b
    want[20:M + 20] += a[10:M + 10] @ b
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol * np.abs(want).max())
    np.testing.assert_allclose(square, a[:M].T @ want[:M], rtol=tol,
                               atol=tol * np.abs(a[:M].T @ want[:M]).max())
    assert calls == ([4] if large and np.dtype(dtype) in found else [])


def test_gemm_rows_batch_makes_its_products_one_by_one_on_threaded_blas(monkeypatch):
    """On more than one BLAS thread, gemm_batch would run the products side by side and the
    ones adding onto the same rows would race: they are made one by one instead."""
    _, calls = _recorded_batch(monkeypatch, threads=2)
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((200, 128)), rng.standard_normal((128, 64))
    out = np.zeros((200, 64))
    A, B, O = (blas._Rows(v, v.shape[1]) for v in (a, b, out))
    blas.gemm_rows_batch([((O, 0, 200), (A, 0, 200), (B, 0, 128), i > 0, False, False)
                          for i in range(3)])
    np.testing.assert_allclose(out, 3 * (a @ b), rtol=1e-10)
    assert calls == []


@pytest.mark.parametrize("strides, transpose", [(1, False), (2, False), (2, True)])
def test_shifted_convolutions_with_large_products_match_the_reference(strides, transpose,
                                                                      monkeypatch):
    """Products past 100^3 multiplies go to BLAS as one batch a chunk (conv2d and
    conv2d_transpose, forward, dX and dK): the reference's numbers."""
    workers.chunk_pool()
    monkeypatch.setattr(fast_conv, "_WINOGRAD_MIN_TILES", 10 ** 9)     # the shifted route
    monkeypatch.setattr(conv_columns, "_MAX_COLUMN_BYTES", 0)
    found, calls = _recorded_batch(monkeypatch)
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 40, 48, 64)) * 0.5
    kernel = rng.standard_normal((3, 3, 64, 64)) * 0.1
    bias = rng.standard_normal(64)
    op = ops.conv2d_transpose if transpose else ops.conv2d
    fast, reference = run_both(lambda *t: op(*t, strides=strides, padding="same", relu=True),
                               (x, kernel, bias))
    assert_same(fast, reference, np.float64, ("y", "dx", "dkernel", "dbias"))
    assert len(calls) > 0 or np.dtype(np.float64) not in found


def test_gemm_rows_refuses_blocks_that_do_not_fit():
    a, out = np.zeros((6, 4), np.float32), np.zeros((6, 4), np.float32)
    A, O = blas._Rows(a, 4), blas._Rows(out, 4)
    with pytest.raises(ValueError, match="do not fit"):
        blas.gemm_rows((O, 0, 4), (A, 3, 7), (A, 0, 4))    # rows 3:7 of 6
    with pytest.raises(ValueError, match="do not fit"):
        blas.gemm_rows((O, 0, 3), (A, 0, 4), (A, 0, 4))    # 4 rows into 3
    with pytest.raises(ValueError, match="C-ordered"):
        blas._Rows(np.zeros((4, 6), np.float32).T, 4)


def test_gemm_into_adds_onto_transposed_views():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((6, 5)), rng.standard_normal((4, 6))
    out = rng.standard_normal((5, 4))
    want = out + a.T @ b.T
    blas.gemm_into(a.T, b.T, out, accumulate=True)
    np.testing.assert_allclose(out, want, rtol=1e-12)


# ---- the switch and the rules around it ---------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _python(code, **env):
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_fast_off_never_imports_accel():
    code = ("import sys, numpy as np, micrograd_gen as mg\n"
            "from micrograd_gen import ops\n"
            "x = mg.Tensor(np.ones((1, 6, 6, 3)), requires_grad=True)\n"
            "k = mg.Tensor(np.ones((3, 3, 3, 4)), requires_grad=True)\n"
            "y = ops.max_pool2d(ops.conv2d(x, k, padding='same', relu=True), 2)\n"
            "loss = ops.sparse_categorical_crossentropy(np.zeros(1, int), ops.reshape(y, (1, -1)),"
            " from_logits=True)\n"
            "loss.backward()\n"
            "print(sorted(m for m in sys.modules if m.startswith('micrograd_gen.accel')))\n")
    assert _python(code, MICROGRAD_GEN_FAST="0") == "[]"


def test_importing_starts_no_thread_and_loads_no_library():
    code = ("import threading, micrograd_gen\n"
            "from micrograd_gen.accel import blas, workers, memory\n"
            "print(threading.active_count(), blas._BLAS is None, workers._POOL is None,"
            " memory._applied is None)\n")
    assert _python(code, MICROGRAD_GEN_FAST="1") == "1 True True True"


SIGNAL_HANDLING = set()   # no thread outside accel/, not even for Ctrl-C (cli/__init__.py)


def test_nothing_outside_accel_touches_threads_ctypes_or_malloc():
    speed_tricks = re.compile(r"^\s*(import|from)\s+(ctypes|concurrent)\b|mallopt\(|"
                              r"RawKernel|ElementwiseKernel|RawModule", re.M)
    threads = re.compile(r"^\s*(import|from)\s+(threading|_thread)\b", re.M)
    package = ROOT / "micrograd_gen"
    offenders = []
    for path in package.rglob("*.py"):
        name, text = path.relative_to(ROOT).as_posix(), path.read_text()
        if package / "accel" in path.parents:
            continue
        if speed_tricks.search(text) or (threads.search(text) and name not in SIGNAL_HANDLING):
            offenders.append(name)
    assert offenders == []
