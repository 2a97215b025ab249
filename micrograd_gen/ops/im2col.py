"""Keras's padding rule and the NHWC im2col / col2im that turn a convolution into a matrix product.

Shared by the reference conv2d (ops/conv.py), pooling (ops/pool.py) and the NumPy twins of the
CUDA kernels (accel/cuda.py), so it imports nothing but NumPy and the backend.
"""
import numpy as np

from ..backend import get_array_module


def pair(value, name, op):
    """(rows, cols) from an int or a pair of positive ints; `op` and `name` go into the error."""
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    try:
        result = tuple(int(v) for v in value)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}") from None
    if len(result) != 2 or min(result) < 1:
        raise ValueError(f"{op}: {name} must be a positive int or a pair of them, got {value!r}")
    return result


def padding_name(padding, op="conv2d"):
    name = str(padding).lower()
    if name not in ("same", "valid"):
        raise ValueError(f"{op}: padding must be 'same' or 'valid', got {padding!r}")
    return name


def padding_amounts(size, kernel, stride, padding, dilation=1):
    """(before, after, out) along one axis for Keras's padding ('same' or 'valid').

    'same' gives out = ceil(size / stride) and pads total = (out - 1) * stride + k - size, with
    the odd pixel after (bottom / right), as TensorFlow does: n=8, k=3, s=2 pads (0, 1).
    """
    k = (kernel - 1) * dilation + 1
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
        return total // 2, total - total // 2, out
    return 0, 0, (size - k) // stride + 1


def im2col(xpad, kernel_size, strides, dilation, out_size, out=None):
    """Columns (N, OH, OW, kh*kw*C) of an already padded NHWC input: block t = a*kw + b of the
    last axis holds xpad[n, i*sh + a*dh, j*sw + b*dw, :], so that columns @ kernel.reshape(-1, F)
    is the convolution. One strided copy per kernel tap."""
    xp = get_array_module(xpad)
    (kh, kw), (sh, sw), (dh, dw), (OH, OW) = kernel_size, strides, dilation, out_size
    N, C = xpad.shape[0], xpad.shape[3]
    cols = xp.empty((N, OH, OW, kh * kw * C), xpad.dtype) if out is None else out
    blocks = cols.reshape(N, OH, OW, kh * kw, C)
    for a in range(kh):
        for b in range(kw):
            blocks[:, :, :, a * kw + b] = xpad[:, a * dh:a * dh + (OH - 1) * sh + 1:sh,
                                               b * dw:b * dw + (OW - 1) * sw + 1:sw]
    return cols


def col2im(cols, xpad, kernel_size, strides, dilation):
    """Adjoint of im2col: add every column block back onto the padded input it came from
    (xpad += ..., in place; overlapping windows accumulate)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, strides, dilation
    N, OH, OW = cols.shape[:3]
    blocks = cols.reshape(N, OH, OW, kh * kw, xpad.shape[3])
    for a in range(kh):
        for b in range(kw):
            xpad[:, a * dh:a * dh + (OH - 1) * sh + 1:sh,
                 b * dw:b * dw + (OW - 1) * sw + 1:sw] += blocks[:, :, :, a * kw + b]
    return xpad
