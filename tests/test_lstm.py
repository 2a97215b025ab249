"""The LSTM: the one cell (ops.lstm.lstm_cell and its backward) against Keras's equations (gate
order i, f, c, o; sigmoid recurrent activation; tanh) and finite differences; ops.lstm and
ops.lstm_step against a step-by-step loop over that cell, and their gradients by finite differences
in float64; the fast paths (accel/lstm.py) against the reference on drawn shapes; char_lstm's
generator against the cell."""
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import micrograd_gen as mg
from micrograd_gen import Tensor, no_grad, ops
from micrograd_gen.accel import lstm as accel_lstm
from micrograd_gen.ops.lstm import LSTM, lstm_cell, lstm_cell_backward
from strategies import arrays, check_op_gradient


def reference_lstm(x, kernel, recurrent_kernel, bias, h0=None, c0=None):
    """Keras's LSTM, one step at a time through the reference cell (which
    test_lstm_cell_is_the_equations holds against the equations): returns (every h as (N, T, U),
    h_T, c_T)."""
    n, steps, _ = x.shape
    u = recurrent_kernel.shape[0]
    h = np.zeros((n, u), x.dtype) if h0 is None else h0
    c = np.zeros((n, u), x.dtype) if c0 is None else c0
    hs = []
    with mg.fast_paths(False), np.errstate(over="ignore"):
        for t in range(steps):
            z = x[:, t] @ kernel + h @ recurrent_kernel + (0 if bias is None else bias)
            h, c, _, _ = lstm_cell(z, c)
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


# ---- the cell -----------------------------------------------------------------------------------

