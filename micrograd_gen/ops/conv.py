"""2-D convolution and its transpose, NHWC, kernels in Keras's layouts, Keras's padding rules.

conv2d(x, kernel): x (N, H, W, C), kernel HWIO (kh, kw, C, F) -> (N, OH, OW, F), cross-correlation.
It is one matrix product: im2col lays every output pixel's receptive field out as a row of
kh*kw*C numbers, and the kernel read as a (kh*kw*C, F) matrix maps each row to the pixel's F
outputs. Backward is the same product's two gradients: dK = cols^T @ dY, and dcols = dY @ K^T
summed back onto the pixels each column was read from (col2im).

conv2d_transpose(x, kernel): kernel (kh, kw, out, in); it is exactly the adjoint of conv2d, so its
forward is conv2d's input gradient and its backward is conv2d's forward and kernel gradient.

This is the reference the engine is read from. A faster route (accel/conv.py: shifted per-tap
products through BLAS, worker threads, CUDA kernels) takes over when fast paths are on; the op
validates its inputs first, so both paths refuse bad input with the same errors.
"""
from dataclasses import dataclass

from .. import fastpath
from ..backend import get_array_module
from ..tensor import Function
from .im2col import col2im, im2col, padding_amounts, padding_name, pair

_pair = pair   # resize.py reads the argument rule from here

# im2col columns are built a band of output rows at a time: VGG19's first block at 400x600 would
# otherwise need 553 MB of columns per image.
_COLS_BYTES = 1 << 26


