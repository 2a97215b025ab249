"""Check an op's backward against central finite differences.

For f: inputs -> output, pick a random cotangent u and look at the scalar L(x) = <u, f(x)>.
The engine's backward(u) gives dL/dx for every input. Finite differences give the same thing:
- along a random direction d (cheap at any size):  (L(x + h d) - L(x - h d)) / 2h  ~  <dL/dx, d>
- element by element for small inputs (the full vector-Jacobian product, one pair of calls each).
Numerics run in float64 by default, where the difference quotient is accurate to ~1e-8, so a
wrong backward shows up plainly; `dtype=np.float32` checks the float32 path with looser tolerances.
Choose inputs away from kinks (relu at 0, ties in max): there the derivative itself is undefined.
A NaN or inf anywhere (the output, a gradient, a nudged evaluation) fails the check by name: every
comparison with NaN is False, so without that a backward returning NaN would pass.
"""
import numpy as np

from .backend import get_array_module, to_numpy
from .tensor import Tensor

# (step h, absolute tolerance, relative tolerance) per dtype
TOLERANCES = {
    np.dtype(np.float64): (1e-6, 1e-6, 1e-4),
    np.dtype(np.float32): (1e-2, 5e-3, 5e-2),
}


class GradcheckError(AssertionError):
    pass


def gradcheck(fn, inputs, *, dtype=np.float64, directions=3, full_jacobian_max=64, eps=None,
              atol=None, rtol=None, seed=0):
    """Raise GradcheckError naming the worst disagreement, or return True.

    fn: callable taking one Tensor per input and returning a Tensor.
    inputs: arrays (NumPy or CuPy) or Tensors; they are copied, cast to `dtype`, never modified.
    full_jacobian_max: also compare every element when the inputs hold at most this many numbers.
    """
    dtype = np.dtype(dtype)
    h, default_atol, default_rtol = TOLERANCES[dtype]
    h = eps if eps is not None else h
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    base = [(x.data if isinstance(x, Tensor) else x) for x in inputs]
    xp = get_array_module(*base)
    base = [xp.asarray(x, dtype=dtype).copy() for x in base]
    rng = np.random.default_rng(seed)

    for i, x in enumerate(base):
        _require_finite(x, f"input {i}", "")

    def evaluate(arrays, cotangent, moved):
        out = fn(*[Tensor(a, dtype=dtype) for a in arrays])
        value = float(to_numpy((out.data * cotangent).sum()))
        if not np.isfinite(value):
            _require_finite(out.data, "fn's output", f" with {moved} (step h={h:g}): the inputs "
                            "sit at the edge of fn's domain (log or sqrt at 0?); move them inside")
        return value

    # Analytic gradient of L = <u, f(x)>.
    leaves = [Tensor(x.copy(), requires_grad=True, dtype=dtype) for x in base]
    out = fn(*leaves)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    _require_finite(out.data, "fn's output", " at the given inputs (log or sqrt at 0?); choose "
                    "inputs inside fn's domain")
    cotangent = xp.asarray(rng.standard_normal(out.shape), dtype=out.dtype)
    if not out.requires_grad:
        raise GradcheckError("gradcheck: the output does not depend on any input with a gradient")
    out.backward(cotangent)
    analytic = [xp.zeros_like(x) if t.grad is None else t.grad.astype(dtype) for x, t in zip(base, leaves)]
    for i, (g, x) in enumerate(zip(analytic, base)):
        if g.shape != x.shape:
            raise GradcheckError(f"gradcheck: input {i} has shape {x.shape} but its gradient has "
                                 f"shape {g.shape}")
        _require_finite(g, f"the backward's gradient for input {i}", "")

    def directional(direction):
        """(numeric, analytic) derivative of L along `direction` (one array per input)."""
        plus = evaluate([x + h * d for x, d in zip(base, direction)], cotangent,
                        "the inputs moved along a random direction")
        minus = evaluate([x - h * d for x, d in zip(base, direction)], cotangent,
                         "the inputs moved along a random direction")
        predicted = sum(float(to_numpy((g * d).sum())) for g, d in zip(analytic, direction))
        return (plus - minus) / (2 * h), predicted

    def excess(numeric, predicted):
        return abs(numeric - predicted) - (atol + rtol * abs(numeric))

    # Element by element first, for small inputs: a failure then names the element.
    if sum(x.size for x in base) <= full_jacobian_max:
        _check_elements(base, analytic, evaluate, cotangent, h, atol, rtol)

    # Directional derivatives along random unit directions (all inputs at once).
    for k in range(directions):
        direction = [xp.asarray(rng.standard_normal(x.shape), dtype=dtype) for x in base]
        norm = np.sqrt(sum(float(to_numpy((d * d).sum())) for d in direction)) or 1.0
        direction = [d / norm for d in direction]
        numeric, predicted = directional(direction)
        if excess(numeric, predicted) > 0:
            # Say which input is wrong: the same check with only one input moved at a time.
            per_input = []
            for i, d in enumerate(direction):
                alone = [d if j == i else xp.zeros_like(base[j]) for j in range(len(base))]
                n_i, p_i = directional(alone)
                per_input.append((excess(n_i, p_i), i, p_i, n_i))
            _, i, p_i, n_i = max(per_input)
            raise GradcheckError(
                f"gradcheck: directional derivative {k} disagrees: analytic {predicted:.8g}, "
                f"numeric {numeric:.8g} (|diff| {abs(numeric - predicted):.3g} > atol {atol:g} + "
                f"rtol {rtol:g} * |numeric|); worst is input {i} of shape {tuple(base[i].shape)}: "
                f"analytic {p_i:.8g}, numeric {n_i:.8g} along a direction in that input alone")
    return True


