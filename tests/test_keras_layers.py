"""Keras 3 layer behaviour that used to differ (issue 16) and the layers' argument checks (issue 19,
rule 7): activation=None, keyword arrays and `inputs=`, the activation layers, Variable.assign,
UpSampling2D's interpolations, Conv2D(groups), Conv2DTranspose(output_padding, dilation_rate),
LSTM's go_backwards / stateful / dropout. Each new differentiable path has a gradient check on
the reference ops (fast paths off) and a forward check against hand-computed or documented
values."""
import numpy as np
import pytest

import micrograd_gen as mg
from micrograd_gen import Tensor, nn
from micrograd_gen.gradcheck import gradcheck


def _rng(seed=0):
    return np.random.default_rng(seed)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _with_weights(layer, names):
    """fn(x, *weights) that runs `layer` with the named weights replaced by the given Tensors,
    so that a gradient check covers the weights too."""
    def fn(x, *weights):
        saved = [getattr(layer, n) for n in names]
        for n, w in zip(names, weights):
            object.__setattr__(layer, n, w)
        try:
            return layer(x)
        finally:
            for n, w in zip(names, saved):
                object.__setattr__(layer, n, w)
    return fn


# ---- activation=None --------------------------------------------------------------------------
@pytest.mark.parametrize("make,shape", [
    (lambda a: nn.Dense(3, activation=a), (2, 4)),
    (lambda a: nn.Conv2D(2, 3, activation=a), (1, 5, 5, 2)),
    (lambda a: nn.Conv2DTranspose(2, 3, strides=2, activation=a), (1, 3, 3, 2)),
    (lambda a: nn.Activation(a), (2, 4)),
])
def test_activation_none_is_linear_at_construction_and_after(make, shape):
    x = _rng().standard_normal(shape).astype(np.float32)
    linear = make("linear")
    linear(x)
    for layer in (make(None), make("relu")):
        layer.build(shape)
        layer.set_weights(linear.get_weights())
        if isinstance(layer, nn.Activation) or layer.activation is not nn.activations.linear:
            layer.activation = None  # set after construction, as Keras's own tests do
        np.testing.assert_allclose(layer(x).numpy(), linear(x).numpy(), rtol=1e-6, atol=1e-6)
    assert np.any(linear(x).numpy() < 0)  # so relu would have shown


def test_lstm_activations_none_and_hard_sigmoid_follow_the_equations():
    x = _rng(1).standard_normal((2, 4, 3))
    layer = nn.LSTM(5, activation=None, recurrent_activation="hard_sigmoid", dtype="float64",
                    seed=0)
    out = layer(x).numpy()
    kernel, recurrent, bias = layer.get_weights()
    h = c = np.zeros((2, 5))
    hard = lambda z: np.clip(z / 6 + 0.5, 0, 1)  # noqa: E731  (Keras 3's hard_sigmoid)
    for t in range(4):
        z = x[:, t] @ kernel + h @ recurrent + bias
        i, f, g, o = np.split(z, 4, axis=1)
        c = hard(f) * c + hard(i) * g
        h = hard(o) * c
    np.testing.assert_allclose(out, h, rtol=1e-10)


# ---- Layer.__call__: keyword arrays and inputs= -----------------------------------------------
def test_numpy_arrays_as_keyword_arguments():
    rng = _rng(2)
    x = rng.standard_normal((2, 4, 6)).astype(np.float32)
    mask = np.tril(np.ones((4, 4), bool))[None].repeat(2, 0)
    mha = nn.MultiHeadAttention(num_heads=2, key_dim=3)
    by_keyword = mha(query=x, value=x, attention_mask=mask).numpy()
    np.testing.assert_allclose(by_keyword, mha(x, x, attention_mask=mask).numpy(), rtol=1e-6)
    np.testing.assert_allclose(by_keyword, mha(x, x, use_causal_mask=True).numpy(), rtol=1e-5,
                               atol=1e-6)
    lstm = nn.LSTM(3, seed=0)
    h0, c0 = rng.standard_normal((2, 2, 3)).astype(np.float32)
    with_state = lstm(x, initial_state=[h0, c0]).numpy()
    assert not np.allclose(with_state, lstm(x).numpy())
    np.testing.assert_allclose(lstm(inputs=x, initial_state=(h0, c0)).numpy(), with_state)


def test_inputs_keyword_and_the_calls_own_name():
    x = _rng(3).standard_normal((2, 4)).astype(np.float32)
    dense = nn.Dense(3)
    y = dense(inputs=x).numpy()   # builds from the keyword argument
    assert dense.built
    np.testing.assert_array_equal(dense(x).numpy(), y)
    np.testing.assert_array_equal(dense(x=x).numpy(), y)
    np.testing.assert_array_equal(nn.Concatenate()(inputs=[x, x]).numpy(),
                                  np.concatenate([x, x], -1))
    model = nn.Sequential([nn.Dense(2, input_shape=(4,))])
    np.testing.assert_array_equal(model(inputs=x).numpy(), model(x).numpy())


def test_cache_dict_keyword_is_kept_as_the_same_object():
    x = _rng(4).standard_normal((1, 3, 4)).astype(np.float32)
    mha = nn.MultiHeadAttention(num_heads=1, key_dim=4)
    cache = {}
    mha(query=x[:, :1], value=x[:, :1], use_causal_mask=True, cache=cache)
    assert cache.get("key") is not None


