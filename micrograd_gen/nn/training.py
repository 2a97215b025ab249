"""Keras's training API on nn.Model: compile, fit, evaluate, predict, and the train_step /
test_step / predict_step that a subclass overrides (the book's VAE and GAN do).

    model.compile(optimizer=optim.RMSprop(learning_rate=0.01),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=128, epochs=3, callbacks=[...])
    history.history["loss"]          # one value per epoch

One step of `fit` is `train_step(data)`: the forward pass, the loss, `gradients(loss, weights)`
(the engine's `tape.gradient`: backward, then read each weight's .grad) and
`optimizer.apply_gradients`; it returns a dict of logs, the running means of the epoch so far.
Everything else (the progress bar, History, checkpoints, early stopping) is a callback
(micrograd_gen.callbacks), called with Keras's hook names.

Where this differs from Keras, and why:
- the loss tracker counts each step once (Keras weights each by its batch size), as the chapter's
  loops always did; the two differ only when the last batch of an epoch is smaller;
- arrays are shuffled, when `shuffle=True`, in an order drawn from (the model's seed, the epoch),
  so a run resumed at an epoch's start sees the same batches as an unbroken one;
- a model whose last layer is Dense(activation="softmax"), compiled with a categorical
  cross-entropy, is trained through the fused log-softmax + cross-entropy on the pre-softmax
  values (Keras does the same through `_keras_logits`): the same loss, without the clipping of
  the probabilities to [1e-7, 1 - 1e-7] and a (batch, classes) softmax backward.
"""
import math

import numpy as np

from .. import backend, losses, metrics as metrics_module, ops, optim
from ..tensor import Tensor, no_grad
from . import activations


def gradients(loss, variables):
    """d loss / d variable for each variable (None where the loss does not reach it): the engine's
    `tape.gradient(loss, variables)`. The variables' old gradients are cleared first, so gradients
    left on them by an earlier backward (the GAN's generator step reaches the discriminator's
    weights) never leak into this one."""
    variables = list(variables)
    for v in variables:
        v.grad = None
    loss.backward()
    return [v.grad for v in variables]


def softmax_logits(model, x, training=None):
    """The pre-softmax values of model(x), or None when the model cannot give them: a model with a
    `logits(x)` method (TransformerLM) is asked for them; a Sequential whose last layer is a Dense
    with activation="softmax" runs its other layers, then that Dense without the softmax."""
    if hasattr(model, "logits"):
        return model.logits(x)
    stack = getattr(model, "stack", None)
    if not stack or getattr(stack[-1], "activation", None) is not activations.softmax:
        return None
    dense = stack[-1]
    for layer in stack[:-1]:
        x = layer(x, training=training)
    if not dense.built:
        dense(x)  # builds from the shape; the value is not used
    y = ops.matmul(x, dense.kernel)
    return y + dense.bias if dense.bias is not None else y


# ---- data ----------------------------------------------------------------------------------------
def _is_array(x):
    return isinstance(x, np.ndarray) or backend._is_cupy_array(x)


def _map(fn, structure):
    if isinstance(structure, tuple):
        return tuple(_map(fn, s) for s in structure)
    if isinstance(structure, list):
        return [_map(fn, s) for s in structure]
    if isinstance(structure, dict):
        return {k: _map(fn, v) for k, v in structure.items()}
    return fn(structure)


def _flat(structure):
    if isinstance(structure, (list, tuple)):
        return [a for s in structure for a in _flat(s)]
    if isinstance(structure, dict):
        return [a for s in structure.values() for a in _flat(s)]
    return [structure]


def _is_arrays(x):
    """An array, or a list / tuple / dict of arrays (several inputs, as Keras reads them), rather
    than a data set (a list of (x, y) pairs is one)."""
    def leaf(a):
        return _is_array(a) or isinstance(a, Tensor)
    if isinstance(x, (list, tuple)):
        return bool(x) and all(leaf(a) for a in x)
    if isinstance(x, dict):
        return bool(x) and all(leaf(a) for a in x.values())
    return leaf(x)


def unpack_x_y(data):
    """(x, y) from a batch: a pair (x, y), or x alone (y is then None), as keras.utils does."""
    if isinstance(data, tuple) and len(data) in (1, 2):
        return data[0], (data[1] if len(data) == 2 else None)
    return data, None


