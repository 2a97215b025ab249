"""Optimisers with Keras 3's update rules, learning-rate schedules, gradient clipping, and L-BFGS
through scipy.

    opt = Adam(model.parameters(), learning_rate=1e-3)
    loss.backward(); opt.step(); opt.zero_grad()

or, as in a Keras `train_step`, `opt.apply_gradients(zip(grads, weights))`. Each step uses the
learning rate at `opt.iterations` (the count of steps done so far, so the first step sees
schedule(0)), then counts one more. Updates happen in place on `param.data`, through one scratch
array per parameter, so a step allocates nothing after the first.
"""
import math

import numpy as np

from .backend import get_array_module, to_numpy
from .tensor import Tensor, no_grad


# ---- learning-rate schedules ----------------------------------------------------------------------
class ExponentialDecay:
    """initial_learning_rate * decay_rate ** (step / decay_steps); with staircase=True the exponent
    is floored, so the rate drops once every decay_steps."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        if decay_steps <= 0:
            raise ValueError(f"ExponentialDecay: decay_steps must be positive, got {decay_steps}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps, self.decay_rate, self.staircase = decay_steps, float(decay_rate), staircase

    def __call__(self, step):
        p = step / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate ** p

    def __repr__(self):
        return (f"ExponentialDecay({self.initial_learning_rate}, {self.decay_steps}, "
                f"{self.decay_rate}, staircase={self.staircase})")


# ---- clipping -------------------------------------------------------------------------------------
def _sum_squares(g):
    return float(to_numpy((g.astype(np.float64, copy=False) ** 2).sum()))


def clip_grad_norm(params, max_norm):
    """Scale every `.grad` in place by max_norm / max(global_norm, max_norm), as Keras's
    `global_clipnorm` and tf.clip_by_global_norm do; returns the norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = math.sqrt(sum(_sum_squares(g) for g in grads))
    if norm > max_norm:
        scale = max_norm / norm
        for g in grads:
            g *= g.dtype.type(scale)
    return norm


def _as_params(params):
    if params is None:
        return []
    if hasattr(params, "parameters") and callable(params.parameters):
        params = params.parameters()
    params = list(params)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"optimizer: parameter {i} is a {type(p).__name__}, not a Tensor")
    return params


