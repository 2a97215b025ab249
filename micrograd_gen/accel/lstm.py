"""The LSTM made fast on the CPU, and the CUDA LSTM cell: fast paths of micrograd_gen/ops/lstm.py.

"lstm" (NumPy arrays): the same outputs and gradients as ops.lstm.LSTM, computed differently.
- The batch is cut into one slice per worker thread, each running the whole sequence on
  single-threaded BLAS (see for_chunks): per-step products are too small for BLAS's own threads.
- Every per-step array is feature-major with the batch innermost (gates (4U, N), h and c (U, N)),
  preallocated and time-major, and updated in place.
- The activations cost more than the arithmetic around them on a CPU, so all four gates go
  through ONE tanh: the kernels are pre-scaled by 1/2 for i, f, o, giving
  sigmoid(z) = (1 + tanh(z / 2)) / 2, and by 1 for the candidate g = tanh(z).
- At batch 1 without gradients (a generator's call) a loop of its own (_infer_one) makes each
  step one matrix-vector product and seven elementwise NumPy calls on one buffer.
- Backward computes the three weight gradients with one product over all steps, from the
  stacked inputs [x_t; h_{t-1}; 1] that forward writes each h into.
"lstm_cell" / "lstm_cell_backward" (CuPy arrays): ops.lstm's cell and its backward as one CUDA
kernel each (kernels/lstm_cell_forward.cu, lstm_cell_backward.cu, through accel/cuda.py). On
NumPy the reference cell is the fast one: for the small arrays of a step it is a dozen NumPy calls,
and rescaling around one shared activation only adds calls there.

tests/test_lstm.py holds both against the reference on drawn shapes.
"""
import itertools

import numpy as np

from .. import fastpath
from ..backend import get_array_module
from ..ops.lstm import check_lstm_shapes
from ..tensor import Function, Tensor, is_grad_enabled
from . import cuda
from .workers import chunk_pool, for_chunks

# Samples per worker thread below which the batch is not cut (a generator's batch of 1).
_MIN_SLICE = 16


def _gate_scale(xp, units, dtype):
    # 1/2 for i, f, o and 1 for c: then tanh of the scaled pre-activation gives tanh(z / 2) for
    # the sigmoid gates and tanh(z) for the candidate
    scale = xp.full(4 * units, 0.5, dtype=dtype)
    scale[2 * units:3 * units] = 1
    return scale


class LSTM(Function):  # named as the reference, whose errors it shares ("lstm: ...")
    """micrograd_gen.ops.lstm.LSTM's outputs (output, h_T, c_T) for NumPy arrays, computed fast.

    Inside, every per-step array is feature-major with the batch innermost (gates (4U, N), h and
    c (U, N)), so each gate is a contiguous block of rows and every elementwise pass runs over a
    contiguous array (column slices of a batch-major (N, 4U) array cost NumPy a loop per row).
      forward   z_t = K^T x_t^T (all steps in one batched product) + R^T h_{t-1}   (GEMM per step)
      backward  dh_{t-1} = R dz_t                                                   (GEMM per step)
                d[K R b]^T = sum_t dz_t [x_t^T; h_{t-1}; 1]^T         (one GEMM over all steps)
    The stacked inputs [x_t^T; h_{t-1}; 1] (D+U+1, N) are where forward writes each h, so the
    three weight gradients come out of one product.
    """

    def forward(self, x, kernel, recurrent_kernel, bias, h0, c0, return_sequences=False):
        xp = get_array_module(x, kernel, recurrent_kernel)
        check_lstm_shapes(x, kernel, recurrent_kernel, bias, h0, c0)
        n, steps, d = x.shape
        units = recurrent_kernel.shape[0]
        scale = _gate_scale(xp, units, x.dtype)[:, None]
        kernel_t = kernel.T * scale                                      # (4U, D)
        recurrent_t = recurrent_kernel.T * scale                         # (4U, U)
        # The batch is cut into one slice per worker thread (each then runs the whole sequence
        # with single-threaded BLAS): a per-step (4U, U) x (U, N) product is too small for
        # BLAS's own threads to gain much, and they join once per step.
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
    gates = xp.matmul(kernel_t, x.transpose(1, 2, 0))                # (T, 4U, N), scaled
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

    with np.errstate(under="ignore"):
        for t in range(steps):
            z = gates[t]                                             # (4U, N)
            if t > 0 or h0 is not None:
                xp.matmul(recurrent_t, hs[t], out=recurrent)
                z += recurrent
            xp.tanh(z, out=z)                                        # g = tanh(z_c), and
            for sigmoid in (z[:u2], z[u3:]):                         # (1 + tanh(z / 2)) / 2
                sigmoid *= 0.5
                sigmoid += 0.5
            c = cs[t + 1]
            xp.multiply(z[u:u2], cs[t], out=c)                       # f * c
            xp.multiply(z[:u], z[u2:u3], out=tmp)                    # i * g
            c += tmp
            xp.tanh(c, out=tanh_c[t])
            xp.multiply(z[u3:], tanh_c[t], out=hs[t + 1])            # o * tanh(c)
    return gates, inputs, cs, tanh_c


