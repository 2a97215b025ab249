"""Optimisers against hand-written NumPy references of Keras 3's update rules, schedules, clipping,
checkpoint state, and L-BFGS through scipy."""
import math

import numpy as np
import pytest

from micrograd_gen import Tensor, optim

STEPS = 5


def _grads(shape, steps, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(steps)]


def _run(opt_factory, p0, grads):
    p = Tensor(p0.copy(), requires_grad=True)
    opt = opt_factory([p])
    for g in grads:
        p.grad = g.copy()
        opt.step()
    return p.numpy(), opt


def _ref_sgd(p, grads, lr, momentum=0.0, nesterov=False):
    p = p.astype(np.float64)
    v = np.zeros_like(p)
    for g in grads:
        if momentum == 0:
            p = p - lr * g
            continue
        v = momentum * v - lr * g
        p = p + (momentum * v - lr * g if nesterov else v)
    return p


def _ref_rmsprop(p, grads, lr, rho=0.9, eps=1e-7, momentum=0.0, centered=False):
    p = p.astype(np.float64)
    v, m, a = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for g in grads:
        v = rho * v + (1 - rho) * g ** 2
        if centered:
            a = rho * a + (1 - rho) * g
            denom = v - a ** 2 + eps
        else:
            denom = v + eps
        inc = lr * g / np.sqrt(denom)
        if momentum > 0:
            m = momentum * m + inc
            p = p - m
        else:
            p = p - inc
    return p


def _ref_adam(p, grads, lr, b1=0.9, b2=0.999, eps=1e-7, schedule=None):
    p = p.astype(np.float64)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        rate = schedule(t - 1) if schedule else lr
        alpha = rate * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        p = p - m * alpha / (np.sqrt(v) + eps)
    return p


P0 = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
GRADS = _grads((3, 4), STEPS)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_matches_keras_rule(momentum, nesterov):
    got, _ = _run(lambda ps: optim.SGD(ps, learning_rate=0.1, momentum=momentum,
                                       nesterov=nesterov), P0, GRADS)
    np.testing.assert_allclose(got, _ref_sgd(P0, GRADS, 0.1, momentum, nesterov), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("momentum,centered", [(0.0, False), (0.5, False), (0.0, True)])
def test_rmsprop_matches_keras_rule(momentum, centered):
    got, _ = _run(lambda ps: optim.RMSprop(ps, learning_rate=0.01, momentum=momentum,
                                           centered=centered), P0, GRADS)
    np.testing.assert_allclose(got, _ref_rmsprop(P0, GRADS, 0.01, momentum=momentum,
                                                 centered=centered), rtol=1e-5, atol=1e-6)


def test_rmsprop_keras_docstring_example():
    # keras.optimizers.RMSprop(learning_rate=0.1) on loss = var^2 / 2 from 10.0 gives 9.683772.
    var = Tensor(np.array(10.0, np.float32), requires_grad=True)
    opt = optim.RMSprop([var], learning_rate=0.1)
    var.grad = var.data.copy()
    opt.step()
    assert float(var.item()) == pytest.approx(9.683772, abs=1e-6)


def test_adam_matches_keras_rule():
    got, opt = _run(lambda ps: optim.Adam(ps, learning_rate=0.01), P0, GRADS)
    np.testing.assert_allclose(got, _ref_adam(P0, GRADS, 0.01), rtol=1e-5, atol=1e-6)
    assert opt.iterations == STEPS


def test_adam_defaults_are_keras_defaults():
    opt = optim.Adam([Tensor(np.zeros(2), requires_grad=True)])
    assert (opt.learning_rate, opt.beta_1, opt.beta_2, opt.epsilon) == (1e-3, 0.9, 0.999, 1e-7)
    rms = optim.RMSprop([Tensor(np.zeros(2), requires_grad=True)])
    assert (rms.learning_rate, rms.rho, rms.epsilon) == (1e-3, 0.9, 1e-7)
    assert optim.SGD([]).learning_rate == 0.01


def test_adam_with_schedule_uses_rate_at_current_iteration():
    sched = optim.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)
    got, opt = _run(lambda ps: optim.Adam(ps, learning_rate=sched), P0, GRADS)
    np.testing.assert_allclose(got, _ref_adam(P0, GRADS, None, schedule=sched), rtol=1e-5,
                               atol=1e-6)
    assert opt.learning_rate == pytest.approx(0.1 * 0.5 ** (STEPS / 2))
    with pytest.raises(TypeError):
        opt.learning_rate = 0.3


