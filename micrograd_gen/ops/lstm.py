"""Keras's LSTM over a whole sequence as one op, with its own backward through time.

Weights in Keras's layout: kernel (D, 4U), recurrent_kernel (U, 4U), one bias (4U,), gate blocks
along the last axis in the order i, f, c, o:

    z = x_t @ kernel + h @ recurrent_kernel + bias         # (N, 4U)
    i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o);  g = tanh(z_c)
    c = f * c + i * g;  h = o * tanh(c)

Why one op rather than a graph of small ones: a 60-step sequence would otherwise be ~1000 graph
nodes per call, each with its own Python overhead and temporaries. Here forward is one GEMM for the
input projection of every step, then per step one (N, U) x (U, 4U) GEMM and a few in-place
elementwise passes on preallocated (T, N, ...) buffers. Backward walks the steps in reverse with one
(N, 4U) x (4U, U) GEMM per step and leaves the weight gradients to three GEMMs over all steps at
the end (the per-step pre-activation gradients are stacked in the buffer that held the gates).

The activations cost more than the arithmetic around them on a CPU (exp and tanh are a dozen
times dearer than a multiply in NumPy), so all four gates go through ONE exp: the kernels are
pre-scaled by -1 (i, f, o) and -2 (c), giving sigmoid(z) = 1 / (1 + exp(-z)) for i, f, o and
tanh(z) = 2 * sigmoid(2z) - 1 for g.

Public functions:
    lstm(x, kernel, recurrent_kernel, bias, initial_state=None, return_sequences=False,
         return_state=False)
        -> output, or (output, h, c) with return_state (Keras's order)
    lstm_step(x_t, h, c, kernel, recurrent_kernel, bias) -> (h, c)   one step, for generation
"""
import numpy as np

from ..backend import get_array_module
from ..tensor import Function, Tensor, is_grad_enabled
from .shape import expand_dims


def _check_shapes(x, kernel, recurrent_kernel, bias, h0, c0):
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


def _gate_scale(xp, units, dtype):
    # -1 for i, f, o and -2 for c: then exp of the scaled pre-activation gives every gate's sigmoid
    scale = xp.full(4 * units, -1, dtype=dtype)
    scale[2 * units:3 * units] = -2
    return scale


class LSTM(Function):
    """Outputs (output, h_T, c_T); output is h_T, or every h_t as (N, T, U) with return_sequences."""

    def forward(self, x, kernel, recurrent_kernel, bias, h0, c0, return_sequences=False):
        xp = get_array_module(x, kernel, recurrent_kernel)
        _check_shapes(x, kernel, recurrent_kernel, bias, h0, c0)
        n, steps, d = x.shape
        units = recurrent_kernel.shape[0]
        dtype = x.dtype
        u, u2, u3 = units, 2 * units, 3 * units
        scale = _gate_scale(xp, units, dtype)
        kernel_s = kernel * scale                                        # (D, 4U)
        recurrent_s = recurrent_kernel * scale                           # (U, 4U)

        # Time-major buffers: the step loop then works on contiguous (N, ...) slices.
        xs = xp.ascontiguousarray(x.transpose(1, 0, 2))                  # (T, N, D)
        gates = xp.empty((steps, n, 4 * units), dtype)                   # z, then the activations
        xp.matmul(xs.reshape(steps * n, d), kernel_s, out=gates.reshape(steps * n, 4 * units))
        if bias is not None:
            gates += bias * scale
        hs = xp.empty((steps + 1, n, units), dtype)                      # h_{-1} .. h_{T-1}
        cs = xp.empty((steps + 1, n, units), dtype)
        hs[0] = 0 if h0 is None else h0
        cs[0] = 0 if c0 is None else c0
        tanh_c = xp.empty((steps, n, units), dtype)
        recurrent = xp.empty((n, 4 * units), dtype)
        tmp = xp.empty((n, units), dtype)

        with np.errstate(over="ignore", under="ignore"):  # exp(-z) = inf gives sigmoid 0, rightly
            for t in range(steps):
                z = gates[t]                                             # (N, 4U)
                if t > 0 or h0 is not None:
                    xp.matmul(hs[t], recurrent_s, out=recurrent)
                    z += recurrent
                xp.exp(z, out=z)
                z += 1
                xp.divide(1, z, out=z)                                   # sigmoid of all gates
                g = z[:, u2:u3]
                g *= 2
                g -= 1                                                   # tanh(z_c)
                c = cs[t + 1]
                xp.multiply(z[:, u:u2], cs[t], out=c)                    # f * c
                xp.multiply(z[:, :u], g, out=tmp)                        # i * g
                c += tmp
                xp.tanh(c, out=tanh_c[t])
                xp.multiply(z[:, u3:], tanh_c[t], out=hs[t + 1])         # o * tanh(c)

        need_x, need_kernel, need_recurrent, need_bias, need_h0, need_c0 = self.needs_input_grad
        if any(self.needs_input_grad):
            self.gates, self.hs, self.cs, self.tanh_c = gates, hs, cs, tanh_c
            self.kernel = kernel if need_x else None
            self.recurrent_kernel = recurrent_kernel
            self.xs = xs if need_kernel else None
            self.x_shape = x.shape
            self.return_sequences = return_sequences
        h_last = hs[steps]
        if return_sequences:
            out = xp.ascontiguousarray(hs[1:].transpose(1, 0, 2))        # (N, T, U)
        else:
            out = h_last
        return out, h_last, cs[steps]

    def backward(self, g_out, g_h, g_c):
        xp = get_array_module(g_h)
        need_x, need_kernel, need_recurrent, need_bias, need_h0, need_c0 = self.needs_input_grad
        gates, hs, cs, tanh_c = self.gates, self.hs, self.cs, self.tanh_c
        recurrent_kernel = self.recurrent_kernel
        steps, n, units4 = gates.shape
        u, u2, u3 = units4 // 4, units4 // 2, 3 * units4 // 4
        dtype = gates.dtype

        g_seq = g_out.transpose(1, 0, 2) if self.return_sequences else None  # (T, N, U) view
        dh = g_h.astype(dtype, copy=True)
        if g_seq is not None:
            dh += g_seq[steps - 1]
        else:
            dh += g_out
        dc = g_c.astype(dtype, copy=True)
        recurrent_t = recurrent_kernel.T                                 # (4U, U)
        a = xp.empty((n, u), dtype)
        d_act = xp.empty((n, units4), dtype)                             # dL/d(gate activation)
        slope = xp.empty((n, units4), dtype)                             # d(activation)/dz

        # The pre-activation gradient of step t overwrites gates[t] once that step is done.
        for t in range(steps - 1, -1, -1):
            z = gates[t]
            i, f, g, o = z[:, :u], z[:, u:u2], z[:, u2:u3], z[:, u3:]
            if t < steps - 1:
                xp.matmul(gates[t + 1], recurrent_t, out=dh)             # (N, U)
                if g_seq is not None:
                    dh += g_seq[t]
            tc = tanh_c[t]
            # dc += dh * o * (1 - tanh(c)^2)
            xp.multiply(tc, tc, out=a)
            xp.subtract(1, a, out=a)
            a *= o
            a *= dh
            dc += a
            xp.multiply(dc, g, out=d_act[:, :u])                         # d i
            xp.multiply(dc, cs[t], out=d_act[:, u:u2])                   # d f
            xp.multiply(dc, i, out=d_act[:, u2:u3])                      # d g
            xp.multiply(dh, tc, out=d_act[:, u3:])                       # d o
            dc *= f                                                      # dc for step t - 1
            # sigmoid' = s (1 - s) on every block, then the c block's tanh' = 1 - g^2 over it
            xp.subtract(1, z, out=slope)
            slope *= z
            xp.multiply(g, g, out=slope[:, u2:u3])
            xp.subtract(1, slope[:, u2:u3], out=slope[:, u2:u3])
            xp.multiply(d_act, slope, out=z)                             # dL/dz_t

        dz = gates.reshape(steps * n, units4)                            # (T*N, 4U)
        dx = dkernel = drecurrent = dbias = dh0 = dc0 = None
        if need_x:
            dx = xp.matmul(dz, self.kernel.T).reshape(steps, n, -1)      # (T, N, D)
            dx = xp.ascontiguousarray(dx.transpose(1, 0, 2))             # (N, T, D)
        if need_kernel:
            dkernel = xp.matmul(self.xs.reshape(steps * n, -1).T, dz)    # (D, 4U)
        if need_recurrent:
            drecurrent = xp.matmul(hs[:-1].reshape(steps * n, u).T, dz)  # (U, 4U)
        if need_bias:
            dbias = dz.sum(axis=0)
        if need_h0:
            dh0 = xp.matmul(gates[0], recurrent_t)                       # (N, U)
        if need_c0:
            dc0 = dc
        return dx, dkernel, drecurrent, dbias, dh0, dc0