def _infer_one(x, kernel, recurrent_kernel, bias, h0, c0, return_sequences):
    """LSTM.forward's outputs for one sample (a generator's batch of 1) when no gradient is
    wanted: x (T, D), h0 and c0 (U,) or None. At this size a NumPy call costs more than its
    arithmetic, so each step is the fewest calls that do it: one product and seven elementwise
    passes over preallocated buffers.

    One buffer holds the gate blocks in the order [o, i, f, g] (Keras's is i, f, g, o) and then
    c, so that [i; f] and [g; c] are two (2, U) views whose product is [i*g; f*c] in one call.
    All four gates go through ONE tanh, as sigmoid(z) = (1 + tanh(z / 2)) / 2: the inner 1/2 is
    folded into the kernels, the outer one carried along. After the tanh and a +1 the blocks hold
    2o, 2i, 2f and g; c = (2i*g + 2f*c) / 2 is one product with [1/2, 1/2], and the step keeps
    H = 2o * tanh(c) = 2h, for which the recurrent kernel is halved once more. A one-hot sequence
    from a zero state starts at its second step, the first one's H and c prepared per input.
    """
    steps = x.shape[0]
    u = recurrent_kernel.shape[0]
    dtype = np.result_type(x, kernel)
    weights = _inference_weights(kernel, recurrent_kernel, bias, dtype)
    ids = _one_hot_ids(x, weights.one_hot_probe)
    if ids is not None:       # a one-hot x_t picks a row of the kernel: x_t @ K + b = (K + b)[id]
        z_inputs = weights.input_rows.take(ids, axis=0)               # (T, 4U)
    else:
        z_inputs = x @ weights.kernel
        if bias is not None:
            z_inputs += weights.bias
    gates = np.empty(5 * u, dtype)                                   # [2o, 2i, 2f, g, c]
    z, sigmoids, o2, c = gates[:4 * u], gates[:3 * u], gates[:u], gates[4 * u:]
    i_f, g_c = gates[u:3 * u].reshape(2, u), gates[3 * u:].reshape(2, u)
    products = np.empty((2, u), dtype)                               # [2i*g; 2f*c]
    tanh_c = np.empty(u, dtype)
    # H_{t-1} at hs[t], or one H read and written in place when only the last is returned
    hs = np.empty((steps + 1 if return_sequences else 1, u), dtype)
    first = 0                                                        # the loop's first step
    if ids is not None and h0 is None and c0 is None:
        # from a zero state the first step's H and c were prepared for each one-hot input
        first = 1
        hs[0] = 0
        hs[1 if return_sequences else 0] = weights.first_h[ids[0]]
        c[...] = weights.first_c[ids[0]]
    else:
        hs[0] = 0 if h0 is None else 2 * h0
        c[...] = 0 if c0 is None else c0
    if return_sequences:
        rows = list(hs)
        h_in, h_out = rows[first:], rows[first + 1:]
    else:
        h_in = h_out = itertools.repeat(hs[0])
    recurrent, ones = weights.recurrent, weights.ones
    # ndarray.dot rather than np.dot, which first calls a Python dispatcher (0.15 us a call)
    add, multiply, tanh, add_halves = np.add, np.multiply, np.tanh, weights.halves.dot
    for z_input, h_prev, h in zip(z_inputs[first:], h_in, h_out):
        h_prev.dot(recurrent, z)
        add(z, z_input, z)
        tanh(z, z)
        add(sigmoids, ones, sigmoids)                                # 2o, 2i, 2f
        multiply(i_f, g_c, products)
        add_halves(products, c)                                      # i*g + f*c
        tanh(c, tanh_c)
        multiply(o2, tanh_c, h)                                      # H = 2h
    h_last = hs[-1:] * 0.5                                           # (1, U)
    out = hs[None, 1:] * 0.5 if return_sequences else h_last
    return out, h_last, c[None].copy()


