"""Keras's metrics: running values that `fit` resets at each epoch's start and reports in its logs.

    tracker = metrics.Mean(name="kl_loss")
    tracker.update_state(kl)         # a Tensor, an array or a number
    tracker.result()                 # the mean of every value given since the last reset_state()

Sums are kept as Python floats (float64), so a mean over thousands of steps does not drift and a
step's own value can be recovered from two consecutive means (callbacks.step_values does).
"""
import numpy as np

from .backend import to_numpy
from .tensor import Tensor


def _numpy(value):
    return np.asarray(to_numpy(value.data if isinstance(value, Tensor) else value))


class Metric:
    """update_state(...) accumulates, result() reads, reset_state() starts over."""

    def __init__(self, name=None):
        self.name = name or _snake(type(self).__name__)
        self.reset_state()

    def reset_state(self):
        self.total, self.count = 0.0, 0.0

    def result(self):
        return self.total / self.count if self.count else 0.0

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r} result={self.result():.6g}>"


def _snake(name):
    out = "".join("_" + c.lower() if c.isupper() else c for c in name)
    return out.lstrip("_")


class Mean(Metric):
    """The (weighted) mean of the values given: keras.metrics.Mean."""

    def update_state(self, values, sample_weight=None):
        values = _numpy(values).astype(np.float64)
        if sample_weight is None:
            self.total += float(values.sum())
            self.count += float(values.size)
        else:
            weights = np.broadcast_to(_numpy(sample_weight).astype(np.float64), values.shape)
            self.total += float((values * weights).sum())
            self.count += float(weights.sum())


class MeanMetricWrapper(Mean):
    """The mean over samples of fn(y_true, y_pred) -> one value per sample."""

    def __init__(self, fn, name=None):
        self.fn = fn
        super().__init__(name=name)

    def update_state(self, y_true, y_pred, sample_weight=None):
        super().update_state(self.fn(_numpy(y_true), _numpy(y_pred)), sample_weight)


def sparse_categorical_accuracy(y_true, y_pred):
    labels = y_true[..., 0] if y_true.ndim == y_pred.ndim else y_true
    return (y_pred.argmax(axis=-1) == labels).astype(np.float64)


def categorical_accuracy(y_true, y_pred):
    return (y_pred.argmax(axis=-1) == y_true.argmax(axis=-1)).astype(np.float64)


def binary_accuracy(y_true, y_pred, threshold=0.5):
    return ((y_pred > threshold) == (y_true > 0.5)).astype(np.float64).mean(axis=-1)


def accuracy(y_true, y_pred):
    return (y_true == y_pred).astype(np.float64)


class SparseCategoricalAccuracy(MeanMetricWrapper):
    def __init__(self, name="sparse_categorical_accuracy"):
        super().__init__(sparse_categorical_accuracy, name)


class CategoricalAccuracy(MeanMetricWrapper):
    def __init__(self, name="categorical_accuracy"):
        super().__init__(categorical_accuracy, name)


class BinaryAccuracy(MeanMetricWrapper):
    def __init__(self, name="binary_accuracy", threshold=0.5):
        super().__init__(lambda t, p: binary_accuracy(t, p, threshold), name)


class Accuracy(MeanMetricWrapper):
    def __init__(self, name="accuracy"):
        super().__init__(accuracy, name)


_BY_NAME = {
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "binary_accuracy": BinaryAccuracy,
}


def get(identifier, loss_name=None):
    """A Metric for a name, a Metric, or a function fn(y_true, y_pred) -> per-sample values.

    "accuracy" / "acc" picks the accuracy that fits the loss, as Keras does: sparse categorical for
    sparse_categorical_crossentropy, binary for binary_crossentropy, categorical otherwise."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, str):
        if identifier in ("accuracy", "acc"):
            kind = {"sparse_categorical_crossentropy": "sparse_categorical_accuracy",
                    "binary_crossentropy": "binary_accuracy"}.get(loss_name,
                                                                   "categorical_accuracy")
            metric = _BY_NAME[kind]()
            metric.name = identifier
            return metric
        if identifier in _BY_NAME:
            return _BY_NAME[identifier]()
        raise ValueError(f"unknown metric {identifier!r}; known: "
                         f"{['accuracy'] + sorted(_BY_NAME)}, a Metric, or a function")
    if callable(identifier):
        return MeanMetricWrapper(identifier, name=getattr(identifier, "__name__", None))
    raise TypeError(f"a metric must be a name, a Metric or a function, got "
                    f"{type(identifier).__name__}")


__all__ = ["Metric", "Mean", "MeanMetricWrapper", "Accuracy", "BinaryAccuracy",
           "CategoricalAccuracy", "SparseCategoricalAccuracy", "get"]
