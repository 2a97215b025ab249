"""Keras's LSTM over a whole sequence as one op, with its own backward through time.

Weights in Keras's layout: kernel (D, 4U), recurrent_kernel (U, 4U), one bias (4U,), gate blocks
along the last axis in the order i, f, c, o:

    z = x_t @ kernel + h @ recurrent_kernel + bias         # (N, 4U)
    i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o);  g = tanh(z_c)
    c = f * c + i * g;  h = o * tanh(c)

Why one op rather than a graph of small ones: a 60-step sequence would otherwise be ~1000 graph
nodes per call, each with its own Python overhead and temporaries. Here forward is one batched
product for the input's share of every step, then per step one (4U, U) x (U, N) GEMM and a few
in-place elementwise passes on preallocated time-major buffers; backward walks the steps in
reverse with two GEMMs per step (dh, and all three weight gradients at once). See LSTM below for
the layout.

The activations cost more than the arithmetic around them on a CPU (NumPy's float32 exp is ~12x
a multiply, tanh ~25x), so all four gates go through ONE exp: the kernels are pre-scaled by -1
(i, f, o) and -2 (c), giving sigmoid(z) = 1 / (1 + exp(-z)) for i, f, o and
tanh(z) = 2 * sigmoid(2z) - 1 for g; tanh(c) is computed the same way.

Public functions:
    lstm(x, kernel, recurrent_kernel, bias, initial_state=None, return_sequences=False,
         return_state=False)
        -> output, or (output, h, c) with return_state (Keras's order)
    lstm_step(x_t, h, c, kernel, recurrent_kernel, bias) -> (h, c)   one step, for generation
"""
import numpy as np

from ..accel import cuda as cuda_kernels  # TEMPORARY: to become a registered fast path (issue 14)
from ..backend import get_array_module
from ..tensor import Function, Tensor, is_grad_enabled
from .shape import expand_dims
from ..accel.workers import chunk_pool, for_chunks  # TEMPORARY: ops/lstm.py is refactor-core's (issue 14)

# Samples per worker thread below which the batch is not cut (a generator's batch of 1).
_MIN_SLICE = 16


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
    """Outputs (output, h_T, c_T); output is h_T, or every h_t as (N, T, U) with return_sequences.

    Inside, every per-step array is feature-major with the batch innermost (gates (4U, N), h and
    c (U, N)), so each gate is a contiguous block of rows and every elementwise pass runs over a
    contiguous array (column slices of a batch-major (N, 4U) array cost NumPy a loop per row).
      forward   z_t = K^T x_t^T (all steps in one batched product) + R^T h_{t-1}   (GEMM per step)
      backward  dh_{t-1} = R dz_t                                                   (GEMM per step)
                d[K R b]^T += dz_t [x_t^T; h_{t-1}; 1]^T                            (GEMM per step)
    The stacked inputs [x_t^T; h_{t-1}; 1] (D+U+1, N) are where forward writes each h, so the
    three weight gradients come out of one product per step.
    """

    def forward(self, x, kernel, recurrent_kernel, bias, h0, c0, return_sequences=False):
        xp = get_array_module(x, kernel, recurrent_kernel)
        _check_shapes(x, kernel, recurrent_kernel, bias, h0, c0)
        n, steps, d = x.shape
        units = recurrent_kernel.shape[0]
        scale = _gate_scale(xp, units, x.dtype)[:, None]
        kernel_t = kernel.T * scale                                      # (4U, D)
        recurrent_t = recurrent_kernel.T * scale                         # (4U, U)
        # The batch is cut into one slice per worker thread (each then runs the whole sequence
        # with single-threaded BLAS, see ops/workers.py): a per-step (4U, U) x (U, N) product
        # is too small for BLAS's own threads to gain much, and they join 60 times per call.
        slices = _batch_slices(xp, n)
        saved = [None] * len(slices)

        def run(i, slot):
            n0, n1 = slices[i]
            saved[i] = _forward_slice(
                x[n0:n1], kernel_t, recurrent_t, bias, scale,
                None if h0 is None else h0[n0:n1], None if c0 is None else c0[n0:n1],
                keep_x=self.needs_input_grad[1])
        for_chunks(range(len(slices)), run, xp)

        if any(self.needs_input_grad):
            self.saved, self.slices = saved, slices
            self.kernel = kernel if self.needs_input_grad[0] else None
            self.recurrent_kernel = recurrent_kernel
            self.return_sequences = return_sequences
            self.input_dim = d
        # h_{t-1} of every step is inputs[t, d:d+U]; (U, N) per step, batch innermost
        h_last = xp.concatenate([inputs[steps, d:d + units].T for _, inputs, _, _ in saved])
        c_last = xp.concatenate([cs[steps].T for _, _, cs, _ in saved])  # (N, U)
        if return_sequences:
            out = xp.concatenate([inputs[1:, d:d + units].transpose(2, 0, 1)
                                  for _, inputs, _, _ in saved])         # (N, T, U)
        else:
            out = h_last
        return out, h_last, c_last

    def backward(self, g_out, g_h, g_c):
        xp = get_array_module(g_h)
        need_x, need_kernel, need_recurrent, need_bias, need_h0, need_c0 = self.needs_input_grad
        kernel, recurrent_kernel = self.kernel, self.recurrent_kernel
        u = recurrent_kernel.shape[0]
        parts = [None] * len(self.slices)

        def run(i, slot):
            n0, n1 = self.slices[i]
            parts[i] = _backward_slice(self.saved[i], g_out[n0:n1], g_h[n0:n1], g_c[n0:n1],
                                       kernel, recurrent_kernel, self.needs_input_grad,
                                       self.return_sequences)
        for_chunks(range(len(self.slices)), run, xp)

        dx = xp.concatenate([p[0] for p in parts]) if need_x else None
        d_weights = None
        if need_kernel or need_recurrent or need_bias:
            d_weights = parts[0][1]
            for p in parts[1:]:
                d_weights += p[1]
        # d_weights^T spans the rows of [x_t; h_{t-1}; 1] that the needed weights use, from lo
        d = self.input_dim
        lo = 0 if need_kernel else d if need_recurrent else d + u
        dkernel = d_weights[:, :d].T.copy() if need_kernel else None               # (D, 4U)
        drecurrent = d_weights[:, d - lo:d - lo + u].T.copy() if need_recurrent else None
        dbias = d_weights[:, -1].copy() if need_bias else None
        dh0 = xp.concatenate([p[2] for p in parts]) if need_h0 else None           # (N, U)
        dc0 = xp.concatenate([p[3] for p in parts]) if need_c0 else None
        return dx, dkernel, drecurrent, dbias, dh0, dc0


