"""Softmax + cross-entropy with integer labels, fast (reference: ops/losses.py,
SparseSoftmaxCrossEntropy: max, exp, sum, divide and gather passes over the logits).

On CuPy arrays: one CUDA kernel each way (kernels/softmax_cross_entropy_*.cu, through
accel/cuda.py). On NumPy arrays as large as a language model's (32 x 99 positions x 15,000 words:
47.5 million logits, the biggest array of its step) the reference's passes run on one core: here
the rows are shared out to the worker threads, each making the same passes over its own rows
(the same numbers: every pass works row by row).
"""
import numpy as np

from .. import fastpath
from ..backend import get_array_module
from . import cuda
from .workers import chunk_pool, even_cuts, for_chunks

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# Fewer logits than this stay on one core: a hand-off costs more than the passes.
_MIN_PARALLEL = 1 << 20


def _row_chunks(rows):
    return even_cuts(rows, 4 * chunk_pool()[1])


def sparse_softmax_cross_entropy_forward(logits, labels):
    """(loss (rows,), probs (rows, classes)) of 2-D logits and int64 labels in range."""
    xp = get_array_module(logits)
    if logits.dtype not in _FLOATS:
        return NotImplemented
    if xp is not np:
        return cuda.softmax_cross_entropy_forward(xp.ascontiguousarray(logits), labels)
    if logits.size < _MIN_PARALLEL:
        return NotImplemented
    probs = np.empty(logits.shape, logits.dtype)
    loss = np.empty(logits.shape[0], logits.dtype)

    def rows(chunk, slot):
        r0, r1 = chunk
        flat, p = logits[r0:r1], probs[r0:r1]
        peak = flat.max(axis=1, keepdims=True)
        np.subtract(flat, peak, out=p)
        np.exp(p, out=p)
        total = p.sum(axis=1, keepdims=True)
        p /= total
        picked = flat[np.arange(r1 - r0), labels[r0:r1]]
        loss[r0:r1] = np.log(total[:, 0]) + peak[:, 0] - picked
    for_chunks(_row_chunks(logits.shape[0]), rows, np)
    return loss, probs


def sparse_softmax_cross_entropy_backward(probs, labels, g):
    """(probs - onehot(labels)) * g[:, None], written over probs."""
    xp = get_array_module(probs)
    if probs.dtype not in _FLOATS or not probs.flags.c_contiguous:
        return NotImplemented
    if xp is not np:
        g = xp.ascontiguousarray(g.reshape(-1), dtype=probs.dtype)
        return cuda.softmax_cross_entropy_backward(probs, labels, g, out=probs)
    if probs.size < _MIN_PARALLEL:
        return NotImplemented
    g = g.reshape(-1, 1)

    def rows(chunk, slot):
        r0, r1 = chunk
        d = probs[r0:r1]
        d[np.arange(r1 - r0), labels[r0:r1]] -= 1
        d *= g[r0:r1]
    for_chunks(_row_chunks(probs.shape[0]), rows, np)
    return probs


fastpath.register("sparse_softmax_cross_entropy_forward", sparse_softmax_cross_entropy_forward)
fastpath.register("sparse_softmax_cross_entropy_backward", sparse_softmax_cross_entropy_backward)
