"""LayerNormalization and BatchNormalization with Keras's weights, order and defaults
(epsilon 1e-3; BatchNormalization momentum 0.99, weights [gamma, beta, moving_mean,
moving_variance] with gamma or beta left out under scale=False / center=False)."""
from .. import ops
from . import arguments
from .base import Layer


def _axis_size(layer, input_shape, axis):
    if not -len(input_shape) <= axis < len(input_shape):
        raise ValueError(f"{type(layer).__name__} '{layer.name}': axis {axis} is out of range for "
                         f"input shape {tuple(input_shape)}")
    size = input_shape[axis]
    if size is None:
        raise ValueError(f"{type(layer).__name__} '{layer.name}': the size of axis {axis} must be "
                         f"known, got input shape {tuple(input_shape)}")
    return size


class LayerNormalization(Layer):
    """Normalise each position over its last axis (biased variance), then gamma * x + beta."""

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"LayerNormalization '{self.name}': axis must be an int, got {axis!r}")
        self.axis, self.center, self.scale = axis, center, scale
        self.epsilon = arguments.positive(self, "epsilon", epsilon)
        self.beta_initializer, self.gamma_initializer = beta_initializer, gamma_initializer

    def build(self, input_shape):
        if self.axis % len(input_shape) != len(input_shape) - 1:
            raise ValueError(f"LayerNormalization '{self.name}': only the last axis is supported, "
                             f"got axis={self.axis} for input shape {tuple(input_shape)}")
        channels = _axis_size(self, input_shape, self.axis)
        self.gamma = (self.add_weight("gamma", (channels,), self.gamma_initializer)
                      if self.scale else None)
        self.beta = (self.add_weight("beta", (channels,), self.beta_initializer)
                     if self.center else None)

    def call(self, x):
        return ops.layer_norm(x, self.gamma, self.beta, epsilon=self.epsilon)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class BatchNormalization(Layer):
    """Training mode: normalise with the batch's statistics and move moving_mean/moving_variance
    toward them (momentum 0.99, biased variance, as Keras 3). Inference mode: use the moving
    statistics. A frozen layer (trainable=False) always runs in inference mode, as in Keras 3."""

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"BatchNormalization '{self.name}': axis must be an int, got "
                             f"{axis!r}")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not (
                0 <= momentum <= 1):
            raise ValueError(f"BatchNormalization '{self.name}': momentum must be in [0, 1], got "
                             f"{momentum!r}")
        self.axis, self.momentum = axis, float(momentum)
        self.epsilon = arguments.positive(self, "epsilon", epsilon)
        self.center, self.scale = center, scale
        self.beta_initializer, self.gamma_initializer = beta_initializer, gamma_initializer
        self.moving_mean_initializer = moving_mean_initializer
        self.moving_variance_initializer = moving_variance_initializer

    def build(self, input_shape):
        channels = _axis_size(self, input_shape, self.axis)
        self.gamma = (self.add_weight("gamma", (channels,), self.gamma_initializer)
                      if self.scale else None)
        self.beta = (self.add_weight("beta", (channels,), self.beta_initializer)
                     if self.center else None)
        self.moving_mean = self.add_weight("moving_mean", (channels,),
                                           self.moving_mean_initializer, trainable=False)
        self.moving_variance = self.add_weight("moving_variance", (channels,),
                                               self.moving_variance_initializer, trainable=False)

    def call(self, x, training=None):
        return ops.batch_norm(x, self.gamma, self.beta, self.moving_mean, self.moving_variance,
                              training=bool(training) and self.trainable, momentum=self.momentum,
                              epsilon=self.epsilon, axis=self.axis)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)
