"""Thin convolutions: few input channels (an RGB or MNIST picture in) or few output channels (a
picture out), where a per-tap product of the shifted route (accel/conv.py) is too thin for BLAS.

Stacking the taps fixes that: one product per chunk with inner (or outer) size kh*kw times the
thin side. The stacked side is kept channel-major, as (channels, N, rows, cols), so that every
tap's window is a strided slice of it and stacking is kh*kw slice copies, and nothing is ever
padded: a tap's window is clipped to the pixels that exist, and the rest of its block stays zero.

  few inputs C:   cols (T*C, pixels) = the T shifted windows of x; y = cols^T @ K (T*C, F),
                  dK = cols @ dY, and dX scatters K @ dY^T back through the same windows.
  few outputs F:  Z (T*F, pixels) = K^T @ x^T at every input pixel, y = the sum of Z's T shifted
                  windows; dY's windows, stacked, give dX = windows^T @ K^T and dK = windows @ x.

Work is cut into chunks that each own a block of rows (whole images, or a band of one image's
rows) of the array they write, reading the few neighbouring rows they need, so chunks never
write the same element and run side by side on the worker threads.
"""
import numpy as np

from . import blas
from .blas import gemm_into
from .linalg import column_sums
from .workers import chunk_pool, even_cuts, for_chunks

# Stacked windows (and output) per chunk. A chunk's Python side, a few dozen slice copies, costs
# about 0.1 ms, so chunks are long: VGG19's first layer at batch 3 (400x600) took 89 ms forward
# in chunks of 512 KB, 46 ms at 2 MB, 40 ms at 8 MB, 48 ms at 32 MB.
_CHUNK_BYTES = 1 << 23


