"""Bilinear resize of NHWC images, as tf.image.resize / keras.ops.image.resize do it
(half-pixel centres, antialias=False), differentiable.

Output pixel i along an axis samples the input at src = (i + 0.5) * n_in / n_out - 0.5, clamped
to [0, n_in - 1], mixing cells floor(src) and floor(src) + 1 (clamped) with weights (1 - t, t).
Along each axis that is a fixed (n_out, n_in) matrix with two non-zeros per row, so the resize is
A_h @ x @ A_w^T per image and channel and its gradient is A_h^T @ g @ A_w. The matrices are
dense: for the image sizes this is used at (DeepDream octaves, a few channels) two wide matrix
products are faster and simpler than gathers and scatter-adds.
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
    """m (P, H) applied along axis 1 of x (N, H, W, C) -> (N, P, W, C): one wide product."""
    xp = get_array_module(x)
    N, H, W, C = x.shape
    return xp.matmul(m, x.reshape(N, H, W * C)).reshape(N, m.shape[0], W, C)


def _separable(x, m_rows, m_cols):
    """m_rows @ x @ m_cols^T for every image and channel of NHWC x. The column pass runs on
    the transposed image (a copy), so that both passes are wide products rather than many
    thin ones with C columns."""
    xp = get_array_module(x)
    y = _along_rows(m_rows, x)                                # (N, P, W, C)
    y = _along_rows(m_cols, y.transpose(0, 2, 1, 3))          # (N, Q, P, C)
    return xp.ascontiguousarray(y.transpose(0, 2, 1, 3))      # (N, P, Q, C)


class ResizeBilinear(Function):
    def forward(self, x, size=None):
        xp = get_array_module(x)
        if x.ndim != 4:
            raise ValueError(f"x must be NHWC (4-D), got shape {tuple(x.shape)}")
        out_h, out_w = _pair(size, "size", "resize_bilinear")
        self.a_h = xp.asarray(interpolation_matrix(out_h, x.shape[1], x.dtype))  # (out_h, H)
        self.a_w = xp.asarray(interpolation_matrix(out_w, x.shape[2], x.dtype))  # (out_w, W)
        return _separable(x, self.a_h, self.a_w)

    def backward(self, g):
        return _separable(g, self.a_h.T, self.a_w.T)


def resize_bilinear(x, size):
    """Resize NHWC images to size = (height, width) with bilinear half-pixel sampling."""
    return ResizeBilinear.apply(x, size=size)
