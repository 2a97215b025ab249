"""Pooling and nearest-neighbour upsampling, NHWC, with Keras's (TensorFlow's) padding rules.

Both poolings walk the pool_size[0] * pool_size[1] window offsets ("taps"); each tap is one
strided view of the (padded) input with the output's shape, so the work is a handful of
whole-array operations, never a loop over pixels. 'same' padding follows conv2d's rule (extra
pixel bottom/right). Max pooling never picks a padded cell (they hold -inf); average pooling
divides by the number of real cells in each window, not by the window size.

This is the reference; accel/pool.py registers a faster route (separable passes, preallocated masks)
that gives the same numbers.
"""
from .. import fastpath
from ..backend import get_array_module
from ..tensor import Function
from .im2col import padding_amounts, padding_name, pair
from .reduce import mean


class _PoolGeometry:
    def __init__(self, x, pool_size, strides, padding, op):
        if x.dtype.kind != "f":
            raise TypeError(f"{op}: x has dtype {x.dtype}; it must be a float array (float32 or "
                            f"float64), e.g. x.astype('float32')")
        x_shape = x.shape
        if len(x_shape) != 4:
            raise ValueError(f"x must be NHWC (4-D), got shape {tuple(x_shape)}")
        self.kh, self.kw = pair(pool_size, "pool_size", op)
        self.sh, self.sw = (self.kh, self.kw) if strides is None else pair(strides, "strides", op)
        padding = padding_name(padding, op)
        self.shape = tuple(x_shape)
        N, H, W, C = x_shape
        self.pt, self.pb, self.OH = padding_amounts(H, self.kh, self.sh, padding)
        self.pl, self.pr, self.OW = padding_amounts(W, self.kw, self.sw, padding)
        if self.OH < 1 or self.OW < 1:
            raise ValueError(f"a {self.kh}x{self.kw} pool does not fit in an input of "
                             f"{H}x{W} with padding '{padding}'")
        self.padded = (N, H + self.pt + self.pb, W + self.pl + self.pr, C)
        self.has_pad = self.padded != self.shape

    def pad(self, x, fill):
        if not self.has_pad:
            return x
        xp = get_array_module(x)
        out = xp.full(self.padded, fill, x.dtype)
        out[:, self.pt:self.pt + self.shape[1], self.pl:self.pl + self.shape[2]] = x
        return out

    def crop(self, xpad):
        if not self.has_pad:
            return xpad
        return xpad[:, self.pt:self.pt + self.shape[1], self.pl:self.pl + self.shape[2]]

    def taps(self, xpad):
        """Views of xpad with the output's shape (N, OH, OW, C), one per window offset (a, b),
        row-major."""
        for a in range(self.kh):
            for b in range(self.kw):
                yield xpad[:, a:a + (self.OH - 1) * self.sh + 1:self.sh,
                           b:b + (self.OW - 1) * self.sw + 1:self.sw]

    def real_cells(self, xp, dtype):
        """(1, OH, OW, 1): how many non-padding cells each window covers (it factors by axis)."""
        def along(n, k, s, before, out):
            start = xp.arange(out) * s - before
            return (xp.minimum(start + k, n) - xp.maximum(start, 0)).astype(dtype)
        rows = along(self.shape[1], self.kh, self.sh, self.pt, self.OH)
        cols = along(self.shape[2], self.kw, self.sw, self.pl, self.OW)
        return (rows[:, None] * cols[None, :])[None, :, :, None]


