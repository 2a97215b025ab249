"""NumPy and CuPy give the same numbers: every op's forward and gradient, and a small end-to-end
run of each application of the chapter, on both backends.

Tolerances (issue 6): float32 1e-5 and float64 1e-10, relative to each array's largest value (a
GPU sums in another order, so values near zero differ in absolute, not relative, terms).
Everything but the coverage check needs CuPy and a CUDA device and skips, with the reason, where
either is missing.
"""
import zlib

import numpy as np
import pytest

import micrograd_gen as mg
from micrograd_gen import Tensor, backend, nn, ops


def _why_no_gpu():
    try:
        backend.cupy_module()
    except RuntimeError as e:
        return str(e)
    return None


def gpu(test):
    """@pytest.mark.gpu, skipped with the reason where CuPy or a device is missing."""
    why = _why_no_gpu()
    return pytest.mark.gpu(pytest.mark.skipif(why is not None, reason=f"needs CuPy and a CUDA "
                                                                      f"device: {why}")(test))
TOL = {np.float32: 1e-5, np.float64: 1e-10}
DTYPES = [np.float32, np.float64]


def assert_close(got, want, dtype, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(float(np.max(np.abs(want), initial=0.0)), 1e-30)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype] * scale, err_msg=what)


# ---- every op ------------------------------------------------------------------------------------

def _normal(rng, *shape):
    return rng.standard_normal(shape)


def _positive(rng, *shape):
    return rng.uniform(0.5, 2.0, shape)


def _away_from_zero(rng, *shape):
    v = rng.uniform(0.2, 2.0, shape)
    return v * rng.choice([-1.0, 1.0], shape)


def _distinct(rng, *shape):
    return rng.permutation(np.arange(np.prod(shape), dtype=np.float64)).reshape(shape) * 0.37 - 1


def _probabilities(rng, *shape):
    p = rng.uniform(0.05, 1.0, shape)
    return p / p.sum(axis=-1, keepdims=True)


def _mha_weights(rng, d=6, heads=2, key_dim=3):
    shapes = [(d, heads, key_dim), (heads, key_dim)] * 3 + [(heads, key_dim, d), (d,)]
    return [rng.standard_normal(s) * 0.4 for s in shapes]