def _span(lo, hi, stride, offset, length):
    """(i0, i1): the i in [lo, hi) whose source index i*stride + offset lies in [0, length)."""
    i0 = max(lo, -(offset // stride))
    return i0, max(i0, min(hi, (length - 1 - offset) // stride + 1))


def _taps(geom):
    """(tap number, row offset, column offset): output (i, j) reads input
    (i*sh + row offset, j*sw + column offset) through that tap."""
    return [(a * geom.kw + b, a * geom.dh - geom.pt, b * geom.dw - geom.pl)
            for a in range(geom.kh) for b in range(geom.kw)]


def _chunks(images, rows, row_bytes, chunk_bytes=_CHUNK_BYTES):
    """(n0, n1, r0, r1) blocks covering images x rows, about chunk_bytes each and a whole
    number of them per thread: whole images where there are enough, else bands of rows."""
    pieces = chunk_pool()[1]
    wanted = max(pieces, -(-images * rows * row_bytes // chunk_bytes))
    wanted = -(-wanted // pieces) * pieces
    if images >= wanted or images >= 4 * pieces:
        return [(n0, n1, 0, rows) for n0, n1 in even_cuts(images, min(wanted, images))]
    bands = even_cuts(rows, -(-wanted // images))
    return [(n, n + 1, r0, r1) for n in range(images) for r0, r1 in bands]


def _tap_windows(geom, i0, i1, h0, h1):
    """For every tap that links some of output rows i0..i1 to some of input rows h0..h1:
    (tap number, (rows, columns) of its window in the output block, the same in the input
    block), each block's rows counted from its first (i0, h0)."""
    for t, dr, dc in _taps(geom):
        a0, a1 = _span(i0, i1, geom.sh, dr - h0, h1 - h0)
        b0, b1 = _span(0, geom.OW, geom.sw, dc, geom.W)
        if a0 < a1 and b0 < b1:
            yield t, (slice(a0 - i0, a1 - i0), slice(b0, b1)), (
                slice(a0 * geom.sh + dr - h0, (a1 - 1) * geom.sh + dr - h0 + 1, geom.sh),
                slice(b0 * geom.sw + dc, (b1 - 1) * geom.sw + dc + 1, geom.sw))


def _gather_windows(src, geom, i0, i1, blocks):
    """blocks[t] (..., i1 - i0, OW) = the window of src (..., H, W) that output rows i0..i1 read
    through tap t, zeros where the window leaves the picture. Picture rows and columns are the
    last two axes of both (the leading ones match: channels and images, in either order)."""
    empty = set(range(geom.kh * geom.kw))
    for t, (rows, cols), (in_rows, in_cols) in _tap_windows(geom, i0, i1, 0, geom.H):
        block = blocks[t]
        # zeros around the window only: zeroing all of the block first is one more pass over it
        block[..., :rows.start, :] = 0
        block[..., rows.stop:, :] = 0
        block[..., rows, :cols.start] = 0
        block[..., rows, cols.stop:] = 0
        block[..., rows, cols] = src[..., in_rows, in_cols]
        empty.discard(t)
    for t in empty:
        blocks[t][...] = 0


def _scatter_windows(blocks, geom, h0, h1, lo, hi, out):
    """The adjoint of _gather_windows for input rows h0..h1: out (..., h1 - h0, W) = the sum
    over taps t of blocks[t] (..., output rows lo..hi, OW) laid back onto the input pixels it
    was read from."""
    out[...] = 0
    for t, (rows, cols), (in_rows, in_cols) in _tap_windows(geom, lo, hi, h0, h1):
        out[..., in_rows, in_cols] += blocks[t][..., rows, cols]


def _tap_blocks(stacked, k):
    """The T blocks of k rows each of a tap-stacked (T*k, ...) array."""
    return [stacked[t * k:(t + 1) * k] for t in range(len(stacked) // k)]


def _input_rows(geom, i0, i1):
    """The input rows that output rows i0..i1 read through some tap, clipped to the picture."""
    return (max(0, i0 * geom.sh - geom.pt),
            min(geom.H, (i1 - 1) * geom.sh + (geom.kh - 1) * geom.dh - geom.pt + 1))


def _output_rows(geom, h0, h1):
    """The output rows that read input rows h0..h1 through some tap."""
    spans = [_span(0, geom.OH, geom.sh, a * geom.dh - geom.pt - h0, h1 - h0)
             for a in range(geom.kh)]
    spans = [s for s in spans if s[0] < s[1]]
    return (min(s[0] for s in spans), max(s[1] for s in spans)) if spans else (0, 0)


def _finish(out, bias, relu):
    if bias is not None:
        out += bias
    if relu:
        np.maximum(out, 0, out=out)


# ---- few input channels -----------------------------------------------------------------------

def thin_input_forward(x, kernel, geom, bias=None, relu=False):
    T, C, F = geom.kh * geom.kw, geom.C, kernel.shape[3]
    xt = np.ascontiguousarray(x.transpose(3, 0, 1, 2))                  # (C, N, H, W)
    kmat = kernel.reshape(T * C, F)                                     # rows in tap order
    y = np.empty((geom.N, geom.OH, geom.OW, F), x.dtype)

    def work(chunk, slot):
        n0, n1, i0, i1 = chunk
        cols = np.empty((T * C, n1 - n0, i1 - i0, geom.OW), x.dtype)
        _gather_windows(xt[:, n0:n1], geom, i0, i1, _tap_blocks(cols, C))
        out = y[n0:n1, i0:i1].reshape(-1, F)
        gemm_into(cols.reshape(T * C, -1).T, kmat, out)                # (px, T*C) @ (T*C, F)
        _finish(out, bias, relu)
    for_chunks(_chunks(geom.N, geom.OH, 4 * geom.OW * (T * C + F)), work, np)
    return y


def thin_input_backward(g, x, kernel, geom, need_dx, need_dk, need_db=False, positive=None):
    """(dX, dK, dBias); `positive` is a fused ReLU's mask. When only dK (and dBias) is wanted
    (a network's first layer), the mask and the bias's sums are taken chunk by chunk on the
    workers, each chunk's rows of g while they are in cache, instead of two passes over all of
    g on one core first (the VAE encoder's first layer's backward 1.80 -> 1.50 ms;
    bench/README.md, session 17)."""
    T, C, F = geom.kh * geom.kw, geom.C, g.shape[3]
    in_chunks = need_dk and not need_dx      # dK's chunks own their rows of g; dX's do not
    if positive is not None and not in_chunks:
        g, positive = g * positive, None
    g = np.ascontiguousarray(g)
    dx = dk = db = None
    if need_dx:
        kmat = kernel.reshape(T * C, F)
        dxt = np.empty((C, geom.N, geom.H, geom.W), g.dtype)            # (C, N, H, W)

        def work_dx(chunk, slot):
            n0, n1, h0, h1 = chunk
            lo, hi = _output_rows(geom, h0, h1)
            z = np.empty((T * C, n1 - n0, hi - lo, geom.OW), g.dtype)
            # (T*C, F) @ (F, px): every tap's share of each output pixel's gradient
            gemm_into(kmat, g[n0:n1, lo:hi].reshape(-1, F).T, z.reshape(T * C, -1))
            _scatter_windows(_tap_blocks(z, C), geom, h0, h1, lo, hi, dxt[:, n0:n1, h0:h1])
        for_chunks(_chunks(geom.N, geom.H, 4 * geom.W * (T * C * geom.sh + C)), work_dx, np)
        dx = dxt.transpose(1, 2, 3, 0)
    if need_dk:
        xt = np.ascontiguousarray(x.transpose(3, 0, 1, 2))
        partial = {}                                         # (dK, dBias) sums per thread
        sums_here = need_db and in_chunks

        def work_dk(chunk, slot):
            n0, n1, i0, i1 = chunk
            cols = np.empty((T * C, n1 - n0, i1 - i0, geom.OW), g.dtype)
            _gather_windows(xt[:, n0:n1], geom, i0, i1, _tap_blocks(cols, C))
            rows = g[n0:n1, i0:i1]
            if positive is not None:
                rows = rows * positive[n0:n1, i0:i1]
            rows = rows.reshape(-1, F)
            first = slot not in partial
            if first:
                partial[slot] = np.empty((T * C, F), g.dtype), np.empty(F, g.dtype)
            # (T*C, px) @ (px, F), summed over chunks
            gemm_into(cols.reshape(T * C, -1), rows, partial[slot][0], accumulate=not first)
            if sums_here:
                blas.column_sums(rows, partial[slot][1], accumulate=not first)
        for_chunks(_chunks(geom.N, geom.OH, 4 * geom.OW * (T * C + F)), work_dk, np, fixed=True)
        dk, db = partial[0]
        for slot in range(1, len(partial)):
            dk += partial[slot][0]
            if sums_here:
                db += partial[slot][1]
        dk = dk.reshape(geom.kh, geom.kw, C, F)
        db = db if sums_here else None                # else never written: not a sum
    if need_db and db is None:
        db = column_sums(g.reshape(-1, F))
    return dx, dk, db


# ---- few output channels ----------------------------------------------------------------------

def thin_output_forward(x, kernel, geom, bias=None, relu=False):
    T, C, F = geom.kh * geom.kw, geom.C, kernel.shape[3]
    # (C, T*F): column t*F + f is tap t's kernel for filter f. Z pixel-major, x as it lies:
    # the product reads x once in order (the filter-major K^T @ x^T took 1.8x as long for the
    # VAE's last layer), and the window sums read Z's taps F numbers apart, as fast.
    kmat = np.ascontiguousarray(kernel.reshape(T, C, F).transpose(1, 0, 2)).reshape(C, T * F)
    y = np.empty((geom.N, geom.OH, geom.OW, F), x.dtype)

    def work(chunk, slot):
        n0, n1, i0, i1 = chunk
        h0, h1 = _input_rows(geom, i0, i1)
        z = np.empty((n1 - n0, h1 - h0, geom.W, T, F), x.dtype)
        # (px, C) @ (C, T*F): every tap's contribution from each input pixel
        gemm_into(x[n0:n1, h0:h1].reshape(-1, C), kmat, z.reshape(-1, T * F))
        # tap-major within each pixel row, so that a tap's window is whole runs of W*F numbers:
        # read in place, its F numbers a pixel make NumPy's add loop F long (DCGAN's last
        # layer, F = 3: 90 -> 80 ms with this copy)
        taps = np.empty((n1 - n0, h1 - h0, T, geom.W, F), x.dtype)
        taps[...] = z.transpose(0, 1, 3, 2, 4)
        out = y[n0:n1, i0:i1]
        out[...] = 0
        for t, (rows, cols), (in_rows, in_cols) in _tap_windows(geom, i0, i1, h0, h1):
            out[:, rows, cols] += taps[:, in_rows, t, in_cols]
        _finish(out, bias, relu)
    for_chunks(_chunks(geom.N, geom.OH, 4 * geom.W * geom.sh * (C + T * F)), work, np)
    return y


def thin_output_backward(g, x, kernel, geom, need_dx, need_dk, need_db=False, positive=None):
    T, C, F = geom.kh * geom.kw, geom.C, g.shape[3]
    if positive is not None:
        g = g * positive
    gt = np.ascontiguousarray(g.transpose(3, 0, 1, 2))                  # (F, N, OH, OW)
    dx = kmat_t = None
    if need_dx:
        dx = np.empty((geom.N, geom.H, geom.W, C), g.dtype)
        kmat_t = np.ascontiguousarray(kernel.reshape(T, C, F).transpose(0, 2, 1)).reshape(T * F, C)
    partial = {}                                                        # dK sums per thread

    def work(chunk, slot):
        n0, n1, h0, h1 = chunk
        # dY's windows onto input rows h0..h1: the gradient each pixel gets through each tap
        windows = np.empty((T * F, n1 - n0, h1 - h0, geom.W), g.dtype)
        windows[...] = 0
        for t, (rows, cols), (in_rows, in_cols) in _tap_windows(geom, 0, geom.OH, h0, h1):
            windows[t * F:(t + 1) * F, :, in_rows, in_cols] = gt[:, n0:n1, rows, cols]
        windows = windows.reshape(T * F, -1)
        if need_dx:
            # (px, T*F) @ (T*F, C)
            gemm_into(windows.T, kmat_t, dx[n0:n1, h0:h1].reshape(-1, C))
        if need_dk:
            first = slot not in partial
            if first:
                partial[slot] = np.empty((T * F, C), g.dtype)
            # (T*F, px) @ (px, C), summed over chunks
            gemm_into(windows, x[n0:n1, h0:h1].reshape(-1, C), partial[slot],
                      accumulate=not first)
    for_chunks(_chunks(geom.N, geom.H, 4 * geom.W * (C + T * F)), work, np, fixed=True)
    dk = None
    if need_dk:
        dk = partial[0]
        for slot in range(1, len(partial)):
            dk += partial[slot]
        dk = np.ascontiguousarray(dk.reshape(T, F, C).transpose(0, 2, 1)).reshape(
            geom.kh, geom.kw, C, F)
    return dx, dk, gt.sum(axis=(1, 2, 3)) if need_db else None
