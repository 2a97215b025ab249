"""conv2d and conv2d_transpose: Keras's padding arithmetic, forward against direct NumPy loops,
gradients by finite differences (on the reference ops), and the adjoint identity between the two.

The forward and error tests run on whichever path is on (both, over the two pytest runs: default
and MICROGRAD_GEN_FAST=0); tests/test_accel.py holds the fast path against the reference."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import micrograd_gen as mg
from micrograd_gen import ops
from micrograd_gen.ops import conv as conv_module
from micrograd_gen.ops.im2col import col2im, im2col, padding_amounts
from strategies import check_op_gradient


# ---- references written from the definitions, not from the engine's code ---------------------

def keras_pads(n, k, s, padding, d=1):
    """Keras's rule, restated: 'same' gives ceil(n / s) outputs, the odd pixel goes after."""
    k_eff = (k - 1) * d + 1
    if padding == "valid":
        return 0, 0, (n - k_eff) // s + 1
    out = -(-n // s)
    total = max((out - 1) * s + k_eff - n, 0)
    return total // 2, total - total // 2, out


def reference_conv2d(x, kernel, bias=None, strides=(1, 1), padding="valid", dilation=(1, 1)):
    """y[n, i, j, f] = sum_{a, b, c} xpad[n, i*sh + a*dh, j*sw + b*dw, c] * kernel[a, b, c, f]."""
    N, H, W, C = x.shape
    kh, kw, _, F = kernel.shape
    pt, pb, OH = keras_pads(H, kh, strides[0], padding, dilation[0])
    pl, pr, OW = keras_pads(W, kw, strides[1], padding, dilation[1])
    xpad = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    y = np.zeros((N, OH, OW, F), np.result_type(x, kernel))
    for i in range(OH):
        for j in range(OW):
            for a in range(kh):
                for b in range(kw):
                    r, c = i * strides[0] + a * dilation[0], j * strides[1] + b * dilation[1]
                    y[:, i, j] += xpad[:, r, c] @ kernel[a, b]
    return y if bias is None else y + bias


def reference_conv2d_transpose(x, kernel, strides=(1, 1), padding="valid"):
    """Scatter full[i*s + a] += x[i] * K[a] (kernel (kh, kw, out, in)), then Keras's crop."""
    N, H, W, _ = x.shape
    kh, kw, F, _ = kernel.shape
    (sh, sw) = strides
    if padding == "same":
        out_h, out_w = H * sh, W * sw
        top, left = max(kh - sh, 0) // 2, max(kw - sw, 0) // 2
    else:
        out_h, out_w = H * sh + max(kh - sh, 0), W * sw + max(kw - sw, 0)
        top = left = 0
    # full[i*s + a] += x[i] K[a] has length (n - 1) * s + k; when k < s the output is longer and
    # the rest is zeros, so make room for both.
    full = np.zeros((N, max((H - 1) * sh + kh, top + out_h), max((W - 1) * sw + kw, left + out_w),
                     F), np.result_type(x, kernel))
    for i in range(H):
        for j in range(W):
            for a in range(kh):
                for b in range(kw):
                    full[:, i * sh + a, j * sw + b] += x[:, i, j] @ kernel[a, b].T
    return full[:, top:top + out_h, left:left + out_w]


def tensors(*arrays):
    return [mg.Tensor(a, dtype=a.dtype) for a in arrays]


# ---- padding arithmetic -----------------------------------------------------------------------

def test_keras_same_padding_examples():
    assert padding_amounts(8, 3, 2, "same") == (0, 1, 4)    # even input, stride 2: extra after
    assert padding_amounts(7, 3, 2, "same") == (1, 1, 4)
    assert padding_amounts(5, 4, 1, "same") == (1, 2, 5)    # even kernel: extra after
    assert padding_amounts(5, 3, 1, "same", dilation=2) == (2, 2, 5)
    assert padding_amounts(8, 3, 2, "valid") == (0, 0, 3)
    assert padding_amounts(7, 1, 3, "same") == (0, 0, 3)


@given(n=st.integers(1, 40), k=st.integers(1, 7), s=st.integers(1, 4), d=st.integers(1, 3),
       padding=st.sampled_from(["same", "valid"]))
def test_padding_amounts_match_keras_rule(n, k, s, d, padding):
    assert padding_amounts(n, k, s, padding, d) == keras_pads(n, k, s, padding, d)


def test_same_stride2_even_input_pads_bottom_right():
    # A kernel that only looks at its top-left tap shows where the windows start: with (0, 1)
    # padding they start on pixels 0, 2, 4, 6 (no shift), so y = x[::2, ::2].
    x = np.arange(64, dtype=np.float64).reshape(1, 8, 8, 1)
    kernel = np.zeros((3, 3, 1, 1))
    kernel[0, 0] = 1
    y = ops.conv2d(*tensors(x, kernel), strides=2, padding="same").numpy()
    np.testing.assert_array_equal(y[0, :, :, 0], x[0, ::2, ::2, 0])


# ---- forward against the loops ----------------------------------------------------------------

conv_cases = st.fixed_dictionaries({
    "n": st.integers(1, 2), "h": st.integers(1, 8), "w": st.integers(1, 8),
    "c": st.sampled_from([1, 2, 3, 16, 17]), "f": st.sampled_from([1, 2, 3, 16, 17]),
    "kh": st.integers(1, 4), "kw": st.integers(1, 4),
    "strides": st.tuples(st.integers(1, 3), st.integers(1, 3)),
    "dilation": st.tuples(st.integers(1, 2), st.integers(1, 2)),
    "padding": st.sampled_from(["same", "valid"]),
    "bias": st.booleans(),
})


def draw_conv(case, dtype=np.float64, seed=0):
    """Arrays for a drawn case, or None when the kernel does not fit (Keras raises there too)."""
    k_eff = [(k - 1) * d + 1 for k, d in zip((case["kh"], case["kw"]), case["dilation"])]
    if case["padding"] == "valid" and (k_eff[0] > case["h"] or k_eff[1] > case["w"]):
        return None
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case["n"], case["h"], case["w"], case["c"])).astype(dtype)
    kernel = rng.standard_normal((case["kh"], case["kw"], case["c"], case["f"])).astype(dtype)
    bias = rng.standard_normal(case["f"]).astype(dtype) if case["bias"] else None
    return x, kernel, bias


