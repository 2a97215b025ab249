"""MultiHeadAttention with Keras's weights (see ../shared/KERAS.md).

On model width d with n heads: query/key kernels (d, n, key_dim), value kernel (d, n, value_dim),
their biases (n, dim); output kernel (n, value_dim, d_out), bias (d_out,). The query is scaled by
1/sqrt(key_dim) before the scores, softmax runs over the key axis, and masked positions get -1e9
before the softmax and 0 after it (Keras's masked softmax). The causal mask lets query t see keys
s <= t.
"""
import numpy as np

from .. import ops
from ..tensor import Tensor
from .base import Layer, _shape_of


class MultiHeadAttention(Layer):
    """Called as mha(query, value, key=None, attention_mask=None, use_causal_mask=False,
    return_attention_scores=False); inputs are (batch, positions, features)."""

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True,
                 output_shape=None, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.key_dim = int(num_heads), int(key_dim)
        self.value_dim = int(value_dim) if value_dim is not None else self.key_dim
        self.dropout, self.use_bias = float(dropout), use_bias
        if output_shape is not None and not isinstance(output_shape, int):
            output_shape = tuple(output_shape)
            if len(output_shape) != 1:
                raise ValueError(f"MultiHeadAttention '{self.name}': only a single output axis "
                                 f"is supported, got output_shape={output_shape}")
            output_shape = output_shape[0]
        self._output_dim = output_shape
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer

    def _build_from_call(self, args, kwargs):
        query = args[0] if args else kwargs["query"]
        value = args[1] if len(args) > 1 else kwargs["value"]
        key = args[2] if len(args) > 2 else kwargs.get("key")
        self.build(_shape_of(query), _shape_of(value), None if key is None else _shape_of(key))

    def build(self, query_shape, value_shape=None, key_shape=None):
        value_shape = query_shape if value_shape is None else value_shape
        key_shape = value_shape if key_shape is None else key_shape
        for what, shape in (("query", query_shape), ("value", value_shape), ("key", key_shape)):
            if len(shape) != 3 or shape[-1] is None:
                raise ValueError(f"MultiHeadAttention '{self.name}': {what} must be (batch, "
                                 f"positions, features) with known features, got {tuple(shape)}")
        n, k, v = self.num_heads, self.key_dim, self.value_dim
        out_dim = self._output_dim or query_shape[-1]
        self.output_dim = out_dim
        # Keras 3's creation order: query, key, value, then the output projection.
        self.query_kernel = self.add_weight("query/kernel", (query_shape[-1], n, k),
                                            self.kernel_initializer)
        self.query_bias = self._bias("query/bias", (n, k))
        self.key_kernel = self.add_weight("key/kernel", (key_shape[-1], n, k),
                                          self.kernel_initializer)
        self.key_bias = self._bias("key/bias", (n, k))
        self.value_kernel = self.add_weight("value/kernel", (value_shape[-1], n, v),
                                            self.kernel_initializer)
        self.value_bias = self._bias("value/bias", (n, v))
        self.output_kernel = self.add_weight("attention_output/kernel", (n, v, out_dim),
                                             self.kernel_initializer)
        self.output_bias = self._bias("attention_output/bias", (out_dim,))

    def _bias(self, name, shape):
        return self.add_weight(name, shape, self.bias_initializer) if self.use_bias else None

    @staticmethod
    def _project(x, kernel, bias):
        """(B, T, d) with kernel (d, n, k) -> (B, n, T, k)."""
        d, n, k = kernel.shape
        y = ops.matmul(x, ops.reshape(kernel, (d, n * k)))                   # (B, T, n*k)
        if bias is not None:
            y = y + ops.reshape(bias, (n * k,))
        y = ops.reshape(y, (x.shape[0], x.shape[1], n, k))                   # (B, T, n, k)
        return ops.transpose(y, (0, 2, 1, 3))                                # (B, n, T, k)

    def _mask(self, query, value, attention_mask, use_causal_mask):
        """Boolean (B or 1, 1, T, S) where True means "may attend", or None."""
        t, s = query.shape[1], value.shape[1]
        mask = None
        if attention_mask is not None:
            m = attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask
            m = query.xp.asarray(m).astype(bool)
            if m.ndim == 2:          # (T, S)
                m = m[None]
            if m.shape[-2:] != (t, s):
                raise ValueError(f"MultiHeadAttention '{self.name}': attention_mask of shape "
                                 f"{tuple(m.shape)} does not fit queries {t} x keys {s}")
            mask = m[:, None]        # (B, 1, T, S): the same mask for every head
        if use_causal_mask:
            causal = query.xp.tril(query.xp.ones((t, s), dtype=bool))[None, None]
            mask = causal if mask is None else mask & causal
        return mask

    def call(self, query, value, key=None, attention_mask=None, use_causal_mask=False,
             return_attention_scores=False, training=None):
        key = value if key is None else key
        q = self._project(query, self.query_kernel, self.query_bias)        # (B, n, T, k)
        k = self._project(key, self.key_kernel, self.key_bias)              # (B, n, S, k)
        v = self._project(value, self.value_kernel, self.value_bias)        # (B, n, S, v)
        mask = self._mask(query, value, attention_mask, use_causal_mask)
        q = q * (1.0 / np.sqrt(self.key_dim))
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))              # (B, n, T, S)
        if mask is not None:
            large_negative = scores.xp.asarray(-1e9, scores.dtype)
            scores = scores + scores.xp.where(mask, scores.dtype.type(0), large_negative)
        probs = ops.softmax(scores, axis=-1)
        if mask is not None:
            probs = probs * mask.astype(probs.dtype)  # a fully masked row gives zeros, not 1/S
        weights = probs
        if training and self.dropout > 0:
            weights = ops.dropout(probs, self.dropout, training=True, rng=self._rng_for_layer())
        context = ops.matmul(weights, v)                                    # (B, n, T, v)
        context = ops.transpose(context, (0, 2, 1, 3))                      # (B, T, n, v)
        b, t = context.shape[0], context.shape[1]
        n, dv = self.num_heads, self.value_dim
        out = ops.matmul(ops.reshape(context, (b, t, n * dv)),
                         ops.reshape(self.output_kernel, (n * dv, self.output_dim)))
        if self.output_bias is not None:
            out = out + self.output_bias                                    # (B, T, d_out)
        return (out, probs) if return_attention_scores else out

    def compute_output_shape(self, query_shape, value_shape=None, key_shape=None):
        out_dim = self._output_dim or query_shape[-1]
        return tuple(query_shape[:-1]) + (out_dim,)