# name -> make(rng) returning (fn, differentiable inputs, constants); fn(*tensors, *constants).
# Constants are moved to the backend as they are (integers stay integers).
OPS = {
    "add": lambda r: (ops.add, [_normal(r, 3, 4), _normal(r, 4)], []),
    "subtract": lambda r: (ops.subtract, [_normal(r, 3, 4), _normal(r, 3, 1)], []),
    "multiply": lambda r: (ops.multiply, [_normal(r, 2, 3, 4), _normal(r, 3, 4)], []),
    "divide": lambda r: (ops.divide, [_normal(r, 3, 4), _positive(r, 3, 4)], []),
    "power": lambda r: (ops.power, [_positive(r, 3, 4), _normal(r, 3, 4)], []),
    "negative": lambda r: (ops.negative, [_normal(r, 5)], []),
    "cast": lambda r: (lambda a: ops.cast(a, np.float64), [_normal(r, 3, 4)], []),
    "exp": lambda r: (ops.exp, [_normal(r, 3, 4)], []),
    "log": lambda r: (ops.log, [_positive(r, 3, 4)], []),
    "sqrt": lambda r: (ops.sqrt, [_positive(r, 3, 4)], []),
    "abs": lambda r: (ops.abs, [_away_from_zero(r, 3, 4)], []),
    "tanh": lambda r: (ops.tanh, [_normal(r, 3, 4) * 3], []),
    "sigmoid": lambda r: (ops.sigmoid, [_normal(r, 3, 4) * 5], []),
    "relu": lambda r: (ops.relu, [_away_from_zero(r, 3, 4)], []),
    "leaky_relu": lambda r: (ops.leaky_relu, [_away_from_zero(r, 3, 4)], []),
    "softplus": lambda r: (ops.softplus, [_normal(r, 3, 4) * 4], []),
    "clip": lambda r: (lambda a: ops.clip(a, -0.5, 0.5), [_distinct(r, 3, 4) + 0.01], []),
    "maximum": lambda r: (ops.maximum, [_normal(r, 3, 4), _normal(r, 3, 4) + 0.05], []),
    "minimum": lambda r: (ops.minimum, [_normal(r, 3, 4), _normal(r, 3, 4) + 0.05], []),
    "where": lambda r: (lambda a, b, c: ops.where(c, a, b), [_normal(r, 3, 4), _normal(r, 3, 4)],
                        [r.random((3, 4)) > 0.5]),
    "sum": lambda r: (lambda a: ops.sum(a, axis=(0, 2), keepdims=True), [_normal(r, 2, 3, 4)], []),
    "mean": lambda r: (lambda a: ops.mean(a, axis=1), [_normal(r, 2, 3, 4)], []),
    "var": lambda r: (lambda a: ops.var(a, axis=-1), [_normal(r, 2, 3, 4)], []),
    "max": lambda r: (lambda a: ops.max(a, axis=0), [_distinct(r, 3, 4)], []),
    "min": lambda r: (lambda a: ops.min(a, axis=None), [_distinct(r, 3, 4)], []),
    "logsumexp": lambda r: (lambda a: ops.logsumexp(a, axis=-1), [_normal(r, 3, 5) * 4], []),
    "reshape": lambda r: (lambda a: ops.reshape(a, (4, 6)), [_normal(r, 2, 3, 4)], []),
    "transpose": lambda r: (lambda a: ops.transpose(a, (2, 0, 1)), [_normal(r, 2, 3, 4)], []),
    "broadcast_to": lambda r: (lambda a: ops.broadcast_to(a, (2, 3, 4)), [_normal(r, 3, 1)], []),
    "getitem": lambda r: (lambda a: a[1:, ::2, -1], [_normal(r, 3, 4, 5)], []),
    "getitem_ids": lambda r: (lambda a, i: ops.getitem(a, i), [_normal(r, 5, 3)],
                              [np.array([0, 3, 3, 1])]),
    "expand_dims": lambda r: (lambda a: ops.expand_dims(a, 1), [_normal(r, 3, 4)], []),
    "squeeze": lambda r: (lambda a: ops.squeeze(a, 1), [_normal(r, 3, 1, 4)], []),
    "flatten": lambda r: (ops.flatten, [_normal(r, 2, 3, 4)], []),
    "concatenate": lambda r: (lambda a, b: ops.concatenate([a, b], axis=1),
                              [_normal(r, 2, 3), _normal(r, 2, 5)], []),
    "stack": lambda r: (lambda a, b: ops.stack([a, b], axis=-1), [_normal(r, 2, 3)] * 2, []),
    "split": lambda r: (lambda a: ops.split(a, [1, 3], axis=1)[1], [_normal(r, 2, 5)], []),
    "pad": lambda r: (lambda a: ops.pad(a, ((0, 0), (1, 2), (2, 1), (0, 0))),
                      [_normal(r, 2, 3, 4, 2)], []),
    "matmul": lambda r: (ops.matmul, [_normal(r, 2, 3, 4), _normal(r, 4, 5)], []),
    "affine": lambda r: (ops.affine, [_normal(r, 2, 3, 4), _normal(r, 4, 5), _normal(r, 5)], []),
    "gram": lambda r: (ops.gram, [_normal(r, 2, 6, 3)], []),
    "softmax": lambda r: (lambda a: ops.softmax(a, axis=-1), [_normal(r, 3, 7) * 3], []),
    "log_softmax": lambda r: (lambda a: ops.log_softmax(a, axis=1), [_normal(r, 3, 7, 2)], []),
    "categorical_crossentropy": lambda r: (
        lambda p, y: ops.categorical_crossentropy(y, p), [_probabilities(r, 4, 6)],
        [_probabilities(r, 4, 6)]),
    "categorical_crossentropy_logits": lambda r: (
        lambda z, y: ops.categorical_crossentropy(y, z, from_logits=True), [_normal(r, 4, 6)],
        [_probabilities(r, 4, 6)]),
    "sparse_categorical_crossentropy": lambda r: (
        lambda p, y: ops.sparse_categorical_crossentropy(y, p), [_probabilities(r, 4, 6)],
        [r.integers(0, 6, 4)]),
    "sparse_categorical_crossentropy_logits": lambda r: (  # the fused CUDA kernel
        lambda z, y: ops.sparse_categorical_crossentropy(y, z, from_logits=True, reduction="sum"),
        [_normal(r, 3, 5, 301) * 4], [r.integers(0, 301, (3, 5))]),
    "binary_crossentropy": lambda r: (
        lambda p, y: ops.binary_crossentropy(y, p), [r.uniform(0.05, 0.95, (4, 3))],
        [r.uniform(0, 1, (4, 3))]),
    "binary_crossentropy_logits": lambda r: (
        lambda z, y: ops.binary_crossentropy(y, z, from_logits=True), [_normal(r, 4, 3)],
        [r.uniform(0, 1, (4, 3))]),
    "mean_squared_error": lambda r: (
        lambda p, y: ops.mean_squared_error(y, p), [_normal(r, 4, 3)], [_normal(r, 4, 3)]),
    "dropout": lambda r: (lambda a: ops.dropout(a, 0.3, seed=5), [_normal(r, 6, 7)], []),
    "embedding": lambda r: (lambda t, i: ops.embedding(i, t), [_normal(r, 9, 4)],
                            [r.integers(0, 9, (3, 5))]),
    "lstm": lambda r: (lambda x, k, rk, b: ops.lstm(x, k, rk, b),
                       [_normal(r, 3, 5, 4), _normal(r, 4, 24) * 0.5, _normal(r, 6, 24) * 0.5,
                        _normal(r, 24) * 0.5], []),
    "lstm_sequences_state": lambda r: (
        lambda x, k, rk, b, h, c: ops.lstm(x, k, rk, b, initial_state=(h, c),
                                           return_sequences=True),
        [_normal(r, 2, 4, 3), _normal(r, 3, 20) * 0.5, _normal(r, 5, 20) * 0.5,
         _normal(r, 20) * 0.5, _normal(r, 2, 5), _normal(r, 2, 5)], []),
    "lstm_step": lambda r: (ops.lstm_step, [_normal(r, 3, 4), _normal(r, 3, 5), _normal(r, 3, 5),
                                            _normal(r, 4, 20) * 0.5, _normal(r, 5, 20) * 0.5,
                                            _normal(r, 20) * 0.5], []),
    "batch_norm_training": lambda r: (
        lambda x, g, b, m, v: ops.batch_norm(x, g, b, m, v, training=True,
                                             update_moving_stats=False),
        [_normal(r, 4, 3, 3, 5), _positive(r, 5), _normal(r, 5)],
        [np.zeros(5), np.ones(5)]),
    "batch_norm_inference": lambda r: (
        lambda x, g, b, m, v: ops.batch_norm(x, g, b, m, v, training=False),
        [_normal(r, 4, 3, 3, 5), _positive(r, 5), _normal(r, 5)],
        [_normal(r, 5), _positive(r, 5)]),
    "layer_norm": lambda r: (ops.layer_norm, [_normal(r, 3, 4, 6), _positive(r, 6),
                                              _normal(r, 6)], []),
    "max_pool2d": lambda r: (lambda x: ops.max_pool2d(x, 3, 2), [_distinct(r, 2, 7, 9, 3)], []),
    "avg_pool2d_same": lambda r: (lambda x: ops.avg_pool2d(x, 3, 1, padding="same"),
                                  [_normal(r, 2, 5, 6, 3)], []),
    "global_avg_pool2d": lambda r: (ops.global_avg_pool2d, [_normal(r, 2, 5, 6, 3)], []),
    "upsample2d": lambda r: (lambda x: ops.upsample2d(x, 2), [_normal(r, 2, 3, 4, 3)], []),
    "resize_bilinear": lambda r: (lambda x: ops.resize_bilinear(x, (7, 5)),
                                  [_normal(r, 2, 4, 6, 3)], []),
    "conv2d_same": lambda r: (lambda x, k, b: ops.conv2d(x, k, b, padding="same"),
                              [_normal(r, 2, 9, 11, 5), _normal(r, 3, 3, 5, 7), _normal(r, 7)], []),
    "conv2d_relu_1x1": lambda r: (lambda x, k, b: ops.conv2d(x, k, b, relu=True),
                                  [_normal(r, 2, 5, 6, 17), _normal(r, 1, 1, 17, 16),
                                   _normal(r, 16)], []),
    "conv2d_thin_strided": lambda r: (lambda x, k: ops.conv2d(x, k, strides=2, padding="same"),
                                      [_normal(r, 2, 9, 10, 3), _normal(r, 4, 4, 3, 6)], []),
    "conv2d_dilated_valid": lambda r: (
        lambda x, k: ops.conv2d(x, k, padding="valid", dilation_rate=2),
        [_normal(r, 1, 11, 9, 17), _normal(r, 3, 2, 17, 4)], []),
    "conv2d_transpose": lambda r: (
        lambda x, k, b: ops.conv2d_transpose(x, k, b, strides=2, padding="same"),
        [_normal(r, 2, 4, 5, 6), _normal(r, 4, 4, 3, 6), _normal(r, 3)], []),
    "conv2d_transpose_valid": lambda r: (
        lambda x, k: ops.conv2d_transpose(x, k, strides=3, padding="valid"),
        [_normal(r, 1, 3, 4, 2), _normal(r, 3, 5, 4, 2)], []),
    "scaled_dot_product_attention": lambda r: (
        lambda q, k, v: ops.scaled_dot_product_attention(q, k, v, causal=True),
        [_normal(r, 2, 2, 5, 3), _normal(r, 2, 2, 5, 3), _normal(r, 2, 2, 5, 3)], []),
    "project_heads": lambda r: (ops.project_heads, [_normal(r, 2, 5, 6), _normal(r, 6, 2, 3),
                                                    _normal(r, 2, 3)], []),
    "merge_heads": lambda r: (ops.merge_heads, [_normal(r, 2, 2, 5, 3), _normal(r, 2, 3, 6),
                                                _normal(r, 6)], []),
    "multi_head_attention": lambda r: (
        lambda q, v, *w: ops.multi_head_attention(q, v, None, *w, causal=True),
        [_normal(r, 2, 5, 6), _normal(r, 2, 5, 6)] + _mha_weights(r), []),
}


