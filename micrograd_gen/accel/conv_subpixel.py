"""A transposed convolution's forward as an ordinary 3x3 convolution (the sub-pixel form),
through Winograd: the DCGAN generator's 4x4 stride-2 layers.

A stride-s transposed convolution (ops/conv.py's Conv2DTranspose: conv2d's input gradient)
writes output pixel o = s*i + a - pad from input pixel i through kernel tap a. Write o = s*m + p,
p = 0 .. s-1 its phase: then i = m + d with d = (p + pad - a) / s wherever that divides. For a
4x4 kernel at stride 2 with 'same' padding (pad 1), d runs over -1, 0, 1, so every phase of
output pixel m reads the same 3x3 window of x around m. The whole layer is then one 3x3
stride-1 convolution of x to s*s*F channels (p, q, f), its kernel the taps put where they reach
(and zeros where a phase reads nothing), laid out as s x s pixels per input pixel (depth to
space):

    y[s*m + p, s*n + q, f] = conv2d(x, K3)[m, n, (p, q, f)]

Winograd (accel/winograd.py) computes that convolution with 36 multiplies per 4x4 tile per
(input, output) channel pair: 9 per input pixel for the s*s*F outputs, where the direct method
spends 16 (its 16 taps). Why only the forward: the backward by the same form (dX as the
convolution's input gradient of g laid out space-to-depth, dK from its kernel gradient) took
1484-1557 ms against the shifted route's 1332-1366 for the DCGAN's last layer, whose transform
buffers are four times as wide; it stays on the shifted route.
"""
import numpy as np

from . import winograd

# Input channels from which the sub-pixel form pays (the product's inner size). Measured, forward
# with bias, batch 32 (ms, shifted route against this, medians of 7 alternating):
#   8x8x128 -> 16x16x128      8.0 against 9.3-13.7
#   16x16x128 -> 32x32x256   50.3 against 50.6-51.5
#   32x32x256 -> 64x64x512  624 against 517
_MIN_CHANNELS = 256


def _phase_offsets(k, s, pad):
    """{(p, a): d}: output phase p reads input pixel m + d through tap a."""
    return {(p, a): (p + pad - a) // s for p in range(s) for a in range(k)
            if (p + pad - a) % s == 0}


def _window(k, s, pad):
    """(offsets, first d, last d) along one axis."""
    offsets = _phase_offsets(k, s, pad)
    return offsets, min(offsets.values()), max(offsets.values())


def _pads(geom, first_row, first_col):
    """The padding of x (top, bottom, left, right) for the 3x3 convolution: its output has one
    pixel per s x s block of the transposed convolution's output."""
    blocks_h, blocks_w = -(-geom.H // geom.sh), -(-geom.W // geom.sw)
    top, left = -first_row, -first_col
    return top, blocks_h + 2 - top - geom.OH, left, blocks_w + 2 - left - geom.OW


def fits(geom, x, kernel):
    """True where the forward of a conv2d_transpose (geom: the conv2d whose input gradient it
    is) takes this route: NumPy floats of one dtype, one stride both ways, a 3x3 window that
    needs no cropping of x, and enough input channels."""
    if not (type(x) is np.ndarray and type(kernel) is np.ndarray and x.dtype == kernel.dtype
            and x.dtype in (np.float32, np.float64) and geom.sh == geom.sw > 1
            and (geom.dh, geom.dw) == (1, 1) and kernel.shape[3] >= _MIN_CHANNELS):
        return False
    (_, first_row, last_row), (_, first_col, last_col) = (_window(geom.kh, geom.sh, geom.pt),
                                                          _window(geom.kw, geom.sw, geom.pl))
    return (last_row - first_row == 2 and last_col - first_col == 2
            and min(_pads(geom, first_row, first_col)) >= 0)


def subpixel_kernel(kernel, geom):
    """K3 (3, 3, C, s*s*F) of a conv2d_transpose kernel (kh, kw, F, C), with the padding of x
    (top, bottom, left, right) that its 3x3 convolution takes."""
    s = geom.sh
    (rows, first_row, _), (cols, first_col, _) = (_window(geom.kh, s, geom.pt),
                                                  _window(geom.kw, s, geom.pl))
    F, C = kernel.shape[2:]
    K3 = np.zeros((3, 3, C, s, s, F), kernel.dtype)
    for (p, a), d in rows.items():
        for (q, b), e in cols.items():
            K3[d - first_row, e - first_col, :, p, q] = kernel[a, b].T
    return K3.reshape(3, 3, C, s * s * F), _pads(geom, first_row, first_col)


def transpose_forward(x, kernel, geom, bias=None, relu=False):
    """conv2d_transpose's y (N, H, W, F) (+ bias, then ReLU when asked); x (N, OH, OW, C) is
    the input of the transposed convolution, the output of `geom`'s conv2d."""
    K3, pads = subpixel_kernel(kernel, geom)
    s = geom.sh
    y = winograd.conv3x3(x, K3, pads, None if bias is None else np.tile(bias, s * s), relu,
                         block=s)
    return y if y.shape[1:3] == (geom.H, geom.W) else y[:, :geom.H, :geom.W]
