"""Strided convolutions whose kernel trains (the VAE encoder's 14x14x32 -> 64 layer, the DCGAN
discriminator's two 4x4 stride-2 layers after its first): x's windows gathered once, kept from
forward to backward for the kernel's gradient.

  forward  columns (N*OH*OW, kh*kw*C) = every output pixel's window of x, tap-major;
           y = columns @ K, K read as (kh*kw*C, F)
  dK       = columns^T @ dY: one product, with the columns forward kept
  dX       dColumns = dY @ K^T, laid back onto the windows they were read from (a chunk of
           whole images at a time, so that no two chunks add into the same pixel)

Why. The shifted route's dK is one product per tap (or pair of taps), each (C, F) = 32 x 64 for
the VAE's second layer with an inner size of N*OH*OW = 6272: BLAS runs those at 70 GF/s, the one
product over the columns (288 x 6272 x 64) at 190 (1.2 ms against 3.3). The gather costs about
what the forward's per-tap products lose to the single one, so forward stays level; dX, from
whole-image chunks in cache, 3.0 -> 2.75 ms. The columns, as large as x's windows, are kept only
up to _MAX_COLUMN_BYTES. Frozen kernels (DeepDream, style transfer) have no dK to speed up and
stay on the shifted route.

A transposed convolution's backward is the same pair of products: its dX is conv2d's forward of
g, its dK conv2d's kernel gradient with x and g swapped (dK = columns(g)^T @ x), so the columns
of g made for the one serve the other (transpose_backward). Taken only where they are small
(_MAX_TRANSPOSE_COLUMN_BYTES): there the shifted route's wide layout carries the most junk rows
(a 7x7 picture is 8x8 in it) and the columns cost little to gather. A fused ReLU's mask and the
bias's gradient (g's column sums) are taken there too, a chunk of images at a time on the
workers while the chunk is in cache, instead of two passes of their own over all of g, the sums
on one core below linalg's _MIN_SUM_SIZE: the VAE step 0.987 (bench/README.md, session 17).
"""
import numpy as np

from . import blas
from .blas import gemm_into
from .conv_thin import _chunks, _gather_windows, _scatter_windows
from .linalg import column_sums, matmul
from .workers import chunk_pool, even_cuts, for_chunks

_MAX_COLUMN_BYTES = 64 << 20
# Measured against the shifted route (backward with dX, dK, dBias and the fused ReLU's mask):
# the VAE decoder's 7x7x64 -> 14x14x64 layer at batch 128, 14.5 MB of columns, 10.7 -> 8.9 ms;
# its 14x14x64 -> 28x28x32 (29 MB) and the DCGAN generator's 8x8x128 -> 16x16x128 (16 MB) were
# level on session 10's Intel machine (21.4-22.2 -> 22.0-22.9 ms; 14.5-15.4 -> 14.6-14.8), but
# on session 15's AMD one the first 32.4 -> 28.2 ms, the VAE step 0.993, 0.980 and 0.985 and
# bench/run.py's conv_transpose_dcgan1_fwdbwd 0.940 (paired steps, bench/README.md).
_MAX_TRANSPOSE_COLUMN_BYTES = 32 << 20
# dX's columns are made per chunk of images, about this large, to stay in cache.
_CHUNK_BYTES = 1 << 22


def _column_bytes(geom, itemsize):
    return geom.N * geom.OH * geom.OW * geom.kh * geom.kw * geom.C * itemsize


def fits(geom, F, x, kernel, kept):
    """True where this route takes a conv2d: a strided kernel wider than 1x1 that trains (a
    `kept` dict to leave the columns in), NumPy arrays of one dtype, columns small enough."""
    return (kept is not None and (geom.sh, geom.sw) != (1, 1) and geom.kh * geom.kw > 1
            and type(x) is np.ndarray and type(kernel) is np.ndarray and x.dtype == kernel.dtype
            and _column_bytes(geom, x.itemsize) <= _MAX_COLUMN_BYTES)


def transpose_fits(geom, x, g, kernel):
    """True where transpose_backward takes a conv2d_transpose's backward (geom: the conv2d whose
    input gradient it is): as fits, with the smaller bound on g's columns."""
    return (fits(geom, x.shape[3], g, kernel, {}) and x.dtype == g.dtype
            and _column_bytes(geom, g.itemsize) <= _MAX_TRANSPOSE_COLUMN_BYTES)