def run_op(name, dtype, where):
    """Forward outputs and input gradients (as NumPy arrays) of OPS[name] on one backend."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    fn, inputs, constants = OPS[name](rng)
    tensors = [Tensor(backend.to_module(a.astype(dtype), where), requires_grad=True)
               for a in inputs]
    constants = [backend.to_module(c.astype(dtype) if c.dtype.kind == "f" else c, where)
                 for c in constants]
    out = fn(*tensors, *constants)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    total = None
    for o in outs:  # one scalar whose gradient is a random cotangent on every output
        cotangent = backend.to_module(rng.standard_normal(o.shape).astype(dtype), where)
        term = ops.sum(o * cotangent)
        total = term if total is None else total + term
    total.backward()
    return [o.numpy() for o in outs], [backend.to_numpy(t.grad) for t in tensors]


@gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(OPS))
def test_op_forward_and_gradient_agree_on_numpy_and_cupy(name, dtype):
    outs_np, grads_np = run_op(name, dtype, "numpy")
    outs_cp, grads_cp = run_op(name, dtype, "cupy")
    for i, (got, want) in enumerate(zip(outs_cp, outs_np)):
        assert_close(got, want, dtype, f"{name} output {i}")
    for i, (got, want) in enumerate(zip(grads_cp, grads_np)):
        assert_close(got, want, dtype, f"{name} gradient of input {i}")


# Ops with a fast route registered by micrograd_gen.accel (CUDA kernels on CuPy arrays): their
# reference, run on CuPy too (MICROGRAD_GEN_FAST=0), must give the same numbers.
FAST_ROUTED = ["conv2d_same", "conv2d_relu_1x1", "conv2d_thin_strided", "conv2d_dilated_valid",
               "conv2d_transpose", "conv2d_transpose_valid", "max_pool2d", "avg_pool2d_same",
               "sparse_categorical_crossentropy_logits"]


@gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", FAST_ROUTED)
def test_reference_ops_on_cupy_agree_with_the_fast_path(name, dtype):
    outs_fast, grads_fast = run_op(name, dtype, "cupy")
    with mg.fast_paths(False):
        outs_ref, grads_ref = run_op(name, dtype, "cupy")
    for i, (got, want) in enumerate(zip(outs_ref, outs_fast)):
        assert_close(got, want, dtype, f"{name} reference output {i}")
    for i, (got, want) in enumerate(zip(grads_ref, grads_fast)):
        assert_close(got, want, dtype, f"{name} reference gradient of input {i}")


def test_every_public_op_is_covered():
    """Runs without a GPU too: a new op must get a case in OPS."""
    public = [n for n in dir(ops) if not n.startswith("_") and callable(getattr(ops, n))]
    missing = [n for n in public if not any(key == n or key.startswith(n + "_") for key in OPS)]
    assert not missing, f"ops with no NumPy/CuPy comparison in OPS: {missing}"


# ---- each application, small, on both backends ---------------------------------------------------

@pytest.fixture
def on_backend():
    """Build and run under backend.use(name); restores the default afterwards."""
    before = backend.default_name()

    def use(name):
        backend.use(name)
        nn.clear_session()
        nn.set_seed(0)
    yield use
    backend.use(before)


def _text_steps(model, x, y, where, optimizer):
    from micrograd_gen.generative.text_training import sparse_lm_loss
    losses = []
    for _ in range(2):
        loss = sparse_lm_loss(model, backend.to_module(x, where), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses, [np.array(w) for w in model.get_weights()]


def app_char_lstm(where):
    from micrograd_gen.generative.char_lstm import build_char_lstm
    from micrograd_gen.optim import RMSprop
    rng = np.random.default_rng(0)
    model = build_char_lstm(11, maxlen=7, units=8)
    x = np.eye(11, dtype=np.float32)[rng.integers(0, 11, (5, 7))]
    return _text_steps(model, x, rng.integers(0, 11, 5), where,
                       RMSprop(model.parameters(), learning_rate=0.01))


def app_transformer_lm(where):
    from micrograd_gen.generative.transformer_lm import build_transformer_lm
    from micrograd_gen.optim import RMSprop
    rng = np.random.default_rng(0)
    model = build_transformer_lm(vocab_size=40, sequence_length=9, embed_dim=8, dense_dim=16,
                                 num_heads=2)
    model.train()
    seq = rng.integers(1, 40, (3, 9))
    seq[0, -2:] = 0  # some padding
    return _text_steps(model, seq[:, :-1], seq[:, 1:], where,
                       RMSprop(model.parameters(), learning_rate=1e-3))


def app_deepdream(where):
    from micrograd_gen import applications
    from micrograd_gen.generative.deepdream import DeepDream
    model = applications.InceptionV3(weights=None)
    model.trainable = False
    dreamer = DeepDream(model, layer_weights={"mixed1": 1.0, "mixed2": 1.5})
    image = np.random.default_rng(0).uniform(-1, 1, (1, 107, 115, 3)).astype(np.float32)
    image = backend.to_module(image, where)
    losses = []
    for _ in range(2):
        loss, image = dreamer.gradient_ascent_step(image, 20.0)
        losses.append(loss)
    return losses, [backend.to_numpy(image)]


def app_style_transfer(where):
    from micrograd_gen import applications
    from micrograd_gen.generative.style_transfer import StyleTransferLoss
    rng = np.random.default_rng(0)
    model = applications.VGG19(weights=None)
    model.trainable = False
    base, style, comb = (backend.to_module(rng.uniform(-100, 100, (1, 32, 48, 3)).astype(np.float32),
                                           where) for _ in range(3))
    out = []
    for batch3 in (False, True):
        loss, parts, grad = StyleTransferLoss(base, style, model=model, batch3=batch3
                                              ).loss_and_grad(comb)
        out.append(([loss] + [parts[k] for k in sorted(parts)], backend.to_numpy(grad)))
    return [v for values, _ in out for v in values], [g for _, g in out]


def app_vae(where):
    from micrograd_gen.generative import vae as V
    from micrograd_gen.optim import Adam
    model = V.VAE(seed=0).train()
    optimizer = Adam(model.parameters(), learning_rate=1e-3)
    x = V.as_digit_batch(np.random.default_rng(0).random((6, 28, 28, 1), dtype=np.float32))
    losses = [v for _ in range(2) for v in V.train_step(model, optimizer, x)]
    return losses, [np.array(w) for w in model.get_weights()]


def app_dcgan(where):
    from micrograd_gen.generative import dcgan
    gan = dcgan.GAN(seed=0)
    real = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    losses = [v for _ in range(2) for v in gan.train_step(real).values()]
    return losses, [np.array(w) for w in gan.generator.get_weights()[:2]]


APPS = {"char_lstm": app_char_lstm, "transformer_lm": app_transformer_lm,
        "deepdream": app_deepdream, "style_transfer": app_style_transfer, "vae": app_vae,
        "dcgan": app_dcgan}


@gpu
@pytest.mark.parametrize("app", sorted(APPS))
def test_application_runs_alike_on_numpy_and_cupy(app, on_backend):
    on_backend("numpy")
    losses_np, arrays_np = APPS[app]("numpy")
    on_backend("cupy")
    losses_cp, arrays_cp = APPS[app]("cupy")
    # float32 end to end, through two optimiser steps: errors compound, so 1e-4 here
    np.testing.assert_allclose(losses_cp, losses_np, rtol=1e-4, atol=1e-6, err_msg=f"{app} losses")
    for i, (got, want) in enumerate(zip(arrays_cp, arrays_np)):
        scale = max(float(np.max(np.abs(want))), 1e-30)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale,
                                   err_msg=f"{app} array {i}")


@gpu
def test_the_gpu_is_really_used(on_backend):
    import cupy
    on_backend("cupy")
    x = mg.Tensor(np.ones((1, 5, 5, 3), np.float32)).to("cupy")
    y = ops.conv2d(x, mg.Tensor(np.ones((3, 3, 3, 2), np.float32)).to("cupy"), padding="same")
    assert isinstance(y.data, cupy.ndarray)
