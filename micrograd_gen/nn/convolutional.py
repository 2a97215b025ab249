"""Convolution, pooling and upsampling layers (NHWC, Keras's layouts and padding rules, see
../shared/KERAS.md): Conv2D, Conv2DTranspose, MaxPooling2D, AveragePooling2D,
GlobalAveragePooling2D, UpSampling2D."""
import numpy as np

from .. import ops
from . import activations, arguments
from .base import Layer


def _padding(value, layer):
    name = str(value).lower()
    if name not in ("valid", "same"):
        raise ValueError(f"{type(layer).__name__} '{layer.name}': padding must be 'valid' or "
                         f"'same', got {value!r}")
    return name


def _channels_last(data_format, layer_name):
    if data_format not in (None, "channels_last"):
        raise ValueError(f"layer '{layer_name}': only data_format='channels_last' (NHWC) is "
                         f"supported, got {data_format!r}")


def conv_output_length(n, k, padding, stride, dilation=1):
    """Keras's rule: 'same' gives ceil(n / s); 'valid' gives floor((n - dk) / s) + 1 with the
    dilated kernel size dk = (k - 1) * dilation + 1."""
    if n is None:
        return None
    if padding == "same":
        return -(-n // stride)
    return (n - ((k - 1) * dilation + 1)) // stride + 1


def deconv_output_length(n, k, padding, stride, dilation=1, output_padding=None):
    """Conv2DTranspose's output size, Keras 3's formula with the dilated kernel size dk:
    'same': n * s, or (n - 1) * s + dk % 2 + output_padding;
    'valid': (n - 1) * s + dk + output_padding, output_padding defaulting to max(dk, s) - dk
    (so n * s + max(k - s, 0) without dilation)."""
    if n is None:
        return None
    dk = (k - 1) * dilation + 1
    if padding == "same":
        return n * stride if output_padding is None else (n - 1) * stride + dk % 2 + output_padding
    extra = max(dk, stride) - dk if output_padding is None else output_padding
    return (n - 1) * stride + dk + extra


def deconv_output_start(k, padding, stride, dilation=1, output_padding=None):
    """Where Conv2DTranspose's output starts in the full scatter `full[i*s + a*d] += x[i] K[a]`:
    the left padding Keras 3 gives its JAX backend (keras/src/backend/common/backend_utils.py)
    is dk - 1 minus this crop. Where TensorFlow accepts the same sizes, this is the top / left
    'same' padding of the conv2d whose adjoint the layer is: k=3, s=2 crops 0; k=4, s=2 crops 1."""
    dk = (k - 1) * dilation + 1
    if padding == "valid":
        return 0
    pad_len = stride + dk - 2 if output_padding is None else dk + dk % 2 - 2 + output_padding
    left_pad = min(pad_len // 2 + pad_len % 2, dk - 1)
    return dk - 1 - left_pad


def _check_rank4(layer, shape):
    if len(shape) != 4:
        raise ValueError(f"{type(layer).__name__} '{layer.name}' expects NHWC inputs of rank 4, "
                         f"got shape {tuple(shape)}")


def _check_float(layer, x):
    # Keras casts only float inputs to the layer's dtype: integer pixels are the caller's to
    # scale (x / 255.0), and silently promoting them would hide that.
    if x.dtype.kind != "f":
        raise TypeError(f"{type(layer).__name__} '{layer.name}' needs a float input, got dtype "
                        f"{x.dtype} (shape {tuple(x.shape)}); convert it first, e.g. "
                        f"x.astype('float32') / 255")


def _check_output_size(layer, input_shape, output_shape):
    if any(d is not None and d < 1 for d in output_shape[1:3]):
        raise ValueError(f"{type(layer).__name__} '{layer.name}': input shape "
                         f"{tuple(input_shape)} is too small for its window (padding "
                         f"'{layer.padding}'): the output would be {tuple(output_shape)}")


def _dilate_kernel(kernel, rate):
    """(kh, kw, a, b) -> ((kh-1)*dh + 1, (kw-1)*dw + 1, a, b) with zeros between the taps: the
    dilated convolution is the plain one with this kernel. Built from differentiable ops, so
    the gradient flows back to the kernel's taps."""
    kh, kw, a, b = kernel.shape
    dh, dw = rate
    k = ops.reshape(kernel, (kh, 1, kw, 1, a, b))
    k = ops.pad(k, ((0, 0), (0, dh - 1), (0, 0), (0, dw - 1), (0, 0), (0, 0)))
    k = ops.reshape(k, (kh * dh, kw * dw, a, b))
    return k[:(kh - 1) * dh + 1, :(kw - 1) * dw + 1]


class Conv2D(Layer):
    """kernel (kh, kw, in / groups, filters), bias (filters,); cross-correlation as Keras.

    groups=g splits the input channels and the filters into g consecutive blocks, block j of
    the filters seeing only block j of the channels (Keras's and TensorFlow's grouped
    convolution): one conv2d per group, then the outputs concatenated on the channel axis."""

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        _channels_last(data_format, self.name)
        self.filters = arguments.positive_int(self, "filters", filters)
        self.kernel_size = arguments.positive_ints(self, "kernel_size", kernel_size)
        self.strides = arguments.positive_ints(self, "strides", strides)
        self.padding = _padding(padding, self)
        self.dilation_rate = arguments.positive_ints(self, "dilation_rate", dilation_rate)
        self.groups = arguments.positive_int(self, "groups", groups)
        if self.filters % self.groups:
            raise ValueError(f"Conv2D '{self.name}': filters ({self.filters}) must be divisible "
                             f"by groups ({self.groups})")
        if self.dilation_rate != (1, 1) and self.strides != (1, 1):
            raise ValueError(f"Conv2D '{self.name}': strides > 1 with dilation_rate > 1 is not "
                             f"supported (Keras does not allow it either), got strides="
                             f"{self.strides}, dilation_rate={self.dilation_rate}")
        self.activation = arguments.activation(self, "activation", activation)
        self.use_bias = use_bias
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer

    def build(self, input_shape):
        _check_rank4(self, input_shape)
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"Conv2D '{self.name}': the channel axis must be known, got input "
                             f"shape {tuple(input_shape)}")
        if channels % self.groups:
            raise ValueError(f"Conv2D '{self.name}': the input's {channels} channels (input "
                             f"shape {tuple(input_shape)}) do not divide into groups="
                             f"{self.groups}")
        _check_output_size(self, input_shape, self.compute_output_shape(input_shape))
        self.kernel = self.add_weight(
            "kernel", self.kernel_size + (channels // self.groups, self.filters),
            self.kernel_initializer)
        self.bias = (self.add_weight("bias", (self.filters,), self.bias_initializer)
                     if self.use_bias else None)

    def call(self, x):
        channels = self.kernel.shape[2] * self.groups
        if x.ndim != 4 or x.shape[-1] != channels:
            raise ValueError(f"Conv2D '{self.name}': built for NHWC inputs with {channels} "
                             f"channels, got shape {tuple(x.shape)}")
        _check_float(self, x)
        activation = activations.get(self.activation)
        fused = activation is activations.relu   # applied to each output chunk in cache
        options = dict(strides=self.strides, padding=self.padding,
                       dilation_rate=self.dilation_rate, relu=fused)
        if self.groups == 1:
            y = ops.conv2d(x, self.kernel, self.bias, **options)
        else:
            c, f = self.kernel.shape[2], self.filters // self.groups
            y = ops.concatenate(
                [ops.conv2d(x[..., g * c:(g + 1) * c], self.kernel[..., g * f:(g + 1) * f],
                            None if self.bias is None else self.bias[g * f:(g + 1) * f],
                            **options)
                 for g in range(self.groups)], axis=-1)
        return y if fused else activation(y)

    def compute_output_shape(self, input_shape):
        _check_rank4(self, input_shape)
        n, h, w, _ = input_shape
        return (n,
                conv_output_length(h, self.kernel_size[0], self.padding, self.strides[0],
                                   self.dilation_rate[0]),
                conv_output_length(w, self.kernel_size[1], self.padding, self.strides[1],
                                   self.dilation_rate[1]),
                self.filters)


class Conv2DTranspose(Layer):
    """kernel (kh, kw, filters, in): out and in swapped relative to Conv2D, as Keras stores it.

    output_padding and dilation_rate follow Keras 3 (see deconv_output_length): the layer takes
    the full transposed convolution of the op (with the kernel dilated when dilation_rate > 1),
    keeps the window Keras's padding rule selects and pads zeros after it where output_padding
    asks for more. Without them it is the op's own 'same' / 'valid'."""

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", output_padding=None,
                 data_format=None, dilation_rate=(1, 1), activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        _channels_last(data_format, self.name)
        self.filters = arguments.positive_int(self, "filters", filters)
        self.kernel_size = arguments.positive_ints(self, "kernel_size", kernel_size)
        self.strides = arguments.positive_ints(self, "strides", strides)
        self.padding = _padding(padding, self)
        self.dilation_rate = arguments.positive_ints(self, "dilation_rate", dilation_rate)
        self.output_padding = (None if output_padding is None else arguments.positive_ints(
            self, "output_padding", output_padding, allow_zero=True))
        if self.output_padding is not None and any(
                p >= s for p, s in zip(self.output_padding, self.strides)):
            raise ValueError(f"Conv2DTranspose '{self.name}': output_padding must be smaller "
                             f"than strides, got output_padding={self.output_padding}, "
                             f"strides={self.strides}")
        if self.dilation_rate != (1, 1) and self.strides != (1, 1):
            raise ValueError(f"Conv2DTranspose '{self.name}': strides > 1 with dilation_rate > 1 "
                             f"is not supported (Keras does not allow it either), got strides="
                             f"{self.strides}, dilation_rate={self.dilation_rate}")
        self.activation = arguments.activation(self, "activation", activation)
        self.use_bias = use_bias
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer

    def build(self, input_shape):
        _check_rank4(self, input_shape)
        if input_shape[-1] is None:
            raise ValueError(f"Conv2DTranspose '{self.name}': the channel axis must be known, "
                             f"got input shape {tuple(input_shape)}")
        self.kernel = self.add_weight(
            "kernel", self.kernel_size + (self.filters, input_shape[-1]), self.kernel_initializer)
        self.bias = (self.add_weight("bias", (self.filters,), self.bias_initializer)
                     if self.use_bias else None)

    def call(self, x):
        if x.ndim != 4 or x.shape[-1] != self.kernel.shape[3]:
            raise ValueError(f"Conv2DTranspose '{self.name}': built for NHWC inputs with "
                             f"{self.kernel.shape[3]} channels, got shape {tuple(x.shape)}")
        _check_float(self, x)
        activation = activations.get(self.activation)
        if self.output_padding is None and self.dilation_rate == (1, 1):
            fused = activation is activations.relu   # applied to each output chunk in cache
            y = ops.conv2d_transpose(x, self.kernel, self.bias, strides=self.strides,
                                     padding=self.padding, relu=fused)
            return y if fused else activation(y)
        return activation(self._cropped(x))

    def _cropped(self, x):
        kernel = self.kernel
        if self.dilation_rate != (1, 1):
            kernel = _dilate_kernel(kernel, self.dilation_rate)
        full = ops.conv2d_transpose(x, kernel, None, strides=self.strides, padding="valid")
        window, after = [], [(0, 0)]
        for axis in (0, 1):
            n, k, s, d = (x.shape[axis + 1], self.kernel_size[axis], self.strides[axis],
                          self.dilation_rate[axis])
            op = None if self.output_padding is None else self.output_padding[axis]
            start = deconv_output_start(k, self.padding, s, d, op)
            length = deconv_output_length(n, k, self.padding, s, d, op)
            window.append(slice(start, start + length))
            after.append((0, max(start + length - full.shape[axis + 1], 0)))
        y = full[:, window[0], window[1]]
        if any(a for _, a in after):
            y = ops.pad(y, after + [(0, 0)])
        return y if self.bias is None else y + self.bias

    def compute_output_shape(self, input_shape):
        _check_rank4(self, input_shape)
        n, h, w, _ = input_shape
        op = self.output_padding or (None, None)
        return (n,
                deconv_output_length(h, self.kernel_size[0], self.padding, self.strides[0],
                                     self.dilation_rate[0], op[0]),
                deconv_output_length(w, self.kernel_size[1], self.padding, self.strides[1],
                                     self.dilation_rate[1], op[1]),
                self.filters)


class _Pooling2D(Layer):
    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None,
                 **kwargs):
        super().__init__(**kwargs)
        _channels_last(data_format, self.name)
        self.pool_size = arguments.positive_ints(self, "pool_size", pool_size)
        self.strides = (self.pool_size if strides is None
                        else arguments.positive_ints(self, "strides", strides))
        self.padding = _padding(padding, self)

    def _check(self, x):
        _check_output_size(self, x.shape, self.compute_output_shape(x.shape))

    def compute_output_shape(self, input_shape):
        _check_rank4(self, input_shape)
        n, h, w, c = input_shape
        return (n, conv_output_length(h, self.pool_size[0], self.padding, self.strides[0]),
                conv_output_length(w, self.pool_size[1], self.padding, self.strides[1]), c)


class MaxPooling2D(_Pooling2D):
    """Max over each window; a padded cell is never chosen."""

    def call(self, x):
        self._check(x)
        return ops.max_pool2d(x, self.pool_size, strides=self.strides, padding=self.padding)


class AveragePooling2D(_Pooling2D):
    """Mean over each window's real cells ('same' padding does not count the pad)."""

    def call(self, x):
        self._check(x)
        return ops.avg_pool2d(x, self.pool_size, strides=self.strides, padding=self.padding)


class GlobalAveragePooling2D(Layer):
    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        _channels_last(data_format, self.name)
        self.keepdims = keepdims

    def call(self, x):
        _check_rank4(self, x.shape)
        return ops.global_avg_pool2d(x, keepdims=self.keepdims)

    def compute_output_shape(self, input_shape):
        _check_rank4(self, input_shape)
        n, _, _, c = input_shape
        return (n, 1, 1, c) if self.keepdims else (n, c)


# ---- UpSampling2D's resampling kernels -------------------------------------------------------
def _keys_cubic(d):
    """Keys's cubic convolution kernel with a = -0.5, the one TensorFlow's and JAX's bicubic
    resize use (PIL and Torch use a = -0.75)."""
    d = np.abs(d)
    near = (1.5 * d - 2.5) * d * d + 1
    far = ((-0.5 * d + 2.5) * d - 4) * d + 2
    return np.where(d < 1, near, np.where(d < 2, far, 0.0))


def _lanczos(radius):
    def kernel(d):
        return np.where(np.abs(d) < radius, np.sinc(d) * np.sinc(d / radius), 0.0)
    return kernel


_RESAMPLING_KERNELS = {"bicubic": _keys_cubic, "lanczos3": _lanczos(3), "lanczos5": _lanczos(5)}


def resampling_matrix(interpolation, n_out, n_in):
    """(n_out, n_in) float64 weights for one axis of a resize to n_out >= n_in pixels.

    bicubic, lanczos3, lanczos5: jax.image.resize's scale_and_translate (which Keras 3's NumPy
    and JAX backends call, and TensorFlow's resize matches): output pixel i samples the input
    at src = (i + 0.5) * n_in / n_out - 0.5 (half-pixel centres, as the bilinear resize), input
    pixel j weighs kernel(src - j), and the taps that fall outside the image are dropped and
    the rest renormalised to sum 1. (TensorFlow's bicubic kernel reads its weights from a
    1024-entry table, so it differs from this by up to about 1e-3.)
    area: TensorFlow's resize_area, each output pixel the mean of the input over its footprint
    [i, i + 1) * n_in / n_out; for UpSampling2D's whole factors that is nearest.
    """
    if interpolation == "area":
        low = np.arange(n_out)[:, None] * (n_in / n_out)
        j = np.arange(n_in)[None, :]
        overlap = np.clip(np.minimum(low + n_in / n_out, j + 1) - np.maximum(low, j), 0, None)
        return overlap / (n_in / n_out)
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    weights = _RESAMPLING_KERNELS[interpolation](src[:, None] - np.arange(n_in)[None, :])
    return weights / weights.sum(axis=1, keepdims=True)


def _resample(x, rows, cols):
    """rows (P, H) and cols (Q, W) applied to every image and channel of x (N, H, W, C): two
    products with constant matrices, so the gradient is the same products transposed."""
    N, H, W, C = x.shape
    P, Q = rows.shape[0], cols.shape[0]
    rows, cols = x.xp.asarray(rows, dtype=x.dtype), x.xp.asarray(cols, dtype=x.dtype)
    y = ops.matmul(rows, ops.reshape(x, (N, H, W * C)))                  # (N, P, W*C)
    y = ops.transpose(ops.reshape(y, (N, P, W, C)), (0, 2, 1, 3))        # (N, W, P, C)
    y = ops.matmul(cols, ops.reshape(y, (N, W, P * C)))                  # (N, Q, P*C)
    return ops.transpose(ops.reshape(y, (N, Q, P, C)), (0, 2, 1, 3))     # (N, P, Q, C)


class UpSampling2D(Layer):
    """Upsampling by whole factors `size`, as Keras 3 does it: "nearest" repeats each pixel
    size[0] x size[1] times; "bilinear" is the half-pixel bilinear resize (ops.resize_bilinear,
    tf.image.resize's convention); "bicubic", "lanczos3", "lanczos5" and "area" resize with
    those kernels (see resampling_matrix)."""

    INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos3", "lanczos5", "area")

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        super().__init__(**kwargs)
        _channels_last(data_format, self.name)
        self.interpolation = arguments.one_of(self, "interpolation", str(interpolation).lower(),
                                              self.INTERPOLATIONS)
        self.size = arguments.positive_ints(self, "size", size)

    def call(self, x):
        _check_rank4(self, x.shape)
        if self.interpolation == "nearest":
            return ops.upsample2d(x, size=self.size)
        _, h, w, _ = x.shape
        out_h, out_w = h * self.size[0], w * self.size[1]
        if self.interpolation == "bilinear":
            return ops.resize_bilinear(x, (out_h, out_w))
        return _resample(x, resampling_matrix(self.interpolation, out_h, h),
                         resampling_matrix(self.interpolation, out_w, w))

    def compute_output_shape(self, input_shape):
        _check_rank4(self, input_shape)
        n, h, w, c = input_shape
        return (n, None if h is None else h * self.size[0],
                None if w is None else w * self.size[1], c)
