"""Every op in micrograd_gen.ops: a hypothesis gradient check (float64 finite differences through
micrograd_gen.gradcheck) and a forward check against NumPy or the op's defining formula.

Losses are checked against Keras's definitions: probabilities are clipped to [1e-7, 1 - 1e-7];
categorical (and sparse, as Keras 3 does) cross-entropy from probabilities divides them by their sum
first; binary cross-entropy is averaged over the last axis.
"""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from micrograd_gen import Tensor, ops
from strategies import (array_and_axes, arrays, assert_forward, broadcastable_shapes,
                        check_op_gradient, positive_arrays, shapes)


def T(a):
    return Tensor(a, dtype=np.float64)


# ---- elementwise, binary (with broadcasting) --------------------------------------------------

def _any(shape):
    return arrays(shape)


def _away_from_zero(shape):
    return arrays(shape, margin=0.3)


def _positive(shape):
    return positive_arrays(shape, 0.5, 2.0)


def _exponent(shape):
    return arrays(shape, bound=2.0)


BINARY = {
    # name: (op, NumPy reference, values for a, values for b)
    "add": (ops.add, np.add, _any, _any),
    "subtract": (ops.subtract, np.subtract, _any, _any),
    "multiply": (ops.multiply, np.multiply, _any, _any),
    "divide": (ops.divide, np.divide, _any, _away_from_zero),
    "power": (ops.power, np.power, _positive, _exponent),
    "maximum": (ops.maximum, np.maximum, _any, _any),
    "minimum": (ops.minimum, np.minimum, _any, _any),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data())
def test_binary_op(name, data):
    op, reference, a_values, b_values = BINARY[name]
    shape_a, shape_b = data.draw(broadcastable_shapes(2), label="shapes")
    a = data.draw(a_values(shape_a), label="a")
    b = data.draw(b_values(shape_b), label="b")
    if name in ("maximum", "minimum"):
        assume(np.all(np.abs(np.subtract(a, b)) > 0.05))  # no ties: the kink of max / min
    assert_forward(op(T(a), T(b)), reference(a, b))
    check_op_gradient(op, a, b)


@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_minimum_ties_go_to_the_first_input(name):
    # Keras / TensorFlow send the gradient of a tie to x in maximum(x, y) and minimum(x, y).
    a = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    b = Tensor(np.array([1.0, 0.0, 5.0]), requires_grad=True)
    getattr(ops, name)(a, b).sum().backward()
    first_wins = np.array([1.0, 1.0, 0.0]) if name == "maximum" else np.array([1.0, 0.0, 1.0])
    np.testing.assert_array_equal(a.grad, first_wins)
    np.testing.assert_array_equal(b.grad, 1 - first_wins)


@given(data=st.data())
def test_where(data):
    shape_c, shape_a, shape_b = data.draw(broadcastable_shapes(3), label="shapes")
    condition = data.draw(hnp.arrays(bool, shape_c), label="condition")
    a = data.draw(arrays(shape_a), label="a")
    b = data.draw(arrays(shape_b), label="b")
    assert_forward(ops.where(condition, T(a), T(b)), np.where(condition, a, b))
    assert_forward(ops.where(Tensor(condition), T(a), T(b)), np.where(condition, a, b))
    check_op_gradient(lambda x, y: ops.where(condition, x, y), a, b)


# ---- elementwise, unary -----------------------------------------------------------------------

def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


UNARY = {
    # name: (op, NumPy reference, values)
    "negative": (ops.negative, np.negative, _any),
    "exp": (ops.exp, np.exp, _any),
    "log": (ops.log, np.log, lambda s: positive_arrays(s, 0.2, 5.0)),
    "sqrt": (ops.sqrt, np.sqrt, lambda s: positive_arrays(s, 0.2, 5.0)),
    "abs": (ops.abs, np.abs, lambda s: arrays(s, margin=0.01)),
    "tanh": (ops.tanh, np.tanh, _any),
    "sigmoid": (ops.sigmoid, _sigmoid, lambda s: arrays(s, bound=8.0)),
    "relu": (ops.relu, lambda x: np.maximum(x, 0), lambda s: arrays(s, margin=0.01)),
    "leaky_relu": (ops.leaky_relu, lambda x: np.where(x > 0, x, 0.2 * x),
                   lambda s: arrays(s, margin=0.01)),
    "softplus": (ops.softplus, lambda x: np.log1p(np.exp(x)), lambda s: arrays(s, bound=8.0)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data())
def test_unary_op(name, data):
    op, reference, values = UNARY[name]
    x = data.draw(shapes().flatmap(values), label="x")
    assert_forward(op(T(x)), reference(x))
    check_op_gradient(op, x)


@given(shapes().flatmap(lambda s: arrays(s, margin=0.01)), st.floats(0.0, 1.0))
def test_leaky_relu_slope(x, slope):
    assert_forward(ops.leaky_relu(T(x), negative_slope=slope), np.where(x > 0, x, slope * x))
    check_op_gradient(lambda t: ops.leaky_relu(t, negative_slope=slope), x)


def test_unary_ops_stay_finite_at_extremes():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=np.float32)
    for op in (ops.sigmoid, ops.softplus, ops.tanh):
        assert np.all(np.isfinite(op(Tensor(x)).numpy())), op.__name__
    np.testing.assert_allclose(ops.softplus(Tensor(x)).numpy(), np.logaddexp(0, x), rtol=1e-6)
    # sigmoid keeps its relative precision far out in the left tail
    tail = np.array([-30.0, -60.0])
    np.testing.assert_allclose(ops.sigmoid(T(tail)).numpy(), np.exp(tail) / (1 + np.exp(tail)),
                               rtol=1e-14)