def test_exponential_decay_values():
    s = optim.ExponentialDecay(100.0, decay_steps=100, decay_rate=0.96)
    assert s(0) == 100.0
    assert s(100) == pytest.approx(96.0)
    assert s(50) == pytest.approx(100 * 0.96 ** 0.5)
    assert s(250) == pytest.approx(100 * 0.96 ** 2.5)
    stair = optim.ExponentialDecay(100.0, 100, 0.96, staircase=True)
    assert stair(99) == 100.0 and stair(199) == pytest.approx(96.0)
    with pytest.raises(ValueError):
        optim.ExponentialDecay(1.0, 0, 0.5)


def test_sgd_with_exponential_decay_like_style_transfer():
    # The book's style transfer: SGD(ExponentialDecay(100, 100, 0.96)); step k uses schedule(k).
    p = Tensor(np.zeros(1, np.float32), requires_grad=True)
    opt = optim.SGD([p], learning_rate=optim.ExponentialDecay(100.0, 100, 0.96))
    total = 0.0
    for k in range(150):
        p.grad = np.ones(1, np.float32)
        total += 100 * 0.96 ** (k / 100)
        opt.step()
    assert p.numpy()[0] == pytest.approx(-total, rel=1e-5)


def test_skips_parameters_without_grad_and_zero_grad():
    a = Tensor(np.ones(3, np.float32), requires_grad=True)
    b = Tensor(np.ones(3, np.float32), requires_grad=True)
    opt = optim.SGD([a, b], learning_rate=0.5)
    a.grad = np.ones(3, np.float32)
    opt.step()
    np.testing.assert_allclose(a.numpy(), 0.5)
    np.testing.assert_allclose(b.numpy(), 1.0)
    opt.zero_grad()
    assert a.grad is None and b.grad is None
    opt.step()  # nothing to do, no error
    np.testing.assert_allclose(a.numpy(), 0.5)


def test_updates_in_place_keep_arrays_and_dtype():
    p = Tensor(np.ones((2, 2), np.float32), requires_grad=True)
    data = p.data
    opt = optim.Adam([p])
    for _ in range(3):
        p.grad = np.full((2, 2), 0.5, np.float32)
        opt.step()
    assert p.data is data and p.dtype == np.float32
    assert all(a.dtype == np.float32 for arrays in opt._slots.values() for a in arrays)