class EpochBatches:
    """A data set for fit whose k-th pass yields `batches_for_epoch(first_epoch + k)`: for a loop
    that draws each epoch's order from (seed, epoch), so that a run resumed at epoch e sees the
    batches an unbroken run saw."""

    def __init__(self, batches_for_epoch, first_epoch=0, steps=None):
        self.batches_for_epoch, self.next_epoch, self.steps = batches_for_epoch, first_epoch, steps

    def __len__(self):
        if self.steps is None:
            raise TypeError("EpochBatches: length unknown (give steps=)")
        return self.steps

    def __iter__(self):
        self.next_epoch += 1
        return iter(self.batches_for_epoch(self.next_epoch - 1))


class _ArrayBatches:
    """Batches of arrays x (and y): all of them each epoch, in an order fixed by (seed, epoch)."""

    def __init__(self, x, y, batch_size, shuffle, seed):
        self.x, self.y, self.batch_size = x, y, int(batch_size)
        self.shuffle, self.seed = shuffle, seed
        self.n = len(_flat(x)[0])

    def count(self):
        return math.ceil(self.n / self.batch_size)

    def epoch(self, epoch):
        order = (np.random.default_rng([self.seed, epoch]).permutation(self.n) if self.shuffle
                 else np.arange(self.n))
        for start in range(0, self.n, self.batch_size):
            index = order[start:start + self.batch_size]
            if not self.shuffle:
                index = slice(start, start + self.batch_size)
            x = _map(lambda a: a[index], self.x)
            yield x if self.y is None else (x, _map(lambda a: a[index], self.y))


class _DatasetBatches:
    """An iterable of batches. Without steps_per_epoch each epoch is one pass (iter() again);
    with it the same iterator goes on across epochs and starts again when it runs out, as
    Keras 3's EpochIterator does."""

    def __init__(self, data, steps_per_epoch):
        self.data, self.steps_per_epoch = data, steps_per_epoch
        self._iterator = None

    def count(self):
        """Steps per epoch, or None when the data set does not say."""
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        try:
            return len(self.data)
        except TypeError:
            return None

    def epoch(self, epoch):
        if self.steps_per_epoch is None:
            yield from iter(self.data)
            return
        for _ in range(self.steps_per_epoch):
            if self._iterator is None:
                self._iterator = iter(self.data)
            try:
                yield next(self._iterator)
            except StopIteration:
                self._iterator = iter(self.data)
                try:
                    yield next(self._iterator)
                except StopIteration:
                    raise ValueError("fit: the data set gave no batches") from None


