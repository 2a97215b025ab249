"""Tensor semantics: dtypes, backward and its cotangent, accumulation, freeing the graph,
no_grad, broadcasting, operators, multi-output Functions and error messages."""
import gc
import weakref

import numpy as np
import pytest

import micrograd_gen as mg
from micrograd_gen import Function, Tensor, ops


# ---- construction and dtypes ------------------------------------------------------------------

def test_float_data_becomes_float32_unless_dtype_says_otherwise():
    assert Tensor(1.5).dtype == np.float32
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(np.ones(3)).dtype == np.float32  # float64 array
    assert Tensor(np.ones(3), dtype=np.float64).dtype == np.float64
    assert Tensor([1, 2]).dtype.kind == "i"  # integer data keeps an integer dtype
    assert Tensor(np.array([True])).dtype == bool


def test_requires_grad_needs_a_float_dtype():
    assert Tensor([1.0], requires_grad=True).requires_grad
    assert not Tensor([1.0]).requires_grad
    with pytest.raises(TypeError, match="float dtype"):
        Tensor([1, 2], requires_grad=True)


def test_properties_and_conversions():
    a = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    t = Tensor(a)
    assert t.shape == (2, 3) and t.ndim == 2 and t.size == 6 and len(t) == 2
    assert isinstance(t.numpy(), np.ndarray)
    np.testing.assert_array_equal(t.numpy(), a)
    assert Tensor(2.5).item() == 2.5 and float(Tensor(2.5)) == 2.5
    assert t.device == "numpy"
    assert "shape=(2, 3)" in repr(t) and "float32" in repr(t)
    assert Tensor(t).data is t.data  # wrapping a Tensor shares its array
    assert Tensor(a).data is a  # so does wrapping a float32 array
    assert bool(Tensor(2.0) > 1) and not Tensor([0.0])
    with pytest.raises(ValueError, match="ambiguous"):
        bool(t)


def test_detach_shares_data_and_leaves_the_graph():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = x * 3
    d = y.detach()
    assert d.data is y.data and not d.requires_grad and d.is_leaf
    (d * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 6.0])  # no gradient through d


# ---- backward ---------------------------------------------------------------------------------

def test_backward_of_a_scalar_seeds_with_one():
    x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0, 6.0])
    assert x.grad.dtype == np.float32


def test_backward_with_an_explicit_cotangent():
    x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * x
    y.backward(np.array([1.0, 0.0, -1.0]))
    np.testing.assert_array_equal(x.grad, [2.0, 0.0, -6.0])
    z = Tensor([[1.0, 2.0]], requires_grad=True)
    (z * 2).backward(Tensor([[3.0, 4.0]]))  # a Tensor cotangent works too
    np.testing.assert_array_equal(z.grad, [[6.0, 8.0]])


def test_backward_of_a_non_scalar_needs_a_cotangent():
    y = Tensor([1.0, 2.0], requires_grad=True) * 2
    with pytest.raises(RuntimeError, match=r"non-scalar.*\(2,\).*cotangent"):
        y.backward()
    with pytest.raises(ValueError, match=r"cotangent shape \(3,\).*\(2,\)"):
        y.backward(np.ones(3))


def test_backward_on_a_one_element_tensor_of_any_rank():
    x = Tensor([[2.0]], requires_grad=True)
    (x * x).backward()
    np.testing.assert_array_equal(x.grad, [[4.0]])


def test_backward_without_requires_grad_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (Tensor([1.0]) * 2).sum().backward()


def test_backward_on_a_leaf():
    x = Tensor(3.0, requires_grad=True)
    x.backward()
    assert x.grad == 1.0


def test_gradients_accumulate_until_zero_grad():
    x = Tensor([1.0, 2.0], requires_grad=True)
    for _ in range(3):
        (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [6.0, 12.0])
    x.zero_grad()
    assert x.grad is None
    (x * 5).sum().backward()
    np.testing.assert_array_equal(x.grad, [5.0, 5.0])


def test_an_input_used_twice_gets_both_gradients():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    (y + y * x + x).sum().backward()  # d/dx (2x + 2x^2 + x) = 3 + 4x
    np.testing.assert_array_equal(x.grad, [7.0, 11.0])



