"""The losses the chapter uses, with Keras's conventions.

Each returns the per-sample loss with reduction="none", their mean over the batch with "mean"
(Keras's default, "sum_over_batch_size") or their sum with "sum". Keras clips probabilities to
[1e-7, 1 - 1e-7] before taking logs; so do we, so that losses match Keras's to float precision.
The from-logits forms are fused ops whose gradient is simply softmax(z) - y (or sigmoid(z) - y).
"""
from .. import fastpath
from ..backend import get_array_module
from ..tensor import Function, Tensor
from . import elementwise as ew
from . import reduce as rd
from .softmax import log_softmax_array, softmax_array

EPSILON = 1e-7


def _reduce(per_sample, reduction):
    if reduction == "mean":
        return rd.mean(per_sample)
    if reduction == "sum":
        return rd.sum(per_sample)
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction={reduction!r}: expected 'mean', 'sum' or 'none'")


def _check_same_shape(name, y_true, y_pred):
    if tuple(y_true.shape) != tuple(y_pred.shape):
        raise ValueError(f"{name}: y_true shape {tuple(y_true.shape)} and y_pred shape "
                         f"{tuple(y_pred.shape)} differ")


class SoftmaxCrossEntropy(Function):
    """-sum(y * log_softmax(z)) over the last axis, per sample."""

    def forward(self, logits, target):
        self.target = target
        log_probs = log_softmax_array(logits)
        self.log_probs = log_probs
        return -(target * log_probs).sum(axis=-1)

    def backward(self, g):
        xp = get_array_module(g)
        probs = xp.exp(self.log_probs)
        # For a target row that sums to s, d/dz = s * softmax(z) - y.
        d = probs * self.target.sum(axis=-1, keepdims=True) - self.target
        return d * g[..., None], None


class SparseSoftmaxCrossEntropy(Function):
    """-log_softmax(z)[label] per sample; labels are integers over the last axis of z."""

    def forward(self, logits, labels=None):
        xp = get_array_module(logits)
        classes = logits.shape[-1]
        flat = logits.reshape(-1, classes)                            # (rows, classes)
        self.labels = labels.reshape(-1).astype(xp.int64)
        if self.labels.size and (int(self.labels.min()) < 0 or int(self.labels.max()) >= classes):
            raise ValueError(f"labels must lie in [0, {classes}), got "
                             f"[{int(self.labels.min())}, {int(self.labels.max())}]")
        self.logits, self.shape = flat, logits.shape
        fast = fastpath.lookup("sparse_softmax_cross_entropy_forward")
        result = NotImplemented if fast is None else fast(flat, self.labels)
        if result is not NotImplemented:
            loss, self.probs = result
            return loss.reshape(labels.shape)
        # For a language model these logits are the biggest array in the step: softmax is built
        # in one (rows, classes) buffer, which backward then turns into the gradient in place.
        peak = flat.max(axis=1, keepdims=True)                        # (rows, 1)
        probs = flat - peak
        xp.exp(probs, out=probs)
        total = probs.sum(axis=1, keepdims=True)                      # (rows, 1)
        probs /= total
        self.probs = probs
        rows = xp.arange(flat.shape[0])
        # log-sum-exp minus the picked logit: exact even where the picked probability underflows
        loss = xp.log(total[:, 0]) + peak[:, 0] - flat[rows, self.labels]
        return loss.reshape(labels.shape)

    def backward(self, g):
        xp = get_array_module(g)
        d = self.probs
        if d is None:  # a second backward through a retained graph: the buffer was used up
            d = softmax_array(self.logits, axis=-1)
        self.probs = None
        fast = fastpath.lookup("sparse_softmax_cross_entropy_backward")
        result = NotImplemented if fast is None else fast(d, self.labels, g)
        if result is not NotImplemented:
            return result.reshape(self.shape)
        d[xp.arange(d.shape[0]), self.labels] -= 1
        d *= g.reshape(-1, 1)
        return d.reshape(self.shape)


class SigmoidCrossEntropy(Function):
    """Elementwise binary cross-entropy from logits: max(z, 0) - z*y + log(1 + exp(-|z|))."""

    def forward(self, logits, target):
        xp = get_array_module(logits)
        self.logits, self.target = logits, target
        return xp.maximum(logits, 0) - logits * target + xp.log1p(xp.exp(-xp.abs(logits)))

    def backward(self, g):
        xp = get_array_module(g)
        return g * (ew.stable_sigmoid(xp, self.logits) - self.target), None


