"""Hypothesis strategies for op tests, shared by every test file: draw shapes, values and axes here
rather than writing them again, and check gradients with `check_op_gradient`.

    from hypothesis import given
    from strategies import arrays, array_and_axes, broadcastable_shapes, check_op_gradient, shapes

    @given(shapes(max_dims=3).flatmap(lambda s: arrays(s, margin=0.05)))
    def test_relu_gradient(x):
        check_op_gradient(ops.relu, x)

What is here (all values float64, the dtype gradient checks run in):
- shapes(min_dims, max_dims, min_side, max_side): small shapes; sides of 1 come up often, so
  broadcasting and squeezing paths get exercised.
- broadcastable_shapes(n, ...): a tuple of n shapes that broadcast together (NumPy's rules).
- arrays(shape, bound, margin, avoid, distinct): bounded values in [-bound, bound].
    margin > 0 keeps every value more than `margin` away from each point in `avoid` (default 0,
    the kink of relu / abs / leaky_relu; pass avoid=(low, high) for clip's corners).
    distinct=True spreads the values so that no two are closer than about bound/size: max, min,
    sort-like ops then have no ties, and a finite-difference step cannot reorder them.
- positive_arrays(shape, low, high): values in [low, high] (log, sqrt, divide by, power base).
- axes(ndim): None, an int (negatives too) or a tuple of distinct axes (negatives too).
- array_and_axes(...): (array, axis) drawn together.
- check_op_gradient(fn, *arrays, **kw): micrograd_gen.gradcheck.gradcheck on fn(*tensors) in
  float64; kw goes to gradcheck (directions, full_jacobian_max, atol, rtol, ...).
- assert_forward(tensor, expected, **tol): the forward result against a NumPy reference.
The number of examples comes from the hypothesis profile in conftest.py ("ci" when CI is set);
override it per test with @settings(max_examples=...) only where a test is slow.
"""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from micrograd_gen.gradcheck import gradcheck


def shapes(min_dims=0, max_dims=3, min_side=1, max_side=4):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


def broadcastable_shapes(n=2, min_dims=0, max_dims=3, min_side=1, max_side=4):
    """n shapes that broadcast together; some share the full shape, some drop or squash axes."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=n, min_dims=min_dims, max_dims=max_dims, min_side=min_side,
        max_side=max_side).map(lambda drawn: drawn.input_shapes)


def _element(bound, margin, avoid):
    values = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    if margin > 0:
        values = values.filter(lambda v: all(abs(v - p) > margin for p in avoid))
    return values


@st.composite
def _distinct_array(draw, shape, bound):
    # A shuffled, jittered grid: neighbours are at least bound/size apart, so no ties and no
    # reordering under a finite-difference step.
    size = int(np.prod(shape))
    order = np.array(draw(st.permutations(range(size))), dtype=np.float64)
    jitter = np.array(draw(st.lists(st.floats(-0.25, 0.25), min_size=size, max_size=size)))
    spacing = 2 * bound / max(size, 1)
    return (-bound + (order + 0.5 + jitter) * spacing).reshape(shape)


def arrays(shape, bound=3.0, margin=0.0, avoid=(0.0,), distinct=False):
    """float64 arrays of `shape` with values in [-bound, bound] (see the module docstring)."""
    shape = tuple(shape)
    if distinct:
        drawn = _distinct_array(shape, bound)
        if margin > 0:
            drawn = drawn.filter(
                lambda a: all(np.all(np.abs(a - p) > margin) for p in avoid))
        return drawn
    return hnp.arrays(np.float64, shape, elements=_element(bound, margin, avoid))


def positive_arrays(shape, low=0.5, high=3.0):
    return hnp.arrays(np.float64, tuple(shape),
                      elements=st.floats(low, high, allow_nan=False, allow_infinity=False))


def axes(ndim, allow_none=True, allow_tuple=True):
    """An axis argument for an array of `ndim` dimensions: None, int or tuple, negatives included."""
    options = [st.none()] if allow_none else []
    if ndim > 0:
        options.append(st.integers(-ndim, ndim - 1))
        if allow_tuple:
            options.append(
                st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim).flatmap(
                    lambda chosen: st.tuples(*[st.sampled_from((a, a - ndim)) for a in chosen])))
    return st.one_of(options)


def array_and_axes(min_dims=0, max_dims=3, max_side=4, allow_none=True, allow_tuple=True,
                   **array_kw):
    """(array, axis) drawn together, the axis valid for the array."""
    return shapes(min_dims=min_dims, max_dims=max_dims, max_side=max_side).flatmap(
        lambda shape: st.tuples(arrays(shape, **array_kw),
                                axes(len(shape), allow_none, allow_tuple)))


def check_op_gradient(fn, *arrays, **kw):
    """Check fn's backward by finite differences in float64 (gradcheck raises on failure).

    fn takes one Tensor per array; pass integer or fixed arguments through a closure.
    """
    kw.setdefault("dtype", np.float64)
    return gradcheck(fn, list(arrays), **kw)


def assert_forward(tensor, expected, rtol=1e-10, atol=1e-12):
    """A forward result (a Tensor) against its NumPy reference: same shape, close values."""
    got = tensor.numpy()
    expected = np.asarray(expected)
    assert got.shape == expected.shape, f"shape {got.shape}, expected {expected.shape}"
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)
