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
adds into it, and so that no buffer is much larger than the input itself. Backward keeps x, not
any column matrix, and skips dK / dX when nobody needs them (frozen kernels: DeepDream, style
transfer).

When C is small (the first layer of an image network: C = 1 or 3), a product with inner size C
is too thin for BLAS to run well; there `im2col` gathers all taps into (rows, kh*kw*C) columns,
chunk by chunk, for one product per chunk.
"""
import numpy as np

from .. import cuda_kernels
from ..backend import get_array_module
from ..tensor import Function

# Inner sizes below this go through im2col (one product per chunk with inner size kh*kw*C)
# instead of one product per tap with inner size C.
_MIN_CHANNELS_PER_TAP = 16
# Output rows per chunk: the output chunk should sit in cache while every tap adds into it.
_CHUNK_BYTES = 1 << 19
# dK's products have a small (C, F) output and a long inner size: longer chunks, fewer calls.
_DK_CHUNK_BYTES = 1 << 22


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

def _find_numpy_cblas():
    """{dtype: cblas_?gemm} from the OpenBLAS inside NumPy's own wheel, or {} when not found.

    np.matmul cannot add into its output (BLAS gemm's beta = 1), and adding a temporary per
    kernel tap costs a pass over the output each time. Calling gemm from the library NumPy
    already loaded gives beta = 1 with NumPy's own thread pool (scipy.linalg.blas would bring a
    second OpenBLAS whose idle threads spin beside NumPy's, and it is slower here for thin
    products). Any other NumPy build falls back to matmul plus an addition.
    """
    import ctypes
    import glob
    import os
    here = os.path.dirname(np.__file__)
    paths = sorted(glob.glob(os.path.join(here + ".libs", "*openblas*"))
                   + glob.glob(os.path.join(here, ".dylibs", "*openblas*")))
    # scipy-openblas wheels name their symbols scipy_cblas_*; "64_" marks 64-bit integers.
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for suffix, integer in (("64_", ctypes.c_int64), ("", ctypes.c_int32)):
            found = {}
            for dtype, letter, scalar in ((np.float32, "s", ctypes.c_float),
                                          (np.float64, "d", ctypes.c_double)):
                fn = getattr(lib, f"scipy_cblas_{letter}gemm{suffix}", None)
                if fn is None:
                    break
                fn.restype = None
                fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, integer, integer,
                               integer, scalar, ctypes.c_void_p, integer, ctypes.c_void_p,
                               integer, scalar, ctypes.c_void_p, integer]
                found[np.dtype(dtype)] = fn
            if len(found) == 2:
                return found
    return {}


_CBLAS = None
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
    global _CBLAS
    xp = get_array_module(a, b, out)
    if xp is np and _CBLAS is None:
        _CBLAS = _find_numpy_cblas()
    gemm = _CBLAS.get(out.dtype) if xp is np else None
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
        buf = xp.zeros((len(self.phases), self.rows + self.tail, self.C), x.dtype)
        body = buf[:, :self.rows].reshape(len(self.phases), self.N, self.Hq, self.Wq, self.C)
        for k, (p, q) in enumerate(self.phases):
            (i0, r0, ni), (j0, c0, nj) = self._phase_window(p, q)
            body[k, :, i0:i0 + ni, j0:j0 + nj] = x[:, r0::self.sh, c0::self.sw][:, :ni, :nj]
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
        x = xp.zeros((self.N, self.H, self.W, self.C), dtype)
        for k, (p, q) in enumerate(self.phases):
            (i0, r0, ni), (j0, c0, nj) = self._phase_window(p, q)
            x[:, r0::self.sh, c0::self.sw][:, :ni, :nj] = body[k, :, i0:i0 + ni, j0:j0 + nj]
        return x

    def to_wide(self, y, margin):
        """dY (N, OH, OW, F) in the output's row numbering, zeros on junk rows, after `margin`
        leading zero rows (so that reads at row u - offset never go below 0)."""
        xp = get_array_module(y)
        F = y.shape[-1]
        buf = xp.empty((margin + self.rows, F), y.dtype)
        body = buf[margin:].reshape(self.N, self.Hq, self.Wq, F)
        buf[:margin] = 0
        body[:, self.OH:] = 0
        body[:, :self.OH, self.OW:] = 0
        body[:, :self.OH, :self.OW] = y
        return buf

    def from_wide(self, buf, F):
        return buf[:self.rows].reshape(self.N, self.Hq, self.Wq, F)[:, :self.OH, :self.OW]

    def chunks(self, start, stop, width, chunk_bytes):
        """Row ranges of [start, stop) holding whole phase rows and about chunk_bytes of
        `width`-wide numbers each."""
        rows = max(1, chunk_bytes // (4 * max(width, 1) * self.Wq)) * self.Wq
        for u0 in range(start, stop, rows):
            yield u0, min(u0 + rows, stop)


# ---- the three products of a convolution ------------------------------------------------------

def _shifted_forward(x, kernel, geom):
    """y (N, OH, OW, F) = conv2d(x, kernel) with the geometry's strides, padding and dilation.

    y is a view of an (N*Hq*Wq, F) buffer whose junk rows and columns are never read."""
    xp = get_array_module(x, kernel)
    F = kernel.shape[3]
    phases = geom.to_phases(x)                                # (P, rows + tail, C)
    y = xp.empty((geom.rows, F), x.dtype)                     # (N*Hq*Wq, F)
    for u0, u1 in geom.chunks(0, geom.used_rows, F, _CHUNK_BYTES):
        out = y[u0:u1]                                        # stays in cache over the taps
        for t, (a, b, k, off) in enumerate(geom.taps):
            # (rows, C) @ (C, F): output row u, tap (a, b) reads phase row u + off
            gemm_into(phases[k, u0 + off:u1 + off], kernel[a, b], out, accumulate=t > 0)
    return geom.from_wide(y, F)


def _shifted_backward(g, x, kernel, geom, need_dx, need_dk):
    """(dX, dK) from dY (N, OH, OW, F); either may be skipped (None)."""
    xp = get_array_module(g)
    margin = geom.max_offset if need_dx else 0
    gw = geom.to_wide(g, margin)                              # (margin + rows, F)
    dx = dk = None
    if need_dx:
        C = kernel.shape[2]
        dphases = xp.empty((len(geom.phases), geom.rows, C), g.dtype)
        for k in range(len(geom.phases)):
            taps = [t for t in geom.taps if t[2] == k]
            start, stop = geom.real_rows(k)
            for v0, v1 in geom.chunks(start, stop, C, _CHUNK_BYTES):
                out = dphases[k, v0:v1]
                for t, (a, b, _, off) in enumerate(taps):
                    # phase row v was read by output row v - off through tap (a, b):
                    # (rows, F) @ (F, C)
                    gemm_into(gw[margin + v0 - off:margin + v1 - off], kernel[a, b].T, out,
                              accumulate=t > 0)
        dx = geom.from_phases(dphases, g.dtype)
    if need_dk:
        phases = geom.to_phases(x)
        gw = gw[margin:]                                      # zeros on junk rows
        dk = xp.empty((geom.kh, geom.kw, geom.C, g.shape[3]), g.dtype)
        first = True
        for u0, u1 in geom.chunks(0, geom.used_rows, geom.C + g.shape[3], _DK_CHUNK_BYTES):
            for a, b, k, off in geom.taps:
                # (C, rows) @ (rows, F), summed over chunks
                gemm_into(phases[k, u0 + off:u1 + off].T, gw[u0:u1], dk[a, b],
                          accumulate=not first)
            first = False
    return dx, dk


# ---- the im2col route, for thin inputs (C = 1 or 3) --------------------------------------------

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


class _Im2colPlan:
    """Chunks of whole images, or of output rows within one image, for the im2col route."""

    def __init__(self, geom, width):
        self.geom = geom
        per_row = geom.OW * width * 4
        rows = max(1, _CHUNK_BYTES * 4 // per_row)
        self.images = max(1, rows // geom.OH)
        self.rows = min(rows, geom.OH)

    def pad(self, x):
        g = self.geom
        xp = get_array_module(x)
        if g.pt == g.pb == g.pl == g.pr == 0:
            return x
        xpad = xp.zeros((g.N, g.H + g.pt + g.pb, g.W + g.pl + g.pr, g.C), x.dtype)
        xpad[:, g.pt:g.pt + g.H, g.pl:g.pl + g.W] = x
        return xpad

    def chunks(self):
        """(image slice, output row slice, padded input row slice) triples."""
        g = self.geom
        for n0 in range(0, g.N, self.images):
            images = slice(n0, min(n0 + self.images, g.N))
            for i0 in range(0, g.OH, self.rows):
                i1 = min(i0 + self.rows, g.OH)
                yield images, slice(i0, i1), slice(i0 * g.sh, (i1 - 1) * g.sh + (g.kh - 1) * g.dh + 1)

    def args(self, out_rows):
        g = self.geom
        return (g.kh, g.kw), (g.sh, g.sw), (g.dh, g.dw), (out_rows.stop - out_rows.start, g.OW)


def _im2col_forward(x, kernel, geom):
    xp = get_array_module(x, kernel)
    F = kernel.shape[3]
    plan = _Im2colPlan(geom, geom.kh * geom.kw * geom.C)
    xpad = plan.pad(x)
    kmat = kernel.reshape(-1, F)                              # (kh*kw*C, F), no copy
    y = xp.empty(geom.out_shape(F), x.dtype)
    for images, rows, in_rows in plan.chunks():
        ksize, strides, dilation, size = plan.args(rows)
        cols = im2col(xpad[images, in_rows], ksize, strides, dilation, size)
        out = y[images, rows].reshape(-1, F)  # a view: whole images, or rows of one image
        gemm_into(cols.reshape(-1, kmat.shape[0]), kmat, out)  # (rows, kh*kw*C) @ (kh*kw*C, F)
    return y


def _im2col_backward(g, x, kernel, geom, need_dx, need_dk):
    xp = get_array_module(g)
    F = g.shape[3]
    plan = _Im2colPlan(geom, geom.kh * geom.kw * geom.C)
    dx = dk = None
    if need_dx:
        dxpad = xp.zeros((geom.N, geom.H + geom.pt + geom.pb, geom.W + geom.pl + geom.pr,
                          geom.C), g.dtype)
        kmat = kernel.reshape(-1, F)                          # (kh*kw*C, F)
        for images, rows, in_rows in plan.chunks():
            ksize, strides, dilation, size = plan.args(rows)
            gc = xp.ascontiguousarray(g[images, rows])        # (n, r, OW, F)
            dcols = xp.empty(gc.shape[:3] + (kmat.shape[0],), g.dtype)
            # (rows, F) @ (F, kh*kw*C), then every column block goes back where it came from
            gemm_into(gc.reshape(-1, F), kmat.T, dcols.reshape(-1, kmat.shape[0]))
            col2im(dcols, dxpad[images, in_rows], ksize, strides, dilation)
        dx = dxpad[:, geom.pt:geom.pt + geom.H, geom.pl:geom.pl + geom.W]
    if need_dk:
        xpad = plan.pad(x)
        dk = xp.empty((geom.kh, geom.kw, geom.C, F), g.dtype)
        dkmat = dk.reshape(-1, F)
        first = True
        for images, rows, in_rows in plan.chunks():
            ksize, strides, dilation, size = plan.args(rows)
            cols = im2col(xpad[images, in_rows], ksize, strides, dilation, size)
            gc = xp.ascontiguousarray(g[images, rows]).reshape(-1, F)
            # (kh*kw*C, rows) @ (rows, F), summed over chunks
            gemm_into(cols.reshape(-1, dkmat.shape[0]).T, gc, dkmat, accumulate=not first)
            first = False
    return dx, dk


def _route(geom):
    """The im2col route when a per-tap product would be too thin (C small)."""
    return "im2col" if geom.C < _MIN_CHANNELS_PER_TAP and geom.kh * geom.kw > 1 else "shifted"


def conv_forward(x, kernel, geom):
    """y (N, OH, OW, F) = conv2d(x, kernel) on the geometry's strides, padding, dilation."""
    if get_array_module(x) is not np:  # CuPy: one im2col kernel and one GEMM (kernels/)
        return cuda_kernels.conv2d_forward(x, kernel, geom)
    if _route(geom) == "im2col":
        return _im2col_forward(x, kernel, geom)
    return _shifted_forward(x, kernel, geom)


