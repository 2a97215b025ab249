"""A 4x4 stride-2 'same' transposed convolution (the DCGAN generator's layers) as 2x2
correlations on stride phases, through Winograd F(4x4, 2x2): backward on g's, forward on y's.

The transposed convolution is conv2d's input gradient, so its dX is conv2d's forward of g and
its dK conv2d's kernel gradient with x in the output gradient's place. With stride 2, padding 1
and a 4x4 kernel, output pixel i of that conv2d reads padded rows 2i + a, a = 2u + p: rows
2(i + u) + p, that is row i + u of g's row phase p (padded row 2m + p). Over both axes:

    dX[i, j] = sum over phases (p, q) and taps (u, v) in {0, 1}^2 of
               P_pq[i + u, j + v] @ K[2u + p, 2v + q],    P_pq[m, l] = g_padded[2m + p, 2l + q]

four stride-1 2x2 correlations that add into one output. Winograd F(4x4, 2x2) computes a 4x4
block of a 2x2 correlation from the 5x5 input tile under it with 25 multiplies instead of 64; the
four phases share the tiles' positions, so at each of the 25 transform points their inputs stand
side by side and the whole sum is one product, (tiles, 4C) @ (4C, F). Per 4x4 block and
channel pair that is 4 x 25 multiplies where the direct method's 16 taps make 256 (2.56x fewer).

dK uses the same transformed tiles of g (made once for both): at each point dU = V^T @ dM, dM
the output transform's adjoint applied to x's tiles, and dK the kernel transform's adjoint of
dU. The transforms (points 0, 1, -1, 2 and infinity) cost a few float32 digits, as
accel/winograd.py's F(4x4, 3x3) does; tests/test_transpose_winograd.py holds both gradients to
the reference. Which layers pay: see _MIN_CHANNELS.

The forward is the same idea turned around: output phase (p, q) of y is a 2x2 correlation of x
at offset (p, q), so each phase is 25 products (tiles, F) @ (F, C) on its own transformed tiles
of x (small: x has a quarter of y's pixels), written straight to its pixels of y.

A band's buffers are kept from call to call (_Scratch), one set per worker thread, with the
transformed kernel: 375 MB after a DCGAN step (two threads), held while the process lives.
"""
import math
import threading

import numpy as np

from .blas import gemm_into
from .linalg import column_sums
from .workers import chunk_pool, even_cuts, for_chunks

# F(4x4, 2x2) by Toom-Cook at the points 0, 1, -1, 2 and infinity: y = A^T [(G g) * (B^T d)] is
# the correlation of a 5-tap input d with a 2-tap kernel g, 4 outputs.
_AT = np.array([[1, 1, 1, 1, 0],
                [0, 1, -1, 2, 0],
                [0, 1, 1, 4, 0],
                [0, 1, -1, 8, 1]], np.float64)
_G = np.array([[1 / 2, 0],
               [-1 / 2, -1 / 2],
               [-1 / 6, 1 / 6],
               [1 / 6, 1 / 3],
               [0, 1]], np.float64)
_BT = np.array([[2, -1, -2, 1, 0],
                [0, -2, -1, 1, 0],
                [0, 2, -3, 1, 0],
                [0, -1, 0, 1, 0],
                [0, 2, -1, -2, 1]], np.float64)
_M, _N = 4, 5                           # outputs and inputs per tile side
_POINTS = _N * _N
# Both sides of a tile at once: (kron(P, P) @ vec(X))[a*n + b] = (P X P^T)[a, b].
_INPUT_TRANSFORM = np.kron(_BT, _BT)    # (25, 25)
_KERNEL_TRANSFORM = np.kron(_G, _G)     # (25, 4)
_OUTPUT_TRANSFORM = np.kron(_AT, _AT)   # (16, 25)

