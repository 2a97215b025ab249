"""ops.lstm and ops.lstm_step against a step-by-step NumPy LSTM written from Keras's equations
(gate order i, f, c, o; sigmoid recurrent activation; tanh), and their gradients by finite
differences in float64."""
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from micrograd_gen import Tensor, no_grad, ops
from strategies import arrays, check_op_gradient


def reference_lstm(x, kernel, recurrent_kernel, bias, h0=None, c0=None):
    """Keras's LSTM, one step at a time: returns (every h as (N, T, U), h_T, c_T)."""
    n, steps, _ = x.shape
    u = recurrent_kernel.shape[0]
    h = np.zeros((n, u), x.dtype) if h0 is None else h0
    c = np.zeros((n, u), x.dtype) if c0 is None else c0
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    hs = []
    for t in range(steps):
        z = x[:, t] @ kernel + h @ recurrent_kernel + (0 if bias is None else bias)
        i, f = sigmoid(z[:, :u]), sigmoid(z[:, u:2 * u])
        g, o = np.tanh(z[:, 2 * u:3 * u]), sigmoid(z[:, 3 * u:])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs.append(h)
    return np.stack(hs, axis=1), h, c


def random_lstm(rng, n, steps, d, u, scale=0.5, dtype=np.float64):
    draw = lambda *shape: (rng.standard_normal(shape) * scale).astype(dtype)  # noqa: E731
    return draw(n, steps, d), draw(d, 4 * u), draw(u, 4 * u), draw(4 * u), draw(n, u), draw(n, u)


def T64(a):
    return None if a is None else Tensor(a, dtype=np.float64)


@st.composite
def lstm_problems(draw):
    n = draw(st.integers(1, 3))
    steps = draw(st.integers(1, 5))
    d = draw(st.integers(1, 4))
    u = draw(st.integers(1, 4))
    x = draw(arrays((n, steps, d), bound=1.5))
    kernel = draw(arrays((d, 4 * u), bound=1.0))
    recurrent = draw(arrays((u, 4 * u), bound=1.0))
    bias = draw(st.one_of(st.none(), arrays((4 * u,), bound=1.0)))
    state = draw(st.one_of(st.none(), st.tuples(arrays((n, u), bound=1.0),
                                                 arrays((n, u), bound=1.0))))
    return x, kernel, recurrent, bias, state


@given(problem=lstm_problems(), return_sequences=st.booleans())
def test_lstm_forward_matches_step_loop_float64(problem, return_sequences):
    x, kernel, recurrent, bias, state = problem
    h0, c0 = (None, None) if state is None else state
    out, h, c = ops.lstm(T64(x), T64(kernel), T64(recurrent), T64(bias),
                         initial_state=None if state is None else (T64(h0), T64(c0)),
                         return_sequences=return_sequences, return_state=True)
    seq, h_ref, c_ref = reference_lstm(x, kernel, recurrent, bias, h0, c0)
    expected = seq if return_sequences else h_ref
    assert out.shape == expected.shape and out.dtype == np.float64
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h.numpy(), h_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c.numpy(), c_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("return_sequences", [False, True])
def test_lstm_forward_float32(return_sequences):
    """float32 against the float64 loop on the same values: 1e-5 of the output's scale."""
    rng = np.random.default_rng(1)
    x, kernel, recurrent, bias, h0, c0 = random_lstm(rng, 8, 20, 7, 16, dtype=np.float32)
    out = ops.lstm(Tensor(x), Tensor(kernel), Tensor(recurrent), Tensor(bias),
                   initial_state=(Tensor(h0), Tensor(c0)), return_sequences=return_sequences)
    assert out.dtype == np.float32
    seq, h_ref, _ = reference_lstm(*(a.astype(np.float64) for a in (x, kernel, recurrent, bias,
                                                                     h0, c0)))
    expected = seq if return_sequences else h_ref
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_lstm_saturated_gates_stay_finite():
    """Pre-activations far beyond exp's range: sigmoid goes to exactly 0 or 1, never nan."""
    rng = np.random.default_rng(2)
    x, kernel, recurrent, bias, _, _ = random_lstm(rng, 2, 4, 3, 2, scale=200.0, dtype=np.float32)
    with np.errstate(all="raise"):  # and no floating-point warning escapes
        out = ops.lstm(Tensor(x), Tensor(kernel), Tensor(recurrent), Tensor(bias),
                       return_sequences=True)
    assert np.isfinite(out.numpy()).all()
    with np.errstate(over="ignore"):
        seq, _, _ = reference_lstm(*(a.astype(np.float64) for a in (x, kernel, recurrent, bias)))
    np.testing.assert_allclose(out.numpy(), seq, atol=1e-5)