def _check_elements(base, analytic, evaluate, cotangent, h, atol, rtol):
    """Compare every element of the vector-Jacobian product; raise naming the worst one."""
    worst = None
    for i, x in enumerate(base):
        flat_numeric = np.zeros(x.size)
        for j in range(x.size):
            bumped = [b.copy() for b in base]
            where = f"input {i} element {tuple(int(w) for w in np.unravel_index(j, x.shape))}"
            bumped[i].reshape(-1)[j] += h
            plus = evaluate(bumped, cotangent, f"{where} moved by +h")
            bumped[i].reshape(-1)[j] -= 2 * h
            minus = evaluate(bumped, cotangent, f"{where} moved by -h")
            flat_numeric[j] = (plus - minus) / (2 * h)
        flat_analytic = to_numpy(analytic[i]).reshape(-1).astype(np.float64)
        excess = np.abs(flat_numeric - flat_analytic) - (atol + rtol * np.abs(flat_numeric))
        if excess.size and excess.max() > 0:
            j = int(excess.argmax())
            if worst is None or excess[j] > worst[0]:
                worst = (excess[j], i, np.unravel_index(j, x.shape), flat_analytic[j],
                         flat_numeric[j], int((excess > 0).sum()), x.size)
    if worst is not None:
        _, i, where, a, n, bad, size = worst
        raise GradcheckError(
            f"gradcheck: input {i} element {tuple(int(w) for w in where)} is the worst of {bad} "
            f"wrong elements (of {size}): analytic {a:.8g}, numeric {n:.8g} "
            f"(|diff| {abs(a - n):.3g}; atol {atol:g}, rtol {rtol:g})")


def _require_finite(array, what, context):
    """Raise GradcheckError naming the first NaN or inf of `array` (what it is, and where)."""
    values = to_numpy(array)
    bad = ~np.isfinite(values)
    if bad.any():
        first = tuple(int(k) for k in np.argwhere(bad)[0])
        raise GradcheckError(
            f"gradcheck: {what} has {int(bad.sum())} non-finite values (of {values.size}), the "
            f"first {values[first]} at element {first}{context}")