# ---- activation layers ------------------------------------------------------------------------
def test_relu_layer_keras_documented_values():
    x = np.array([-10, -5, 0.0, 5, 10])
    # The example in Keras's ReLU docstring.
    np.testing.assert_allclose(nn.ReLU(max_value=10, negative_slope=0.5, threshold=0)(x).numpy(),
                               [-5, -2.5, 0, 5, 10])
    x = np.array([-3.0, -1.0, 0.5, 1.0, 2.0, 7.0])
    # f = max_value above it, x in [threshold, max_value), negative_slope * (x - threshold) below
    np.testing.assert_allclose(
        nn.ReLU(max_value=6, negative_slope=0.1, threshold=1.5)(x).numpy(),
        [-0.45, -0.25, -0.1, -0.05, 2.0, 6.0], rtol=1e-6)
    np.testing.assert_array_equal(nn.ReLU()(x).numpy(), np.maximum(x, 0).astype(np.float32))
    np.testing.assert_array_equal(nn.ReLU(max_value=6)(x).numpy(),
                                  np.clip(x, 0, 6).astype(np.float32))
    np.testing.assert_array_equal(nn.ReLU(threshold=1.0)(x).numpy(),
                                  np.where(x > 1, x, 0).astype(np.float32))


def test_elu_softmax_prelu_forward():
    x = np.linspace(-3, 3, 12).reshape(2, 3, 2)
    np.testing.assert_allclose(nn.ELU(alpha=0.5)(x).numpy(), np.where(x > 0, x, 0.5 * np.expm1(x)),
                               rtol=1e-6)
    # Keras's Softmax docstring: [1, 2, 1] -> [0.21194157, 0.5761169, 0.21194157]
    np.testing.assert_allclose(nn.Softmax()(np.array([1.0, 2.0, 1.0])).numpy(),
                               [0.21194157, 0.5761169, 0.21194157], rtol=1e-6)
    # and with mask [True, False, True] (Keras 2's docstring): [0.5, 0, 0.5]
    np.testing.assert_allclose(
        nn.Softmax()(np.array([1.0, 2.0, 1.0]), mask=np.array([True, False, True])).numpy(),
        [0.5, 0, 0.5], atol=1e-7)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(nn.Softmax(axis=1)(x).numpy(), e / e.sum(1, keepdims=True),
                               rtol=1e-6)
    e = np.exp(x - x.max(axis=(1, 2), keepdims=True))
    np.testing.assert_allclose(nn.Softmax(axis=(1, 2))(x).numpy(),
                               e / e.sum((1, 2), keepdims=True), rtol=1e-5)
    prelu = nn.PReLU(alpha_initializer="ones")
    np.testing.assert_allclose(prelu(x).numpy(), x, rtol=1e-6)
    assert prelu.get_weights()[0].shape == (3, 2) and prelu.weight_names == ["alpha"]


def test_prelu_shared_axes_keras_layout():
    x = _rng(5).standard_normal((2, 4, 5, 3)).astype(np.float32)
    prelu = nn.PReLU(shared_axes=[1, 2])
    prelu.build(x.shape)
    assert prelu.alpha.shape == (1, 1, 3)
    np.testing.assert_array_equal(prelu.get_weights()[0], 0)  # Keras's default: zeros
    alpha = np.array([[[0.1, 0.2, 0.3]]], np.float32)
    prelu.set_weights([alpha])
    np.testing.assert_allclose(prelu(x).numpy(), np.where(x > 0, x, alpha * x), rtol=1e-6)
    assert nn.PReLU(shared_axes=2)(x).shape == x.shape
    with pytest.raises(ValueError, match=r"PReLU .*alpha of shape \(1, 1, 3\).*\(2, 4, 5, 4\)"):
        prelu(np.zeros((2, 4, 5, 4), np.float32))
    with pytest.raises(ValueError, match=r"PReLU .*shared axis 4 .*\(2, 4, 5, 3\)"):
        nn.PReLU(shared_axes=[4])(x)


@pytest.mark.parametrize("make", [
    lambda: nn.ReLU(dtype="float64"),
    lambda: nn.ReLU(max_value=1.5, negative_slope=0.2, threshold=0.5, dtype="float64"),
    lambda: nn.ELU(alpha=0.7, dtype="float64"),
    lambda: nn.Softmax(axis=1, dtype="float64"),
    lambda: nn.Softmax(axis=[1, 2], dtype="float64"),
])
def test_activation_layer_gradients(make):
    # values kept away from the kinks at 0, threshold 0.5 and max_value 1.5
    x = np.array([-2.1, -0.7, -0.2, 0.2, 0.8, 1.2, 1.9, 2.6, -1.3, 0.35, 1.05, 2.2])
    assert gradcheck(make(), [x.reshape(2, 3, 2)])


def test_prelu_gradient_input_and_alpha():
    x = _rng(6).choice([-1, 1], (2, 3, 4)) * _rng(7).uniform(0.2, 2, (2, 3, 4))
    prelu = nn.PReLU(shared_axes=[1], dtype="float64")
    prelu.build(x.shape)
    alpha = _rng(8).uniform(0.1, 0.5, (1, 4))
    assert gradcheck(_with_weights(prelu, ["alpha"]), [x, alpha])