@given(problem=lstm_problems(), return_sequences=st.booleans())
def test_lstm_gradient(problem, return_sequences):
    """Every input (x, the three weights, h0, c0) and all three outputs at once."""
    x, kernel, recurrent, bias, state = problem
    inputs = [x, kernel, recurrent] + ([] if bias is None else [bias]) + \
        ([] if state is None else list(state))

    def fn(*tensors):
        x, kernel, recurrent = tensors[:3]
        rest = list(tensors[3:])
        b = rest.pop(0) if bias is not None else None
        initial = (rest[0], rest[1]) if state is not None else None
        out, h, c = ops.lstm(x, kernel, recurrent, b, initial_state=initial,
                             return_sequences=return_sequences, return_state=True)
        return ops.concatenate([ops.reshape(out, (-1,)), ops.reshape(h, (-1,)),
                                ops.reshape(c, (-1,))])

    check_op_gradient(fn, *inputs)


def test_lstm_gradient_long_sequence():
    """Backward through 30 steps, where a wrong recurrence would compound."""
    rng = np.random.default_rng(3)
    x, kernel, recurrent, bias, h0, c0 = random_lstm(rng, 2, 30, 3, 4)

    def fn(x, kernel, recurrent, bias, h0, c0):
        return ops.lstm(x, kernel, recurrent, bias, initial_state=(h0, c0), return_sequences=True)

    check_op_gradient(fn, x, kernel, recurrent, bias, h0, c0, directions=4)


def test_lstm_frozen_weights_give_only_the_input_gradient():
    rng = np.random.default_rng(4)
    x, kernel, recurrent, bias, _, _ = random_lstm(rng, 3, 6, 4, 5)
    xt = Tensor(x, requires_grad=True, dtype=np.float64)
    frozen = [T64(kernel), T64(recurrent), T64(bias)]
    ops.lstm(xt, *frozen).sum().backward()
    assert all(w.grad is None for w in frozen)
    full = Tensor(x, requires_grad=True, dtype=np.float64)
    weights = [Tensor(w, requires_grad=True, dtype=np.float64) for w in (kernel, recurrent, bias)]
    ops.lstm(full, *weights).sum().backward()
    np.testing.assert_allclose(xt.grad, full.grad, rtol=1e-12)


def test_lstm_float32_gradient():
    """The float32 path, with float32 finite differences."""
    rng = np.random.default_rng(5)
    x, kernel, recurrent, bias, h0, c0 = random_lstm(rng, 3, 6, 4, 5)

    def fn(x, kernel, recurrent, bias):
        return ops.lstm(x, kernel, recurrent, bias, return_sequences=True)

    check_op_gradient(fn, x, kernel, recurrent, bias, dtype=np.float32)


def test_lstm_step_matches_lstm():
    rng = np.random.default_rng(6)
    x, kernel, recurrent, bias, h0, c0 = random_lstm(rng, 2, 7, 5, 3, dtype=np.float32)
    seq, h_ref, c_ref = ops.lstm(Tensor(x), Tensor(kernel), Tensor(recurrent), Tensor(bias),
                                 initial_state=(Tensor(h0), Tensor(c0)), return_sequences=True,
                                 return_state=True)
    h, c = Tensor(h0), Tensor(c0)
    with no_grad():
        for t in range(x.shape[1]):
            h, c = ops.lstm_step(Tensor(x[:, t]), h, c, Tensor(kernel), Tensor(recurrent),
                                 Tensor(bias))
            np.testing.assert_allclose(h.numpy(), seq.numpy()[:, t], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c.numpy(), c_ref.numpy(), rtol=1e-5, atol=1e-6)
    # a zero state may be given as None
    h1, c1 = ops.lstm_step(x[:, 0], None, None, Tensor(kernel), Tensor(recurrent), Tensor(bias))
    first = ops.lstm(Tensor(x[:, :1]), Tensor(kernel), Tensor(recurrent), Tensor(bias))
    np.testing.assert_allclose(h1.numpy(), first.numpy(), rtol=1e-5, atol=1e-6)


def test_lstm_step_gradient():
    rng = np.random.default_rng(7)
    x, kernel, recurrent, bias, h0, c0 = random_lstm(rng, 2, 1, 3, 4)

    def fn(x, h, c, kernel, recurrent, bias):
        h, c = ops.lstm_step(x[:, 0], h, c, kernel, recurrent, bias)
        return ops.concatenate([h, c], axis=1)

    check_op_gradient(fn, x, h0, c0, kernel, recurrent, bias)