def test_slices_add_into_the_gradient_sum_their_input_already_has(monkeypatch):
    # style transfer slices each layer's features per image: a basic slice waits for the input's
    # other readers and adds into their sum (GetItem.backward_into) instead of making zeros of
    # the input's size; fancy indexing, which may repeat cells, still goes through backward
    from micrograd_gen.ops.shape import GetItem, _is_basic
    through_backward = []
    backward = GetItem.backward

    def spy(self, g):
        through_backward.append(_is_basic(self.index))
        return backward(self, g)
    monkeypatch.setattr(GetItem, "backward", spy)
    data = np.arange(24, dtype=np.float64).reshape(3, 2, 4) / 10
    x = Tensor(data, requires_grad=True, dtype=np.float64)
    h = x * 2.0
    loss = ((h[1] ** 2).sum() + (h[2] * 3.0).sum() + h[0, 1:].sum() + h[[0, 0, 2]].sum()
            + (h * h).sum())
    loss.backward()
    want = np.zeros_like(data)
    want[1] += 2 * 2 * (2 * data[1])                 # d/dx of (2x)^2
    want[2] += 3.0 * 2
    want[0, 1:] += 2
    want[0] += 2 * 2                                  # index 0 taken twice
    want[2] += 2
    want += 2 * 2 * (2 * data)                        # d/dx of (2x)^2 everywhere
    np.testing.assert_allclose(x.grad, want, rtol=1e-12)
    # the fancy index only: the slices waited for the product's gradient and added into it
    assert through_backward == [False]

    # with slices its only readers, the first makes the sum of zeros and the others add into it
    through_backward.clear()
    x = Tensor(data, requires_grad=True, dtype=np.float64)
    h = x * 2.0
    ((h[0] * 5.0).sum() + h[1, :, 2:].sum() + h[2].sum()).backward()
    want = np.zeros_like(data)
    want[0], want[1, :, 2:], want[2] = 10.0, 2.0, 2.0
    np.testing.assert_array_equal(x.grad, want)
    assert through_backward == [True]


def test_gradients_summed_in_place_never_touch_arrays_others_hold():
    # h feeds four ops. Their gradients: the caller's cotangent passed on (add), a view
    # (reshape), fresh arrays (mul); the sum is made in place only into arrays this pass made.
    x = Tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    h = x * 1.0
    cotangent = np.arange(4, dtype=np.float32)
    before = cotangent.copy()
    y = h + h.reshape((2, 2)).reshape((4,)) + h * 3.0 + h * h
    y.backward(cotangent)
    # dy/dx = 1 + 1 + 3 + 2x, times the cotangent
    np.testing.assert_allclose(x.grad, cotangent * (5.0 + 2 * x.data))
    np.testing.assert_array_equal(cotangent, before)

    # an input used by three ops, through a multi-consumer chain, twice in a row
    a = Tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
    b = a * 2.0
    for _ in range(2):
        (b.sum() + (b * b).sum() + (b ** 3).sum()).backward(retain_graph=True)
    want = 2 * (2.0 * (1 + 2 * b.data + 3 * b.data ** 2))
    np.testing.assert_allclose(a.grad, want, rtol=1e-6)


def test_a_leafs_grad_is_its_own_array():
    # add's backward hands the same array to both inputs, and a cotangent belongs to the caller:
    # neither may end up shared with a leaf's .grad, which later backward calls update in place.
    x = Tensor([1.0, 2.0], requires_grad=True)
    w = Tensor([3.0, 4.0], requires_grad=True)
    cotangent = np.ones(2, dtype=np.float32)
    (x + w).backward(cotangent)
    assert x.grad is not w.grad and not np.shares_memory(x.grad, w.grad)
    assert not np.shares_memory(x.grad, cotangent)
    (x + w).backward(cotangent)
    np.testing.assert_array_equal(cotangent, [1.0, 1.0])
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])
    # a reduction's backward is a read-only broadcast view: the leaf still gets a writable copy
    z = Tensor(np.ones((2, 3)), requires_grad=True)
    z.sum().backward()
    assert z.grad.flags.writeable
    z.grad += 1


