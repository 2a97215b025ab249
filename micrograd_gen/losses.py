"""Keras's losses by name and as classes, for `model.compile(loss=...)` and a GAN's `loss_fn`.

    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy")
    loss_fn = losses.BinaryCrossentropy()          # loss_fn(y_true, y_pred) -> scalar Tensor

The arithmetic is in micrograd_gen.ops (ops/losses.py); this module only names it.
"""
from . import ops


# Keras's function forms return one value per sample (keras.losses.binary_crossentropy(y, p) is
# the mean over the last axis only); the Loss objects and compile(loss=name) take the batch mean.
def binary_crossentropy(y_true, y_pred, from_logits=False):
    return ops.binary_crossentropy(y_true, y_pred, from_logits=from_logits, reduction="none")


def categorical_crossentropy(y_true, y_pred, from_logits=False):
    return ops.categorical_crossentropy(y_true, y_pred, from_logits=from_logits, reduction="none")


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False):
    return ops.sparse_categorical_crossentropy(y_true, y_pred, from_logits=from_logits,
                                               reduction="none")


def mean_squared_error(y_true, y_pred):
    return ops.mean_squared_error(y_true, y_pred, reduction="none")


def mean_absolute_error(y_true, y_pred):
    return ops.mean(ops.abs(y_pred - y_true), axis=-1)


_FUNCTIONS = {f.__name__: f for f in (binary_crossentropy, categorical_crossentropy,
                                      sparse_categorical_crossentropy, mean_squared_error,
                                      mean_absolute_error)}
_ALIASES = {"mse": "mean_squared_error", "mae": "mean_absolute_error",
            "bce": "binary_crossentropy"}


class Loss:
    """A per-sample loss function with its settings bound; calling it gives the batch mean."""

    def __init__(self, fn, name, **settings):
        self.fn, self.name, self.settings = fn, name, settings

    def __call__(self, y_true, y_pred):
        return ops.mean(self.fn(y_true, y_pred, **self.settings))

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.settings.items())})"


class BinaryCrossentropy(Loss):
    def __init__(self, from_logits=False):
        super().__init__(binary_crossentropy, "binary_crossentropy", from_logits=from_logits)


class CategoricalCrossentropy(Loss):
    def __init__(self, from_logits=False):
        super().__init__(categorical_crossentropy, "categorical_crossentropy",
                         from_logits=from_logits)


class SparseCategoricalCrossentropy(Loss):
    def __init__(self, from_logits=False):
        super().__init__(sparse_categorical_crossentropy, "sparse_categorical_crossentropy",
                         from_logits=from_logits)


class MeanSquaredError(Loss):
    def __init__(self):
        super().__init__(mean_squared_error, "mean_squared_error")


def get(identifier):
    """A callable loss(y_true, y_pred) -> scalar for a Keras name, a Loss, or a function of the
    user's (which must return the scalar itself)."""
    if isinstance(identifier, str):
        name = _ALIASES.get(identifier, identifier)
        if name not in _FUNCTIONS:
            raise ValueError(f"unknown loss {identifier!r}; known: "
                             f"{sorted(_FUNCTIONS) + sorted(_ALIASES)}, or pass a function "
                             "loss(y_true, y_pred)")
        return Loss(_FUNCTIONS[name], name)
    if callable(identifier):
        return identifier
    raise TypeError(f"loss must be a name such as 'mse' or a function loss(y_true, y_pred), got "
                    f"{type(identifier).__name__}")


def name_of(loss):
    """The Keras name of a loss (None for a function of the user's)."""
    if isinstance(loss, Loss):
        return loss.name
    for name, fn in _FUNCTIONS.items():
        if loss is fn:
            return name
    return None


__all__ = ["Loss", "BinaryCrossentropy", "CategoricalCrossentropy", "SparseCategoricalCrossentropy",
           "MeanSquaredError", "binary_crossentropy", "categorical_crossentropy",
           "sparse_categorical_crossentropy", "mean_squared_error", "mean_absolute_error", "get",
           "name_of"]
