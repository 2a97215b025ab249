"""Keras's LSTM over a whole sequence as one op, with its own backward through time.

Weights in Keras's layout: kernel (D, 4U), recurrent_kernel (U, 4U), one bias (4U,), gate blocks
along the last axis in the order i, f, c, o. One step, for x_t (N, D) and the state h, c (N, U):

    z = x_t @ kernel + h @ recurrent_kernel + bias                     # (N, 4U)
    i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o);  g = tanh(z_c)    # (N, U) each
    c = f * c + i * g;  h = o * tanh(c)

Everything after the two products is `lstm_cell`, and its backward `lstm_cell_backward`: the one
cell that the sequence op below, `lstm_step` (generation), char_lstm's generator and the tests use.

Why one op for the sequence rather than a graph of small ones: a 60-step sequence would otherwise
be ~1000 graph nodes per call, each with its own Python overhead and temporaries. The input's
share of every step is one product before the loop, and the weight gradients are three products
after the backward loop; only what depends on the previous step is inside the loops.

A faster version (batch cut over worker threads, feature-major buffers, every gate through one
exp) lives in micrograd_gen/accel/lstm.py and registers as the fast path "lstm"; on CuPy the cell
runs as one CUDA kernel, registered as "lstm_cell" / "lstm_cell_backward".

Public functions:
    lstm(x, kernel, recurrent_kernel, bias, initial_state=None, return_sequences=False,
         return_state=False)
        -> output, or (output, h, c) with return_state (Keras's order)
    lstm_step(x_t, h, c, kernel, recurrent_kernel, bias) -> (h, c)   one step, for generation
    lstm_cell(z, c_prev) -> (h, c, act, tanh_c);  lstm_cell_backward(...) -> (dz, dc_prev)
"""
import numpy as np

from .. import fastpath
from ..backend import get_array_module
from ..tensor import Function, Tensor, is_grad_enabled
from .shape import expand_dims


def check_lstm_shapes(x, kernel, recurrent_kernel, bias, h0, c0):
    """A ValueError naming the argument and the shapes, before any work (both paths call it)."""
    if x.ndim != 3:
        raise ValueError(f"lstm: x must be (batch, time, features), got shape {tuple(x.shape)}")
    n, _, d = x.shape
    units = recurrent_kernel.shape[0]
    if recurrent_kernel.shape != (units, 4 * units):
        raise ValueError(f"lstm: recurrent_kernel must be (units, 4*units), got "
                         f"{tuple(recurrent_kernel.shape)}")
    if kernel.shape != (d, 4 * units):
        raise ValueError(f"lstm: kernel must be (input_dim, 4*units) = ({d}, {4 * units}) for x of "
                         f"shape {tuple(x.shape)} and recurrent_kernel {tuple(recurrent_kernel.shape)}; "
                         f"got {tuple(kernel.shape)}")
    if bias is not None and bias.shape != (4 * units,):
        raise ValueError(f"lstm: bias must be (4*units,) = ({4 * units},), got {tuple(bias.shape)}")
    for name, s in (("h0", h0), ("c0", c0)):
        if s is not None and s.shape != (n, units):
            raise ValueError(f"lstm: initial state {name} must be (batch, units) = ({n}, {units}), "
                             f"got {tuple(s.shape)}")


# ---- the cell: one step after its matrix products ---------------------------------------------

def lstm_cell(z, c_prev):
    """z (N, 4U), the pre-activations of gates i, f, c, o; c_prev (N, U).
    Returns h, c (N, U), and what the step's backward needs: act = [i, f, g, o] (N, 4U) and
    tanh(c) (N, U). Works on NumPy and CuPy; z and c_prev are left as they are."""
    fast = fastpath.lookup("lstm_cell")
    if fast is not None:
        result = fast(z, c_prev)
        if result is not NotImplemented:
            return result
    xp = get_array_module(z)
    u = z.shape[1] // 4
    with np.errstate(over="ignore", under="ignore"):   # exp(-z) = inf gives sigmoid 0, rightly
        act = 1 / (1 + xp.exp(-z))                     # sigmoid, right for i, f, o
    act[:, 2 * u:3 * u] = xp.tanh(z[:, 2 * u:3 * u])   # g = tanh(z_c)
    i, f, g, o = act[:, :u], act[:, u:2 * u], act[:, 2 * u:3 * u], act[:, 3 * u:]
    c = f * c_prev + i * g
    tanh_c = xp.tanh(c)
    return o * tanh_c, c, act, tanh_c


def lstm_cell_backward(act, c_prev, tanh_c, dh, dc):
    """The cell's backward: from dL/dh and dL/dc of its outputs (N, U), and what lstm_cell
    returned, to (dL/dz (N, 4U), dL/dc_prev (N, U)). The arguments are left as they are."""
    fast = fastpath.lookup("lstm_cell_backward")
    if fast is not None:
        result = fast(act, c_prev, tanh_c, dh, dc)
        if result is not NotImplemented:
            return result
    xp = get_array_module(act)
    u = act.shape[1] // 4
    i, f, g, o = act[:, :u], act[:, u:2 * u], act[:, 2 * u:3 * u], act[:, 3 * u:]
    dc = dc + dh * o * (1 - tanh_c * tanh_c)           # h = o * tanh(c) also reads c
    dz = xp.concatenate([dc * g * i * (1 - i),          # sigmoid' = s (1 - s)
                         dc * c_prev * f * (1 - f),
                         dc * i * (1 - g * g),          # tanh' = 1 - tanh^2
                         dh * tanh_c * o * (1 - o)], axis=1)
    return dz, dc * f


# ---- the sequence ------------------------------------------------------------------------------

