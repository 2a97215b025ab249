"""ops.batch_norm (training and inference modes, Keras 3's moving-statistics update) and
ops.layer_norm against direct NumPy formulas, and their gradients by finite differences."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from micrograd_gen import Tensor, no_grad, ops
from strategies import arrays, assert_forward, check_op_gradient, positive_arrays

EPS = 1e-3


def T64(a):
    return None if a is None else Tensor(a, dtype=np.float64)


def channel_view(a, ndim, axis):
    shape = [1] * ndim
    shape[axis] = -1
    return a.reshape(shape)


def reference_batch_norm(x, gamma, beta, mean, variance, axis):
    view = lambda a: channel_view(a, x.ndim, axis)  # noqa: E731
    y = (x - view(mean)) / np.sqrt(view(variance) + EPS)
    if gamma is not None:
        y = y * view(gamma)
    if beta is not None:
        y = y + view(beta)
    return y


def batch_statistics(x, axis):
    axes = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
    return x.mean(axis=axes), x.var(axis=axes)  # biased variance


@st.composite
def batch_norm_problems(draw, min_count=2):
    ndim = draw(st.integers(2, 4))
    shape = draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim))
    axis = draw(st.integers(-ndim, ndim - 1))
    channels = shape[axis]
    # Training needs at least two distinct values per channel, or the variance is 0 and the
    # output is all eps-dominated: stretch another axis when the draw left one value.
    if int(np.prod(shape)) // channels < min_count:
        shape[(axis + 1) % ndim] = min_count
    shape = tuple(shape)
    x = draw(arrays(shape, bound=3.0, distinct=True))
    gamma = draw(st.one_of(st.none(), arrays((channels,), bound=2.0)))
    beta = draw(st.one_of(st.none(), arrays((channels,), bound=2.0)))
    mean = draw(arrays((channels,), bound=1.0))
    variance = draw(positive_arrays((channels,), 0.2, 2.0))
    return x, gamma, beta, mean, variance, axis


@given(problem=batch_norm_problems())
def test_batch_norm_inference_forward(problem):
    x, gamma, beta, mean, variance, axis = problem
    y = ops.batch_norm(T64(x), T64(gamma), T64(beta), mean.copy(), variance.copy(),
                       training=False, axis=axis)
    assert_forward(y, reference_batch_norm(x, gamma, beta, mean, variance, axis))


@given(problem=batch_norm_problems(), momentum=st.sampled_from([0.99, 0.9, 0.0]))
def test_batch_norm_training_forward_and_moving_update(problem, momentum):
    x, gamma, beta, mean, variance, axis = problem
    moving_mean, moving_variance = T64(mean.copy()), T64(variance.copy())
    mean_array = moving_mean.data  # the update must land in this very array
    y = ops.batch_norm(T64(x), T64(gamma), T64(beta), moving_mean, moving_variance,
                       training=True, momentum=momentum, axis=axis)
    batch_mean, batch_var = batch_statistics(x, axis)
    assert_forward(y, reference_batch_norm(x, gamma, beta, batch_mean, batch_var, axis))
    # Keras 3: moving = moving * momentum + batch * (1 - momentum), biased batch variance
    assert moving_mean.data is mean_array
    np.testing.assert_allclose(moving_mean.data, mean * momentum + batch_mean * (1 - momentum),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(moving_variance.data,
                               variance * momentum + batch_var * (1 - momentum),
                               rtol=1e-12, atol=1e-14)


def test_batch_norm_moving_update_options():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 3, 4)).astype(np.float32)
    mean, variance = np.zeros(4, np.float32), np.ones(4, np.float32)
    ops.batch_norm(Tensor(x), None, None, mean, variance, training=True,
                   update_moving_stats=False)
    assert (mean == 0).all() and (variance == 1).all()
    with no_grad():  # the update happens with or without a graph
        ops.batch_norm(Tensor(x), None, None, mean, variance, training=True, momentum=0.5)
    batch_mean, batch_var = batch_statistics(x.astype(np.float64), -1)
    np.testing.assert_allclose(mean, 0.5 * batch_mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(variance, 0.5 + 0.5 * batch_var, rtol=1e-5)
    assert mean.dtype == np.float32
    # inference leaves them alone
    before = mean.copy()
    ops.batch_norm(Tensor(x), None, None, mean, variance, training=False)
    np.testing.assert_array_equal(mean, before)


@pytest.mark.parametrize("training", [False, True])
def test_batch_norm_float32(training):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((4, 5, 6, 8)) * 3 + 1).astype(np.float32)
    gamma, beta, mean = (rng.standard_normal(8).astype(np.float32) for _ in range(3))
    variance = rng.uniform(0.5, 2, 8).astype(np.float32)
    y = ops.batch_norm(Tensor(x), Tensor(gamma), Tensor(beta), mean.copy(), variance.copy(),
                       training=training)
    assert y.dtype == np.float32
    x64 = x.astype(np.float64)
    stats = batch_statistics(x64, -1) if training else (mean, variance)
    expected = reference_batch_norm(x64, gamma.astype(np.float64), beta.astype(np.float64),
                                    *[s.astype(np.float64) for s in stats], -1)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@given(problem=batch_norm_problems(), training=st.booleans())
def test_batch_norm_gradient(problem, training):
    x, gamma, beta, mean, variance, axis = problem
    inputs = [x] + [a for a in (gamma, beta) if a is not None]

    def fn(x, *rest):
        rest = list(rest)
        g = rest.pop(0) if gamma is not None else None
        b = rest.pop(0) if beta is not None else None
        return ops.batch_norm(x, g, b, mean, variance, training=training, axis=axis,
                              update_moving_stats=False)

    check_op_gradient(fn, *inputs)


def test_batch_norm_frozen_inference_gives_only_the_input_gradient():
    """DeepDream's case: frozen InceptionV3, gradient to the image only."""
    rng = np.random.default_rng(2)
    x = Tensor(rng.standard_normal((2, 3, 3, 4)), requires_grad=True, dtype=np.float64)
    beta = T64(rng.standard_normal(4))
    mean, variance = rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    ops.batch_norm(x, None, beta, mean, variance).sum().backward()
    assert beta.grad is None
    np.testing.assert_allclose(x.grad, np.broadcast_to(1 / np.sqrt(variance + EPS), x.shape))


