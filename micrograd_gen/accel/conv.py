"""The fast conv2d and conv2d_transpose: shifted GEMMs through BLAS on worker threads, and Winograd
for 3x3 layers (NumPy); im2col kernels and one GEMM per chunk of images (CuPy). The reference is
ops/conv.py; this module registers with it and computes the same numbers (tests/test_accel.py
holds them equal; Winograd's to float32 rounding).

How the products are formed (the "shifted GEMM" method). Lay the zero-padded input out as a
matrix with one row per pixel, rows running along each image row and then down the image; a
padded image of width Wp becomes Hp*Wp rows of C numbers. For stride 1, output pixel (i, j) and
kernel tap (a, b) read input row (i + a*dh)*Wp + (j + b*dw): the output pixel's own row plus a
fixed offset. So if the output is laid out with the same row width Wp (its last Wp - OW columns
are junk that is computed and thrown away), every tap is ONE matrix product of a contiguous
slice of the input matrix, (rows, C) @ (C, F), accumulated into the output (BLAS's beta = 1,
accel/blas.py): no im2col copy at all, and the kernel slice K[a, b] is used in place. A stride s
is brought back to stride 1 by splitting the padded input into its s_h*s_w phases
(x[p::s_h, q::s_w], "space to depth"): tap (a, b) then reads phase ((a*dh) % s_h, (b*dw) % s_w)
at offset ((a*dh) // s_h, (b*dw) // s_w). Only the rows are copied apart: the s_w column phases
of a row phase stay interleaved, each a matrix whose rows are s_w*C numbers apart, which BLAS
reads as it is (its leading dimension), so the copies move whole pixel rows; and taps (a, b),
(a, b + 1) that read neighbouring residues at one offset read one wider row, so they are one
product ("runs"). Backward uses the same offsets: dK[a, b] = slice^T @ dY and dX_phase[slice] +=
dY @ K[a, b]^T.

Work is cut into chunks of output rows so that the output chunk stays in cache while every tap
adds into it (and the bias and a fused ReLU are applied to it there), and so that no buffer is
much larger than the input itself; the chunks are shared out to worker threads
(accel/workers.py). A chunk's products go to BLAS in one call (gemm_batch), not one call each:
between two calls a thread needs Python's lock, which the other thread may hold. Backward skips
dK / dX when nobody needs them (frozen kernels: DeepDream, style transfer). A 1x1 convolution at
stride 1 reads x and dY in place: one product per chunk.

When C or F is small (an RGB image in or out), a per-tap product is too thin for BLAS to run
well; the thin routes (accel/conv_thin.py) stack the taps of the thin side into one product per
chunk instead.

A 3x3 stride-1 convolution with enough channels and pixels goes to Winograd instead
(accel/winograd.py): a quarter of the multiplies, for the forward and both gradients. Strided
convolutions whose kernel trains gather their windows once (accel/conv_columns.py), a wide
4x4 stride-2 transposed convolution runs as 2x2 Winograd correlations on stride phases
(accel/transpose_winograd.py), other wide transposed convolutions whose phases read 3x3
windows run their forward as a 3x3 Winograd convolution to s*s*F channels
(accel/conv_subpixel.py), and 1 x k kernels at stride 1 on short rows gather their windows into
one product (accel/conv_1d.py): there the shifted route can join no taps and computes many
padding columns.
"""
from functools import lru_cache

import numpy as np

from .. import fastpath
from ..backend import get_array_module
from . import (conv_1d, conv_columns, conv_subpixel, conv_thin, cuda, linalg, transpose_winograd,
               winograd)
from .blas import _Rows, column_sums, gemm_rows_batch
from .workers import chunk_pool, for_chunks

# Fewer input (or output) channels than this take a thin route: taps stacked into one product.
_MIN_CHANNELS_PER_TAP = 16
# Output rows per chunk: the output chunk should sit in cache while every tap adds into it.
_CHUNK_BYTES = 1 << 20
# ... but no fewer rows than this: each product packs its kernel slice again, (m*C, F) numbers,
# which a wide output's few rows do not pay for (DCGAN's last transposed convolution, 1024
# numbers a row: 231 rows a chunk at 1 MB; 1024 rows made its step 3174 -> 3024 ms).
_MIN_CHUNK_ROWS = 1024
# dK's products have a small (C, F) output and a long inner size: longer chunks, fewer calls.
_DK_CHUNK_BYTES = 1 << 22
# Copies larger than this are shared out to the worker threads.
_PARALLEL_COPY_BYTES = 1 << 20


