"""Elementwise ops: arithmetic with broadcasting, and the pointwise nonlinearities.

Binary ops broadcast as NumPy does; their backward sums the gradient back to each input's shape
(`unbroadcast`). Mixed dtypes follow the rule in micrograd_gen/tensor.py: Python numbers and raw
arrays adopt the tensor's dtype, two float tensors follow NumPy's promotion (float32 op float64 ->
float64), and each input's gradient is cast back to that input's own dtype.
"""
from .. import fastpath
from ..backend import get_array_module
from ..tensor import Function, Tensor


def unbroadcast(grad, shape):
    """Sum `grad` over the axes that broadcasting added or stretched, to get back `shape`."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape)
                                       if n == 1 and grad.shape[i + extra] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


class Add(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, g):
        # Skip what no one needs: summing g down to a constant's shape costs a reduction.
        needs_a, needs_b = self.needs_input_grad
        return (unbroadcast(g, self.shapes[0]) if needs_a else None,
                unbroadcast(g, self.shapes[1]) if needs_b else None)


class Subtract(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, g):
        needs_a, needs_b = self.needs_input_grad
        return (unbroadcast(g, self.shapes[0]) if needs_a else None,
                unbroadcast(-g, self.shapes[1]) if needs_b else None)


class Multiply(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        da = unbroadcast(g * self.b, self.a.shape) if self.needs_input_grad[0] else None
        db = unbroadcast(g * self.a, self.b.shape) if self.needs_input_grad[1] else None
        return da, db


class Divide(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        g_over_b = g / self.b
        da = unbroadcast(g_over_b, self.a.shape) if self.needs_input_grad[0] else None
        db = (unbroadcast(-g_over_b * self.a / self.b, self.b.shape)
              if self.needs_input_grad[1] else None)
        return da, db


class Power(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        self.out = a ** b
        return self.out

    def backward(self, g):
        xp = get_array_module(self.a)
        a, b = self.a, self.b
        da = unbroadcast(g * b * a ** (b - 1), a.shape) if self.needs_input_grad[0] else None
        db = None
        if self.needs_input_grad[1]:
            # d(a^b)/db = a^b log a; defined as 0 where a^b is 0 so that 0**b stays finite.
            log_a = xp.log(xp.where(a > 0, a, 1))
            db = unbroadcast(g * self.out * log_a, b.shape)
        return da, db


class Negative(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


class Exp(Function):
    def forward(self, a):
        self.out = get_array_module(a).exp(a)
        return self.out

    def backward(self, g):
        return g * self.out


class Log(Function):
    def forward(self, a):
        self.a = a
        return get_array_module(a).log(a)

    def backward(self, g):
        return g / self.a


class Sqrt(Function):
    def forward(self, a):
        self.out = get_array_module(a).sqrt(a)
        return self.out

    def backward(self, g):
        return g / (2 * self.out)


class Abs(Function):
    def forward(self, a):
        self.a = a
        return get_array_module(a).abs(a)

    def backward(self, g):
        return g * get_array_module(self.a).sign(self.a)


class Tanh(Function):
    def forward(self, a):
        self.out = get_array_module(a).tanh(a)
        return self.out

    def backward(self, g):
        return g * (1 - self.out * self.out)


def stable_sigmoid(xp, a):
    # 1/(1+exp(-a)) overflows exp for a << 0. With e = exp(-|a|) <= 1 both halves are exact:
    # 1/(1+e) for a >= 0 and e/(1+e) below (0.5*(1+tanh(a/2)) would lose digits to cancellation).
    # The numerator, 1 where a >= 0 and e below, is the larger of e and (a >= 0), as e <= 1:
    # np.where(a >= 0, 1, e) says the same but branches on every number's sign, which costs
    # more than the exp when signs are mixed (0.4 ms against 0.03 for 100K numbers).
    e = xp.exp(-xp.abs(a))
    return xp.maximum(e, a >= 0) / (1 + e)


class Sigmoid(Function):
    def forward(self, a):
        self.out = stable_sigmoid(get_array_module(a), a)
        return self.out

    def backward(self, g):
        return g * self.out * (1 - self.out)


class Relu(Function):
    def forward(self, a):
        fast = fastpath.lookup("relu_forward")
        out = NotImplemented if fast is None else fast(a, self.needs_input_grad[0])
        if out is not NotImplemented:
            y, self.positive = out
            return y
        self.positive = a > 0
        return a * self.positive

    def backward(self, g):
        fast = fastpath.lookup("relu_backward")
        dx = NotImplemented if fast is None else fast(g, self.positive)
        return g * self.positive if dx is NotImplemented else dx


class LeakyRelu(Function):
    def forward(self, a, negative_slope=0.2):
        fast = fastpath.lookup("leaky_relu_forward")
        out = NotImplemented if fast is None else fast(a, negative_slope, self.needs_input_grad[0])
        if out is not NotImplemented:
            # the fast path keeps the mask a > 0 (a byte a number) in place of the slopes, and
            # none when no gradient will be asked for
            y, self.positive = out
            self.slope, self.negative_slope = None, negative_slope
            return y
        xp = get_array_module(a)
        self.slope = xp.where(a > 0, a.dtype.type(1), a.dtype.type(negative_slope))
        return a * self.slope

    def backward(self, g):
        if self.slope is not None:
            return g * self.slope
        fast = fastpath.lookup("leaky_relu_backward")
        dx = NotImplemented if fast is None else fast(g, self.positive, self.negative_slope)
        if dx is NotImplemented:
            xp = get_array_module(g)
            dx = g * xp.where(self.positive, g.dtype.type(1), g.dtype.type(self.negative_slope))
        return dx


class Softplus(Function):
    def forward(self, a):
        xp = get_array_module(a)
        self.a = a
        # log(1 + e^a) = max(a, 0) + log1p(e^-|a|): no overflow for large |a|.
        return xp.maximum(a, 0) + xp.log1p(xp.exp(-xp.abs(a)))

    def backward(self, g):
        return g * stable_sigmoid(get_array_module(self.a), self.a)


class Clip(Function):
    def forward(self, a, low=None, high=None):
        xp = get_array_module(a)
        self.inside = xp.ones(a.shape, dtype=bool)
        if low is not None:
            self.inside &= a >= low
        if high is not None:
            self.inside &= a <= high
        return xp.clip(a, low, high)

    def backward(self, g):
        return g * self.inside


class Maximum(Function):
    # Ties send the gradient to the first input, as a subgradient must go somewhere.
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        self.a_wins = a >= b
        return get_array_module(a, b).where(self.a_wins, a, b)

    def backward(self, g):
        needs_a, needs_b = self.needs_input_grad
        return (unbroadcast(g * self.a_wins, self.shapes[0]) if needs_a else None,
                unbroadcast(g * ~self.a_wins, self.shapes[1]) if needs_b else None)


class Minimum(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        self.a_wins = a <= b
        return get_array_module(a, b).where(self.a_wins, a, b)

    def backward(self, g):
        needs_a, needs_b = self.needs_input_grad
        return (unbroadcast(g * self.a_wins, self.shapes[0]) if needs_a else None,
                unbroadcast(g * ~self.a_wins, self.shapes[1]) if needs_b else None)


class Where(Function):
    # The condition is a parameter, not an input: it carries no gradient and keeps its bool dtype.
    def forward(self, a, b, condition=None):
        xp = get_array_module(a, b, condition)
        self.condition = xp.asarray(condition, dtype=bool)
        self.shapes = a.shape, b.shape
        return xp.where(self.condition, a, b)

    def backward(self, g):
        needs_a, needs_b = self.needs_input_grad
        return (unbroadcast(g * self.condition, self.shapes[0]) if needs_a else None,
                unbroadcast(g * ~self.condition, self.shapes[1]) if needs_b else None)


class Cast(Function):
    def forward(self, a, dtype=None):
        self.dtype = a.dtype
        return a.astype(dtype)

    def backward(self, g):
        return g.astype(self.dtype)


def add(a, b): return Add.apply(a, b)
def subtract(a, b): return Subtract.apply(a, b)
def multiply(a, b): return Multiply.apply(a, b)
def divide(a, b): return Divide.apply(a, b)
def power(a, b): return Power.apply(a, b)
def negative(a): return Negative.apply(a)
def exp(a): return Exp.apply(a)
def log(a): return Log.apply(a)
def sqrt(a): return Sqrt.apply(a)
def abs(a): return Abs.apply(a)  # noqa: A001  (ops.abs mirrors numpy.abs)
def tanh(a): return Tanh.apply(a)
def sigmoid(a): return Sigmoid.apply(a)
def relu(a): return Relu.apply(a)
def leaky_relu(a, negative_slope=0.2): return LeakyRelu.apply(a, negative_slope=negative_slope)
def softplus(a): return Softplus.apply(a)
def clip(a, low=None, high=None): return Clip.apply(a, low=low, high=high)
def maximum(a, b): return Maximum.apply(a, b)
def minimum(a, b): return Minimum.apply(a, b)
def where(condition, a, b):
    return Where.apply(a, b, condition=condition.data if isinstance(condition, Tensor) else condition)
def cast(a, dtype): return Cast.apply(a, dtype=dtype)