@given(data=st.data())
def test_clip(data):
    low = data.draw(st.floats(-2, 0.5), label="low")
    high = data.draw(st.floats(low + 0.1, 2.5), label="high")
    x = data.draw(shapes().flatmap(lambda s: arrays(s, margin=0.02, avoid=(low, high))), label="x")
    assert_forward(ops.clip(T(x), low, high), np.clip(x, low, high))
    check_op_gradient(lambda t: ops.clip(t, low, high), x)
    # one-sided clipping
    assert_forward(ops.clip(T(x), low, None), np.maximum(x, low))
    check_op_gradient(lambda t: ops.clip(t, None, high), x)


def test_clip_passes_the_gradient_at_its_bounds():
    # tf.clip_by_value's gradient passes where low <= x <= high (bounds included).
    x = Tensor(np.array([-1.0, 0.0, 0.5, 1.0, 2.0]), requires_grad=True)
    ops.clip(x, 0.0, 1.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 1, 1, 1, 0])


def test_cast():
    x = Tensor(np.array([1.5, -2.0]), dtype=np.float64, requires_grad=True)
    y = ops.cast(x, np.float32)
    assert y.dtype == np.float32
    (y * 3).sum().backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])
    # through float32 and back: a linear function, so a large step is exact up to float32 rounding
    check_op_gradient(lambda t: ops.cast(ops.cast(t, np.float32), np.float64) * 2, np.ones(3),
                      eps=1e-2, atol=1e-4)


# ---- reductions -------------------------------------------------------------------------------

def _logsumexp(x, axis=None, keepdims=False):
    peak = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True)) + peak
    return out if keepdims else np.squeeze(out, axis=axis)


