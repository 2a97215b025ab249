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


_BATCH = None
# OpenBLAS's gemm_batch sends products of m*n*k up to 100^3 to its small-matrix kernels, and in
# its DYNAMIC_ARCH builds (NumPy's) takes their address wrongly there: a segfault. Such products
# are made one by one.
_SMALL_PRODUCT = 100 ** 3


def _batch_gemm():
    """({dtype: (cblas_?gemm_batch, its integer type)}, the library's get_num_threads) from the
    same library (OpenBLAS >= 0.3.27 has them), or ({}, None)."""
    global _BATCH
    if _BATCH is None:
        found, lib = {}, numpy_blas()[1]
        threads = None
        for name in ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads"):
            threads = getattr(lib, name, None) if lib is not None else None
            if threads is not None:
                threads.restype, threads.argtypes = ctypes.c_int, []
                break
        for dtype, letter in ((np.float32, "s"), (np.float64, "d")):
            for name in (f"scipy_cblas_{letter}gemm_batch64_", f"scipy_cblas_{letter}gemm_batch"):
                fn = getattr(lib, name, None) if lib is not None else None
                if fn is not None:
                    integer = ctypes.c_int64 if name.endswith("64_") else ctypes.c_int32
                    fn.restype = None
                    fn.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 13 + [integer,
                                                                             ctypes.c_void_p]
                    found[np.dtype(dtype)] = (fn, np.int64 if integer is ctypes.c_int64
                                              else np.int32)
                    break
        _BATCH = (found if threads is not None else {}), threads
    return _BATCH


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
    __slots__ = ("base", "first", "width", "pitch", "rows", "dtype", "address", "row_bytes",
                 "gemm")

    def __init__(self, array, width, pitch=None, first=0):
        if not array.flags.c_contiguous:   # a reshape would copy, and writes would be lost
            raise ValueError(f"_Rows needs a C-ordered array, got strides {array.strides}")
        pitch = width if pitch is None else pitch
        self.base, self.first, self.width, self.pitch, self.dtype = (array, first, width, pitch,
                                                                     array.dtype)
        self.rows = (array.size - first - width) // pitch + 1 if array.size >= first + width else 0
        self.address = array.ctypes.data + first * array.itemsize
        self.row_bytes = pitch * array.itemsize
        self.gemm = numpy_blas()[0].get(array.dtype)

    @property
    def array(self):
        """The matrix as an array view (for the products BLAS does not take): made only when
        asked, as a view costs more than all the rest of a _Rows."""
        if self.rows == 0:
            return np.empty((0, self.width), self.dtype)
        item = self.dtype.itemsize
        return np.ndarray((self.rows, self.width), self.dtype, self.base, self.first * item,
                          (self.pitch * item, item))


def gemm_rows_batch(products):
    """gemm_rows(*product) for each product (out, a, b, accumulate, transpose_a, transpose_b), in
    order, in one call into BLAS (its gemm_batch).

    Two threads that each run a chain of small products (an Inception block's branches) hand
    the GIL back and forth: each return to Python between two products may wait for the other
    thread's Python. One call per chain instead of one per product cuts those waits. BLAS runs
    a batch's products one after the other, in order, only on one thread (with more it runs
    them side by side, and a product that adds into an earlier one's output would race), so
    where it has more threads, or no gemm_batch, or a product is small (_SMALL_PRODUCT), the
    products are made one by one."""
    found, threads = _batch_gemm()
    shapes = [_checked_shape(*product[:3], *product[4:]) for product in products]
    dtype = products[0][0][0].dtype
    entry = found.get(dtype)
    if (entry is None or len(products) < 2 or threads() != 1
            or min(m * n * k for m, n, k in shapes) <= _SMALL_PRODUCT
            or len({block[0].dtype for product in products for block in product[:3]}) > 1):
        for product in products:
            gemm_rows(*product)
        return
    gemm_batch, integer = entry
    count = len(products)
    fields = list(zip(*[
        (m, n, k, ma.pitch, mb.pitch, mo.pitch, 1, ma.address + a0 * ma.row_bytes,
         mb.address + b0 * mb.row_bytes, mo.address + o0 * mo.row_bytes,
         _TRANS if transpose_a else _NO_TRANS, _TRANS if transpose_b else _NO_TRANS,
         1.0 if accumulate else 0.0)
        for (m, n, k), ((mo, o0, _), (ma, a0, _), (mb, b0, _), accumulate, transpose_a,
                        transpose_b) in zip(shapes, products)]))
    # one array per argument type, each argument a row of it: (m, n, k, lda, ldb, ldc, group
    # sizes of 1), (a, b, c addresses), (op(a), op(b)), (alpha, beta)
    rows = [np.array(fields[:7], integer), np.array(fields[7:10], np.uint64),
            np.array(fields[10:12], np.int32), np.array([(1.0,) * count, fields[12]], dtype)]
    (m, n, k, lda, ldb, ldc, sizes), (a, b, c), (op_a, op_b), (alpha, beta) = (
        [start + i * count * array.itemsize for i in range(len(array))]
        for start, array in zip([array.ctypes.data for array in rows], rows))
    gemm_batch(_ROW_MAJOR, op_a, op_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, count,
               sizes)


def _checked_shape(out, a, b, transpose_a, transpose_b):
    """(m, n, k) of op(a) @ op(b) into out, on row blocks of _Rows matrices; raises where the
    blocks do not fit, as a wrong block would otherwise read or write past its array."""
    (mo, o0, o1), (ma, a0, a1), (mb, b0, b1) = out, a, b
    a_shape = (ma.width, a1 - a0) if transpose_a else (a1 - a0, ma.width)
    b_shape = (mb.width, b1 - b0) if transpose_b else (b1 - b0, mb.width)
    if (a_shape[1] != b_shape[0] or (o1 - o0, mo.width) != (a_shape[0], b_shape[1])
            or not (0 <= o0 <= o1 <= mo.rows and 0 <= a0 <= a1 <= ma.rows
                    and 0 <= b0 <= b1 <= mb.rows)):
        raise ValueError(f"gemm_rows: blocks {a_shape} @ {b_shape} -> {(o1 - o0, mo.width)} "
                         f"do not fit (rows {a0}:{a1} of {ma.rows}, {b0}:{b1} of {mb.rows}, "
                         f"{o0}:{o1} of {mo.rows})")
    return a_shape[0], b_shape[1], a_shape[1]


def gemm_rows(out, a, b, accumulate=False, transpose_a=False, transpose_b=False):
    """out = op(a) @ op(b), or out += op(a) @ op(b), on row blocks (rows, first, stop) of _Rows
    matrices; op transposes the block when asked. Shapes are checked (_checked_shape)."""
    (mo, o0, o1), (ma, a0, a1), (mb, b0, b1) = out, a, b
    m, n, k = _checked_shape(out, a, b, transpose_a, transpose_b)
    gemm = mo.gemm
    if gemm is None or not (ma.gemm is mb.gemm is gemm) or 0 in (m, n, k):
        block_a, block_b = ma.array[a0:a1], mb.array[b0:b1]
        gemm_into(block_a.T if transpose_a else block_a, block_b.T if transpose_b else block_b,
                  mo.array[o0:o1], accumulate)
        return
    gemm(_ROW_MAJOR, _TRANS if transpose_a else _NO_TRANS, _TRANS if transpose_b else _NO_TRANS,
         m, n, k, 1.0, ma.address + a0 * ma.row_bytes, ma.pitch,
         mb.address + b0 * mb.row_bytes, mb.pitch, 1.0 if accumulate else 0.0,
         mo.address + o0 * mo.row_bytes, mo.pitch)
