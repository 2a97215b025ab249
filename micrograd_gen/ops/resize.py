"""Bilinear resize of NHWC images, as tf.image.resize / keras.ops.image.resize do it
(half-pixel centres, antialias=False), differentiable.

Output pixel i along an axis samples the input at src = (i + 0.5) * n_in / n_out - 0.5, clamped
to [0, n_in - 1], mixing cells floor(src) and floor(src) + 1 (clamped) with weights (1 - t, t).
Along each axis that is a fixed (n_out, n_in) matrix with two non-zeros per row, so the resize is
A_h @ x @ A_w^T per image and channel and its gradient is A_h^T @ g @ A_w. The matrices are
dense: for the image sizes this is used at (DeepDream octaves, a few channels) one matrix product
is faster and simpler than gathers and scatter-adds.
"""
import numpy as np

from ..backend import get_array_module
from ..tensor import Function
from .conv import _pair


def interpolation_matrix(n_out, n_in, dtype=np.float64):
    """(n_out, n_in) NumPy matrix of half-pixel linear interpolation weights along one axis."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    low = np.floor(src).astype(np.int64)
    high = np.minimum(low + 1, n_in - 1)
    t = src - low
    matrix = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(matrix, (rows, low), 1 - t)
    np.add.at(matrix, (rows, high), t)
    return matrix.astype(dtype)


def _along_rows(m, x):
    """m (P, H) applied along axis 1 of x (N, H, W, C) -> (N, P, W, C)."""
    xp = get_array_module(x)
    N, H, W, C = x.shape
    return xp.matmul(m, x.reshape(N, H, W * C)).reshape(N, m.shape[0], W, C)


def _along_cols(m, x):
    """m (Q, W) applied along axis 2 of x (N, H, W, C) -> (N, H, Q, C)."""
    xp = get_array_module(x)
    N, H, W, C = x.shape
    return xp.matmul(m, x.reshape(N * H, W, C)).reshape(N, H, m.shape[0], C)


class ResizeBilinear(Function):
    def forward(self, x, size=None):
        xp = get_array_module(x)
        if x.ndim != 4:
            raise ValueError(f"x must be NHWC (4-D), got shape {tuple(x.shape)}")
        out_h, out_w = _pair(size, "size", "resize_bilinear")
        self.a_h = xp.asarray(interpolation_matrix(out_h, x.shape[1], x.dtype))  # (out_h, H)
        self.a_w = xp.asarray(interpolation_matrix(out_w, x.shape[2], x.dtype))  # (out_w, W)
        return _along_cols(self.a_w, _along_rows(self.a_h, x))

    def backward(self, g):
        return _along_cols(self.a_w.T, _along_rows(self.a_h.T, g))


def resize_bilinear(x, size):
    """Resize NHWC images to size = (height, width) with bilinear half-pixel sampling."""
    return ResizeBilinear.apply(x, size=size)