# Tiles per band: the 25 products (tiles, 4C) @ (4C, F) want a few hundred rows; more only
# makes the band's transformed tiles (25 x tiles x 4C numbers) fall further out of cache.
_BAND_TILES = 128
# The forward's products are F wide (x's channels) where backward's are 4C: more tiles a band
# fit in the same memory, and the products want them (the DCGAN's last layer: 514 ms at 128,
# 463 at 256, 449 at 512; 512 took the DCGAN step's peak memory from 1429 MB to 1581 MB, within
# 76 MB of PyTorch's).
_FORWARD_BAND_TILES = 256
# g's channels (the transposed convolution's output channels) from which this route pays: its
# products are 4C wide, and few tiles leave them short. The DCGAN generator's layers at batch 32,
# forward + dX + dK (ms, the shifted route's backward against this; medians of 5-9 alternating,
# notes in bench/README.md):
#   8x8x128 -> 16x16x128       18.8 against 81.5
#   16x16x128 -> 32x32x256    128.8 against 108.4
#   32x32x256 -> 64x64x512   1644.9 against 1212.6
_MIN_CHANNELS = 256
# ... and the forward from this many output channels (forward alone, ms, the sub-pixel route
# (accel/conv_subpixel.py) against this, medians of 9): 16x16x128 -> 32x32x256 42.7 against
# 45.8; 32x32x256 -> 64x64x512 502.8 against 462.8 (3 rounds).
_MIN_FORWARD_CHANNELS = 512
# Each thread's buffers (see _Scratch), kept from call to call, and the lock that lets one call
# at a time use them.
_KEPT_SCRATCH = {}
_scratch_lock = threading.Lock()


def fits(geom, g, x, kernel):
    """True where this route takes a conv2d_transpose's backward (geom: the conv2d whose input
    gradient it is): a 4x4 kernel at stride 2 with one pixel of padding before (Keras's 'same' on
    even sizes), NumPy floats of one dtype, and g at least _MIN_CHANNELS wide."""
    return _fits(geom, [a for a in (g, x, kernel) if a is not None]) and geom.C >= _MIN_CHANNELS


def forward_fits(geom, x, kernel):
    """The same for the forward, whose output (geom's C channels) is at least
    _MIN_FORWARD_CHANNELS wide."""
    return _fits(geom, [x, kernel]) and geom.C >= _MIN_FORWARD_CHANNELS


def _fits(geom, arrays):
    return ((geom.kh, geom.kw, geom.sh, geom.sw, geom.dh, geom.dw) == (4, 4, 2, 2, 1, 1)
            and (geom.pt, geom.pl) == (1, 1) and (geom.H, geom.W) == (2 * geom.OH, 2 * geom.OW)
            and all(type(a) is np.ndarray and a.dtype == arrays[0].dtype for a in arrays)
            and arrays[0].dtype in (np.float32, np.float64))


def backward(g, x, kernel, geom, need_dx, need_dk, need_db=False):
    """conv2d_transpose's (dX, dK, dBias): dX = conv2d(g, kernel) (N, OH, OW, F), dK (4, 4, C, F)
    its kernel gradient against x, dBias g's channel sums; None for what is not asked (x is
    read only for dK, kernel only for dX)."""
    with _scratch_lock:
        return _backward(g, x, kernel, geom, need_dx, need_dk, need_db, _KEPT_SCRATCH)