def test_lstm_cell_is_the_equations_and_its_backward_their_derivative():
    rng = np.random.default_rng(10)
    n, u = 3, 4
    z, c_prev = rng.standard_normal((n, 4 * u)), rng.standard_normal((n, u))
    z_kept, c_kept = z.copy(), c_prev.copy()
    with mg.fast_paths(False):
        h, c, act, tanh_c = lstm_cell(z, c_prev)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    i, f, g, o = sigmoid(z[:, :u]), sigmoid(z[:, u:2 * u]), np.tanh(z[:, 2 * u:3 * u]), \
        sigmoid(z[:, 3 * u:])
    np.testing.assert_allclose(c, f * c_prev + i * g, rtol=1e-14)
    np.testing.assert_allclose(h, o * np.tanh(f * c_prev + i * g), rtol=1e-14)
    np.testing.assert_allclose(act, np.concatenate([i, f, g, o], axis=1), rtol=1e-14)
    np.testing.assert_array_equal(z, z_kept)          # the inputs are left as they are
    np.testing.assert_array_equal(c_prev, c_kept)
    # backward against central differences of <dh, h> + <dc, c>
    dh, dc = rng.standard_normal((n, u)), rng.standard_normal((n, u))
    dz, dc_prev = lstm_cell_backward(act, c_prev, tanh_c, dh, dc)

    def objective(z, c_prev):
        with mg.fast_paths(False):
            h, c, _, _ = lstm_cell(z, c_prev)
        return np.sum(dh * h) + np.sum(dc * c)

    eps = 1e-6
    for arg, grad in ((0, dz), (1, dc_prev)):
        args = [z, c_prev]
        numeric = np.zeros_like(args[arg])
        for index in np.ndindex(*args[arg].shape):
            plus, minus = [a.copy() for a in args], [a.copy() for a in args]
            plus[arg][index] += eps
            minus[arg][index] -= eps
            numeric[index] = (objective(*plus) - objective(*minus)) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_the_generators_step_is_the_ops_cell():
    """char_lstm's generator advances its states with ops.lstm's cell: the same numbers as
    lstm_step (and so as the LSTM op) on the same weights."""
    from micrograd_gen.generative.char_lstm import _Cell, build_char_lstm
    mg.nn.set_seed(3)
    model = build_char_lstm(9, maxlen=5, units=6)
    rng = np.random.default_rng(11)
    for w in model.stack[0].weights:
        w.data[...] = rng.standard_normal(w.shape).astype(np.float32) * 0.5
    cell = _Cell(model)
    lstm_layer = model.stack[0]
    h = rng.standard_normal((4, 6)).astype(np.float32)
    c = rng.standard_normal((4, 6)).astype(np.float32)
    h_step, c_step = ops.lstm_step(np.eye(9, dtype=np.float32)[[5] * 4], h, c, lstm_layer.kernel,
                                   lstm_layer.recurrent_kernel, lstm_layer.bias)
    cell.step(h, c, 5)                                   # in place
    np.testing.assert_allclose(h, h_step.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(c, c_step.numpy(), rtol=1e-6, atol=1e-6)


# ---- the fast path (accel/lstm.py) against the reference --------------------------------------

@st.composite
def fast_lstm_problems(draw):
    """Shapes that reach the batch cut (up to 70 samples) and every optional input."""
    n = draw(st.integers(1, 70))
    steps = draw(st.integers(1, 6))
    d = draw(st.integers(1, 5))
    u = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x, kernel, recurrent, bias, h0, c0 = random_lstm(rng, n, steps, d, u, scale=0.8)
    if not draw(st.booleans()):
        bias = None
    if not draw(st.booleans()):
        h0 = c0 = None
    return x, kernel, recurrent, bias, h0, c0, draw(st.booleans()), rng


def _run_with_gradients(run, arrays_in, return_sequences, rng_seed):
    rng = np.random.default_rng(rng_seed)
    ts = [None if a is None else Tensor(a, dtype=np.float64, requires_grad=True)
          for a in arrays_in]
    out, h, c = run(*ts, return_sequences)
    weights = [Tensor(rng.standard_normal(t.shape), dtype=np.float64) for t in (out, h, c)]
    (ops.sum(out * weights[0]) + ops.sum(h * weights[1]) + ops.sum(c * weights[2])).backward()
    return [out.numpy(), h.numpy(), c.numpy()] + [None if t is None else t.grad for t in ts]


def _reference(x, kernel, recurrent, bias, h0, c0, return_sequences):
    return LSTM.apply(x, kernel, recurrent, bias, h0, c0, return_sequences=return_sequences)


@given(problem=fast_lstm_problems())
def test_fast_lstm_equals_the_reference_outputs_and_every_gradient(problem):
    *arrays_in, return_sequences, _ = problem
    fast = _run_with_gradients(accel_lstm.batch_split_lstm, arrays_in, return_sequences, 0)
    reference = _run_with_gradients(_reference, arrays_in, return_sequences, 0)
    for got, want in zip(fast, reference):
        if want is None:
            assert got is None
        else:
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("return_sequences", [False, True])
def test_fast_lstm_with_frozen_weights_and_float32(return_sequences):
    """What the engine's users hit most: float32, and only the input gradient (frozen weights)."""
    rng = np.random.default_rng(12)
    x, kernel, recurrent, bias, _, _ = random_lstm(rng, 40, 7, 5, 8, dtype=np.float32)
    results = []
    for run in (accel_lstm.batch_split_lstm, _reference):
        xt = Tensor(x, requires_grad=True)
        out, h, c = run(xt, Tensor(kernel), Tensor(recurrent), Tensor(bias), None, None,
                        return_sequences)
        (out.sum() + c.sum()).backward()
        results.append((out.numpy(), c.numpy(), xt.grad))
    for got, want in zip(*results):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_the_switch_picks_the_path():
    calls = []
    original = accel_lstm.batch_split_lstm

    def spy(*args):
        calls.append(1)
        return original(*args)

    x, kernel, recurrent, bias, _, _ = random_lstm(np.random.default_rng(13), 2, 3, 2, 2)
    ts = [Tensor(a, dtype=np.float64) for a in (x, kernel, recurrent, bias)]
    previous = mg.fastpath.lookup("lstm") if mg.fastpath.enabled() else None
    mg.fastpath.register("lstm", spy)
    try:
        with mg.fast_paths(True):
            on = ops.lstm(*ts)
        with mg.fast_paths(False):
            off = ops.lstm(*ts)
    finally:
        mg.fastpath.register("lstm", previous or original)
    assert len(calls) == 1                                # only with fast paths on
    np.testing.assert_allclose(on.numpy(), off.numpy(), rtol=1e-12)


def test_fast_lstm_shape_errors_are_the_references():
    x = Tensor(np.zeros((2, 3, 4), np.float32))
    for run in (accel_lstm.batch_split_lstm, _reference):
        with pytest.raises(ValueError, match=r"^lstm: kernel must be \(input_dim, 4\*units\)"):
            run(x, Tensor(np.zeros((5, 8), np.float32)), Tensor(np.zeros((2, 8), np.float32)),
                None, None, None, False)


@pytest.mark.parametrize("return_sequences", [False, True])
def test_a_batch_cut_across_worker_threads_gives_the_same_results(monkeypatch, return_sequences):
    """A large batch runs as one slice per worker thread (accel/lstm.py _batch_slices); outputs
    and every gradient must equal the one-slice computation. The cut is forced here, so the test
    runs whatever the thread count (with one thread the slices run one after the other)."""
    rng = np.random.default_rng(7)
    n, steps, d, u = 37, 5, 6, 4
    arrays_in = [rng.standard_normal(s) for s in
                 [(n, steps, d), (d, 4 * u), (u, 4 * u), (4 * u,), (n, u), (n, u)]]

    def run(slices):
        monkeypatch.setattr(accel_lstm, "_batch_slices", lambda xp, count: slices)
        return _run_with_gradients(accel_lstm.batch_split_lstm, arrays_in, return_sequences, 1)

    cut = run([(0, 10), (10, 25), (25, n)])            # unequal slices
    whole = run([(0, n)])
    for a, b in zip(cut, whole):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_batch_slices_cover_the_batch_once_per_worker():
    threads = accel_lstm.chunk_pool()[1]
    for n in (1, 15, 16, 33, 128, 1000):
        slices = accel_lstm._batch_slices(np, n)
        assert slices[0][0] == 0 and slices[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
        assert len(slices) == max(1, min(threads, n // accel_lstm._MIN_SLICE))


# ---- the fast path at batch 1 without gradients (a generator's call) ---------------------------

@st.composite
def one_sample_problems(draw):
    """Batch 1 (where the fast path runs accel/lstm.py's _infer_one), one-hot or dense inputs,
    every optional input, float32 or float64."""
    steps = draw(st.integers(1, 7))
    d = draw(st.integers(1, 6))
    u = draw(st.integers(1, 6))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.5, 1.5, 30.0]))               # 30: saturated gates
    x, kernel, recurrent, bias, h0, c0 = random_lstm(rng, 1, steps, d, u, scale, dtype)
    if draw(st.booleans()):
        x = np.eye(d, dtype=dtype)[rng.integers(0, d, (1, steps))]
    if not draw(st.booleans()):
        bias = None
    if not draw(st.booleans()):
        h0 = c0 = None
    return x, kernel, recurrent, bias, h0, c0, draw(st.booleans())


def _no_grad_outputs(run, arrays_in, return_sequences):
    with no_grad():
        outputs = run(*[None if a is None else Tensor(a, dtype=a.dtype) for a in arrays_in],
                      return_sequences)
    return [t.numpy() for t in outputs]


@given(problem=one_sample_problems())
def test_fast_lstm_at_batch_1_without_gradients_equals_the_reference(problem):
    """float64 to 1e-10. float32 against the float64 reference on the same values, within 10x
    the float32 reference's own error (saturated gates and large weights amplify rounding step
    after step; sigmoid as (1 + tanh(z / 2)) / 2 is exact to 6e-8 absolute, not relative)."""
    *arrays_in, return_sequences = problem
    dtype = arrays_in[0].dtype
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        fast = _no_grad_outputs(accel_lstm.batch_split_lstm, arrays_in, return_sequences)
    with np.errstate(over="ignore"):
        reference = _no_grad_outputs(_reference, arrays_in, return_sequences)
        exact = _no_grad_outputs(_reference, [None if a is None else a.astype(np.float64)
                                              for a in arrays_in], return_sequences)
    for got, want, best in zip(fast, reference, exact):
        assert got.shape == want.shape and got.dtype == want.dtype == dtype
        if dtype == np.float64:
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
        else:
            reference_error = np.abs(want - best).max()
            # pre-activations near 100 (scale 30) carry float32 rounding of ~1e-5 themselves
            np.testing.assert_allclose(got, best, rtol=0, atol=1e-5 + 10 * reference_error)


def test_fast_lstm_at_batch_1_sees_weights_updated_in_place():
    """The prepared weights are kept between calls; an update in place must not go unseen."""
    rng = np.random.default_rng(21)
    x, kernel, recurrent, bias, _, _ = random_lstm(rng, 1, 5, 3, 4, dtype=np.float32)
    weights = [Tensor(a) for a in (kernel, recurrent, bias)]
    for w in weights:
        with no_grad():
            before = accel_lstm.batch_split_lstm(Tensor(x), *weights, None, None, False)[0]
        w.data[..., -1] -= 0.25                               # the o gate's last unit
        with no_grad():
            after = accel_lstm.batch_split_lstm(Tensor(x), *weights, None, None, False)[0]
            want = _reference(Tensor(x), *weights, None, None, False)[0]
        assert not np.array_equal(after.numpy(), before.numpy())
        np.testing.assert_allclose(after.numpy(), want.numpy(), rtol=2e-5, atol=2e-6)


def test_fast_lstm_at_batch_1_keeps_no_stale_weights_across_weight_sets():
    """Weights kept between calls are used again only for equal weights: two sets of the same
    shapes called in turn, with and without a bias, a Fortran-ordered recurrent kernel changed
    in place, and weights of mixed dtypes (prepared at every call) all match the reference."""
    rng = np.random.default_rng(22)
    x, kernel, recurrent, bias, _, _ = random_lstm(rng, 1, 6, 3, 4, dtype=np.float32)
    other = [a + 0.125 for a in (kernel, recurrent, bias)]
    fortran = [kernel, np.asfortranarray(recurrent), bias]
    mixed = [kernel.astype(np.float64), recurrent, bias]
    for weights in ([kernel, recurrent, bias], other, [kernel, recurrent, None], other,
                    fortran, mixed, mixed, [kernel, recurrent, bias]):
        tensors = [None if w is None else Tensor(w, dtype=w.dtype) for w in weights]
        with no_grad():
            got = accel_lstm.batch_split_lstm(Tensor(x), *tensors, None, None, True)[0]
            want = _reference(Tensor(x), *tensors, None, None, True)[0]
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-5, atol=2e-6)
    fortran[1][0, 0] += 1.0                                    # in place, in Fortran order
    tensors = [Tensor(w, dtype=w.dtype) for w in fortran]
    with no_grad():
        got = accel_lstm.batch_split_lstm(Tensor(x), *tensors, None, None, False)[0]
        want = _reference(Tensor(x), *tensors, None, None, False)[0]
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-5, atol=2e-6)
    # the kept copy in the kernel's own memory order: compared across orders it was 30x slower
    assert accel_lstm._last_weights.copies[1].flags.f_contiguous


