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
uses the same routine. The kernel gradient runs the same products backwards, transform point by
transform point (conv3x3_kernel_gradient).

Work is cut into bands of tile rows: each band pads its own rows, and its transformed tiles stay
in cache through the transform, the 36 products and the inverse transform; bands go to the
worker threads, each on single-threaded BLAS.

accel/conv.py routes 3x3 stride-1 convolutions with enough channels and tiles here. Per VGG19
layer at the style transfer's batch of 3 this takes 0.5-0.77x the shifted route's time
(bench/README.md, "Winograd").
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import kept
from .blas import column_sums, gemm_into
from ..ops.linalg import matmul_arrays
from .workers import chunk_pool, even_cuts, for_chunks

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
# On one thread, a band's products (36, tiles, F) at most this many bytes (of float32): its
# output transform then reads them from the core's 1 MB cache.
_ALONE_BAND_BYTES = 1 << 20
# The kernel gradient's bands hold at least this many tiles x input channels (block1_conv2's dK,
# 64 channels: 87 ms at 256 tiles a band, 76 ms at 512; 128 channels were best at 256).
_DK_BAND_WIDTH = 1 << 15
# Fewer bands than this are cut along the output channels too.
_MIN_BANDS = 4


def transform_kernel(kernel, flipped=False):
    """(3, 3, C, F) -> (36, C, F): U[p] = (G g G^T)[p] for every (c, f) pair; with flipped=True,
    of the kernel turned 180 degrees, which is its taps in reverse order: the same product with
    the transform's columns reversed, so the kernel is not copied."""
    _, _, C, F = kernel.shape
    transform = np.ascontiguousarray(_KERNEL_TRANSFORM[:, ::-1] if flipped else _KERNEL_TRANSFORM,
                                     kernel.dtype)
    kernel = np.ascontiguousarray(kernel).reshape(9, C * F)
    return matmul_arrays(transform, kernel).reshape(36, C, F)   # 38 MB for 512 x 512: shared


# With few tiles the kernel's transform costs about as much as the products: VGG19's block5 for
# one picture (70 tiles) spends 4 of its 15 ms writing and reading U, 38 MB for 512 x 512. A
# frozen kernel keeps its U (and its turned U, for dX) there (accel/kept.py).
_KEEP_BELOW_TILES = 256


def _turned_transform(kernel, tiles):
    """(36, F, C): U of dX's kernel, the kernel turned 180 degrees with its in/out channels
    swapped. With few tiles, the flipped transform (36, C, F) read transposed: BLAS takes the
    transposed matrices as they are, 3-4% slower than contiguous ones, which costs less than a
    transposing copy (VGG19's block5 for one picture, 70 tiles: dX's transform 5.6 -> 3.3 ms,
    its products 8.9 -> 9.3). With many, the kernel's channels are swapped first (a copy a
    quarter the size of U) and U made contiguous."""
    if tiles < _KEEP_BELOW_TILES:
        return transform_kernel(kernel, flipped=True).transpose(0, 2, 1)
    return transform_kernel(np.ascontiguousarray(kernel.transpose(0, 1, 3, 2)), flipped=True)


def _kernel_transform(kernel, turned, frozen, tiles):
    """U of the kernel (turned for dX when asked) for a convolution of `tiles` tiles, kept for
    frozen kernels when tiles are few (then made contiguous once: it is read many times)."""
    if not (frozen and tiles < _KEEP_BELOW_TILES):
        return _turned_transform(kernel, tiles) if turned else transform_kernel(kernel)
    if turned:
        return kept.derived(kernel, "winograd dX",
                            lambda k: np.ascontiguousarray(_turned_transform(k, tiles)))
    return kept.derived(kernel, "winograd", transform_kernel)


