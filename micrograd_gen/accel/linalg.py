"""The fast matrix product for large 2-D NumPy products: cut into one block per worker thread.

Once the worker pool has started (the first conv or LSTM) NumPy's own products run on one BLAS
thread (accel/workers.py says why), so a product made between convs, such as style transfer's Gram
matrices and their gradients (2-4 GFLOP each at 400x600), would keep one core idle. Here such a
product is cut along its longest side, rows of a, columns of b or the inner axis (then the
blocks' partial products are summed), and each block runs on a worker with single-threaded BLAS.
Products below _MIN_FLOP stay with NumPy: a hand-off costs more than they take. The same for a
bias's gradient (column_sums), which the convolutions' backward passes make between sections.
"""
import math

import numpy as np

from .. import fastpath
from . import blas
from .blas import gemm_into
from .workers import chunk_pool, even_cuts, for_chunks, started

# 2*M*N*K below this (about a millisecond on one core) is not worth a hand-off.
_MIN_FLOP = 1 << 27
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# Column sums of fewer numbers than this stay on one core. Measured one core against two
# (ms): 100352 x 32 1.40 / 0.93, 215296 x 32 (the VAE decoder's last transposed layer's g
# phases) 4.07 / 2.21, 25088 x 64 0.52 / 0.59.
_MIN_SUM_SIZE = 1 << 21


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


def column_sums(a):
    """The sums of a 2-D (rows, C) array's columns, a bias's gradient (blas.column_sums), its rows
    cut into one block per worker thread and the blocks' sums added in their order, so that the
    result depends on the thread count only. A memory-bound pass made between two sections: on
    one core (4.07 ms for the VAE decoder's last layer) it kept the other idle."""
    threads = chunk_pool()[1] if started() else 1
    if a.size < _MIN_SUM_SIZE or threads < 2:
        return blas.column_sums(a)
    cuts = even_cuts(a.shape[0], threads)
    sums = [None] * len(cuts)

    def block(numbered, slot):
        i, (r0, r1) = numbered
        sums[i] = blas.column_sums(a[r0:r1])
    for_chunks(list(enumerate(cuts)), block, np)
    total = sums[0]
    for part in sums[1:]:
        total += part
    return total


fastpath.register("matmul", matmul)