# ---- the mixin -----------------------------------------------------------------------------------
class Trainer:
    """compile / fit / evaluate / predict for nn.Model (mixed into it in nn/base.py)."""

    # Class-level defaults, so an uncompiled model (and a subclass's own compile) reads cleanly.
    optimizer = None
    loss = None
    stop_training = False
    history = None
    _compiled = False
    _loss_tracker = None
    _compiled_metrics = ()
    _train_counter = 0
    _shuffle_seed = None

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """optimizer: an instance (made without parameters, as in Keras: `optim.Adam(1e-3)`; this
        model's trainable weights are given to it now) or a name ("sgd", "rmsprop", "adam");
        loss: a Keras name ("mse", "binary_crossentropy", ...) or a function loss(y_true, y_pred);
        metrics: names ("accuracy") or Metric objects, reported beside the loss.
        A subclass with several optimisers (the book's GAN) calls super().compile() and keeps its
        own; fit then only needs its train_step."""
        if kwargs:
            raise TypeError(f"Model '{self.name}'.compile: unexpected arguments {sorted(kwargs)} "
                            "(takes optimizer, loss, metrics)")
        self.optimizer = optim.get(optimizer) if optimizer is not None else None
        if self.optimizer is not None and self.trainable_weights:
            self.optimizer.build(self.trainable_weights)
        self.loss = losses.get(loss) if loss is not None else None
        self._loss_tracker = metrics_module.Mean(name="loss") if loss is not None else None
        loss_name = losses.name_of(self.loss)
        self._compiled_metrics = [metrics_module.get(m, loss_name) for m in (metrics or [])]
        self._compiled = True

    # ---- what a train_step uses -----------------------------------------------------------------
    def compiled_loss(self, y_true, y_pred, sample_weight=None, regularization_losses=None):
        """The compiled loss of a batch (a scalar Tensor); it also feeds the "loss" tracker, as
        Keras 2's compiled_loss does."""
        loss = self.compute_loss(y=y_true, y_pred=y_pred, sample_weight=sample_weight)
        self._loss_tracker.update_state(loss)
        return loss

    @property
    def compiled_metrics(self):
        """Keras 2's container: compiled_metrics.update_state(y_true, y_pred)."""
        return _CompiledMetrics(self._compiled_metrics)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        """Keras 3's compute_loss: the compiled loss of (y, y_pred), a scalar Tensor."""
        if self.loss is None:
            raise ValueError(f"Model '{self.name}': no loss to compute; give compile(loss=...) or "
                             "override train_step")
        if sample_weight is not None:
            raise NotImplementedError(f"Model '{self.name}': sample_weight is not supported")
        return self.loss(y, y_pred)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Update the compiled metrics with this batch; return every metric's result by name."""
        for m in self._compiled_metrics:
            m.update_state(y, y_pred, sample_weight)
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        """The loss tracker, the compiled metrics, then every Metric assigned to an attribute
        (the book's VAE and GAN override this with their own list)."""
        out = ([self._loss_tracker] if self._loss_tracker is not None else [])
        out += list(self._compiled_metrics)
        out += [v for v in vars(self).values() if isinstance(v, metrics_module.Metric)
                and all(v is not m for m in out)]
        return out

    @property
    def metrics_names(self):
        return [m.name for m in self.metrics]

    def reset_metrics(self):
        for m in self.metrics:
            m.reset_state()

    def _fused_softmax(self):
        """True when the loss is a categorical cross-entropy on probabilities, which can be taken
        on the logits of a softmax output instead (see the module notes)."""
        name = losses.name_of(self.loss)
        settings = getattr(self.loss, "settings", {})
        return (name in ("categorical_crossentropy", "sparse_categorical_crossentropy")
                and not settings.get("from_logits", False))

    def _forward_and_loss(self, x, y, training):
        if self._fused_softmax():
            logits = softmax_logits(self, x, training=training)
            if logits is not None:
                fn = getattr(self.loss, "fn", self.loss)
                loss = ops.mean(fn(y, logits, from_logits=True))
                if not self._compiled_metrics:
                    return logits, loss   # nothing reads y_pred
                with no_grad():
                    return ops.softmax(logits), loss
        y_pred = self(x, training=training)
        return y_pred, self.compute_loss(x, y, y_pred)

    # ---- the overridable steps ------------------------------------------------------------------
    def train_step(self, data):
        """One batch: forward, loss, gradients, one optimiser update. Returns the logs."""
        if self.optimizer is None:
            raise ValueError(f"Model '{self.name}': no optimizer; give compile(optimizer=...) or "
                             "override train_step")
        x, y = unpack_x_y(data)
        y_pred, loss = self._forward_and_loss(x, y, training=True)
        weights = self.trainable_weights
        grads = gradients(loss, weights)
        self.optimizer.apply_gradients(zip(grads, weights))
        self._loss_tracker.update_state(loss)
        return self.compute_metrics(x, y, y_pred)

    def test_step(self, data):
        """One batch without updates: forward (inference mode), loss, metrics."""
        x, y = unpack_x_y(data)
        y_pred, loss = self._forward_and_loss(x, y, training=False)
        if self._loss_tracker is not None:
            self._loss_tracker.update_state(loss)
        return self.compute_metrics(x, y, y_pred)

    def predict_step(self, data):
        x, _ = unpack_x_y(data)
        return self(x, training=False)

    # ---- checks and data ------------------------------------------------------------------------
    def _expected_input_shape(self):
        shape = getattr(self, "_input_batch_shape", None)
        if shape is None and getattr(self, "_graph", None) is not None:
            inputs = self._graph[0]
            if not isinstance(inputs, (list, tuple, dict)):
                shape = inputs.shape
        return None if shape is None else tuple(shape)

    def _check_arrays(self, caller, x, y):
        n = {len(a) for a in _flat(x)}
        if len(n) > 1:
            raise ValueError(f"{caller}: the input arrays have different lengths {sorted(n)}")
        n = n.pop()
        if n == 0:
            raise ValueError(f"{caller}: x holds no samples")
        if y is not None:
            if not _is_arrays(y):
                raise TypeError(f"{caller}: y must be an array when x is one, got "
                                f"{type(y).__name__}")
            n_y = {len(a) for a in _flat(y)}
            if n_y != {n}:
                raise ValueError(f"{caller}: x has {n} samples but y has {sorted(n_y)[0]}; "
                                 "they must match one for one")
        expected = self._expected_input_shape()
        if expected is not None and _is_array(x):
            if x.ndim != len(expected) or any(e is not None and e != g
                                              for e, g in zip(expected[1:], x.shape[1:])):
                raise ValueError(f"{caller}: model '{self.name}' expects input of shape {expected} "
                                 f"(rank {len(expected)}), x has shape {tuple(x.shape)}")

    def _data(self, caller, x, y, batch_size, shuffle, steps):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"{caller}: batch_size must be a positive integer, got {batch_size!r}")
        if steps is not None and (not isinstance(steps, (int, np.integer)) or steps < 1):
            raise ValueError(f"{caller}: steps must be a positive integer, got {steps!r}")
        if x is None:
            raise ValueError(f"{caller}: x is None; give arrays or a data set of batches")
        if _is_arrays(x):
            self._check_arrays(caller, x, y)
            if self._shuffle_seed is None:
                self._shuffle_seed = int(self._rng_for_layer().integers(2**62))
            batches = _ArrayBatches(x, y, batch_size, shuffle, self._shuffle_seed)
            if steps is not None:
                batches = _DatasetBatches(_Looped(batches), steps)
            return batches
        if y is not None:
            raise ValueError(f"{caller}: y must be None when x is a data set of batches (it "
                             "yields (x, y) pairs itself)")
        if not hasattr(x, "__iter__"):
            raise TypeError(f"{caller}: x must be an array or an iterable of batches, got "
                            f"{type(x).__name__}")
        return _DatasetBatches(x, steps)

    def _device(self):
        weights = self.weights
        return weights[0].device if weights else backend.default_name()

    def _to_tensors(self, batch, device):
        def convert(a):
            if _is_array(a):
                if a.dtype == bool:   # the first edition's one-hot arrays are np.bool
                    a = a.astype(np.float32)
                return Tensor(backend.to_module(a, device))
            return a
        return _map(convert, batch)

    # ---- fit / evaluate / predict ---------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=32, epochs=1, verbose=1, callbacks=None,
            validation_data=None, shuffle=True, initial_epoch=0, steps_per_epoch=None):
        """Train for `epochs` epochs (counted from 0, starting at `initial_epoch`, as Keras does).

        x: an array (or list of arrays) with y the targets, or an iterable of batches ((x, y)
        pairs, or x alone for a train_step that needs no targets), iterated once per epoch.
        Returns the History callback; `history.history` maps each logged name to its per-epoch
        values. verbose: 0 silent, 1 a progress line (step, metrics, time per step), 2 one line
        per epoch."""
        from .. import callbacks as callbacks_module
        if not self._compiled:
            raise RuntimeError(f"Model '{self.name}': call compile() before fit()")
        verbose = 1 if verbose == "auto" else verbose
        if not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"fit: epochs must be a non-negative integer, got {epochs!r}")
        if not 0 <= initial_epoch <= epochs:
            raise ValueError(f"fit: initial_epoch={initial_epoch} must be between 0 and "
                             f"epochs={epochs}")
        data = self._data("fit", x, y, batch_size, shuffle, steps_per_epoch)
        if validation_data is not None:
            vx, vy = (validation_data if isinstance(validation_data, tuple)
                      and len(validation_data) == 2 else (validation_data, None))
            validation = self._data("fit (validation_data)", vx, vy, batch_size, False, None)
        if self.optimizer is not None and self.trainable_weights:
            self.optimizer.build(self.trainable_weights)   # weights built since compile()
        steps = data.count()
        callback_list = callbacks_module.CallbackList(
            callbacks, add_history=True, add_progbar=verbose != 0, model=self, verbose=verbose,
            epochs=epochs, steps=steps)
        self.stop_training = False
        device = self._device()
        callback_list.on_train_begin()
        logs = {}
        for epoch in range(initial_epoch, epochs):
            self.reset_metrics()
            callback_list.on_epoch_begin(epoch)
            batch_logs, step = None, -1
            for step, batch in enumerate(data.epoch(epoch)):
                callback_list.on_train_batch_begin(step)
                batch_logs = _as_floats(self.train_step(self._to_tensors(batch, device)))
                self._train_counter += 1
                callback_list.on_train_batch_end(step, logs=batch_logs)
                if self.stop_training:
                    break
            if batch_logs is None:
                raise ValueError(f"fit: the data gave no batches in epoch {epoch + 1}")
            logs = dict(batch_logs)
            if validation_data is not None:
                val_logs = self._evaluate_batches(validation, callback_list, device)
                logs.update({f"val_{k}": v for k, v in val_logs.items()})
            callback_list.on_epoch_end(epoch, logs=logs)
            if self.stop_training:
                break
        callback_list.on_train_end(logs=logs)
        return self.history

    def _evaluate_batches(self, data, callback_list, device):
        self.reset_metrics()
        callback_list.on_test_begin()
        logs = {}
        with no_grad():
            for step, batch in enumerate(data.epoch(0)):
                callback_list.on_test_batch_begin(step)
                logs = _as_floats(self.test_step(self._to_tensors(batch, device)))
                callback_list.on_test_batch_end(step, logs=logs)
        callback_list.on_test_end(logs=logs)
        return logs

    def evaluate(self, x=None, y=None, batch_size=32, verbose=0, steps=None, callbacks=None,
                 return_dict=False):
        """The loss (and metrics) over the data, in inference mode, without updates: a float when
        only the loss is tracked, else a list in `metrics_names` order (a dict with
        return_dict=True)."""
        from .. import callbacks as callbacks_module
        if not self._compiled:
            raise RuntimeError(f"Model '{self.name}': call compile() before evaluate()")
        data = self._data("evaluate", x, y, batch_size, False, steps)
        callback_list = callbacks_module.CallbackList(callbacks, model=self, verbose=verbose,
                                                      steps=data.count())
        logs = self._evaluate_batches(data, callback_list, self._device())
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=32, verbose=0, steps=None, callbacks=None):
        """The outputs on x as NumPy arrays (a list / tuple of them for several outputs)."""
        from .. import callbacks as callbacks_module
        data = self._data("predict", x, None, batch_size, False, steps)
        callback_list = callbacks_module.CallbackList(callbacks, model=self, verbose=verbose)
        callback_list.on_predict_begin()
        outputs = []
        device = self._device()
        with no_grad():
            for step, batch in enumerate(data.epoch(0)):
                callback_list.on_predict_batch_begin(step)
                out = self.predict_step(self._to_tensors(batch, device))
                outputs.append(_map(lambda t: backend.to_numpy(t.data) if isinstance(t, Tensor)
                                    else t, out))
                callback_list.on_predict_batch_end(step, logs={"outputs": outputs[-1]})
        callback_list.on_predict_end()
        if not outputs:
            raise ValueError("predict: the data gave no batches")
        first = outputs[0]
        if isinstance(first, (list, tuple)):
            return type(first)(np.concatenate([o[i] for o in outputs]) for i in range(len(first)))
        return np.concatenate(outputs)


class _CompiledMetrics:
    def __init__(self, metrics):
        self.metrics = list(metrics)

    def update_state(self, y_true, y_pred, sample_weight=None):
        for m in self.metrics:
            m.update_state(y_true, y_pred, sample_weight)


class _Looped:
    """Arrays batched as one pass per iter(), for steps_per_epoch on arrays."""

    def __init__(self, batches):
        self.batches, self.epoch = batches, 0

    def __iter__(self):
        self.epoch += 1
        return self.batches.epoch(self.epoch - 1)


def _as_floats(logs):
    """train_step's logs with Tensors and NumPy scalars as Python floats."""
    if not isinstance(logs, dict):
        raise TypeError(f"train_step / test_step must return a dict of logs, got "
                        f"{type(logs).__name__}")
    out = {}
    for k, v in logs.items():
        if isinstance(v, Tensor):
            v = v.item()
        if isinstance(v, (np.generic, np.ndarray)) and np.size(v) == 1:
            v = float(v)
        out[k] = v
    return out
