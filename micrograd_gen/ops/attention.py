"""Scaled dot-product attention, and Keras MultiHeadAttention's projections around it.

Layout: heads first, (batch, heads, positions, dim):
    q (N, h, Tq, d), k (N, h, Tk, d), v (N, h, Tk, dv) -> out (N, h, Tq, dv)
    scores = q k^T * scale (scale = 1/sqrt(d), Keras's 1/sqrt(key_dim)), softmax over the keys.

Masks say where a query MAY look: a boolean `mask` broadcastable to (N, h, Tq, Tk), True = attend.
As Keras's masked Softmax, masked scores become -1e9 before the softmax and the probabilities are
multiplied by the mask after it, so a query that may see nothing gets all-zero weights.
`causal=True` lets query i see key j when j <= i + (Tk - Tq): with Tq == Tk that is Keras's
causal mask (j <= i); with fewer queries than keys the queries are the LAST Tq positions, which is
what incremental decoding with cached keys needs (one new query sees every cached key).

Keras's projections (KERAS.md): query/key/value kernels (d_model, h, dim) with biases (h, dim),
output kernel (h, dv, d_model) with bias (d_model,). project_heads and merge_heads do each as one
GEMM. They hand heads-first tensors around as transposed views of (N, T, h, dim) arrays: the
attention GEMMs read those strides directly (BLAS takes a leading dimension), and merge_heads then
reshapes without copying.

Incremental decoding: keep a dict per attention layer, `cache = {}`, and pass it to
multi_head_attention with the new positions only; it appends their projected keys and values to
cache["key"], cache["value"] (N, h, T_so_far, dim) and attends over all of them.
"""
import math

import numpy as np

from ..backend import get_array_module
from ..tensor import Function, Tensor
from .linalg import matmul_arrays
from .shape import concatenate

_LARGE_NEGATIVE = -1e9  # Keras's _large_negative_number for float32 and wider


def _visible(xp, mask, causal, tq, tk):
    """Boolean array broadcastable to (..., Tq, Tk), True where a query may attend; or None."""
    visible = None
    if causal:
        visible = xp.tri(tq, tk, k=tk - tq, dtype=bool)                   # (Tq, Tk)
    if mask is not None:
        mask = xp.asarray(mask, dtype=bool)
        visible = mask if visible is None else mask & visible
    return visible


def _heads_buffer(xp, like, rows, cols, dtype):
    """An output for a (N, h, rows, cols) product, stored as (N, rows, h, cols) (see the docstring)."""
    if like.ndim != 4:
        return None
    n, h = like.shape[0], like.shape[1]
    return xp.empty((n, rows, h, cols), dtype).transpose(0, 2, 1, 3)


class ScaledDotProductAttention(Function):
    def forward(self, q, k, v, causal=False, mask=None, scale=None, return_scores=False):
        xp = get_array_module(q, k, v)
        if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim:
            raise ValueError("scaled_dot_product_attention: q, k, v must have the same number of "
                             "dimensions, (batch, heads, positions, dim)")
        if (q.shape[:-2] != k.shape[:-2] or k.shape[:-1] != v.shape[:-1]
                or q.shape[-1] != k.shape[-1]):
            raise ValueError(f"scaled_dot_product_attention: q {tuple(q.shape)}, k {tuple(k.shape)} "
                             f"and v {tuple(v.shape)} do not fit (N, h, Tq, d), (N, h, Tk, d), "
                             f"(N, h, Tk, dv)")
        tq, tk = q.shape[-2], k.shape[-2]
        scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
        scores = matmul_arrays(q, xp.swapaxes(k, -1, -2))                   # (N, h, Tq, Tk)
        scores *= scores.dtype.type(scale)
        visible = _visible(xp, mask, causal, tq, tk)
        if visible is not None:
            try:
                xp.copyto(scores, scores.dtype.type(_LARGE_NEGATIVE), where=~visible)
            except ValueError as e:
                raise ValueError(f"scaled_dot_product_attention: mask of shape "
                                 f"{tuple(visible.shape)} does not broadcast to the scores' "
                                 f"{tuple(scores.shape)}") from e
        probs = scores                                                    # softmax in place
        probs -= probs.max(axis=-1, keepdims=True)
        xp.exp(probs, out=probs)
        probs /= probs.sum(axis=-1, keepdims=True)
        # A causal mask alone leaves every row a visible key (when Tq <= Tk), and exp(-1e9 - max)
        # is exactly 0, so only a user mask (or more queries than keys) needs the re-zeroing.
        if visible is not None and (mask is not None or tq > tk):
            probs *= visible
        out = _heads_buffer(xp, q, tq, v.shape[-1], probs.dtype)
        out = matmul_arrays(probs, v, out=out)                              # (N, h, Tq, dv)
        if any(self.needs_input_grad):
            self.q, self.k, self.v, self.probs, self.scale = q, k, v, probs, scale
        return (out, probs) if return_scores else out

    def backward(self, g_out, g_probs=None):
        xp = get_array_module(g_out)
        need_q, need_k, need_v = self.needs_input_grad
        q, k, v, probs = self.q, self.k, self.v, self.probs
        dv = None
        if need_v:
            dv = _heads_buffer(xp, v, v.shape[-2], v.shape[-1], v.dtype)
            dv = matmul_arrays(xp.swapaxes(probs, -1, -2), g_out, out=dv)    # (N, h, Tk, dv)
        if not (need_q or need_k):
            return None, None, dv
        d_probs = matmul_arrays(g_out, xp.swapaxes(v, -1, -2))              # (N, h, Tq, Tk)
        if g_probs is not None:
            d_probs += g_probs
        # softmax's vector-Jacobian product p * (dp - <dp, p>). The kept probabilities are already
        # multiplied by the mask, so masked (and fully masked) entries get no gradient.
        d_scores = d_probs
        d_scores -= (d_probs * probs).sum(axis=-1, keepdims=True)
        d_scores *= probs
        d_scores *= d_scores.dtype.type(self.scale)
        dq = dk = None
        if need_q:
            dq = _heads_buffer(xp, q, q.shape[-2], q.shape[-1], q.dtype)
            dq = matmul_arrays(d_scores, k, out=dq)                         # (N, h, Tq, d)
        if need_k:
            dk = _heads_buffer(xp, k, k.shape[-2], k.shape[-1], k.dtype)
            dk = matmul_arrays(xp.swapaxes(d_scores, -1, -2), q, out=dk)     # (N, h, Tk, d)
        return dq, dk, dv


