"""gradcheck itself: it passes correct ops and catches wrong backwards, naming what is wrong."""
import numpy as np
import pytest

from micrograd_gen import Function, Tensor, ops
from micrograd_gen.gradcheck import TOLERANCES, GradcheckError, gradcheck


class WrongSquare(Function):
    """x ** 2 with a backward that forgets the factor 2 for elements past the first."""

    def forward(self, a):
        self.a = a
        return a * a

    def backward(self, g):
        grad = g * self.a
        grad.reshape(-1)[0] *= 2
        return grad


class WrongSecondInput(Function):
    """a * b whose gradient for b has the wrong sign."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        return g * self.b, -g * self.a


def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("fn, shapes", [
    (lambda x: ops.tanh(x) * x, [(3, 4)]),
    (lambda a, b: ops.softmax(a @ b, axis=-1), [(2, 3), (3, 5)]),
    (lambda x: ops.logsumexp(x, axis=0), [(20, 10)]),           # 200 elements: directional only
    (lambda a, b: (a - b) / (1 + b * b), [(4, 1), (5,)]),
])
def test_correct_ops_pass(fn, shapes):
    arrays = [rng().standard_normal(s) for s in shapes]
    assert gradcheck(fn, arrays)


def test_float32_mode_passes_a_correct_op():
    x = rng().standard_normal((3, 4)).astype(np.float32)
    assert gradcheck(lambda t: ops.sigmoid(t) * t, [x], dtype=np.float32)
    assert np.dtype(np.float32) in TOLERANCES and np.dtype(np.float64) in TOLERANCES


def test_a_wrong_backward_fails_naming_the_worst_element():
    x = np.array([[0.5, -1.0, 3.0], [2.0, 0.25, -0.5]])
    with pytest.raises(GradcheckError) as failure:
        gradcheck(lambda t: WrongSquare.apply(t), [x])
    message = str(failure.value)
    # the element with the largest |x| is the furthest off: (0, 2), where x = 3
    assert "input 0 element (0, 2)" in message
    assert "analytic" in message and "numeric" in message


def test_a_wrong_backward_of_a_large_input_fails_naming_the_input():
    a, b = rng().standard_normal((10, 10)), rng().standard_normal((10, 10))
    with pytest.raises(GradcheckError, match=r"directional derivative 0.*worst is input 1 "
                                             r"of shape \(10, 10\)"):
        gradcheck(lambda x, y: WrongSecondInput.apply(x, y), [a, b])


def test_the_elementwise_check_also_names_the_second_input():
    a, b = rng().standard_normal(3), rng().standard_normal(3)
    with pytest.raises(GradcheckError, match=r"input 1 element \(\d,\)"):
        gradcheck(lambda x, y: WrongSecondInput.apply(x, y), [a, b])


def test_an_output_that_ignores_its_inputs_is_reported():
    with pytest.raises(GradcheckError, match="does not depend"):
        gradcheck(lambda t: Tensor(np.ones(2)), [np.ones(2)])


def test_fn_must_return_a_tensor():
    with pytest.raises(TypeError, match="must return a Tensor"):
        gradcheck(lambda t: t.numpy(), [np.ones(2)])


def test_inputs_are_not_modified():
    x = rng().standard_normal((2, 3))
    before = x.copy()
    gradcheck(lambda t: t * t, [x, ])
    np.testing.assert_array_equal(x, before)


def test_an_unused_input_gets_a_zero_gradient_and_passes():
    assert gradcheck(lambda a, b: a * 2, [np.ones(3), np.ones(2)])


# ---- non-finite values fail by name (issue 19, rule 7) ---------------------------------------------

class NaNBackward(Function):
    """x * 3 whose backward returns NaN: every comparison with NaN is False, so a check that only
    compares would pass it."""

    def forward(self, a):
        return a * 3

    def backward(self, g):
        return g * np.nan


@pytest.mark.parametrize("case, fn, x, message", [
    ("nan backward", lambda t: NaNBackward.apply(t), [1.0, 2.0],
     r"the backward's gradient for input 0 has 2 non-finite values .* first nan at element \(0,\)"),
    ("nan backward, large", lambda t: NaNBackward.apply(t), np.arange(1.0, 101.0),
     r"the backward's gradient for input 0 has 100 non-finite"),
    ("log at 0", lambda t: ops.log(t), [0.0, 1.0],
     r"fn's output has 1 non-finite values .* -inf at element \(0,\) at the given inputs"),
    ("sqrt at 0", lambda t: ops.sqrt(t), [0.0, 1.0],
     r"the backward's gradient for input 0 .* inf at element \(0,\)"),
    ("log moved past 0", lambda t: ops.log(t), [5e-7, 1.0],
     r"fn's output has 1 non-finite .* with input 0 element \(0,\) moved by -h"),
    ("nan input", lambda t: t * 2, [np.nan, 1.0], r"input 0 has 1 non-finite values"),
])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's own note on log(0), sqrt(-h)
def test_non_finite_values_fail_the_check(case, fn, x, message):
    with pytest.raises(GradcheckError, match=message):
        gradcheck(fn, [np.asarray(x, dtype=np.float64)])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_nan_only_along_a_direction_fails_there():
    # 200 elements: no element-by-element pass, so the directional evaluation must catch it
    x = np.full(200, 1e-7)
    with pytest.raises(GradcheckError, match="moved along a random direction"):
        gradcheck(lambda t: ops.sum(ops.sqrt(t)) * 1.0, [x], eps=1e-3)
