"""accel/winograd.py (F(4x4, 3x3)) against the reference convolution: forward with bias and ReLU,
the input gradient and the kernel and bias gradients (with a ReLU's mask on dY), on drawn shapes
and paddings, in float32 and float64.

Winograd's transforms round differently from a direct product, so float32 results agree to about
1e-5 of the largest output, not bit for bit; float64 agrees to 1e-12."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import micrograd_gen as mg
from micrograd_gen.accel import kept, winograd, workers

TOLERANCE = {np.float32: 5e-5, np.float64: 1e-12}


def reference_conv(x, kernel, bias, relu, pads):
    """The engine's reference conv2d (fast paths off) on explicitly padded input."""
    top, bottom, left, right = pads
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    with mg.fast_paths(False), mg.no_grad():
        y = mg.ops.conv2d(mg.Tensor(padded, dtype=x.dtype), mg.Tensor(kernel, dtype=x.dtype),
                          None if bias is None else mg.Tensor(bias, dtype=x.dtype))
    y = y.data
    return np.maximum(y, 0) if relu else y


def relative_error(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)


cases = st.fixed_dictionaries({
    "n": st.integers(1, 3), "h": st.integers(1, 13), "w": st.integers(1, 13),
    "c": st.integers(1, 9), "f": st.integers(1, 9),
    "pads": st.sampled_from([(1, 1, 1, 1), (0, 0, 0, 0), (2, 1, 0, 2), (1, 2, 2, 1)]),
    "bias": st.booleans(), "relu": st.booleans(),
    "dtype": st.sampled_from([np.float32, np.float64]), "seed": st.integers(0, 2 ** 16)})


def drawn_arrays(case):
    """(rng, dtype, x, kernel) of a drawn case, or None where the padded picture has no 3x3
    window."""
    top, bottom, left, right = case["pads"]
    if case["h"] + top + bottom < 3 or case["w"] + left + right < 3:
        return None
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    x = rng.standard_normal((case["n"], case["h"], case["w"], case["c"])).astype(dtype)
    kernel = rng.standard_normal((3, 3, case["c"], case["f"])).astype(dtype)
    return rng, dtype, x, kernel


@settings(max_examples=60, deadline=None)
@given(cases)
def test_forward_matches_the_reference(case):
    drawn = drawn_arrays(case)
    if drawn is None:
        return
    rng, dtype, x, kernel = drawn
    bias = rng.standard_normal(case["f"]).astype(dtype) if case["bias"] else None
    got = winograd.conv3x3(x, kernel, case["pads"], bias=bias, relu=case["relu"])
    want = reference_conv(x, kernel, bias, case["relu"], case["pads"])
    assert got.shape == want.shape and got.dtype == dtype
    assert relative_error(got, want) < TOLERANCE[dtype]


@settings(max_examples=40, deadline=None)
@given(cases)
def test_input_gradient_matches_the_reference(case):
    drawn = drawn_arrays(case)
    if drawn is None:
        return
    rng, dtype, x, kernel = drawn
    pads = case["pads"]
    top, bottom, left, right = pads
    padded = mg.Tensor(np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0))), dtype=dtype,
                       requires_grad=True)
    with mg.fast_paths(False):
        y = mg.ops.conv2d(padded, mg.Tensor(kernel, dtype=dtype))
        g = rng.standard_normal(y.shape).astype(dtype)
        y.backward(g)
    want = padded.grad[:, top:top + case["h"], left:left + case["w"]]
    got = winograd.conv3x3_input_gradient(g, kernel, pads, x.shape)
    assert got.shape == x.shape
    assert relative_error(got, want) < TOLERANCE[dtype]
    # A fused ReLU's mask on dY: the gradient of g * mask, the product never formed.
    mask = rng.random(g.shape) < 0.5
    with mg.fast_paths(False):
        padded.grad = None
        mg.ops.conv2d(padded, mg.Tensor(kernel, dtype=dtype)).backward(g * mask)
    want = padded.grad[:, top:top + case["h"], left:left + case["w"]]
    got = winograd.conv3x3_input_gradient(g, kernel, pads, x.shape, mask=mask)
    assert relative_error(got, want) < TOLERANCE[dtype]