def _array(t):
    return t.data if isinstance(t, Tensor) else t


def scaled_dot_product_attention(q, k, v, causal=False, mask=None, scale=None,
                                 return_scores=False):
    """softmax(q k^T * scale, masked) v, heads first: q (N, h, Tq, d), k (N, h, Tk, d),
    v (N, h, Tk, dv) -> (N, h, Tq, dv).

    mask: boolean, broadcastable to (N, h, Tq, Tk), True = may attend (never differentiated).
    causal: query i sees keys j <= i + Tk - Tq (see the module docstring). scale: 1/sqrt(d) when
    None. return_scores=True also returns the attention probabilities (N, h, Tq, Tk) after the
    mask, as Keras's return_attention_scores; they are differentiable too.
    """
    mask = _array(mask)
    return ScaledDotProductAttention.apply(q, k, v, causal=causal, mask=mask, scale=scale,
                                           return_scores=return_scores)


class ProjectHeads(Function):
    """(N, T, d_in) with kernel (d_in, h, dim) and bias (h, dim) -> (N, h, T, dim)."""

    def forward(self, x, kernel, bias):
        xp = get_array_module(x, kernel)
        if x.ndim != 3 or kernel.ndim != 3 or x.shape[-1] != kernel.shape[0]:
            raise ValueError(f"project_heads: x {tuple(x.shape)} must be (batch, positions, "
                             f"{kernel.shape[0] if kernel.ndim == 3 else 'd'}) and kernel "
                             f"{tuple(kernel.shape)} (d, heads, dim)")
        if bias is not None and bias.shape != kernel.shape[1:]:
            raise ValueError(f"project_heads: bias {tuple(bias.shape)} must be (heads, dim) = "
                             f"{tuple(kernel.shape[1:])}")
        n, t, d = x.shape
        _, heads, dim = kernel.shape
        x2 = x.reshape(n * t, d)
        y = matmul_arrays(x2, kernel.reshape(d, heads * dim))               # (N*T, h*dim)
        if bias is not None:
            y += bias.reshape(-1)
        if self.needs_input_grad[1]:
            self.x2 = x2
        if self.needs_input_grad[0]:
            self.kernel = kernel
        self.shape = (n, t, heads, dim)
        return y.reshape(n, t, heads, dim).transpose(0, 2, 1, 3)          # (N, h, T, dim) view

    def backward(self, g):
        xp = get_array_module(g)
        need_x, need_kernel, need_bias = self.needs_input_grad
        n, t, heads, dim = self.shape
        g2 = g.transpose(0, 2, 1, 3).reshape(n * t, heads * dim)          # (N*T, h*dim)
        dx = dkernel = dbias = None
        if need_x:
            d = self.kernel.shape[0]
            dx = matmul_arrays(g2, self.kernel.reshape(d, heads * dim).T).reshape(n, t, d)
        if need_kernel:
            dkernel = matmul_arrays(self.x2.T, g2).reshape(-1, heads, dim)  # (d, h, dim)
        if need_bias:
            dbias = g2.sum(axis=0).reshape(heads, dim)
        return dx, dkernel, dbias