def categorical_crossentropy(y_true, y_pred, from_logits=False, reduction="mean"):
    """y_true one-hot (or soft) targets, y_pred probabilities (or logits) over the last axis."""
    _check_same_shape("categorical_crossentropy", y_true, y_pred)
    if from_logits:
        return _reduce(SoftmaxCrossEntropy.apply(y_pred, y_true), reduction)
    probs = ew.divide(y_pred, rd.sum(y_pred, axis=-1, keepdims=True))
    probs = ew.clip(probs, EPSILON, 1 - EPSILON)
    return _reduce(ew.negative(rd.sum(ew.multiply(y_true, ew.log(probs)), axis=-1)), reduction)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, reduction="mean"):
    """y_true integer class ids of shape y_pred.shape[:-1] (or that shape plus a trailing 1).

    From probabilities, as Keras 3 does: divide by their sum, clip to [1e-7, 1 - 1e-7], take logs.
    """
    y_pred = y_pred if isinstance(y_pred, Tensor) else Tensor(y_pred)
    xp = get_array_module(y_pred.data)
    labels = xp.asarray(y_true.data if isinstance(y_true, Tensor) else y_true)
    if labels.ndim == y_pred.ndim and labels.shape[-1:] == (1,):
        labels = labels[..., 0]
    if tuple(labels.shape) != tuple(y_pred.shape[:-1]):
        raise ValueError(f"sparse_categorical_crossentropy: y_true shape {tuple(labels.shape)} "
                         f"must be y_pred's shape without the class axis, {tuple(y_pred.shape[:-1])}")
    if labels.dtype.kind not in "iu":
        if labels.size and not xp.all(labels == xp.round(labels)):
            raise ValueError("sparse_categorical_crossentropy: y_true must hold integer class ids")
        labels = labels.astype(xp.int64)
    if from_logits:
        return _reduce(SparseSoftmaxCrossEntropy.apply(y_pred, labels=labels), reduction)
    probs = ew.divide(y_pred, rd.sum(y_pred, axis=-1, keepdims=True))
    probs = ew.clip(probs, EPSILON, 1 - EPSILON)
    picked = _take_last_axis(ew.log(probs), labels)
    return _reduce(ew.negative(picked), reduction)


def _take_last_axis(t, labels):
    from .shape import getitem
    xp = get_array_module(t.data)
    index = tuple(xp.indices(labels.shape, sparse=True)) + (labels.astype(xp.int64),)
    return getitem(t, index)


def binary_crossentropy(y_true, y_pred, from_logits=False, reduction="mean"):
    """Mean over the last axis of the elementwise cross-entropy, as keras.losses.binary_crossentropy."""
    _check_same_shape("binary_crossentropy", y_true, y_pred)
    if from_logits:
        elementwise = SigmoidCrossEntropy.apply(y_pred, y_true)
    else:
        elementwise = BinaryCrossEntropy.apply(y_pred, y_true)
    return _reduce(rd.mean(elementwise, axis=-1), reduction)


class BinaryCrossEntropy(Function):
    """Elementwise binary cross-entropy of probabilities, as Keras: p = clip(y_pred, 1e-7,
    1 - 1e-7), -(y log p + (1 - y) log(1 - p)). One op instead of the ten its formula makes of
    clip, log, multiply and add, with their backward calls: the VAE's loss over its 100K pixels,
    forward and backward with its sums, 2.19 -> 1.62 ms (bench/README.md, session 17)."""

    def forward(self, y_pred, y_true):
        xp = get_array_module(y_pred)
        self.p, self.y = xp.clip(y_pred, EPSILON, 1 - EPSILON), y_true
        # clip passes the gradient only where it left y_pred as it was (ends included)
        self.inside = (y_pred >= EPSILON) & (y_pred <= 1 - EPSILON)
        return -(y_true * xp.log(self.p) + (1 - y_true) * xp.log(1 - self.p))

    def backward(self, g):
        xp = get_array_module(g)
        p, y = self.p, self.y
        d_pred = (g * (-y / p + (1 - y) / (1 - p)) * self.inside
                  if self.needs_input_grad[0] else None)
        d_true = g * (xp.log(1 - p) - xp.log(p)) if self.needs_input_grad[1] else None
        return d_pred, d_true


def mean_squared_error(y_true, y_pred, reduction="mean"):
    _check_same_shape("mean_squared_error", y_true, y_pred)
    diff = ew.subtract(y_pred, y_true)
    return _reduce(rd.mean(ew.multiply(diff, diff), axis=-1), reduction)
