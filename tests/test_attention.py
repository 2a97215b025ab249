"""ops.scaled_dot_product_attention and ops.multi_head_attention against einsum references
written from Keras's MultiHeadAttention (q scaled by 1/sqrt(key_dim), -1e9 on masked scores,
probabilities re-zeroed after the softmax), their gradients, and the key/value cache."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from micrograd_gen import Tensor, no_grad, ops
from strategies import arrays, check_op_gradient


def T64(a):
    return None if a is None else Tensor(a, dtype=np.float64)


def reference_attention(q, k, v, mask=None, causal=False):
    tq, tk = q.shape[-2], k.shape[-2]
    scores = np.einsum("nhqd,nhkd->nhqk", q / np.sqrt(q.shape[-1]), k)
    visible = np.ones(scores.shape, bool)
    if mask is not None:
        visible &= mask
    if causal:
        # query i is position i + (Tk - Tq): it sees keys j <= that (Keras's mask when Tq == Tk)
        visible &= np.arange(tk)[None, :] <= np.arange(tq)[:, None] + (tk - tq)
    scores = np.where(visible, scores, -1e9)
    probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    probs *= visible
    return np.einsum("nhqk,nhkd->nhqd", probs, v), probs


@st.composite
def attention_problems(draw):
    n, h = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    tq, tk = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    d, dv = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    q = draw(arrays((n, h, tq, d), bound=2.0))
    k = draw(arrays((n, h, tk, d), bound=2.0))
    v = draw(arrays((n, h, tk, dv), bound=2.0))
    mask_shape = draw(st.sampled_from([None, (n, 1, tq, tk), (n, h, tq, tk), (tq, tk), (tk,)]))
    mask = None
    if mask_shape is not None:
        mask = np.array(draw(st.lists(st.booleans(), min_size=int(np.prod(mask_shape)),
                                      max_size=int(np.prod(mask_shape))))).reshape(mask_shape)
    return q, k, v, mask, draw(st.booleans())


@given(problem=attention_problems())
def test_attention_forward_float64(problem):
    q, k, v, mask, causal = problem
    out, probs = ops.scaled_dot_product_attention(T64(q), T64(k), T64(v), causal=causal,
                                                  mask=mask, return_scores=True)
    expected, expected_probs = reference_attention(q, k, v, mask, causal)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(probs.numpy(), expected_probs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_forward_float32(causal):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 2, 9, 16)).astype(np.float32) for _ in range(3))
    mask = rng.random((2, 1, 9, 9)) > 0.2
    out = ops.scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v), causal=causal,
                                           mask=mask)
    assert out.dtype == np.float32
    expected, _ = reference_attention(*(a.astype(np.float64) for a in (q, k, v)), mask, causal)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@given(problem=attention_problems(), return_scores=st.booleans())
def test_attention_gradient(problem, return_scores):
    q, k, v, mask, causal = problem

    def fn(q, k, v):
        result = ops.scaled_dot_product_attention(q, k, v, causal=causal, mask=mask,
                                                  return_scores=return_scores)
        if not return_scores:
            return result
        out, probs = result  # both outputs carry a gradient
        return ops.concatenate([ops.reshape(out, (-1,)), ops.reshape(probs, (-1,))])

    check_op_gradient(fn, q, k, v)


def test_fully_masked_query_gets_zero_output_and_gradient():
    rng = np.random.default_rng(1)
    q, k, v = (Tensor(rng.standard_normal((1, 1, 3, 2)), requires_grad=True, dtype=np.float64)
               for _ in range(3))
    mask = np.ones((3, 3), bool)
    mask[1] = False  # query 1 may see nothing
    out = ops.scaled_dot_product_attention(q, k, v, mask=mask)
    np.testing.assert_array_equal(out.numpy()[0, 0, 1], 0)
    out.sum().backward()
    np.testing.assert_array_equal(q.grad[0, 0, 1], 0)


def test_causal_mask_is_keras_lower_triangle_for_equal_lengths():
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((1, 1, 5, 3)) for _ in range(3))
    _, probs = ops.scaled_dot_product_attention(T64(q), T64(k), T64(v), causal=True,
                                                return_scores=True)
    assert (probs.numpy()[0, 0][np.triu_indices(5, 1)] == 0).all()
    assert (probs.numpy()[0, 0][np.tril_indices(5)] > 0).all()


def test_attention_errors_name_the_op():
    q = Tensor(np.zeros((1, 2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="scaled_dot_product_attention: q"):
        ops.scaled_dot_product_attention(q, Tensor(np.zeros((1, 2, 3, 5), np.float32)),
                                         Tensor(np.zeros((1, 2, 3, 5), np.float32)))
    with pytest.raises(ValueError, match="scaled_dot_product_attention: mask"):
        ops.scaled_dot_product_attention(q, q, q, mask=np.ones((2, 2), bool))


# ---- multi-head attention with Keras's weight layouts ------------------------------------------

def reference_mha(query, value, key, weights, mask=None, causal=False):
    """Keras MultiHeadAttention._compute_attention, written with its own einsum equations."""
    wq, bq, wk, bk, wv, bv, wo, bo = weights
    q = np.einsum("abc,cde->abde", query, wq) + bq                      # (B, T, n, k)
    k = np.einsum("abc,cde->abde", key, wk) + bk
    v = np.einsum("abc,cde->abde", value, wv) + bv
    q = q / np.sqrt(wq.shape[-1])
    scores = np.einsum("aecd,abcd->acbe", k, q)                          # (B, n, T, S)
    tq, tk = scores.shape[-2:]
    visible = np.ones(scores.shape, bool)
    if mask is not None:
        visible &= mask[:, None]
    if causal:
        visible &= np.tril(np.ones((tq, tk), bool))
    scores = scores + np.where(visible, 0.0, -1e9)
    probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs = probs / probs.sum(axis=-1, keepdims=True) * visible
    context = np.einsum("acbe,aecd->abcd", probs, v)                     # (B, T, n, v)
    return np.einsum("abcd,cde->abe", context, wo) + bo, probs


def random_mha_weights(rng, d, heads, key_dim, value_dim=None, d_out=None, scale=0.5):
    value_dim = value_dim or key_dim
    d_out = d_out or d
    shapes = [(d, heads, key_dim), (heads, key_dim), (d, heads, key_dim), (heads, key_dim),
              (d, heads, value_dim), (heads, value_dim), (heads, value_dim, d_out), (d_out,)]
    return [rng.standard_normal(s) * scale for s in shapes]


@st.composite
def mha_problems(draw):
    b, tq, tk = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    d, heads, key_dim = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    value_dim, d_out = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2 ** 16))
    rng = np.random.default_rng(seed)
    weights = random_mha_weights(rng, d, heads, key_dim, value_dim, d_out)
    query = rng.standard_normal((b, tq, d))
    value = rng.standard_normal((b, tk, d))
    key = rng.standard_normal((b, tk, d)) if draw(st.booleans()) else None
    mask = rng.random((b, tq, tk)) > 0.3 if draw(st.booleans()) else None
    causal = draw(st.booleans()) and tq == tk
    return query, value, key, weights, mask, causal


@given(problem=mha_problems())
def test_multi_head_attention_forward(problem):
    query, value, key, weights, mask, causal = problem
    out, probs = ops.multi_head_attention(T64(query), T64(value), T64(key),
                                          *[T64(w) for w in weights], causal=causal, mask=mask,
                                          return_scores=True)
    expected, expected_probs = reference_mha(query, value, value if key is None else key,
                                             weights, mask, causal)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(probs.numpy(), expected_probs, rtol=1e-10, atol=1e-12)


@given(problem=mha_problems())
def test_multi_head_attention_gradient(problem):
    query, value, key, weights, mask, causal = problem
    inputs = [query, value] + ([] if key is None else [key]) + weights

    def fn(query, value, *rest):
        rest = list(rest)
        k = rest.pop(0) if key is not None else None
        return ops.multi_head_attention(query, value, k, *rest, causal=causal, mask=mask)

    check_op_gradient(fn, *inputs)


def test_multi_head_attention_without_biases_float32():
    """use_bias=False, and the book's width (256, 2 heads of 256) in float32 at a short length."""
    rng = np.random.default_rng(3)
    weights = [w.astype(np.float32) for w in random_mha_weights(rng, 256, 2, 256, scale=0.05)]
    for i in (1, 3, 5, 7):
        weights[i] = None
    x = rng.standard_normal((2, 7, 256)).astype(np.float32)
    out = ops.multi_head_attention(Tensor(x), Tensor(x), None,
                                   *[None if w is None else Tensor(w) for w in weights],
                                   causal=True)
    assert out.dtype == np.float32 and out.shape == (2, 7, 256)
    zeros = lambda *s: np.zeros(s)  # noqa: E731
    full = [w.astype(np.float64) if w is not None else None for w in weights]
    full[1], full[3], full[5], full[7] = zeros(2, 256), zeros(2, 256), zeros(2, 256), zeros(256)
    expected, _ = reference_mha(x.astype(np.float64), x.astype(np.float64), x.astype(np.float64),
                                full, causal=True)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_project_and_merge_heads_layouts():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 5, 3))
    kernel, bias = rng.standard_normal((3, 4, 6)), rng.standard_normal((4, 6))
    heads = ops.project_heads(T64(x), T64(kernel), T64(bias))
    assert heads.shape == (2, 4, 5, 6)
    np.testing.assert_allclose(heads.numpy(), np.einsum("btd,dnk->bntk", x, kernel)
                               + bias[None, :, None], rtol=1e-12)
    out_kernel, out_bias = rng.standard_normal((4, 6, 7)), rng.standard_normal(7)
    merged = ops.merge_heads(heads, T64(out_kernel), T64(out_bias))
    np.testing.assert_allclose(merged.numpy(), np.einsum("bntk,nkd->btd", heads.numpy(),
                                                         out_kernel) + out_bias, rtol=1e-12)
    check_op_gradient(lambda x, k, b, ok, ob: ops.merge_heads(ops.project_heads(x, k, b), ok, ob),
                      x, kernel, bias, out_kernel, out_bias)


