"""ReLU and LeakyReLU on large NumPy arrays: each pass made in cache-sized pieces, shared out to
the worker threads. The reference is ops/elementwise.py; tests/test_accel_gen.py holds
them equal. The same for two passes of the backward pass itself: a gradient summed in place
(tensor.py) and the zeros an indexing op's gradient starts from (ops/shape.py): style transfer
sums and slices feature maps of 60-180 MB every step.

Why. The reference LeakyReLU builds a float slope array as large as its input (`where`) and
multiplies by it, three full passes over memory and a temporary of the input's size, all on one
core; on the DCGAN generator's last layer (32 x 64 x 64 x 512, 268 MB) that is most of a second
per training step. Here every piece of 64K numbers is read once while it is in cache and every
pass runs on every core; what backward needs is a 1-byte mask (x > 0), not a 4-byte slope.
Small arrays (a Dense layer's) go to the reference: a thread hand-off costs more than the pass.
"""
import math

import numpy as np

from .. import fastpath
from ..backend import get_array_module
from .workers import chunk_pool, even_cuts, for_chunks

# Numbers per piece: the piece's input, output and mask stay in the core's cache meanwhile.
_PIECE = 1 << 16
# Arrays smaller than this stay with the reference (one core, no hand-off).
_MIN_SIZE = 1 << 17


def _in_pieces(work, *arrays):
    """work(*pieces) over the same pieces of every array (all of one shape), the pieces shared
    out to the worker threads as one band per thread. C-ordered arrays are cut into flat runs of
    _PIECE numbers; otherwise (a strided view: a convolution's gradient read in place) into runs
    of whole entries of the first axis, about _PIECE numbers each."""
    if all(a.flags.c_contiguous for a in arrays):
        arrays = [a.reshape(-1) for a in arrays]
        step = _PIECE
    else:
        step = max(1, _PIECE * arrays[0].shape[0] // arrays[0].size)
    bands = even_cuts(arrays[0].shape[0], chunk_pool()[1])

    def band(chunk, slot):
        for start in range(chunk[0], chunk[1], step):
            piece = slice(start, min(start + step, chunk[1]))
            work(*(a[piece] for a in arrays))
    for_chunks(bands, band, np)


def _taken(*arrays):
    """Whether the fast path takes these: large NumPy arrays of one shape with at least one axis."""
    first = arrays[0]
    return (first.size >= _MIN_SIZE and first.ndim > 0
            and all(get_array_module(a) is np and a.shape == first.shape for a in arrays))


def relu_forward(a, keep_mask=True):
    """(max(a, 0), a > 0); the mask None when not kept (no gradient to come)."""
    if not _taken(a):
        return NotImplemented
    y = np.empty_like(a, order="C")
    if not keep_mask:
        _in_pieces(lambda x, y: np.maximum(x, 0, out=y), a, y)
        return y, None
    positive = np.empty(a.shape, bool)

    def work(x, y, positive):
        np.maximum(x, 0, out=y)
        np.greater(x, 0, out=positive)
    _in_pieces(work, a, y, positive)
    return y, positive


def relu_backward(g, positive):
    """g * positive."""
    if not _taken(g, positive):
        return NotImplemented
    dx = np.empty_like(g, order="C")
    _in_pieces(lambda g, positive, dx: np.multiply(g, positive, out=dx), g, positive, dx)
    return dx


def leaky_relu_forward(a, negative_slope, keep_mask=True):
    """(a where a > 0 else negative_slope * a, a > 0), for 0 <= negative_slope <= 1, where
    that is max(a, negative_slope * a); the mask None when not kept. Without it the pass writes
    a fifth less (the DCGAN's generator run without gradients for the discriminator's step:
    268 MB at its last layer, 53.5 -> 39.6 ms)."""
    if not (_taken(a) and a.dtype.kind == "f" and 0 <= negative_slope <= 1):
        return NotImplemented
    slope = a.dtype.type(negative_slope)
    y = np.empty_like(a, order="C")

    def leaky(x, y):
        np.multiply(x, slope, out=y)
        np.maximum(y, x, out=y)
    if not keep_mask:
        _in_pieces(leaky, a, y)
        return y, None
    positive = np.empty(a.shape, bool)

    def work(x, y, positive):
        leaky(x, y)
        np.greater(x, 0, out=positive)
    _in_pieces(work, a, y, positive)
    return y, positive


def leaky_relu_backward(g, positive, negative_slope):
    """g * (1 where positive else negative_slope), each number's factor built in cache from the
    mask as positive * (1 - slope) + slope, which is exactly 1 or exactly slope in floating
    point (np.copyto with a where= mask is ten times slower on a random mask)."""
    if not (_taken(g, positive) and g.dtype.kind == "f"):
        return NotImplemented
    one, slope = g.dtype.type(1), g.dtype.type(negative_slope)
    dx = np.empty_like(g, order="C")

    def work(g, positive, dx):
        factor = np.multiply(positive, one - slope, dtype=dx.dtype)
        np.add(factor, slope, out=factor)
        np.multiply(g, factor, out=dx)
    _in_pieces(work, g, positive, dx)
    return dx


def add_into(total, g):
    """total += g (a gradient summed in place); NotImplemented leaves it to the caller."""
    if not _taken(total, g) or g.dtype != total.dtype or not total.flags.writeable:
        return NotImplemented
    _in_pieces(lambda t, a: np.add(t, a, out=t), total, g)
    return total


def zeros(shape, dtype, like):
    """np.zeros(shape, dtype) for large arrays when `like` is a NumPy array."""
    if get_array_module(like) is not np or math.prod(shape) < _MIN_SIZE or not shape:
        return NotImplemented
    out = np.empty(shape, dtype)
    _in_pieces(lambda piece: piece.fill(0), out)
    return out


fastpath.register("relu_forward", relu_forward)
fastpath.register("relu_backward", relu_backward)
fastpath.register("leaky_relu_forward", leaky_relu_forward)
fastpath.register("leaky_relu_backward", leaky_relu_backward)
fastpath.register("add_into", add_into)
fastpath.register("zeros", zeros)
