"""The basic layers: Dense, Activation, Flatten, Reshape, Dropout, Embedding, Concatenate, Add,
and the activation layers ReLU, LeakyReLU, ELU, PReLU, Softmax. Arguments, defaults and weight
layouts are Keras's."""
import math

from .. import fastpath, ops
from ..tensor import Tensor
from . import activations, arguments
from .base import Layer


class Dense(Layer):
    """y = activation(x @ kernel + bias) on the last axis of an input of any rank;
    kernel (in, units), bias (units,)."""

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.units = arguments.positive_int(self, "units", units)
        self.activation = arguments.activation(self, "activation", activation)
        self.use_bias = use_bias
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer

    def build(self, input_shape):
        if len(input_shape) == 0 or input_shape[-1] is None:
            raise ValueError(f"Dense '{self.name}' needs inputs with at least one axis whose last "
                             f"axis is known, got input shape {tuple(input_shape)}")
        self.kernel = self.add_weight("kernel", (input_shape[-1], self.units),
                                      self.kernel_initializer)
        self.bias = (self.add_weight("bias", (self.units,), self.bias_initializer)
                     if self.use_bias else None)

    def call(self, x):
        if x.ndim == 0 or x.shape[-1] != self.kernel.shape[0]:
            raise ValueError(f"Dense '{self.name}': built for inputs with last axis "
                             f"{self.kernel.shape[0]}, got input shape {tuple(x.shape)}")
        activation = activations.get(self.activation)
        if activation is activations.linear or activation is activations.softmax:
            # without gradients, one call on the arrays instead of three ops (accel/dense.py)
            fast = fastpath.lookup("dense")
            y = NotImplemented if fast is None else fast(
                x, self.kernel, self.bias, softmax=activation is activations.softmax)
            if y is not NotImplemented:
                return y
        # x @ kernel + bias as one op (ops.linalg.Affine): the bias lands on the product as it
        # is made, not in a second array as large
        return activation(ops.affine(x, self.kernel, self.bias))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)