def test_lstm_step_is_cheap_enough_for_generation():
    """The text generator carries the state one character at a time: 400 steps of the book's
    model (57 inputs, 128 units, batch 1) must cost well under the 40 ms budget; 10x slack here
    because other jobs share the machine."""
    rng = np.random.default_rng(8)
    kernel, recurrent, bias = (Tensor(rng.standard_normal(s).astype(np.float32) * 0.1)
                               for s in ((57, 512), (128, 512), (512,)))
    x = np.zeros((1, 57), np.float32)
    h = c = None
    with no_grad():
        ops.lstm_step(x, h, c, kernel, recurrent, bias)
        start = time.perf_counter()
        for i in range(400):
            x[:] = 0
            x[0, i % 57] = 1
            h, c = ops.lstm_step(x, h, c, kernel, recurrent, bias)
        elapsed = time.perf_counter() - start
    print(f"lstm_step: 400 steps in {elapsed * 1e3:.1f} ms")
    assert elapsed < 0.4


def test_lstm_shape_errors_name_the_op():
    x = Tensor(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="lstm: kernel"):
        ops.lstm(x, Tensor(np.zeros((5, 8), np.float32)), Tensor(np.zeros((2, 8), np.float32)),
                 None)
    with pytest.raises(ValueError, match="lstm: x"):
        ops.lstm(Tensor(np.zeros((2, 4), np.float32)), Tensor(np.zeros((4, 8), np.float32)),
                 Tensor(np.zeros((2, 8), np.float32)), None)
    with pytest.raises(ValueError, match="initial state h0"):
        ops.lstm(x, Tensor(np.zeros((4, 8), np.float32)), Tensor(np.zeros((2, 8), np.float32)),
                 None, initial_state=(Tensor(np.zeros((3, 2), np.float32)),
                                      Tensor(np.zeros((2, 2), np.float32))))


def test_lstm_backward_leaves_the_incoming_gradients_alone():
    """Backward updates its running gradients in place; they must not be the caller's arrays
    (with batch 1 a transposed gradient is already contiguous, so a lazy copy would alias it)."""
    rng = np.random.default_rng(9)
    x, kernel, recurrent, bias, h0, c0 = random_lstm(rng, 1, 3, 2, 4)
    x = Tensor(x, requires_grad=True, dtype=np.float64)
    _, _, c = ops.lstm(x, T64(kernel), T64(recurrent), T64(bias), return_state=True)
    cotangent = rng.standard_normal(c.shape)
    kept = cotangent.copy()
    c.backward(cotangent)
    np.testing.assert_array_equal(cotangent, kept)


@pytest.mark.parametrize("return_sequences", [False, True])
def test_a_batch_cut_across_worker_threads_gives_the_same_results(monkeypatch, return_sequences):
    """A large batch runs as one slice per worker thread (ops/lstm.py _batch_slices); outputs and
    every gradient must equal the one-slice computation. The cut is forced here, so the test runs
    whatever the thread count (with one thread the slices simply run one after the other)."""
    import importlib
    lstm_module = importlib.import_module("micrograd_gen.ops.lstm")   # ops.lstm is the function
    rng = np.random.default_rng(7)
    n, steps, d, u = 37, 5, 6, 4
    arrays_in = [rng.standard_normal(s) for s in
                 [(n, steps, d), (d, 4 * u), (u, 4 * u), (4 * u,), (n, u), (n, u)]]
    cotangent = rng.standard_normal((n, steps, u) if return_sequences else (n, u))

    def run(slices):
        monkeypatch.setattr(lstm_module, "_batch_slices", lambda xp, count: slices)
        ts = [Tensor(a, dtype=np.float64, requires_grad=True) for a in arrays_in]
        out, h, c = ops.lstm(ts[0], *ts[1:4], initial_state=(ts[4], ts[5]),
                             return_sequences=return_sequences, return_state=True)
        (ops.sum(out * Tensor(cotangent, dtype=np.float64)) + ops.sum(h * c)).backward()
        return [out.numpy(), h.numpy(), c.numpy()] + [t.grad for t in ts]

    cut = run([(0, 10), (10, 25), (25, n)])            # unequal slices
    whole = run([(0, n)])
    for a, b in zip(cut, whole):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_batch_slices_cover_the_batch_once_per_worker():
    import importlib
    lstm_module = importlib.import_module("micrograd_gen.ops.lstm")
    from micrograd_gen.accel import workers
    threads = workers.chunk_pool()[1]
    for n in (1, 15, 16, 33, 128, 1000):
        slices = lstm_module._batch_slices(np, n)
        assert slices[0][0] == 0 and slices[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
        assert len(slices) == max(1, min(threads, n // lstm_module._MIN_SLICE))