def _batch_slices(xp, n):
    """[(n0, n1)]: the batch cut into one slice per worker thread for NumPy arrays when each gets
    at least _MIN_SLICE samples, else the whole batch (run here, on BLAS's own threads)."""
    threads = chunk_pool()[1] if xp is np else 1
    count = max(1, min(threads, n // _MIN_SLICE))
    return [(n * i // count, n * (i + 1) // count) for i in range(count)]


def _forward_slice(x, kernel_t, recurrent_t, bias, scale, h0, c0, keep_x):
    """The forward pass over a slice of the batch: (gates, inputs, cs, tanh_c), the time-major
    buffers described in LSTM's docstring (hs, the h of every step, are rows of `inputs`)."""
    xp = get_array_module(x, kernel_t)
    n, steps, d = x.shape
    units = recurrent_t.shape[1]
    dtype = x.dtype
    u, u2, u3 = units, 2 * units, 3 * units
    # The input's share of every step in one batched product; bias folded in.
    gates = xp.matmul(kernel_t, x.transpose(1, 2, 0))                # (T, 4U, N): -z
    if bias is not None:
        gates += (bias * scale[:, 0])[:, None]
    inputs = xp.empty((steps + 1, d + u + 1, n), dtype)              # [x_t; h_{t-1}; 1]
    if keep_x:
        inputs[:steps, :d] = x.transpose(1, 2, 0)
    inputs[:, d + u] = 1
    hs = inputs[:, d:d + u]                                          # h_{t-1} at hs[t]
    hs[0] = 0 if h0 is None else h0.T
    cs = xp.empty((steps + 1, units, n), dtype)
    cs[0] = 0 if c0 is None else c0.T
    tanh_c = xp.empty((steps, units, n), dtype)
    recurrent = xp.empty((4 * units, n), dtype)
    tmp = xp.empty((units, n), dtype)

    with np.errstate(over="ignore", under="ignore"):  # exp(-z) = inf gives sigmoid 0, rightly
        for t in range(steps):
            z = gates[t]                                             # (4U, N)
            if t > 0 or h0 is not None:
                xp.matmul(recurrent_t, hs[t], out=recurrent)
                z += recurrent
            if xp is not np:  # CuPy: the cell in one kernel (kernels/lstm_cell_forward.cu)
                cuda_kernels.lstm_cell_forward(z, cs[t], cs[t + 1], tanh_c[t], hs[t + 1],
                                               scale=(-1, -1, -2, -1))  # _gate_scale's
                continue
            xp.exp(z, out=z)
            z += 1
            xp.divide(1, z, out=z)                                   # sigmoid of all gates
            g = z[u2:u3]
            g *= 2
            g -= 1                                                   # tanh(z_c)
            c = cs[t + 1]
            xp.multiply(z[u:u2], cs[t], out=c)                       # f * c
            xp.multiply(z[:u], g, out=tmp)                           # i * g
            c += tmp
            tc = tanh_c[t]                                           # tanh(c), by exp too:
            xp.multiply(c, -2, out=tc)                               # 2 / (1 + e^-2c) - 1
            xp.exp(tc, out=tc)
            tc += 1
            xp.divide(2, tc, out=tc)
            tc -= 1
            xp.multiply(z[u3:], tc, out=hs[t + 1])                   # o * tanh(c)
    return gates, inputs, cs, tanh_c


def _backward_slice(saved, g_out, g_h, g_c, kernel, recurrent_kernel, needs, return_sequences):
    """Backward through time over a slice of the batch, from what _forward_slice saved:
    (dx, [dK dR db]^T over the rows the needed weights use, dh0, dc0); None where not needed."""
    xp = get_array_module(g_h)
    need_x, need_kernel, need_recurrent, need_bias, need_h0, need_c0 = needs
    gates, inputs, cs, tanh_c = saved
    steps, units4, n = gates.shape
    u, u2, u3 = units4 // 4, units4 // 2, 3 * units4 // 4
    d = inputs.shape[1] - u - 1
    dtype = gates.dtype

    g_seq = None
    if return_sequences:
        g_seq = xp.ascontiguousarray(g_out.transpose(1, 2, 0))       # (T, U, N)
        dh = xp.add(g_seq[steps - 1], g_h.T, order="C")
    else:
        dh = (g_h + g_out).T.copy(order="C")                         # (U, N)
    # Copies in C order, like every buffer: mixed orders make NumPy crawl, and dc is updated
    # in place (the incoming gradient may be a view of someone else's array).
    dc = g_c.T.copy(order="C")
    a = xp.empty((u, n), dtype)
    d_act = xp.empty((units4, n), dtype)                             # dL/d(gate activation)
    slope = xp.empty((units4, n), dtype)                             # d(activation)/dz
    # The weight gradients [dK dR db]^T accumulate one step at a time over the rows of the
    # stacked inputs that some weight needs: x rows [0, d), h rows [d, d+u), the ones row.
    need_rows = [r for r, need in ((0, need_kernel), (d, need_recurrent), (d + u, need_bias))
                 if need]
    lo = need_rows[0] if need_rows else 0
    hi = {0: d, d: d + u, d + u: d + u + 1}[need_rows[-1]] if need_rows else 0
    d_weights = xp.zeros((units4, hi - lo), dtype) if need_rows else None
    step_weights = xp.empty_like(d_weights) if need_rows else None
    dx = xp.empty((n, steps, d), dtype) if need_x else None

    # dL/dz of step t overwrites gates[t] once that step is done.
    for t in range(steps - 1, -1, -1):
        z = gates[t]                                                 # (4U, N)
        i, f, g, o = z[:u], z[u:u2], z[u2:u3], z[u3:]
        if t < steps - 1:
            xp.matmul(recurrent_kernel, gates[t + 1], out=dh)        # (U, N)
            if g_seq is not None:
                dh += g_seq[t]
        tc = tanh_c[t]
        if xp is not np:  # CuPy: dL/dz_t and dc in one kernel (kernels/lstm_cell_backward.cu)
            cuda_kernels.lstm_cell_backward(z, cs[t], tc, dh, dc)
        else:
            # dc += dh * o * (1 - tanh(c)^2)
            xp.multiply(tc, tc, out=a)
            xp.subtract(1, a, out=a)
            a *= o
            a *= dh
            dc += a
            xp.multiply(dc, g, out=d_act[:u])                        # d i
            xp.multiply(dc, cs[t], out=d_act[u:u2])                  # d f
            xp.multiply(dc, i, out=d_act[u2:u3])                     # d g
            xp.multiply(dh, tc, out=d_act[u3:])                      # d o
            dc *= f                                                  # dc for step t - 1
            # sigmoid' = s (1 - s) on every block, then the c block's tanh' = 1 - g^2 over it
            xp.subtract(1, z, out=slope)
            slope *= z
            xp.multiply(g, g, out=slope[u2:u3])
            xp.subtract(1, slope[u2:u3], out=slope[u2:u3])
            xp.multiply(d_act, slope, out=z)                         # dL/dz_t (4U, N)
        if need_rows:
            xp.matmul(z, inputs[t, lo:hi].T, out=step_weights)       # (4U, rows)
            d_weights += step_weights
        if need_x:
            xp.matmul(z.T, kernel.T, out=dx[:, t])                   # (N, D)
    dh0 = xp.matmul(gates[0].T, recurrent_kernel.T) if need_h0 else None  # (N, U)
    dc0 = dc.T.copy() if need_c0 else None
    return dx, d_weights, dh0, dc0


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