def lstm(x, kernel, recurrent_kernel, bias, initial_state=None, return_sequences=False,
         return_state=False):
    """Keras LSTM (sigmoid recurrent activation, tanh activation) over x (N, T, D).

    initial_state: None (zeros) or (h0, c0), each (N, U); both are differentiable.
    Returns output ((N, U) last h, or (N, T, U) with return_sequences); with return_state the
    tuple (output, h_T, c_T), as Keras's `LSTM(return_state=True)`.
    """
    h0, c0 = (None, None) if initial_state is None else initial_state
    out, h, c = LSTM.apply(x, kernel, recurrent_kernel, bias, h0, c0,
                           return_sequences=return_sequences)
    return (out, h, c) if return_state else out


def _data(t):
    return t.data if isinstance(t, Tensor) else t


def lstm_step(x, h, c, kernel, recurrent_kernel, bias):
    """One LSTM step: x (N, D), h and c (N, U) (None: zeros) -> (h, c), the next state.

    For generation, one character at a time. Without gradients (under no_grad, or with no input
    requiring one) it runs straight on the arrays, about fifteen small NumPy calls; otherwise it is
    `lstm` on a length-1 sequence, differentiable in every input.
    """
    inputs = (x, h, c, kernel, recurrent_kernel, bias)
    if is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in inputs):
        _, h, c = LSTM.apply(expand_dims(x, 1), kernel, recurrent_kernel, bias, h, c)
        return h, c
    kernel, recurrent_kernel = _data(kernel), _data(recurrent_kernel)
    x, h, c, bias = _data(x), _data(h), _data(c), _data(bias)
    xp = get_array_module(x, kernel)
    u = recurrent_kernel.shape[0]
    z = xp.matmul(x.astype(kernel.dtype, copy=False), kernel)            # (N, 4U)
    if h is not None:
        z += xp.matmul(h, recurrent_kernel)
    if bias is not None:
        z += bias
    g = xp.tanh(z[:, 2 * u:3 * u])
    with np.errstate(over="ignore", under="ignore"):
        xp.negative(z, out=z)
        xp.exp(z, out=z)
    z += 1
    xp.divide(1, z, out=z)                                 # sigmoid for i, f, o (the c block unused)
    c_new = z[:, :u] * g
    if c is not None:
        c_new += z[:, u:2 * u] * c                                       # + f * c
    h_new = xp.tanh(c_new)
    h_new *= z[:, 3 * u:]
    return Tensor._wrap(h_new, None, 0), Tensor._wrap(c_new, None, 0)