REDUCTIONS = {
    # name: (op, NumPy reference, needs distinct values)
    "sum": (ops.sum, np.sum, False),
    "mean": (ops.mean, np.mean, False),
    "var": (ops.var, np.var, False),
    "max": (ops.max, np.max, True),
    "min": (ops.min, np.min, True),
    "logsumexp": (ops.logsumexp, _logsumexp, False),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@given(data=st.data())
def test_reduction(name, data):
    op, reference, distinct = REDUCTIONS[name]
    x, axis = data.draw(array_and_axes(distinct=distinct), label="x, axis")
    keepdims = data.draw(st.booleans(), label="keepdims")
    if name in ("mean", "var", "max", "min", "logsumexp"):
        assume(x.size > 0)
    axis_for_numpy = axis if axis is None or isinstance(axis, int) else tuple(axis)
    assert_forward(op(T(x), axis=axis, keepdims=keepdims),
                   reference(x, axis=axis_for_numpy, keepdims=keepdims))
    check_op_gradient(lambda t: op(t, axis=axis, keepdims=keepdims), x)


@pytest.mark.parametrize("name", ["max", "min"])
def test_extremum_ties_share_the_gradient(name):
    x = Tensor(np.array([[1.0, 3.0, 3.0], [-2.0, -2.0, 0.0]]), requires_grad=True)
    getattr(ops, name)(x, axis=1).sum().backward()
    expected = ([[0, 0.5, 0.5], [0, 0, 1]] if name == "max" else [[1, 0, 0], [0.5, 0.5, 0]])
    np.testing.assert_array_equal(x.grad, expected)


def test_reduction_axis_errors_name_the_axis():
    with pytest.raises(ValueError, match="axis 2"):
        ops.sum(Tensor(np.ones((2, 3))), axis=2)
    with pytest.raises(ValueError, match="repeats"):
        ops.sum(Tensor(np.ones((2, 3))), axis=(1, -1))


def test_logsumexp_is_stable():
    x = np.array([[1000.0, 1000.0], [-1000.0, -1001.0]])
    np.testing.assert_allclose(ops.logsumexp(T(x), axis=1).numpy(),
                               [1000 + np.log(2), -1000 + np.log1p(np.exp(-1))])


# ---- shape ops --------------------------------------------------------------------------------

@given(data=st.data())
def test_reshape(data):
    shape = data.draw(shapes(), label="shape")
    x = data.draw(arrays(shape), label="x")
    size = x.size
    target = data.draw(st.sampled_from([(size,), (-1,), tuple(reversed(shape)), (1,) + shape,
                                        shape + (1,), (size, 1)]), label="target")
    assert_forward(ops.reshape(T(x), target), x.reshape(target))
    check_op_gradient(lambda t: ops.reshape(t, target), x)


@given(data=st.data())
def test_transpose(data):
    shape = data.draw(shapes(), label="shape")
    x = data.draw(arrays(shape), label="x")
    axes = data.draw(st.none() | st.permutations(range(x.ndim)).map(tuple), label="axes")
    if axes is not None and data.draw(st.booleans(), label="negative axes"):
        axes = tuple(a - x.ndim for a in axes)
    assert_forward(ops.transpose(T(x), axes), np.transpose(x, axes))
    check_op_gradient(lambda t: ops.transpose(t, axes), x)


@given(data=st.data())
def test_expand_dims_and_squeeze(data):
    shape = data.draw(shapes(max_dims=3), label="shape")
    x = data.draw(arrays(shape), label="x")
    axis = data.draw(st.integers(-x.ndim - 1, x.ndim), label="axis")
    assert_forward(ops.expand_dims(T(x), axis), np.expand_dims(x, axis))
    check_op_gradient(lambda t: ops.expand_dims(t, axis), x)
    ones = [i for i, n in enumerate(shape) if n == 1]
    squeeze_axis = data.draw(st.none() | (st.sampled_from(ones) if ones else st.none()),
                             label="squeeze axis")
    assert_forward(ops.squeeze(T(x), squeeze_axis), np.squeeze(x, squeeze_axis))
    check_op_gradient(lambda t: ops.squeeze(t, squeeze_axis), x)


def test_squeeze_of_a_long_axis_is_an_error():
    with pytest.raises(ValueError, match="squeeze.*size 3"):
        ops.squeeze(Tensor(np.ones((1, 3))), 1)


@given(data=st.data())
def test_broadcast_to(data):
    shape = data.draw(shapes(), label="shape")
    x = data.draw(arrays(shape), label="x")
    other = data.draw(hnp.broadcastable_shapes(shape, max_side=3), label="other")
    target = np.broadcast_shapes(shape, other)
    assert_forward(ops.broadcast_to(T(x), target), np.broadcast_to(x, target))
    check_op_gradient(lambda t: ops.broadcast_to(t, target), x)


@given(data=st.data())
def test_concatenate(data):
    shape = data.draw(shapes(min_dims=1), label="shape")
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3), label="sizes")
    parts = []
    for n in sizes:
        part_shape = list(shape)
        part_shape[axis] = n
        parts.append(data.draw(arrays(part_shape), label="part"))
    assert_forward(ops.concatenate([T(p) for p in parts], axis=axis),
                   np.concatenate(parts, axis=axis))
    check_op_gradient(lambda *ts: ops.concatenate(ts, axis=axis), *parts)


@given(data=st.data())
def test_stack(data):
    shape = data.draw(shapes(), label="shape")
    n = data.draw(st.integers(1, 3), label="n")
    parts = [data.draw(arrays(shape), label="part") for _ in range(n)]
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)), label="axis")
    assert_forward(ops.stack([T(p) for p in parts], axis=axis), np.stack(parts, axis=axis))
    check_op_gradient(lambda *ts: ops.stack(ts, axis=axis), *parts)


@given(data=st.data())
def test_split(data):
    shape = data.draw(shapes(min_dims=1, max_side=5), label="shape")
    x = data.draw(arrays(shape), label="x")
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1), label="axis")
    size = shape[axis]
    divisors = [k for k in range(1, size + 1) if size % k == 0]
    how = data.draw(st.sampled_from(divisors) |
                    st.lists(st.integers(0, size), max_size=3).map(sorted), label="sections")
    pieces = ops.split(T(x), how, axis=axis)
    expected = np.split(x, how, axis=axis)
    assert len(pieces) == len(expected)
    for got, want in zip(pieces, expected):
        assert_forward(got, want)

    def weighted(t):  # every piece used, each with its own weight
        return ops.concatenate([p * (k + 1) for k, p in enumerate(ops.split(t, how, axis=axis))],
                               axis=axis)
    check_op_gradient(weighted, x)
    # only the first piece used: the others' gradients are zeros the engine fills in
    check_op_gradient(lambda t: ops.split(t, how, axis=axis)[0], x)


