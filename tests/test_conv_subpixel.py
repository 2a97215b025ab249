"""accel/conv_subpixel.py: a transposed convolution's forward as a 3x3 convolution to s*s*F
channels laid out depth to space, through Winograd, against the reference conv2d_transpose, on
drawn shapes, strides, kernel sizes and paddings (float32 to Winograd's 5e-5 of the largest
output, float64 to 1e-12); which layers it takes; and the depth-to-space write with band pieces
that straddle the (p, q) blocks."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import micrograd_gen as mg
from micrograd_gen import ops
from micrograd_gen.accel import conv_subpixel, winograd
from micrograd_gen.ops.conv import ConvGeometry

TOLERANCE = {np.float32: 5e-5, np.float64: 1e-12}


def relative_error(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)


def both_ways(x, kernel, bias, **args):
    """conv2d_transpose's output with the fast paths on and off, and whether this route ran."""
    taken = []
    original = conv_subpixel.transpose_forward
    conv_subpixel.transpose_forward = lambda *a: taken.append(1) or original(*a)
    try:
        outputs = []
        for fast in (True, False):
            with mg.fast_paths(fast), mg.no_grad():
                y = ops.conv2d_transpose(mg.Tensor(x, dtype=x.dtype),
                                         mg.Tensor(kernel, dtype=x.dtype),
                                         None if bias is None else mg.Tensor(bias, dtype=x.dtype),
                                         **args)
            outputs.append(y.data)
    finally:
        conv_subpixel.transpose_forward = original
    return outputs, bool(taken)


cases = st.fixed_dictionaries({
    "n": st.integers(1, 2), "h": st.integers(1, 7), "w": st.integers(1, 7),
    "c": st.integers(1, 6), "f": st.integers(1, 6),
    # the kernels whose phases read a 3x3 window at these strides (and some that do not)
    "k_s": st.sampled_from([(4, 2), (5, 2), (6, 2), (6, 3), (5, 3), (7, 3), (3, 2), (2, 2)]),
    "padding": st.sampled_from(["same", "valid"]), "bias": st.booleans(), "relu": st.booleans(),
    "dtype": st.sampled_from([np.float32, np.float64]), "seed": st.integers(0, 2 ** 16)})


@settings(max_examples=80, deadline=None)
@given(cases)
def test_forward_is_the_reference(case):
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    k, s = case["k_s"]
    x = rng.standard_normal((case["n"], case["h"], case["w"], case["c"])).astype(dtype)
    kernel = rng.standard_normal((k, k, case["f"], case["c"])).astype(dtype)
    bias = rng.standard_normal(case["f"]).astype(dtype) if case["bias"] else None
    with pytest.MonkeyPatch.context() as patch:          # the small channel counts drawn here
        patch.setattr(conv_subpixel, "_MIN_CHANNELS", 1)
        (fast, reference), taken = both_ways(x, kernel, bias, strides=s,
                                             padding=case["padding"], relu=case["relu"])
    assert fast.shape == reference.shape and fast.dtype == dtype
    assert relative_error(fast, reference) < TOLERANCE[dtype]
    if (k, s, case["padding"]) in ((4, 2, "same"), (5, 2, "same"), (6, 2, "valid")):
        assert taken            # windows of exactly three pixels, no cropping of x
    if (k, s) in ((3, 2), (2, 2)) or (k, s, case["padding"]) == (4, 2, "valid"):
        assert not taken        # windows of two pixels or one


def test_the_dcgan_generators_last_layer_takes_it():
    """Of the DCGAN generator's three 4x4 stride-2 layers only the last (256 input channels)
    runs faster this way (the measurements in conv_subpixel.py); the VAE's 3x3 ones have
    two-pixel windows."""
    def fits(x_shape, filters, k):
        n, h, w, c = x_shape
        geom = ConvGeometry.of((n, 2 * h, 2 * w, filters), (k, k, filters, c), (2, 2), "same")
        return conv_subpixel.fits(geom, np.zeros(x_shape, np.float32),
                                  np.zeros((k, k, filters, c), np.float32))
    assert fits((32, 32, 32, 256), 512, 4)
    assert not fits((32, 16, 16, 128), 256, 4)
    assert not fits((32, 8, 8, 128), 128, 4)
    assert not fits((128, 14, 14, 256), 32, 3)


@pytest.mark.parametrize("width", [1, 5, 7, 64])
def test_depth_to_space_pieces_straddle_the_blocks(width, monkeypatch):
    """Band pieces of any width, across the (p, q) blocks of the s*s*F channels, land every
    channel where depth to space puts it, bias and ReLU included."""
    monkeypatch.setattr(winograd, "_WIDE_CHUNK", width)
    monkeypatch.setattr(winograd, "_BAND_TILES", 4)              # many bands
    rng = np.random.default_rng(width)
    x = rng.standard_normal((2, 9, 6, 5))
    kernel = rng.standard_normal((3, 3, 5, 3 * 3 * 4))
    bias = rng.standard_normal(3 * 3 * 4)
    got = winograd.conv3x3(x, kernel, (1, 1, 1, 1), bias, relu=True, block=3)
    with mg.fast_paths(False), mg.no_grad():
        y = ops.conv2d(*(mg.Tensor(a, dtype=np.float64) for a in (x, kernel, bias)),
                       padding="same", relu=True).data
    want = y.reshape(2, 9, 6, 3, 3, 4).transpose(0, 1, 3, 2, 4, 5).reshape(2, 27, 18, 4)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