def test_one_hot_rows_are_recognised_and_nothing_else():
    def ids(x):
        probe = np.stack([np.ones(x.shape[1]), np.arange(x.shape[1])], axis=1).astype(x.dtype)
        return accel_lstm._one_hot_ids(x, probe)

    eye = np.eye(4, dtype=np.float32)
    np.testing.assert_array_equal(ids(eye[[2, 0, 3, 3]]), [2, 0, 3, 3])
    not_one_hot = [
        [[1, 1, 0], [0, 0, 0]],            # two ones in a row, an empty row
        [[0.5, 0.5, 0], [0, 1, 0]],
        [[2, 0, 0], [0, 1, 0]],
        [[2, -1, 0], [0, 1, 0]],           # sums to 1
        [[1, -1, 1], [0, 1, 0]],
        [[np.nan, 0, 0], [0, 1, 0]],
        [[np.inf, -np.inf, 1], [0, 1, 0]],
        [[0, 0, 0], [0, 1, 0]],
    ]
    for x in not_one_hot:
        with np.errstate(invalid="ignore"):          # inf - inf in the probe's product
            assert ids(np.array(x, np.float32)) is None


def test_the_book_loop_writes_the_same_text_on_both_paths():
    """book_generate (a fresh one-hot window per character through the whole model) gives the
    same characters with the fast paths and with the reference, for the same random state."""
    from micrograd_gen.data.text import CharVocabulary
    from micrograd_gen.generative.char_lstm import book_generate, build_char_lstm
    vocab = CharVocabulary(list("abcdefgh ."))
    mg.nn.set_seed(5)
    model = build_char_lstm(len(vocab), maxlen=12, units=16)
    rng = np.random.default_rng(6)
    for w in model.weights:       # a model that prefers some characters, not a uniform one
        w.data[...] = rng.standard_normal(w.shape).astype(np.float32)
    texts = []
    for fast in (True, False):
        with mg.fast_paths(fast):
            texts.append(book_generate(model, vocab, "abc defg.hab", 60, 0.5,
                                       np.random.RandomState(7)))
    assert texts[0] == texts[1]
    assert len(set(texts[0])) > 3


