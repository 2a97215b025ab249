"""2-D convolution and its transpose, NHWC, kernels in Keras's layouts, Keras's padding rules.

conv2d(x, kernel): x (N, H, W, C), kernel HWIO (kh, kw, C, F) -> (N, OH, OW, F), cross-correlation.
conv2d_transpose(x, kernel): kernel (kh, kw, out, in); it is exactly the adjoint of conv2d, so its
forward is conv2d's input gradient and its backward is conv2d's forward.

How the products are formed (the "shifted GEMM" method). Lay the zero-padded input out as a
matrix with one row per pixel, rows running along each image row and then down the image; a
padded image of width Wp becomes Hp*Wp rows of C numbers. For stride 1, output pixel (i, j) and
kernel tap (a, b) read input row (i + a*dh)*Wp + (j + b*dw): the output pixel's own row plus a
fixed offset. So if the output is laid out with the same row width Wp (its last Wp - OW columns
are junk that is computed and thrown away), every tap is ONE matrix product of a contiguous
slice of the input matrix, (rows, C) @ (C, F), accumulated into the output: no im2col copy at
all, and the kernel slice K[a, b] is used in place. A stride s is brought back to stride 1 by
splitting the padded input into its s_h*s_w phases (x[p::s_h, q::s_w], "space to depth"): tap
(a, b) then reads phase ((a*dh) % s_h, (b*dw) % s_w) at offset ((a*dh) // s_h, (b*dw) // s_w).
Backward uses the same offsets: dK[a, b] = slice^T @ dY and dX_phase[slice] += dY @ K[a, b]^T.

Work is cut into chunks of output rows so that the output chunk stays in cache while every tap
adds into it, and so that no buffer is much larger than the input itself; the chunks are shared
out to worker threads. Backward keeps x, not any column matrix, and skips dK / dX when nobody
needs them (frozen kernels: DeepDream, style transfer).

When C or F is small (an RGB image in or out), a per-tap product is too thin for BLAS to run
well; the thin routes stack the taps of the thin side into one product per chunk instead.
On CuPy arrays everything goes through cuda_kernels (NHWC im2col / col2im and one GEMM).
"""
import numpy as np

from ..accel import cuda as cuda_kernels  # TEMPORARY: to become a registered fast path (issue 14)
from ..backend import get_array_module
from ..tensor import Function
from .workers import chunk_pool, for_chunks, numpy_blas

# Fewer input (or output) channels than this take a thin route: taps stacked into one product.
_MIN_CHANNELS_PER_TAP = 16
# Output rows per chunk: the output chunk should sit in cache while every tap adds into it.
_CHUNK_BYTES = 1 << 20
# dK's products have a small (C, F) output and a long inner size: longer chunks, fewer calls.
_DK_CHUNK_BYTES = 1 << 22
# Stacked tap windows of the thin routes, per chunk.
_THIN_CHUNK_BYTES = 1 << 21
# Copies larger than this are shared out to the worker threads.
_PARALLEL_COPY_BYTES = 1 << 22


# ---- Keras's padding arithmetic ---------------------------------------------------------------

def _pair(value, name, op):
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    try:
        pair = tuple(int(v) for v in value)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}") from None
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return pair


def _padding_name(padding):
    name = str(padding).lower()
    if name not in ("same", "valid"):
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    return name


def padding_amounts(size, kernel, stride, padding, dilation=1):
    """(before, after, out) along one axis for Keras's padding ('same' or 'valid').

    'same' gives out = ceil(size / stride) and pads total = (out - 1) * stride + k - size, with
    the odd pixel after (bottom / right), as TensorFlow does: n=8, k=3, s=2 pads (0, 1).
    """
    k = (kernel - 1) * dilation + 1
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
        return total // 2, total - total // 2, out
    return 0, 0, (size - k) // stride + 1


# ---- matrix products into a given output ------------------------------------------------------

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def _operand(a):
    """(transpose flag, leading dimension, array) describing a 2-D array to row-major cblas."""
    item = a.itemsize
    rows, cols = a.shape
    if a.strides[1] == item and a.strides[0] % item == 0 and a.strides[0] >= max(cols, 1) * item:
        return _NO_TRANS, a.strides[0] // item, a
    if a.strides[0] == item and a.strides[1] % item == 0 and a.strides[1] >= max(rows, 1) * item:
        return _TRANS, a.strides[1] // item, a
    a = np.ascontiguousarray(a)
    return _NO_TRANS, max(cols, 1), a


