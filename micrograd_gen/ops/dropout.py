"""Inverted dropout: zero a fraction `rate` of the inputs and scale the rest by 1/(1-rate),
so nothing needs rescaling at inference (Keras's convention)."""
import numpy as np

from ..backend import get_array_module
from ..tensor import Function


class Dropout(Function):
    def forward(self, x, rate=0.5, rng=None):
        xp = get_array_module(x)
        keep = rng.random(x.shape) >= rate  # drawn on the host so a seed gives the same mask anywhere
        self.scale = xp.asarray(keep, dtype=x.dtype) / x.dtype.type(1 - rate)
        return x * self.scale

    def backward(self, g):
        return g * self.scale


def dropout(x, rate, training=True, seed=None, rng=None):
    """`rng` (a numpy Generator) or `seed` makes the mask reproducible; training=False is identity."""
    if not 0 <= rate < 1:
        raise ValueError(f"dropout: rate must be in [0, 1), got {rate}")
    if not training or rate == 0:
        return x
    if rng is None:
        rng = np.random.default_rng(seed)
    return Dropout.apply(x, rate=rate, rng=rng)