def test_split_into_unequal_parts_is_an_error():
    with pytest.raises(ValueError, match="split.*size 5.*2 equal parts"):
        ops.split(Tensor(np.ones((2, 5))), 2, axis=1)


@given(data=st.data())
def test_pad(data):
    shape = data.draw(shapes(min_dims=1), label="shape")
    x = data.draw(arrays(shape), label="x")
    ndim = len(shape)
    width = data.draw(st.one_of(
        st.integers(0, 2),
        st.tuples(st.integers(0, 2), st.integers(0, 2)),
        st.tuples(*[st.tuples(st.integers(0, 2), st.integers(0, 2))] * ndim),
    ), label="pad_width")
    value = data.draw(st.sampled_from([0.0, -1.5]), label="value")
    assert_forward(ops.pad(T(x), width, value=value),
                   np.pad(x, width, mode="constant", constant_values=value))
    check_op_gradient(lambda t: ops.pad(t, width, value=value), x)


def test_pad_errors():
    with pytest.raises(ValueError, match="negative"):
        ops.pad(Tensor(np.ones((2, 2))), -1)
    with pytest.raises(ValueError, match="does not fit"):
        ops.pad(Tensor(np.ones((2, 2))), ((1, 1), (1, 1), (1, 1)))


@given(shapes(min_dims=1, max_dims=4).flatmap(arrays))
def test_flatten(x):
    assert_forward(ops.flatten(T(x)), x.reshape(x.shape[0], -1))
    check_op_gradient(ops.flatten, x)


def test_flatten_of_an_empty_batch():
    assert ops.flatten(Tensor(np.ones((0, 3, 4)))).shape == (0, 12)


@given(data=st.data())
def test_getitem_basic(data):
    # slices (with steps, negative too), ints, Ellipsis and None
    shape = data.draw(shapes(min_dims=1), label="shape")
    x = data.draw(arrays(shape), label="x")
    index = data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True),
                      label="index")
    assert_forward(ops.getitem(T(x), index), x[index])
    assert_forward(T(x)[index], x[index])
    check_op_gradient(lambda t: t[index], x)


@given(data=st.data())
def test_getitem_integer_arrays(data):
    # integer arrays repeat indices often: their gradients must add up (scatter-add)
    shape = data.draw(shapes(min_dims=1), label="shape")
    x = data.draw(arrays(shape), label="x")
    index = data.draw(hnp.integer_array_indices(shape, result_shape=shapes(1, 2)), label="index")
    assert_forward(ops.getitem(T(x), index), x[index])
    check_op_gradient(lambda t: t[index], x)


def test_getitem_mixed_and_repeated():
    x = np.arange(24.0).reshape(2, 3, 4)
    for index in [(slice(None), [0, 0, 2], 1), (Ellipsis, [3, 3]), ([1, 1, 0],),
                  (1, None, slice(None, None, -1)), x > 10, [0, 0]]:
        assert_forward(T(x)[index], x[index])
        check_op_gradient(lambda t: t[index], x, full_jacobian_max=0)
    t = Tensor(np.ones(3), requires_grad=True)
    t[[0, 0, 0, 2]].sum().backward()
    np.testing.assert_array_equal(t.grad, [3, 0, 1])
    # a Tensor of ids works as an index too
    assert_forward(T(x)[Tensor(np.array([1, 0]))], x[[1, 0]])


# ---- matmul -----------------------------------------------------------------------------------

@st.composite
def matmul_operands(draw):
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    batch_a, batch_b = draw(broadcastable_shapes(2, max_dims=2, max_side=3))
    vector_a, vector_b = draw(st.booleans()), draw(st.booleans())
    shape_a = (k,) if vector_a else batch_a + (m, k)
    shape_b = (k,) if vector_b else batch_b + (k, n)
    return draw(arrays(shape_a)), draw(arrays(shape_b))


@given(matmul_operands())
def test_matmul(operands):
    a, b = operands
    assert_forward(ops.matmul(T(a), T(b)), np.matmul(a, b))
    assert_forward(T(a) @ T(b), np.matmul(a, b))
    check_op_gradient(ops.matmul, a, b)


@given(st.data())
def test_affine(data):
    lead = data.draw(shapes(min_dims=0, max_dims=2), label="leading axes")
    n_in, units = data.draw(st.integers(1, 4), label="in"), data.draw(st.integers(1, 4), label="units")
    x = data.draw(arrays(lead + (n_in,)), label="x")
    kernel = data.draw(arrays((n_in, units)), label="kernel")
    if data.draw(st.booleans(), label="bias"):
        bias = data.draw(arrays((units,)), label="bias")
        assert_forward(ops.affine(T(x), T(kernel), T(bias)), np.matmul(x, kernel) + bias)
        check_op_gradient(ops.affine, x, kernel, bias)
    else:
        assert_forward(ops.affine(T(x), T(kernel)), np.matmul(x, kernel))
        check_op_gradient(ops.affine, x, kernel)