def gemm_into(a, b, out, accumulate=False):
    """out = a @ b, or out += a @ b when accumulate, for 2-D a (m, k), b (k, n), out (m, n).

    a and b may be slices or transposed views (nothing is copied when one axis has unit
    stride); out must be C-ordered.
    """
    xp = get_array_module(a, b, out)
    gemm = numpy_blas()[0].get(out.dtype) if xp is np else None
    if gemm is None or not (a.dtype == b.dtype == out.dtype) or not out.flags.c_contiguous:
        if accumulate:
            out += xp.matmul(a, b)
        else:
            xp.matmul(a, b, out=out)
        return out
    (m, k), n = a.shape, b.shape[1]
    if m == 0 or n == 0 or k == 0:
        if not accumulate:
            out[...] = 0
        return out
    trans_a, lda, a = _operand(a)
    trans_b, ldb, b = _operand(b)
    gemm(_ROW_MAJOR, trans_a, trans_b, m, n, k, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb,
         1.0 if accumulate else 0.0, out.ctypes.data, max(n, 1))
    return out


class _Rows:
    """A C-ordered array read as a row-major matrix `width` numbers wide, whose row blocks the
    per-tap loops multiply with gemm_rows.

    The shifted route makes a few thousand products per DeepDream step, most of them small.
    Slicing views and reading their addresses (ndarray.ctypes.data alone costs about 2 us)
    doubled the Python side of each product, which runs under the GIL and so holds up the other
    worker thread too. Here the address is taken once per array and a block is just
    (this, first row, stop row).
    """
    __slots__ = ("array", "width", "rows", "dtype", "address", "row_bytes", "gemm")

    def __init__(self, array, width):
        if not array.flags.c_contiguous:   # a reshape would copy, and writes would be lost
            raise ValueError(f"_Rows needs a C-ordered array, got strides {array.strides}")
        self.array = array.reshape(-1, width)
        self.rows, self.width, self.dtype = self.array.shape[0], width, array.dtype
        self.address, self.row_bytes = self.array.ctypes.data, width * array.itemsize
        self.gemm = numpy_blas()[0].get(array.dtype)


def gemm_rows(out, a, b, accumulate=False, transpose_a=False, transpose_b=False):
    """out = op(a) @ op(b), or out += op(a) @ op(b), on row blocks (rows, first, stop) of _Rows
    matrices; op transposes the block when asked. Shapes are checked, as a wrong block would
    otherwise read or write past its array."""
    (mo, o0, o1), (ma, a0, a1), (mb, b0, b1) = out, a, b
    a_shape = (ma.width, a1 - a0) if transpose_a else (a1 - a0, ma.width)
    b_shape = (mb.width, b1 - b0) if transpose_b else (b1 - b0, mb.width)
    if (a_shape[1] != b_shape[0] or (o1 - o0, mo.width) != (a_shape[0], b_shape[1])
            or not (0 <= o0 <= o1 <= mo.rows and 0 <= a0 <= a1 <= ma.rows
                    and 0 <= b0 <= b1 <= mb.rows)):
        raise ValueError(f"gemm_rows: blocks {a_shape} @ {b_shape} -> {(o1 - o0, mo.width)} "
                         f"do not fit (rows {a0}:{a1} of {ma.rows}, {b0}:{b1} of {mb.rows}, "
                         f"{o0}:{o1} of {mo.rows})")
    gemm = mo.gemm
    if gemm is None or not (ma.gemm is mb.gemm is gemm) or 0 in a_shape or 0 in b_shape:
        block_a, block_b = ma.array[a0:a1], mb.array[b0:b1]
        gemm_into(block_a.T if transpose_a else block_a, block_b.T if transpose_b else block_b,
                  mo.array[o0:o1], accumulate)
        return
    gemm(_ROW_MAJOR, _TRANS if transpose_a else _NO_TRANS, _TRANS if transpose_b else _NO_TRANS,
         a_shape[0], b_shape[1], a_shape[1], 1.0, ma.address + a0 * ma.row_bytes, ma.width,
         mb.address + b0 * mb.row_bytes, mb.width, 1.0 if accumulate else 0.0,
         mo.address + o0 * mo.row_bytes, mo.width)


