"""LSTM with Keras's weights and gate order (see ../shared/KERAS.md): kernel (input_dim, 4*units),
recurrent_kernel (units, 4*units), one bias (4*units,), gate blocks i, f, c, o; sigmoid gates,
tanh candidate and output. The whole sequence runs as one op with its own backward through time
(micrograd_gen.ops.lstm). Two cases need the step equations spelled out in the layer instead (the
op has no place for them): other activations than tanh / sigmoid, and dropout drawn per gate."""
import numpy as np

from .. import ops
from ..tensor import Tensor
from . import activations, arguments, initializers
from .base import Layer


class LSTM(Layer):
    """Input (batch, timesteps, features). Output (batch, units), or (batch, timesteps, units) with
    return_sequences=True; return_state=True adds the final h and c: [output, h, c].
    Call with initial_state=[h0, c0] to start from a state other than zeros.

    As in Keras 3:
    - go_backwards=True reads the sequence last step first; with return_sequences the outputs
      come in that (reversed) order.
    - stateful=True starts each call from the final state of the previous call (sample i of a
      batch continues sample i of the previous batch), so every batch must have the same size;
      reset_state() goes back to zeros. The state is not a weight (it is not saved) and no
      gradient flows from one call into the next.
    - dropout / recurrent_dropout (rates in [0, 1), training mode only) drop input features and
      the previous h's features with masks drawn once per call and kept for every step. With
      implementation=2 (the default) and no recurrent dropout, one input mask serves all four
      gates; with recurrent_dropout > 0 (Keras then switches to implementation 1) or
      implementation=1, each gate draws its own masks. Masks are drawn from the layer's
      generator in that order: the input masks, then the recurrent masks, each
      `rng.random((batch, size)) >= rate`.
    - implementation (1 or 2) changes nothing else; unroll is accepted and has no effect (the
      steps always run in a loop).
    """

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", unit_forget_bias=True, dropout=0.0,
                 recurrent_dropout=0.0, return_sequences=False, return_state=False,
                 go_backwards=False, stateful=False, unroll=False, implementation=2, **kwargs):
        super().__init__(**kwargs)
        self.units = arguments.positive_int(self, "units", units)
        self.activation = arguments.activation(self, "activation", activation)
        self.recurrent_activation = arguments.activation(
            self, "recurrent_activation", recurrent_activation)
        self.use_bias = use_bias
        self.kernel_initializer = kernel_initializer
        self.recurrent_initializer = recurrent_initializer
        self.bias_initializer = bias_initializer
        self.unit_forget_bias = unit_forget_bias
        self.dropout = arguments.rate(self, "dropout", dropout)
        self.recurrent_dropout = arguments.rate(self, "recurrent_dropout", recurrent_dropout)
        self.return_sequences, self.return_state = return_sequences, return_state
        self.go_backwards, self.stateful, self.unroll = bool(go_backwards), bool(stateful), unroll
        self.implementation = arguments.one_of(self, "implementation", implementation, (1, 2))
        self.states = None  # [h, c] arrays between calls when stateful

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

    def reset_state(self):
        """Back to a zero state before the next call (stateful=True)."""
        self.states = None

    reset_states = reset_state  # Keras's older name

    def call(self, x, initial_state=None, training=None):
        if x.ndim != 3 or x.shape[-1] != self.kernel.shape[0]:
            raise ValueError(f"LSTM '{self.name}': built for inputs (batch, timesteps, "
                             f"{self.kernel.shape[0]}), got shape {tuple(x.shape)}")
        if initial_state is None and self.stateful and self.states is not None:
            if self.states[0].shape[0] != x.shape[0]:
                raise ValueError(f"LSTM '{self.name}' is stateful with batch size "
                                 f"{self.states[0].shape[0]}, got input shape {tuple(x.shape)}; "
                                 "call reset_state() to start over with another batch size")
            initial_state = [Tensor(s, dtype=s.dtype) for s in self.states]
        if self.go_backwards:
            x = x[:, ::-1]
        training = bool(training)
        masks_per_gate = training and self._masks_per_gate() and (
            self.dropout > 0 or self.recurrent_dropout > 0)
        activation = activations.get(self.activation)
        recurrent_activation = activations.get(self.recurrent_activation)
        if (masks_per_gate or activation is not activations.tanh
                or recurrent_activation is not activations.sigmoid):
            out, h, c = self._steps(x, initial_state, training, activation, recurrent_activation)
        else:
            if training and self.dropout > 0:
                mask = self._masks(x, 1, self.kernel.shape[0], self.dropout)[0]
                x = x * mask[:, None, :]
            out, h, c = ops.lstm(x, self.kernel, self.recurrent_kernel, self.bias,
                                 initial_state=initial_state,
                                 return_sequences=self.return_sequences, return_state=True)
        if self.stateful:
            self.states = [h.data.copy(), c.data.copy()]
        return [out, h, c] if self.return_state else out

    def _masks_per_gate(self):
        # Keras 3 runs implementation 1 (a mask per gate) whenever recurrent_dropout is set
        return self.implementation == 1 or self.recurrent_dropout > 0

    def _masks(self, x, count, size, rate):
        """`count` dropout masks (batch, size), scaled by 1 / (1 - rate) as inverted dropout."""
        rng = self._rng_for_layer()
        keep = [rng.random((x.shape[0], size)) >= rate for _ in range(count)]
        return [x.xp.asarray(k, dtype=x.dtype) / x.dtype.type(1 - rate) for k in keep]

    def _steps(self, x, initial_state, training, activation, recurrent_activation):
        """The LSTM equations step by step from ops, for what the lstm op does not do: other
        activations, and dropout masks per gate (Keras's implementation 1)."""
        n, steps, d = x.shape
        u = self.units
        input_masks = [None] * 4
        if training and self.dropout > 0:
            count = 4 if self._masks_per_gate() else 1
            input_masks = self._masks(x, count, d, self.dropout) * (4 // count)
        state_masks = (self._masks(x, 4, u, self.recurrent_dropout)
                       if training and self.recurrent_dropout > 0 else [None] * 4)
        # Each gate's input projection for every step at once: the input masks do not change
        # over time.
        x_proj = []
        for g in range(4):
            xg = x if input_masks[g] is None else x * input_masks[g][:, None, :]
            proj = ops.matmul(xg, self.kernel[:, g * u:(g + 1) * u])           # (N, T, U)
            x_proj.append(proj if self.bias is None else proj + self.bias[g * u:(g + 1) * u])
        recurrent = [self.recurrent_kernel[:, g * u:(g + 1) * u] for g in range(4)]
        if initial_state is None:
            zeros = x.xp.zeros((n, u), dtype=x.dtype)
            h, c = Tensor(zeros), Tensor(zeros)
        else:
            h, c = initial_state
        outputs = []
        for t in range(steps):
            z = [x_proj[g][:, t] + ops.matmul(h if state_masks[g] is None else h * state_masks[g],
                                              recurrent[g]) for g in range(4)]
            i, f, o = (recurrent_activation(z[k]) for k in (0, 1, 3))
            c = f * c + i * activation(z[2])
            h = o * activation(c)
            outputs.append(h)
        out = ops.stack(outputs, axis=1) if self.return_sequences else h
        return out, h, c

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
