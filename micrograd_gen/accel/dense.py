"""nn.Dense without gradients on NumPy arrays (the fast path "dense"): a generator's last layer.

The reference Dense is three ops, the product, + bias and the activation, each a Function that
wraps its inputs and output in Tensors: ~13 us a call at batch 1 against ~4 us of arithmetic.
When no gradient is wanted nothing needs those records, so here the product is made and the bias
and a softmax are applied in place on it: the same NumPy operations in the same order as the
ops (ops.linalg's product, ops.softmax's shift by the maximum), so the same values.
"""
import numpy as np

from .. import fastpath
from ..ops.linalg import matmul_arrays
from ..tensor import Tensor, is_grad_enabled


def dense(x, kernel, bias, softmax):
    """x @ kernel + bias, then a softmax over the last axis when `softmax`, as a Tensor with no
    history, for a 2-D x when no gradient is wanted and every array is NumPy of one float dtype;
    else NotImplemented."""
    tensors = (x, kernel) if bias is None else (x, kernel, bias)
    if is_grad_enabled() and any(t.requires_grad for t in tensors):
        return NotImplemented
    a, w = x.data, kernel.data
    b = None if bias is None else bias.data
    if (type(a) is not np.ndarray or type(w) is not np.ndarray or a.ndim != 2
            or a.dtype.kind != "f" or w.dtype != a.dtype
            or (b is not None and (type(b) is not np.ndarray or b.dtype != a.dtype))):
        return NotImplemented
    y = matmul_arrays(a, w)                                          # (N, units)
    if b is not None:
        y += b
    if softmax:
        y -= y.max(axis=-1, keepdims=True)
        np.exp(y, out=y)
        y /= y.sum(axis=-1, keepdims=True)
    return Tensor._wrap(y, None, 0)


fastpath.register("dense", dense)