# ---- copies shared out to the workers -------------------------------------------------------

def _assign(dst, src, mask=None, relu_output=None):
    """dst[...] = src (or src * mask, or src where relu_output > 0 and 0 elsewhere: a ReLU's
    backward) for 4-D arrays; large copies are split into row bands over the workers (NumPy
    releases the GIL while copying)."""
    xp = get_array_module(dst)
    rows = dst.shape[1]

    def copy(band, slot):
        part = slice(band[0], band[1])
        if relu_output is not None:
            xp.multiply(src[:, part], relu_output[:, part] > 0, out=dst[:, part])
        elif mask is None:
            dst[:, part] = src[:, part]
        else:
            xp.multiply(src[:, part], mask[:, part], out=dst[:, part])
    if xp is not np or dst.nbytes < _PARALLEL_COPY_BYTES or rows < 2:
        copy((0, rows), 0)
        return
    step = -(-rows // 4)
    for_chunks([(i, min(i + step, rows)) for i in range(0, rows, step)], copy, xp)


def _masked(g, mask=None, relu_output=None):
    """A new g * mask, or g where relu_output > 0 and 0 elsewhere (_assign's two masks)."""
    out = np.empty_like(g)
    _assign(out, g, mask, relu_output)
    return out


# ---- geometry of one convolution --------------------------------------------------------------

class ShiftedGeometry:
    """The tap offsets of one conv2d (an ops.conv.ConvGeometry) in the shifted-GEMM layout.

    The padded input is split into its row phases (one per stride residue of the rows that some
    tap touches): phase k holds every sh-th padded row, each grown to Wq*sw pixels, as a matrix
    of N*Hq*Wq rows of sw*C numbers. Image n, phase row i, pixel group j (padded columns j*sw ..
    j*sw + sw - 1) is row (n*Hq + i)*Wq + j. A column residue q of it is a matrix of C-wide rows
    sw*C numbers apart (_Rows with a pitch): so the column stride costs nothing, and the row
    stride a copy of whole pixel rows. The output uses the same row numbering, so output row u
    and tap t read row u + offset[t] of phase phase[t], residue residue[t]. Only output rows with
    i < OH and j < OW are real.
    """

    def __init__(self, conv):
        for name in ("N", "H", "W", "C", "kh", "kw", "sh", "sw", "dh", "dw", "pt", "pb", "pl",
                     "pr", "OH", "OW"):
            setattr(self, name, getattr(conv, name))
        Hp, Wp = self.H + self.pt + self.pb, self.W + self.pl + self.pr
        self.Hq, self.Wq = -(-Hp // self.sh), -(-Wp // self.sw)
        phases, taps = [], []
        for a in range(self.kh):
            for b in range(self.kw):
                r, c = a * self.dh, b * self.dw
                if r % self.sh not in phases:
                    phases.append(r % self.sh)
                taps.append((a, b, phases.index(r % self.sh),
                             (r // self.sh) * self.Wq + c // self.sw, c % self.sw))
        self.phases, self.taps = phases, taps
        # Taps that follow each other in the kernel and read neighbouring column residues at
        # the same offset (b = 0 and 1 of a 3x3 kernel at stride 2) read one pixel row m*C
        # numbers wide: one product with m times the inner size (forward, dK) or the output
        # width (dX), which BLAS runs faster than m thin ones. (first tap, m, phase, offset,
        # first residue) per run.
        runs = []
        for t, (a, b, k, off, q) in enumerate(taps):
            if runs and runs[-1][0] + runs[-1][1] == t and tuple(runs[-1][2:4]) == (k, off) and (
                    runs[-1][4] + runs[-1][1] == q):
                runs[-1][1] += 1
            else:
                runs.append([t, 1, k, off, q])
        self.runs = [tuple(r) for r in runs]
        # dX of phase k, run by run: one that writes all sw residues first (it sets the rows,
        # the rest add to them); where no run does, dX starts from zeros.
        full = {k: [i for i, (_, m, phase, _, q) in enumerate(self.runs)
                    if phase == k and (q, m) == (0, self.sw)] for k in range(len(phases))}
        self.dx_zeros = not all(full.values())
        self.dx_runs = {k: full[k][:1] + [i for i, r in enumerate(self.runs)
                                          if r[2] == k and i not in full[k][:1]]
                        for k in range(len(phases))}
        self.max_offset = max(t[3] for t in taps)
        # Junk columns of the last output row read up to this many rows past the last image.
        self.tail = ((self.kw - 1) * self.dw) // self.sw
        self.rows = self.N * self.Hq * self.Wq
        # A 1x1 convolution at stride 1: x, read as (N*H*W, C) rows, is already its own single
        # phase and dY its own wide layout, so neither needs a padded copy.
        self.pointwise = (self.kh, self.kw, self.sh, self.sw) == (1, 1, 1, 1)
        # Output rows worth computing: everything up to the last real row of the last image.
        self.used_rows = ((self.N - 1) * self.Hq + self.OH) * self.Wq

    def out_shape(self, F):
        return (self.N, self.OH, self.OW, F)

    def _row_window(self, p):
        """Where x's rows land in row phase p: (first phase row, first x row, count)."""
        first = max(0, -(-(self.pt - p) // self.sh))        # first phase row on a real pixel
        src = p + first * self.sh - self.pt
        count = min(len(range(src, self.H, self.sh)), self.Hq - first)
        return first, src, max(count, 0)

    def _phase_pixels(self, buf):
        """(n_phases, rows, sw*C) as (n_phases, N, Hq, padded columns, C)."""
        return buf[:, :self.rows].reshape(len(self.phases), self.N, self.Hq, self.Wq * self.sw,
                                          self.C)

    def to_phases(self, x, relu_output=None):
        """The padded input as (n_phases, rows + tail, sw*C) matrices (zeros where padding).
        With `relu_output` (a fused ReLU's y, shaped like x) it is x where y > 0 and 0
        elsewhere, the ReLU's backward, done in the copy that lays x out anyway."""
        xp = get_array_module(x)
        if self.pointwise:
            x = xp.ascontiguousarray(x) if relu_output is None else x * (relu_output > 0)
            return x.reshape(1, self.rows, self.C)
        buf = xp.empty((len(self.phases), self.rows + self.tail, self.sw * self.C), x.dtype)
        buf[:, self.rows:] = 0
        left, right = self.pl, self.pl + self.W
        for k, phase in enumerate(self._phase_pixels(buf)):
            i0, r0, ni = self._row_window(self.phases[k])
            # Zero only the padding around the pixels (a full memset first costs one more pass
            # over a buffer as large as x, a third of the copy's time).
            phase[:, :i0] = 0
            phase[:, i0 + ni:] = 0
            phase[:, i0:i0 + ni, :left] = 0
            phase[:, i0:i0 + ni, right:] = 0
            _assign(phase[:, i0:i0 + ni, left:right], x[:, r0::self.sh][:, :ni],
                    relu_output=None if relu_output is None else relu_output[:, r0::self.sh][:, :ni])
        return buf

    def columns(self, buf, q, m=1):
        """Residues q .. q + m - 1 of (n_phases, rows, sw*C) matrices: m*C-wide rows, sw*C
        apart."""
        return _Rows(buf, m * self.C, pitch=self.sw * self.C, first=q * self.C)

    def run_columns(self, buf):
        """columns() of `buf` for every run, in the order of self.runs (at stride 1 every run
        reads the same one: made once)."""
        made = {}
        for _, m, _, _, q in self.runs:
            if (q, m) not in made:
                made[q, m] = self.columns(buf, q, m)
        return [made[q, m] for _, m, _, _, q in self.runs]

    def real_rows(self, k):
        """The range of phase-k rows that hold real pixels (the rows dX has to fill)."""
        i0, _, ni = self._row_window(self.phases[k])
        return i0 * self.Wq, ((self.N - 1) * self.Hq + i0 + ni) * self.Wq

    def from_phases(self, buf, dtype):
        """Adjoint of to_phases: the real pixels of (n_phases, rows, sw*C) as (N, H, W, C).

        With one phase (stride 1 along the rows) that is a view of buf, not a copy."""
        xp = get_array_module(buf)
        body = self._phase_pixels(buf)
        left, right = self.pl, self.pl + self.W
        if self.sh == 1:
            return body[0, :, self.pt:self.pt + self.H, left:right]
        # Every row lies in exactly one phase; rows of phases no tap reads get zeros.
        every = len(self.phases) == self.sh
        x = (xp.empty if every else xp.zeros)((self.N, self.H, self.W, self.C), dtype)
        for k, p in enumerate(self.phases):
            i0, r0, ni = self._row_window(p)
            _assign(x[:, r0::self.sh][:, :ni], body[k, :, i0:i0 + ni, left:right])
        return x

    def to_wide(self, y, margin, positive=None):
        """dY (N, OH, OW, F) in the output's row numbering, zeros on junk rows, after `margin`
        leading zero rows (so that reads at row u - offset never go below 0). With `positive`
        (a fused ReLU's mask, shaped like dY) it is dY * positive, the ReLU's backward, done
        in the copy that lays dY out anyway."""
        xp = get_array_module(y)
        F = y.shape[-1]
        if self.pointwise and margin == 0:
            y = xp.ascontiguousarray(y) if positive is None else y * positive
            return y.reshape(self.rows, F)
        buf = xp.empty((margin + self.rows, F), y.dtype)
        body = buf[margin:].reshape(self.N, self.Hq, self.Wq, F)
        buf[:margin] = 0
        body[:, self.OH:] = 0
        body[:, :self.OH, self.OW:] = 0
        _assign(body[:, :self.OH, :self.OW], y, positive)
        return buf

    def from_wide(self, buf, F):
        return buf[:self.rows].reshape(self.N, self.Hq, self.Wq, F)[:, :self.OH, :self.OW]

    def chunks(self, start, stop, width, chunk_bytes):
        """Near-equal row ranges covering [start, stop), each of whole phase rows: about
        chunk_bytes of `width`-wide numbers each but at least _MIN_CHUNK_ROWS rows, and a whole
        number of them per worker thread (3 chunks on 2 threads take as long as 4), so that
        every thread gets work. No smaller than that: each product re-packs its (C, F) kernel
        slice, which costs as much as a product of a few rows."""
        pieces = chunk_pool()[1]
        lines = -(-(stop - start) // self.Wq)
        per_chunk = max(1, chunk_bytes // (4 * max(width, 1) * self.Wq),
                        -(-_MIN_CHUNK_ROWS // self.Wq))          # lines a chunk
        count = max(pieces, -(-lines // per_chunk))
        count = min(-(-count // pieces) * pieces, max(lines, 1))
        for i in range(count):
            u0 = start + (i * lines // count) * self.Wq
            u1 = min(start + ((i + 1) * lines // count) * self.Wq, stop)
            if u1 > u0:
                yield u0, u1


# ---- the three products of a convolution ------------------------------------------------------

def _shifted_forward(x, kernel, geom, bias=None, relu=False, phases=None):
    """y (N, OH, OW, F) = conv2d(x, kernel) with the geometry's strides, padding and dilation.

    y is a view of an (N*Hq*Wq, F) buffer whose junk rows and columns are never read."""
    xp = get_array_module(x, kernel)
    C, F = geom.C, kernel.shape[3]
    if phases is None:
        phases = geom.to_phases(x)                            # (P, rows + tail, C)
    y = xp.empty((geom.rows, F), x.dtype)                     # (N*Hq*Wq, F)
    stride = phases.shape[1]                                  # rows per phase
    X = geom.run_columns(phases)
    K, Y = _Rows(xp.ascontiguousarray(kernel), F), _Rows(y, F)

    def work(chunk, slot):
        u0, u1 = chunk
        # (rows, m*C) @ (m*C, F): output row u, taps t .. t + m - 1 read phase row u + off;
        # the output chunk stays in cache over the taps; one call into BLAS for all of them
        gemm_rows_batch([((Y, u0, u1), (X[i], k * stride + u0 + off, k * stride + u1 + off),
                          (K, t * C, (t + m) * C), i > 0, False, False)
                         for i, (t, m, k, off, q) in enumerate(geom.runs)])
        if bias is not None:
            y[u0:u1] += bias                                  # while the chunk is in cache
        if relu:
            xp.maximum(y[u0:u1], 0, out=y[u0:u1])
    for_chunks(geom.chunks(0, geom.used_rows, F, _CHUNK_BYTES), work, xp)
    return geom.from_wide(y, F)


def _shifted_backward(g, x, kernel, geom, need_dx, need_dk, need_db=False, positive=None,
                      phases=None, dx_bias=None, dx_relu=False):
    """(dX, dK, dBias) from dY (N, OH, OW, F); None for what is not needed. `phases`: x's
    stride phases when the caller has them already. dX + dx_bias, then a ReLU when dx_relu, is
    a transposed convolution's output: both applied to each chunk while it is in cache (every
    row phase must be one some tap reads, as otherwise its rows are zeros never visited)."""
    xp = get_array_module(g)
    margin = geom.max_offset if need_dx else 0
    gw = geom.to_wide(g, margin, positive)                    # (margin + rows, F)
    dx = dk = db = None
    F = g.shape[3]
    G = _Rows(gw, F)
    if need_dx:
        C = kernel.shape[2]
        shape = (len(geom.phases), geom.rows, geom.sw * C)
        dphases = xp.zeros(shape, g.dtype) if geom.dx_zeros else xp.empty(shape, g.dtype)
        K = _Rows(xp.ascontiguousarray(kernel), F)
        DX = geom.run_columns(dphases)

        def work_dx(chunk, slot):
            k, v0, v1 = chunk
            # phase row v was read by output row v - off through taps t .. t + m - 1:
            # (rows, F) @ (F, m*C)
            runs = [(i, *geom.runs[i]) for i in geom.dx_runs[k]]
            gemm_rows_batch([((DX[i], k * geom.rows + v0, k * geom.rows + v1),
                              (G, margin + v0 - off, margin + v1 - off), (K, t * C, (t + m) * C),
                              n > 0 or geom.dx_zeros, False, True)
                             for n, (i, t, m, _, off, _) in enumerate(runs)])
            rows = dphases[k, v0:v1]                          # every residue of the chunk
            if dx_bias is not None:
                rows.reshape(v1 - v0, geom.sw, C)[...] += dx_bias
            if dx_relu:
                xp.maximum(rows, 0, out=rows)
        for_chunks([(k, v0, v1) for k in range(len(geom.phases))
                    for v0, v1 in geom.chunks(*geom.real_rows(k), geom.sw * C, _CHUNK_BYTES)],
                   work_dx, xp)
        dx = geom.from_phases(dphases, g.dtype)
    if need_dk:
        C = geom.C
        if phases is None:
            phases = geom.to_phases(x)
        X, stride = geom.run_columns(phases), phases.shape[1]
        shape = (geom.kh, geom.kw, C, F)
        partial = {}                                          # (dK, dBias) sums per thread

        def work_dk(chunk, slot):
            u0, u1 = chunk
            first = slot not in partial
            if first:
                dk_sum = xp.empty(shape, g.dtype)
                partial[slot] = (dk_sum, _Rows(dk_sum, F), xp.zeros(F, g.dtype))
            _, DK, db_sum = partial[slot]
            # (m*C, rows) @ (rows, F), summed over chunks; dY's junk rows hold zeros
            gemm_rows_batch([((DK, t * C, (t + m) * C),
                              (X[i], k * stride + u0 + off, k * stride + u1 + off),
                              (G, margin + u0, margin + u1), not first, True, False)
                             for i, (t, m, k, off, q) in enumerate(geom.runs)])
            if need_db:
                column_sums(gw[margin + u0:margin + u1], db_sum, accumulate=True)
        for_chunks(geom.chunks(0, geom.used_rows, geom.C + g.shape[3], _DK_CHUNK_BYTES),
                    work_dk, xp, fixed=True)
        dk, _, db = partial[0]
        for slot in range(1, len(partial)):
            dk += partial[slot][0]
            db += partial[slot][2]
        db = db if need_db else None
    if need_db and db is None:
        db = linalg.column_sums(gw)                           # zeros on margin and junk rows
    return dx, dk, db


_ROUTES = {
    "shifted": (_shifted_forward, _shifted_backward),
    "thin_input": (conv_thin.thin_input_forward, conv_thin.thin_input_backward),
    "thin_output": (conv_thin.thin_output_forward, conv_thin.thin_output_backward),
}


def _route(geom, F):
    if geom.kh * geom.kw == 1:
        return "shifted"      # a 1x1 convolution is one product per chunk already
    if geom.C < _MIN_CHANNELS_PER_TAP:
        return "thin_input"
    if F < _MIN_CHANNELS_PER_TAP:
        return "thin_output"
    return "shifted"


@lru_cache(maxsize=512)
def shifted_geometry(conv):
    """ShiftedGeometry of an ops.conv.ConvGeometry (cached: a training step meets the same few
    geometries again and again, forward and backward)."""
    return ShiftedGeometry(conv)


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

# Winograd (accel/winograd.py) takes 3x3 stride-1 convolutions with at least this many channels
# on both sides and this many 4x4 output tiles: below that its 36 products are too small to run
# near BLAS's full speed and the shifted route wins (bench/README.md, "Winograd"). The kernel
# gradient takes the same ones: its fixed cost, the size of 4 kernels (its transform space), is
# paid once with one band of tiles (block5 for one picture, 70 tiles: 20.4 -> 18.3 ms against
# the shifted route, with the forward's tiles) and per thread with more.
_WINOGRAD_MIN_CHANNELS = 32
_WINOGRAD_MIN_TILES = 64
# ... and tiles * C * F at least this: few tiles pay only with wide products (VGG19's block5
# for one picture, 70 tiles of 512 -> 512, does; a trained 64 -> 96 layer at 47x72, 216 tiles,
# does not: its kernel gradient costs more than the shifted route's).
_WINOGRAD_MIN_WORK = 1 << 22
# A frozen kernel (DeepDream's, style transfer's, inference) has no kernel gradient and keeps
# its transform, so there Winograd pays from less. Fwd + dX against the shifted route, fused
# ReLU, InceptionV3's 3x3 layers at DeepDream's octaves: on one thread (inside a branch) 47x72
# 64 -> 96 and 96 -> 96 (216 tiles) 0.60-0.68x, 33x51 (117 tiles) 0.72-0.78x; on two, 47x72
# 64 -> 96 0.77x, 33x51 0.92-0.94x, the stem's 32 -> 32, 32 -> 64 and 80 -> 192 at 204x306
# (216-950 tiles) 0.73-0.88x; but 35x35 32 -> 32 (81 tiles, 83K) 1.29x on two threads
# (bench/README.md, "session 13").
_WINOGRAD_MIN_WORK_FROZEN = 1 << 19
# A frozen kernel on one thread pays from fewer tiles and half that work still: 23x35 64 -> 96
# and 96 -> 96 (54 tiles) 0.78-0.93x, where two threads take 1.06x and 0.92x; the narrower
# 23x35 48 -> 64 level (0.99x), 17x17 (25 tiles, most of the last ones past the edge) 1.10x.
_WINOGRAD_ALONE_MIN_TILES = 32
_WINOGRAD_ALONE_MIN_WORK_FROZEN = 1 << 18


def _tiles(geom):
    """Winograd's 4x4 output tiles of a conv2d geometry."""
    return geom.N * -(-geom.OH // 4) * -(-geom.OW // 4)


def _winograd_fits(geom, F, *arrays, frozen=False):
    """True where Winograd computes this conv2d (F filters) on these arrays: a 3x3 stride-1
    undilated kernel, NumPy floats of one dtype, enough channels in and out, and enough tiles
    and work: less for a frozen kernel, and less again on one thread."""
    if not ((geom.kh, geom.kw, geom.sh, geom.sw, geom.dh, geom.dw) == (3, 3, 1, 1, 1, 1)
            and all(type(a) is np.ndarray for a in arrays)
            and len({a.dtype for a in arrays}) == 1 and arrays[0].dtype in _FLOATS
            and min(geom.C, F) >= _WINOGRAD_MIN_CHANNELS):
        return False
    tiles = _tiles(geom)
    if not frozen:
        return tiles >= _WINOGRAD_MIN_TILES and tiles * geom.C * F >= _WINOGRAD_MIN_WORK
    if chunk_pool()[1] == 1:
        return (tiles >= _WINOGRAD_ALONE_MIN_TILES
                and tiles * geom.C * F >= _WINOGRAD_ALONE_MIN_WORK_FROZEN)
    return tiles >= _WINOGRAD_MIN_TILES and tiles * geom.C * F >= _WINOGRAD_MIN_WORK_FROZEN


# x's transformed tiles are 36/16 of x's size (and more where tiles overhang): kept from forward
# to backward up to this size; past it, making them again costs less than holding the memory.
_KEEP_INPUTS_BYTES = 256 << 20


def _keeps_inputs(geom, x):
    return 36 * _tiles(geom) * geom.C * x.itemsize <= _KEEP_INPUTS_BYTES


def _pads(geom):
    return geom.pt, geom.pb, geom.pl, geom.pr


def _cuda_ready(*arrays):
    """The CUDA kernels take C-ordered float32 / float64 arrays of one dtype."""
    dtypes = {a.dtype for a in arrays if a is not None}
    return len(dtypes) == 1 and dtypes.pop() in _FLOATS


def conv2d_forward(x, kernel, geom, bias=None, relu=False, frozen=False, kept=None):
    """ops.conv's forward (+ bias, then ReLU when asked), fast. With a `kept` dict (the kernel
    trains) Winograd leaves x's transformed tiles there for the kernel gradient."""
    xp = get_array_module(x, kernel)
    if xp is not np:
        if not _cuda_ready(x, kernel):
            return NotImplemented
        y = cuda.conv2d_forward(x, kernel, geom)      # one im2col kernel and one GEMM (kernels/)
        if bias is not None:
            y += bias
        if relu:
            xp.maximum(y, 0, out=y)
        return y
    if _winograd_fits(geom, kernel.shape[3], x, kernel, frozen=frozen):
        keep_inputs = kept is not None and _keeps_inputs(geom, x)   # dK takes Winograd too
        y = winograd.conv3x3(x, kernel, _pads(geom), bias, relu, keep=frozen,
                             keep_inputs=keep_inputs)
        if keep_inputs:
            y, kept["winograd_inputs"] = y
        return y
    shifted = shifted_geometry(geom)
    route = _route(shifted, kernel.shape[3])
    if route == "shifted" and conv_columns.fits(geom, kernel.shape[3], x, kernel, kept):
        return conv_columns.forward(x, kernel, geom, bias, relu, kept)
    if route == "shifted" and conv_1d.fits(geom, x, kernel):
        return conv_1d.forward(x, kernel, geom, bias, relu)
    forward, _ = _ROUTES[route]
    return forward(x, kernel, shifted, bias, relu)


def conv2d_backward(g, x, kernel, geom, need_dx, need_dk, need_db=False, positive=None,
                    frozen=False, kept=None):
    """ops.conv's (dX, dK, dBias), fast; `positive` (a fused ReLU's mask) is applied to g while
    g is laid out anyway."""
    xp = get_array_module(g)
    if xp is not np:
        if not _cuda_ready(g, x if need_dk else None, kernel if need_dx else None):
            return NotImplemented
        if positive is not None:
            g = g * positive
        dx, dk = cuda.conv2d_backward(g, x, kernel, geom, need_dx, need_dk)
        return dx, dk, g.sum(axis=(0, 1, 2)) if need_db else None
    dx = dk = db = None
    pads = _pads(geom)
    if need_dx and _winograd_fits(geom, g.shape[3], g, kernel, frozen=frozen):
        # dX is the stride-1 convolution of dY with the flipped kernel: Winograd too (None where
        # the padding is wider than the kernel; the shifted route takes it then)
        dx = winograd.conv3x3_input_gradient(g, kernel, pads, (geom.N, geom.H, geom.W),
                                             mask=positive, keep=frozen)
        need_dx = dx is None
    if need_dk and _winograd_fits(geom, g.shape[3], g, x):
        inputs = None if kept is None else kept.pop("winograd_inputs", None)
        dk, db = winograd.conv3x3_kernel_gradient(x, g, pads, positive, need_db, inputs)
        need_dk = need_db = False
    columns = None if kept is None else kept.pop("columns", None)
    if columns is not None:              # forward took conv_columns: its backward too
        if positive is not None:         # the ReLU's mask, once for both products
            g = _masked(g, mask=positive)
            positive = None
        if need_dk:
            dk, db = conv_columns.kernel_gradient(g, columns, geom, need_db)
            need_dk = need_db = False
        if need_dx:
            dx = conv_columns.input_gradient(g, kernel, geom)
            need_dx = False
    if (need_dx and conv_1d.fits(geom, g, kernel)
            and _route(shifted_geometry(geom), g.shape[3]) == "shifted"):
        dx = conv_1d.input_gradient(g, kernel, geom, mask=positive, frozen=frozen)
        need_dx = False
    if need_dx or need_dk or need_db:
        shifted = shifted_geometry(geom)
        _, backward = _ROUTES[_route(shifted, g.shape[3])]
        grads = backward(g, x, kernel, shifted, need_dx, need_dk, need_db, positive)
        dx, dk, db = (a if b is None else b for a, b in zip((dx, dk, db), grads))
    return dx, dk, db


def conv2d_transpose_forward(x, kernel, geom, bias=None, relu=False, frozen=False):
    """conv2d_transpose's y = conv2d's dX of x, + bias, then ReLU when asked. On the shifted
    route both are applied to each chunk of dX while it is in cache; elsewhere in pieces of
    image rows on the workers (y += bias on one core cost 1.5 ms of a 75 ms VAE step)."""
    if get_array_module(x) is not np:
        return NotImplemented
    if transpose_winograd.forward_fits(geom, x, kernel):
        return transpose_winograd.forward(x, kernel, geom, bias, relu)
    if conv_subpixel.fits(geom, x, kernel):
        return conv_subpixel.transpose_forward(x, kernel, geom, bias, relu)
    shifted = shifted_geometry(geom)
    if (_route(shifted, x.shape[3]) == "shifted" and len(shifted.phases) == shifted.sh
            and not _winograd_fits(geom, x.shape[3], x, kernel)):
        return _shifted_backward(x, None, kernel, shifted, True, False, dx_bias=bias,
                                 dx_relu=relu)[0]
    y, _, _ = conv2d_backward(x, None, kernel, geom, True, False, frozen=frozen)
    if bias is not None or relu:
        rows = max(1, (1 << 16) // (y[0, 0].size or 1))     # y may be a view: cut by image rows

        def finish(chunk, slot):
            n, r0, r1 = chunk
            if bias is not None:
                y[n, r0:r1] += bias
            if relu:
                np.maximum(y[n, r0:r1], 0, out=y[n, r0:r1])
        for_chunks([(n, r, min(r + rows, y.shape[1])) for n in range(y.shape[0])
                    for r in range(0, y.shape[1], rows)], finish, np)
    return y


def conv2d_transpose_backward(g, x, kernel, geom, need_dx, need_dk, need_db=False,
                              relu_output=None):
    """conv2d_transpose's (dX, dK, dBias) when dX and dK are both wanted on the shifted route:
    both read g's stride phases, laid out once here (a strided copy as large as g) instead of
    twice. With `relu_output` (the forward's fused ReLU's y) g is first masked by y > 0, in
    that same copy. Small strided ones take conv_columns' route instead, whose columns of g
    serve both products."""
    if get_array_module(g) is not np:
        return NotImplemented
    if (need_dx or need_dk) and transpose_winograd.fits(geom, g, x, kernel):
        if relu_output is not None:
            g = _masked(g, relu_output=relu_output)
        return transpose_winograd.backward(g, x, kernel, geom, need_dx, need_dk, need_db)
    if not (need_dx and need_dk):
        return NotImplemented
    shifted = shifted_geometry(geom)
    if _route(shifted, kernel.shape[3]) != "shifted":
        return NotImplemented
    if conv_columns.transpose_fits(geom, x, g, kernel):
        return conv_columns.transpose_backward(g, x, kernel, geom, need_db, relu_output)
    phases = shifted.to_phases(g, relu_output)
    dx = _shifted_forward(g, kernel, shifted, phases=phases)
    _, dk, _ = _shifted_backward(x, g, None, shifted, False, True, phases=phases)
    db = None
    if need_db and len(shifted.phases) == shifted.sh:
        # the masked g's sums: its phases hold every pixel of it once, and zeros elsewhere
        db = linalg.column_sums(phases.reshape(-1, geom.C))
    elif need_db:
        db = linalg.column_sums((g if relu_output is None else g * (relu_output > 0))
                                .reshape(-1, geom.C))
    return dx, dk, db


fastpath.register("conv2d_forward", conv2d_forward)
fastpath.register("conv2d_backward", conv2d_backward)
fastpath.register("conv2d_transpose_forward", conv2d_transpose_forward)
fastpath.register("conv2d_transpose_backward", conv2d_transpose_backward)