def _backward(g, x, kernel, geom, need_dx, need_dk, need_db, scratch):
    N, C = geom.N, geom.C
    F = kernel.shape[3] if need_dx else x.shape[3]
    rows, cols = -(-geom.OH // _M), -(-geom.OW // _M)            # tiles down and across
    dtype = g.dtype
    input_transform = _INPUT_TRANSFORM.astype(dtype)
    output_transform = _OUTPUT_TRANSFORM.astype(dtype)
    main = scratch.setdefault("kernel", _Scratch())
    U = _transformed_kernel(kernel, main) if need_dx else None
    dx = np.empty((N, geom.OH, geom.OW, F), dtype) if need_dx else None
    summed = set()                                                # slots holding dK's sums

    def band(chunk, slot):
        n0, n1, r0, r1 = chunk
        space = scratch.setdefault(slot, _Scratch())
        V = _transformed_tiles(g, geom, n0, n1, r0, r1, cols, input_transform, space)
        tiles = V.shape[1]
        if need_dx:
            M = space.take("products", (_POINTS, tiles, F), dtype)
            for point in range(_POINTS):                          # all four phases at once
                gemm_into(V[point], U[point], M[point])
            Y = space.take("outputs", (_M * _M, tiles, F), dtype)
            gemm_into(output_transform, M.reshape(_POINTS, -1), Y.reshape(_M * _M, -1))
            _untile(Y, dx, n0, n1, r0, r1, cols, space)
        if need_dk:
            # the output transform's adjoint on x's tiles, then dU = V^T dM at every point
            dM = space.take("products", (_POINTS, tiles, F), dtype)
            x_tiles = _tiles_of(x, n0, n1, r0, r1, cols, space)
            gemm_into(output_transform.T, x_tiles.reshape(_M * _M, -1), dM.reshape(_POINTS, -1))
            dU = space.take("kernel gradient", (_POINTS, 4 * C, F), dtype)
            first = slot not in summed
            summed.add(slot)
            for point in range(_POINTS):
                gemm_into(V[point].T, dM[point], dU[point], accumulate=not first)
    # fixed: each thread's bands are the same every run, so dK's sums are too
    for_chunks(_bands(N, rows, cols), band, np, fixed=need_dk)
    dk = None
    if need_dk:
        slots = sorted(summed)
        dU = scratch[slots[0]].take("kernel gradient", (_POINTS, 4 * C, F), dtype)
        for slot in slots[1:]:
            dU += scratch[slot].take("kernel gradient", (_POINTS, 4 * C, F), dtype)
        dk = np.empty((4, 4, C, F), dtype)
        dU = dU.reshape(_POINTS, 2, 2, C * F)
        adjoint = _KERNEL_TRANSFORM.T.astype(dtype)
        for p in range(2):
            for q in range(2):      # the kernel transform's adjoint: phase (p, q)'s taps (u, v)
                dk[p::2, q::2] = (adjoint @ dU[:, p, q]).reshape(2, 2, C, F)
    db = column_sums(np.ascontiguousarray(g).reshape(-1, C)) if need_db else None
    return dx, dk, db


def _bands(N, rows, cols, band_tiles=None):
    """(n0, n1, r0, r1): images n0..n1, tile rows r0..r1 of each, about band_tiles tiles
    (_BAND_TILES by default), and at least two bands per thread where there are enough images
    (whole images when one has fewer tiles than a band)."""
    band_tiles = band_tiles or _BAND_TILES
    threads = chunk_pool()[1]
    if rows * cols < band_tiles:                   # whole images, fewer where there are few
        per_band = max(1, min(band_tiles // (rows * cols), -(-N // (2 * threads))))
        return [(n0, n1, 0, rows) for n0, n1 in even_cuts(N, -(-N // per_band))]
    band_rows = max(1, min(rows, band_tiles // cols))
    bands = max(-(-rows // band_rows), -(-2 * threads // N))
    return [(n, n + 1, r0, r1) for n in range(N)
            for r0, r1 in even_cuts(rows, min(rows, bands))]


def _transformed_kernel(kernel, space):
    """U (25, 4C, F): at each point, the four phases' 2x2 kernels, transformed, stacked in the
    order of V's channels (p, q, c)."""
    C, F = kernel.shape[2:]
    transform = _KERNEL_TRANSFORM.astype(kernel.dtype)
    U = space.take("transformed kernel", (_POINTS, 2, 2, C, F), kernel.dtype)
    for p in range(2):
        for q in range(2):
            taps = kernel[p::2, q::2].reshape(4, C * F)           # phase (p, q)'s taps (u, v)
            U[:, p, q] = (transform @ taps).reshape(_POINTS, C, F)
    return U.reshape(_POINTS, 4 * C, F)


class _Scratch:
    """One thread's buffers, reused from band to band and call to call: a band's are 100+ MB,
    and fresh memory of that size, taken by worker threads, costs its page faults again and
    again (the DCGAN step's last layer took 816-1593 ms with buffers made per band or per call,
    700-720 with these kept)."""

    def __init__(self):
        self.flat = {}

    def take(self, name, shape, dtype):
        size = math.prod(shape)
        flat = self.flat.get(name)
        if flat is None or flat.size < size or flat.dtype != dtype:
            flat = self.flat[name] = np.empty(size, dtype)
        return flat[:size].reshape(shape)


def _transformed_tiles(g, geom, n0, n1, r0, r1, cols, input_transform, space):
    """V (25, tiles, 4C): the 5x5 tiles of g's four phases under output tiles r0..r1 (all
    columns) of images n0..n1, transformed; channels (p, q, c)."""
    C = g.shape[3]
    first, last = _M * r0, _M * r1 + 1                            # phase rows read
    width = _M * cols + 1                                         # phase columns read
    # padded rows 2*first .. 2*last - 1 of the band: g's row R is padded row R + 1
    padded = space.take("padded", (n1 - n0, 2 * (last - first), 2 * width, C), g.dtype)
    top, bottom = max(0, 2 * first - 1), min(geom.H, 2 * last - 1)
    inside = slice(top + 1 - 2 * first, bottom + 1 - 2 * first)
    padded[:, :inside.start] = 0
    padded[:, inside.stop:] = 0
    padded[:, inside, :1] = 0
    padded[:, inside, geom.W + 1:] = 0
    padded[:, inside, 1:geom.W + 1] = g[n0:n1, top:bottom]
    phases = padded.reshape(n1 - n0, last - first, 2, width, 2, C)   # [m, p, l, q, c]
    tiles = space.take("tiles", (_N, _N, n1 - n0, r1 - r0, cols, 2, 2, C), g.dtype)
    for r in range(_N):
        for s in range(_N):
            window = phases[:, r:r + _M * (r1 - r0 - 1) + 1:_M, :, s:s + _M * (cols - 1) + 1:_M]
            tiles[r, s] = window.transpose(0, 1, 3, 2, 4, 5)
    V = space.take("transformed", (_POINTS, (n1 - n0) * (r1 - r0) * cols, 4 * C), g.dtype)
    gemm_into(input_transform, tiles.reshape(_POINTS, -1), V.reshape(_POINTS, -1))
    return V


def _tiles_of(x, n0, n1, r0, r1, cols, space):
    """(4, 4, tiles, F): x's 4x4 output blocks under tiles r0..r1 of images n0..n1, zeros past
    its edges."""
    OH, OW, F = x.shape[1:]
    blocks = np.zeros((n1 - n0, r1 - r0, _M, cols, _M, F), x.dtype)     # x's size: small
    part = x[n0:n1, _M * r0:min(OH, _M * r1)]
    blocks.reshape(n1 - n0, _M * (r1 - r0), _M * cols, F)[:, :part.shape[1], :OW] = part
    tiles = space.take("x tiles", (_M, _M, n1 - n0, r1 - r0, cols, F), x.dtype)
    tiles[...] = blocks.transpose(2, 4, 0, 1, 3, 5)
    return tiles


def _untile(Y, dx, n0, n1, r0, r1, cols, space):
    """dx's rows under tiles r0..r1 of images n0..n1 from Y (4x4 outputs, tiles, F)."""
    OH, OW, F = dx.shape[1:]
    Y = Y.reshape(_M, _M, n1 - n0, r1 - r0, cols, F)
    full = space.take("untiled", (n1 - n0, r1 - r0, _M, cols, _M, F), dx.dtype)
    full[...] = Y.transpose(2, 3, 0, 4, 1, 5)
    full = full.reshape(n1 - n0, _M * (r1 - r0), _M * cols, F)
    stop = min(OH, _M * r1)
    dx[n0:n1, _M * r0:stop] = full[:, :stop - _M * r0, :OW]


# ---- forward ---------------------------------------------------------------------------------

def forward(x, kernel, geom, bias=None, relu=False):
    """conv2d_transpose's y (N, 2*OH, 2*OW, C) (+ bias, then ReLU when asked) of x (N, OH, OW, F)
    and kernel (4, 4, C, F), phase by phase: output phase (p, q) is a 2x2 correlation of x
    (padded by one pixel before) at offset (p, q), tap (u, v) being kernel tap
    (3 - p - 2u, 3 - q - 2v), each through F(4x4, 2x2) and written straight to its pixels."""
    with _scratch_lock:
        return _forward(x, kernel, geom, bias, relu, _KEPT_SCRATCH)


def _forward(x, kernel, geom, bias, relu, scratch):
    N, OH, OW, F = x.shape
    C = kernel.shape[2]
    rows, cols = -(-OH // _M), -(-OW // _M)
    dtype = x.dtype
    input_transform = _INPUT_TRANSFORM.astype(dtype)
    output_transform = _OUTPUT_TRANSFORM.astype(dtype)
    # x padded by one pixel before and enough after for the last tile at offset 1
    padded = np.zeros((N, _M * rows + 2, _M * cols + 2, F), dtype)
    padded[:, 1:OH + 1, 1:OW + 1] = x
    transform = _KERNEL_TRANSFORM.astype(dtype)
    U = scratch.setdefault("kernel", _Scratch()).take("transformed kernel",
                                                      (2, 2, _POINTS, F, C), dtype)
    for p in range(2):
        for q in range(2):
            taps = kernel[3 - p::-2, 3 - q::-2]                     # (u, v, C, F)
            taps = taps.transpose(0, 1, 3, 2).reshape(4, F * C)
            U[p, q] = (transform @ taps).reshape(_POINTS, F, C)
    y = np.empty((N, 2 * OH, 2 * OW, C), dtype)
    phases_of_y = y.reshape(N, OH, 2, OW, 2, C)

    def band(chunk, slot):
        n0, n1, r0, r1 = chunk
        space = scratch.setdefault(slot, _Scratch())
        for p in range(2):
            for q in range(2):
                V = _transformed_window_tiles(padded, n0, n1, r0, r1, cols, p, q,
                                              input_transform, space)
                tiles = V.shape[1]
                M = space.take("products", (_POINTS, tiles, C), dtype)
                for point in range(_POINTS):
                    gemm_into(V[point], U[p, q, point], M[point])
                Y = space.take("outputs", (_M * _M, tiles, C), dtype)
                gemm_into(output_transform, M.reshape(_POINTS, -1), Y.reshape(_M * _M, -1))
                if bias is not None:
                    Y += bias
                if relu:
                    np.maximum(Y, 0, out=Y)
                _untile(Y, phases_of_y[:, :, p, :, q], n0, n1, r0, r1, cols, space)
    for_chunks(_bands(N, rows, cols, _FORWARD_BAND_TILES), band, np)
    return y


def _transformed_window_tiles(padded, n0, n1, r0, r1, cols, p, q, input_transform, space):
    """V (25, tiles, F): the 5x5 tiles of padded x at offset (p, q) under output tiles r0..r1
    of images n0..n1, transformed."""
    F = padded.shape[3]
    tiles = space.take("window tiles", (_N, _N, n1 - n0, r1 - r0, cols, F), padded.dtype)
    for r in range(_N):
        for s in range(_N):
            first = _M * r0 + p + r
            tiles[r, s] = padded[n0:n1, first:first + _M * (r1 - r0 - 1) + 1:_M,
                                 q + s:q + s + _M * (cols - 1) + 1:_M]
    V = space.take("transformed", (_POINTS, (n1 - n0) * (r1 - r0) * cols, F), padded.dtype)
    gemm_into(input_transform, tiles.reshape(_POINTS, -1), V.reshape(_POINTS, -1))
    return V