def conv_backward(g, x, kernel, geom, need_dx=True, need_dk=True):
    """(dX, dK) of conv_forward for the cotangent g (N, OH, OW, F); None for what is not needed.

    dX needs only the kernel and dK only x."""
    if get_array_module(g) is not np:  # CuPy: col2im / im2col kernels and GEMMs (kernels/)
        return cuda_kernels.conv2d_backward(g, x, kernel, geom, need_dx, need_dk)
    if _route(geom) == "im2col":
        return _im2col_backward(g, x, kernel, geom, need_dx, need_dk)
    return _shifted_backward(g, x, kernel, geom, need_dx, need_dk)


def _check_bias(bias, filters):
    if bias is not None and tuple(bias.shape) != (filters,):
        raise ValueError(f"bias has shape {tuple(bias.shape)} but the kernel has {filters} "
                         f"filters (expected ({filters},))")


class Conv2D(Function):
    def forward(self, x, kernel, bias=None, strides=1, padding="valid", dilation_rate=1):
        op = "conv2d"
        geom = _Geometry(x.shape, kernel.shape, _pair(strides, "strides", op),
                         _padding_name(padding), _pair(dilation_rate, "dilation_rate", op))
        if kernel.shape[2] != geom.C:
            raise ValueError(f"kernel {tuple(kernel.shape)} (kh, kw, in, out) expects "
                             f"{kernel.shape[2]} input channels but x {tuple(x.shape)} has "
                             f"{geom.C}")
        _check_bias(bias, kernel.shape[3])
        y = conv_forward(x, kernel, geom)
        if bias is not None:
            y += bias
        self.geom = geom
        # Keep only what backward will use: x for dK, the kernel for dX. Never the columns.
        self.x = x if self.needs_input_grad[1] else None
        self.kernel = kernel if self.needs_input_grad[0] else None
        return y

    def backward(self, g):
        need_dx, need_dk, need_db = self.needs_input_grad
        dx, dk = conv_backward(g, self.x, self.kernel, self.geom, need_dx, need_dk)
        return dx, dk, g.sum(axis=(0, 1, 2)) if need_db else None


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
        y, _ = conv_backward(x, None, kernel, geom, need_dk=False)
        if bias is not None:
            y += bias
        self.geom = geom
        self.x = x if self.needs_input_grad[1] else None
        self.kernel = kernel if self.needs_input_grad[0] else None
        return y

    def backward(self, g):
        dx = dk = db = None
        if self.needs_input_grad[0]:
            dx = conv_forward(g, self.kernel, self.geom)
        if self.needs_input_grad[1]:
            # <g, A_K^T x> = <A_K g, x>: conv2d's kernel gradient with the roles of x and g swapped
            _, dk = conv_backward(self.x, g, None, self.geom, need_dx=False)
        if self.needs_input_grad[2]:
            db = g.sum(axis=(0, 1, 2))
        return dx, dk, db


def conv2d(x, kernel, bias=None, strides=1, padding="valid", dilation_rate=1):
    """2-D cross-correlation (Keras's Conv2D): x (N, H, W, C), kernel (kh, kw, C, F), bias (F,)
    -> (N, OH, OW, F). strides and dilation_rate are ints or (rows, cols) pairs; padding is
    'valid' or 'same' (Keras's rule: the odd padding pixel goes bottom / right)."""
    return Conv2D.apply(x, kernel, bias, strides=strides, padding=padding,
                        dilation_rate=dilation_rate)


def conv2d_transpose(x, kernel, bias=None, strides=1, padding="valid"):
    """Transposed convolution (Keras's Conv2DTranspose): x (N, H, W, in), kernel (kh, kw, out,
    in), bias (out,) -> (N, H*s, W*s, out) for 'same', (N, H*s + max(k - s, 0), ..., out) for
    'valid'. Exactly the adjoint of conv2d with the same kernel, strides and padding."""
    return Conv2DTranspose.apply(x, kernel, bias, strides=strides, padding=padding)