class Optimizer:
    """Shared by SGD, RMSprop and Adam: the parameter list, the learning rate (a float or a
    schedule called with the step count), clipping, the step counter, state for checkpoints.

    clipnorm clips each gradient to that norm on its own, global_clipnorm clips all of them together
    by their joint norm, clipvalue clips elementwise (Keras's three options; use one)."""

    slot_names = ()

    def __init__(self, params=None, learning_rate=1e-3, clipnorm=None, clipvalue=None,
                 global_clipnorm=None):
        # Keras style Adam(1e-3) (no parameter list yet; apply_gradients supplies the variables).
        if isinstance(params, (int, float)) or (_is_schedule(params)
                                                 and not hasattr(params, "parameters")):
            params, learning_rate = None, params
        if sum(c is not None for c in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError(f"{type(self).__name__}: use only one of clipnorm, clipvalue and "
                             "global_clipnorm")
        self.params = []
        self._index = {}
        self._add_params(_as_params(params))
        self._learning_rate = learning_rate
        self.clipnorm, self.clipvalue, self.global_clipnorm = clipnorm, clipvalue, global_clipnorm
        self.iterations = 0
        self._slots = {}    # slot name -> list of arrays, one per parameter (made on first use)
        self._scratch = {}  # parameter index -> scratch array

    def build(self, variables):
        """Keras's `optimizer.build(var_list)`: take on these variables (new ones are appended, so
        slots already made keep their index). `model.compile` calls it with the trainable weights,
        so an optimiser made without parameters, as Keras makes them, can step()."""
        self._add_params(_as_params(variables))

    def _add_params(self, params):
        for p in params:
            if id(p) not in self._index:
                self._index[id(p)] = len(self.params)
                self.params.append(p)

    @property
    def learning_rate(self):
        """The learning rate the next step will use."""
        lr = self._learning_rate
        return float(lr(self.iterations)) if _is_schedule(lr) else float(lr)

    @learning_rate.setter
    def learning_rate(self, value):
        if _is_schedule(self._learning_rate) and not _is_schedule(value):
            raise TypeError(f"{type(self).__name__} was made with a schedule; its learning rate "
                            "is not settable")
        self._learning_rate = value

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        """One update of every parameter that has a gradient (those without are skipped)."""
        self._apply([(p.grad, p) for p in self.params])

    def apply_gradients(self, grads_and_vars):
        """Keras's form: pairs (gradient, variable); gradients may be arrays or Tensors."""
        pairs = [(g.data if isinstance(g, Tensor) else g, v) for g, v in grads_and_vars]
        self._add_params([v for _, v in pairs])
        self._apply(pairs)

    def apply(self, grads, variables):
        self.apply_gradients(zip(grads, variables))

    def _apply(self, pairs):
        pairs = [(g, p) for g, p in pairs if g is not None]
        if not pairs:
            return
        for g, p in pairs:
            if tuple(g.shape) != p.shape:
                raise ValueError(f"{type(self).__name__}: gradient of shape {tuple(g.shape)} for "
                                 f"parameter {p.name or ''} of shape {p.shape}")
        grads = [g if g.dtype == p.dtype else g.astype(p.dtype) for g, p in pairs]
        if self.clipnorm is not None:
            grads = [self._scaled(g, self.clipnorm, math.sqrt(_sum_squares(g))) for g in grads]
        elif self.global_clipnorm is not None:
            norm = math.sqrt(sum(_sum_squares(g) for g in grads))
            grads = [self._scaled(g, self.global_clipnorm, norm) for g in grads]
        elif self.clipvalue is not None:
            grads = [get_array_module(g).clip(g, -self.clipvalue, self.clipvalue) for g in grads]
        lr = self.learning_rate
        with no_grad():
            for g, (_, p) in zip(grads, pairs):
                i = self._index[id(p)]
                self._update(p.data, g, lr, i)
        self.iterations += 1

    @staticmethod
    def _scaled(g, clip, norm):
        # g * clip / max(norm, clip): a new array, so the caller's .grad is left as it was.
        return g * g.dtype.type(clip / max(norm, clip)) if norm > clip else g

    def _slot(self, name, i):
        """The optimiser's array `name` for parameter i, zeros at first."""
        arrays = self._slots.setdefault(name, [None] * len(self.params))
        if len(arrays) < len(self.params):
            arrays.extend([None] * (len(self.params) - len(arrays)))
        if arrays[i] is None:
            data = self.params[i].data
            arrays[i] = get_array_module(data).zeros_like(data)
        return arrays[i]

    def _tmp(self, i, like):
        s = self._scratch.get(i)
        if s is None or s.shape != like.shape or s.dtype != like.dtype:
            s = self._scratch[i] = get_array_module(like).empty_like(like)
        return s

    def _update(self, p, g, lr, i):
        raise NotImplementedError

    # ---- checkpoints ----------------------------------------------------------------------------
    def get_state(self):
        """A flat dict of NumPy arrays and scalars: "iterations", "learning_rate" (when it is a
        float) and "<slot>/<i>" for parameter i (in `params` order) of each slot made so far."""
        state = {"iterations": np.int64(self.iterations)}
        if not _is_schedule(self._learning_rate):
            state["learning_rate"] = np.float64(self._learning_rate)
        for name, arrays in self._slots.items():
            for i, a in enumerate(arrays):
                if a is not None:
                    state[f"{name}/{i}"] = np.array(to_numpy(a))
        return state

    def set_state(self, state):
        """Restore what get_state returned; everything is checked first (check_state), so a
        failed call leaves the optimiser as it was."""
        updates = self.check_state(state)
        for (name, i), value in updates.items():
            slot = self._slot(name, i)
            slot[...] = get_array_module(slot).asarray(np.asarray(value, dtype=slot.dtype))
        if "iterations" in state:
            self.iterations = int(state["iterations"])
        if "learning_rate" in state and not _is_schedule(self._learning_rate):
            self._learning_rate = float(state["learning_rate"])

    def check_state(self, state):
        """Raise ValueError if set_state(state) would fail, changing nothing; otherwise return
        {(slot name, parameter index): array} of the slot entries."""
        if not isinstance(state, dict):
            raise ValueError(f"{type(self).__name__}.set_state: expected a dict, got "
                             f"{type(state).__name__}")
        for key, convert in (("iterations", int), ("learning_rate", float)):
            if key in state:
                try:
                    convert(state[key])
                except (TypeError, ValueError):
                    raise ValueError(f"{type(self).__name__}.set_state: {key} is "
                                     f"{state[key]!r}, not a number") from None
        updates = {}
        for key, value in state.items():
            if key in ("iterations", "learning_rate"):
                continue
            name, _, index = key.partition("/")
            if name not in self.slot_names or not index.isdigit():
                raise ValueError(f"{type(self).__name__}.set_state: unknown entry {key!r} "
                                 f"(this optimiser keeps {list(self.slot_names)})")
            i = int(index)
            if i >= len(self.params):
                raise ValueError(f"{type(self).__name__}.set_state: entry {key!r} but the "
                                 f"optimiser has only {len(self.params)} parameters")
            if tuple(np.shape(value)) != self.params[i].shape:
                raise ValueError(f"{type(self).__name__}.set_state: {key!r} has shape "
                                 f"{tuple(np.shape(value))}, parameter {i} has shape "
                                 f"{self.params[i].shape}")
            updates[(name, i)] = value
        return updates


def _is_schedule(lr):
    return callable(lr) and not isinstance(lr, (int, float))


class SGD(Optimizer):
    """Keras's SGD: v = momentum * v - lr * g; p += v (nesterov: p += momentum * v - lr * g)."""

    slot_names = ("momentum",)

    def __init__(self, params=None, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(params, learning_rate, **kwargs)
        if not 0 <= momentum <= 1:
            raise ValueError(f"SGD: momentum must be in [0, 1], got {momentum}")
        self.momentum, self.nesterov = float(momentum), nesterov

    def _update(self, p, g, lr, i):
        xp, s = get_array_module(p), self._tmp(i, p)
        if self.momentum == 0:
            xp.multiply(g, lr, out=s)
            p -= s
            return
        v = self._slot("momentum", i)
        v *= self.momentum
        xp.multiply(g, lr, out=s)
        v -= s
        if self.nesterov:
            xp.multiply(v, self.momentum, out=s)
            p += s
            xp.multiply(g, lr, out=s)
            p -= s
        else:
            p += v


class RMSprop(Optimizer):
    """Keras's RMSprop: v = rho * v + (1 - rho) * g^2; p -= lr * g / sqrt(v + epsilon)
    (epsilon inside the square root, as Keras 3 has it). With momentum m: m = momentum * m +
    increment, p -= m. centered subtracts the square of the running mean gradient from v."""

    slot_names = ("velocity", "momentum", "average_gradient")

    def __init__(self, params=None, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
                 centered=False, **kwargs):
        super().__init__(params, learning_rate, **kwargs)
        self.rho, self.momentum, self.epsilon, self.centered = rho, momentum, epsilon, centered

    def _update(self, p, g, lr, i):
        xp, s = get_array_module(p), self._tmp(i, p)
        v = self._slot("velocity", i)
        v *= self.rho
        xp.multiply(g, g, out=s)
        s *= 1 - self.rho
        v += s
        if self.centered:
            a = self._slot("average_gradient", i)
            a *= self.rho
            xp.multiply(g, 1 - self.rho, out=s)
            a += s
            xp.multiply(a, a, out=s)
            xp.subtract(v, s, out=s)
            s += self.epsilon
        else:
            xp.add(v, self.epsilon, out=s)
        xp.sqrt(s, out=s)
        xp.divide(g, s, out=s)
        s *= lr
        if self.momentum > 0:
            m = self._slot("momentum", i)
            m *= self.momentum
            m += s
            p -= m
        else:
            p -= s


class Adam(Optimizer):
    """Keras's Adam: m += (g - m)(1 - beta_1); v += (g^2 - v)(1 - beta_2);
    p -= m * alpha / (sqrt(v) + epsilon) with alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)."""

    slot_names = ("momentum", "velocity")

    def __init__(self, params=None, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 **kwargs):
        super().__init__(params, learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def _update(self, p, g, lr, i):
        xp, s = get_array_module(p), self._tmp(i, p)
        t = self.iterations + 1
        alpha = lr * math.sqrt(1 - self.beta_2 ** t) / (1 - self.beta_1 ** t)
        m, v = self._slot("momentum", i), self._slot("velocity", i)
        xp.subtract(g, m, out=s)
        s *= 1 - self.beta_1
        m += s
        xp.multiply(g, g, out=s)
        s -= v
        s *= 1 - self.beta_2
        v += s
        xp.sqrt(v, out=s)
        s += self.epsilon
        xp.divide(m, s, out=s)
        s *= alpha
        p -= s


def get(identifier):
    """An optimiser for a Keras name ("sgd", "rmsprop", "adam"; Keras's default settings) or the
    optimiser given."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        by_name = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam}
        if identifier.lower() not in by_name:
            raise ValueError(f"unknown optimizer {identifier!r}; known: {sorted(by_name)}, or pass "
                             "an instance such as optim.Adam(learning_rate=1e-3)")
        return by_name[identifier.lower()]()
    raise TypeError(f"optimizer must be a name such as 'rmsprop' or an optimiser instance, got "
                    f"{type(identifier).__name__}")


# ---- L-BFGS ---------------------------------------------------------------------------------------
def lbfgs(fun, x0, maxiter=20, maxfun=None, callback=None, bounds=None, dtype=np.float32,
          **options):
    """Minimise fun(x) -> scalar Tensor over x of any shape with scipy's L-BFGS-B.

    The engine evaluates loss and gradient in `dtype` (float32 by default) on x0's device; scipy
    works on a flat float64 copy, converted at the boundary on every evaluation.
    callback(x, loss) runs once per iteration with the current point (same shape and kind as
    x0) and its loss; returning True stops early. maxiter counts iterations, maxfun evaluations
    (the 1st edition's style transfer uses maxfun=20 per round). bounds: (low, high) applied to
    every element, or a list of pairs. Extra keywords go to scipy's options (ftol, gtol, maxcor...).

    Returns (x, info): x as a Tensor if x0 was one, else a NumPy array; info holds loss, nit,
    nfev, success, message.
    """
    from scipy.optimize import minimize

    is_tensor = isinstance(x0, Tensor)
    data = x0.data if is_tensor else np.asarray(x0)
    xp = get_array_module(data)
    shape = tuple(data.shape)
    last = {}

    def to_engine(flat):
        return xp.asarray(np.asarray(flat, dtype=dtype).reshape(shape))

    def evaluate(flat):
        x = Tensor(to_engine(flat), requires_grad=True, dtype=dtype)
        loss = fun(x)
        if not isinstance(loss, Tensor) or loss.size != 1:
            raise ValueError(f"lbfgs: fun must return a one-element Tensor, got {loss!r}")
        loss.backward()
        value = float(loss.item())
        grad = (np.zeros(flat.shape) if x.grad is None
                else np.asarray(to_numpy(x.grad), dtype=np.float64).reshape(-1))
        last["x"], last["loss"] = flat.copy(), value
        return value, grad

    def as_output(flat):
        arr = to_engine(flat)
        if is_tensor:
            return Tensor(arr, dtype=dtype)
        return to_numpy(arr)

    class _Stop(Exception):
        pass

    def on_iteration(xk):
        if callback is None:
            return
        if last.get("x") is not None and np.array_equal(last["x"], xk):
            loss = last["loss"]
        else:
            with no_grad():
                loss = float(fun(Tensor(to_engine(xk), dtype=dtype)).item())
        if callback(as_output(xk), loss):
            last["stopped"] = (xk.copy(), loss)
            raise _Stop

    opts = {"maxiter": maxiter}
    if maxfun is not None:
        opts["maxfun"] = maxfun
    opts.update(options)
    if bounds is not None and len(bounds) == 2 and np.isscalar(bounds[0]):
        bounds = [tuple(bounds)] * int(np.prod(shape))
    x_start = np.asarray(to_numpy(data), dtype=np.float64).reshape(-1)
    try:
        res = minimize(evaluate, x_start, jac=True, method="L-BFGS-B", bounds=bounds,
                       callback=on_iteration, options=opts)
        x_final, info = res.x, {"loss": float(res.fun), "nit": int(res.nit),
                                "nfev": int(res.nfev), "success": bool(res.success),
                                "message": str(res.message)}
    except _Stop:
        x_final, loss = last["stopped"]
        info = {"loss": loss, "nit": None, "nfev": None, "success": True,
                "message": "stopped by callback"}
    return as_output(x_final), info


__all__ = ["SGD", "RMSprop", "Adam", "ExponentialDecay", "clip_grad_norm", "lbfgs", "Optimizer",
           "get"]