class Activation(Layer):
    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = arguments.activation(self, "activation", activation)

    def call(self, x):
        return activations.get(self.activation)(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class LeakyReLU(Layer):
    """max(x, negative_slope * x). Keras 3 names the slope `negative_slope` (default 0.3);
    Keras 2's `alpha=` is accepted too."""

    def __init__(self, negative_slope=0.3, alpha=None, **kwargs):
        super().__init__(**kwargs)
        self.negative_slope = arguments.non_negative(
            self, "negative_slope", alpha if alpha is not None else negative_slope)

    def call(self, x):
        return ops.leaky_relu(x, self.negative_slope)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class ReLU(Layer):
    """Keras's ReLU layer: x above `threshold`, capped at `max_value` (None: no cap), and
    negative_slope * (x - threshold) at or below the threshold. All three must be >= 0."""

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        self.max_value = arguments.non_negative(self, "max_value", max_value, allow_none=True)
        self.negative_slope = arguments.non_negative(self, "negative_slope", negative_slope)
        self.threshold = arguments.non_negative(self, "threshold", threshold)

    def call(self, x):
        return activations.relu(x, negative_slope=self.negative_slope, max_value=self.max_value,
                                threshold=self.threshold)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class ELU(Layer):
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""

    def __init__(self, alpha=1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha = arguments.finite(self, "alpha", alpha)

    def call(self, x):
        return activations.elu(x, alpha=self.alpha)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class Softmax(Layer):
    """Softmax over `axis` (an int, or a list of axes normalised together). Called with
    mask=..., the masked positions (False, or <= 0.5) get the logit -1e9 first, as in Keras 3."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
        if not axes or any(isinstance(a, bool) or not isinstance(a, int) for a in axes):
            raise ValueError(f"Softmax '{self.name}': axis must be an int or a list of ints, "
                             f"got {axis!r}")
        self.axis = axis

    def call(self, x, mask=None):
        axes = list(self.axis) if isinstance(self.axis, (list, tuple)) else [self.axis]
        if any(not -x.ndim <= a < x.ndim for a in axes):
            raise ValueError(f"Softmax '{self.name}': axis {self.axis} is out of range for input "
                             f"shape {tuple(x.shape)}")
        if mask is not None:
            keep = mask.data if isinstance(mask, Tensor) else x.xp.asarray(mask)
            if keep.dtype != bool:
                keep = keep > 0.5
            x = ops.where(keep, x, -1e9)
        if len(axes) > 1:
            return ops.exp(x - ops.logsumexp(x, axis=tuple(axes), keepdims=True))
        return ops.softmax(x, axis=axes[0])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class PReLU(Layer):
    """max(x, 0) + alpha * min(x, 0) with a learned alpha shaped like the input without its batch
    axis, except that each axis in `shared_axes` (counted with the batch axis as 0, as in Keras)
    has size 1: PReLU(shared_axes=[1, 2]) after a convolution learns one slope per channel."""

    def __init__(self, alpha_initializer="zeros", shared_axes=None, **kwargs):
        super().__init__(**kwargs)
        self.alpha_initializer = alpha_initializer
        shared = [] if shared_axes is None else (
            list(shared_axes) if isinstance(shared_axes, (list, tuple)) else [shared_axes])
        if any(isinstance(a, bool) or not isinstance(a, int) or a < 1 for a in shared):
            raise ValueError(f"PReLU '{self.name}': shared_axes must be axes >= 1 (axis 0 is the "
                             f"batch), got {shared_axes!r}")
        self.shared_axes = shared or None

    def build(self, input_shape):
        shape = list(input_shape[1:])
        for a in self.shared_axes or []:
            if a >= len(input_shape):
                raise ValueError(f"PReLU '{self.name}': shared axis {a} is out of range for input "
                                 f"shape {tuple(input_shape)}")
            shape[a - 1] = 1
        if len(input_shape) < 2 or None in shape:
            raise ValueError(f"PReLU '{self.name}' needs a batch axis and known sizes on every "
                             f"axis it does not share, got input shape {tuple(input_shape)} "
                             f"with shared_axes={self.shared_axes}")
        self.alpha = self.add_weight("alpha", tuple(shape), self.alpha_initializer)

    def call(self, x):
        shared = self.shared_axes or []
        if x.ndim - 1 != self.alpha.ndim or any(
                a != d for i, (a, d) in enumerate(zip(self.alpha.shape, x.shape[1:]))
                if i + 1 not in shared):
            raise ValueError(f"PReLU '{self.name}': alpha of shape {self.alpha.shape} (shared "
                             f"axes {self.shared_axes}) does not fit input shape "
                             f"{tuple(x.shape)}")
        return ops.relu(x) - self.alpha * ops.relu(-x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class Flatten(Layer):
    """(N, ...) -> (N, prod(...)); NHWC order, as Keras flattens channels-last tensors."""

    def call(self, x):
        return ops.flatten(x)

    def compute_output_shape(self, input_shape):
        rest = input_shape[1:]
        return (input_shape[0], None if None in rest else math.prod(rest))


class Reshape(Layer):
    """Reshape everything but the batch axis to `target_shape` (one entry may be -1)."""

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        try:
            self.target_shape = tuple(int(d) for d in target_shape)
        except (TypeError, ValueError):
            raise ValueError(f"Reshape '{self.name}': target_shape must be a tuple of integers, "
                             f"got {target_shape!r}") from None
        if (sum(d == -1 for d in self.target_shape) > 1
                or any(d == 0 or d < -1 for d in self.target_shape)):
            raise ValueError(f"Reshape '{self.name}': target_shape takes positive sizes and at "
                             f"most one -1, got {self.target_shape}")

    def call(self, x):
        self._check(tuple(x.shape))
        return ops.reshape(x, (x.shape[0],) + self.target_shape)

    def _check(self, input_shape):
        size = math.prod(input_shape[1:])
        known = math.prod(d for d in self.target_shape if d != -1)
        if (-1 in self.target_shape and size % known) or (
                -1 not in self.target_shape and size != known):
            raise ValueError(f"Reshape '{self.name}': cannot reshape input of shape {input_shape} "
                             f"to (batch,) + {self.target_shape}")

    def compute_output_shape(self, input_shape):
        rest = input_shape[1:]
        if -1 not in self.target_shape:
            return (input_shape[0],) + self.target_shape
        if None in rest:
            return (input_shape[0],) + tuple(None if d == -1 else d for d in self.target_shape)
        self._check((1,) + tuple(rest))
        known = math.prod(d for d in self.target_shape if d != -1)
        return (input_shape[0],) + tuple(math.prod(rest) // known if d == -1 else d
                                         for d in self.target_shape)


class Dropout(Layer):
    """Inverted dropout in training mode, identity in inference mode (see base.py for modes).
    The mask comes from the layer's generator: its `seed`, or the module-level one."""

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.rate = arguments.rate(self, "rate", rate)

    def call(self, x, training=None):
        if not training or self.rate == 0:
            return x
        return ops.dropout(x, self.rate, training=True, rng=self._rng_for_layer())

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class Embedding(Layer):
    """Integer ids (any shape) -> rows of `embeddings` (input_dim, output_dim).

    `mask_zero=True` makes `compute_mask(ids)` return ids != 0; masks are not passed along
    automatically as in Keras, so a layer that needs one takes it as an argument."""

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", mask_zero=False,
                 input_length=None, **kwargs):
        super().__init__(**kwargs)
        self.input_dim = arguments.positive_int(self, "input_dim", input_dim)
        self.output_dim = arguments.positive_int(self, "output_dim", output_dim)
        self.embeddings_initializer = embeddings_initializer
        self.mask_zero = mask_zero
        if input_length is not None and self._batch_input_shape is None:
            self._batch_input_shape = (None, input_length)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight("embeddings", (self.input_dim, self.output_dim),
                                          self.embeddings_initializer)

    def call(self, ids):
        return ops.embedding(ids, self.embeddings)

    def compute_mask(self, ids):
        if not self.mask_zero:
            return None
        ids = ids.data if isinstance(ids, Tensor) else ids
        return ids != 0

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)