def test_affine_names_the_shapes_that_do_not_fit():
    with pytest.raises(ValueError, match=r"affine: x \(2, 3\) needs a last axis of kernel \(4, 5\)"):
        ops.affine(T(np.ones((2, 3))), T(np.ones((4, 5))))
    with pytest.raises(ValueError, match=r"affine: bias \(4,\) must have kernel \(3, 5\)'s 5"):
        ops.affine(T(np.ones((2, 3))), T(np.ones((3, 5))), T(np.ones(4)))


@given(st.data())
def test_gram(data):
    shape = data.draw(shapes(min_dims=2, max_dims=3), label="shape")
    x = data.draw(arrays(shape), label="x")
    assert_forward(ops.gram(T(x)), np.matmul(np.swapaxes(x, -1, -2), x))
    check_op_gradient(ops.gram, x)


def test_gram_needs_rows_and_channels():
    with pytest.raises(ValueError, match=r"gram needs .* got shape \(3,\)"):
        ops.gram(T(np.ones(3)))


def test_matmul_against_einsum():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((5, 6))
    assert_forward(ops.matmul(T(a), T(b)), np.einsum("bhik,kj->bhij", a, b))
    c = rng.standard_normal((3, 5, 2))
    assert_forward(ops.matmul(T(a), T(c)), np.einsum("bhik,hkj->bhij", a, c))


def test_matmul_frozen_operand_gets_no_gradient_work():
    a = Tensor(np.ones((2, 3)), requires_grad=True)
    b = Tensor(np.ones((3, 4)))
    (a @ b).sum().backward()
    assert b.grad is None
    np.testing.assert_array_equal(a.grad, np.full((2, 3), 4.0))


def test_matmul_gradients_reach_the_leaves_without_a_copy(monkeypatch):
    # a 2048x2048 dW is 16 MB: the engine hands backward's fresh arrays to the leaves as they are
    from micrograd_gen.ops.linalg import MatMul
    returned = []
    backward = MatMul.backward

    def spy(self, g):
        returned.extend(backward(self, g))
        return tuple(returned)

    monkeypatch.setattr(MatMul, "backward", spy)
    a = Tensor(np.ones((3, 4)), requires_grad=True)
    b = Tensor(np.ones((4, 5)), requires_grad=True)
    (a @ b).backward(np.ones((3, 5)))
    assert a.grad is returned[0] and b.grad is returned[1]


# ---- softmax ----------------------------------------------------------------------------------

def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(data=st.data())
def test_softmax(name, data):
    x, axis = data.draw(array_and_axes(min_dims=1, allow_none=False, allow_tuple=False,
                                       bound=5.0), label="x, axis")
    op = getattr(ops, name)
    expected = _softmax(x, axis) if name == "softmax" else np.log(_softmax(x, axis))
    assert_forward(op(T(x), axis=axis), expected)
    check_op_gradient(lambda t: op(t, axis=axis), x)


def test_softmax_is_stable():
    x = np.array([[1000.0, 0.0], [-1000.0, -1000.0]], dtype=np.float32)
    np.testing.assert_allclose(ops.softmax(Tensor(x)).numpy(), [[1, 0], [0.5, 0.5]])
    assert np.all(np.isfinite(ops.log_softmax(Tensor(x)).numpy()))


# ---- losses (Keras's definitions) -------------------------------------------------------------

EPS = 1e-7
REDUCE = {"mean": np.mean, "sum": np.sum, "none": lambda v: v}


@st.composite
def batch_and_classes(draw, max_batch_dims=2):
    batch = draw(shapes(min_dims=1, max_dims=max_batch_dims, max_side=3))
    classes = draw(st.integers(2, 5))
    return batch, classes


@st.composite
def one_hot_or_soft(draw, batch, classes):
    if draw(st.booleans()):
        ids = draw(hnp.arrays(np.int64, batch, elements=st.integers(0, classes - 1)))
        return np.eye(classes)[ids]
    weights = draw(positive_arrays(batch + (classes,), 0.1, 1.0))
    return weights / weights.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("reduction", sorted(REDUCE))