@pytest.mark.parametrize("tiles", [1, 10 ** 6])
def test_dxs_kernel_transform_is_the_turned_kernels(tiles):
    """dX's U, made from the kernel's taps in reverse and read transposed (few tiles) or copied
    (many), is the transform of the kernel turned 180 degrees with in/out channels swapped."""
    kernel = np.random.default_rng(6).standard_normal((3, 3, 5, 7)).astype(np.float32)
    turned = np.ascontiguousarray(kernel[::-1, ::-1].transpose(0, 1, 3, 2))
    U = winograd._kernel_transform(kernel, True, frozen=False, tiles=tiles)
    assert U.shape == (36, 7, 5) and U.flags.c_contiguous == (tiles > 1)
    np.testing.assert_allclose(U, winograd.transform_kernel(turned), rtol=1e-6, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(cases)
def test_kernel_gradient_matches_the_reference(case):
    drawn = drawn_arrays(case)
    if drawn is None:
        return
    rng, dtype, x, kernel_array = drawn
    pads = case["pads"]
    top, bottom, left, right = pads
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    kernel = mg.Tensor(kernel_array, dtype=dtype, requires_grad=True)
    bias = mg.Tensor(rng.standard_normal(case["f"]), dtype=dtype, requires_grad=True)
    with mg.fast_paths(False):
        y = mg.ops.conv2d(mg.Tensor(padded, dtype=dtype), kernel, bias)
    g = rng.standard_normal(y.shape).astype(dtype)
    mask = (rng.random(g.shape) < 0.5) if case["relu"] else None
    with mg.fast_paths(False):
        y.backward(g if mask is None else g * mask)
    dk, db = winograd.conv3x3_kernel_gradient(x, g, pads, mask=mask, need_db=case["bias"])
    assert dk.shape == kernel.shape and dk.dtype == dtype
    assert relative_error(dk, kernel.grad) < TOLERANCE[dtype]
    if case["bias"]:
        assert relative_error(db, bias.grad) < TOLERANCE[dtype]
    else:
        assert db is None


def check_bands_against_the_reference():
    """conv3x3, its input gradient and its kernel gradient at a VGG-like size (3 pictures of
    25x37, 64 -> 48 channels, bands crossing pictures) against the reference."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 25, 37, 64)).astype(np.float32)
    kernel = (rng.standard_normal((3, 3, 64, 48)) * (2 / (9 * 64)) ** 0.5).astype(np.float32)
    bias = rng.standard_normal(48).astype(np.float32)
    got = winograd.conv3x3(x, kernel, (1, 1, 1, 1), bias=bias, relu=True)
    want = reference_conv(x, kernel, bias, True, (1, 1, 1, 1))
    assert relative_error(got, want) < 2e-5
    g = rng.standard_normal(want.shape).astype(np.float32)
    mask = want > 0
    tk = mg.Tensor(kernel, requires_grad=True, dtype=np.float32)
    tb = mg.Tensor(bias, requires_grad=True, dtype=np.float32)
    tx = mg.Tensor(x, requires_grad=True, dtype=np.float32)
    with mg.fast_paths(False):
        mg.ops.conv2d(tx, tk, tb, padding="same", relu=True).backward(g)
    dk, db = winograd.conv3x3_kernel_gradient(x, g, (1, 1, 1, 1), mask=mask, need_db=True)
    dx = winograd.conv3x3_input_gradient(g, kernel, (1, 1, 1, 1), x.shape, mask=mask)
    for got, want in ((dk, tk.grad), (db, tb.grad), (dx, tx.grad)):
        assert relative_error(got, want) < 2e-5


@pytest.mark.parametrize("band_tiles", [256, 16])
def test_many_bands_and_images_at_a_vgg_like_size(monkeypatch, band_tiles):
    # On two threads: few bands (each also cut in two along the output channels) and, with
    # small bands, many (not cut).
    monkeypatch.setattr(winograd, "chunk_pool", lambda: (None, 2))
    monkeypatch.setattr(winograd, "_BAND_TILES", band_tiles)
    tiling = winograd._Tiling(3, 25, 37)
    assert len({part for _, part in tiling.chunks(48)}) == (2 if band_tiles == 256 else 1)
    check_bands_against_the_reference()


@pytest.mark.parametrize("n, oh, ow", [(1, 99, 150), (1, 197, 297), (3, 50, 75), (1, 45, 70),
                                       (2, 9, 9)])
def test_on_two_threads_bands_are_near_equal_and_a_whole_number_per_thread(monkeypatch, n, oh,
                                                                          ow):
    # 99x150 (25 x 38 tiles) was cut 7, 7, 7, 4 tile rows: one thread 532 tiles, the other 418
    monkeypatch.setattr(winograd, "chunk_pool", lambda: (None, 2))
    tiling = winograd._Tiling(n, oh, ow)
    bands = sorted({rows for rows, _ in tiling.chunks(64)})
    assert bands[0][0] == 0 and bands[-1][1] == n * tiling.th
    assert all(a[1] == b[0] for a, b in zip(bands, bands[1:]))
    sizes = [r1 - r0 for r0, r1 in bands]
    if n * tiling.th * tiling.tw > winograd._BAND_TILES:
        assert len(bands) % 2 == 0 and max(sizes) - min(sizes) <= 1
    else:
        assert len(bands) == 1


@pytest.mark.parametrize("n, oh, ow, f", [(1, 47, 72, 96), (1, 23, 35, 96), (3, 25, 37, 48),
                                          (1, 197, 297, 32), (1, 9, 700, 512)])
def test_on_one_thread_bands_are_cut_by_size_never_along_the_filters(n, oh, ow, f):
    # Inside an Inception branch (workers.alone) no thread waits for the last band: products
    # as wide as the layer, each band's (36, tiles, F) within the cache budget (or one tile row)
    with workers.alone():
        tiling = winograd._Tiling(n, oh, ow)
        chunks = tiling.chunks(f)
    assert all(part == (0, f) for _, part in chunks)
    bands = [rows for rows, _ in chunks]
    assert bands[0][0] == 0 and bands[-1][1] == n * tiling.th
    assert all(a[1] == b[0] for a, b in zip(bands, bands[1:]))      # each tile row once, in order
    for r0, r1 in bands:
        assert r1 - r0 == 1 or 36 * 4 * f * (r1 - r0) * tiling.tw <= winograd._ALONE_BAND_BYTES


@pytest.mark.parametrize("budget", [1 << 20, 36 * 4 * 48 * 10 * 2])
def test_bands_on_one_thread_match_the_reference(monkeypatch, budget):
    # 21 tile rows (3 pictures) in bands of 15 (the default budget) and of two
    monkeypatch.setattr(winograd, "_ALONE_BAND_BYTES", budget)
    with workers.alone():
        bands = {rows for rows, _ in winograd._Tiling(3, 25, 37).chunks(48)}
        assert len(bands) == (2 if budget == 1 << 20 else 11)
        check_bands_against_the_reference()


def test_a_frozen_kernel_keeps_its_transform_while_it_stays_equal(monkeypatch,
                                                                  conv_on_the_very_kernel):
    """Through the op: a kernel that gets no gradient has its transform (forward and dX) made
    once and used again; changed in place, it is made anew; a trained kernel is never kept."""
    from micrograd_gen.accel import conv as fast_conv
    monkeypatch.setattr(fast_conv, "_WINOGRAD_MIN_WORK", 1)
    monkeypatch.setattr(fast_conv, "_WINOGRAD_MIN_WORK_FROZEN", 1)
    monkeypatch.setattr(fast_conv, "_WINOGRAD_ALONE_MIN_WORK_FROZEN", 1)
    monkeypatch.setattr(fast_conv, "_WINOGRAD_ALONE_MIN_TILES", 1)
    monkeypatch.setattr(fast_conv, "_WINOGRAD_MIN_TILES", 1)
    monkeypatch.setattr(kept, "_kept", type(kept._kept)())
    made = []
    real = winograd.transform_kernel
    monkeypatch.setattr(winograd, "transform_kernel",
                        lambda k, flipped=False: made.append((k.shape, flipped)) or real(k, flipped))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 12, 16, 32)).astype(np.float32)     # 12 tiles
    kernel = (rng.standard_normal((3, 3, 32, 40)) * 0.1).astype(np.float32)
    g = rng.standard_normal((1, 12, 16, 40)).astype(np.float32)

    def run(fast, train_kernel=False):
        return conv_on_the_very_kernel(x, kernel, g, fast, train_kernel)

    def check():
        for got, want in zip(run(True), run(False)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())

    check()
    assert made == [((3, 3, 32, 40), False), ((3, 3, 32, 40), True)]   # forward's U and dX's
    check()
    assert len(made) == 2                                     # both kept
    kernel[1, 1, 0, 0] += 1                                   # changed in place
    check()
    assert len(made) == 4
    run(True, train_kernel=True)
    run(True, train_kernel=True)
    assert len(made) == 8                                     # a trained kernel: made each time


def test_kept_transforms_stay_within_their_budget(monkeypatch):
    monkeypatch.setattr(kept, "_kept", type(kept._kept)())
    monkeypatch.setattr(kept, "_KEPT_BYTES", 3 * 10 * (9 + 36) * 4 * 8)   # three of them
    rng = np.random.default_rng(5)
    shared = rng.standard_normal((3, 3, 10, 8)).astype(np.float32)
    winograd._kernel_transform(shared, False, frozen=True, tiles=1)
    winograd._kernel_transform(shared, True, frozen=True, tiles=1)   # one copy, two transforms
    assert len(kept._kept) == 1 and len(next(iter(kept._kept.values()))[1]) == 2
    rng = np.random.default_rng(4)
    kernels = [rng.standard_normal((3, 3, 10, 8)).astype(np.float32) for _ in range(5)]
    for k in kernels:
        winograd._kernel_transform(k, False, frozen=True, tiles=1)
    assert len(kept._kept) == 3
    assert [key[0] for key in kept._kept] == [k.ctypes.data for k in kernels[2:]]


@pytest.mark.parametrize("band_tiles", [256, 4])
def test_a_trained_kernel_takes_the_forwards_transformed_input_for_its_gradient(monkeypatch,
                                                                              band_tiles):
    """Through the op: a kernel that trains gets its dK from the tiles the forward transformed
    (kept from forward to backward, then let go), the numbers of making them again; past
    _KEEP_INPUTS_BYTES they are made again. Bands cut along F (few bands) and not (many)."""
    from micrograd_gen.accel import conv as fast_conv
    for name in ("_WINOGRAD_MIN_WORK", "_WINOGRAD_MIN_TILES", "_WINOGRAD_MIN_CHANNELS"):
        monkeypatch.setattr(fast_conv, name, 1)
    monkeypatch.setattr(winograd, "_BAND_TILES", band_tiles)
    given_inputs = []
    real = winograd.conv3x3_kernel_gradient

    def spy(*args, **kwargs):
        given_inputs.append(args[5] is not None if len(args) > 5 else False)
        return real(*args, **kwargs)
    monkeypatch.setattr(winograd, "conv3x3_kernel_gradient", spy)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 13, 18, 8)).astype(np.float32)
    kernel = (rng.standard_normal((3, 3, 8, 6)) * 0.2).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32)
    g = rng.standard_normal((2, 13, 18, 6)).astype(np.float32)

    def gradients():
        tk = mg.Tensor(kernel, requires_grad=True, dtype=np.float32)
        tb = mg.Tensor(bias, requires_grad=True, dtype=np.float32)
        tx = mg.Tensor(x, requires_grad=True, dtype=np.float32)
        with mg.fast_paths(True):
            y = mg.ops.conv2d(tx, tk, tb, padding="same", relu=True)
            kept = dict(y._ctx.kept)
            y.backward(g)
        return tk.grad, tb.grad, tx.grad, kept
    kept_dk, kept_db, kept_dx, kept = gradients()
    assert given_inputs == [True] and "winograd_inputs" in kept
    monkeypatch.setattr(fast_conv, "_KEEP_INPUTS_BYTES", 0)
    dk, db, dx, kept = gradients()
    assert given_inputs == [True, False] and not kept
    # the forward's bands may be shorter than dK's: BLAS may round the transform differently
    assert relative_error(kept_dk, dk) < 1e-6
    np.testing.assert_array_equal(kept_db, db)
    np.testing.assert_array_equal(kept_dx, dx)
    tk = mg.Tensor(kernel, requires_grad=True, dtype=np.float32)
    with mg.fast_paths(False):
        mg.ops.conv2d(mg.Tensor(x, dtype=np.float32), tk, mg.Tensor(bias, dtype=np.float32),
                      padding="same", relu=True).backward(g)
    assert relative_error(kept_dk, tk.grad) < 2e-5
