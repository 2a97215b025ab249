"""Ops that move or select elements without arithmetic: reshape, transpose, slicing, joining, padding.

Their backward is the inverse movement (transpose back, scatter back, crop the pad).
"""
import math

import numpy as np

from .. import fastpath
from ..backend import get_array_module
from ..tensor import Function, Tensor
from .reduce import normalize_axes


class Reshape(Function):
    def forward(self, a, shape=None):
        self.shape = a.shape
        return a.reshape(shape)

    def backward(self, g):
        return g.reshape(self.shape)


class Transpose(Function):
    def forward(self, a, axes=None):
        self.axes = tuple(range(a.ndim))[::-1] if axes is None else tuple(ax % a.ndim for ax in axes)
        return a.transpose(self.axes)

    def backward(self, g):
        inverse = [0] * len(self.axes)
        for i, ax in enumerate(self.axes):
            inverse[ax] = i
        return g.transpose(inverse)


class BroadcastTo(Function):
    def forward(self, a, shape=None):
        self.shape = a.shape
        return get_array_module(a).broadcast_to(a, shape)

    def backward(self, g):
        from .elementwise import unbroadcast
        return unbroadcast(g, self.shape)


class GetItem(Function):
    """Basic and advanced indexing; backward scatters with add.at so repeated indices accumulate."""

    def forward(self, a, index=None):
        self.shape, self.dtype, self.index = a.shape, a.dtype, index
        return a[index]

    def backward(self, g):
        xp = get_array_module(g)
        fast = fastpath.lookup("zeros")      # large arrays: written by every core
        grad = NotImplemented if fast is None else fast(self.shape, self.dtype, g)
        if grad is NotImplemented:
            grad = xp.zeros(self.shape, self.dtype)
        if _is_basic(self.index):
            grad[self.index] = g  # no repeats possible: plain assignment is enough and fast
        else:
            xp.add.at(grad, self.index, g)
        return grad

    def backward_into(self, g, total):
        """total[index] += g, where total is the input's gradient summed so far (tensor.py
        asks when there is one): backward's zeros outside the slice added nothing to it."""
        if not _is_basic(self.index) or g.dtype != total.dtype:
            return False
        fast = fastpath.lookup("add_into")   # large slices: over every core
        part = total[self.index]
        if fast is None or fast(part, g) is NotImplemented:
            part += g
        return True


def _is_basic(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, slice)) for p in parts)


class Concatenate(Function):
    def forward(self, *arrays, axis=0):
        xp = get_array_module(*arrays)
        self.axis = axis % arrays[0].ndim
        self.sizes = [a.shape[self.axis] for a in arrays]
        return xp.concatenate(arrays, axis=self.axis)

    def backward(self, g):
        xp = get_array_module(g)
        cuts = list(_cumsum(self.sizes)[:-1])
        return tuple(xp.split(g, cuts, axis=self.axis))


class Split(Function):
    """numpy.split as one op with one output per piece; backward joins the pieces' gradients."""

    def forward(self, a, cuts=None, axis=0):
        self.axis = axis
        return tuple(get_array_module(a).split(a, cuts, axis=axis))

    def backward(self, *grads):
        return get_array_module(grads[0]).concatenate(grads, axis=self.axis)


class Stack(Function):
    def forward(self, *arrays, axis=0):
        xp = get_array_module(*arrays)
        self.axis = axis
        return xp.stack(arrays, axis=axis)

    def backward(self, g):
        xp = get_array_module(g)
        return tuple(xp.moveaxis(g, self.axis, 0))


class Pad(Function):
    """Constant padding; backward crops the padded border off the gradient."""

    def forward(self, a, pad_width=None, value=0.0):
        xp = get_array_module(a)
        self.pad_width = _pad_pairs(pad_width, a.ndim)
        if a.ndim == 0:
            return a.copy()  # nothing to pad (numpy.pad refuses a 0-d array)
        return xp.pad(a, self.pad_width, mode="constant", constant_values=value)

    def backward(self, g):
        return g[tuple(slice(lo, g.shape[i] - hi) for i, (lo, hi) in enumerate(self.pad_width))]


def _pad_pairs(pad_width, ndim):
    """pad_width as numpy.pad reads it (n, (before, after), or one pair per axis) -> one pair per axis."""
    widths = np.asarray(pad_width)
    if (widths.size and widths.dtype.kind not in "iu") or widths.ndim > 2:
        raise ValueError(f"pad_width={pad_width!r}: expected ints, (before, after) pairs, "
                         f"or one pair per axis")
    try:
        widths = np.broadcast_to(widths.astype(np.int64), (ndim, 2))
    except ValueError:
        raise ValueError(f"pad_width={pad_width!r} does not fit an array of {ndim} "
                         f"dimensions") from None
    if (widths < 0).any():
        raise ValueError(f"pad_width={pad_width!r} has a negative width")
    return tuple((int(lo), int(hi)) for lo, hi in widths)


def _cumsum(sizes):
    out, total = [], 0
    for s in sizes:
        total += s
        out.append(total)
    return out


def reshape(a, shape):
    return Reshape.apply(a, shape=tuple(shape) if not isinstance(shape, int) else (shape,))


def transpose(a, axes=None):
    return Transpose.apply(a, axes=axes)


def broadcast_to(a, shape):
    return BroadcastTo.apply(a, shape=tuple(shape))


def getitem(a, index):
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    elif isinstance(index, list):
        index = get_array_module(a.data if isinstance(a, Tensor) else a).asarray(index)
    return GetItem.apply(a, index=index)


def expand_dims(a, axis):
    shape = list(a.shape)  # a Tensor or an array
    ndim = len(shape) + (len(axis) if isinstance(axis, (tuple, list)) else 1)
    for ax in normalize_axes(axis, ndim):
        shape.insert(ax, 1)
    return reshape(a, shape)


def squeeze(a, axis=None):
    shape = a.shape
    axes = (tuple(i for i, n in enumerate(shape) if n == 1) if axis is None
            else normalize_axes(axis, len(shape)))
    for ax in axes:
        if shape[ax] != 1:
            raise ValueError(f"squeeze: axis {ax} has size {shape[ax]}, not 1 (shape {shape})")
    return reshape(a, [n for i, n in enumerate(shape) if i not in axes])


def flatten(a):
    """(N, ...) -> (N, prod(...)), as Keras's Flatten."""
    shape = tuple(a.shape)
    if not shape:
        raise ValueError("flatten: needs at least one (batch) axis, got a scalar")
    return reshape(a, (shape[0], math.prod(shape[1:])))


def concatenate(tensors, axis=0):
    return Concatenate.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    return Stack.apply(*tensors, axis=axis)


def split(a, indices_or_sections, axis=0):
    """Like numpy.split: a list of tensors, by a number of equal parts or by cut indices."""
    shape = tuple(a.shape)
    (axis,) = normalize_axes(axis, len(shape))
    size = shape[axis]
    if isinstance(indices_or_sections, int):
        if indices_or_sections <= 0 or size % indices_or_sections:
            raise ValueError(f"split: axis {axis} of size {size} (shape {shape}) does not divide "
                             f"into {indices_or_sections} equal parts")
        step = size // indices_or_sections
        cuts = list(range(step, size, step))
    else:
        cuts = [int(c) for c in indices_or_sections]
    return list(Split.apply(a, cuts=cuts, axis=axis))


def pad(a, pad_width, value=0.0):
    return Pad.apply(a, pad_width=pad_width, value=value)