@given(data=st.data())
def test_categorical_crossentropy_from_probabilities(reduction, data):
    batch, classes = data.draw(batch_and_classes(), label="batch, classes")
    y_true = data.draw(one_hot_or_soft(batch, classes), label="y_true")
    # unnormalised on purpose: Keras divides by the sum before clipping
    y_pred = data.draw(positive_arrays(batch + (classes,), 0.05, 1.0), label="y_pred")
    p = np.clip(y_pred / y_pred.sum(axis=-1, keepdims=True), EPS, 1 - EPS)
    expected = REDUCE[reduction](-(y_true * np.log(p)).sum(axis=-1))
    loss = ops.categorical_crossentropy(y_true, T(y_pred), reduction=reduction)
    assert_forward(loss, expected)
    check_op_gradient(lambda t: ops.categorical_crossentropy(y_true, t, reduction=reduction),
                      y_pred)


@given(data=st.data())
def test_categorical_crossentropy_from_logits(data):
    batch, classes = data.draw(batch_and_classes(), label="batch, classes")
    y_true = data.draw(one_hot_or_soft(batch, classes), label="y_true")
    logits = data.draw(arrays(batch + (classes,), bound=5.0), label="logits")
    expected = np.mean(-(y_true * np.log(_softmax(logits, -1))).sum(axis=-1))
    assert_forward(ops.categorical_crossentropy(y_true, T(logits), from_logits=True), expected)
    check_op_gradient(lambda t: ops.categorical_crossentropy(y_true, t, from_logits=True), logits)
    # targets that do not sum to one still get the right gradient (s * softmax(z) - y)
    check_op_gradient(lambda t: ops.categorical_crossentropy(2 * y_true, t, from_logits=True),
                      logits)


def test_categorical_crossentropy_clips_as_keras():
    y_true = np.array([[0.0, 1.0], [1.0, 0.0]])
    y_pred = np.array([[1.0, 0.0], [1.0, 0.0]])  # a certain miss and a certain hit
    loss = ops.categorical_crossentropy(y_true, T(y_pred), reduction="none").numpy()
    np.testing.assert_allclose(loss, [-np.log(EPS), -np.log(1 - EPS)])


@pytest.mark.parametrize("from_logits", [False, True])
@given(data=st.data())
def test_sparse_categorical_crossentropy(from_logits, data):
    batch, classes = data.draw(batch_and_classes(), label="batch, classes")
    labels = data.draw(hnp.arrays(np.int64, batch, elements=st.integers(0, classes - 1)),
                       label="labels")
    if from_logits:
        y_pred = data.draw(arrays(batch + (classes,), bound=5.0), label="logits")
        log_p = np.log(_softmax(y_pred, -1))
    else:
        y_pred = data.draw(positive_arrays(batch + (classes,), 0.05, 1.0), label="probs")
        log_p = np.log(np.clip(y_pred / y_pred.sum(axis=-1, keepdims=True), EPS, 1 - EPS))
    expected = -np.take_along_axis(log_p, labels[..., None], axis=-1)[..., 0]
    for reduction in ("none", "mean"):
        loss = ops.sparse_categorical_crossentropy(labels, T(y_pred), from_logits=from_logits,
                                                   reduction=reduction)
        assert_forward(loss, REDUCE[reduction](expected))
    # the same as categorical cross-entropy on one-hot targets
    one_hot = np.eye(classes)[labels]
    assert_forward(ops.sparse_categorical_crossentropy(labels, T(y_pred), from_logits=from_logits),
                   ops.categorical_crossentropy(one_hot, T(y_pred), from_logits=from_logits).numpy())
    check_op_gradient(lambda t: ops.sparse_categorical_crossentropy(
        labels, t, from_logits=from_logits, reduction="sum"), y_pred)