class MergeHeads(Function):
    """(N, h, T, dv) with kernel (h, dv, d_out) and bias (d_out,) -> (N, T, d_out)."""

    def forward(self, o, kernel, bias):
        xp = get_array_module(o, kernel)
        if o.ndim != 4 or kernel.ndim != 3 or o.shape[1] != kernel.shape[0] \
                or o.shape[3] != kernel.shape[1]:
            raise ValueError(f"merge_heads: o {tuple(o.shape)} must be (batch, heads, positions, "
                             f"dv) and kernel {tuple(kernel.shape)} (heads, dv, d_out)")
        if bias is not None and bias.shape != kernel.shape[2:]:
            raise ValueError(f"merge_heads: bias {tuple(bias.shape)} must be (d_out,) = "
                             f"{tuple(kernel.shape[2:])}")
        n, heads, t, dv = o.shape
        o2 = o.transpose(0, 2, 1, 3).reshape(n * t, heads * dv)           # free for our views
        y = matmul_arrays(o2, kernel.reshape(heads * dv, -1))               # (N*T, d_out)
        if bias is not None:
            y += bias
        if self.needs_input_grad[1]:
            self.o2 = o2
        if self.needs_input_grad[0]:
            self.kernel = kernel
        self.shape = o.shape
        return y.reshape(n, t, -1)

    def backward(self, g):
        xp = get_array_module(g)
        need_o, need_kernel, need_bias = self.needs_input_grad
        n, heads, t, dv = self.shape
        g2 = g.reshape(n * t, -1)                                         # (N*T, d_out)
        do = dkernel = dbias = None
        if need_o:
            do = matmul_arrays(g2, self.kernel.reshape(heads * dv, -1).T)   # (N*T, h*dv)
            do = do.reshape(n, t, heads, dv).transpose(0, 2, 1, 3)
        if need_kernel:
            dkernel = matmul_arrays(self.o2.T, g2).reshape(heads, dv, -1)   # (h, dv, d_out)
        if need_bias:
            dbias = g2.sum(axis=0)
        return do, dkernel, dbias


def project_heads(x, kernel, bias=None):
    """Keras's EinsumDense "abc,cde->abde" then heads first: (N, T, d) -> (N, h, T, dim)."""
    return ProjectHeads.apply(x, kernel, bias)


def merge_heads(o, kernel, bias=None):
    """Keras's attention_output EinsumDense on heads-first input: (N, h, T, dv) -> (N, T, d_out)."""
    return MergeHeads.apply(o, kernel, bias)


def multi_head_attention(query, value, key, query_kernel, query_bias, key_kernel, key_bias,
                         value_kernel, value_bias, output_kernel, output_bias, causal=False,
                         mask=None, return_scores=False, cache=None):
    """Keras MultiHeadAttention's forward on (N, T, d) inputs; key=None means key = value.

    mask: Keras's attention_mask, boolean broadcastable to (N, Tq, Tk), True = may attend (the
    same for every head). causal: Keras's use_causal_mask. Biases may be None (use_bias=False).
    cache: None, or a dict carried from call to call for incremental decoding: the new keys and
    values are appended to cache["key"], cache["value"] and the queries attend over all of them
    (then Tk counts the cached positions too, and causal aligns the queries to the end).
    Returns (N, Tq, d_out), and the attention probabilities (N, h, Tq, Tk) with return_scores.
    """
    key = value if key is None else key
    q = project_heads(query, query_kernel, query_bias)                    # (N, h, Tq, k)
    k = project_heads(key, key_kernel, key_bias)                          # (N, h, Tk, k)
    v = project_heads(value, value_kernel, value_bias)                    # (N, h, Tk, dv)
    if cache is not None:
        if cache.get("key") is not None:
            k = concatenate([cache["key"], k], axis=2)
            v = concatenate([cache["value"], v], axis=2)
        cache["key"], cache["value"] = k, v
    if mask is not None:
        mask = _array(mask)
        mask = get_array_module(mask).asarray(mask, dtype=bool)[..., None, :, :]  # heads axis
    attended = scaled_dot_product_attention(q, k, v, causal=causal, mask=mask,
                                            return_scores=return_scores)
    probs = None
    if return_scores:
        attended, probs = attended
    out = merge_heads(attended, output_kernel, output_bias)               # (N, Tq, d_out)
    return (out, probs) if return_scores else out