def conv3x3(x, kernel, pads, bias=None, relu=False, mask=None, keep=False, keep_inputs=False,
            block=1):
    """y = conv2d(x, kernel) for a 3x3 stride-1 kernel; pads = (top, bottom, left, right).

    x (N, H, W, C), kernel (3, 3, C, F) -> y (N, H + top + bottom - 2, W + left + right - 2, F),
    plus bias (F,) and max(., 0) when asked; with `mask` (shaped like x) the input is x * mask
    (a fused ReLU's backward). y is a buffer grown to whole 4x4 tiles, or a view of it where the
    tiles overhang. keep=True: the kernel is frozen (see _kernel_transform). keep_inputs=True
    returns (y, V), the transformed input tiles, which conv3x3_kernel_gradient can take instead
    of making them again.

    block > 1: y's channels, read as (block, block, F / block^2), laid out as block x block
    pixels (depth to space), written there straight from the tiles: y (N, block * OH, block *
    OW, F / block^2). A transposed convolution is such a convolution (accel/conv_subpixel.py).
    Its outputs are block^2 times wider, so the bands are cut along them too (_WIDE_CHUNK):
    DCGAN's 32x32x256 -> 64x64x512 layer (2048 wide) took 811 ms as whole bands, 517 so."""
    top, bottom, left, right = pads
    tiles = x.shape[0] * -(-(x.shape[1] + top + bottom - 2) // 4) * -(
        -(x.shape[2] + left + right - 2) // 4)
    U = _kernel_transform(kernel, False, keep, tiles)
    return _conv3x3(x, U, pads, bias, relu, mask, keep_inputs, block)


# Output columns per piece of a band where conv3x3 lays its output out depth to space: its
# (36, tiles, width) products then stay near the cache.
_WIDE_CHUNK = 256


def _conv3x3(x, U, pads, bias=None, relu=False, mask=None, keep_inputs=False, block=1):
    """conv3x3 on the kernel's transform U (36, C, F); with block > 1, depth to space as
    conv3x3 says.

    Everything past the kernel's transform happens band by band on the worker threads: the
    padding (each band copies its own rows into a zero-bordered slab), the mask, the 36 products,
    the bias and the ReLU. Done once over the whole array beforehand, the padding copy alone
    kept one core idle for longer than the second core saved."""
    N, H, W, C = x.shape
    F = U.shape[2]
    top, bottom, left, right = pads
    tiling = _Tiling(N, H + top + bottom - 2, W + left + right - 2)
    dtype = x.dtype
    depth = F // (block * block)                           # y's channels
    y = np.empty((N, 4 * tiling.th * block, 4 * tiling.tw * block, depth), dtype)
    # tile (ty, tx), its pixel (a, b), channel (p, q, f): y[n, block (4 ty + a) + p, ..., f]
    y_tiles = y.reshape(N, tiling.th, 4, block, tiling.tw, 4, block, depth)
    output_transform = _OUTPUT_TRANSFORM.astype(dtype)

    chunks = tiling.chunks(F, width=_WIDE_CHUNK if block > 1 else None)
    inputs = _input_transforms(tiling, chunks, x, mask, top, left)
    made_here = inputs is None and keep_inputs
    if made_here:                                  # each band makes its own, into this
        inputs = np.empty((36, tiling.N * tiling.th * tiling.tw, C), dtype)

    def band(chunk, slot):
        rows, (f0, f1) = chunk
        tiles, width = tiling.tiles(rows), f1 - f0
        if inputs is None:
            V = _input_transform(tiling, x, mask, rows, top, left)           # (36, tiles, C)
        else:
            first, stop = rows[0] * tiling.tw, rows[1] * tiling.tw
            if made_here:
                _input_transform(tiling, x, mask, rows, top, left,
                                 inputs.reshape(36, -1)[:, first * C:stop * C])
            V = inputs[:, first:stop]
        M = np.matmul(V, U[:, :, f0:f1])                                   # (36, tiles, width)
        Y = (output_transform @ M.reshape(36, tiles * width)).reshape(4, 4, tiles, width)
        for n, t0, t1, first in tiling.segments(rows):                         # A^T M A above
            tiles_y = Y[:, :, first:first + (t1 - t0) * tiling.tw].reshape(4, 4, t1 - t0,
                                                                          tiling.tw, width)
            c0 = f0
            while c0 < f1:                         # the chunk's columns, one (p, q) at a time
                pq, f = divmod(c0, depth)
                c1 = min(f1, (pq + 1) * depth)
                p, q = divmod(pq, block)
                out = y_tiles[n, t0:t1, :, p, :, :, q, f:f + c1 - c0]
                out = out.transpose(1, 3, 0, 2, 4)                       # (4, 4, rows, tw, .)
                part = tiles_y[..., c0 - f0:c1 - f0]
                if bias is not None:
                    np.add(part, bias[c0:c1], out=out)
                else:
                    out[...] = part
                if relu and block > 1:
                    np.maximum(out, 0, out=out)
                c0 = c1
            if relu and block == 1:
                rows_y = y[n, 4 * t0:4 * t1, :, f0:f1]
                np.maximum(rows_y, 0, out=rows_y)

    for_chunks(chunks, band, np)
    OH, OW = block * tiling.OH, block * tiling.OW
    if (OH, OW) != y.shape[1:3]:                    # a whole array (not a view) where it can be:
        y = y[:, :OH, :OW]                          # the engine then sums gradients into it
    return (y, inputs) if keep_inputs else y


def conv3x3_kernel_gradient(x, g, pads, mask=None, need_db=False, inputs=None):
    """(dK (3, 3, C, F), dBias (F,) or None) of y = conv2d(x, kernel) with pads (top, bottom,
    left, right), from g = dL/dy (times mask, when given); `inputs`: x's transformed tiles as
    conv3x3(..., keep_inputs=True) returned them, or None to make them here.

    The forward is bilinear in the tile V = B^T d B and the kernel's U = G g G^T, so the chain
    rule runs it backwards point by point: dM = A dY A^T per output tile (kron(A^T, A^T)^T, 36x16),
    dU[p] = sum over tiles of V[p]^T (C, tiles) @ dM[p] (tiles, F), then dK = G^T dU G
    (kron(G, G)^T, 9x36): 36 products with a long inner side instead of the direct method's 9
    four times as long. Each worker thread sums its bands' dU; the sums are added in a fixed
    order, so results do not depend on which thread was faster. With one band, each chunk's
    filters are its own and every chunk writes one dU."""
    N, H, W, C = x.shape
    F = g.shape[3]
    top, _, left, _ = pads
    tiling = _Tiling(N, g.shape[1], g.shape[2])
    dtype = x.dtype
    output_transform_t = np.ascontiguousarray(_OUTPUT_TRANSFORM.T).astype(dtype)  # (36, 16)
    partial = {}                                             # slot -> [dU (36, C, F), dBias]

    # Its products (C, tiles) @ (tiles, F) are small for few channels: longer bands then.
    chunks = tiling.chunks(F, max(_BAND_TILES, _DK_BAND_WIDTH // C))
    if inputs is None:
        inputs = _input_transforms(tiling, chunks, x, None, top, left)
    # One band (cut along F or not): each chunk makes the whole sums of its own filters, so all
    # write one dU (per-thread sums as large as four kernels, zeroed and then added, cost block5
    # for one picture a quarter of its dK).
    whole = ([np.empty((36, C, F), dtype), np.empty(F, dtype)]
             if len({rows for rows, _ in chunks}) == 1 else None)

    def band(chunk, slot):
        rows, (f0, f1) = chunk
        tiles, width = tiling.tiles(rows), f1 - f0
        V = (_input_transform(tiling, x, None, rows, top, left) if inputs is None
             else inputs[:, rows[0] * tiling.tw:rows[1] * tiling.tw])        # (36, tiles, C)
        e = tiling.gather(g[..., f0:f1], None if mask is None else mask[..., f0:f1], rows,
                          0, 0, 4)                                            # (16, tiles, width)
        dM = (output_transform_t @ e.reshape(16, tiles * width)).reshape(36, tiles, width)
        if whole is None and slot not in partial:
            partial[slot] = [np.zeros((36, C, F), dtype), np.zeros(F, dtype)]
        dU, db = partial[slot] if whole is None else whole
        for p in range(36):
            gemm_into(V[p].T, dM[p], dU[p, :, f0:f1], accumulate=whole is None)
        column_sums(e.reshape(-1, width), db[f0:f1], accumulate=whole is None)

    for_chunks(chunks, band, np, fixed=True)
    if whole is not None:
        dU, db = whole
    else:
        dU, db = partial[0]
        for slot in range(1, len(partial)):
            dU += partial[slot][0]
            db += partial[slot][1]
    kernel_transform_t = np.ascontiguousarray(_KERNEL_TRANSFORM.T).astype(dtype)  # (9, 36)
    dK = matmul_arrays(kernel_transform_t, dU.reshape(36, C * F))   # 38 MB read for 512 x 512
    dK = dK.reshape(3, 3, C, F)
    return dK, db if need_db else None


def _input_transform(tiling, x, mask, rows, top, left, out=None):
    """V = B^T d B of every 6x6 input tile d of a band of tile rows: (36, tiles, C), into `out`
    (a (36, tiles * C) block of columns) when given."""
    C = x.shape[3]
    d = tiling.gather(x, mask, rows, top, left, 6)                            # (36, tiles, C)
    transform = _INPUT_TRANSFORM.astype(x.dtype)
    if out is None:
        return (transform @ d.reshape(36, -1)).reshape(36, -1, C)
    return gemm_into(transform, d.reshape(36, -1), out)


def _input_transforms(tiling, chunks, x, mask, top, left):
    """V of every tile, (36, tiles, C), made up front over the worker threads in halves of the
    bands, where _Tiling.chunks cut the bands along F too (VGG19's block4 and block5): each
    part of a band needs the whole band's V, and making it in every part cost each thread a
    fifth of block5's forward. Otherwise None: each band makes its own."""
    bands = sorted({rows for rows, _ in chunks})
    if len(chunks) == len(bands):
        return None
    C = x.shape[3]
    inputs = np.empty((36, tiling.N * tiling.th * tiling.tw, C), x.dtype)
    halves = []
    for r0, r1 in bands:
        middle = (r0 + r1) // 2
        halves += [part for part in ((r0, middle), (middle, r1)) if part[1] > part[0]]

    def transform(rows, slot):
        first, stop = rows[0] * tiling.tw * C, rows[1] * tiling.tw * C
        _input_transform(tiling, x, mask, rows, top, left, inputs.reshape(36, -1)[:, first:stop])
    for_chunks(halves, transform, np)
    return inputs


class _Tiling:
    """The 4x4 output tiles of an (N, OH, OW) output, cut into bands of tile rows for the
    worker threads.

    Bands run over tile rows of all images at once (global row n*th + ty), so that small images
    (VGG19's block5 at 25x37 has 70 tiles) still give each product a few hundred rows. At least
    two bands, one per worker thread."""

    def __init__(self, N, OH, OW):
        self.N, self.OH, self.OW = N, OH, OW
        self.th, self.tw = -(-OH // 4), -(-OW // 4)   # tiles down and across; the last may overhang

    def chunks(self, F, band_tiles=None, width=None):
        """The pieces of work: (band of tile rows, (first, stop) of the F output columns). With
        too few bands to keep both threads busy to the end (VGG19's block5 for one picture has
        70 tiles) each band is cut in two along F as well; both halves transform its input.
        With `width`, every band is cut into pieces of that many columns.

        On one thread (an Inception branch: workers.alone) no thread waits for a last band, so
        bands are cut by size alone, never along F (whose halves made products half as wide),
        and small enough that a band's 36 products, 36 x tiles x F numbers, stay in the core's
        cache for the output transform that reads them (_ALONE_BAND_BYTES)."""
        threads = chunk_pool()[1]
        one_thread = threads == 1
        if band_tiles is None:
            band_tiles = (max(1, _ALONE_BAND_BYTES // (36 * 4 * F)) if one_thread
                          else _BAND_TILES)
        rows = self.N * self.th
        per_band = max(1, band_tiles // self.tw if one_thread
                       else min(-(-band_tiles // self.tw), -(-rows // 2)))
        if rows * self.tw <= band_tiles:               # one band (on two threads, cut along F)
            bands = [(0, rows)]
        elif one_thread or width is not None:
            bands = [(r0, min(r0 + per_band, rows)) for r0 in range(0, rows, per_band)]
        else:
            # near-equal bands, a whole number of them per thread: 25 tile rows in bands of 7
            # (7, 7, 7, 4) kept one thread on 532 tiles while the other had 418
            count = -(-rows // per_band)
            bands = even_cuts(rows, min(rows, -(-count // threads) * threads))
        if width is not None:
            columns = [(f, min(f + width, F)) for f in range(0, F, width)]
        elif len(bands) >= _MIN_BANDS or one_thread:
            columns = [(0, F)]
        else:
            columns = [(0, F // 2), (F // 2, F)]
        return [(band, part) for band in bands for part in columns if part[1] > part[0]]

    def tiles(self, band):
        return (band[1] - band[0]) * self.tw

    def segments(self, band):
        """(image, first tile row, stop tile row, first tile in the band) of a band."""
        r0, r1 = band
        offset = 0
        for n in range(r0 // self.th, (r1 - 1) // self.th + 1):
            t0, t1 = max(r0 - n * self.th, 0), min(r1 - n * self.th, self.th)
            yield n, t0, t1, offset
            offset += (t1 - t0) * self.tw

    def gather(self, x, mask, band, top, left, size):
        """The band's size x size windows of x (times mask), 4 apart, starting at (-top, -left)
        and zero outside x: (size * size, tiles, C), one row per point of a window."""
        C = x.shape[3]
        out = np.empty((size * size, self.tiles(band), C), x.dtype)
        for n, t0, t1, first in self.segments(band):
            slab = _padded_rows(x, mask, n, 4 * t0 - top, 4 * (t1 - t0) + size - 4, left,
                                4 * self.tw + size - 4)
            sh, sw, sc = slab.strides
            window = as_strided(slab, (size, size, t1 - t0, self.tw, C),
                                (sh, sw, 4 * sh, 4 * sw, sc))
            out[:, first:first + (t1 - t0) * self.tw].reshape(size, size, t1 - t0, self.tw,
                                                               C)[...] = window
        return out


def _padded_rows(x, mask, n, row0, rows, col0, cols):
    """Rows row0 .. row0 + rows of image n of x (times mask), zero-padded: (rows, cols, C) with
    x's column 0 at column col0; rows outside the image are zeros."""
    H, W, C = x.shape[1:]
    slab = np.empty((rows, cols, C), x.dtype)
    lo, hi = max(row0, 0), min(row0 + rows, H)          # the image rows inside the slab
    if hi <= lo:
        slab[...] = 0
        return slab
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


def conv3x3_input_gradient(g, kernel, pads, input_shape, mask=None, keep=False):
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
    tiles = g.shape[0] * -(-H // 4) * -(-W // 4)
    U = _kernel_transform(kernel, True, keep, tiles)                            # (36, F, C)
    return _conv3x3(g, U, (pad_h[0], pad_h[1], pad_w[0], pad_w[1]), mask=mask)
