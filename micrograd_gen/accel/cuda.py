"""The CUDA kernels in kernels/*.cu, called on CuPy arrays, each beside the NumPy function it must
agree with.

This is the only module that imports CuPy for kernels, and only when a kernel is first called: the
NumPy engine never touches it. Each .cu file is compiled once per process through
`cupy.RawModule` (CuPy also keeps the binary in its on-disk cache, so later processes skip NVRTC)
and its functions are looked up by name, `<kernel>_f32` or `<kernel>_f64` by the arrays' dtype.

kernel file (kernels/)               CuPy call here                  NumPy reference here
im2col_nhwc.cu                       im2col                          im2col_reference
col2im_nhwc.cu                       col2im                          col2im_reference
  (both together)                    conv2d_forward, conv2d_backward (one im2col, one cuBLAS GEMM)
lstm_cell_forward.cu                 lstm_cell_forward               lstm_cell_forward_reference
lstm_cell_backward.cu                lstm_cell_backward              lstm_cell_backward_reference
softmax_cross_entropy_forward.cu     softmax_cross_entropy_forward   ..._forward_reference
softmax_cross_entropy_backward.cu    softmax_cross_entropy_backward  ..._backward_reference

The kernels write into arrays they are given (the ops keep preallocated buffers), so every array
must be C-contiguous and of the kernel's dtype: a silent copy would write the result somewhere
nobody reads. A wrong one is a ValueError naming the kernel and the argument.

Where the sources are: $MICROGRAD_GEN_KERNELS, else micrograd_gen/kernels/ (package data).
"""
import os
from pathlib import Path

import numpy as np

from ..backend import cupy_module

KERNEL_DIR = Path(os.environ.get("MICROGRAD_GEN_KERNELS")
                  or Path(__file__).resolve().parents[1] / "kernels")
KERNEL_FILES = ("im2col_nhwc", "col2im_nhwc", "lstm_cell_forward", "lstm_cell_backward",
                "softmax_cross_entropy_forward", "softmax_cross_entropy_backward")
_BLOCK = 256            # threads per block; softmax_cross_entropy_forward.cu's XENT_BLOCK
_MAX_BLOCKS = 1 << 16   # the kernels stride over whatever a grid this size does not cover
_COLS_BYTES = 1 << 29   # im2col columns are built for as many images as fit in 512 MiB
_modules = {}           # kernel file -> cupy.RawModule


# ---- loading and launching --------------------------------------------------------------------

def source_path(name):
    return KERNEL_DIR / f"{name}.cu"


def _function(name, dtype):
    """The compiled `<name>_f32` / `<name>_f64` of kernels/<name>.cu."""
    suffix = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}.get(np.dtype(dtype))
    if suffix is None:
        raise TypeError(f"{name}: CUDA kernels take float32 or float64 arrays, got {dtype}")
    module = _modules.get(name)
    if module is None:
        path = source_path(name)
        if not path.is_file():
            raise RuntimeError(f"{name}: CUDA source {path} not found (set MICROGRAD_GEN_KERNELS "
                               f"to a folder of the .cu files)")
        module = _modules[name] = cupy_module().RawModule(code=path.read_text())
    return module.get_function(f"{name}_{suffix}")


