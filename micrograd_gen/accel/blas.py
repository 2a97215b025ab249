"""Matrix products written straight into (or added onto) a given output, through the OpenBLAS
inside NumPy's own wheel.

np.matmul cannot add into its output (BLAS gemm's beta = 1), and adding a temporary per kernel
tap costs a pass over the output each time; the convolution's per-tap products (accel/conv.py)
call cblas_?gemm here instead, with beta = 1 and on row blocks of arrays given by address. The
library is found and loaded on the first product, never at import. Any other NumPy build (no
OpenBLAS inside, or an unknown symbol naming) falls back to matmul plus an addition.
"""
import ctypes
import glob
import os

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..backend import get_array_module


def find_numpy_cblas():
    """{dtype: cblas_?gemm} from the OpenBLAS inside NumPy's own wheel and the library, or
    ({}, None) when not found.

    Calling gemm from the library NumPy already loaded keeps NumPy's own thread pool
    (scipy.linalg.blas would bring a second OpenBLAS whose idle threads spin beside NumPy's).
    """
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
                return found, lib
    return {}, None


_BLAS = None


def numpy_blas():
    """({dtype: gemm}, library), found on the first call."""
    global _BLAS
    if _BLAS is None:
        _BLAS = find_numpy_cblas()
    return _BLAS


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
    stride); out must be row-major: C-ordered, or a block of columns of a C-ordered array.
    """
    xp = get_array_module(a, b, out)
    gemm = numpy_blas()[0].get(out.dtype) if xp is np else None
    out_layout = _operand(out) if out.ndim == 2 else None
    row_major = out_layout is not None and out_layout[0] == _NO_TRANS and out_layout[2] is out
    if gemm is None or not (a.dtype == b.dtype == out.dtype) or not row_major:
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
         1.0 if accumulate else 0.0, out.ctypes.data, out_layout[1])
    return out


def column_sums(a, out=None, accumulate=False):
    """The sums of a 2-D (rows, C) array's columns, a bias's gradient, as one matrix-vector
    product: NumPy's a.sum(axis=0) over a narrow array (C = 32) runs at a quarter of that speed."""
    if out is None:
        out = np.empty(a.shape[1], a.dtype)
    ones = np.ones((1, a.shape[0]), a.dtype)
    gemm_into(ones, a, out.reshape(1, -1), accumulate)
    return out


class _Rows:
    """A C-ordered array read as a row-major matrix `width` numbers wide, whose row blocks the
    per-tap loops multiply with gemm_rows. Its rows start `pitch` numbers apart (default: width)
    and the first at number `first`: one column residue of a strided convolution's pixel pairs
    (accel/conv.py) is such a matrix.

    The shifted route makes a few thousand products per DeepDream step, most of them small, and
    their Python side runs under the GIL, holding up the other worker thread too. Slicing views
    and reading their addresses (ndarray.ctypes) each time would be most of that Python side:
    here the address is taken once per array and a block is just (this, first row, stop row).
    """
    __slots__ = ("array", "width", "pitch", "rows", "dtype", "address", "row_bytes", "gemm")

    def __init__(self, array, width, pitch=None, first=0):
        if not array.flags.c_contiguous:   # a reshape would copy, and writes would be lost
            raise ValueError(f"_Rows needs a C-ordered array, got strides {array.strides}")
        if pitch is None or (pitch == width and first == 0):
            self.array = array.reshape(-1, width)
            pitch = width
        else:             # as_strided costs 3 us, twice all the rest: only where it is needed
            flat = array.reshape(-1)
            rows = (flat.size - first - width) // pitch + 1 if flat.size >= first + width else 0
            self.array = as_strided(flat[first:], (rows, width),
                                    (pitch * array.itemsize, array.itemsize))
        self.rows, self.width, self.pitch, self.dtype = (self.array.shape[0], width, pitch,
                                                         array.dtype)
        self.address = array.ctypes.data + first * array.itemsize
        self.row_bytes = pitch * array.itemsize
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
         a_shape[0], b_shape[1], a_shape[1], 1.0, ma.address + a0 * ma.row_bytes, ma.pitch,
         mb.address + b0 * mb.row_bytes, mb.pitch, 1.0 if accumulate else 0.0,
         mo.address + o0 * mo.row_bytes, mo.pitch)