class SameArrayTwice(Function):
    """a + b whose backward returns one fresh array for both inputs."""

    def forward(self, a, b):
        return a + b

    def backward(self, g):
        d = g * 1  # fresh, and handed to both inputs
        return d, d


def test_one_fresh_array_returned_for_two_leaves_is_not_shared_by_them():
    x = Tensor([1.0, 2.0], requires_grad=True)
    w = Tensor([3.0, 4.0], requires_grad=True)
    SameArrayTwice.apply(x, w).sum().backward()
    assert not np.shares_memory(x.grad, w.grad)
    x.grad += 10
    np.testing.assert_array_equal(w.grad, [1.0, 1.0])


def test_one_fresh_array_returned_for_a_leaf_and_an_inner_node():
    # the leaf must not adopt an array that the inner node's backward still reads
    x = Tensor([1.0, 2.0], requires_grad=True)
    inner = x * 3
    y = SameArrayTwice.apply(x, inner) * 2
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [8.0, 8.0])  # 2 + 2 * 3


def test_a_fresh_gradient_is_adopted_without_a_copy():
    captured = {}

    class Fresh(Function):
        def forward(self, a):
            return a * 2

        def backward(self, g):
            captured["grad"] = g * 2
            return captured["grad"]

    x = Tensor(np.ones(3), requires_grad=True)
    Fresh.apply(x).backward(np.ones(3))
    assert x.grad is captured["grad"]


def test_only_leaves_keep_a_gradient():
    x = Tensor([1.0], requires_grad=True)
    y = x * 2
    (y * 3).sum().backward()
    assert y.grad is None and x.grad is not None


def test_a_frozen_input_gets_no_gradient():
    x = Tensor([1.0, 2.0], requires_grad=True)
    w = Tensor([3.0, 4.0])
    (x * w).sum().backward()
    assert w.grad is None


# ---- the graph: retain, free, depth -----------------------------------------------------------

def test_second_backward_needs_retain_graph():
    x = Tensor([1.0, 2.0], requires_grad=True)
    loss = (x.exp() * x).sum()
    loss.backward(retain_graph=True)
    first = x.grad.copy()
    loss.backward()
    np.testing.assert_allclose(x.grad, 2 * first)
    with pytest.raises(RuntimeError, match="already freed.*retain_graph=True"):
        loss.backward()


def test_backward_through_a_freed_part_of_a_graph_is_an_error():
    x = Tensor([1.0, 2.0], requires_grad=True)
    shared = x.tanh()
    (shared * 2).sum().backward()
    with pytest.raises(RuntimeError, match="already freed"):
        (shared * 3).sum().backward()


def test_graph_is_freed_after_backward():
    x = Tensor(np.ones(1000), requires_grad=True)
    hidden = x.tanh()                    # saved by tanh (its output) and by multiply (an input)
    saved = weakref.ref(hidden.data)
    loss = (hidden * hidden).sum()
    del hidden
    gc.collect()
    assert saved() is not None           # the graph holds it until backward
    loss.backward()
    gc.collect()
    assert saved() is None               # backward let it go
    assert loss._ctx.parents == ()


def test_retain_graph_keeps_saved_arrays():
    x = Tensor(np.ones(10), requires_grad=True)
    hidden = x.tanh()
    saved = weakref.ref(hidden.data)
    loss = (hidden * hidden).sum()
    del hidden
    loss.backward(retain_graph=True)
    gc.collect()
    assert saved() is not None


def test_a_10000_node_chain():
    x = Tensor([0.5], requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0001 ** 10_000], rtol=1e-3)


def test_a_wide_graph_calls_each_backward_once():
    calls = []

    class Counted(Function):
        def forward(self, a):
            return a * 1

        def backward(self, g):
            calls.append(1)
            return g

    x = Tensor([1.0], requires_grad=True)
    shared = Counted.apply(x)
    total = shared
    for _ in range(50):
        total = total + shared
    total.sum().backward()
    assert len(calls) == 1
    np.testing.assert_array_equal(x.grad, [51.0])


# ---- no_grad ----------------------------------------------------------------------------------

