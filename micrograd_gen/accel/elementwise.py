"""ReLU and LeakyReLU on large NumPy arrays: each pass made in cache-sized pieces, shared out to
the worker threads. The reference is ops/elementwise.py; tests/test_accel_elementwise.py holds
them equal.

Why. The reference LeakyReLU builds a float slope array as large as its input (`where`) and
multiplies by it, three full passes over memory and a temporary of the input's size, all on one
core; on the DCGAN generator's last layer (32 x 64 x 64 x 512, 268 MB) that is most of a second
per training step. Here every piece of 64K numbers is read once while it is in cache and every
pass runs on every core; what backward needs is a 1-byte mask (x > 0), not a 4-byte slope.
Small arrays (a Dense layer's) go to the reference: a thread hand-off costs more than the pass.
"""
import numpy as np

from .. import fastpath
from ..backend import get_array_module
from .workers import chunk_pool, for_chunks

# Numbers per piece: the piece's input, output and mask stay in the core's cache meanwhile.
_PIECE = 1 << 16
# Arrays smaller than this stay with the reference (one core, no hand-off).
_MIN_SIZE = 1 << 17


def _flat(*arrays):
    """The arrays as flat views, or None when one is not a C-ordered NumPy array."""
    if any(get_array_module(a) is not np or not a.flags.c_contiguous for a in arrays):
        return None
    return [a.reshape(-1) for a in arrays]


def _in_pieces(size, work):
    """work(start, stop) over [0, size) in pieces of _PIECE, the pieces shared out to the worker
    threads as one contiguous band per thread."""
    threads = chunk_pool()[1]
    bands = [(size * i // threads, size * (i + 1) // threads) for i in range(threads)]

    def band(chunk, slot):
        for start in range(chunk[0], chunk[1], _PIECE):
            work(start, min(start + _PIECE, chunk[1]))
    for_chunks([b for b in bands if b[1] > b[0]], band, np)


def relu_forward(a):
    """(max(a, 0), a > 0)."""
    flat = _flat(a) if a.size >= _MIN_SIZE else None
    if flat is None:
        return NotImplemented
    x, = flat
    y, positive = np.empty_like(a), np.empty(a.shape, bool)
    y_flat, positive_flat = y.reshape(-1), positive.reshape(-1)

    def work(i, j):
        np.maximum(x[i:j], 0, out=y_flat[i:j])
        np.greater(x[i:j], 0, out=positive_flat[i:j])
    _in_pieces(x.size, work)
    return y, positive


def relu_backward(g, positive):
    """g * positive."""
    flat = _flat(g, positive) if g.size >= _MIN_SIZE and g.shape == positive.shape else None
    if flat is None:
        return NotImplemented
    g_flat, positive_flat = flat
    dx = np.empty_like(g)
    dx_flat = dx.reshape(-1)

    def work(i, j):
        np.multiply(g_flat[i:j], positive_flat[i:j], out=dx_flat[i:j])
    _in_pieces(g_flat.size, work)
    return dx


def leaky_relu_forward(a, negative_slope):
    """(a where a > 0 else negative_slope * a, a > 0), for 0 <= negative_slope <= 1, where
    that is max(a, negative_slope * a)."""
    flat = (_flat(a) if a.size >= _MIN_SIZE and a.dtype.kind == "f" and 0 <= negative_slope <= 1
            else None)
    if flat is None:
        return NotImplemented
    x, = flat
    slope = a.dtype.type(negative_slope)
    y, positive = np.empty_like(a), np.empty(a.shape, bool)
    y_flat, positive_flat = y.reshape(-1), positive.reshape(-1)

    def work(i, j):
        out = y_flat[i:j]
        np.multiply(x[i:j], slope, out=out)
        np.maximum(out, x[i:j], out=out)
        np.greater(x[i:j], 0, out=positive_flat[i:j])
    _in_pieces(x.size, work)
    return y, positive


def leaky_relu_backward(g, positive, negative_slope):
    """g * (1 where positive else negative_slope), each number's factor built in cache from the
    mask as positive * (1 - slope) + slope, which is exactly 1 or exactly slope in floating
    point (np.copyto with a where= mask is ten times slower on a random mask)."""
    flat = _flat(g, positive) if g.size >= _MIN_SIZE and g.shape == positive.shape else None
    if flat is None:
        return NotImplemented
    g_flat, positive_flat = flat
    one, slope = g.dtype.type(1), g.dtype.type(negative_slope)
    dx = np.empty_like(g)
    dx_flat = dx.reshape(-1)

    def work(i, j):
        factor = np.multiply(positive_flat[i:j], one - slope, dtype=g.dtype)
        np.add(factor, slope, out=factor)
        np.multiply(g_flat[i:j], factor, out=dx_flat[i:j])
    _in_pieces(g_flat.size, work)
    return dx


fastpath.register("relu_forward", relu_forward)
fastpath.register("relu_backward", relu_backward)
fastpath.register("leaky_relu_forward", leaky_relu_forward)
fastpath.register("leaky_relu_backward", leaky_relu_backward)
