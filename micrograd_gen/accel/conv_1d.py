"""Stride-1 convolutions whose kernel is one row of taps, 1 x k, on short rows (InceptionV3's 1x7
layers at 17x17 and below): each output pixel's window gathered into one row of columns, one
product.

  forward  columns (pixels, k*C): the k input pixels that output pixel (i, j) reads, taken
           from the zero-padded x seen as overlapping windows (one strided copy);
           y = columns @ K, the kernel read as (k*C, F)
  dX       the same correlation of dY, padded the other way round, with the kernel's taps in
           reverse and its in/out channels swapped: (pixels, k*F) @ (k*F, C)

Why. The shifted route (accel/conv.py) cannot join a stride-1 kernel's taps into one product (k
taps side by side would be rows k*C numbers wide that start C numbers apart: not a matrix BLAS
takes), so there a 1x7 layer is seven products with an inner size of C, each adding into the
whole output, and along the rows it computes the padding columns too and throws them away (23
columns for 17 at 11x17). One product with an inner size of 7*C runs near BLAS's full speed.
InceptionV3's 1x7 layers on one thread (inside a branch), fused ReLU, frozen, forward / dX in ms
(bench/README.md, "session 14"): at 11x17 160 -> 160 1.43 / 1.41 -> 1.12 / 1.17, 192 -> 192
1.62 / 1.84 -> 1.28 / 1.38; at 16x25 160 -> 160 2.10 / 2.09 -> 1.78 / 1.84. Kernel gradients
stay on the shifted route (per-tap products with a long inner side run well there).
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import kept
from .blas import gemm_into
from .conv_thin import _chunks
from .workers import for_chunks

# A chunk's columns are about this large (images, or bands of an image's rows), so that they and
# the chunk's output stay in the core's cache between the copy and the product.
_CHUNK_BYTES = 1 << 20
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# Rows at most this many times the kernel's padding columns wide (InceptionV3's 1x7 layers at
# DeepDream's octaves: 17 and 25 output columns, not 35). A DeepDream step with these layers
# here, paired against the shifted route: 204x306 (17 columns) 0.980, 285x428 (25) 0.989,
# 400x600 (35) 1.012; a k x 1 kernel computes no padding columns and was slower here (7x1
# 192 -> 192 at 23x35, one thread: fwd 4.85 -> 5.40 ms, dX 4.82 -> 5.43).
_MAX_ROW_PADDINGS = 6


def fits(geom, x, kernel):
    """True where this route computes a conv2d's forward and input gradient: a 1 x k kernel
    (k > 1) at stride 1, undilated, padded no more than k - 1 on a side, on rows short enough
    that the shifted route's padding columns are a sixth of what it computes or more, NumPy
    floats of one dtype."""
    return ((geom.sh, geom.sw, geom.dh, geom.dw) == (1, 1, 1, 1)
            and geom.kh == 1 and geom.kw > 1 and max(geom.pl, geom.pr) < geom.kw
            and geom.OW + geom.kw - 1 <= _MAX_ROW_PADDINGS * (geom.kw - 1)
            and type(x) is np.ndarray and type(kernel) is np.ndarray
            and x.dtype == kernel.dtype and x.dtype in _FLOATS)


def forward(x, kernel, geom, bias=None, relu=False):
    """y = conv2d(x, kernel) (+ bias, then ReLU when asked)."""
    kmat = np.ascontiguousarray(kernel).reshape(-1, kernel.shape[3])      # (k*C, F), tap-major
    return _correlate(x, kmat, (geom.kh, geom.kw), (geom.pt, geom.pb, geom.pl, geom.pr),
                      (geom.OH, geom.OW), bias, relu)


def input_gradient(g, kernel, geom, mask=None, frozen=False):
    """dX of y = conv2d(x, kernel) from g = dL/dy (times mask, a fused ReLU's, when given).

    Output pixel i read x[i + t - pad] through tap t, so x[m] gets g[m - t + pad] @ K[t]^T:
    with s = k - 1 - t, that is g padded by k - 1 - pad in front correlated with K[k - 1 - s]^T,
    the taps reversed and the channels swapped. A frozen kernel keeps that turned copy
    (accel/kept.py): making it costs 0.1-0.23 ms at 128-192 channels, comparing 0.03-0.05."""
    kh, kw = geom.kh, geom.kw
    flipped = (kept.derived(kernel, "1 x k dX", _turned) if frozen
               else _turned(kernel))                                          # (kh, kw, F, C)
    pads = (kh - 1 - geom.pt, geom.H - geom.OH + geom.pt,
            kw - 1 - geom.pl, geom.W - geom.OW + geom.pl)
    return _correlate(g, flipped.reshape(-1, geom.C), (kh, kw), pads, (geom.H, geom.W),
                      mask=mask)


def _turned(kernel):
    """The kernel's taps in reverse, its in/out channels swapped: (kh, kw, F, C), contiguous."""
    return np.ascontiguousarray(kernel[::-1, ::-1].transpose(0, 1, 3, 2))


def _correlate(src, kmat, kernel_size, pads, out_size, bias=None, relu=False, mask=None):
    """y (N, OH, OW, F): y[n, i, j] = sum over taps (a, b) of padded[n, i + a, j + b] @ the
    kernel's tap (a, b), kmat (kh*kw*C, F) holding the taps in row-major order; padded is
    src (times mask) with pads (top, bottom, left, right) of zeros."""
    N, H, W, C = src.shape
    (kh, kw), (OH, OW), F = kernel_size, out_size, kmat.shape[1]
    top, bottom, left, right = pads
    padded = np.empty((N, H + top + bottom, W + left + right, C), src.dtype)
    padded[:, :top] = 0
    padded[:, top + H:] = 0
    padded[:, top:top + H, :left] = 0
    padded[:, top:top + H, left + W:] = 0
    inside = padded[:, top:top + H, left:left + W]
    if mask is None:
        inside[...] = src
    else:
        np.multiply(src, mask, out=inside)
    sn, sh, sw, sc = padded.strides
    # windows[n, i, j, a, b] = padded[n, i + a, j + b]: every output pixel's window, no copy
    windows = as_strided(padded, (N, OH, OW, kh, kw, C), (sn, sh, sw, sh, sw, sc),
                         writeable=False)
    y = np.empty((N, OH, OW, F), src.dtype)

    def work(chunk, slot):
        n0, n1, i0, i1 = chunk
        columns = np.empty((n1 - n0, i1 - i0, OW, kh, kw, C), src.dtype)
        columns[...] = windows[n0:n1, i0:i1]
        out = y[n0:n1, i0:i1].reshape(-1, F)
        gemm_into(columns.reshape(-1, kh * kw * C), kmat, out)
        if bias is not None:
            out += bias
        if relu:
            np.maximum(out, 0, out=out)
    row_bytes = OW * kh * kw * C * src.itemsize
    for_chunks(_chunks(N, OH, row_bytes, _CHUNK_BYTES), work, np)
    return y
