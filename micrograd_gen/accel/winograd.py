"""Winograd's minimal filtering for 3x3 stride-1 convolutions, F(4x4, 3x3) (Lavin & Gray, 2016).

A direct 3x3 convolution spends 9 multiplies per output pixel per (input, output) channel pair.
Winograd computes a 4x4 block of outputs from the 6x6 input tile around it with 36 multiplies
instead of 16 x 9 = 144: each tile d and the kernel g are carried into a 6x6 "transform" space,

    V = B^T d B        (input tile, 6x6)        U = G g G^T        (kernel, 3x3 -> 6x6)
    Y = A^T (U * V) A  (elementwise product, back to the 4x4 outputs)

and, summed over input channels, the elementwise product at each of the 36 transform points is
one matrix product: M[p] (tiles, F) = V[p] (tiles, C) @ U[p] (C, F). So a convolution becomes 36
GEMMs a quarter the size of the direct method's, plus the two transforms, which are linear maps
applied with small matrix products (kron(B^T, B^T) is 36x36, kron(A^T, A^T) 16x36).

The catch is rounding: the transforms' coefficients (up to 8, and 1/24 in G) lose about two
decimal digits against a direct float32 product; errors stay near 1e-5 of the largest output,
which tests/test_winograd.py holds against the reference ops on drawn shapes, and which keeps
the Keras agreement tests on the real VGG19 weights within their bounds.

The input gradient of a stride-1 convolution is itself a stride-1 convolution of the output
gradient with the kernel turned 180 degrees and its in/out channels swapped, so backward's dX
uses the same routine. The kernel gradient is left to the direct method.

Work is cut into bands of tile rows: each band's transformed tiles stay in cache through the
transform, the 36 products and the inverse transform, and bands go to the worker threads, each
on single-threaded BLAS.

Not yet routed by accel/conv.py. Alone, one VGG19 layer at batch 3 takes 1.15x (64 channels) to
2.3x (512) less CPU time than the shifted route; inside the style-transfer evaluation it took
15% less CPU time but 4-12% more wall time, because its padding copy, final crop and ReLU mask
run on one core while the other waits (bench/README.md, "Winograd"). Those serial passes have
to move into the bands before it pays.
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from .workers import for_chunks

_BT = np.array([[4, 0, -5, 0, 1, 0],
                [0, -4, -4, 1, 1, 0],
                [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0],
                [0, 4, 0, -5, 0, 1]], np.float64)
_G = np.array([[1 / 4, 0, 0],
               [-1 / 6, -1 / 6, -1 / 6],
               [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6],
               [1 / 24, -1 / 12, 1 / 6],
               [0, 0, 1]], np.float64)
_AT = np.array([[1, 1, 1, 1, 1, 0],
                [0, 1, -1, 2, -2, 0],
                [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]], np.float64)
# Both sides of a tile at once: (kron(P, P) @ vec(X))[a*n + b] = (P X P^T)[a, b].
_INPUT_TRANSFORM = np.kron(_BT, _BT)     # (36, 36)
_KERNEL_TRANSFORM = np.kron(_G, _G)      # (36, 9)
_OUTPUT_TRANSFORM = np.kron(_AT, _AT)    # (16, 36)

# Tiles per band: the 36 products (tiles, C) @ (C, F) need a few hundred rows to run near
# BLAS's full speed; more only makes the band's buffers fall out of cache.
_BAND_TILES = 256


def applies(x, kernel, strides, dilation):
    """True where this path computes conv2d: NumPy float32/float64, a 3x3 kernel, stride 1, no
    dilation."""
    return (type(x) is np.ndarray and x.dtype in (np.float32, np.float64)
            and kernel.dtype == x.dtype and tuple(kernel.shape[:2]) == (3, 3)
            and tuple(strides) == (1, 1) and tuple(dilation) == (1, 1))


def transform_kernel(kernel):
    """(3, 3, C, F) -> (36, C, F): U[p] = (G g G^T)[p] for every (c, f) pair."""
    _, _, C, F = kernel.shape
    transform = _KERNEL_TRANSFORM.astype(kernel.dtype)
    return (transform @ np.ascontiguousarray(kernel).reshape(9, C * F)).reshape(36, C, F)


def conv3x3(x, kernel, pads, bias=None, relu=False, mask=None):
    """y = conv2d(x, kernel) for a 3x3 stride-1 kernel; pads = (top, bottom, left, right).

    x (N, H, W, C), kernel (3, 3, C, F) -> y (N, H + top + bottom - 2, W + left + right - 2, F),
    plus bias (F,) and max(., 0) when asked; with `mask` (shaped like x) the input is x * mask
    (a fused ReLU's backward). y is a view of a buffer grown to whole 4x4 tiles.

    Everything past the kernel's transform happens band by band on the worker threads: the
    padding (each band copies its own rows into a zero-bordered slab), the mask, the 36 products,
    the bias and the ReLU. Done once over the whole array beforehand, the padding copy alone
    kept one core idle for longer than the second core saved."""
    N, H, W, C = x.shape
    F = kernel.shape[3]
    top, bottom, left, right = pads
    OH, OW = H + top + bottom - 2, W + left + right - 2
    th, tw = -(-OH // 4), -(-OW // 4)           # tiles down and across; the last may overhang
    dtype = x.dtype
    U = transform_kernel(kernel)                                              # (36, C, F)
    y = np.empty((N, 4 * th, 4 * tw, F), dtype)
    y_tiles = y.reshape(N, th, 4, tw, 4, F)
    input_transform = _INPUT_TRANSFORM.astype(dtype)
    output_transform = _OUTPUT_TRANSFORM.astype(dtype)

    # Bands run over tile rows of all images at once (global row n*th + ty), so that small
    # images (VGG19's block5 at 25x37 has 70 tiles) still give each product a few hundred rows.
    # At least two bands, one per worker thread.
    rows_per_band = max(1, min(-(-_BAND_TILES // tw), -(-N * th // 2)))
    bands = [(r0, min(r0 + rows_per_band, N * th)) for r0 in range(0, N * th, rows_per_band)]

    def segments(r0, r1):
        """(image, first tile row, stop tile row, first tile in the band) of a band."""
        offset = 0
        for n in range(r0 // th, (r1 - 1) // th + 1):
            t0, t1 = max(r0 - n * th, 0), min(r1 - n * th, th)
            yield n, t0, t1, offset
            offset += (t1 - t0) * tw

    def band(chunk, slot):
        r0, r1 = chunk
        tiles = (r1 - r0) * tw
        # d: the 6x6 input tiles of this band, laid out (36, tiles, C): one row per tile point.
        d = np.empty((36, tiles, C), dtype)
        for n, t0, t1, first in segments(r0, r1):
            slab = _padded_rows(x, mask, n, 4 * t0 - top, 4 * (t1 - t0) + 2, left, 4 * tw + 2)
            sh, sw, sc = slab.strides
            window = as_strided(slab, (6, 6, t1 - t0, tw, C), (sh, sw, 4 * sh, 4 * sw, sc))
            d[:, first:first + (t1 - t0) * tw].reshape(6, 6, t1 - t0, tw, C)[...] = window
        V = (input_transform @ d.reshape(36, tiles * C)).reshape(36, tiles, C)   # B^T d B
        M = np.matmul(V, U)                                                     # (36, tiles, F)
        Y = (output_transform @ M.reshape(36, tiles * F)).reshape(4, 4, tiles, F)  # A^T M A
        for n, t0, t1, first in segments(r0, r1):
            out = y_tiles[n, t0:t1].transpose(1, 3, 0, 2, 4)           # (4, 4, rows, tw, F)
            part = Y[:, :, first:first + (t1 - t0) * tw].reshape(4, 4, t1 - t0, tw, F)
            if bias is not None:
                np.add(part, bias, out=out)
            else:
                out[...] = part
            if relu:
                block = y[n, 4 * t0:4 * t1]
                np.maximum(block, 0, out=block)

    for_chunks(bands, band, np)
    return y[:, :OH, :OW]


def _padded_rows(x, mask, n, row0, rows, col0, cols):
    """Rows row0 .. row0 + rows of image n of x (times mask), zero-padded: (rows, cols, C) with
    x's column 0 at column col0; rows outside the image are zeros."""
    H, W, C = x.shape[1:]
    slab = np.empty((rows, cols, C), x.dtype)
    lo, hi = min(max(row0, 0), H), max(min(row0 + rows, H), 0)
    hi = max(hi, lo)
    slab[:lo - row0] = 0
    slab[hi - row0:] = 0
    inside = slab[lo - row0:hi - row0]
    inside[:, :col0] = 0
    inside[:, col0 + W:] = 0
    if mask is None:
        inside[:, col0:col0 + W] = x[n, lo:hi]
    else:
        np.multiply(x[n, lo:hi], mask[n, lo:hi], out=inside[:, col0:col0 + W])
    return slab


def conv3x3_input_gradient(g, kernel, pads, input_shape, mask=None):
    """dX of y = conv2d(x, kernel) with pads (top, bottom, left, right), from g = dL/dy (times
    mask, when given).

    x[i] reaches y[i - a + top] through tap a, so dX is g padded by (2 - top, 2 - bottom) etc.
    and correlated with the kernel turned 180 degrees, its in/out channels swapped. Where the
    forward padded more than 2 on a side (never for 'same'/'valid' 3x3) the pad is negative:
    None, for the caller's other route."""
    H, W = input_shape[1:3]
    top, bottom, left, right = pads
    pad_h = (2 - top, H - g.shape[1] - (2 - top) + 2)
    pad_w = (2 - left, W - g.shape[2] - (2 - left) + 2)
    if min(pad_h + pad_w) < 0:
        return None
    flipped = np.ascontiguousarray(kernel[::-1, ::-1].transpose(0, 1, 3, 2))    # (3, 3, F, C)
    return conv3x3(g, flipped, (pad_h[0], pad_h[1], pad_w[0], pad_w[1]), mask=mask)
