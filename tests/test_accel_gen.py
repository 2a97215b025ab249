"""The fast paths of the VAE's and the DCGAN's ops against their references, on drawn inputs:
ReLU and LeakyReLU (accel/elementwise.py), forward and gradient, bit for bit."""
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import micrograd_gen as mg
from micrograd_gen import ops
from micrograd_gen.accel import elementwise


def run_both(fn, x, g):
    """(y, dx) of fn on the fast path and on the reference."""
    results = []
    for fast in (True, False):
        with mg.fast_paths(fast):
            t = mg.Tensor(x, requires_grad=True, dtype=x.dtype)
            y = fn(t)
            y.backward(g)
            results.append((y.numpy(), t.grad))
    return results


@contextmanager
def small_pieces():
    """Pieces and the size threshold small enough that drawn arrays take the fast path, cut into
    several pieces over every thread."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(elementwise, "_PIECE", 7)
        patch.setattr(elementwise, "_MIN_SIZE", 1)
        yield


activation_cases = st.fixed_dictionaries({
    "shape": st.lists(st.integers(1, 9), min_size=1, max_size=4).map(tuple),
    "dtype": st.sampled_from([np.float32, np.float64]),
    "slope": st.sampled_from([None, 0.0, 0.2, 0.3, 1 / 3, 1.0]),   # None: relu
    "zeros": st.booleans(),                                        # exact zeros in x
    "strided": st.booleans(),                  # x and g views of larger arrays, as a conv's dX
    "seed": st.integers(0, 2 ** 16),
})


@settings(deadline=None)
@given(case=activation_cases)
def test_relu_and_leaky_relu_fast_paths_are_the_reference(case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"]).astype(case["dtype"])
    if case["zeros"]:
        x[rng.random(x.shape) < 0.3] = 0
    g = rng.standard_normal(case["shape"]).astype(case["dtype"])
    if case["strided"]:
        x, g = (np.pad(a, [(0, 1)] * a.ndim)[tuple(slice(0, n) for n in a.shape)] for a in (x, g))
    slope = case["slope"]
    fn = ops.relu if slope is None else (lambda t: ops.leaky_relu(t, slope))
    with small_pieces():
        (y, dx), (y_ref, dx_ref) = run_both(fn, x, g)
    assert y.dtype == y_ref.dtype and dx.dtype == dx_ref.dtype
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)


def test_fast_paths_take_large_arrays_and_decline_the_rest():
    x = np.linspace(-1, 1, elementwise._MIN_SIZE, dtype=np.float32)
    y, positive = elementwise.leaky_relu_forward(x, 0.2)
    np.testing.assert_array_equal(y, np.where(x > 0, x, np.float32(0.2) * x))
    np.testing.assert_array_equal(positive, x > 0)
    assert elementwise.leaky_relu_forward(x[:10], 0.2) is NotImplemented        # small
    assert elementwise.leaky_relu_forward(x, 1.5) is NotImplemented             # slope > 1
    assert elementwise.relu_forward(np.float32(1)) is NotImplemented            # no axis
    assert elementwise.relu_backward(x, positive[:-1]) is NotImplemented        # shapes differ


def test_no_mask_is_kept_where_no_gradient_will_be_asked_for():
    """Under no_grad (the DCGAN's generator for the discriminator's step) the activations write
    their output alone, the same numbers as with the mask."""
    x = np.linspace(-1, 1, elementwise._MIN_SIZE, dtype=np.float32)
    for forward, args in ((elementwise.leaky_relu_forward, (0.2,)), (elementwise.relu_forward, ())):
        kept, mask = forward(x, *args)
        alone, none = forward(x, *args, keep_mask=False)
        assert none is None and mask is not None
        np.testing.assert_array_equal(alone, kept)
    with mg.fast_paths(True):
        t = mg.Tensor(x, requires_grad=True)
        with mg.no_grad():
            op = ops.leaky_relu(t, 0.2)
        assert op.numpy().tobytes() == ops.leaky_relu(t, 0.2).numpy().tobytes()


def test_leaky_relu_backward_after_switching_the_fast_paths_off():
    """A graph built on the fast path (which keeps a mask, not the slopes) still differentiates
    when the fast paths are off by the time backward runs."""
    x = np.linspace(-1, 1, elementwise._MIN_SIZE, dtype=np.float32)
    with mg.fast_paths(True):
        t = mg.Tensor(x, requires_grad=True)
        y = ops.leaky_relu(t, 0.2)
    with mg.fast_paths(False):
        y.backward(np.ones_like(x))
    np.testing.assert_array_equal(t.grad, np.where(x > 0, 1, np.float32(0.2)).astype(np.float32))


@settings(deadline=None)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=4).map(tuple),
       slope=st.sampled_from([0.0, 0.2, 1.0]), seed=st.integers(0, 2 ** 16))
def test_strided_views_are_read_in_place(shape, slope, seed):
    """A conv's gradient is often a view of a wider buffer: the fast paths read it as it is."""
    rng = np.random.default_rng(seed)
    wide = [rng.standard_normal(tuple(n + 2 for n in shape)).astype(np.float32) for _ in range(2)]
    x, g = (a[tuple(slice(1, n + 1) for n in shape)] for a in wide)
    with small_pieces():
        y, positive = elementwise.leaky_relu_forward(x, slope)
        dx = elementwise.leaky_relu_backward(g, positive, slope)
        relu_y, relu_positive = elementwise.relu_forward(x)
        relu_dx = elementwise.relu_backward(g, relu_positive)
    slopes = np.where(x > 0, np.float32(1), np.float32(slope))
    np.testing.assert_array_equal(y, x * slopes)
    np.testing.assert_array_equal(dx, g * slopes)
    np.testing.assert_array_equal(relu_y, x * (x > 0))
    np.testing.assert_array_equal(relu_dx, g * (x > 0))
    assert y.flags.c_contiguous and dx.flags.c_contiguous


@settings(deadline=None, max_examples=15)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=4).map(tuple),
       strided=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_gradient_sums_and_zeros_over_the_workers(shape, strided, seed):
    """add_into adds in place (a strided addend read as it is); zeros are zeros."""
    rng = np.random.default_rng(seed)
    total = rng.standard_normal(shape).astype(np.float32)
    wide = rng.standard_normal(tuple(n + 1 for n in shape)).astype(np.float32)
    g = wide[tuple(slice(1, None) for _ in shape)]
    if not strided:
        g = g.copy()
    want = total + g
    with small_pieces():
        assert elementwise.add_into(total, g) is total
        z = elementwise.zeros(shape, np.float64, g)
    np.testing.assert_array_equal(total, want)
    assert z.shape == shape and z.dtype == np.float64 and not z.any()


def test_a_feature_map_read_by_three_ops_and_sliced():
    """Large enough for the fast paths: a layer's output read by three ops (its gradients summed
    in place over the workers) and sliced per image (each slice's gradient starting from
    zeros), as style transfer does; the gradient equals the reference's."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 64, 40, 32)).astype(np.float32)
    grads = []
    for fast in (True, False):
        with mg.fast_paths(fast):
            t = mg.Tensor(x, requires_grad=True)
            h = t * 2.0
            loss = (h * h).sum() + (h[1] * 3.0).sum() + (h[2] ** 3).sum()
            loss.backward()
            grads.append(t.grad)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-6)
