"""Checks for the arguments of layer constructors: a bad value stops at construction with an error
that names the layer, the argument and the value, before any weight is made.

Keras refuses most of these too (Dense(0), Conv2D(kernel_size=0)); where Keras silently clamps
(an LSTM's dropout=1.5 becomes 1.0, which then turns dropout off) the engine refuses instead.
"""
import numbers

from . import activations


def _where(layer):
    return f"{type(layer).__name__} '{layer.name}'"


def positive_int(layer, name, value):
    """An int >= 1 (units, filters, num_heads, ...). Floats are refused rather than truncated:
    Dense(2.5) is a typo, not a request for 2 units."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{_where(layer)}: {name} must be a positive integer, got {value!r}")
    return int(value)


def positive_ints(layer, name, value, count=2, allow_zero=False):
    """An int or a tuple of `count` ints, each >= 1 (>= 0 with allow_zero): kernel_size, strides,
    pool_size, dilation_rate, size, output_padding."""
    items = (value,) * count if isinstance(value, numbers.Integral) else value
    try:
        items = tuple(items)
    except TypeError:
        items = None
    lowest = 0 if allow_zero else 1
    if (items is None or len(items) != count
            or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lowest
                   for v in items)):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{_where(layer)}: {name} must be a {kind} integer or a tuple of "
                         f"{count} {kind} integers, got {value!r}")
    return tuple(int(v) for v in items)


def rate(layer, name, value):
    """A dropout rate in [0, 1)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not 0 <= value < 1):
        raise ValueError(f"{_where(layer)}: {name} must be a number in [0, 1), got {value!r}")
    return float(value)


def non_negative(layer, name, value, allow_none=False):
    """A float >= 0 (a slope, a threshold, a maximum); None where the argument allows it."""
    if value is None and allow_none:
        return None
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not value >= 0 or value == float("inf")):
        raise ValueError(f"{_where(layer)}: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


def positive(layer, name, value):
    """A finite float > 0 (epsilon)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not 0 < value < float("inf")):
        raise ValueError(f"{_where(layer)}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def finite(layer, name, value):
    """Any finite float (ELU's alpha)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not abs(value) < float("inf")):
        raise ValueError(f"{_where(layer)}: {name} must be a finite number, got {value!r}")
    return float(value)


def one_of(layer, name, value, accepted):
    if value not in accepted:
        raise ValueError(f"{_where(layer)}: {name} must be one of {list(accepted)}, got "
                         f"{value!r}")
    return value


def activation(layer, name, value):
    """An activation by Keras name, a callable, or None (linear)."""
    try:
        return activations.get(value)
    except (ValueError, TypeError) as error:
        raise type(error)(f"{_where(layer)}: {name}: {error}") from None