def _one_hot_ids(x, probe):
    """The index of the 1 in each row of x (T, D) when every row is one-hot, else None.
    probe (D, 2) is [ones, 0..D-1]: x @ probe gives each row's sum and, for a one-hot row, the
    index of its 1 exactly (one product instead of a sum and an argmax)."""
    sums_and_ids = x @ probe                                         # (T, 2)
    # every row sums to 1 and there are only T nonzeros: one nonzero per row, and it is 1
    if np.count_nonzero(x) == x.shape[0] and (sums_and_ids[:, 0] == 1).all():
        return sums_and_ids[:, 1].astype(np.intp)
    return None


class _InferenceWeights:
    """The weights as _infer_one takes them, dtype `dtype`: gate blocks in the order o, i, f, g,
    the kernel and bias scaled by 1/2 for i, f, o (z / 2 into the tanh), the recurrent kernel by
    1/4 for i, f, o and 1/2 for g (it multiplies H = 2h); input_rows = kernel + bias, the
    products of a one-hot input; first_h and first_c, the state after a one-hot input's first
    step from zeros. With the constants that the steps add and multiply."""

    def __init__(self, kernel, recurrent_kernel, bias, dtype):
        u = recurrent_kernel.shape[0]
        scale = np.full(4 * u, 0.5, dtype)                           # z / 2 for i, f, o
        scale[2 * u:3 * u] = 1                                       # z for g
        self.kernel = _oifg(kernel, scale)                           # (D, 4U)
        self.recurrent = _oifg(recurrent_kernel, scale / 2)          # (U, 4U)
        self.bias = None if bias is None else _oifg(bias, scale)
        self.input_rows = (self.kernel if bias is None else
                           np.add(self.kernel, self.bias, out=_aligned_empty(kernel.shape, dtype)))
        # From a zero state the first step depends on its input alone, for a one-hot input on
        # the row of input_rows it picks: each row's H and c, computed as the loop computes them
        # (c = 2i*g / 2 + 2f*0 / 2), so that a generator's call starts at its second step.
        gates = np.tanh(self.input_rows)                             # (D, 4U)
        gates[:, :3 * u] += 1                                        # 2o, 2i, 2f, g
        self.first_c = gates[:, u:2 * u] * gates[:, 3 * u:] * 0.5    # (D, U)
        self.first_h = gates[:, :u] * np.tanh(self.first_c)          # H = 2o * tanh(c)
        self.one_hot_probe = np.stack([np.ones(len(kernel), dtype),
                                       np.arange(len(kernel), dtype=dtype)], axis=1)
        self.halves = np.full(2, 0.5, dtype)
        self.ones = np.ones(3 * u, dtype)                # (adding an array costs less than a scalar)


_last_weights = None   # _KeptWeights: the weights last prepared, with copies to compare


class _KeptWeights:
    """The _InferenceWeights of some weights, beside copies of those weights laid end to end in
    one buffer (and one buffer of booleans as long), so that telling whether weights given now
    are equal to them is one comparison into preallocated memory per array and ONE `any`: 17 us
    for the char-LSTM's weights against 25 for np.array_equal on copies apart, each comparison
    making and reducing an array of its own."""

    def __init__(self, given, dtype, prepared):
        self.dtype, self.prepared = dtype, prepared
        size = sum(a.size for a in given)
        copies, self.unequal = np.empty(size, given[0].dtype), np.empty(size, bool)
        self.copies, self.unequal_parts, start = [], [], 0
        for a in given:
            self.copies.append(_laid_out_as(a, copies[start:start + a.size]))
            self.copies[-1][...] = a
            self.unequal_parts.append(_laid_out_as(a, self.unequal[start:start + a.size]))
            start += a.size

    def holds(self, given, dtype):
        if dtype != self.dtype or len(given) != len(self.copies) or any(
                a.shape != c.shape or a.dtype != c.dtype for a, c in zip(given, self.copies)):
            return False
        for a, copy, unequal in zip(given, self.copies, self.unequal_parts):
            np.not_equal(a, copy, out=unequal)
        return not self.unequal.any()


