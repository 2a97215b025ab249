"""Convolution, pooling and upsampling layers (NHWC, Keras's layouts and padding rules, see
../shared/KERAS.md): Conv2D, Conv2DTranspose, MaxPooling2D, AveragePooling2D,
GlobalAveragePooling2D, UpSampling2D."""
from .. import ops
from . import activations
from .base import Layer


def _pair(value, what, layer_name):
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"layer '{layer_name}': {what} must be an int or a pair, got {value}")
    return value


def _padding(value, layer_name):
    value = value.lower()
    if value not in ("valid", "same"):
        raise ValueError(f"layer '{layer_name}': padding must be 'valid' or 'same', got {value!r}")
    return value


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


def deconv_output_length(n, k, padding, stride):
    """Conv2DTranspose: n * s for 'same'; n * s + max(k - s, 0) for 'valid'."""
    if n is None:
        return None
    return n * stride if padding == "same" else n * stride + max(k - stride, 0)


def _check_rank4(layer, shape):
    if len(shape) != 4:
        raise ValueError(f"{type(layer).__name__} '{layer.name}' expects NHWC inputs of rank 4, "
                         f"got shape {tuple(shape)}")


class Conv2D(Layer):
    """kernel (kh, kw, in, filters), bias (filters,); cross-correlation as Keras."""

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        _channels_last(data_format, self.name)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size", self.name)
        self.strides = _pair(strides, "strides", self.name)
        self.padding = _padding(padding, self.name)
        self.dilation_rate = _pair(dilation_rate, "dilation_rate", self.name)
        if self.dilation_rate != (1, 1) and self.strides != (1, 1):
            raise ValueError(f"Conv2D '{self.name}': strides > 1 with dilation_rate > 1 is not "
                             "supported (Keras does not allow it either)")
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer

    def build(self, input_shape):
        _check_rank4(self, input_shape)
        if input_shape[-1] is None:
            raise ValueError(f"Conv2D '{self.name}': the channel axis must be known, got input "
                             f"shape {tuple(input_shape)}")
        self.kernel = self.add_weight(
            "kernel", self.kernel_size + (input_shape[-1], self.filters), self.kernel_initializer)
        self.bias = (self.add_weight("bias", (self.filters,), self.bias_initializer)
                     if self.use_bias else None)

    def call(self, x):
        if self.activation is activations.relu:   # fused: applied to each output chunk in cache
            return ops.conv2d(x, self.kernel, self.bias, strides=self.strides,
                              padding=self.padding, dilation_rate=self.dilation_rate, relu=True)
        y = ops.conv2d(x, self.kernel, self.bias, strides=self.strides, padding=self.padding,
                       dilation_rate=self.dilation_rate)
        return self.activation(y)

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
    """kernel (kh, kw, filters, in): out and in swapped relative to Conv2D, as Keras stores it."""

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", output_padding=None, dilation_rate=(1, 1), **kwargs):
        super().__init__(**kwargs)
        _channels_last(data_format, self.name)
        if output_padding is not None or _pair(dilation_rate, "dilation_rate", self.name) != (1, 1):
            raise ValueError(f"Conv2DTranspose '{self.name}': output_padding and dilation_rate "
                             "are not supported")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size", self.name)
        self.strides = _pair(strides, "strides", self.name)
        self.padding = _padding(padding, self.name)
        self.activation = activations.get(activation)
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
        y = ops.conv2d_transpose(x, self.kernel, self.bias, strides=self.strides,
                                 padding=self.padding)
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        _check_rank4(self, input_shape)
        n, h, w, _ = input_shape
        return (n,
                deconv_output_length(h, self.kernel_size[0], self.padding, self.strides[0]),
                deconv_output_length(w, self.kernel_size[1], self.padding, self.strides[1]),
                self.filters)


class _Pooling2D(Layer):
    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None,
                 **kwargs):
        super().__init__(**kwargs)
        _channels_last(data_format, self.name)
        self.pool_size = _pair(pool_size, "pool_size", self.name)
        self.strides = self.pool_size if strides is None else _pair(strides, "strides", self.name)
        self.padding = _padding(padding, self.name)

    def compute_output_shape(self, input_shape):
        _check_rank4(self, input_shape)
        n, h, w, c = input_shape
        return (n, conv_output_length(h, self.pool_size[0], self.padding, self.strides[0]),
                conv_output_length(w, self.pool_size[1], self.padding, self.strides[1]), c)


class MaxPooling2D(_Pooling2D):
    """Max over each window; a padded cell is never chosen."""

    def call(self, x):
        return ops.max_pool2d(x, self.pool_size, strides=self.strides, padding=self.padding)


class AveragePooling2D(_Pooling2D):
    """Mean over each window's real cells ('same' padding does not count the pad)."""

    def call(self, x):
        return ops.avg_pool2d(x, self.pool_size, strides=self.strides, padding=self.padding)


class GlobalAveragePooling2D(Layer):
    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        _channels_last(data_format, self.name)
        self.keepdims = keepdims

    def call(self, x):
        return ops.global_avg_pool2d(x, keepdims=self.keepdims)

    def compute_output_shape(self, input_shape):
        _check_rank4(self, input_shape)
        n, _, _, c = input_shape
        return (n, 1, 1, c) if self.keepdims else (n, c)


class UpSampling2D(Layer):
    """Nearest-neighbour upsampling: each pixel repeated size[0] x size[1] times."""

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        super().__init__(**kwargs)
        _channels_last(data_format, self.name)
        if interpolation != "nearest":
            raise ValueError(f"UpSampling2D '{self.name}': only interpolation='nearest' is "
                             f"supported, got {interpolation!r}")
        self.size = _pair(size, "size", self.name)

    def call(self, x):
        return ops.upsample2d(x, size=self.size)

    def compute_output_shape(self, input_shape):
        _check_rank4(self, input_shape)
        n, h, w, c = input_shape
        return (n, None if h is None else h * self.size[0],
                None if w is None else w * self.size[1], c)