def test_no_grad_records_nothing():
    x = Tensor([1.0, 2.0], requires_grad=True)
    assert mg.is_grad_enabled()
    with mg.no_grad():
        assert not mg.is_grad_enabled()
        y = x * 2 + 1
        with mg.no_grad():
            pass
        assert not mg.is_grad_enabled()  # nesting restores the outer state
    assert mg.is_grad_enabled()
    assert not y.requires_grad and y._ctx is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_no_grad_restores_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with mg.no_grad():
            1 / 0
    assert mg.is_grad_enabled()


# ---- broadcasting -----------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["add", "subtract", "multiply", "divide", "power", "maximum"])
def test_broadcast_gradients_take_each_inputs_shape(op):
    a = Tensor(np.full((3, 1), 2.0), requires_grad=True)
    b = Tensor(np.full((1, 4), 1.5), requires_grad=True)
    c = Tensor(np.full((4,), 1.0), requires_grad=True)
    getattr(ops, op)(getattr(ops, op)(a, b), c).sum().backward()
    assert a.grad.shape == (3, 1) and b.grad.shape == (1, 4) and c.grad.shape == (4,)


def test_broadcast_gradient_sums_over_the_stretched_axes():
    a = Tensor(np.ones((3, 1)), requires_grad=True)
    b = Tensor(np.ones(4), requires_grad=True)
    (a + b).sum().backward()
    np.testing.assert_array_equal(a.grad, np.full((3, 1), 4.0))
    np.testing.assert_array_equal(b.grad, np.full(4, 3.0))


def test_broadcasting_mismatch_names_the_op_and_both_shapes():
    with pytest.raises(ValueError, match=r"^add:.*\(2, 3\), \(4,\)"):
        Tensor(np.ones((2, 3))) + Tensor(np.ones(4))
    with pytest.raises(ValueError, match=r"^multiply:.*\(2, 3\), \(2,\)"):
        Tensor(np.ones((2, 3))) * np.ones(2)


def test_matmul_mismatch_names_the_op_and_both_shapes():
    with pytest.raises(ValueError, match=r"^matmul:.*\(3\).*\(4\).*\(2, 3\), \(4, 5\)"):
        Tensor(np.ones((2, 3))) @ Tensor(np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"^matmul: the batch axes \(2,\) and \(5,\)"):
        Tensor(np.ones((2, 3, 4))) @ Tensor(np.ones((5, 4, 2)))
    with pytest.raises(ValueError, match=r"^matmul:.*\(3,\), \(4,\)"):
        Tensor(np.ones(3)) @ Tensor(np.ones(4))
    with pytest.raises(ValueError, match="^matmul:.*at least one dimension"):
        Tensor(2.0) @ Tensor(np.ones(3))


# ---- operators --------------------------------------------------------------------------------

OPERATORS = [
    ("+", lambda a, b: a + b), ("-", lambda a, b: a - b), ("*", lambda a, b: a * b),
    ("/", lambda a, b: a / b), ("**", lambda a, b: a ** b),
]


@pytest.mark.parametrize("name, fn", OPERATORS)
@pytest.mark.parametrize("other_kind", ["tensor", "ndarray", "scalar"])
def test_operators_and_their_reflections(name, fn, other_kind):
    x = np.array([1.5, 2.0, 2.5], dtype=np.float32)
    o = {"tensor": np.array([0.5, 1.0, 2.0], dtype=np.float32),
         "ndarray": np.array([0.5, 1.0, 2.0]), "scalar": 1.5}[other_kind]
    other = Tensor(o) if other_kind == "tensor" else o
    for left, right, expected in [(Tensor(x), other, fn(x, np.float32(o))),
                                  (other, Tensor(x), fn(np.float32(o), x))]:
        out = fn(left, right)
        assert isinstance(out, Tensor), f"{type(left).__name__} {name} {type(right).__name__}"
        assert out.dtype == np.float32
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)


def test_matmul_operator_with_arrays():
    a = np.arange(6.0).reshape(2, 3)
    b = np.arange(12.0).reshape(3, 4)
    np.testing.assert_allclose((Tensor(a) @ b).numpy(), a @ b)
    np.testing.assert_allclose((a @ Tensor(b)).numpy(), a @ b)