def test_sparse_categorical_crossentropy_labels():
    logits = T(np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
    base = ops.sparse_categorical_crossentropy(np.array([2, 0]), logits, from_logits=True)
    # a trailing axis of 1 on the labels, float labels and a Tensor of labels all work, as in Keras
    for labels in (np.array([[2], [0]]), np.array([2.0, 0.0]), Tensor(np.array([2, 0]))):
        other = ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        np.testing.assert_allclose(other.numpy(), base.numpy())
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        ops.sparse_categorical_crossentropy(np.array([3, 0]), logits, from_logits=True)
    with pytest.raises(ValueError, match="y_true shape"):
        ops.sparse_categorical_crossentropy(np.array([0, 1, 2]), logits, from_logits=True)


def test_sparse_crossentropy_from_logits_is_exact_for_very_wrong_logits():
    logits = T(np.array([[0.0, -200.0]]))
    loss = ops.sparse_categorical_crossentropy(np.array([1]), logits, from_logits=True)
    np.testing.assert_allclose(loss.numpy(), 200.0)


def test_sparse_crossentropy_from_logits_survives_retain_graph():
    # its backward reuses the softmax buffer in place; a retained second backward must not see it
    z = Tensor(np.random.default_rng(0).standard_normal((4, 5)), requires_grad=True)
    loss = ops.sparse_categorical_crossentropy(np.array([0, 1, 4, 4]), z, from_logits=True)
    loss.backward(retain_graph=True)
    first = z.grad.copy()
    loss.backward()
    np.testing.assert_allclose(z.grad, 2 * first)


@pytest.mark.parametrize("reduction", sorted(REDUCE))
@given(data=st.data())
def test_binary_crossentropy_from_probabilities(reduction, data):
    batch, classes = data.draw(batch_and_classes(), label="shape")
    shape = batch + (classes,)
    y_true = data.draw(positive_arrays(shape, 0.0, 1.0), label="y_true")
    y_pred = data.draw(positive_arrays(shape, 0.05, 0.95), label="y_pred")
    elementwise = -(y_true * np.log(y_pred) + (1 - y_true) * np.log(1 - y_pred))
    loss = ops.binary_crossentropy(T(y_true), T(y_pred), reduction=reduction)
    assert_forward(loss, REDUCE[reduction](elementwise.mean(axis=-1)))
    check_op_gradient(lambda t, p: ops.binary_crossentropy(t, p, reduction=reduction),
                      y_true, y_pred)


def test_binary_crossentropy_clips_as_keras():
    y_true = np.array([[1.0, 0.0, 1.0]])
    y_pred = np.array([[0.0, 1.0, 1.0]])
    p = np.clip(y_pred, EPS, 1 - EPS)
    expected = -(y_true * np.log(p) + (1 - y_true) * np.log(1 - p)).mean(axis=-1)
    loss = ops.binary_crossentropy(y_true, T(y_pred), reduction="none")
    np.testing.assert_allclose(loss.numpy(), expected)
    assert np.all(np.isfinite(loss.numpy()))


def test_binary_crossentropy_is_its_formula_in_ops_clip_ends_included():
    """The op against the same formula written in ops (clip, log, multiply, add), with y_pred
    outside [EPS, 1 - EPS], on its ends and inside: the same losses, and gradients for both
    inputs (none for y_pred where clip changed it)."""
    y_pred = np.array([[0.0, EPS, 0.3, 0.7, 1 - EPS, 1.0, -0.5, 1.5]])
    y_true = np.array([[1.0, 0.0, 0.25, 1.0, 0.5, 0.0, 1.0, 0.0]])

    def composed(t, p):
        p = ops.clip(p, EPS, 1 - EPS)
        return -(t * ops.log(p) + (1 - t) * ops.log(1 - p))

    grads = []
    for loss in (lambda t, p: ops.binary_crossentropy(t, p, reduction="none") * 8,
                 lambda t, p: ops.mean(composed(t, p), axis=-1) * 8):
        t = Tensor(y_true, requires_grad=True, dtype=np.float64)
        p = Tensor(y_pred, requires_grad=True, dtype=np.float64)
        value = loss(t, p)
        ops.sum(value * np.array([1.5])).backward()
        grads.append((value.numpy(), t.grad, p.grad))
    for ours, formula in zip(*grads):
        np.testing.assert_allclose(ours, formula, rtol=1e-12)
    assert (grads[0][2][0, [0, 5, 6, 7]] == 0).all() and (grads[0][2][0, 1:5] != 0).all()


@given(data=st.data())
def test_binary_crossentropy_from_logits(data):
    batch, classes = data.draw(batch_and_classes(), label="shape")
    shape = batch + (classes,)
    y_true = data.draw(positive_arrays(shape, 0.0, 1.0), label="y_true")
    logits = data.draw(arrays(shape, bound=6.0), label="logits")
    s = _sigmoid(logits)
    elementwise = -(y_true * np.log(s) + (1 - y_true) * np.log(1 - s))
    assert_forward(ops.binary_crossentropy(y_true, T(logits), from_logits=True),
                   elementwise.mean(axis=-1).mean(), rtol=1e-9)
    check_op_gradient(lambda z: ops.binary_crossentropy(y_true, z, from_logits=True), logits)
    # stable where the naive formula overflows
    big = ops.binary_crossentropy(np.array([[0.0, 1.0]]), T(np.array([[800.0, -800.0]])),
                                  from_logits=True)
    np.testing.assert_allclose(big.numpy(), 800.0)


@pytest.mark.parametrize("reduction", sorted(REDUCE))
@given(data=st.data())
def test_mean_squared_error(reduction, data):
    shape = data.draw(shapes(min_dims=1), label="shape")
    y_true = data.draw(arrays(shape), label="y_true")
    y_pred = data.draw(arrays(shape), label="y_pred")
    loss = ops.mean_squared_error(T(y_true), T(y_pred), reduction=reduction)
    assert_forward(loss, REDUCE[reduction](((y_pred - y_true) ** 2).mean(axis=-1)))
    check_op_gradient(lambda t, p: ops.mean_squared_error(t, p, reduction=reduction),
                      y_true, y_pred)


@pytest.mark.parametrize("loss", [ops.categorical_crossentropy, ops.binary_crossentropy,
                                  ops.mean_squared_error])
def test_loss_shape_mismatch_names_the_loss_and_shapes(loss):
    with pytest.raises(ValueError, match=rf"{loss.__name__}.*\(2, 3\).*\(2, 4\)"):
        loss(np.ones((2, 3)), T(np.ones((2, 4))))


def test_unknown_reduction_is_an_error():
    with pytest.raises(ValueError, match="reduction"):
        ops.mean_squared_error(np.ones(2), T(np.ones(2)), reduction="avg")


# ---- dropout ----------------------------------------------------------------------------------

@given(shapes(min_dims=1).flatmap(arrays), st.sampled_from([0.1, 0.5, 0.8]),
       st.integers(0, 2**32 - 1))
def test_dropout(x, rate, seed):
    y = ops.dropout(T(x), rate, seed=seed).numpy()
    kept = y != 0
    # kept values are scaled by 1 / (1 - rate), the rest are zero
    np.testing.assert_allclose(y[kept], x[kept] / (1 - rate))
    # the same seed gives the same mask; the gradient goes through the kept values only
    np.testing.assert_array_equal(ops.dropout(T(x), rate, seed=seed).numpy(), y)
    check_op_gradient(lambda t: ops.dropout(t, rate, seed=seed), x)


def test_dropout_training_flag_and_rate():
    x = Tensor(np.ones((200, 50)))
    assert ops.dropout(x, 0.5, training=False) is x
    assert ops.dropout(x, 0.0) is x
    y = ops.dropout(x, 0.3, rng=np.random.default_rng(1)).numpy()
    assert abs((y == 0).mean() - 0.3) < 0.02
    assert abs(y.mean() - 1.0) < 0.03  # inverted dropout keeps the expectation
    assert y.dtype == np.float32
    rng = np.random.default_rng(2)  # a shared generator draws a new mask each call
    assert not np.array_equal(ops.dropout(x, 0.5, rng=rng).numpy(),
                              ops.dropout(x, 0.5, rng=rng).numpy())
    with pytest.raises(ValueError, match="rate"):
        ops.dropout(x, 1.0)


# ---- embedding --------------------------------------------------------------------------------

@given(data=st.data())
def test_embedding(data):
    vocab, dim = data.draw(st.integers(1, 6), label="vocab"), data.draw(st.integers(1, 3),
                                                                        label="dim")
    table = data.draw(arrays((vocab, dim)), label="table")
    ids = data.draw(hnp.arrays(np.int64, shapes(0, 2, max_side=5),
                               elements=st.integers(0, vocab - 1)), label="ids")
    assert_forward(ops.embedding(ids, T(table)), table[ids])
    check_op_gradient(lambda t: ops.embedding(ids, t), table)


def test_embedding_gradient_scatter_adds_repeated_ids():
    table = Tensor(np.zeros((4, 2)), requires_grad=True)
    ops.embedding(np.array([[1, 1], [3, 1]]), table).sum().backward()
    np.testing.assert_array_equal(table.grad, [[0, 0], [3, 3], [0, 0], [1, 1]])


def test_embedding_rejects_bad_ids():
    table = Tensor(np.zeros((4, 2)), requires_grad=True)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        ops.embedding(np.array([4]), table)
    with pytest.raises(TypeError, match="integers"):
        ops.embedding(np.array([1.0]), table)


# ---- every exported op is covered -------------------------------------------------------------

CORE_OPS = {
    "add", "subtract", "multiply", "divide", "power", "negative", "exp", "log", "sqrt", "abs",
    "tanh", "sigmoid", "relu", "leaky_relu", "softplus", "clip", "maximum", "minimum", "where",
    "cast", "sum", "mean", "var", "max", "min", "logsumexp", "reshape", "transpose",
    "expand_dims", "squeeze", "broadcast_to", "concatenate", "stack", "split", "pad", "flatten",
    "getitem", "matmul", "affine", "gram", "softmax", "log_softmax", "categorical_crossentropy",
    "sparse_categorical_crossentropy", "binary_crossentropy", "mean_squared_error", "dropout",
    "embedding",
}


def test_every_core_op_is_exported():
    missing = sorted(name for name in CORE_OPS if not callable(getattr(ops, name, None)))
    assert not missing, f"missing from micrograd_gen.ops: {missing}"
