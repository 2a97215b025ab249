"""Matrix product, batched and broadcasting like numpy.matmul; a Dense layer's x @ kernel + bias;
the Gram matrix x^T x."""
import numpy as np

from .. import fastpath
from ..backend import get_array_module
from ..tensor import Function
from .elementwise import unbroadcast


def matmul_arrays(a, b, out=None):
    """xp.matmul(a, b, out=out) on arrays, or the fast path's (a large product shared over the
    cores). The ops' own products go through here."""
    fast = fastpath.lookup("matmul")
    c = NotImplemented if fast is None else fast(a, b, out)
    return get_array_module(a, b).matmul(a, b, out=out) if c is NotImplemented else c


class MatMul(Function):
    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul needs arrays of at least one dimension")
        k_b = b.shape[-2 if b.ndim > 1 else 0]
        if a.shape[-1] != k_b:
            raise ValueError(f"the last axis of the first input ({a.shape[-1]}) must match the "
                             f"{'second-to-last' if b.ndim > 1 else 'only'} axis of the second ({k_b})")
        if a.ndim > 2 and b.ndim > 2:
            try:
                np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
            except ValueError:
                raise ValueError(f"the batch axes {tuple(a.shape[:-2])} and {tuple(b.shape[:-2])} "
                                 f"do not broadcast") from None
        self.a, self.b = a, b
        xp = get_array_module(a, b)
        if a.ndim > 2 and b.ndim == 2:
            # (B..., M, K) x (K, N), a Dense layer on a sequence: one (B*M, K) x (K, N) GEMM,
            # where NumPy's matmul would run B smaller ones (bench/README.md, "The core").
            y = matmul_arrays(a.reshape(-1, a.shape[-1]), b)
            return y.reshape(a.shape[:-1] + b.shape[-1:])
        return matmul_arrays(a, b)

    def backward(self, g):
        xp = get_array_module(g)
        a, b = self.a, self.b
        # Promote vectors to matrices so one rule covers every case, then drop the added axes.
        a2 = a[None, :] if a.ndim == 1 else a                       # (..., M, K)
        b2 = b[:, None] if b.ndim == 1 else b                       # (..., K, N)
        g2 = g
        if a.ndim == 1:  # (N,) or, when b is a vector too, ()
            g2 = xp.expand_dims(g2, -1 if b.ndim == 1 else -2)
        if b.ndim == 1:
            g2 = xp.expand_dims(g2, -1)                             # (..., M, N)
        da = db = None
        if self.needs_input_grad[0]:
            if b2.ndim == 2 and g2.ndim > 2:                        # folded, as in forward
                da = matmul_arrays(g2.reshape(-1, g2.shape[-1]), b2.T).reshape(
                    g2.shape[:-1] + b2.shape[:1])
            else:
                da = matmul_arrays(g2, xp.swapaxes(b2, -1, -2))    # (..., M, K)
            da = unbroadcast(da, a2.shape)
            if a.ndim == 1:
                da = da.reshape(a.shape)  # only then: a reshape is a view, which a leaf copies
        if self.needs_input_grad[1]:
            if b2.ndim == 2 and a2.ndim > 2:
                # (B..., M, K) x (K, N), as a Dense layer on a sequence: fold the batch into M
                # for one big GEMM instead of a batch of small ones and a sum.
                db = matmul_arrays(a2.reshape(-1, a2.shape[-1]).T, g2.reshape(-1, g2.shape[-1]))
            else:
                db = matmul_arrays(xp.swapaxes(a2, -1, -2), g2)    # (..., K, N)
            db = unbroadcast(db, b2.shape)
            if b.ndim == 1:
                db = db.reshape(b.shape)
        return da, db


def matmul(a, b):
    return MatMul.apply(a, b)


class Affine(Function):
    """x @ kernel + bias over x's last axis: Keras's Dense before its activation, as one op.

    As matmul then add, `+ bias` would write a second array as large as the product (the
    Transformer's 15000-way logits: 190 MB at batch 32); here the bias is added into the product
    where it is made. Backward: dx = g @ kernel^T, dkernel = x^T @ g, dbias = g summed over every
    row, with x's leading axes folded into one (one GEMM, as MatMul does for a sequence)."""

    def forward(self, x, kernel, bias=None):
        if x.ndim == 0 or kernel.ndim != 2 or x.shape[-1] != kernel.shape[0]:
            raise ValueError(f"affine: x {tuple(x.shape)} needs a last axis of kernel "
                             f"{tuple(kernel.shape)}'s {kernel.shape[0] if kernel.ndim else '?'} "
                             f"rows, and the kernel must be 2-D")
        if bias is not None and tuple(bias.shape) != kernel.shape[1:]:
            raise ValueError(f"affine: bias {tuple(bias.shape)} must have kernel "
                             f"{tuple(kernel.shape)}'s {kernel.shape[1]} units")
        self.x = x if self.needs_input_grad[1] else None
        self.kernel = kernel if self.needs_input_grad[0] else None
        self.x_shape = x.shape
        y = matmul_arrays(x.reshape(-1, x.shape[-1]), kernel)            # (rows, units)
        if bias is not None:
            if np.result_type(y.dtype, bias.dtype) == y.dtype:
                y += bias
            else:
                y = y + bias
        return y.reshape(x.shape[:-1] + kernel.shape[1:])

    def backward(self, g):
        need_x, need_kernel, need_bias = self.needs_input_grad
        g2 = g.reshape(-1, g.shape[-1])                                    # (rows, units)
        dx = dkernel = dbias = None
        if need_x:
            dx = matmul_arrays(g2, self.kernel.T).reshape(self.x_shape)
        if need_kernel:
            dkernel = matmul_arrays(self.x.reshape(-1, self.x.shape[-1]).T, g2)
        if need_bias:
            dbias = g2.sum(axis=0)
        return dx, dkernel, dbias


def affine(x, kernel, bias=None):
    return Affine.apply(x, kernel, bias)

class Gram(Function):
    """x^T x for x (..., rows, C): the (C, C) Gram matrix of a feature map (one per leading
    index), style transfer's statistic. Written as matmul(transpose(x), x), x would reach the
    product twice and its gradient would be two products as large as x, added; one op knows both
    sides are x:

        G = x^T x,   dL/dx = x @ (g + g^T)

    (G[i, j] sums x[r, i] * x[r, j] over rows r, so x[r, k] meets g in row k and in column k)."""

    def forward(self, x):
        if x.ndim < 2:
            raise ValueError(f"gram needs a (..., rows, channels) array, got shape {x.shape}")
        self.x = x
        return matmul_arrays(get_array_module(x).swapaxes(x, -1, -2), x)

    def backward(self, g):
        return matmul_arrays(self.x, g + get_array_module(g).swapaxes(g, -1, -2))


def gram(x):
    return Gram.apply(x)