def test_unary_operators_and_method_spellings():
    x = Tensor(np.array([[-1.0, 2.0, -3.0]]), requires_grad=True)
    np.testing.assert_array_equal((-x).numpy(), [[1, -2, 3]])
    np.testing.assert_array_equal(abs(x).numpy(), [[1, 2, 3]])
    assert (+x) is x
    assert x.T.shape == (3, 1) and x.transpose().shape == (3, 1)
    assert x.reshape(3).shape == (3,) and x.reshape(3, 1).shape == (3, 1)
    assert x.sum(axis=1).shape == (1,) and x.mean().shape == ()
    assert x.max().item() == 2.0 and x.min().item() == -3.0
    np.testing.assert_array_equal(x.relu().numpy(), [[0, 2, 0]])
    assert x.astype(np.float64).dtype == np.float64


def test_comparisons_return_non_differentiable_tensors():
    x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    for result, expected in [(x < 2, [1, 0, 0]), (x <= 2, [1, 1, 0]), (x > 2, [0, 0, 1]),
                             (x >= 2, [0, 1, 1]), (x == 2, [0, 1, 0]), (x != 2, [1, 0, 1]),
                             (x == Tensor([1.0, 0.0, 3.0]), [1, 0, 1]),
                             (np.array([2.0, 2.0, 2.0]) < x, [0, 0, 1])]:
        assert isinstance(result, Tensor) and result.dtype == bool
        assert not result.requires_grad and result._ctx is None
        np.testing.assert_array_equal(result.numpy(), expected)
    assert len({x, Tensor([1.0])}) == 2  # still hashable by identity


def test_numpy_functions_on_a_tensor_are_refused():
    # np.exp(tensor) would otherwise give an object array that silently breaks later
    with pytest.raises(TypeError):
        np.exp(Tensor([1.0]))


# ---- mixed dtypes (the rule is in micrograd_gen/tensor.py's docstring) --------------------------

def test_python_numbers_and_raw_arrays_adopt_the_tensors_dtype():
    x = Tensor([1.0, 2.0])  # float32
    for y in (x * 2, 2 * x, x + 0.5, x * np.ones(2), np.ones(2, dtype=np.float64) - x,
              x * np.array([1, 2]), 2 ** x, ops.where(x > 1, x, 0.0), ops.maximum(x, 1.5)):
        assert y.dtype == np.float32
    x64 = Tensor([1.0, 2.0], dtype=np.float64)
    assert (x64 * np.ones(2, dtype=np.float32)).dtype == np.float64


def test_two_float_tensors_promote_and_gradients_keep_each_inputs_dtype():
    a = Tensor([1.0, 2.0], requires_grad=True)                      # float32
    b = Tensor([3.0, 4.0], dtype=np.float64, requires_grad=True)
    hidden = a * 2                                                  # float32 intermediate
    y = hidden * b
    assert y.dtype == np.float64
    y.sum().backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64
    np.testing.assert_array_equal(a.grad, [6.0, 8.0])
    np.testing.assert_array_equal(b.grad, [2.0, 4.0])


def test_the_cotangent_takes_the_outputs_dtype():
    x = Tensor([1.0, 2.0], requires_grad=True)
    (x * 3).backward(np.array([1.0, 1.0], dtype=np.float64))
    assert x.grad.dtype == np.float32


# ---- Functions: multi-output, contract errors ---------------------------------------------------

class MinMax(Function):
    """Two outputs: the smallest and the largest element of each row."""

    def forward(self, a):
        self.a = a
        return a.min(axis=1), a.max(axis=1)

    def backward(self, g_min, g_max):
        grad = np.zeros_like(self.a)
        rows = np.arange(self.a.shape[0])
        grad[rows, self.a.argmin(axis=1)] += g_min
        grad[rows, self.a.argmax(axis=1)] += g_max
        return grad


def test_multi_output_function():
    x = Tensor(np.array([[1.0, 5.0, 3.0], [4.0, 0.0, 2.0]]), requires_grad=True)
    low, high = MinMax.apply(x)
    np.testing.assert_array_equal(low.numpy(), [1.0, 0.0])
    (low * 2 + high * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [[2, 3, 0], [3, 2, 0]])