class LSTM(Function):
    """Outputs (output, h_T, c_T): output is h_T, or every h_t (N, T, U) with return_sequences."""

    def forward(self, x, kernel, recurrent_kernel, bias, h0, c0, return_sequences=False):
        xp = get_array_module(x, kernel, recurrent_kernel)
        check_lstm_shapes(x, kernel, recurrent_kernel, bias, h0, c0)
        n, steps, _ = x.shape
        u = recurrent_kernel.shape[0]
        zx = x @ kernel                                              # (N, T, 4U): x's share
        if bias is not None:
            zx += bias
        hs = xp.zeros((n, steps + 1, u), zx.dtype)                   # hs[:, t] = h_{t-1}
        cs = xp.zeros((n, steps + 1, u), zx.dtype)                   # cs[:, t] = c_{t-1}
        if h0 is not None:
            hs[:, 0] = h0
        if c0 is not None:
            cs[:, 0] = c0
        acts = xp.empty((n, steps, 4 * u), zx.dtype)                 # [i, f, g, o] of every step
        tanh_cs = xp.empty((n, steps, u), zx.dtype)
        for t in range(steps):
            z = zx[:, t] + hs[:, t] @ recurrent_kernel               # (N, 4U)
            hs[:, t + 1], cs[:, t + 1], acts[:, t], tanh_cs[:, t] = lstm_cell(z, cs[:, t])
        if any(self.needs_input_grad):
            self.saved = x, kernel, recurrent_kernel, hs, cs, acts, tanh_cs
            self.return_sequences = return_sequences
        out = hs[:, 1:].copy() if return_sequences else hs[:, steps].copy()
        return out, hs[:, steps].copy(), cs[:, steps].copy()

    def backward(self, g_out, g_h, g_c):
        x, kernel, recurrent_kernel, hs, cs, acts, tanh_cs = self.saved
        need_x, need_kernel, need_recurrent, need_bias, _, _ = self.needs_input_grad
        xp = get_array_module(g_h)
        n, steps, u = tanh_cs.shape
        dz = xp.empty_like(acts)                                     # (N, T, 4U): dL/dz_t
        dh = g_h if self.return_sequences else g_h + g_out           # (N, U): dL/dh_T
        dc = g_c                                                     # (N, U): dL/dc_T
        for t in range(steps - 1, -1, -1):
            if self.return_sequences:
                dh = dh + g_out[:, t]
            dz[:, t], dc = lstm_cell_backward(acts[:, t], cs[:, t], tanh_cs[:, t], dh, dc)
            dh = dz[:, t] @ recurrent_kernel.T                       # (N, U): dL/dh_{t-1}
        # The weights' gradients sum over every step: one product each, N*T rows long.
        dz_rows = dz.reshape(n * steps, 4 * u)
        dx = dz @ kernel.T if need_x else None                       # (N, T, D)
        dkernel = x.reshape(n * steps, -1).T @ dz_rows if need_kernel else None       # (D, 4U)
        drecurrent = (hs[:, :-1].reshape(n * steps, u).T @ dz_rows
                      if need_recurrent else None)                   # (U, 4U)
        dbias = dz_rows.sum(axis=0) if need_bias else None           # (4U,)
        return dx, dkernel, drecurrent, dbias, dh, dc


def lstm(x, kernel, recurrent_kernel, bias, initial_state=None, return_sequences=False,
         return_state=False):
    """Keras LSTM (sigmoid recurrent activation, tanh activation) over x (N, T, D).

    initial_state: None (zeros) or (h0, c0), each (N, U); both are differentiable.
    Returns output ((N, U) last h, or (N, T, U) with return_sequences); with return_state the
    tuple (output, h_T, c_T), as Keras's `LSTM(return_state=True)`.
    """
    h0, c0 = (None, None) if initial_state is None else initial_state
    fast = fastpath.lookup("lstm")
    outputs = NotImplemented
    if fast is not None:
        outputs = fast(x, kernel, recurrent_kernel, bias, h0, c0, return_sequences)
    if outputs is NotImplemented:
        outputs = LSTM.apply(x, kernel, recurrent_kernel, bias, h0, c0,
                             return_sequences=return_sequences)
    out, h, c = outputs
    return (out, h, c) if return_state else out


def _data(t):
    return t.data if isinstance(t, Tensor) else t


def lstm_step(x, h, c, kernel, recurrent_kernel, bias):
    """One LSTM step: x (N, D), h and c (N, U) (None: zeros) -> (h, c), the next state.

    For generation, one character at a time. Without gradients (under no_grad, or with no input
    requiring one) it runs straight on the arrays: two products and `lstm_cell`; otherwise it is
    `lstm` on a length-1 sequence, differentiable in every input.
    """
    inputs = (x, h, c, kernel, recurrent_kernel, bias)
    if is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in inputs):
        _, h, c = lstm(expand_dims(x, 1), kernel, recurrent_kernel, bias, (h, c),
                       return_state=True)
        return h, c
    kernel, recurrent_kernel = _data(kernel), _data(recurrent_kernel)
    x, h, c, bias = _data(x), _data(h), _data(c), _data(bias)
    xp = get_array_module(x, kernel)
    z = x.astype(kernel.dtype, copy=False) @ kernel                     # (N, 4U)
    if h is not None:
        z += h @ recurrent_kernel
    if bias is not None:
        z += bias
    if c is None:
        c = xp.zeros((z.shape[0], z.shape[1] // 4), z.dtype)
    h, c, _, _ = lstm_cell(z, c)
    return Tensor._wrap(h, None, 0), Tensor._wrap(c, None, 0)
