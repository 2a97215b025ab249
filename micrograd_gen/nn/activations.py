"""Activation functions by Keras name, built from the differentiable ops.

`get("relu")`, `get(None)` (linear), `get(callable)`. The names are the ones Keras's `activation=`
arguments accept; each maps to a function Tensor -> Tensor.
"""
from .. import ops
from ..tensor import Tensor


def linear(x):
    return x


def relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """Keras's relu: x above `threshold` (capped at `max_value`), negative_slope * (x - threshold)
    at or below it. With the defaults, max(x, 0)."""
    if negative_slope == 0 and max_value is None and threshold == 0:
        return ops.relu(x)
    data = x.data if isinstance(x, Tensor) else x
    y = ops.where(data > threshold, x, 0.0)
    if max_value is not None:
        y = ops.minimum(y, float(max_value))
    if negative_slope != 0:
        y = y - negative_slope * ops.relu(threshold - x)
    return y


def relu6(x):
    return ops.clip(x, 0.0, 6.0)


def sigmoid(x):
    return ops.sigmoid(x)


def hard_sigmoid(x):
    # Keras 3's definition: relu6(x + 3) / 6.
    return ops.clip(x * (1.0 / 6.0) + 0.5, 0.0, 1.0)


def tanh(x):
    return ops.tanh(x)


def softmax(x, axis=-1):
    return ops.softmax(x, axis=axis)


def log_softmax(x, axis=-1):
    return ops.log_softmax(x, axis=axis)


def softplus(x):
    return ops.softplus(x)


def softsign(x):
    return x / (ops.abs(x) + 1.0)


def exponential(x):
    return ops.exp(x)


def elu(x, alpha=1.0):
    # exp of the clipped input: where() takes both branches' gradients, and exp(large x) would
    # overflow to inf * 0 = nan in the branch that is not chosen.
    return ops.where(x.data > 0, x, alpha * (ops.exp(ops.minimum(x, 0.0)) - 1.0))


def selu(x):
    scale, alpha = 1.0507009873554805, 1.6732632423543772
    return scale * elu(x, alpha)


def silu(x):
    return x * ops.sigmoid(x)


def leaky_relu(x, negative_slope=0.2):
    return ops.leaky_relu(x, negative_slope)


_BY_NAME = {
    "linear": linear, "relu": relu, "relu6": relu6, "sigmoid": sigmoid,
    "hard_sigmoid": hard_sigmoid, "tanh": tanh, "softmax": softmax, "log_softmax": log_softmax,
    "softplus": softplus, "softsign": softsign, "exponential": exponential, "elu": elu,
    "selu": selu, "silu": silu, "swish": silu, "leaky_relu": leaky_relu,
}


def get(identifier):
    """None means linear, everywhere an activation is accepted (as in Keras): layers resolve
    their `activation` attribute through here at call time, so `layer.activation = None` set
    after construction works too."""
    if identifier is None:
        return linear
    if isinstance(identifier, str):
        if identifier not in _BY_NAME:
            raise ValueError(f"unknown activation {identifier!r}; known: {sorted(_BY_NAME)}")
        return _BY_NAME[identifier]
    if callable(identifier):
        return identifier
    raise TypeError(f"activation must be a name, None or a callable, got {identifier!r}")


def name_of(fn):
    """The Keras name of an activation function, for summaries and configs."""
    for name, f in _BY_NAME.items():
        if f is fn:
            return name
    return getattr(fn, "__name__", repr(fn))