# ---- Variable.assign --------------------------------------------------------------------------
def test_weights_assign_in_place_with_checks():
    dense = nn.Dense(3)
    dense.build((None, 2))
    kernel = dense.kernel
    array = kernel.data
    opt = mg.optim.SGD(dense.trainable_weights, learning_rate=0.1)
    kernel.assign(np.arange(6).reshape(2, 3))       # ints into a float32 weight: fine
    assert kernel.data is array and kernel.dtype == np.float32
    np.testing.assert_array_equal(dense.get_weights()[0], np.arange(6).reshape(2, 3))
    dense.bias.assign(Tensor(np.ones(3)))
    dense.bias.assign_add(np.ones(3))
    dense.bias.assign_sub([0.5, 0.5, 0.5])
    np.testing.assert_array_equal(dense.get_weights()[1], [1.5, 1.5, 1.5])
    np.testing.assert_array_equal(dense(np.array([[1.0, 0.0]])).numpy(), [[1.5, 2.5, 3.5]])
    before = dense.get_weights()
    with pytest.raises(ValueError, match=r"dense.*/kernel' has shape \(2, 3\).*shape \(3, 2\)"):
        kernel.assign(np.zeros((3, 2)))
    with pytest.raises(TypeError, match=r"kernel' has dtype float32.*complex128"):
        kernel.assign(np.zeros((2, 3), complex))
    with pytest.raises(ValueError, match="NaN or infinity"):
        kernel.assign(np.full((2, 3), np.nan))
    for a, b in zip(before, dense.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the optimiser made before assign() updates the assigned values
    dense(np.array([[1.0, 0.0]])).sum().backward()
    opt.step()
    np.testing.assert_allclose(dense.get_weights()[0][0], [-0.1, 0.9, 1.9], rtol=1e-6)
    assert isinstance(kernel, nn.Variable) and isinstance(kernel, Tensor)


# ---- UpSampling2D -----------------------------------------------------------------------------
def _column(values, factor, interpolation):
    x = np.asarray(values, np.float64).reshape(1, -1, 1, 1)
    layer = nn.UpSampling2D((factor, 1), interpolation=interpolation, dtype="float64")
    return layer(x).numpy().ravel()


def test_upsampling_interpolations_hand_computed():
    # Output pixel i samples the input at src = (i + 0.5) / 2 - 0.5: -0.25, 0.25, 0.75, 1.25.
    np.testing.assert_array_equal(_column([0, 1], 2, "nearest"), [0, 0, 1, 1])
    # bilinear (tf.image.resize): src clamped to [0, 1], then linear: 0, 0.25, 0.75, 1
    np.testing.assert_allclose(_column([0, 1], 2, "bilinear"), [0, 0.25, 0.75, 1])
    # bicubic, Keys a = -0.5: k(0.25) = 0.8671875, k(0.75) = 0.2265625, k(1.25) = -0.0703125;
    # pixel 0 of the output keeps taps 0 and 1 only: -0.0703125 / (0.8671875 - 0.0703125);
    # pixel 1: 0.2265625 / (0.8671875 + 0.2265625)
    first, second = -0.0703125 / 0.796875, 0.2265625 / 1.09375
    np.testing.assert_allclose(_column([0, 1], 2, "bicubic"),
                               [first, second, 1 - second, 1 - first], rtol=1e-12)
    # lanczos3 = sinc(d) sinc(d / 3) on |d| < 3, renormalised over the two pixels that exist
    w = {d: np.sinc(d) * np.sinc(d / 3) for d in (0.25, 0.75, 1.25)}
    first, second = w[1.25] / (w[0.25] + w[1.25]), w[0.75] / (w[0.25] + w[0.75])
    np.testing.assert_allclose(_column([0, 1], 2, "lanczos3"),
                               [first, second, 1 - second, 1 - first], rtol=1e-12)
    # area (TensorFlow's resize_area) over whole factors is nearest
    np.testing.assert_allclose(_column([0, 1, 5], 3, "area"), np.repeat([0, 1, 5], 3), rtol=1e-12)


@pytest.mark.parametrize("interpolation", nn.UpSampling2D.INTERPOLATIONS)
def test_upsampling_shapes_constants_and_gradients(interpolation):
    layer = nn.UpSampling2D((2, 3), interpolation=interpolation.upper(), dtype="float64")
    x = _rng(9).standard_normal((2, 3, 4, 2))
    y = layer(x)
    assert y.shape == (2, 6, 12, 2) == layer.compute_output_shape(x.shape)
    flat = np.full((1, 3, 4, 2), 0.7)
    np.testing.assert_allclose(layer(flat).numpy(), 0.7, rtol=1e-12)  # weights sum to one
    with mg.fast_paths(False):
        assert gradcheck(layer, [x[:1, :2, :3]])


def test_upsampling_bilinear_is_the_resize_op_and_unknown_mode_is_refused():
    x = _rng(10).standard_normal((1, 3, 5, 2)).astype(np.float32)
    np.testing.assert_array_equal(nn.UpSampling2D(2, interpolation="bilinear")(x).numpy(),
                                  mg.ops.resize_bilinear(Tensor(x), (6, 10)).numpy())
    with pytest.raises(ValueError, match=r"UpSampling2D 'up.*interpolation must be one of "
                                         r"\['nearest', 'bilinear', 'bicubic', 'lanczos3', "
                                         r"'lanczos5', 'area'\], got 'cubic'"):
        nn.UpSampling2D(interpolation="cubic")


# ---- Conv2D(groups) ---------------------------------------------------------------------------
def _grouped_reference(x, kernel, bias, groups):
    """Valid, stride 1: group g's filters see group g's channels only."""
    kh, kw, cg, filters = kernel.shape
    fg = filters // groups
    n, h, w, _ = x.shape
    out = np.zeros((n, h - kh + 1, w - kw + 1, filters))
    for g in range(groups):
        xs = x[..., g * cg:(g + 1) * cg]
        ks = kernel[..., g * fg:(g + 1) * fg]
        for i in range(h - kh + 1):
            for j in range(w - kw + 1):
                out[:, i, j, g * fg:(g + 1) * fg] = np.einsum(
                    "nhwc,hwcf->nf", xs[:, i:i + kh, j:j + kw], ks)
    return out + bias


def test_conv2d_groups_matches_per_group_reference():
    x = _rng(11).standard_normal((2, 5, 6, 6))
    conv = nn.Conv2D(4, (2, 3), groups=2, dtype="float64", bias_initializer="glorot_uniform")
    y = conv(x).numpy()
    kernel, bias = conv.get_weights()
    assert kernel.shape == (2, 3, 3, 4) and bias.shape == (4,)
    np.testing.assert_allclose(y, _grouped_reference(x, kernel, bias, 2), rtol=1e-10)
    # groups = channels: depthwise-like; and the fused relu path applies per group too
    relu = nn.Conv2D(6, 3, groups=6, activation="relu", dtype="float64")
    out = relu(x).numpy()
    k, b = relu.get_weights()
    np.testing.assert_allclose(out, np.maximum(_grouped_reference(x, k, b, 6), 0), rtol=1e-10)
    same = nn.Conv2D(6, 3, strides=2, padding="same", groups=3)
    assert same(np.zeros((1, 7, 8, 6), np.float32)).shape == same.compute_output_shape(
        (1, 7, 8, 6)) == (1, 4, 4, 6)


@pytest.mark.parametrize("fast", [False, True])
def test_conv2d_groups_gradients(fast):
    x = _rng(12).standard_normal((1, 4, 4, 4))
    conv = nn.Conv2D(2, 2, groups=2, padding="same", dtype="float64")
    conv.build(x.shape)
    with mg.fast_paths(fast):
        assert gradcheck(_with_weights(conv, ["kernel", "bias"]),
                         [x, conv.kernel.data, _rng(13).standard_normal(2)])


def test_conv2d_groups_errors_name_layer_and_shapes():
    with pytest.raises(ValueError, match=r"Conv2D 'c': filters \(6\) must be divisible by "
                                         r"groups \(4\)"):
        nn.Conv2D(6, 3, groups=4, name="c")
    conv = nn.Conv2D(4, 3, groups=4, name="c4")
    with pytest.raises(ValueError, match=r"Conv2D 'c4': the input's 6 channels \(input shape "
                                         r"\(1, 5, 5, 6\)\) do not divide into groups=4"):
        conv(np.zeros((1, 5, 5, 6), np.float32))
    assert not conv.built and conv.weights == []
    conv(np.zeros((1, 5, 5, 8), np.float32))
    with pytest.raises(ValueError, match=r"Conv2D 'c4': built for NHWC inputs with 8 channels, "
                                         r"got shape \(1, 5, 5, 4\)"):
        conv(np.zeros((1, 5, 5, 4), np.float32))


# ---- Conv2DTranspose(output_padding, dilation_rate) -------------------------------------------
def _transpose_reference(x, kernel, bias, strides, padding, output_padding, dilation):
    """Keras 3's own definition on its JAX backend (backend_utils.py): dilate the input by the
    stride, pad it (left, right) as _convert_conv_transpose_padding_args_from_keras_to_jax says,
    and cross-correlate with the flipped, dilated kernel."""
    out = x
    for axis in (1, 2):
        n, k, s, d = (out.shape[axis], kernel.shape[axis - 1], strides[axis - 1],
                      dilation[axis - 1])
        op = None if output_padding is None else output_padding[axis - 1]
        dk = (k - 1) * d + 1
        if padding == "valid":
            op = max(dk, s) - dk if op is None else op
            left, right = dk - 1, dk - 1 + op
        else:
            pad_len = s + dk - 2 if op is None else dk + dk % 2 - 2 + op
            left = min(pad_len // 2 + pad_len % 2, dk - 1)
            right = pad_len - left
        shape = list(out.shape)
        shape[axis] = (n - 1) * s + 1 + left + right
        spread = np.zeros(shape)
        index = [slice(None)] * 4
        index[axis] = slice(left, left + (n - 1) * s + 1, s)
        spread[tuple(index)] = out
        out = spread
    kh, kw, filters, _ = kernel.shape
    dh, dw = dilation
    flipped = kernel[::-1, ::-1]
    oh, ow = out.shape[1] - (kh - 1) * dh, out.shape[2] - (kw - 1) * dw
    y = np.zeros((x.shape[0], oh, ow, filters))
    for a in range(kh):
        for b in range(kw):
            y += np.einsum("nhwc,fc->nhwf", out[:, a * dh:a * dh + oh, b * dw:b * dw + ow],
                           flipped[a, b])
    return y + bias


# (input size, kernel, strides, padding, output_padding, dilation) -> Keras 3's output size
_TRANSPOSE_CASES = [
    (5, 3, 2, "same", 1, 1, 10),    # (5 - 1) * 2 + 3 % 2 + 1
    (5, 3, 2, "same", 0, 1, 9),
    (5, 4, 2, "same", 0, 1, 8),     # (5 - 1) * 2 + 0 + 0
    (5, 4, 2, "same", 1, 1, 9),
    (5, 3, 2, "valid", 1, 1, 12),   # (5 - 1) * 2 + 3 + 1
    (4, 2, 3, "valid", 2, 1, 13),   # (4 - 1) * 3 + 2 + 2: one zero row past the last tap
    (5, 3, 1, "same", None, 2, 5),  # dilated kernel 5
    (5, 3, 1, "valid", None, 2, 9),  # 5 - 1 + 5
    (4, 2, 1, "same", 0, 3, 3),     # dilated kernel 4: (4 - 1) * 1 + 4 % 2 + 0
]


@pytest.mark.parametrize("n,k,s,padding,op,d,want", _TRANSPOSE_CASES)
def test_conv2d_transpose_output_padding_and_dilation(n, k, s, padding, op, d, want):
    rng = _rng(14)
    x = rng.standard_normal((2, n, n - 1, 3))
    layer = nn.Conv2DTranspose(2, k, strides=s, padding=padding, output_padding=op,
                               dilation_rate=d, dtype="float64",
                               bias_initializer="glorot_uniform")
    y = layer(x).numpy()
    want_w = nn.convolutional.deconv_output_length(n - 1, k, padding, s, d, op)
    assert y.shape == (2, want, want_w, 2) == layer.compute_output_shape(x.shape)
    kernel, bias = layer.get_weights()
    output_padding = None if op is None else (op, op)
    want_y = _transpose_reference(x, kernel, bias, (s, s), padding, output_padding, (d, d))
    np.testing.assert_allclose(y, want_y, rtol=1e-10, atol=1e-12)


def test_conv2d_transpose_output_padding_of_the_default_size_is_the_op():
    x = _rng(15).standard_normal((1, 4, 3, 2)).astype(np.float32)
    for k, s, padding, op in ((3, 2, "same", 1), (4, 2, "same", 0), (3, 2, "valid", 0),
                              (2, 3, "valid", 1)):
        plain = nn.Conv2DTranspose(2, k, strides=s, padding=padding)
        padded = nn.Conv2DTranspose(2, k, strides=s, padding=padding, output_padding=op)
        y = plain(x).numpy()
        padded.build(x.shape)
        padded.set_weights(plain.get_weights())
        if k == 4:   # 'same' with an even kernel and output_padding 0: (n - 1) * 2 + 0 + 0
            assert padded(x).shape == (1, 6, 4, 2)
            continue
        np.testing.assert_allclose(padded(x).numpy(), y, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("options", [dict(strides=2, padding="same", output_padding=1),
                                     dict(strides=3, padding="valid", output_padding=2),
                                     dict(padding="same", dilation_rate=2)])
def test_conv2d_transpose_new_paths_gradients(options, fast):
    x = _rng(16).standard_normal((1, 3, 2, 2))
    layer = nn.Conv2DTranspose(2, 2, dtype="float64", **options)
    layer.build(x.shape)
    with mg.fast_paths(fast):
        assert gradcheck(_with_weights(layer, ["kernel", "bias"]),
                         [x, layer.kernel.data, _rng(17).standard_normal(2)])


def test_conv2d_transpose_argument_errors():
    with pytest.raises(ValueError, match=r"Conv2DTranspose 't': output_padding must be smaller "
                                         r"than strides, got output_padding=\(2, 2\), "
                                         r"strides=\(2, 2\)"):
        nn.Conv2DTranspose(2, 3, strides=2, output_padding=2, name="t")
    with pytest.raises(ValueError, match=r"Conv2DTranspose 't': strides > 1 with dilation_rate"):
        nn.Conv2DTranspose(2, 3, strides=2, dilation_rate=2, name="t")


# ---- LSTM ---------------------------------------------------------------------------------------
def _lstm_pair(**options):
    reference = nn.LSTM(4, return_sequences=True, dtype="float64", seed=0)
    reference.build((None, 5, 3))
    other = nn.LSTM(4, return_sequences=True, dtype="float64", **options)
    other.build((None, 5, 3))
    other.set_weights(reference.get_weights())
    return reference, other


def test_lstm_go_backwards_reads_the_sequence_reversed():
    x = _rng(18).standard_normal((2, 5, 3))
    reference, backwards = _lstm_pair(go_backwards=True)
    np.testing.assert_allclose(backwards(x).numpy(), reference(x[:, ::-1].copy()).numpy(),
                               rtol=1e-12)
    with mg.fast_paths(False):
        assert gradcheck(backwards, [x[:1, :3]])


def test_lstm_stateful_continues_and_resets():
    x = _rng(19).standard_normal((2, 6, 3))
    reference, stateful = _lstm_pair(stateful=True)
    whole = reference(x).numpy()
    parts = [stateful(x[:, :2]).numpy(), stateful(x[:, 2:5]).numpy(), stateful(x[:, 5:]).numpy()]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, rtol=1e-12)
    stateful.reset_state()
    np.testing.assert_allclose(stateful(x[:, :2]).numpy(), whole[:, :2], rtol=1e-12)
    with pytest.raises(ValueError, match=r"LSTM 'lstm.*' is stateful with batch size 2, got "
                                         r"input shape \(3, 2, 3\).*reset_state"):
        stateful(np.zeros((3, 2, 3)))
    stateful.reset_states()
    assert stateful(np.zeros((3, 2, 3))).shape == (3, 2, 4)
    assert stateful.get_weights()[0].shape == (3, 16) and len(stateful.weights) == 3

    def after_a_first_batch(t):
        stateful.reset_state()
        stateful(x[:1, :2])         # the state this call starts from: a constant
        return stateful(t)

    with mg.fast_paths(False):
        assert gradcheck(after_a_first_batch, [x[:1, 2:4]])


def test_lstm_dropout_only_in_training_with_masks_fixed_over_time():
    x = _rng(20).standard_normal((2, 5, 3))
    reference, dropped = _lstm_pair(dropout=0.5, recurrent_dropout=0.4, implementation=1,
                                    unroll=True)
    dropped._rng = np.random.default_rng(7)   # the layer's generator, after the weights drew
    np.testing.assert_array_equal(dropped(x).numpy(), reference(x).numpy())
    out = dropped(x, training=True).numpy()
    # The documented draw order: four input masks, then four recurrent masks.
    rng = np.random.default_rng(7)
    dm = [(rng.random((2, 3)) >= 0.5) / 0.5 for _ in range(4)]
    rm = [(rng.random((2, 4)) >= 0.4) / 0.6 for _ in range(4)]
    kernel, recurrent, bias = reference.get_weights()
    k, r, b = (np.split(a, 4, axis=-1) for a in (kernel, recurrent, bias))
    h = c = np.zeros((2, 4))
    want = []
    for t in range(5):
        z = [(x[:, t] * dm[g]) @ k[g] + (h * rm[g]) @ r[g] + b[g] for g in range(4)]
        c = _sigmoid(z[1]) * c + _sigmoid(z[0]) * np.tanh(z[2])
        h = _sigmoid(z[3]) * np.tanh(c)
        want.append(h)
    np.testing.assert_allclose(out, np.stack(want, 1), rtol=1e-10)


@pytest.mark.parametrize("spelled_out", [False, True])
def test_lstm_input_dropout_uses_one_mask_for_all_gates(spelled_out):
    x = _rng(21).standard_normal((2, 5, 3))
    # another activation object runs the step-by-step path instead of the lstm op
    options = dict(activation=lambda t: t.tanh()) if spelled_out else {}
    reference, dropped = _lstm_pair(dropout=0.3, **options)
    dropped._rng = np.random.default_rng(3)
    mask = (np.random.default_rng(3).random((2, 3)) >= 0.3) / 0.7
    np.testing.assert_allclose(dropped(x, training=True).numpy(),
                               reference(x * mask[:, None]).numpy(), rtol=1e-12)


@pytest.mark.parametrize("options", [dict(dropout=0.4), dict(recurrent_dropout=0.4),
                                     dict(dropout=0.3, recurrent_dropout=0.3, go_backwards=True)])
def test_lstm_dropout_gradients(options):
    x = _rng(22).standard_normal((2, 3, 3))
    layer = nn.LSTM(2, return_sequences=True, dtype="float64", seed=0, **options)
    layer.build(x.shape)

    def fn(t):
        layer._rng = np.random.default_rng(5)   # the same masks on every evaluation
        return layer(t, training=True)

    with mg.fast_paths(False):
        assert gradcheck(fn, [x])


# ---- argument checks (issue 19, rule 7) --------------------------------------------------------
_BAD_ARGUMENTS = [
    (lambda: nn.Dense(0), r"Dense 'dense.*': units must be a positive integer, got 0"),
    (lambda: nn.Dense(-1), r"units must be a positive integer, got -1"),
    (lambda: nn.Dense(2.5), r"units must be a positive integer, got 2.5"),
    (lambda: nn.Dense(True), r"units must be a positive integer, got True"),
    (lambda: nn.Conv2D(0, 3), r"Conv2D 'conv2d.*': filters must be a positive integer, got 0"),
    (lambda: nn.Conv2D(2, 0), r"Conv2D .*kernel_size must be a positive integer or a tuple of 2 "
                              r"positive integers, got 0"),
    (lambda: nn.Conv2D(2, (3, -1)), r"kernel_size .*got \(3, -1\)"),
    (lambda: nn.Conv2D(2, (3, 3, 3)), r"kernel_size .*got \(3, 3, 3\)"),
    (lambda: nn.Conv2D(2, 3, strides=0), r"Conv2D .*strides .*got 0"),
    (lambda: nn.Conv2D(2, 3, dilation_rate=(1, 0)), r"dilation_rate .*got \(1, 0\)"),
    (lambda: nn.Conv2D(2, 3, groups=0), r"groups must be a positive integer, got 0"),
    (lambda: nn.Conv2D(2, 3, padding="full"), r"Conv2D .*padding must be 'valid' or 'same', "
                                              r"got 'full'"),
    (lambda: nn.Conv2DTranspose(-2, 3), r"Conv2DTranspose .*filters .*got -2"),
    (lambda: nn.Conv2DTranspose(2, 3, strides=(2, 0)), r"strides .*got \(2, 0\)"),
    (lambda: nn.Conv2DTranspose(2, 3, strides=2, output_padding=-1),
     r"output_padding must be a non-negative integer .*got -1"),
    (lambda: nn.MaxPooling2D(0), r"MaxPooling2D .*pool_size .*got 0"),
    (lambda: nn.AveragePooling2D(2, strides=-1), r"AveragePooling2D .*strides .*got -1"),
    (lambda: nn.UpSampling2D(0), r"UpSampling2D .*size .*got 0"),
    (lambda: nn.UpSampling2D((2, 2.5)), r"UpSampling2D .*size .*got \(2, 2.5\)"),
    (lambda: nn.Dropout(1.0), r"Dropout .*rate must be a number in \[0, 1\), got 1.0"),
    (lambda: nn.Dropout(-0.1), r"rate must be a number in \[0, 1\), got -0.1"),
    (lambda: nn.Dropout(float("nan")), r"rate must be a number in \[0, 1\), got nan"),
    (lambda: nn.LSTM(0), r"LSTM .*units must be a positive integer, got 0"),
    (lambda: nn.LSTM(4, dropout=1.5), r"LSTM .*dropout must be a number in \[0, 1\), got 1.5"),
    (lambda: nn.LSTM(4, recurrent_dropout=-1), r"recurrent_dropout .*got -1"),
    (lambda: nn.LSTM(4, implementation=3), r"LSTM .*implementation must be one of \[1, 2\], "
                                           r"got 3"),
    (lambda: nn.MultiHeadAttention(0, 4), r"MultiHeadAttention .*num_heads must be a positive "
                                          r"integer, got 0"),
    (lambda: nn.MultiHeadAttention(2, -4), r"key_dim must be a positive integer, got -4"),
    (lambda: nn.MultiHeadAttention(2, 4, value_dim=0), r"value_dim .*got 0"),
    (lambda: nn.MultiHeadAttention(2, 4, dropout=1), r"dropout must be a number in \[0, 1\)"),
    (lambda: nn.MultiHeadAttention(2, 4, output_shape=0), r"output_shape .*got 0"),
    (lambda: nn.Embedding(0, 4), r"Embedding .*input_dim must be a positive integer, got 0"),
    (lambda: nn.Embedding(10, -4), r"output_dim .*got -4"),
    (lambda: nn.Reshape((0, 4)), r"Reshape .*positive sizes and at most one -1, got \(0, 4\)"),
    (lambda: nn.Reshape((-2, 4)), r"Reshape .*got \(-2, 4\)"),
    (lambda: nn.LeakyReLU(-0.1), r"LeakyReLU .*negative_slope must be a finite number >= 0"),
    (lambda: nn.ReLU(max_value=-1), r"ReLU .*max_value must be a finite number >= 0, got -1"),
    (lambda: nn.ReLU(negative_slope=-0.5), r"ReLU .*negative_slope .*got -0.5"),
    (lambda: nn.ReLU(threshold=float("nan")), r"ReLU .*threshold .*got nan"),
    (lambda: nn.ELU(alpha=float("inf")), r"ELU .*alpha must be a finite number, got inf"),
    (lambda: nn.Softmax(axis=1.5), r"Softmax .*axis must be an int or a list of ints"),
    (lambda: nn.PReLU(shared_axes=[0]), r"PReLU .*shared_axes must be axes >= 1"),
    (lambda: nn.LayerNormalization(epsilon=0), r"LayerNormalization .*epsilon must be a finite "
                                               r"number > 0, got 0"),
    (lambda: nn.BatchNormalization(momentum=1.5), r"BatchNormalization .*momentum must be in "
                                                  r"\[0, 1\], got 1.5"),
    (lambda: nn.BatchNormalization(epsilon=-1e-3), r"BatchNormalization .*epsilon .*got -0.001"),
    (lambda: nn.Concatenate(axis="last"), r"Concatenate .*axis must be an int, got 'last'"),
    (lambda: nn.Dense(2, activation="rleu"), r"Dense 'dense.*': activation: unknown activation "
                                             r"'rleu'"),
    (lambda: nn.Conv2D(2, 3, activation="nope"), r"Conv2D .*activation: unknown activation"),
    (lambda: nn.LSTM(2, recurrent_activation="nope"), r"LSTM .*recurrent_activation: unknown"),
]


@pytest.mark.parametrize("make,message", _BAD_ARGUMENTS)
def test_bad_constructor_arguments_name_layer_argument_and_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


_BAD_FIRST_CALLS = [
    (lambda: nn.Dense(3), np.float32(1.0), r"Dense 'dense.*' needs inputs with at least one axis "
                                           r"whose last axis is known, got input shape \(\)"),
    (lambda: nn.Conv2D(2, 3), np.zeros((1, 2, 5, 1)), r"Conv2D .*input shape \(1, 2, 5, 1\) is "
                                                      r"too small .*\(1, 0, 3, 2\)"),
    (lambda: nn.Conv2D(2, 3), np.zeros((5, 5, 1)), r"Conv2D .*rank 4, got shape \(5, 5, 1\)"),
    (lambda: nn.MaxPooling2D(3), np.zeros((1, 2, 6, 1)), r"MaxPooling2D .*\(1, 2, 6, 1\) is too "
                                                         r"small .*\(1, 0, 2, 1\)"),
    (lambda: nn.UpSampling2D(2), np.zeros((4, 4, 1)), r"UpSampling2D .*rank 4"),
    (lambda: nn.LSTM(2), np.zeros((4, 3)), r"LSTM .*\(batch, timesteps, features\).*\(4, 3\)"),
    (lambda: nn.Softmax(axis=3), np.zeros((2, 3)), r"Softmax .*axis 3 is out of range for input "
                                                   r"shape \(2, 3\)"),
    (lambda: nn.GlobalAveragePooling2D(), np.zeros((2, 3)), r"GlobalAveragePooling2D .*rank 4"),
]


@pytest.mark.parametrize("make,x,message", _BAD_FIRST_CALLS)
def test_bad_inputs_on_first_call_name_layer_and_shape_before_any_weight(make, x, message):
    layer = make()
    with pytest.raises(ValueError, match=message):
        layer(x)
    assert layer.weights == []


# ---- the same layers on the GPU (skipped without CuPy and a device) ----------------------------
def _why_no_gpu():
    try:
        mg.backend.cupy_module()
    except RuntimeError as e:
        return str(e)
    return None


@pytest.mark.gpu
@pytest.mark.skipif(_why_no_gpu() is not None, reason=f"needs CuPy and a CUDA device: "
                                                      f"{_why_no_gpu()}")
@pytest.mark.parametrize("make,shape,training", [
    (lambda: nn.Conv2D(4, 3, groups=2, activation="relu"), (2, 6, 5, 4), False),
    (lambda: nn.Conv2DTranspose(3, 3, strides=2, padding="same", output_padding=1),
     (2, 4, 3, 2), False),
    (lambda: nn.Conv2DTranspose(3, 2, padding="same", dilation_rate=2), (2, 4, 3, 2), False),
    (lambda: nn.UpSampling2D(2, interpolation="bicubic"), (2, 4, 3, 2), False),
    (lambda: nn.UpSampling2D(2, interpolation="bilinear"), (2, 4, 3, 2), False),
    (lambda: nn.PReLU(shared_axes=[1]), (2, 4, 3), False),
    (lambda: nn.ReLU(max_value=1, negative_slope=0.1, threshold=0.2), (2, 4, 3), False),
    (lambda: nn.Softmax(axis=[1, 2]), (2, 4, 3), False),
    (lambda: nn.LSTM(3, return_sequences=True, go_backwards=True, dropout=0.3,
                     recurrent_dropout=0.2), (2, 5, 3), True),
])
def test_new_layer_paths_on_the_gpu_match_numpy(make, shape, training):
    cupy = mg.backend.cupy_module()
    x = _rng(30).standard_normal(shape).astype(np.float32)
    layer = make()
    layer.build(shape)

    def run(data):
        layer._rng = np.random.default_rng(0)   # the same dropout masks on both devices
        t = Tensor(data, requires_grad=True)
        y = layer(t, training=training)
        y.sum().backward()
        return y, t.grad, [w.grad for w in layer.weights]

    want, want_dx, want_grads = run(x)
    layer.to("cupy")
    got, got_dx, got_grads = run(cupy.asarray(x))
    assert got.device == "cupy"
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mg.backend.to_numpy(got_dx), want_dx, rtol=1e-4, atol=1e-4)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(mg.backend.to_numpy(g), w, rtol=1e-4, atol=1e-4)
    if layer.weights:
        layer.weights[0].assign(np.zeros(layer.weights[0].shape))
        assert layer.weights[0].device == "cupy" and not layer.get_weights()[0].any()


def test_errors_inside_a_layer_name_the_layer_path():
    model = nn.Sequential([nn.Embedding(4, 2, name="words"), nn.Flatten()], name="model")
    with pytest.raises(ValueError, match=r"^Sequential 'model': Embedding 'words': embedding: ids "
                                         r"must lie in \[0, 4\), got \[5, 5\]"):
        model(np.array([[5]]))
    with pytest.raises(TypeError, match=r"Dense 'd' was called without an input"):
        nn.Dense(2, name="d")()
    with pytest.raises(TypeError, match=r"MultiHeadAttention 'm' .*value is missing"):
        nn.MultiHeadAttention(2, 2, name="m")(query=np.ones((1, 2, 3), np.float32))
    with pytest.raises(TypeError, match=r"Conv2D 'c' needs a float input, got dtype uint8 "
                                        r"\(shape \(1, 5, 5, 2\)\)"):
        nn.Conv2D(2, 3, name="c")(np.ones((1, 5, 5, 2), np.uint8))
    # a message that already names the layer is left as it is
    with pytest.raises(ValueError, match=r"^Dense 'd2': built for inputs with last axis 3"):
        dense = nn.Dense(2, name="d2")
        dense(np.ones((1, 3)))
        dense(np.ones((1, 4)))