def _laid_out_as(a, flat):
    """flat, a 1-D run of a.size elements, as an array of a's shape in a's memory order (the
    orthogonal initializer's recurrent kernel is Fortran-ordered: compared with a C-ordered
    copy, element by element, it took 91 us instead of 3)."""
    if a.flags.f_contiguous and not a.flags.c_contiguous:
        return flat.reshape(a.shape[::-1]).T
    return flat.reshape(a.shape)


def _inference_weights(kernel, recurrent_kernel, bias, dtype):
    """_InferenceWeights of these weights. A generator runs the model on the same weights
    hundreds of times, and preparing them costs as much as a few of its sixty steps, so the
    last ones prepared are kept, beside a copy of the weights they came from, and used again
    only when the weights given are equal to that copy (comparing costs a few us), so that an
    update in place is never missed. Weights of mixed dtypes are prepared at every call."""
    global _last_weights
    given = [a for a in (kernel, recurrent_kernel, bias) if a is not None]
    if _last_weights is not None and _last_weights.holds(given, dtype):
        return _last_weights.prepared
    prepared = _InferenceWeights(kernel, recurrent_kernel, bias, dtype)
    if all(a.dtype == given[0].dtype for a in given):
        _last_weights = _KeptWeights(given, dtype, prepared)
    return prepared


def _oifg(w, scale):
    """w (..., 4U) with its gate blocks from Keras's order i, f, g, o to o, i, f, g, times
    `scale` (4U,) in Keras's order: a new C-contiguous array of scale's dtype."""
    u = w.shape[-1] // 4
    out = _aligned_empty(w.shape, scale.dtype)
    np.multiply(w[..., 3 * u:], scale[3 * u:], out=out[..., :u])
    np.multiply(w[..., :3 * u], scale[:3 * u], out=out[..., u:])
    return out