def test_multi_output_function_with_an_unused_output_gets_zeros_for_it():
    x = Tensor(np.array([[1.0, 5.0, 3.0]]), requires_grad=True)
    _, high = MinMax.apply(x)
    high.sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 1, 0]])


def test_multi_output_function_under_no_grad():
    with mg.no_grad():
        low, high = MinMax.apply(Tensor(np.ones((2, 2)), requires_grad=True))
    assert not low.requires_grad and not high.requires_grad


def test_a_backward_that_returns_the_wrong_shape_is_named():
    class BadShape(Function):
        def forward(self, a):
            return a * 2

        def backward(self, g):
            return g.sum()

    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"BadShape.backward.*shape \(\).*shape \(3,\)"):
        BadShape.apply(x).sum().backward()


def test_a_backward_that_returns_too_few_gradients_is_named():
    class TooFew(Function):
        def forward(self, a, b):
            return a + b

        def backward(self, g):
            return g

    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="TooFew.backward returned 1 gradients for 2 inputs"):
        TooFew.apply(x, x).sum().backward()


def test_needs_input_grad_is_set_before_forward():
    seen = []

    class Probe(Function):
        def forward(self, a, b):
            seen.append(self.needs_input_grad)
            return a * b

        def backward(self, g):
            return None, None

    Probe.apply(Tensor([1.0]), Tensor([2.0], requires_grad=True))
    with mg.no_grad():
        Probe.apply(Tensor([1.0], requires_grad=True), Tensor([2.0]))
    Probe.apply(Tensor([1.0]), 3.0)
    assert seen == [(False, True), (False, False), (False, False)]


# ---- the helpers behind apply() and backward() ---------------------------------------------------

from micrograd_gen.tensor import (_cotangent, _input_gradients, _LeafGradients,  # noqa: E402
                                  _name_the_op, _tensors_with_constants)


def test_tensors_with_constants_adopt_the_first_float_inputs_dtype():
    x64 = Tensor([1.0, 2.0], dtype=np.float64)
    ints = Tensor([1, 2])
    a, b, c, d, e = _tensors_with_constants((ints, 2, x64, np.ones(2, np.float32), None))
    assert a is ints and c is x64 and e is None
    assert isinstance(b, Tensor) and b.dtype == np.float64 and b.item() == 2.0
    assert d.dtype == np.float64 and not d.requires_grad
    only_constants = _tensors_with_constants((1.5, np.arange(3)))
    assert only_constants[0].dtype == np.float32            # Tensor()'s default
    assert only_constants[1].dtype.kind == "i"
    bools = _tensors_with_constants((x64, np.array([True, False])))[1]
    assert bools.dtype == np.float64                        # numeric (bool too) adopts the float dtype


def test_name_the_op_adds_the_op_and_input_shapes_once():
    e = _name_the_op(ValueError("operands could not be broadcast"), "add",
                     [np.ones((2, 3)), None])
    assert type(e) is ValueError
    assert str(e) == "add: operands could not be broadcast (input shapes: (2, 3), None)"
    already = _name_the_op(IndexError("take: index 5 is out of bounds"), "take", [np.ones(3)])
    assert type(already) is IndexError and str(already).startswith("take: index 5")
    assert not str(already).startswith("take: take:")

    class Picky(ValueError):
        def __init__(self, a, b):
            super().__init__(a, b)

    odd = _name_the_op(Picky("x", "y"), "op", [np.ones(1)])
    assert type(odd) is ValueError and "op:" in str(odd) and "(1,)" in str(odd)


def test_cotangent_defaults_to_one_and_is_checked_and_cast():
    y = Tensor([[3.0]], requires_grad=True)
    assert _cotangent(y, None).tolist() == [[1.0]] and _cotangent(y, None).dtype == np.float32
    z = Tensor(np.ones(2), requires_grad=True)
    given = np.array([2.0, 3.0])                            # float64 for a float32 tensor
    assert _cotangent(z, given).dtype == np.float32
    same = np.array([2.0, 3.0], np.float32)
    assert _cotangent(z, same) is same                      # no copy when nothing changes
    with pytest.raises(ValueError, match=r"cotangent shape \(3,\)"):
        _cotangent(z, np.ones(3))
    with pytest.raises(RuntimeError, match="non-scalar"):
        _cotangent(z, None)
    with pytest.raises(RuntimeError, match="does not require grad"):
        _cotangent(Tensor([1.0]), None)