def transpose_backward(g, x, kernel, geom, need_db, relu_output=None):
    """conv2d_transpose's (dX, dK, dBias or None): dX = conv2d(g, kernel) by forward, dK from
    the same columns of g against x. With `relu_output` (the forward's fused ReLU's y) g is
    masked by y > 0 first, image by image as its columns are gathered."""
    kept = {}
    dx = forward(g, kernel, geom, None, False, kept, relu_output, need_sums=need_db)
    dk, _ = kernel_gradient(x, kept.pop("columns"), geom, False)
    return dx, dk, kept.pop("sums", None)


def forward(x, kernel, geom, bias, relu, kept, relu_output=None, need_sums=False):
    """y = conv2d(x, kernel) (+ bias, then ReLU when asked); the columns go to kept["columns"].
    For a transposed convolution's backward (x is its g): `relu_output` masks x by
    relu_output > 0 before its windows are read, and need_sums leaves the (masked) x's column
    sums, the bias's gradient, in kept["sums"]."""
    T, C, F = geom.kh * geom.kw, geom.C, kernel.shape[3]
    columns = np.empty((geom.N, geom.OH, geom.OW, T, C), x.dtype)
    y = np.empty((geom.N, geom.OH, geom.OW, F), x.dtype)
    kmat = kernel.reshape(T * C, F)                                  # rows in tap order
    chunks = _chunks(geom.N, geom.OH, geom.OW * (T * C + F) * x.itemsize)
    whole_images = all((i0, i1) == (0, geom.OH) for _, _, i0, i1 in chunks)
    if relu_output is not None and not whole_images:   # bands of one image read shared rows
        x, relu_output = x * (relu_output > 0), None
    sums = [None] * len(chunks) if need_sums and whole_images else None

    def work(numbered, slot):
        number, (n0, n1, i0, i1) = numbered
        images = x[n0:n1]
        if relu_output is not None:
            images = images * (relu_output[n0:n1] > 0)
        block = columns[n0:n1, i0:i1]
        # channels moved to the front (views): the windows are the last two axes
        _gather_windows(np.moveaxis(images, 3, 0), geom, i0, i1,
                        [np.moveaxis(block[:, :, :, t], 3, 0) for t in range(T)])
        if sums is not None:
            sums[number] = blas.column_sums(images.reshape(-1, C))
        out = y[n0:n1, i0:i1].reshape(-1, F)
        gemm_into(block.reshape(-1, T * C), kmat, out)
        if bias is not None:
            out += bias
        if relu:
            np.maximum(out, 0, out=out)
    for_chunks(list(enumerate(chunks)), work, np)
    kept["columns"] = columns
    if need_sums:
        if sums is None:
            kept["sums"] = column_sums(x.reshape(-1, C))
        else:                                # added in chunk order: the same every call
            kept["sums"] = sums[0]
            for part in sums[1:]:
                kept["sums"] += part
    return y


def kernel_gradient(g, columns, geom, need_db):
    """(dK (kh, kw, C, F), dBias or None) from the columns forward kept (g already masked by a
    fused ReLU, where there is one)."""
    F = g.shape[3]
    g = np.ascontiguousarray(g).reshape(-1, F)
    dk = matmul(columns.reshape(g.shape[0], -1).T, g)
    if dk is NotImplemented:                          # before the worker pool: NumPy's own
        dk = columns.reshape(g.shape[0], -1).T @ g
    return dk.reshape(geom.kh, geom.kw, geom.C, F), column_sums(g) if need_db else None


def input_gradient(g, kernel, geom):
    """dX (N, H, W, C) through dColumns = dY @ K^T, chunk by chunk of whole images (g already
    masked by a fused ReLU, where there is one)."""
    T, C, F = geom.kh * geom.kw, geom.C, g.shape[3]
    dx = np.empty((geom.N, geom.H, geom.W, C), g.dtype)
    kmat_t = kernel.reshape(T * C, F).T                              # (F, T*C), a view
    image_bytes = geom.OH * geom.OW * T * C * g.itemsize
    pieces = chunk_pool()[1]
    chunks = -(-max(pieces, geom.N * image_bytes // _CHUNK_BYTES) // pieces) * pieces

    def work(images, slot):
        n0, n1 = images
        d_columns = np.empty((n1 - n0, geom.OH, geom.OW, T, C), g.dtype)
        gemm_into(np.ascontiguousarray(g[n0:n1]).reshape(-1, F), kmat_t,
                  d_columns.reshape(-1, T * C))
        _scatter_windows([np.moveaxis(d_columns[:, :, :, t], 3, 0) for t in range(T)], geom,
                         0, geom.H, 0, geom.OH, np.moveaxis(dx[n0:n1], 3, 0))
    for_chunks(even_cuts(geom.N, min(geom.N, chunks)), work, np)
    return dx
