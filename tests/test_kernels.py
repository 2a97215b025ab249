"""The CUDA kernels in kernels/*.cu against their NumPy references (micrograd_gen.accel.cuda),
and those references against the engine's own ops.

Three levels, each skipping with its reason where the machine lacks what it needs:
- nvcc: every .cu compiles to PTX (valid CUDA, the expected entry points present);
- g++: every .cu, compiled for the CPU with kernels/host_emulation.hpp, runs its grid-stride loops
  (and the softmax kernel's block reductions, with one host thread per CUDA thread) and agrees
  with its reference on random inputs, odd sizes included: the index arithmetic is checked
  without a GPU;
- CuPy + a device: the kernels as CuPy runs them, float32 and float64, against the references.
The references themselves are checked against the engine's ops (conv2d, lstm,
sparse_categorical_crossentropy) with NumPy alone, so that "agrees with its reference" means
"computes what the engine computes".
"""
import ctypes
import shutil
import subprocess
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import micrograd_gen as mg
from micrograd_gen import backend, ops
from micrograd_gen.accel import cuda as ck
from micrograd_gen.ops.im2col import padding_amounts

KERNELS = ck.KERNEL_FILES
HEADER = ck.KERNEL_DIR / "host_emulation.hpp"
gpu = pytest.mark.skipif(not backend.cupy_available(), reason="needs CuPy and a CUDA device")


# ---- nvcc: the sources are valid CUDA ----------------------------------------------------------

@pytest.mark.skipif(shutil.which("nvcc") is None,
                    reason="nvcc is not on PATH: the CUDA sources are not compiled here")
