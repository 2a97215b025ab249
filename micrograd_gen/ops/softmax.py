"""softmax and log_softmax over one axis, shifted by the maximum so exp never overflows."""
from ..backend import get_array_module
from ..tensor import Function


def softmax_array(x, axis=-1):
    """Plain-array softmax, shared by the ops that fuse it (attention, cross-entropy)."""
    xp = get_array_module(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def log_softmax_array(x, axis=-1):
    xp = get_array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    shifted -= xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
    return shifted


class Softmax(Function):
    def forward(self, x, axis=-1):
        self.axis = axis
        self.out = softmax_array(x, axis)
        return self.out

    def backward(self, g):
        # Jacobian-vector product of softmax: s * (g - <g, s>), without building the Jacobian.
        s = self.out
        return s * (g - (g * s).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    def forward(self, x, axis=-1):
        self.axis = axis
        self.out = log_softmax_array(x, axis)
        return self.out

    def backward(self, g):
        xp = get_array_module(g)
        return g - xp.exp(self.out) * g.sum(axis=self.axis, keepdims=True)


def softmax(x, axis=-1):
    return Softmax.apply(x, axis=axis)


def log_softmax(x, axis=-1):
    return LogSoftmax.apply(x, axis=axis)