class MaxPool2D(Function):
    def forward(self, x, pool_size=2, strides=None, padding="valid"):
        xp = get_array_module(x)
        geom = _PoolGeometry(x, pool_size, strides, padding, "max_pool2d")
        xpad = geom.pad(x, -xp.inf)                                      # (N, Hp, Wp, C)
        fast = fastpath.lookup("max_pool2d_forward")
        found = NotImplemented if fast is None else fast(xpad, geom, self.needs_input_grad[0])
        if found is not NotImplemented:
            # the fast path may also keep where each window's maximum is, for its backward
            y, self.route = found
        else:
            y, self.route = None, None
            for view in geom.taps(xpad):                                 # (N, OH, OW, C)
                y = view.copy() if y is None else xp.maximum(y, view, out=y)
        if self.needs_input_grad[0]:
            self.geom, self.xpad, self.y = geom, xpad, y
        return y

    def backward(self, g):
        fast = fastpath.lookup("max_pool2d_backward")
        dx = NotImplemented if fast is None else fast(g, self.xpad, self.y, self.geom, self.route)
        if dx is not NotImplemented:
            return dx
        # Each window's gradient goes to the first cell (row-major) that holds its maximum, as
        # TensorFlow's MaxPoolGrad does; `taken` keeps later ties in the window from taking it too.
        xp = get_array_module(g)
        dxpad = xp.zeros(self.geom.padded, g.dtype)                      # (N, Hp, Wp, C)
        taken = xp.zeros(self.y.shape, bool)                             # (N, OH, OW, C)
        for view, dview in zip(self.geom.taps(self.xpad), self.geom.taps(dxpad)):
            hit = (view == self.y) & ~taken
            taken |= hit
            dview += g * hit
        return self.geom.crop(dxpad)


class AvgPool2D(Function):
    def forward(self, x, pool_size=2, strides=None, padding="valid"):
        xp = get_array_module(x)
        geom = _PoolGeometry(x, pool_size, strides, padding, "avg_pool2d")
        xpad = geom.pad(x, 0)                                            # (N, Hp, Wp, C)
        fast = fastpath.lookup("avg_pool2d_forward")
        total = NotImplemented if fast is None else fast(xpad, geom)
        if total is NotImplemented:
            total = None
            for view in geom.taps(xpad):                                 # (N, OH, OW, C)
                total = view.copy() if total is None else xp.add(total, view, out=total)
        self.geom = geom
        self.count = geom.real_cells(xp, x.dtype)                        # (1, OH, OW, 1)
        total /= self.count
        return total

    def backward(self, g):
        share = g / self.count                                           # (N, OH, OW, C)
        fast = fastpath.lookup("avg_pool2d_backward")
        dx = NotImplemented if fast is None else fast(share, self.geom)
        if dx is not NotImplemented:
            return dx
        dxpad = get_array_module(g).zeros(self.geom.padded, g.dtype)     # (N, Hp, Wp, C)
        for dview in self.geom.taps(dxpad):
            dview += share
        return self.geom.crop(dxpad)


class UpSample2D(Function):
    """Nearest neighbour: every pixel becomes a size[0] x size[1] block (Keras's UpSampling2D)."""

    def forward(self, x, size=2):
        xp = get_array_module(x)
        if x.ndim != 4:
            raise ValueError(f"x must be NHWC (4-D), got shape {tuple(x.shape)}")
        self.size = sh, sw = pair(size, "size", "upsample2d")
        N, H, W, C = x.shape
        return xp.broadcast_to(x[:, :, None, :, None, :], (N, H, sh, W, sw, C)).reshape(
            N, H * sh, W * sw, C)

    def backward(self, g):
        sh, sw = self.size
        N, H2, W2, C = g.shape
        return g.reshape(N, H2 // sh, sh, W2 // sw, sw, C).sum(axis=(2, 4))


def max_pool2d(x, pool_size=2, strides=None, padding="valid"):
    """Max over pool_size windows (strides default to pool_size), NHWC."""
    return MaxPool2D.apply(x, pool_size=pool_size, strides=strides, padding=padding)


def avg_pool2d(x, pool_size=2, strides=None, padding="valid"):
    """Mean over the real (non-padding) cells of each window, NHWC."""
    return AvgPool2D.apply(x, pool_size=pool_size, strides=strides, padding=padding)


def global_avg_pool2d(x, keepdims=False):
    """Mean over height and width: (N, H, W, C) -> (N, C), or (N, 1, 1, C) with keepdims."""
    return mean(x, axis=(1, 2), keepdims=keepdims)


def upsample2d(x, size=2):
    """Nearest-neighbour upsampling by an int or a (rows, cols) pair, NHWC."""
    return UpSample2D.apply(x, size=size)