@pytest.mark.parametrize("name", KERNELS)
def test_kernel_compiles_with_nvcc(name, tmp_path):
    ptx = tmp_path / f"{name}.ptx"
    done = subprocess.run(["nvcc", "--ptx", "-arch=compute_80", "-o", str(ptx),
                           str(ck.source_path(name))], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = ptx.read_text()
    for suffix in ("f32", "f64"):
        assert f".entry {name}_{suffix}(" in text


# ---- g++: the same sources run on the CPU ------------------------------------------------------

_ARGS = {  # p: pointer, q: long long, i: int, t: the dtype's scalar
    "im2col_nhwc": "pp" + "q" * 14,
    "col2im_nhwc": "pp" + "q" * 14,
    "lstm_cell_forward": "ppppp" + "qqi" + "tttt",
    "lstm_cell_backward": "ppppp" + "qqi",
    "softmax_cross_entropy_forward": "pppp" + "qq",
    "softmax_cross_entropy_backward": "pppp" + "qq",
}


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    """{kernel file: ctypes library} compiled for the CPU."""
    if shutil.which("g++") is None:
        pytest.skip("g++ is not on PATH: the kernels cannot be run on the CPU here")
    folder = tmp_path_factory.mktemp("host_kernels")
    libs = {}
    for name in KERNELS:
        out = folder / f"{name}.so"
        done = subprocess.run(["g++", "-std=c++17", "-O1", "-shared", "-fPIC", "-include",
                               str(HEADER), "-x", "c++", str(ck.source_path(name)), "-o", str(out),
                               "-lpthread"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        libs[name] = ctypes.CDLL(str(out))
    return libs


def run_on_host(libs, name, dtype, args, blocks=3, threads=5, together=False):
    """Launch kernel `name` on the CPU with the given grid. Threads run one after another unless
    `together` (a kernel with __syncthreads): then each block's threads run at once."""
    lib = libs[name]
    fn = getattr(lib, f"{name}_{'f32' if np.dtype(dtype) == np.float32 else 'f64'}")
    scalar = ctypes.c_float if np.dtype(dtype) == np.float32 else ctypes.c_double
    kinds = {"p": ctypes.c_void_p, "q": ctypes.c_longlong, "i": ctypes.c_int, "t": scalar}
    fn.argtypes = [kinds[k] for k in _ARGS[name]]
    fn.restype = None
    values = [a.ctypes.data if isinstance(a, np.ndarray) else a for a in args]
    lib.emu_configure(blocks, threads)

    def one(block, thread):
        lib.emu_set_thread(block, thread)
        fn(*values)

    for b in range(blocks):
        if not together:
            for t in range(threads):
                one(b, t)
            continue
        workers = [threading.Thread(target=one, args=(b, t)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()


@st.composite
def conv_geometries(draw):
    """(x shape, kernel size, strides, dilation, (top, left) pads, out size), odd sizes included."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    padding = draw(st.sampled_from(["same", "valid"]))
    N, C = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    H = draw(st.integers((kh - 1) * dh + 1, 9))
    W = draw(st.integers((kw - 1) * dw + 1, 9))
    pt, _, OH = padding_amounts(H, kh, sh, padding, dh)
    pl, _, OW = padding_amounts(W, kw, sw, padding, dw)
    return (N, H, W, C), (kh, kw), (sh, sw), (dh, dw), (pt, pl), (OH, OW)


def _conv_scalars(geometry):
    (N, H, W, C), (kh, kw), (sh, sw), (dh, dw), (pt, pl), (OH, OW) = geometry
    return [N, H, W, C, kh, kw, sh, sw, dh, dw, pt, pl, OH, OW]


@settings(max_examples=20, deadline=None)
@given(conv_geometries(), st.sampled_from([np.float32, np.float64]))
def test_im2col_and_col2im_on_host_match_references(host_kernels, geometry, dtype):
    rng = np.random.default_rng(0)
    x_shape, size, strides, dilation, pads, out_size = geometry
    x = rng.standard_normal(x_shape).astype(dtype)
    cols = np.full((x_shape[0],) + out_size + (size[0] * size[1] * x_shape[3],), np.nan, dtype)
    run_on_host(host_kernels, "im2col_nhwc", dtype, [x, cols] + _conv_scalars(geometry))
    np.testing.assert_array_equal(cols, ck.im2col_reference(x, size, strides, dilation, pads,
                                                            out_size))
    dcols = rng.standard_normal(cols.shape).astype(dtype)
    dx = np.full(x_shape, np.nan, dtype)
    run_on_host(host_kernels, "col2im_nhwc", dtype, [dcols, dx] + _conv_scalars(geometry))
    want = ck.col2im_reference(dcols, x_shape, size, strides, dilation, pads)
    np.testing.assert_allclose(dx, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 7), st.integers(1, 6), st.booleans(),
       st.sampled_from([(1, 1, 1, 1), (-1, -1, -2, -1)]), st.sampled_from([np.float32, np.float64]))
def test_lstm_cell_on_host_matches_references(host_kernels, units, batch, feature_major, scale,
                                              dtype):
    rng = np.random.default_rng(units * 10 + batch)
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    state = (units, batch) if feature_major else (batch, units)
    z_shape = (4 * units, batch) if feature_major else (batch, 4 * units)
    z = (rng.standard_normal(z_shape) * 3).astype(dtype)
    c_prev = rng.standard_normal(state).astype(dtype)
    act, c, tanh_c, h = ck.lstm_cell_forward_reference(z, c_prev, feature_major, scale)
    got = [z.copy()] + [np.full(state, np.nan, dtype) for _ in range(3)]
    run_on_host(host_kernels, "lstm_cell_forward", dtype,
                [got[0], c_prev] + got[1:] + [units, batch, int(feature_major)] + list(scale))
    for g, want in zip(got, (act, c, tanh_c, h)):
        np.testing.assert_allclose(g, want, **tol)

    dh, dc = (rng.standard_normal(state).astype(dtype) for _ in range(2))
    dz, dc_prev = ck.lstm_cell_backward_reference(act, c_prev, tanh_c, dh, dc, feature_major)
    got_dz, got_dc = act.copy(), dc.copy()
    run_on_host(host_kernels, "lstm_cell_backward", dtype,
                [got_dz, c_prev, tanh_c, dh, got_dc, units, batch, int(feature_major)])
    np.testing.assert_allclose(got_dz, dz, **tol)
    np.testing.assert_allclose(got_dc, dc_prev, **tol)


@pytest.mark.parametrize("rows, classes", [(1, 1), (5, 3), (3, 257), (4, 600)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_on_host_matches_references(host_kernels, rows, classes, dtype):
    rng = np.random.default_rng(rows * classes)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    logits = (rng.standard_normal((rows, classes)) * 20).astype(dtype)
    labels = rng.integers(0, classes, rows).astype(np.int64)
    loss, probs = ck.softmax_cross_entropy_forward_reference(logits, labels)
    got_loss, got_probs = np.full(rows, np.nan, dtype), np.full((rows, classes), np.nan, dtype)
    # XENT_BLOCK (256) threads per block, all running at once; 2 blocks stride over the rows
    run_on_host(host_kernels, "softmax_cross_entropy_forward", dtype,
                [logits, labels, got_probs, got_loss, rows, classes], blocks=2, threads=256,
                together=True)
    np.testing.assert_allclose(got_loss, loss, **tol)
    np.testing.assert_allclose(got_probs, probs, **tol)

    g = rng.standard_normal(rows).astype(dtype)
    d = got_probs  # in place, as the op uses it
    run_on_host(host_kernels, "softmax_cross_entropy_backward", dtype,
                [got_probs, labels, g, d, rows, classes])
    np.testing.assert_allclose(d, ck.softmax_cross_entropy_backward_reference(probs, labels, g),
                               **tol)


# ---- the references compute what the engine's ops compute (NumPy only) -------------------------

@settings(max_examples=15, deadline=None)
@given(conv_geometries())
def test_im2col_reference_times_kernel_is_the_engines_conv2d(geometry):
    x_shape, size, strides, dilation, pads, out_size = geometry
    padding = "valid" if pads == (0, 0) and out_size == tuple(
        padding_amounts(n, k, s, "valid", d)[2] for n, k, s, d in
        zip(x_shape[1:3], size, strides, dilation)) else "same"
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape)
    kernel = rng.standard_normal(size + (x_shape[3], 2))
    cols = ck.im2col_reference(x, size, strides, dilation, pads, out_size)
    want = ops.conv2d(mg.Tensor(x, dtype=np.float64), mg.Tensor(kernel, dtype=np.float64),
                      strides=strides, padding=padding, dilation_rate=dilation).numpy()
    np.testing.assert_allclose(cols @ kernel.reshape(-1, 2), want, rtol=1e-10, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(conv_geometries())
def test_col2im_reference_is_the_adjoint_of_im2col_reference(geometry):
    x_shape, size, strides, dilation, pads, out_size = geometry
    rng = np.random.default_rng(2)
    x = rng.standard_normal(x_shape)
    cols = ck.im2col_reference(x, size, strides, dilation, pads, out_size)
    dcols = rng.standard_normal(cols.shape)
    dx = ck.col2im_reference(dcols, x_shape, size, strides, dilation, pads)
    np.testing.assert_allclose(np.vdot(cols, dcols), np.vdot(x, dx), rtol=1e-10)


def test_lstm_cell_references_are_one_step_of_the_engines_lstm():
    rng = np.random.default_rng(3)
    n, d, u = 3, 4, 5
    x, h0, c0 = rng.standard_normal((n, 1, d)), rng.standard_normal((n, u)), rng.standard_normal((n, u))
    kernel, recurrent, bias = (rng.standard_normal(s) * 0.5 for s in ((d, 4 * u), (u, 4 * u), (4 * u,)))
    gh, gc = rng.standard_normal((n, u)), rng.standard_normal((n, u))
    tensors = [mg.Tensor(a, requires_grad=True, dtype=np.float64)
               for a in (x, kernel, recurrent, bias, h0, c0)]
    tx, tk, tr, tb, th, tc = tensors
    _, h, c = ops.lstm(tx, tk, tr, tb, initial_state=(th, tc), return_state=True)
    (ops.sum(h * gh) + ops.sum(c * gc)).backward()

    z = x[:, 0] @ kernel + h0 @ recurrent + bias                         # (N, 4U), batch-major
    act, c_ref, tanh_c, h_ref = ck.lstm_cell_forward_reference(z, c0, feature_major=False)
    np.testing.assert_allclose(h_ref, h.numpy(), rtol=1e-12)
    np.testing.assert_allclose(c_ref, c.numpy(), rtol=1e-12)
    # the engine's layout: feature-major, pre-scaled by (-1, -1, -2, -1)
    scale = np.repeat([-1.0, -1.0, -2.0, -1.0], u)[:, None]
    fm = ck.lstm_cell_forward_reference(scale * z.T, c0.T, True, (-1, -1, -2, -1))
    np.testing.assert_allclose(fm[3], h_ref.T, rtol=1e-12)

    dz, dc0 = ck.lstm_cell_backward_reference(act, c0, tanh_c, gh, gc, feature_major=False)
    np.testing.assert_allclose(dc0, tc.grad, rtol=1e-10)
    np.testing.assert_allclose(dz @ recurrent.T, th.grad, rtol=1e-10)
    np.testing.assert_allclose(x[:, 0].T @ dz, tk.grad, rtol=1e-10)
    np.testing.assert_allclose(h0.T @ dz, tr.grad, rtol=1e-10)
    np.testing.assert_allclose(dz.sum(axis=0), tb.grad, rtol=1e-10)
    dz_fm, _ = ck.lstm_cell_backward_reference(act.T, c0.T, tanh_c.T, gh.T, gc.T, True)
    np.testing.assert_allclose(dz_fm, dz.T, rtol=1e-12)


def test_softmax_cross_entropy_references_are_the_engines_loss_and_gradient():
    rng = np.random.default_rng(4)
    logits, labels, g = rng.standard_normal((6, 11)) * 5, rng.integers(0, 11, 6), rng.random(6)
    t = mg.Tensor(logits, requires_grad=True, dtype=np.float64)
    loss = ops.sparse_categorical_crossentropy(labels, t, from_logits=True, reduction="none")
    loss.backward(g)
    ref_loss, probs = ck.softmax_cross_entropy_forward_reference(logits, labels)
    np.testing.assert_allclose(ref_loss, loss.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ck.softmax_cross_entropy_backward_reference(probs, labels, g),
                               t.grad, rtol=1e-10, atol=1e-15)


def test_kernel_calls_without_cupy_say_what_is_missing():
    if backend.cupy_available():
        pytest.skip("CuPy is usable here")
    with pytest.raises(RuntimeError, match="CuPy"):
        ck.softmax_cross_entropy_forward(np.zeros((2, 3), np.float32), np.zeros(2, np.int64))


# ---- CuPy on a device: the kernels as they really run -------------------------------------------

@pytest.mark.gpu
@gpu
@settings(max_examples=20, deadline=None)
@given(conv_geometries(), st.sampled_from([np.float32, np.float64]))
def test_im2col_and_col2im_on_gpu_match_references(geometry, dtype):
    import cupy as cp
    x_shape, size, strides, dilation, pads, out_size = geometry
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape).astype(dtype)
    cols = ck.im2col(cp.asarray(x), size, strides, dilation, pads, out_size)
    np.testing.assert_array_equal(cols.get(), ck.im2col_reference(x, size, strides, dilation,
                                                                  pads, out_size))
    dcols = rng.standard_normal(cols.shape).astype(dtype)
    dx = ck.col2im(cp.asarray(dcols), x_shape, size, strides, dilation, pads)
    np.testing.assert_allclose(dx.get(), ck.col2im_reference(dcols, x_shape, size, strides,
                                                             dilation, pads),
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("strides, padding", [(1, "same"), (2, "same"), (3, "valid")])
def test_conv2d_on_gpu_matches_the_engines_numpy_conv(dtype, strides, padding):
    import cupy as cp
    from micrograd_gen.ops.conv import ConvGeometry, conv2d_backward, conv2d_forward
    rng = np.random.default_rng(6)
    x, kernel, g = (rng.standard_normal(s).astype(dtype) for s in
                    ((3, 11, 13, 5), (3, 4, 5, 7), (3, 11, 13, 7)))
    geom = ConvGeometry.of(x.shape, kernel.shape, (strides, strides), padding)
    g = g[:, :geom.OH, :geom.OW].copy()
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ck.conv2d_forward(cp.asarray(x), cp.asarray(kernel), geom).get(),
                               conv2d_forward(x, kernel, geom), **tol)
    dx, dk = ck.conv2d_backward(cp.asarray(g), cp.asarray(x), cp.asarray(kernel), geom)
    want_dx, want_dk = conv2d_backward(g, x, kernel, geom)
    np.testing.assert_allclose(dx.get(), want_dx, **tol)
    np.testing.assert_allclose(dk.get(), want_dk, **tol)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("units, batch", [(1, 1), (7, 3), (128, 129)])
@pytest.mark.parametrize("feature_major", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lstm_cell_on_gpu_matches_references(units, batch, feature_major, dtype):
    import cupy as cp
    rng = np.random.default_rng(7)
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    state = (units, batch) if feature_major else (batch, units)
    z = (rng.standard_normal((4 * units, batch) if feature_major else (batch, 4 * units)) * 3
         ).astype(dtype)
    c_prev, dh, dc = (rng.standard_normal(state).astype(dtype) for _ in range(3))
    scale = (-1, -1, -2, -1)
    act, c, tanh_c, h = ck.lstm_cell_forward_reference(z, c_prev, feature_major, scale)
    got = [cp.asarray(z)] + [cp.empty(state, dtype) for _ in range(3)]
    ck.lstm_cell_forward(got[0], cp.asarray(c_prev), *got[1:], feature_major=feature_major,
                         scale=scale)
    for g, want in zip(got, (act, c, tanh_c, h)):
        np.testing.assert_allclose(g.get(), want, **tol)
    dz, dc_prev = ck.lstm_cell_backward_reference(act, c_prev, tanh_c, dh, dc, feature_major)
    got_dz, got_dc = cp.asarray(act), cp.asarray(dc)
    ck.lstm_cell_backward(got_dz, cp.asarray(c_prev), cp.asarray(tanh_c), cp.asarray(dh), got_dc,
                          feature_major=feature_major)
    np.testing.assert_allclose(got_dz.get(), dz, **tol)
    np.testing.assert_allclose(got_dc.get(), dc_prev, **tol)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("rows, classes", [(1, 1), (7, 3), (33, 257), (5, 15000)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_on_gpu_matches_references(rows, classes, dtype):
    import cupy as cp
    rng = np.random.default_rng(8)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    logits = (rng.standard_normal((rows, classes)) * 20).astype(dtype)
    labels = rng.integers(0, classes, rows).astype(np.int64)
    g = rng.standard_normal(rows).astype(dtype)
    loss, probs = ck.softmax_cross_entropy_forward_reference(logits, labels)
    got_loss, got_probs = ck.softmax_cross_entropy_forward(cp.asarray(logits), cp.asarray(labels))
    np.testing.assert_allclose(got_loss.get(), loss, **tol)
    np.testing.assert_allclose(got_probs.get(), probs, **tol)
    d = ck.softmax_cross_entropy_backward(got_probs, cp.asarray(labels), cp.asarray(g),
                                          out=got_probs)
    np.testing.assert_allclose(d.get(), ck.softmax_cross_entropy_backward_reference(
        probs, labels, g), **tol)


@pytest.mark.gpu
@gpu
def test_a_kernel_refuses_a_non_contiguous_output():
    import cupy as cp
    z = cp.zeros((8, 6), cp.float32)[:, ::3]          # (4U, N) = (8, 2), but strided
    c = cp.zeros((2, 2), cp.float32)
    with pytest.raises(ValueError, match="z must be a C-contiguous"):
        ck.lstm_cell_forward(z, c, c, c, c)