@pytest.mark.parametrize("chunks", [[1] * 6, [2, 1, 3], [6]])
def test_key_value_cache_matches_full_causal_attention(chunks):
    """Feeding positions a few at a time with a cache gives the full causal self-attention."""
    rng = np.random.default_rng(5)
    weights = [T64(w) for w in random_mha_weights(rng, 4, 2, 3)]
    x = rng.standard_normal((2, sum(chunks), 4))
    full = ops.multi_head_attention(T64(x), T64(x), None, *weights, causal=True).numpy()
    cache, outputs, start = {}, [], 0
    with no_grad():
        for size in chunks:
            new = T64(x[:, start:start + size])
            outputs.append(ops.multi_head_attention(new, new, None, *weights, causal=True,
                                                    cache=cache).numpy())
            start += size
            assert cache["key"].shape == (2, 2, start, 3)
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), full, rtol=1e-10, atol=1e-12)


def test_one_query_against_cached_keys():
    """scaled_dot_product_attention with Tq = 1: the new position sees every cached key."""
    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal((1, 2, 6, 3)) for _ in range(3))
    full = ops.scaled_dot_product_attention(T64(q), T64(k), T64(v), causal=True).numpy()
    last = ops.scaled_dot_product_attention(T64(q[:, :, -1:]), T64(k), T64(v), causal=True)
    np.testing.assert_allclose(last.numpy(), full[:, :, -1:], rtol=1e-12)
