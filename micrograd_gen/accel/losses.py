"""Softmax + cross-entropy with integer labels on CuPy arrays: one CUDA kernel each way
(kernels/softmax_cross_entropy_*.cu, through accel/cuda.py) instead of the reference's
max, exp, sum, divide and gather passes (ops/losses.py, SparseSoftmaxCrossEntropy)."""
import numpy as np

from .. import fastpath
from ..backend import get_array_module
from . import cuda

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def sparse_softmax_cross_entropy_forward(logits, labels):
    """(loss (rows,), probs (rows, classes)) of 2-D logits and int64 labels in range."""
    xp = get_array_module(logits)
    if xp is np or logits.dtype not in _FLOATS:
        return NotImplemented
    return cuda.softmax_cross_entropy_forward(xp.ascontiguousarray(logits), labels)


def sparse_softmax_cross_entropy_backward(probs, labels, g):
    """(probs - onehot(labels)) * g[:, None], written over probs."""
    xp = get_array_module(probs)
    if xp is np or probs.dtype not in _FLOATS or not probs.flags.c_contiguous:
        return NotImplemented
    g = xp.ascontiguousarray(g.reshape(-1), dtype=probs.dtype)
    return cuda.softmax_cross_entropy_backward(probs, labels, g, out=probs)


fastpath.register("sparse_softmax_cross_entropy_forward", sparse_softmax_cross_entropy_forward)
fastpath.register("sparse_softmax_cross_entropy_backward", sparse_softmax_cross_entropy_backward)