@given(conv_cases)
def test_conv2d_forward_float64(case):
    drawn = draw_conv(case)
    if drawn is None:
        return
    x, kernel, bias = drawn
    args = dict(strides=case["strides"], padding=case["padding"], dilation_rate=case["dilation"])
    y = ops.conv2d(*tensors(x, kernel), None if bias is None else mg.Tensor(bias, dtype=bias.dtype),
                   **args)
    expected = reference_conv2d(x, kernel, bias, case["strides"], case["padding"],
                                case["dilation"])
    assert y.dtype == np.float64
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-12)


@given(conv_cases)
def test_conv2d_forward_float32(case):
    drawn = draw_conv(case, np.float32)
    if drawn is None:
        return
    x, kernel, bias = drawn
    y = ops.conv2d(mg.Tensor(x), mg.Tensor(kernel), None if bias is None else mg.Tensor(bias),
                   strides=case["strides"], padding=case["padding"],
                   dilation_rate=case["dilation"])
    expected = reference_conv2d(x.astype(np.float64), kernel.astype(np.float64),
                                None if bias is None else bias.astype(np.float64),
                                case["strides"], case["padding"], case["dilation"])
    assert y.dtype == np.float32
    scale = np.abs(expected).max() if expected.size else 1.0
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-5 * scale)


