"""The fast matrix product for large 2-D NumPy products: cut into one block per worker thread.

Once the worker pool has started (the first conv or LSTM) NumPy's own products run on one BLAS
thread (accel/workers.py says why), so a product made between convs, such as style transfer's Gram
matrices and their gradients (2-4 GFLOP each at 400x600), would keep one core idle. Here such a
product is cut along its longest side, rows of a, columns of b or the inner axis (then the
blocks' partial products are summed), and each block runs on a worker with single-threaded BLAS.
Products below _MIN_FLOP stay with NumPy: a hand-off costs more than they take.
"""
import math

import numpy as np

from .. import fastpath
from .blas import gemm_into
from .workers import chunk_pool, even_cuts, for_chunks, started

# 2*M*N*K below this (about a millisecond on one core) is not worth a hand-off.
_MIN_FLOP = 1 << 27
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def matmul(a, b, out=None):
    """a @ b (into out, when given) for NumPy float arrays of one dtype, large enough to share:
    2-D products, or stacks of them with the same leading axes (attention's heads), cut along
    the stack. Else NotImplemented."""
    if (type(a) is not np.ndarray or type(b) is not np.ndarray or a.dtype != b.dtype
            or a.dtype not in _FLOATS or a.ndim < 2 or b.ndim != a.ndim
            or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]
            or (out is not None and (type(out) is not np.ndarray or out.dtype != a.dtype))):
        return NotImplemented
    (M, K), N = a.shape[-2:], b.shape[-1]
    stack = a.shape[:-2]
    # Before the pool exists (a Transformer makes no conv) NumPy's BLAS has all its threads.
    if 2 * M * N * K * math.prod(stack) < _MIN_FLOP or not started():
        return NotImplemented
    threads = chunk_pool()[1]
    if threads < 2 or (stack and stack[0] < threads):
        return NotImplemented
    if out is None:
        out = np.empty(stack + (M, N), a.dtype)
    elif out.shape != stack + (M, N):
        return NotImplemented
    if stack:
        cuts = even_cuts(stack[0], threads)
        for_chunks(cuts, lambda c, slot: np.matmul(a[c[0]:c[1]], b[c[0]:c[1]],
                                                    out=out[c[0]:c[1]]), np)
        return out
    longest = max(M, N, K)
    cuts = even_cuts(longest, threads)
    if longest == M:
        for_chunks(cuts, lambda c, slot: gemm_into(a[c[0]:c[1]], b, out[c[0]:c[1]]), np)
    elif longest == N:
        for_chunks(cuts, lambda c, slot: gemm_into(a, b[:, c[0]:c[1]], out[:, c[0]:c[1]]), np)
    else:
        partial = [None] * len(cuts)

        def inner(c, slot):
            part = np.empty((M, N), a.dtype)
            partial[cuts.index(c)] = gemm_into(a[:, c[0]:c[1]], b[c[0]:c[1]], part)
        for_chunks(cuts, inner, np)
        np.copyto(out, partial[0])
        for part in partial[1:]:
            out += part
    return out


fastpath.register("matmul", matmul)
