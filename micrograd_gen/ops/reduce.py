"""Reductions over an axis (or several, or all): sum, mean, var, max, min, logsumexp.

Backward puts the reduced axes back (as size 1) so the gradient broadcasts over them.
"""
import operator

from ..backend import get_array_module
from ..tensor import Function


def normalize_axes(axis, ndim):
    """axis (None, int or tuple, negatives allowed) as a sorted tuple of non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    try:
        axes = (operator.index(axis),)  # an int, NumPy ints included
    except TypeError:
        axes = tuple(operator.index(a) for a in axis)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for an array of {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"axis {axis} repeats an axis")
    return tuple(sorted(out))


def _keep(g, axes, keepdims):
    """Reinsert the reduced axes into g (when keepdims was False) so it broadcasts."""
    if keepdims or not axes:
        return g
    xp = get_array_module(g)
    return xp.expand_dims(g, axes)


def _count(shape, axes):
    n = 1
    for a in axes:
        n *= shape[a]
    return n


class Sum(Function):
    def forward(self, a, axis=None, keepdims=False):
        self.axes = normalize_axes(axis, a.ndim)
        self.shape, self.keepdims = a.shape, keepdims
        return a.sum(axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        xp = get_array_module(g)
        return xp.broadcast_to(_keep(g, self.axes, self.keepdims), self.shape)


class Mean(Function):
    def forward(self, a, axis=None, keepdims=False):
        self.axes = normalize_axes(axis, a.ndim)
        self.shape, self.keepdims = a.shape, keepdims
        return a.mean(axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        xp = get_array_module(g)
        g = _keep(g, self.axes, self.keepdims) / g.dtype.type(_count(self.shape, self.axes))
        return xp.broadcast_to(g, self.shape)


class Var(Function):
    """Biased variance (divides by n), as Keras's ops.var and LayerNormalization use."""

    def forward(self, a, axis=None, keepdims=False):
        self.axes = normalize_axes(axis, a.ndim)
        self.keepdims = keepdims
        self.centred = a - a.mean(axis=self.axes, keepdims=True)
        return (self.centred ** 2).mean(axis=self.axes, keepdims=keepdims)

    def backward(self, g):
        n = _count(self.centred.shape, self.axes)
        return _keep(g, self.axes, self.keepdims) * (2 / n) * self.centred


class _Extremum(Function):
    """max / min: the gradient is shared equally among the elements that tie for the extremum."""

    def forward(self, a, axis=None, keepdims=False):
        self.axes = normalize_axes(axis, a.ndim)
        self.keepdims = keepdims
        out = self.reduce(a, axis=self.axes, keepdims=True)
        self.hits = a == out
        return out if keepdims else out.squeeze(axis=self.axes)

    def backward(self, g):
        counts = self.hits.sum(axis=self.axes, keepdims=True)
        return _keep(g, self.axes, self.keepdims) * self.hits / counts


class Max(_Extremum):
    @staticmethod
    def reduce(a, **kw):
        return a.max(**kw)


class Min(_Extremum):
    @staticmethod
    def reduce(a, **kw):
        return a.min(**kw)


class LogSumExp(Function):
    def forward(self, a, axis=None, keepdims=False):
        xp = get_array_module(a)
        self.axes = normalize_axes(axis, a.ndim)
        self.keepdims = keepdims
        peak = a.max(axis=self.axes, keepdims=True)
        peak = xp.where(xp.isfinite(peak), peak, 0)  # all -inf rows stay -inf, not nan
        self.probs = xp.exp(a - peak)
        total = self.probs.sum(axis=self.axes, keepdims=True)
        self.probs /= total
        out = xp.log(total) + peak
        return out if keepdims else out.squeeze(axis=self.axes)

    def backward(self, g):
        return _keep(g, self.axes, self.keepdims) * self.probs


def sum(a, axis=None, keepdims=False): return Sum.apply(a, axis=axis, keepdims=keepdims)  # noqa: A001
def mean(a, axis=None, keepdims=False): return Mean.apply(a, axis=axis, keepdims=keepdims)
def var(a, axis=None, keepdims=False): return Var.apply(a, axis=axis, keepdims=keepdims)
def max(a, axis=None, keepdims=False): return Max.apply(a, axis=axis, keepdims=keepdims)  # noqa: A001
def min(a, axis=None, keepdims=False): return Min.apply(a, axis=axis, keepdims=keepdims)  # noqa: A001
def logsumexp(a, axis=None, keepdims=False): return LogSumExp.apply(a, axis=axis, keepdims=keepdims)
