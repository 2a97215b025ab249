"""MultiHeadAttention with Keras's weights (see ../shared/KERAS.md).

On model width d with n heads: query/key kernels (d, n, key_dim), value kernel (d, n, value_dim),
their biases (n, dim); output kernel (n, value_dim, d_out), bias (d_out,). The query is scaled by
1/sqrt(key_dim) before the scores, softmax runs over the key axis, and masked positions get -1e9
before the softmax and 0 after it (Keras's masked softmax). The causal mask lets query t see keys
s <= t.
"""
from .. import ops
from ..tensor import Tensor
from . import arguments
from .base import Layer, _shape_of


class MultiHeadAttention(Layer):
    """Called as mha(query, value, key=None, attention_mask=None, use_causal_mask=False,
    return_attention_scores=False); inputs are (batch, positions, features)."""

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True,
                 output_shape=None, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 **kwargs):
        super().__init__(**kwargs)
        self.num_heads = arguments.positive_int(self, "num_heads", num_heads)
        self.key_dim = arguments.positive_int(self, "key_dim", key_dim)
        self.value_dim = (arguments.positive_int(self, "value_dim", value_dim)
                          if value_dim is not None else self.key_dim)
        self.dropout = arguments.rate(self, "dropout", dropout)
        self.use_bias = use_bias
        if output_shape is not None and not isinstance(output_shape, int):
            output_shape = tuple(output_shape)
            if len(output_shape) != 1:
                raise ValueError(f"MultiHeadAttention '{self.name}': only a single output axis "
                                 f"is supported, got output_shape={output_shape}")
            output_shape = output_shape[0]
        if output_shape is not None:
            output_shape = arguments.positive_int(self, "output_shape", output_shape)
        self._output_dim = output_shape
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer

    def _build_from_call(self, args, kwargs):
        query = args[0] if args else kwargs.get("query")
        value = args[1] if len(args) > 1 else kwargs.get("value")
        if query is None or value is None:
            raise TypeError(f"MultiHeadAttention '{self.name}' is called as mha(query, value, "
                            f"key=None, ...): value is missing")
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

    def _mask(self, query, value, attention_mask, use_causal_mask, cached):
        """(mask, causal) for the op: a boolean (B or 1, T, S) mask, True = may attend."""
        t, s = query.shape[1], value.shape[1]
        mask = None
        if attention_mask is not None:
            m = attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask
            mask = query.xp.asarray(m).astype(bool)
            if mask.ndim == 2:
                mask = mask[None]
            if mask.ndim != 3 or mask.shape[-2:] != (t, s + cached):
                raise ValueError(f"MultiHeadAttention '{self.name}': attention_mask of shape "
                                 f"{tuple(m.shape)} does not fit {t} queries x {s + cached} keys")
        if use_causal_mask and t != s and not cached:
            # Keras's causal mask is j <= i counted from the first position, also when there are
            # more keys than queries (the op would align the queries with the last keys).
            causal = query.xp.tri(t, s, dtype=bool)[None]
            return (causal if mask is None else mask & causal), False
        return mask, use_causal_mask

    def call(self, query, value, key=None, attention_mask=None, use_causal_mask=False,
             return_attention_scores=False, training=None, cache=None):
        """cache: a dict kept between calls for incremental decoding (see
        micrograd_gen.ops.multi_head_attention): new keys and values are appended to it."""
        cached = 0 if not cache or cache.get("key") is None else cache["key"].shape[2]
        mask, causal = self._mask(query, value, attention_mask, use_causal_mask, cached)
        weights = (self.query_kernel, self.query_bias, self.key_kernel, self.key_bias,
                   self.value_kernel, self.value_bias, self.output_kernel, self.output_bias)
        if not (training and self.dropout > 0):
            return ops.multi_head_attention(query, value, key, *weights, causal=causal, mask=mask,
                                            return_scores=return_attention_scores, cache=cache)
        # Training with dropout: Keras drops attention probabilities, so the attention is
        # spelled out around the op that gives the probabilities.
        if cache is not None:
            raise ValueError(f"MultiHeadAttention '{self.name}': cache is for inference, not "
                             "for training with dropout")
        key = value if key is None else key
        q = ops.project_heads(query, self.query_kernel, self.query_bias)    # (B, n, T, k)
        k = ops.project_heads(key, self.key_kernel, self.key_bias)          # (B, n, S, k)
        v = ops.project_heads(value, self.value_kernel, self.value_bias)    # (B, n, S, v)
        _, probs = ops.scaled_dot_product_attention(
            q, k, v, causal=causal, mask=None if mask is None else mask[:, None],
            return_scores=True)                                             # (B, n, T, S)
        dropped = ops.dropout(probs, self.dropout, training=True, rng=self._rng_for_layer())
        context = ops.matmul(dropped, v)                                    # (B, n, T, v)
        out = ops.merge_heads(context, self.output_kernel, self.output_bias)  # (B, T, d_out)
        return (out, probs) if return_attention_scores else out

    def compute_output_shape(self, query_shape, value_shape=None, key_shape=None):
        out_dim = self._output_dim or query_shape[-1]
        return tuple(query_shape[:-1]) + (out_dim,)