def test_clip_grad_norm_global():
    a = Tensor(np.zeros(2, np.float32), requires_grad=True)
    b = Tensor(np.zeros(1, np.float32), requires_grad=True)
    a.grad = np.array([3.0, 0.0], np.float32)
    b.grad = np.array([4.0], np.float32)
    norm = optim.clip_grad_norm([a, b], 1.0)
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(a.grad, [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(b.grad, [0.8], rtol=1e-6)
    assert optim.clip_grad_norm([a, b], 10.0) == pytest.approx(1.0)  # under the limit: unchanged
    np.testing.assert_allclose(b.grad, [0.8], rtol=1e-6)


@pytest.mark.parametrize("kind", ["clipnorm", "global_clipnorm", "clipvalue"])
def test_optimizer_clipping_options(kind):
    a = Tensor(np.zeros(2, np.float32), requires_grad=True)
    b = Tensor(np.zeros(1, np.float32), requires_grad=True)
    opt = optim.SGD([a, b], learning_rate=1.0, **{kind: 1.0})
    a.grad = np.array([3.0, 0.0], np.float32)
    b.grad = np.array([4.0], np.float32)
    opt.step()
    expected = {"clipnorm": ([-1.0, 0.0], [-1.0]),           # each gradient on its own
                "global_clipnorm": ([-0.6, 0.0], [-0.8]),    # together, joint norm 5
                "clipvalue": ([-1.0, 0.0], [-1.0])}[kind]    # elementwise
    np.testing.assert_allclose(a.numpy(), expected[0], rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), expected[1], rtol=1e-6)
    np.testing.assert_allclose(a.grad, [3.0, 0.0])  # the .grad itself is not modified
    with pytest.raises(ValueError):
        optim.SGD([a], clipnorm=1.0, clipvalue=1.0)


def test_state_round_trip_resumes_identically():
    grads = _grads((3, 4), 6, seed=3)
    full, _ = _run(lambda ps: optim.Adam(ps, learning_rate=0.01), P0, grads)

    p = Tensor(P0.copy(), requires_grad=True)
    opt = optim.Adam([p], learning_rate=0.01)
    for g in grads[:3]:
        p.grad = g.copy()
        opt.step()
    state = opt.get_state()
    assert state["iterations"] == 3 and set(state) == {"iterations", "learning_rate",
                                                        "momentum/0", "velocity/0"}
    assert all(isinstance(v, (np.ndarray, np.generic)) for v in state.values())

    p2 = Tensor(p.numpy().copy(), requires_grad=True)
    opt2 = optim.Adam([p2], learning_rate=0.01)
    opt2.set_state(state)
    for g in grads[3:]:
        p2.grad = g.copy()
        opt2.step()
    np.testing.assert_allclose(p2.numpy(), full, rtol=1e-6, atol=1e-7)


def test_set_state_checks_shapes_and_names():
    p = Tensor(np.zeros((2, 3), np.float32), requires_grad=True)
    opt = optim.RMSprop([p])
    with pytest.raises(ValueError, match=r"velocity/0.*\(3, 2\).*\(2, 3\)"):
        opt.set_state({"iterations": 1, "velocity/0": np.zeros((3, 2))})
    with pytest.raises(ValueError, match="unknown entry"):
        opt.set_state({"nonsense/0": np.zeros((2, 3))})
    assert opt.iterations == 0 and not opt._slots


def test_keras_style_apply_gradients():
    p = Tensor(np.ones(3, np.float32), requires_grad=True)
    opt = optim.Adam(learning_rate=0.1)  # Keras style: no parameter list yet
    opt.apply_gradients(zip([np.ones(3, np.float32)], [p]))
    np.testing.assert_allclose(p.numpy(), 1 - 0.1, rtol=1e-5)
    assert opt.params == [p] and opt.iterations == 1


def test_model_parameters_are_accepted():
    from micrograd_gen import nn
    model = nn.Sequential([nn.Dense(3, input_shape=(2,))])
    opt = optim.SGD(model)
    assert len(opt.params) == 2


def _rosenbrock(x):
    a, b = x[:, 1:], x[:, :-1]
    return (100 * (a - b * b) ** 2 + (1 - b) ** 2).sum()


def test_lbfgs_minimises_rosenbrock_on_a_3x4_tensor():
    seen = []
    x0 = Tensor(np.zeros((3, 4), np.float32))
    x, info = optim.lbfgs(_rosenbrock, x0, maxiter=200, callback=lambda x, loss: seen.append(
        (x.shape, loss)))
    assert isinstance(x, Tensor) and x.shape == (3, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x.numpy(), 1.0, atol=1e-3)
    assert info["loss"] < 1e-6 and info["nit"] == len(seen) > 5
    assert all(s == (3, 4) for s, _ in seen)
    losses = [loss for _, loss in seen]
    assert losses[-1] < losses[0] and losses[0] <= float(_rosenbrock(x0).item())


def test_lbfgs_limits_and_arrays():
    x0 = np.zeros((3, 4), np.float32)
    x, info = optim.lbfgs(_rosenbrock, x0, maxiter=1000, maxfun=20)
    assert isinstance(x, np.ndarray) and x.shape == (3, 4)
    assert info["nfev"] <= 25  # scipy stops at the first iteration past maxfun evaluations
    x, info = optim.lbfgs(_rosenbrock, x0, maxiter=3)
    assert info["nit"] == 3
    # callback returning True stops at once
    x, info = optim.lbfgs(_rosenbrock, x0, maxiter=100, callback=lambda x, loss: True)
    assert info["message"] == "stopped by callback"


def test_lbfgs_bounds():
    x, info = optim.lbfgs(lambda x: ((x - 5.0) ** 2).sum(), np.zeros((2, 2), np.float32),
                          bounds=(0.0, 2.0))
    np.testing.assert_allclose(x, 2.0)
