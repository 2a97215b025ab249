"""The layer-call path that a generator runs hundreds of times a second: Layer.__call__'s common
case (one tensor or array, no keywords) against the general one, accel/dense.py's Dense without
gradients against the three reference ops, and the book's whole generation loop on both paths at
the book's sizes."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import micrograd_gen as mg
from micrograd_gen import Tensor, nn, no_grad
from micrograd_gen.accel import dense as accel_dense
from micrograd_gen.nn.base import KerasTensor
from strategies import arrays


# ---- Layer.__call__: one tensor or array in ------------------------------------------------------
def test_a_raw_array_becomes_a_tensor_of_the_layers_dtype_on_both_call_paths():
    """A float array is cast to the layer's dtype whether it comes alone (the common path) or
    inside a list (the general path); an integer array keeps its dtype."""
    seen = []

    class Probe(nn.Layer):
        def call(self, x):
            seen.append(x)
            return x

    class ListProbe(nn.Layer):
        def call(self, xs):
            seen.append(xs[0])
            return xs[0]

    for dtype in ("float32", "float64"):
        seen.clear()
        Probe(dtype=dtype)(np.ones((2, 3), np.float64))
        ListProbe(dtype=dtype)([np.ones((2, 3), np.float64)])
        Probe(dtype=dtype)(np.ones((2, 3), np.int64))
        assert [type(t) for t in seen] == [Tensor] * 3
        assert [t.dtype for t in seen] == [np.dtype(dtype)] * 2 + [np.dtype(np.int64)]
    tensor = Tensor(np.ones((2, 3), np.float64), dtype=np.float64)
    assert Probe()(tensor) is tensor                   # a tensor is passed on as it is


def test_the_common_call_resolves_training_and_names_its_output_and_its_errors():
    layer = nn.Dropout(0.5, seed=1)
    x = np.ones((4, 50), np.float32)
    assert np.array_equal(layer(x).numpy(), x)                        # inference by default
    assert not np.array_equal(layer(x, training=True).numpy(), x)
    model = nn.Sequential([nn.Dense(3, name="inner"), nn.Dropout(0.5, seed=2)], name="outer")
    out = model(Tensor(np.ones((4, 5), np.float32)), training=True)    # reaches the Dropout
    assert (out.numpy() == 0).any()
    assert model.output_shape == (4, 3) and model.stack[0].output_shape == (4, 3)
    assert out.name == model.stack[1].name       # recorded: named after the layer that made it
    with no_grad():
        assert model(np.ones((4, 5), np.float32)).name is None        # nothing recorded
    with pytest.raises(ValueError, match=r"Sequential 'outer': Dense 'inner': .*last axis 5"):
        model(np.ones((4, 6), np.float32))


def test_a_placeholder_still_takes_the_symbolic_path():
    x = nn.Input((5,))
    y = nn.Dense(3)(x)
    assert isinstance(y, KerasTensor) and y.shape == (None, 3)
    model = nn.Model(x, y)
    assert model(np.ones((2, 5), np.float32)).shape == (2, 3)


# ---- Dense without gradients (accel/dense.py) ----------------------------------------------------
@st.composite
def dense_problems(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n, d, units = draw(st.integers(1, 5)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    x = draw(arrays((n, d), bound=3.0)).astype(dtype)
    kernel = draw(arrays((d, units), bound=2.0)).astype(dtype)
    bias = draw(arrays((units,), bound=2.0)).astype(dtype) if draw(st.booleans()) else None
    activation = draw(st.sampled_from([None, "linear", "softmax", "relu"]))
    return x, kernel, bias, activation


def _dense_output(x, kernel, bias, activation, fast):
    layer = nn.Dense(kernel.shape[1], activation=activation, use_bias=bias is not None,
                     dtype=kernel.dtype)
    layer.build((None, kernel.shape[0]))
    layer.kernel.data[...] = kernel
    if bias is not None:
        layer.bias.data[...] = bias
    with mg.fast_paths(fast), no_grad():
        return layer(Tensor(x, dtype=x.dtype))


@settings(max_examples=60, deadline=None)
@given(problem=dense_problems())
def test_fast_dense_equals_the_reference_ops_exactly(problem):
    """The same NumPy operations in the same order: the same bits, and a Tensor without history."""
    fast = _dense_output(*problem, fast=True)
    reference = _dense_output(*problem, fast=False)
    assert fast.dtype == reference.dtype == problem[0].dtype
    np.testing.assert_array_equal(fast.numpy(), reference.numpy())
    assert fast._ctx is None and not fast.requires_grad


def test_fast_dense_serves_only_calls_without_gradients_on_2d_numpy_floats():
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((2, 4)).astype(np.float32))
    kernel, bias = Tensor(rng.standard_normal((4, 3)).astype(np.float32)), Tensor(np.ones(3))
    assert isinstance(accel_dense.dense(x, kernel, bias, softmax=True), Tensor)
    kernel.requires_grad = True
    assert accel_dense.dense(x, kernel, bias, softmax=True) is NotImplemented   # wants dK
    with no_grad():
        assert isinstance(accel_dense.dense(x, kernel, bias, softmax=True), Tensor)
        assert accel_dense.dense(Tensor(x.numpy()[None]), kernel, bias, True) is NotImplemented
        assert accel_dense.dense(Tensor(x.numpy(), dtype=np.float64), kernel, bias,
                                 True) is NotImplemented               # mixed dtypes
        assert accel_dense.dense(Tensor(np.ones((2, 4), np.int64)), kernel, None,
                                 False) is NotImplemented


def test_dense_with_gradients_still_records_and_differentiates():
    """Training goes through the reference ops: the fast path must not swallow the history."""
    rng = np.random.default_rng(4)
    layer = nn.Dense(3, activation="softmax")
    x = Tensor(rng.standard_normal((2, 4)), dtype=np.float32)
    out = layer(x)
    assert out._ctx is not None
    (out * Tensor(rng.standard_normal((2, 3)).astype(np.float32))).sum().backward()
    assert layer.kernel.grad is not None and np.abs(layer.kernel.grad).sum() > 0
    assert layer.bias.grad is not None


# ---- the book's generation loop at the book's sizes ----------------------------------------------
def test_the_book_model_gives_the_same_probabilities_and_text_on_both_paths():
    """LSTM(128) -> Dense(57, softmax) on one-hot windows of 60: the fast path (batch-1 loop,
    Layer.__call__'s common path, fast Dense) against the reference, probabilities to float32
    rounding and the same 40 sampled characters for the same random state."""
    from micrograd_gen.data.text import CharVocabulary
    from micrograd_gen.generative.char_lstm import book_generate, build_char_lstm
    vocab = CharVocabulary([chr(32 + i) for i in range(57)])
    nn.set_seed(8)
    model = build_char_lstm(len(vocab))
    rng = np.random.default_rng(9)
    # a model that prefers some characters, not a near-uniform one; at larger scales the gates
    # saturate and the fast sigmoid's absolute (not relative) float32 error is amplified over the
    # 60 steps (accel/lstm.py's _infer_one; test_lstm.py bounds it on drawn problems)
    for w in model.weights:
        w.data[...] = (rng.standard_normal(w.shape) * 0.2).astype(np.float32)
    window = np.eye(57, dtype=np.float32)[rng.integers(0, 57, 60)][None]
    probabilities = []
    for fast in (True, False):
        with mg.fast_paths(fast), no_grad():
            probabilities.append(model(window).numpy())
    np.testing.assert_allclose(probabilities[0], probabilities[1], rtol=1e-5, atol=1e-8)
    seed = "".join(vocab.chars[i] for i in rng.integers(0, 57, 60))
    texts = []
    for fast in (True, False):
        with mg.fast_paths(fast):
            texts.append(book_generate(model, vocab, seed, 40, 0.5, np.random.RandomState(10)))
    assert texts[0] == texts[1] and len(set(texts[0])) > 5