def test_input_gradients_keep_the_inputs_that_want_one_and_cast_them():
    a = Tensor([1.0, 2.0], requires_grad=True)
    frozen = Tensor([3.0, 4.0])
    b = Tensor([1.0, 1.0], dtype=np.float64, requires_grad=True)
    out = ops.multiply(ops.add(a, frozen), b)                # float64 output
    pairs = _input_gradients(out._ctx, [np.ones(2)], np)
    assert [p for p, _ in pairs] == [out._ctx.parents[0], b]
    inner = a + frozen
    pairs = _input_gradients(inner._ctx, [np.ones(2, np.float64)], np)
    assert [p for p, _ in pairs] == [a]                     # the frozen input gets nothing
    assert pairs[0][1].dtype == np.float32                  # each input's own dtype


def test_input_gradients_fill_an_output_nobody_used_with_zeros():
    x = Tensor(np.array([[1.0, 5.0, 3.0]]), requires_grad=True)
    low, _ = MinMax.apply(x)
    ((_, g),) = _input_gradients(low._ctx, [np.ones(1), None], np)
    np.testing.assert_array_equal(g, [[1, 0, 0]])


def test_input_gradients_refuse_a_freed_op():
    x = Tensor([1.0], requires_grad=True)
    y = x * 2
    y.backward(np.ones(1))
    with pytest.raises(RuntimeError, match="already freed"):
        _input_gradients(y._ctx, [np.ones(1)], np)


def test_leaf_gradients_adopt_only_what_nobody_else_holds():
    a, b, c, d = (Tensor(np.zeros(2), requires_grad=True) for _ in range(4))
    fresh, passed_on, twice = np.ones(2), np.full(2, 2.0), np.full(2, 3.0)
    view = np.arange(4.0)[:2]
    leaves = _LeafGradients(shared=[passed_on])
    leaves.add(a, fresh)
    leaves.add(b, passed_on)
    leaves.add(c, twice)
    leaves.add(d, twice)           # one array for two leaves
    e = Tensor(np.zeros(2), requires_grad=True)
    leaves.add(e, view)
    leaves.hand_to_leaves()
    assert a.grad is fresh                                   # adopted, no copy
    assert b.grad is not passed_on and c.grad is not twice and d.grad is not twice
    assert not np.shares_memory(c.grad, d.grad)
    assert e.grad.base is None and e.grad.flags.writeable


def test_leaf_gradients_sum_within_a_pass_and_add_into_an_existing_grad():
    x = Tensor(np.zeros(2), requires_grad=True)
    first, second = np.ones(2), np.full(2, 2.0)
    leaves = _LeafGradients()
    leaves.add(x, first)
    leaves.add(x, second)
    leaves.hand_to_leaves()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])
    np.testing.assert_array_equal(first, [1.0, 1.0])         # summed out of place
    kept = x.grad
    leaves = _LeafGradients()
    leaves.add(x, np.ones(2))
    leaves.hand_to_leaves()
    assert x.grad is kept and x.grad.tolist() == [4.0, 4.0]  # += into the leaf's own array
    shared = np.ones(2)
    leaves = _LeafGradients()
    leaves.share(shared)
    y = Tensor(np.zeros(2), requires_grad=True)
    leaves.add(y, shared)
    leaves.hand_to_leaves()
    assert y.grad is not shared


def test_tensor_imports_no_op():
    """The ops attach Tensor's operators; tensor.py sits below them and imports none."""
    import ast
    import inspect

    import micrograd_gen.tensor as tensor_module
    tree = ast.parse(inspect.getsource(tensor_module))
    imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree)
                 if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    assert not any("ops" in name for name in imported), imported
    assert "__add__" not in vars(tensor_module.Tensor) or tensor_module.Tensor.__add__.__module__ \
        == "micrograd_gen.ops"
    assert (Tensor([1.0]) + 1).item() == 2.0 and Tensor([[1.0, 2.0]]).T.shape == (2, 1)
