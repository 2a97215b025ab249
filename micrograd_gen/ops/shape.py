"""Ops that move or select elements without arithmetic: reshape, transpose, slicing, joining, padding.

Their backward is the inverse movement (transpose back, scatter back, crop the pad).
"""
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
        grad = xp.zeros(self.shape, self.dtype)
        if _is_basic(self.index):
            grad[self.index] = g  # no repeats possible: plain assignment is enough and fast
        else:
            xp.add.at(grad, self.index, g)
        return grad


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
        return xp.pad(a, self.pad_width, mode="constant", constant_values=value)

    def backward(self, g):
        return g[tuple(slice(lo, g.shape[i] - hi) for i, (lo, hi) in enumerate(self.pad_width))]


def _pad_pairs(pad_width, ndim):
    if isinstance(pad_width, int):
        return ((pad_width, pad_width),) * ndim
    pairs = tuple((p, p) if isinstance(p, int) else tuple(p) for p in pad_width)
    if len(pairs) != ndim:
        raise ValueError(f"pad_width has {len(pairs)} entries for an array of {ndim} dimensions")
    return pairs


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
    shape = list(a.shape)
    ndim = len(shape) + (1 if isinstance(axis, int) else len(axis))
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
    n = a.shape[0]
    return reshape(a, (n, -1 if n else 0))


def concatenate(tensors, axis=0):
    return Concatenate.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    return Stack.apply(*tensors, axis=axis)


def split(a, indices_or_sections, axis=0):
    """Like numpy.split; returns a list of tensors (slices of the input, each differentiable)."""
    size = a.shape[axis]
    if isinstance(indices_or_sections, int):
        if size % indices_or_sections:
            raise ValueError(f"split: axis {axis} of size {size} does not divide into "
                             f"{indices_or_sections} equal parts")
        step = size // indices_or_sections
        cuts = list(range(step, size, step))
    else:
        cuts = list(indices_or_sections)
    bounds = [0] + cuts + [size]
    lead = (slice(None),) * (axis % len(a.shape))
    return [getitem(a, lead + (slice(lo, hi),)) for lo, hi in zip(bounds[:-1], bounds[1:])]


def pad(a, pad_width, value=0.0):
    return Pad.apply(a, pad_width=pad_width, value=value)