def _aligned_empty(shape, dtype, alignment=64):
    """np.empty, but with the data starting on an `alignment`-byte boundary. malloc aligns to 16
    bytes only, and OpenBLAS's matrix-vector product at batch 1 (128 x 512) took 3.0 us on a
    matrix at 16 bytes past a 32-byte boundary against 2.3 us on one at a 32-byte boundary."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(size + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + size].view(dtype).reshape(shape)


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
        # dc += dh * o * (1 - tanh(c)^2)
        xp.multiply(tc, tc, out=a)
        xp.subtract(1, a, out=a)
        a *= o
        a *= dh
        dc += a
        xp.multiply(dc, g, out=d_act[:u])                            # d i
        xp.multiply(dc, cs[t], out=d_act[u:u2])                      # d f
        xp.multiply(dc, i, out=d_act[u2:u3])                         # d g
        xp.multiply(dh, tc, out=d_act[u3:])                          # d o
        dc *= f                                                      # dc for step t - 1
        # sigmoid' = s (1 - s) on every block, then the c block's tanh' = 1 - g^2 over it
        xp.subtract(1, z, out=slope)
        slope *= z
        xp.multiply(g, g, out=slope[u2:u3])
        xp.subtract(1, slope[u2:u3], out=slope[u2:u3])
        xp.multiply(d_act, slope, out=z)                             # dL/dz_t (4U, N)
        if need_x:
            xp.matmul(z.T, kernel.T, out=dx[:, t])                   # (N, D)
    d_weights = None
    if need_rows:
        # sum over steps of dz_t [x_t; h_{t-1}; 1]^T as ONE product over all steps and samples,
        # (4U, T*N) @ (T*N, rows): one per step, (4U, N) @ (N, rows) and an add, took twice as
        # long (a 64-sample slice: 12.1 ms against 6.97 for the product and 0.96 for the copies
        # that line the steps up)
        dz = xp.ascontiguousarray(gates.transpose(1, 0, 2)).reshape(units4, steps * n)
        stacked = xp.ascontiguousarray(inputs[:steps, lo:hi].transpose(1, 0, 2))
        d_weights = dz @ stacked.reshape(hi - lo, steps * n).T       # (4U, rows)
    dh0 = xp.matmul(gates[0].T, recurrent_kernel.T) if need_h0 else None  # (N, U)
    dc0 = dc.T.copy() if need_c0 else None
    return dx, d_weights, dh0, dc0


def batch_split_lstm(x, kernel, recurrent_kernel, bias, h0, c0, return_sequences):
    """The "lstm" fast path: (output, h_T, c_T) Tensors, or NotImplemented for CuPy arrays.

    One sample with no gradient wanted (a generator's call) runs _infer_one on the arrays and
    wraps what it returns, with no Function around it: nothing will go back through it, and
    Function.apply's bookkeeping cost 2% of the book's generation loop."""
    tensors = (x, kernel, recurrent_kernel, bias, h0, c0)
    arrays = [t.data if isinstance(t, Tensor) else t for t in tensors]
    if get_array_module(*arrays) is not np:
        return NotImplemented
    x_data = arrays[0]
    if (all(a is None or type(a) is np.ndarray for a in arrays)
            and x_data.ndim == 3 and x_data.shape[0] == 1 and x_data.shape[1] > 0
            and not (is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad
                                                for t in tensors))):
        check_lstm_shapes(*arrays)
        # Starting the worker pool pins NumPy's BLAS to one thread: a second one gains nothing
        # on a 128 x 512 matrix-vector product, and on a busy machine waiting for it made the
        # loop many times slower (bench/README.md).
        chunk_pool()
        h0, c0 = arrays[4], arrays[5]
        outputs = _infer_one(x_data[0], arrays[1], arrays[2], arrays[3],
                             None if h0 is None else h0[0], None if c0 is None else c0[0],
                             return_sequences)
        return tuple([Tensor._wrap(o, None, 0) for o in outputs])
    return LSTM.apply(x, kernel, recurrent_kernel, bias, h0, c0, return_sequences=return_sequences)


# ---- the cell on CuPy: one CUDA kernel each way -------------------------------------------------

def _cuda_ready(*arrays):
    return (get_array_module(arrays[0]) is not np
            and all(a.dtype == arrays[0].dtype for a in arrays)
            and arrays[0].dtype in (np.float32, np.float64))


def lstm_cell_cuda(z, c_prev):
    """ops.lstm.lstm_cell on CuPy arrays: (h, c, act, tanh_c), z and c_prev left as they are."""
    if not _cuda_ready(z, c_prev):
        return NotImplemented
    xp = get_array_module(z)
    act = xp.array(z, order="C")                     # the kernel overwrites z with [i, f, g, o]
    c = xp.empty_like(c_prev, order="C")
    tanh_c, h = xp.empty_like(c), xp.empty_like(c)
    cuda.lstm_cell_forward(act, xp.ascontiguousarray(c_prev), c, tanh_c, h, feature_major=False)
    return h, c, act, tanh_c


def lstm_cell_backward_cuda(act, c_prev, tanh_c, dh, dc):
    """ops.lstm.lstm_cell_backward on CuPy arrays: (dz, dc_prev), the arguments left as they are."""
    if not _cuda_ready(act, c_prev, tanh_c, dh, dc):
        return NotImplemented
    xp = get_array_module(act)
    dz = xp.array(act, order="C")                    # overwritten with dL/dz
    dc_prev = xp.array(dc, order="C")                # overwritten with dL/dc_prev
    cuda.lstm_cell_backward(dz, xp.ascontiguousarray(c_prev), xp.ascontiguousarray(tanh_c),
                            xp.ascontiguousarray(dh), dc_prev, feature_major=False)
    return dz, dc_prev


fastpath.register("lstm", batch_split_lstm)
fastpath.register("lstm_cell", lstm_cell_cuda)
fastpath.register("lstm_cell_backward", lstm_cell_backward_cuda)