def _launch(name, dtype, total, args, blocks=None):
    if total == 0:
        return
    blocks = blocks or min(-(-total // _BLOCK), _MAX_BLOCKS)
    _function(name, dtype)((int(blocks),), (_BLOCK,), args)


def _check(kernel, dtype, **arrays):
    """Every named array C-contiguous and of `dtype` (labels: int64)."""
    for arg, a in arrays.items():
        want = np.dtype(np.int64) if arg == "labels" else np.dtype(dtype)
        if a.dtype != want or not a.flags.c_contiguous:
            raise ValueError(f"{kernel}: {arg} must be a C-contiguous {want} array, got "
                             f"{a.dtype} of shape {tuple(a.shape)} (contiguous: "
                             f"{a.flags.c_contiguous})")


def _i64(*values):
    return tuple(np.int64(v) for v in values)


# ---- im2col / col2im (NHWC) -------------------------------------------------------------------

def _conv_args(x_shape, kernel_size, strides, dilation, pads, out_size):
    (N, H, W, C), (kh, kw), (sh, sw), (dh, dw), (pt, pl), (OH, OW) = (
        x_shape, kernel_size, strides, dilation, pads, out_size)
    return _i64(N, H, W, C, kh, kw, sh, sw, dh, dw, pt, pl, OH, OW)


def im2col(x, kernel_size, strides, dilation, pads, out_size, out=None):
    """Columns (N, OH, OW, kh*kw*C) of an NHWC input x for a kh x kw kernel; pads = (top, left)
    zero padding (bottom / right padding is implied by out_size). Block a*kw + b of the last axis
    holds x[n, oh*sh + a*dh - top, ow*sw + b*dw - left, :] (kernels/im2col_nhwc.cu)."""
    cp = cupy_module()
    (kh, kw), (OH, OW) = kernel_size, out_size
    N, C = x.shape[0], x.shape[3]
    cols = cp.empty((N, OH, OW, kh * kw * C), x.dtype) if out is None else out
    _check("im2col_nhwc", x.dtype, x=x, cols=cols)
    _launch("im2col_nhwc", x.dtype, cols.size,
            (x, cols) + _conv_args(x.shape, kernel_size, strides, dilation, pads, out_size))
    return cols


def col2im(cols, x_shape, kernel_size, strides, dilation, pads, out=None):
    """The adjoint of im2col: dx (N, H, W, C) with every column block summed back onto the pixel it
    was read from (kernels/col2im_nhwc.cu). Writes, does not accumulate into, `out`."""
    cp = cupy_module()
    dx = cp.empty(tuple(x_shape), cols.dtype) if out is None else out
    _check("col2im_nhwc", cols.dtype, cols=cols, dx=dx)
    out_size = cols.shape[1:3]
    _launch("col2im_nhwc", cols.dtype, dx.size,
            (cols, dx) + _conv_args(x_shape, kernel_size, strides, dilation, pads, out_size))
    return dx


def _padded_shape(x_shape, kernel_size, strides, dilation, pads, out_size):
    """(bottom, right) padding that makes the padded input exactly cover every window."""
    (_, H, W, _), (kh, kw), (sh, sw), (dh, dw), (pt, pl), (OH, OW) = (
        x_shape, kernel_size, strides, dilation, pads, out_size)
    return (max(0, (OH - 1) * sh + (kh - 1) * dh + 1 - H - pt),
            max(0, (OW - 1) * sw + (kw - 1) * dw + 1 - W - pl))


def im2col_reference(x, kernel_size, strides, dilation, pads, out_size):
    """NumPy twin of im2col: the engine's own ops.conv.im2col on the zero-padded input."""
    from ..ops.conv import im2col as numpy_im2col
    pb, pr = _padded_shape(x.shape, kernel_size, strides, dilation, pads, out_size)
    xpad = np.pad(x, ((0, 0), (pads[0], pb), (pads[1], pr), (0, 0)))
    return numpy_im2col(xpad, kernel_size, strides, dilation, out_size)


def col2im_reference(cols, x_shape, kernel_size, strides, dilation, pads):
    """NumPy twin of col2im: the engine's ops.conv.col2im into a zero-padded buffer, cropped."""
    from ..ops.conv import col2im as numpy_col2im
    out_size = cols.shape[1:3]
    pb, pr = _padded_shape(x_shape, kernel_size, strides, dilation, pads, out_size)
    N, H, W, C = x_shape
    xpad = np.zeros((N, H + pads[0] + pb, W + pads[1] + pr, C), cols.dtype)
    numpy_col2im(cols, xpad, kernel_size, strides, dilation)
    return xpad[:, pads[0]:pads[0] + H, pads[1]:pads[1] + W]


# ---- conv2d on the GPU: one im2col and one GEMM per chunk of images ----------------------------

def _geometry_args(geom):
    return (geom.kh, geom.kw), (geom.sh, geom.sw), (geom.dh, geom.dw), (geom.pt, geom.pl), \
        (geom.OH, geom.OW)


def _image_chunks(geom, itemsize):
    per_image = geom.OH * geom.OW * geom.kh * geom.kw * geom.C * itemsize
    step = max(1, _COLS_BYTES // max(per_image, 1))
    for n0 in range(0, geom.N, step):
        yield n0, min(n0 + step, geom.N)


def conv2d_forward(x, kernel, geom):
    """y (N, OH, OW, F) = conv2d(x, kernel) on CuPy arrays, for micrograd_gen.ops.conv's geometry
    (anything with N, H, W, C, kh, kw, sh, sw, dh, dw, pt, pl, OH, OW). On a GPU one big GEMM
    beats the CPU path's kh*kw thin per-tap products, each a kernel launch plus an addition."""
    cp = cupy_module()
    x = cp.ascontiguousarray(x)
    F = kernel.shape[3]
    kmat = cp.ascontiguousarray(kernel).reshape(-1, F)                    # (kh*kw*C, F)
    size, strides, dilation, pads, out_size = _geometry_args(geom)
    y = cp.empty((geom.N, geom.OH, geom.OW, F), x.dtype)
    for n0, n1 in _image_chunks(geom, x.dtype.itemsize):
        cols = im2col(x[n0:n1], size, strides, dilation, pads, out_size)  # (n, OH, OW, kh*kw*C)
        cp.matmul(cols.reshape(-1, kmat.shape[0]), kmat, out=y[n0:n1].reshape(-1, F))
    return y


def conv2d_backward(g, x, kernel, geom, need_dx=True, need_dk=True):
    """(dX, dK) of conv2d_forward for the cotangent g (N, OH, OW, F); None for what is not needed.
    dX needs only the kernel (x may be None), dK only x (kernel may be None)."""
    cp = cupy_module()
    g = cp.ascontiguousarray(g)
    F = g.shape[3]
    taps_c = geom.kh * geom.kw * geom.C
    size, strides, dilation, pads, out_size = _geometry_args(geom)
    dx = cp.empty((geom.N, geom.H, geom.W, geom.C), g.dtype) if need_dx else None
    dk = cp.zeros((taps_c, F), g.dtype) if need_dk else None
    kmat = cp.ascontiguousarray(kernel).reshape(taps_c, F) if need_dx else None
    x = cp.ascontiguousarray(x) if need_dk else None
    for n0, n1 in _image_chunks(geom, g.dtype.itemsize):
        g2 = g[n0:n1].reshape(-1, F)                                       # (rows, F)
        if need_dx:
            dcols = cp.matmul(g2, kmat.T)                                  # (rows, kh*kw*C)
            col2im(dcols.reshape(n1 - n0, geom.OH, geom.OW, taps_c),
                   (n1 - n0, geom.H, geom.W, geom.C), size, strides, dilation, pads, out=dx[n0:n1])
        if need_dk:
            cols = im2col(x[n0:n1], size, strides, dilation, pads, out_size)
            dk += cp.matmul(cols.reshape(-1, taps_c).T, g2)                # (kh*kw*C, F)
    if need_dk:
        dk = dk.reshape(geom.kh, geom.kw, geom.C, F)
    return dx, dk


# ---- the LSTM cell ---------------------------------------------------------------------------

def _lstm_sizes(z, feature_major):
    if z.ndim != 2 or z.shape[0 if feature_major else 1] % 4:
        raise ValueError(f"lstm_cell: z must be {'(4U, N)' if feature_major else '(N, 4U)'}, got "
                         f"shape {tuple(z.shape)}")
    return (z.shape[0] // 4, z.shape[1]) if feature_major else (z.shape[1] // 4, z.shape[0])


def lstm_cell_forward(z, c_prev, c, tanh_c, h, feature_major=True, scale=(1, 1, 1, 1)):
    """One LSTM step after its GEMMs (kernels/lstm_cell_forward.cu), in place on CuPy arrays.

    z (4U, N) feature-major or (N, 4U) batch-major holds scale[k] * (pre-activation of gate k),
    gates i, f, c, o; it is overwritten with the activations (i, f, g, o). c, tanh_c and h
    (states: (U, N) or (N, U)) receive the new cell state, its tanh and the new hidden state.
    """
    U, N = _lstm_sizes(z, feature_major)
    _check("lstm_cell_forward", z.dtype, z=z, c_prev=c_prev, c=c, tanh_c=tanh_c, h=h)
    t = z.dtype.type
    _launch("lstm_cell_forward", z.dtype, U * N,
            (z, c_prev, c, tanh_c, h) + _i64(U, N) + (np.int32(bool(feature_major)),)
            + tuple(t(s) for s in scale))


def lstm_cell_backward(act, c_prev, tanh_c, dh, dc, feature_major=True):
    """Backward of one LSTM step (kernels/lstm_cell_backward.cu), in place on CuPy arrays.

    act: the activations lstm_cell_forward left in z, overwritten with dL/dz (of the plain
    pre-activations). dc: dL/dc of the step's new cell state, overwritten with dL/dc_prev."""
    U, N = _lstm_sizes(act, feature_major)
    _check("lstm_cell_backward", act.dtype, act=act, c_prev=c_prev, tanh_c=tanh_c, dh=dh, dc=dc)
    _launch("lstm_cell_backward", act.dtype, U * N,
            (act, c_prev, tanh_c, dh, dc) + _i64(U, N) + (np.int32(bool(feature_major)),))


def _gates(z, feature_major):
    """The four gate blocks of z, each shaped like a state ((U, N) or (N, U))."""
    return np.split(z, 4, axis=0 if feature_major else 1)


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def lstm_cell_forward_reference(z, c_prev, feature_major=True, scale=(1, 1, 1, 1)):
    """NumPy twin of lstm_cell_forward: returns (act, c, tanh_c, h) without touching z."""
    zi, zf, zc, zo = (block / block.dtype.type(s) for block, s in
                      zip(_gates(z, feature_major), scale))
    with np.errstate(over="ignore"):
        i, f, o = _sigmoid(zi), _sigmoid(zf), _sigmoid(zo)
    g = np.tanh(zc)
    c = f * c_prev + i * g
    tanh_c = np.tanh(c)
    act = np.concatenate([i, f, g, o], axis=0 if feature_major else 1)
    return act, c, tanh_c, o * tanh_c


def lstm_cell_backward_reference(act, c_prev, tanh_c, dh, dc, feature_major=True):
    """NumPy twin of lstm_cell_backward: returns (dz, dc_prev) without touching act or dc."""
    i, f, g, o = _gates(act, feature_major)
    dc_t = dc + dh * o * (1 - tanh_c * tanh_c)
    dz = np.concatenate([dc_t * g * i * (1 - i), dc_t * c_prev * f * (1 - f),
                         dc_t * i * (1 - g * g), dh * tanh_c * o * (1 - o)],
                        axis=0 if feature_major else 1)
    return dz, dc_t * f


# ---- softmax + cross-entropy with integer labels -----------------------------------------------

def softmax_cross_entropy_forward(logits, labels, probs=None):
    """(loss (rows,), probs (rows, classes)) of 2-D CuPy logits and int64 labels in [0, classes)
    (the caller checks the range) (kernels/softmax_cross_entropy_forward.cu)."""
    cp = cupy_module()
    rows, classes = logits.shape
    probs = cp.empty_like(logits) if probs is None else probs
    loss = cp.empty(rows, logits.dtype)
    _check("softmax_cross_entropy_forward", logits.dtype, logits=logits, labels=labels,
           probs=probs)
    if rows and classes:
        _launch("softmax_cross_entropy_forward", logits.dtype, rows,
                (logits, labels, probs, loss) + _i64(rows, classes),
                blocks=min(rows, _MAX_BLOCKS))
    return loss, probs


def softmax_cross_entropy_backward(probs, labels, g, out=None):
    """(probs - onehot(labels)) * g[:, None] (kernels/softmax_cross_entropy_backward.cu); `out`
    may be probs itself."""
    cp = cupy_module()
    rows, classes = probs.shape
    d = cp.empty_like(probs) if out is None else out
    _check("softmax_cross_entropy_backward", probs.dtype, probs=probs, labels=labels, g=g, d=d)
    _launch("softmax_cross_entropy_backward", probs.dtype, rows * classes,
            (probs, labels, g, d) + _i64(rows, classes))
    return d


def softmax_cross_entropy_forward_reference(logits, labels):
    """NumPy twin: (loss, probs), loss = logsumexp(row) - row[label], as the engine's op."""
    peak = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - peak)
    total = e.sum(axis=1, keepdims=True)
    rows = np.arange(logits.shape[0])
    return np.log(total[:, 0]) + peak[:, 0] - logits[rows, labels], e / total


def softmax_cross_entropy_backward_reference(probs, labels, g):
    d = probs.copy()
    d[np.arange(probs.shape[0]), labels] -= 1
    return d * g[:, None]