@dataclass(frozen=True)
class ConvGeometry:
    """The sizes of one conv2d: input (N, H, W, C), kernel taps (kh, kw), strides (sh, sw),
    dilation (dh, dw), Keras's padding (top pt, bottom pb, left pl, right pr), output (OH, OW)."""
    N: int
    H: int
    W: int
    C: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pb: int
    pl: int
    pr: int
    OH: int
    OW: int

    @classmethod
    def of(cls, x_shape, kernel_shape, strides, padding, dilation=(1, 1)):
        N, H, W, C = (int(v) for v in x_shape)
        kh, kw = int(kernel_shape[0]), int(kernel_shape[1])
        pt, pb, OH = padding_amounts(H, kh, strides[0], padding, dilation[0])
        pl, pr, OW = padding_amounts(W, kw, strides[1], padding, dilation[1])
        if OH < 1 or OW < 1:
            raise ValueError(f"a {kh}x{kw} kernel (dilation {tuple(dilation)}) does not fit in an "
                             f"input of {H}x{W} with padding '{padding}'")
        return cls(N, H, W, C, kh, kw, *strides, *dilation, pt, pb, pl, pr, OH, OW)

    def pad(self, x):
        xp = get_array_module(x)
        return xp.pad(x, ((0, 0), (self.pt, self.pb), (self.pl, self.pr), (0, 0)))

    def row_bands(self, itemsize):
        """Ranges of output rows whose im2col columns take at most _COLS_BYTES."""
        per_row = self.N * self.OW * self.kh * self.kw * self.C * itemsize
        step = max(1, _COLS_BYTES // max(per_row, 1))
        return [(i, min(i + step, self.OH)) for i in range(0, self.OH, step)]

    def rows_read(self, xpad, i0, i1):
        """The rows of the padded input that output rows i0 .. i1 - 1 read (a view)."""
        return xpad[:, i0 * self.sh:(i1 - 1) * self.sh + (self.kh - 1) * self.dh + 1]

    def im2col_args(self, rows):
        return (self.kh, self.kw), (self.sh, self.sw), (self.dh, self.dw), (rows, self.OW)


# ---- the reference: im2col + one matrix product -----------------------------------------------

def conv2d_forward(x, kernel, geom):
    """y (N, OH, OW, F) = im2col(x) @ kernel, a band of output rows at a time."""
    xp = get_array_module(x, kernel)
    F, taps = kernel.shape[3], geom.kh * geom.kw * geom.C
    xpad = geom.pad(x)                                                   # (N, Hp, Wp, C)
    kmat = kernel.reshape(taps, F)                                       # (kh*kw*C, F)
    y = xp.empty((geom.N, geom.OH, geom.OW, F), x.dtype)
    for i0, i1 in geom.row_bands(x.dtype.itemsize):
        cols = im2col(geom.rows_read(xpad, i0, i1), *geom.im2col_args(i1 - i0))
        # (N*rows*OW, kh*kw*C) @ (kh*kw*C, F): one matrix product (a 4-D @ would be many small)
        y[:, i0:i1] = (cols.reshape(-1, taps) @ kmat).reshape(geom.N, i1 - i0, geom.OW, F)
    return y


def conv2d_backward(g, x, kernel, geom, need_dx=True, need_dk=True):
    """(dX, dK) of conv2d_forward for the cotangent g (N, OH, OW, F); None for what is not
    needed. dX needs only the kernel, dK only x: keep x, never the columns (they are rebuilt)."""
    xp = get_array_module(g)
    F, taps = g.shape[3], geom.kh * geom.kw * geom.C
    padded = (geom.N, geom.H + geom.pt + geom.pb, geom.W + geom.pl + geom.pr, geom.C)
    xpad = geom.pad(x) if need_dk else None                              # (N, Hp, Wp, C)
    dxpad = xp.zeros(padded, g.dtype) if need_dx else None               # (N, Hp, Wp, C)
    dk = xp.zeros((taps, F), g.dtype) if need_dk else None               # (kh*kw*C, F)
    kmat_t = kernel.reshape(taps, F).T if need_dx else None              # (F, kh*kw*C)
    for i0, i1 in geom.row_bands(g.dtype.itemsize):
        g_band = g[:, i0:i1].reshape(-1, F)                              # (N*rows*OW, F)
        if need_dk:
            cols = im2col(geom.rows_read(xpad, i0, i1), *geom.im2col_args(i1 - i0))
            dk += cols.reshape(-1, taps).T @ g_band                      # (kh*kw*C, F)
        if need_dx:
            dcols = (g_band @ kmat_t).reshape(geom.N, i1 - i0, geom.OW, taps)
            col2im(dcols, geom.rows_read(dxpad, i0, i1), *geom.im2col_args(i1 - i0)[:3])
    dx = None if dxpad is None else dxpad[:, geom.pt:geom.pt + geom.H, geom.pl:geom.pl + geom.W]
    return dx, None if dk is None else dk.reshape(geom.kh, geom.kw, geom.C, F)


# ---- the choice between the reference and the fast path ---------------------------------------

# `frozen`: the kernel gets no gradient (DeepDream's and style transfer's networks, inference),
# so a fast path may keep what it derives from it while the kernel stays equal. `kept`: a dict
# the op holds from forward to backward, in which a fast forward may leave what its backward
# would otherwise make again (None: keep nothing).

def _forward(x, kernel, geom, bias=None, relu=False, frozen=False, kept=None):
    fast = fastpath.lookup("conv2d_forward")
    y = NotImplemented if fast is None else fast(x, kernel, geom, bias, relu, frozen, kept)
    if y is NotImplemented:
        y = conv2d_forward(x, kernel, geom)
        if bias is not None:
            y += bias
        if relu:
            get_array_module(y).maximum(y, 0, out=y)
    return y


def _backward(g, x, kernel, geom, need_dx, need_dk, need_db=False, positive=None, frozen=False,
              kept=None):
    """(dX, dK, dBias); `positive` is a fused ReLU's mask (y > 0), applied to g first."""
    fast = fastpath.lookup("conv2d_backward")
    grads = (NotImplemented if fast is None
             else fast(g, x, kernel, geom, need_dx, need_dk, need_db, positive, frozen, kept))
    if grads is not NotImplemented:
        return grads
    if positive is not None:
        g = g * positive
    dx, dk = conv2d_backward(g, x, kernel, geom, need_dx, need_dk)
    return dx, dk, g.sum(axis=(0, 1, 2)) if need_db else None


# ---- the ops ------------------------------------------------------------------------------------

def _check_inputs(op, x, kernel, bias, in_axis, layout):
    """Dtypes, ranks and channels, checked before either path runs."""
    for name, a in (("x", x), ("kernel", kernel), ("bias", bias)):
        if a is not None and a.dtype.kind != "f":
            raise TypeError(f"{op}: {name} has dtype {a.dtype}; it must be a float array "
                            f"(float32 or float64), e.g. x.astype('float32')")
    if x.ndim != 4:
        raise ValueError(f"x must be NHWC (4-D), got shape {tuple(x.shape)}")
    if kernel.ndim != 4:
        raise ValueError(f"kernel must be 4-D {layout}, got shape {tuple(kernel.shape)}")
    if kernel.shape[in_axis] != x.shape[3]:
        raise ValueError(f"kernel {tuple(kernel.shape)} {layout} expects {kernel.shape[in_axis]} "
                         f"input channels but x {tuple(x.shape)} has {x.shape[3]}")
    filters = kernel.shape[5 - in_axis]
    if bias is not None and tuple(bias.shape) != (filters,):
        raise ValueError(f"bias has shape {tuple(bias.shape)} but the kernel has {filters} "
                         f"filters (expected ({filters},))")


class Conv2D(Function):
    def forward(self, x, kernel, bias=None, strides=1, padding="valid", dilation_rate=1,
                relu=False):
        op = "conv2d"
        _check_inputs(op, x, kernel, bias, 2, "(kh, kw, in, out)")
        geom = ConvGeometry.of(x.shape, kernel.shape, pair(strides, "strides", op),
                               padding_name(padding, op), pair(dilation_rate, "dilation_rate", op))
        self.kept = {} if self.needs_input_grad[1] else None
        y = _forward(x, kernel, geom, bias, relu, frozen=not self.needs_input_grad[1],
                     kept=self.kept)
        self.geom = geom
        # The ReLU's backward is g * (y > 0); the mask is 1 byte a number, y would be 4.
        self.positive = y > 0 if relu and any(self.needs_input_grad) else None
        # Keep only what backward will use: x for dK, the kernel for dX.
        self.x = x if self.needs_input_grad[1] else None
        self.kernel = kernel if self.needs_input_grad[0] else None
        return y

    def backward(self, g):
        return _backward(g, self.x, self.kernel, self.geom, *self.needs_input_grad,
                         positive=self.positive, frozen=not self.needs_input_grad[1],
                         kept=self.kept)


class Conv2DTranspose(Function):
    """The adjoint of conv2d: forward is conv2d's input gradient, backward is conv2d itself.

    The kernel (kh, kw, out, in) is, read as a conv2d kernel (HWIO), one that maps `out`
    channels to `in`; Keras's output size is the input size of that conv2d: n*s for 'same',
    n*s + max(k - s, 0) for 'valid'.
    """

    def forward(self, x, kernel, bias=None, strides=1, padding="valid", relu=False):
        op = "conv2d_transpose"
        _check_inputs(op, x, kernel, bias, 3, "(kh, kw, out, in)")
        strides, padding = pair(strides, "strides", op), padding_name(padding, op)
        N, H, W, _ = x.shape
        kh, kw, filters, _ = kernel.shape
        size = [n * s + (0 if padding == "same" else max(k - s, 0))
                for n, k, s in ((H, kh, strides[0]), (W, kw, strides[1]))]
        geom = ConvGeometry.of((N, size[0], size[1], filters), kernel.shape, strides, padding)
        fast = fastpath.lookup("conv2d_transpose_forward")
        frozen = not self.needs_input_grad[1]
        y = NotImplemented if fast is None else fast(x, kernel, geom, bias, relu, frozen)
        if y is NotImplemented:
            y, _, _ = _backward(x, None, kernel, geom, need_dx=True, need_dk=False, frozen=frozen)
            if bias is not None:
                y += bias
            if relu:
                get_array_module(y).maximum(y, 0, out=y)
        self.geom = geom
        # The ReLU's backward is g * (y > 0); y is kept (the next layer holds it anyway).
        self.relu_output = y if relu and any(self.needs_input_grad) else None
        self.x = x if self.needs_input_grad[1] else None
        self.kernel = kernel if self.needs_input_grad[0] else None
        return y

    def backward(self, g):
        need_dx, need_dk, need_db = self.needs_input_grad
        fast = fastpath.lookup("conv2d_transpose_backward")
        grads = (NotImplemented if fast is None
                 else fast(g, self.x, self.kernel, self.geom, need_dx, need_dk, need_db,
                           self.relu_output))
        if grads is NotImplemented:
            if self.relu_output is not None:
                g = g * (self.relu_output > 0)
            dx = _forward(g, self.kernel, self.geom, frozen=not need_dk) if need_dx else None
            # <g, A_K^T x> = <A_K g, x>: conv2d's kernel gradient, the roles of x and g swapped
            dk = _backward(self.x, g, None, self.geom, False, True)[1] if need_dk else None
            grads = dx, dk, g.sum(axis=(0, 1, 2)) if need_db else None
        return grads


def conv2d(x, kernel, bias=None, strides=1, padding="valid", dilation_rate=1, relu=False):
    """2-D cross-correlation (Keras's Conv2D): x (N, H, W, C), kernel (kh, kw, C, F), bias (F,)
    -> (N, OH, OW, F). strides and dilation_rate are ints or (rows, cols) pairs; padding is
    'valid' or 'same' (Keras's rule: the odd padding pixel goes bottom / right). relu=True
    gives max(conv2d + bias, 0) in one op, as Conv2D(activation="relu") computes it."""
    return Conv2D.apply(x, kernel, bias, strides=strides, padding=padding,
                        dilation_rate=dilation_rate, relu=relu)


def conv2d_transpose(x, kernel, bias=None, strides=1, padding="valid", relu=False):
    """Transposed convolution (Keras's Conv2DTranspose): x (N, H, W, in), kernel (kh, kw, out,
    in), bias (out,) -> (N, H*s, W*s, out) for 'same', (N, H*s + max(k - s, 0), ..., out) for
    'valid'. Exactly the adjoint of conv2d with the same kernel, strides and padding.
    relu=True gives max(conv2d_transpose + bias, 0) in one op."""
    return Conv2DTranspose.apply(x, kernel, bias, strides=strides, padding=padding, relu=relu)