# ---- the CUDA cell (accel/lstm.py registers accel/cuda.py's kernels) -----------------------------

def _why_no_gpu():
    try:
        mg.backend.cupy_module()
    except RuntimeError as e:
        return str(e)
    return None


needs_gpu = pytest.mark.skipif(_why_no_gpu() is not None,
                               reason=f"needs CuPy and a CUDA device: {_why_no_gpu()}")


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_cell_equals_the_reference_cell(dtype):
    cp = mg.backend.cupy_module()
    rng = np.random.default_rng(14)
    n, u = 5, 7
    z, c_prev, dh, dc = (rng.standard_normal(s).astype(dtype) for s in
                         [(n, 4 * u), (n, u), (n, u), (n, u)])
    want = lstm_cell(z, c_prev)                              # NumPy: the reference
    got = accel_lstm.lstm_cell_cuda(cp.asarray(z), cp.asarray(c_prev))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for g, w in zip(got, want):
        np.testing.assert_allclose(cp.asnumpy(g), w, rtol=tol, atol=tol)
    act, tanh_c = want[2], want[3]
    want_back = lstm_cell_backward(act, c_prev, tanh_c, dh, dc)
    dc_gpu = cp.asarray(dc)
    got_back = accel_lstm.lstm_cell_backward_cuda(cp.asarray(act), cp.asarray(c_prev),
                                                  cp.asarray(tanh_c), cp.asarray(dh), dc_gpu)
    for g, w in zip(got_back, want_back):
        np.testing.assert_allclose(cp.asnumpy(g), w, rtol=tol, atol=tol)
    np.testing.assert_array_equal(cp.asnumpy(dc_gpu), dc)   # the argument is left as it was


@needs_gpu
@pytest.mark.parametrize("return_sequences", [False, True])
def test_lstm_on_cupy_equals_numpy(return_sequences):
    cp = mg.backend.cupy_module()
    rng = np.random.default_rng(15)
    arrays_in = random_lstm(rng, 6, 5, 3, 4)
    on_cpu = _run_with_gradients(_reference, arrays_in, return_sequences, 2)
    rng = np.random.default_rng(2)
    ts = [Tensor(cp.asarray(a), dtype=np.float64, requires_grad=True) for a in arrays_in]
    out, h, c = ops.lstm(ts[0], *ts[1:4], initial_state=(ts[4], ts[5]),
                         return_sequences=return_sequences, return_state=True)
    weights = [Tensor(cp.asarray(rng.standard_normal(t.shape)), dtype=np.float64)
               for t in (out, h, c)]
    (ops.sum(out * weights[0]) + ops.sum(h * weights[1]) + ops.sum(c * weights[2])).backward()
    on_gpu = [out.numpy(), h.numpy(), c.numpy()] + [cp.asnumpy(t.grad) for t in ts]
    for got, want in zip(on_gpu, on_cpu):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