class Concatenate(Layer):
    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"Concatenate '{self.name}': axis must be an int, got {axis!r}")
        self.axis = axis

    def call(self, inputs):
        _check_list(self, inputs, 1)
        return ops.concatenate(list(inputs), axis=self.axis)

    def compute_output_shape(self, input_shapes):
        shapes = [tuple(s) for s in input_shapes]
        axis = self.axis % len(shapes[0])
        for s in shapes[1:]:
            if len(s) != len(shapes[0]) or any(
                    a != b and None not in (a, b)
                    for i, (a, b) in enumerate(zip(s, shapes[0])) if i != axis):
                raise ValueError(f"Concatenate '{self.name}': shapes {shapes} differ off axis "
                                 f"{self.axis}")
        sizes = [s[axis] for s in shapes]
        out = list(shapes[0])
        out[axis] = None if None in sizes else sum(sizes)
        return tuple(out)


class Add(Layer):
    """Elementwise sum of a list of tensors of the same shape."""

    def call(self, inputs):
        _check_list(self, inputs, 1)
        out = inputs[0]
        for x in inputs[1:]:
            out = out + x
        return out

    def compute_output_shape(self, input_shapes):
        shapes = [tuple(s) for s in input_shapes]
        if any(len(s) != len(shapes[0]) or any(a != b and None not in (a, b)
                                               for a, b in zip(s, shapes[0])) for s in shapes):
            raise ValueError(f"Add '{self.name}': inputs of different shapes {shapes}")
        # Take each axis from whichever input knows it.
        return tuple(next((d for d in axis if d is not None), None) for axis in zip(*shapes))


def _check_list(layer, inputs, minimum):
    if not isinstance(inputs, (list, tuple)) or len(inputs) < minimum:
        raise ValueError(f"{type(layer).__name__} '{layer.name}' is called on a list of tensors, "
                         f"got {type(inputs).__name__}")