def _assign(dst, src, mask=None):
    """dst[...] = src (or src * mask) for 4-D arrays; large copies are split into row bands over
    the workers (NumPy releases the GIL while copying)."""
    xp = get_array_module(dst)
    rows = dst.shape[1]

    def copy(band, slot):
        part = slice(band[0], band[1])
        if mask is None:
            dst[:, part] = src[:, part]
        else:
            xp.multiply(src[:, part], mask[:, part], out=dst[:, part])
    if xp is not np or dst.nbytes < _PARALLEL_COPY_BYTES or rows < 2:
        copy((0, rows), 0)
        return
    step = -(-rows // 4)
    for_chunks([(i, min(i + step, rows)) for i in range(0, rows, step)], copy, xp)


# ---- geometry of one convolution --------------------------------------------------------------

class _Geometry:
    """Sizes, padding and the tap offsets of one conv2d on inputs of a given shape.

    The padded input is split into phases (one per stride residue that some tap touches), each
    stored as a matrix of N*Hq*Wq rows: image n, phase row i, phase column j is row
    (n*Hq + i)*Wq + j. The output uses the same row numbering, so output row u and tap t read
    phase row u + offset[t]. Only output rows with i < OH and j < OW are real.
    """

    def __init__(self, x_shape, kernel_shape, strides, padding, dilation):
        if len(x_shape) != 4:
            raise ValueError(f"x must be NHWC (4-D), got shape {tuple(x_shape)}")
        if len(kernel_shape) != 4:
            raise ValueError(f"kernel must be 4-D (kh, kw, in, out), got shape "
                             f"{tuple(kernel_shape)}")
        self.N, self.H, self.W, self.C = (int(v) for v in x_shape)
        self.kh, self.kw = int(kernel_shape[0]), int(kernel_shape[1])
        self.sh, self.sw = strides
        self.dh, self.dw = dilation
        self.pt, self.pb, self.OH = padding_amounts(self.H, self.kh, self.sh, padding, self.dh)
        self.pl, self.pr, self.OW = padding_amounts(self.W, self.kw, self.sw, padding, self.dw)
        if self.OH < 1 or self.OW < 1:
            raise ValueError(
                f"a {self.kh}x{self.kw} kernel (dilation {dilation}) does not fit in an "
                f"input of {self.H}x{self.W} with padding '{padding}'")
        Hp, Wp = self.H + self.pt + self.pb, self.W + self.pl + self.pr
        self.Hq, self.Wq = -(-Hp // self.sh), -(-Wp // self.sw)
        phases, taps = [], []
        for a in range(self.kh):
            for b in range(self.kw):
                r, c = a * self.dh, b * self.dw
                phase = (r % self.sh, c % self.sw)
                if phase not in phases:
                    phases.append(phase)
                taps.append((a, b, phases.index(phase), (r // self.sh) * self.Wq + c // self.sw))
        self.phases, self.taps = phases, taps
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

    def _phase_window(self, p, q):
        """Where x lands in phase (p, q): (phase start row, x start row, count), same for cols."""
        def axis(phase, pad, stride, n, nq):
            first = max(0, -(-(pad - phase) // stride))  # first phase index on a real pixel
            src = phase + first * stride - pad
            count = min(len(range(src, n, stride)), nq - first)
            return first, src, max(count, 0)
        return (axis(p, self.pt, self.sh, self.H, self.Hq),
                axis(q, self.pl, self.sw, self.W, self.Wq))

    def to_phases(self, x):
        """The padded input as (n_phases, rows + tail, C) matrices (zeros where padding)."""
        xp = get_array_module(x)
        if self.pointwise:
            return xp.ascontiguousarray(x).reshape(1, self.rows, self.C)
        buf = xp.empty((len(self.phases), self.rows + self.tail, self.C), x.dtype)
        buf[:, self.rows:] = 0
        body = buf[:, :self.rows].reshape(len(self.phases), self.N, self.Hq, self.Wq, self.C)
        for k, (p, q) in enumerate(self.phases):
            (i0, r0, ni), (j0, c0, nj) = self._phase_window(p, q)
            # Zero only the padding around the pixels (a full memset first costs one more pass
            # over a buffer as large as x, a third of the copy's time).
            phase = body[k]
            phase[:, :i0] = 0
            phase[:, i0 + ni:] = 0
            phase[:, i0:i0 + ni, :j0] = 0
            phase[:, i0:i0 + ni, j0 + nj:] = 0
            _assign(phase[:, i0:i0 + ni, j0:j0 + nj], x[:, r0::self.sh, c0::self.sw][:, :ni, :nj])
        return buf

    def real_rows(self, k):
        """The range of phase-k rows that hold real pixels (the rows dX has to fill)."""
        (i0, _, ni), _ = self._phase_window(*self.phases[k])
        return i0 * self.Wq, ((self.N - 1) * self.Hq + i0 + ni) * self.Wq

    def from_phases(self, buf, dtype):
        """Adjoint of to_phases: the real pixels of (n_phases, rows, C) as (N, H, W, C).

        With one phase (stride 1) that is a view of buf, not a copy."""
        xp = get_array_module(buf)
        body = buf[:, :self.rows].reshape(len(self.phases), self.N, self.Hq, self.Wq, self.C)
        if self.sh == self.sw == 1:
            return body[0, :, self.pt:self.pt + self.H, self.pl:self.pl + self.W]
        # Every pixel lies in exactly one phase; pixels of phases no tap reads get zeros.
        every = len(self.phases) == self.sh * self.sw
        x = (xp.empty if every else xp.zeros)((self.N, self.H, self.W, self.C), dtype)
        for k, (p, q) in enumerate(self.phases):
            (i0, r0, ni), (j0, c0, nj) = self._phase_window(p, q)
            _assign(x[:, r0::self.sh, c0::self.sw][:, :ni, :nj],
                    body[k, :, i0:i0 + ni, j0:j0 + nj])
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

    def chunks(self, start, stop, width, chunk_bytes, min_rows=0, pieces=None):
        """Near-equal row ranges covering [start, stop), each of whole phase rows: about
        chunk_bytes of `width`-wide numbers each, at least min_rows rows, and (where that
        allows) at least `pieces` of them (default: one per worker thread), so that every thread
        gets work. No smaller than that: each product re-packs its (C, F) kernel slice, which
        costs as much as a product of a few rows."""
        if pieces is None:
            pieces = chunk_pool()[1]
        lines = -(-(stop - start) // self.Wq)
        count = max(pieces, -(-lines // max(1, chunk_bytes // (4 * max(width, 1) * self.Wq))))
        count = max(1, min(count, lines // max(1, -(-min_rows // self.Wq))))
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
    X, K, Y = _Rows(phases, C), _Rows(xp.ascontiguousarray(kernel), F), _Rows(y, F)

    def work(chunk, slot):
        u0, u1 = chunk
        for t, (a, b, k, off) in enumerate(geom.taps):
            # (rows, C) @ (C, F): output row u, tap (a, b) reads phase row u + off; the output
            # chunk stays in cache over the taps
            start = k * stride + u0 + off
            gemm_rows((Y, u0, u1), (X, start, start + u1 - u0), (K, t * C, (t + 1) * C),
                      accumulate=t > 0)
        if bias is not None:
            y[u0:u1] += bias                                  # while the chunk is in cache
        if relu:
            xp.maximum(y[u0:u1], 0, out=y[u0:u1])
    for_chunks(geom.chunks(0, geom.used_rows, F, _CHUNK_BYTES), work, xp)
    return geom.from_wide(y, F)


def _shifted_backward(g, x, kernel, geom, need_dx, need_dk, need_db=False, positive=None,
                      phases=None):
    """(dX, dK, dBias) from dY (N, OH, OW, F); None for what is not needed. `phases`: x's
    stride phases when the caller has them already."""
    xp = get_array_module(g)
    margin = geom.max_offset if need_dx else 0
    gw = geom.to_wide(g, margin, positive)                    # (margin + rows, F)
    dx = dk = db = None
    F = g.shape[3]
    G = _Rows(gw, F)
    if need_dx:
        C = kernel.shape[2]
        dphases = xp.empty((len(geom.phases), geom.rows, C), g.dtype)
        K, DX = _Rows(xp.ascontiguousarray(kernel), F), _Rows(dphases, C)

        def work_dx(chunk, slot):
            k, v0, v1 = chunk
            out = (DX, k * geom.rows + v0, k * geom.rows + v1)
            for i, (a, b, off) in enumerate(_phase_taps(geom, k)):
                # phase row v was read by output row v - off through tap (a, b):
                # (rows, F) @ (F, C)
                t = a * geom.kw + b
                gemm_rows(out, (G, margin + v0 - off, margin + v1 - off),
                          (K, t * C, (t + 1) * C), accumulate=i > 0, transpose_b=True)
        for_chunks([(k, v0, v1) for k in range(len(geom.phases))
                     for v0, v1 in geom.chunks(*geom.real_rows(k), C, _CHUNK_BYTES)],
                    work_dx, xp)
        dx = geom.from_phases(dphases, g.dtype)
    if need_dk:
        C = geom.C
        if phases is None:
            phases = geom.to_phases(x)
        X, stride = _Rows(phases, C), phases.shape[1]
        shape = (geom.kh, geom.kw, C, F)
        partial = {}                                          # (dK, dBias) sums per thread

        def work_dk(chunk, slot):
            u0, u1 = chunk
            first = slot not in partial
            if first:
                dk_sum = xp.empty(shape, g.dtype)
                partial[slot] = (dk_sum, _Rows(dk_sum, F), xp.zeros(F, g.dtype))
            _, DK, db_sum = partial[slot]
            for t, (a, b, k, off) in enumerate(geom.taps):
                # (C, rows) @ (rows, F), summed over chunks; dY's junk rows hold zeros
                start = k * stride + u0 + off
                gemm_rows((DK, t * C, (t + 1) * C), (X, start, start + u1 - u0),
                          (G, margin + u0, margin + u1), accumulate=not first, transpose_a=True)
            if need_db:
                db_sum += gw[margin + u0:margin + u1].sum(axis=0)
        for_chunks(geom.chunks(0, geom.used_rows, geom.C + g.shape[3], _DK_CHUNK_BYTES),
                    work_dk, xp, fixed=True)
        dk, _, db = partial[0]
        for slot in range(1, len(partial)):
            dk += partial[slot][0]
            db += partial[slot][2]
        db = db if need_db else None
    if need_db and db is None:
        db = gw.sum(axis=0)                                   # zeros on margin and junk rows
    return dx, dk, db


# ---- thin convolutions: few input or few output channels ---------------------------------------
#
# A per-tap product with inner size C = 3 (an RGB input) or outer size F = 3 (an RGB output) is
# too thin for BLAS. Stacking the taps fixes that: gather the kh*kw shifted windows of the thin
# side into one matrix (an im2col in the row numbering above, but channel-major, so that every
# window is a contiguous run of each channel's row and the gather is kh*kw*(C or F) plain
# copies), and make one product per chunk with inner size kh*kw*C (or kh*kw*F).

def _phase_taps(geom, k):
    return [(a, b, off) for a, b, phase, off in geom.taps if phase == k]


def _thin_input_forward(x, kernel, geom, bias=None, relu=False):
    """C small: y[u] = sum_t x[u + off_t] @ K_t as (rows, T*C) @ (T*C, F) per chunk."""
    xp = get_array_module(x, kernel)
    T, C, F = len(geom.taps), geom.C, kernel.shape[3]
    xt = xp.ascontiguousarray(geom.to_phases(x).transpose(0, 2, 1))    # (P, C, rows + tail)
    kmat = kernel.reshape(T * C, F)                                     # rows in tap order
    y = xp.empty((geom.rows, F), x.dtype)

    def work(chunk, slot):
        u0, u1 = chunk
        cols = xp.empty((T * C, u1 - u0), x.dtype)                      # (T*C, rows)
        for t, (a, b, k, off) in enumerate(geom.taps):
            cols[t * C:(t + 1) * C] = xt[k, :, u0 + off:u1 + off]
        out = y[u0:u1]
        gemm_into(cols.T, kmat, out)                                    # (rows, T*C) @ (T*C, F)
        if bias is not None:
            out += bias
        if relu:
            xp.maximum(out, 0, out=out)
    for_chunks(geom.chunks(0, geom.used_rows, T * C, _THIN_CHUNK_BYTES), work, xp)
    return geom.from_wide(y, F)


def _thin_input_backward(g, x, kernel, geom, need_dx, need_dk, need_db=False, positive=None):
    xp = get_array_module(g)
    T, C, F = len(geom.taps), geom.C, g.shape[3]
    margin = geom.max_offset
    gw = geom.to_wide(g, margin, positive)                              # (margin + rows, F)
    dx = dk = None
    if need_dx:
        # Z = K_t @ dY^T for every tap at once, then each tap's block lands shifted by its
        # offset: dX^T[:, v] = sum_t Z_t[:, v - off_t].
        dxt = xp.zeros((len(geom.phases), C, geom.rows), g.dtype)       # (P, C, rows)
        taps = [_phase_taps(geom, k) for k in range(len(geom.phases))]
        kmats = [xp.concatenate([kernel[a, b] for a, b, _ in phase_taps])   # (T_k*C, F)
                 for phase_taps in taps]

        def work_dx(chunk, slot):
            k, v0, v1 = chunk
            reach, n = max(off for _, _, off in taps[k]), v1 - v0
            z = xp.empty((len(taps[k]) * C, n + reach), g.dtype)
            # (T_k*C, F) @ (F, rows): dY rows v0 - reach .. v1
            gemm_into(kmats[k], gw[margin + v0 - reach:margin + v1].T, z)
            for t, (_, _, off) in enumerate(taps[k]):
                dxt[k, :, v0:v1] += z[t * C:(t + 1) * C, reach - off:reach - off + n]
        for_chunks([(k, v0, v1) for k in range(len(geom.phases))
                    for v0, v1 in geom.chunks(*geom.real_rows(k), len(taps[k]) * C,
                                              _THIN_CHUNK_BYTES,
                                              min_rows=8 * max(off for *_, off in taps[k]))],
                   work_dx, xp)
        # from_phases reads the (P, rows, C) view in place: no transposed copy first
        dx = geom.from_phases(dxt.transpose(0, 2, 1), g.dtype)
    if need_dk:
        xt = xp.ascontiguousarray(geom.to_phases(x).transpose(0, 2, 1))
        partial = {}                                                    # dK sums per thread

        def work_dk(chunk, slot):
            u0, u1 = chunk
            cols = xp.empty((T * C, u1 - u0), g.dtype)
            for t, (a, b, k, off) in enumerate(geom.taps):
                cols[t * C:(t + 1) * C] = xt[k, :, u0 + off:u1 + off]
            first = slot not in partial
            if first:
                partial[slot] = xp.empty((T * C, F), g.dtype)
            # (T*C, rows) @ (rows, F), summed over chunks
            gemm_into(cols, gw[margin + u0:margin + u1], partial[slot], accumulate=not first)
        for_chunks(geom.chunks(0, geom.used_rows, T * C, _THIN_CHUNK_BYTES), work_dk, xp,
                   fixed=True)
        dk = partial[0]
        for slot in range(1, len(partial)):
            dk += partial[slot]
        dk = dk.reshape(geom.kh, geom.kw, C, F)
    return dx, dk, gw.sum(axis=0) if need_db else None     # zeros on margin and junk rows


def _thin_output_forward(x, kernel, geom, bias=None, relu=False):
    """F small: Z = [K_t^T] @ x^T for every tap at once, then y^T[:, u] = sum_t Z_t[:, u + off_t].
    """
    xp = get_array_module(x, kernel)
    F = kernel.shape[3]
    phases = geom.to_phases(x)                                          # (P, rows + tail, C)
    yt = xp.empty((F, geom.rows), x.dtype)                              # (F, rows)
    taps = [_phase_taps(geom, k) for k in range(len(geom.phases))]
    kmats = [xp.concatenate([kernel[a, b].T for a, b, _ in phase_taps])     # (T_k*F, C)
             for phase_taps in taps]
    reach = [max(off for *_, off in phase_taps) for phase_taps in taps]

    def work(chunk, slot):
        u0, u1 = chunk
        n, out = u1 - u0, yt[:, u0:u1]
        out[...] = 0
        for k in range(len(taps)):
            z = xp.empty((len(taps[k]) * F, n + reach[k]), x.dtype)
            gemm_into(kmats[k], phases[k, u0:u1 + reach[k]].T, z)       # (T_k*F, C) @ (C, rows)
            for t, (_, _, off) in enumerate(taps[k]):
                out += z[t * F:(t + 1) * F, off:off + n]
        if bias is not None:
            out += bias[:, None]
        if relu:
            xp.maximum(out, 0, out=out)
    # Each chunk also reads `reach` rows past its end: keep chunks long next to that.
    for_chunks(geom.chunks(0, geom.used_rows, geom.C, _THIN_CHUNK_BYTES, min_rows=8 * max(reach)),
               work, xp)
    return geom.from_wide(xp.ascontiguousarray(yt.T), F)


def _thin_output_backward(g, x, kernel, geom, need_dx, need_dk, need_db=False, positive=None):
    """F small: stack dY's shifted windows (T*F, rows) once per chunk; dX and dK are then one
    product each with inner or outer size T*F."""
    xp = get_array_module(g)
    F, C = g.shape[3], geom.C
    margin = geom.max_offset
    # dY^T with zeros around: reads at rows v - off_t for v up to rows + tail stay inside.
    gt = xp.zeros((F, margin + geom.rows + geom.tail), g.dtype)
    gt[:, :margin + geom.rows] = geom.to_wide(g, margin, positive).T
    taps = [_phase_taps(geom, k) for k in range(len(geom.phases))]

    def windows(k, v0, v1):
        stacked = xp.empty((len(taps[k]) * F, v1 - v0), g.dtype)       # (T_k*F, rows)
        for t, (_, _, off) in enumerate(taps[k]):
            stacked[t * F:(t + 1) * F] = gt[:, margin + v0 - off:margin + v1 - off]
        return stacked

    dx = dk = None
    if need_dx:
        dphases = xp.empty((len(geom.phases), geom.rows, C), g.dtype)
        kmats = [xp.concatenate([kernel[a, b].T for a, b, _ in phase_taps])  # (T_k*F, C)
                 for phase_taps in taps]

        def work_dx(chunk, slot):
            k, v0, v1 = chunk
            # (rows, T_k*F) @ (T_k*F, C)
            gemm_into(windows(k, v0, v1).T, kmats[k], dphases[k, v0:v1])
        for_chunks([(k, v0, v1) for k in range(len(taps))
                    for v0, v1 in geom.chunks(*geom.real_rows(k), len(taps[k]) * F,
                                              _THIN_CHUNK_BYTES)], work_dx, xp)
        dx = geom.from_phases(dphases, g.dtype)
    if need_dk:
        phases = geom.to_phases(x)
        partial = {}                                    # (slot, phase) -> (T_k*F, C) sums

        def work_dk(chunk, slot):
            k, v0, v1 = chunk
            first = (slot, k) not in partial
            if first:
                partial[slot, k] = xp.empty((len(taps[k]) * F, C), g.dtype)
            gemm_into(windows(k, v0, v1), phases[k, v0:v1], partial[slot, k],
                      accumulate=not first)
        for_chunks([(k, v0, v1) for k in range(len(taps))
                    for v0, v1 in geom.chunks(0, geom.used_rows + max(o for *_, o in taps[k]),
                                              len(taps[k]) * F, _THIN_CHUNK_BYTES)],
                   work_dk, xp, fixed=True)
        dk = xp.empty((geom.kh, geom.kw, C, F), g.dtype)
        for k in range(len(taps)):
            slots = sorted(slot for slot, phase in partial if phase == k)
            dkt = partial[slots[0], k]
            for slot in slots[1:]:
                dkt += partial[slot, k]
            for t, (a, b, _) in enumerate(taps[k]):
                dk[a, b] = dkt[t * F:(t + 1) * F].T
    return dx, dk, gt.sum(axis=1) if need_db else None      # zeros on margin and junk rows


# ---- NHWC im2col / col2im (the CUDA kernels' NumPy twins, see cuda_kernels.py) -----------------

def im2col(xpad, kernel_size, strides, dilation, out_size, out=None):
    """Columns (N, OH, OW, kh*kw*C) of an already padded NHWC input: block t = a*kw + b of the
    last axis holds xpad[n, i*sh + a*dh, j*sw + b*dw, :], so that columns @ kernel.reshape(-1, F)
    is the convolution. One strided copy per kernel tap."""
    xp = get_array_module(xpad)
    (kh, kw), (sh, sw), (dh, dw), (OH, OW) = kernel_size, strides, dilation, out_size
    N, C = xpad.shape[0], xpad.shape[3]
    cols = xp.empty((N, OH, OW, kh * kw * C), xpad.dtype) if out is None else out
    blocks = cols.reshape(N, OH, OW, kh * kw, C)
    for a in range(kh):
        for b in range(kw):
            blocks[:, :, :, a * kw + b] = xpad[:, a * dh:a * dh + (OH - 1) * sh + 1:sh,
                                               b * dw:b * dw + (OW - 1) * sw + 1:sw]
    return cols


def col2im(cols, xpad, kernel_size, strides, dilation):
    """Adjoint of im2col: add every column block back onto the padded input it came from
    (xpad += ..., in place; overlapping windows accumulate)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, strides, dilation
    N, OH, OW = cols.shape[:3]
    blocks = cols.reshape(N, OH, OW, kh * kw, xpad.shape[3])
    for a in range(kh):
        for b in range(kw):
            xpad[:, a * dh:a * dh + (OH - 1) * sh + 1:sh,
                 b * dw:b * dw + (OW - 1) * sw + 1:sw] += blocks[:, :, :, a * kw + b]
    return xpad


_ROUTES = {
    "shifted": (_shifted_forward, _shifted_backward),
    "thin_input": (_thin_input_forward, _thin_input_backward),
    "thin_output": (_thin_output_forward, _thin_output_backward),
}


def _route(geom, F):
    if geom.kh * geom.kw == 1:
        return "shifted"      # a 1x1 convolution is one product per chunk already
    if geom.C < _MIN_CHANNELS_PER_TAP:
        return "thin_input"
    if F < _MIN_CHANNELS_PER_TAP:
        return "thin_output"
    return "shifted"


def conv_forward(x, kernel, geom, bias=None, relu=False):
    """y (N, OH, OW, F) = conv2d(x, kernel) + bias on the geometry's strides, padding, dilation,
    and max(y, 0) after that with relu=True: both are applied to each chunk of the output while
    it is still in cache, instead of in passes of their own over the whole output."""
    xp = get_array_module(x)
    if xp is not np:  # CuPy: one im2col kernel and one GEMM (kernels/)
        y = cuda_kernels.conv2d_forward(x, kernel, geom)
        if bias is not None:
            y += bias
        if relu:
            xp.maximum(y, 0, out=y)
        return y
    forward, _ = _ROUTES[_route(geom, kernel.shape[3])]
    return forward(x, kernel, geom, bias, relu)


def conv_backward(g, x, kernel, geom, need_dx=True, need_dk=True, need_db=False, positive=None):
    """(dX, dK, dBias) of conv_forward for the cotangent g (N, OH, OW, F); None for what is not
    needed. dX needs only the kernel and dK only x. `positive` is the mask (y > 0) of a forward
    run with relu=True: g is multiplied by it on its way in."""
    if get_array_module(g) is not np:  # CuPy: col2im / im2col kernels and GEMMs (kernels/)
        if positive is not None:
            g = g * positive
        dx, dk = cuda_kernels.conv2d_backward(g, x, kernel, geom, need_dx, need_dk)
        return dx, dk, g.sum(axis=(0, 1, 2)) if need_db else None
    _, backward = _ROUTES[_route(geom, g.shape[3])]
    return backward(g, x, kernel, geom, need_dx, need_dk, need_db, positive)


def _check_bias(bias, filters):
    if bias is not None and tuple(bias.shape) != (filters,):
        raise ValueError(f"bias has shape {tuple(bias.shape)} but the kernel has {filters} "
                         f"filters (expected ({filters},))")


class Conv2D(Function):
    def forward(self, x, kernel, bias=None, strides=1, padding="valid", dilation_rate=1,
                relu=False):
        op = "conv2d"
        geom = _Geometry(x.shape, kernel.shape, _pair(strides, "strides", op),
                         _padding_name(padding), _pair(dilation_rate, "dilation_rate", op))
        if kernel.shape[2] != geom.C:
            raise ValueError(f"kernel {tuple(kernel.shape)} (kh, kw, in, out) expects "
                             f"{kernel.shape[2]} input channels but x {tuple(x.shape)} has "
                             f"{geom.C}")
        _check_bias(bias, kernel.shape[3])
        y = conv_forward(x, kernel, geom, bias, relu)
        self.geom = geom
        # A fused ReLU's backward is g * (y > 0); the mask is 1 byte a number, y would be 4.
        self.positive = y > 0 if relu and any(self.needs_input_grad) else None
        # Keep only what backward will use: x for dK, the kernel for dX. Never the columns.
        self.x = x if self.needs_input_grad[1] else None
        self.kernel = kernel if self.needs_input_grad[0] else None
        return y

    def backward(self, g):
        return conv_backward(g, self.x, self.kernel, self.geom, *self.needs_input_grad,
                             positive=self.positive)


class Conv2DTranspose(Function):
    """The adjoint of conv2d: forward is conv2d's input gradient, backward is conv2d itself.

    The kernel (kh, kw, out, in) is, read as a conv2d kernel (HWIO), one that maps `out`
    channels to `in`; Keras's output size is the input size of that conv2d: n*s for 'same',
    n*s + max(k - s, 0) for 'valid'.
    """

    def forward(self, x, kernel, bias=None, strides=1, padding="valid"):
        op = "conv2d_transpose"
        strides = _pair(strides, "strides", op)
        padding = _padding_name(padding)
        if x.ndim != 4 or kernel.ndim != 4:
            raise ValueError(f"x must be NHWC and kernel (kh, kw, out, in), got shapes "
                             f"{tuple(x.shape)} and {tuple(kernel.shape)}")
        N, H, W, C = x.shape
        kh, kw, filters, channels = kernel.shape
        if channels != C:
            raise ValueError(f"kernel {tuple(kernel.shape)} (kh, kw, out, in) expects {channels} "
                             f"input channels but x {tuple(x.shape)} has {C}")
        _check_bias(bias, filters)
        size = [n * s + (0 if padding == "same" else max(k - s, 0))
                for n, k, s in ((H, kh, strides[0]), (W, kw, strides[1]))]
        geom = _Geometry((N, size[0], size[1], filters), kernel.shape, strides, padding, (1, 1))
        y, _, _ = conv_backward(x, None, kernel, geom, need_dk=False)
        if bias is not None:
            y += bias
        self.geom = geom
        self.x = x if self.needs_input_grad[1] else None
        self.kernel = kernel if self.needs_input_grad[0] else None
        return y

    def backward(self, g):
        dx = dk = db = None
        geom = self.geom
        if (all(self.needs_input_grad[:2]) and get_array_module(g) is np
                and _route(geom, self.kernel.shape[3]) == "shifted"):
            # dX and dK both read g's stride phases: lay them out once (a strided copy as large
            # as g; 5% of the VAE's training step)
            phases = geom.to_phases(g)
            dx = _shifted_forward(g, self.kernel, geom, phases=phases)
            _, dk, _ = _shifted_backward(self.x, g, None, geom, False, True, phases=phases)
        else:
            if self.needs_input_grad[0]:
                dx = conv_forward(g, self.kernel, geom)
            if self.needs_input_grad[1]:
                # <g, A_K^T x> = <A_K g, x>: conv2d's kernel gradient, the roles of x and g
                # swapped (as in the shared-phases call above)
                _, dk, _ = conv_backward(self.x, g, None, geom, need_dx=False)
        if self.needs_input_grad[2]:
            db = g.sum(axis=(0, 1, 2))
        return dx, dk, db


def conv2d(x, kernel, bias=None, strides=1, padding="valid", dilation_rate=1, relu=False):
    """2-D cross-correlation (Keras's Conv2D): x (N, H, W, C), kernel (kh, kw, C, F), bias (F,)
    -> (N, OH, OW, F). strides and dilation_rate are ints or (rows, cols) pairs; padding is
    'valid' or 'same' (Keras's rule: the odd padding pixel goes bottom / right). relu=True
    gives max(conv2d + bias, 0) in one op, as Conv2D(activation="relu") computes it."""
    return Conv2D.apply(x, kernel, bias, strides=strides, padding=padding,
                        dilation_rate=dilation_rate, relu=relu)


def conv2d_transpose(x, kernel, bias=None, strides=1, padding="valid"):
    """Transposed convolution (Keras's Conv2DTranspose): x (N, H, W, in), kernel (kh, kw, out,
    in), bias (out,) -> (N, H*s, W*s, out) for 'same', (N, H*s + max(k - s, 0), ..., out) for
    'valid'. Exactly the adjoint of conv2d with the same kernel, strides and padding."""
    return Conv2DTranspose.apply(x, kernel, bias, strides=strides, padding=padding)