def test_batch_norm_errors_name_the_argument():
    x = Tensor(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="batch_norm: moving_variance has shape"):
        ops.batch_norm(x, None, None, np.zeros(4), np.ones(3))
    with pytest.raises(ValueError, match="batch_norm: axis 3"):
        ops.batch_norm(x, None, None, np.zeros(4), np.ones(4), axis=3)


@st.composite
def layer_norm_problems(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))) + \
        (draw(st.integers(2, 6)),)
    x = draw(arrays(shape, bound=3.0, distinct=True))
    gamma = draw(st.one_of(st.none(), arrays((shape[-1],), bound=2.0)))
    beta = draw(st.one_of(st.none(), arrays((shape[-1],), bound=2.0)))
    return x, gamma, beta


def reference_layer_norm(x, gamma, beta):
    y = (x - x.mean(axis=-1, keepdims=True)) / np.sqrt(x.var(axis=-1, keepdims=True) + EPS)
    return y * (1 if gamma is None else gamma) + (0 if beta is None else beta)


@given(problem=layer_norm_problems())
def test_layer_norm_forward(problem):
    x, gamma, beta = problem
    assert_forward(ops.layer_norm(T64(x), T64(gamma), T64(beta)),
                   reference_layer_norm(x, gamma, beta))


def test_layer_norm_float32():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((4, 9, 256)) * 2 + 0.5).astype(np.float32)
    gamma, beta = (rng.standard_normal(256).astype(np.float32) for _ in range(2))
    y = ops.layer_norm(Tensor(x), Tensor(gamma), Tensor(beta))
    assert y.dtype == np.float32
    expected = reference_layer_norm(x.astype(np.float64), gamma.astype(np.float64),
                                    beta.astype(np.float64))
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@given(problem=layer_norm_problems())
def test_layer_norm_gradient(problem):
    x, gamma, beta = problem
    inputs = [x] + [a for a in (gamma, beta) if a is not None]

    def fn(x, *rest):
        rest = list(rest)
        g = rest.pop(0) if gamma is not None else None
        b = rest.pop(0) if beta is not None else None
        return ops.layer_norm(x, g, b)

    check_op_gradient(fn, *inputs)


def test_layer_norm_errors_name_the_argument():
    with pytest.raises(ValueError, match="layer_norm: gamma has shape"):
        ops.layer_norm(Tensor(np.zeros((2, 3), np.float32)), Tensor(np.ones(4, np.float32)), None)