def test_conv2d_non_square_kernels_like_inception():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 9, 7, 20))
    for shape in [(1, 7), (7, 1), (1, 3), (3, 1)]:
        kernel = rng.standard_normal(shape + (20, 5))
        y = ops.conv2d(*tensors(x, kernel), padding="same")
        assert y.shape == (2, 9, 7, 5)
        np.testing.assert_allclose(y.numpy(), reference_conv2d(x, kernel, padding="same"),
                                   rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("c, f, kernel_size", [(17, 18, (3, 2)), (3, 16, (3, 3)), (20, 3, (2, 3)),
                                               (24, 16, (1, 1))])
def test_fused_relu_is_relu_after_the_convolution(c, f, kernel_size):
    """conv2d(..., relu=True) is relu(conv2d(...) + bias) forward, and its backward (the
    gradient masked where the output is 0) gives the unfused graph's gradients."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((2, 9, 8, c))
    kernel = rng.standard_normal(kernel_size + (c, f))
    bias = rng.standard_normal(f)
    g = rng.standard_normal((2, 9, 8, f))

    def run(fused):
        tx, tk, tb = (mg.Tensor(v, requires_grad=True, dtype=np.float64)
                      for v in (x, kernel, bias))
        y = (ops.conv2d(tx, tk, tb, padding="same", relu=True) if fused
             else ops.relu(ops.conv2d(tx, tk, tb, padding="same")))
        y.backward(g)
        return y.numpy(), tx.grad, tk.grad, tb.grad
    fused, plain = run(True), run(False)
    assert (fused[0] > 0).any() and (fused[0] == 0).any()
    for got, want, name in zip(fused, plain, ("y", "dx", "dkernel", "dbias")):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=name)


@settings(max_examples=10)
@given(conv_cases)
def test_fused_relu_gradient(case):
    drawn = draw_conv(case, seed=22)
    if drawn is None or drawn[2] is None:
        return
    x, kernel, bias = drawn
    args = dict(strides=case["strides"], padding=case["padding"], dilation_rate=case["dilation"],
                relu=True)
    with mg.fast_paths(False):
        check_op_gradient(lambda x, k, b: ops.conv2d(x, k, b, **args), x, kernel, bias)


def test_im2col_col2im_are_adjoint():
    rng = np.random.default_rng(3)
    xpad = rng.standard_normal((2, 7, 8, 3))
    args = ((3, 2), (2, 1), (1, 2), (3, 6))   # kernel, strides, dilation, output size
    cols = im2col(xpad, *args)
    assert cols.shape == (2, 3, 6, 3 * 2 * 3)
    c = rng.standard_normal(cols.shape)
    back = col2im(c, np.zeros_like(xpad), *args[:3])
    np.testing.assert_allclose((cols * c).sum(), (xpad * back).sum(), rtol=1e-12)


# ---- gradients --------------------------------------------------------------------------------

@settings(max_examples=15)
@given(conv_cases)
def test_conv2d_gradient(case):
    drawn = draw_conv(case, seed=4)
    if drawn is None:
        return
    x, kernel, bias = drawn
    args = dict(strides=case["strides"], padding=case["padding"], dilation_rate=case["dilation"])
    with mg.fast_paths(False):
        if bias is None:
            check_op_gradient(lambda x, k: ops.conv2d(x, k, **args), x, kernel)
        else:
            check_op_gradient(lambda x, k, b: ops.conv2d(x, k, b, **args), x, kernel, bias)


def test_conv2d_gradient_full_jacobian_small():
    rng = np.random.default_rng(5)
    x, kernel = rng.standard_normal((1, 4, 3, 2)), rng.standard_normal((2, 2, 2, 2))
    with mg.fast_paths(False):
        check_op_gradient(lambda x, k: ops.conv2d(x, k, strides=(2, 1), padding="same"), x,
                          kernel, full_jacobian_max=64)


def test_frozen_kernel_gets_no_gradient_and_input_gradient_is_right():
    rng = np.random.default_rng(6)
    x = mg.Tensor(rng.standard_normal((1, 5, 6, 17)), requires_grad=True, dtype=np.float64)
    kernel = mg.Tensor(rng.standard_normal((3, 3, 17, 4)), dtype=np.float64)   # frozen
    y = ops.conv2d(x, kernel, padding="same")
    g = rng.standard_normal(y.shape)
    y.backward(g)
    assert kernel.grad is None
    # d<g, conv(x)>/dx = conv2d_transpose(g): the adjoint
    expected = reference_conv2d_transpose(g, kernel.numpy(), padding="same")
    np.testing.assert_allclose(x.grad, expected, rtol=1e-10, atol=1e-12)


def test_gradient_through_a_broadcast_cotangent():
    """Upstream ops may hand backward a broadcast (zero-stride) gradient, as sum() does."""
    rng = np.random.default_rng(7)
    x = mg.Tensor(rng.standard_normal((2, 5, 5, 16)), requires_grad=True, dtype=np.float64)
    kernel = mg.Tensor(rng.standard_normal((3, 3, 16, 3)), requires_grad=True, dtype=np.float64)
    ops.conv2d(x, kernel, padding="same").sum().backward()
    expected = reference_conv2d_transpose(np.ones((2, 5, 5, 3)), kernel.numpy(), padding="same")
    np.testing.assert_allclose(x.grad, expected, rtol=1e-10, atol=1e-12)


# ---- conv2d_transpose ---------------------------------------------------------------------------

transpose_cases = st.fixed_dictionaries({
    "n": st.integers(1, 2), "h": st.integers(1, 5), "w": st.integers(1, 5),
    "c": st.sampled_from([1, 3, 16]), "f": st.sampled_from([1, 2, 17]),
    "kh": st.integers(1, 5), "kw": st.integers(1, 5),
    "strides": st.tuples(st.integers(1, 3), st.integers(1, 3)),
    "padding": st.sampled_from(["same", "valid"]),
})


def draw_transpose(case, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case["n"], case["h"], case["w"], case["c"])).astype(dtype)
    kernel = rng.standard_normal((case["kh"], case["kw"], case["f"], case["c"])).astype(dtype)
    return x, kernel


@given(transpose_cases)
def test_conv2d_transpose_forward(case):
    x, kernel = draw_transpose(case)
    y = ops.conv2d_transpose(*tensors(x, kernel), strides=case["strides"],
                             padding=case["padding"])
    expected = reference_conv2d_transpose(x, kernel, case["strides"], case["padding"])
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_conv2d_transpose_keras_output_sizes_and_crop():
    x = np.ones((1, 7, 7, 1))
    for k, s, padding, size in [(3, 2, "same", 14), (4, 2, "same", 14), (3, 2, "valid", 15),
                                (4, 2, "valid", 16), (1, 3, "valid", 21), (5, 1, "same", 7)]:
        kernel = np.ones((k, k, 1, 1))
        y = ops.conv2d_transpose(*tensors(x, kernel), strides=s, padding=padding)
        assert y.shape == (1, size, size, 1), (k, s, padding)
    # k=3, s=2 'same' crops (0, 1): the first output row is full[0], which only tap 0 reaches
    kernel = np.arange(9.0).reshape(3, 3, 1, 1)
    y = ops.conv2d_transpose(*tensors(np.ones((1, 2, 2, 1)), kernel), strides=2,
                             padding="same").numpy()
    assert y[0, 0, 0, 0] == kernel[0, 0, 0, 0]


@settings(max_examples=15)
@given(transpose_cases, st.booleans())
def test_conv2d_transpose_gradient(case, with_bias):
    x, kernel = draw_transpose(case, seed=8)
    args = dict(strides=case["strides"], padding=case["padding"])
    with mg.fast_paths(False):
        if with_bias:
            bias = np.linspace(-1, 1, case["f"])
            check_op_gradient(lambda x, k, b: ops.conv2d_transpose(x, k, b, **args), x, kernel,
                              bias)
        else:
            check_op_gradient(lambda x, k: ops.conv2d_transpose(x, k, **args), x, kernel)


@settings(max_examples=20)
@given(conv_cases.filter(lambda c: c["dilation"] == (1, 1)), st.integers(0, 2 ** 31 - 1))
def test_transpose_is_the_adjoint_of_conv2d(case, seed):
    """<conv2d(a, K), b> == <a, conv2d_transpose(b, K)> whenever conv2d maps a's shape to b's."""
    drawn = draw_conv(case, seed=seed)
    if drawn is None:
        return
    a, kernel, _ = drawn
    args = dict(strides=case["strides"], padding=case["padding"])
    y = ops.conv2d(*tensors(a, kernel), **args).numpy()
    # conv2d_transpose restores conv2d's input size exactly when that size is one Keras's rule
    # gives back for y's size; other sizes have no transposed twin.
    t = ops.conv2d_transpose(mg.Tensor(np.zeros_like(y), dtype=y.dtype),
                             mg.Tensor(kernel, dtype=kernel.dtype), **args)
    if t.shape[1:3] != a.shape[1:3]:
        return
    b = np.random.default_rng(seed + 1).standard_normal(y.shape)
    back = ops.conv2d_transpose(*tensors(b, kernel), **args).numpy()
    np.testing.assert_allclose((y * b).sum(), (a * back).sum(), rtol=1e-10, atol=1e-10)


# ---- dtypes and errors ----------------------------------------------------------------------

def test_float32_stays_float32_through_backward():
    rng = np.random.default_rng(9)
    x = mg.Tensor(rng.standard_normal((1, 6, 6, 16)), requires_grad=True)
    kernel = mg.Tensor(rng.standard_normal((3, 3, 16, 8)), requires_grad=True)
    bias = mg.Tensor(np.zeros(8), requires_grad=True)
    y = ops.conv2d(x, kernel, bias, padding="same")
    assert y.dtype == np.float32
    y.backward(np.ones(y.shape, np.float32))
    assert x.grad.dtype == kernel.grad.dtype == bias.grad.dtype == np.float32


@pytest.fixture(params=[True, False], ids=["fast", "reference"])
def either_path(request):
    with mg.fast_paths(request.param):
        yield request.param


def test_errors_name_the_op_and_shapes(either_path):
    x = mg.Tensor(np.zeros((1, 5, 5, 3)))
    with pytest.raises(ValueError, match=r"conv2d.*3 input channels|conv2d.*has 3"):
        ops.conv2d(x, mg.Tensor(np.zeros((3, 3, 4, 8))))
    with pytest.raises(ValueError, match="padding"):
        ops.conv2d(x, mg.Tensor(np.zeros((3, 3, 3, 8))), padding="full")
    with pytest.raises(ValueError, match="does not fit"):
        ops.conv2d(x, mg.Tensor(np.zeros((7, 7, 3, 8))))
    with pytest.raises(ValueError, match="bias"):
        ops.conv2d(x, mg.Tensor(np.zeros((3, 3, 3, 8))), mg.Tensor(np.zeros(3)))
    with pytest.raises(ValueError, match="conv2dtranspose.*input channels"):
        ops.conv2d_transpose(x, mg.Tensor(np.zeros((3, 3, 8, 4))))
    with pytest.raises(ValueError, match="strides"):
        ops.conv2d(x, mg.Tensor(np.zeros((3, 3, 3, 8))), strides=0)
    with pytest.raises(ValueError, match="conv2d.*x must be NHWC.*got shape \\(5, 5, 3\\)"):
        ops.conv2d(mg.Tensor(np.zeros((5, 5, 3))), mg.Tensor(np.zeros((3, 3, 3, 8))))
    with pytest.raises(ValueError, match="conv2d.*kernel must be 4-D"):
        ops.conv2d(x, mg.Tensor(np.zeros((3, 3, 8))))
    with pytest.raises(ValueError, match="conv2dtranspose.*kernel must be 4-D"):
        ops.conv2d_transpose(x, mg.Tensor(np.zeros((3, 8))))
    with pytest.raises(ValueError, match="dilation_rate"):
        ops.conv2d(x, mg.Tensor(np.zeros((3, 3, 3, 8))), dilation_rate=(1, 0))


@pytest.mark.parametrize("op", ["conv2d", "conv2d_transpose"])
def test_integer_input_is_a_named_dtype_error(either_path, op):
    """Issue 19: not a UFuncTypeError from deep inside, but the op, the argument and the dtype."""
    x = mg.Tensor(np.zeros((1, 5, 5, 3), np.int64))
    kernel = mg.Tensor(np.zeros((3, 3, 3, 3), np.float32))
    with pytest.raises(TypeError, match=rf"^{op}: x has dtype int64.*float"):
        getattr(ops, op)(x, kernel)
    with pytest.raises(TypeError, match=rf"^{op}: kernel has dtype int32"):
        getattr(ops, op)(mg.Tensor(np.zeros((1, 5, 5, 3), np.float32)),
                         mg.Tensor(np.zeros((3, 3, 3, 3), np.int32)))


def test_reference_builds_columns_a_band_of_rows_at_a_time(monkeypatch):
    """With room for the columns of one output row only, the reference conv (forward and both
    gradients) still gives the same numbers: the bands are a memory bound, not a change."""
    rng = np.random.default_rng(13)
    x, kernel = rng.standard_normal((2, 9, 7, 4)), rng.standard_normal((3, 2, 4, 5))
    geom = conv_module.ConvGeometry.of(x.shape, kernel.shape, (2, 1), "same", (1, 2))
    g = rng.standard_normal((2, geom.OH, geom.OW, 5))
    whole = (conv_module.conv2d_forward(x, kernel, geom),) + conv_module.conv2d_backward(
        g, x, kernel, geom)
    monkeypatch.setattr(conv_module, "_COLS_BYTES", 1)
    assert len(geom.row_bands(8)) == geom.OH
    banded = (conv_module.conv2d_forward(x, kernel, geom),) + conv_module.conv2d_backward(
        g, x, kernel, geom)
    for got, want in zip(banded, whole):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(whole[0], reference_conv2d(x, kernel, None, (2, 1), "same", (1, 2)),
                               rtol=1e-10, atol=1e-12)


def test_chained_convs_through_views_and_relu():
    """conv2d returns a view of a wider buffer; the next conv and backward must not mind."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 6, 5, 16))
    k1 = rng.standard_normal((3, 3, 16, 17))
    k2 = rng.standard_normal((2, 3, 17, 16))
    b1 = rng.standard_normal(17)

    def net(x, k1, b1, k2):
        h = ops.relu(ops.conv2d(x, k1, b1, padding="same"))
        return ops.conv2d(h, k2, strides=(1, 2), padding="same")
    check_op_gradient(net, x, k1, b1, k2)           # on whichever path is on
    with mg.fast_paths(False):
        check_op_gradient(net, x, k1, b1, k2)


def test_kernel_gradient_is_the_same_on_every_run():
    """Partial sums over chunks are combined in a fixed order: bitwise repeatable results
    (checkpoint-resume tests compare training runs exactly)."""
    rng = np.random.default_rng(11)
    x = mg.Tensor(rng.standard_normal((2, 40, 30, 32)), requires_grad=True)
    kernel = mg.Tensor(rng.standard_normal((3, 3, 32, 32)), requires_grad=True)
    g = rng.standard_normal((2, 40, 30, 32)).astype(np.float32)
    grads = []
    for _ in range(3):
        kernel.grad = x.grad = None
        ops.conv2d(x, kernel, padding="same").backward(g)
        grads.append((kernel.grad.copy(), x.grad.copy()))
    for dk, dx in grads[1:]:
        np.testing.assert_array_equal(dk, grads[0][0])
        np.testing.assert_array_equal(dx, grads[0][1])


