"""LSTM with Keras's weights and gate order (see ../shared/KERAS.md): kernel (input_dim, 4*units),
recurrent_kernel (units, 4*units), one bias (4*units,), gate blocks i, f, c, o; sigmoid gates,
tanh candidate and output. The whole sequence runs as one op with its own backward through time
(micrograd_gen.ops.lstm)."""
import numpy as np

from .. import ops
from . import initializers
from .base import Layer


class LSTM(Layer):
    """Input (batch, timesteps, features). Output (batch, units), or (batch, timesteps, units) with
    return_sequences=True; return_state=True adds the final h and c: [output, h, c].
    Call with initial_state=[h0, c0] to start from a state other than zeros."""

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", unit_forget_bias=True, return_sequences=False,
                 return_state=False, **kwargs):
        super().__init__(**kwargs)
        if activation != "tanh" or recurrent_activation != "sigmoid":
            raise ValueError(f"LSTM '{self.name}': only activation='tanh' with "
                             "recurrent_activation='sigmoid' (Keras's defaults) is supported, got "
                             f"{activation!r} and {recurrent_activation!r}")
        self.units = int(units)
        self.use_bias = use_bias
        self.kernel_initializer = kernel_initializer
        self.recurrent_initializer = recurrent_initializer
        self.bias_initializer = bias_initializer
        self.unit_forget_bias = unit_forget_bias
        self.return_sequences, self.return_state = return_sequences, return_state

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(f"LSTM '{self.name}' expects inputs (batch, timesteps, features) "
                             f"with known features, got shape {tuple(input_shape)}")
        u = self.units
        self.kernel = self.add_weight("kernel", (input_shape[-1], 4 * u), self.kernel_initializer)
        self.recurrent_kernel = self.add_weight("recurrent_kernel", (u, 4 * u),
                                                self.recurrent_initializer)
        bias_init = (_UnitForgetBias(self.bias_initializer) if self.unit_forget_bias
                     else self.bias_initializer)
        self.bias = self.add_weight("bias", (4 * u,), bias_init) if self.use_bias else None

    def call(self, x, initial_state=None):
        if x.ndim != 3 or x.shape[-1] != self.kernel.shape[0]:
            raise ValueError(f"LSTM '{self.name}': built for inputs (batch, timesteps, "
                             f"{self.kernel.shape[0]}), got shape {tuple(x.shape)}")
        out = ops.lstm(x, self.kernel, self.recurrent_kernel, self.bias,
                       initial_state=initial_state, return_sequences=self.return_sequences,
                       return_state=self.return_state)
        return list(out) if self.return_state else out

    def compute_output_shape(self, input_shape):
        n, t = input_shape[0], input_shape[1]
        out = (n, t, self.units) if self.return_sequences else (n, self.units)
        if self.return_state:
            return [out, (n, self.units), (n, self.units)]
        return out


class _UnitForgetBias(initializers.Initializer):
    """Keras's unit_forget_bias: the forget-gate block (the second of i, f, c, o) starts at 1,
    the other blocks come from bias_initializer."""

    def __init__(self, base):
        self.base = initializers.get(base)

    def __call__(self, shape, dtype="float32", rng=None):
        units = shape[0] // 4

        def draw(n):
            if isinstance(self.base, initializers.Initializer):
                return self.base((n,), dtype, rng)
            return np.asarray(self.base((n,), dtype=dtype))

        return np.concatenate([draw(units), np.ones(units), draw(2 * units)]).astype(dtype)
