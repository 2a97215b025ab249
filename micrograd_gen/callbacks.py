"""Keras's callbacks: objects whose hooks `fit` calls at the start and end of training, of each
epoch and of each batch.

    class GANMonitor(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            save_image_grid(f"epoch_{epoch:03d}.png", self.model.generator(z).numpy())

    model.fit(x, epochs=30, callbacks=[GANMonitor(), callbacks.ModelCheckpoint("run.h5"),
                                       callbacks.TerminateOnNaN()])

Every callback sees `self.model` (set_model) and `self.params` ({"epochs", "steps", "verbose"}).
Logs are dicts of floats: at a batch's end, the running means of the epoch so far (what the
progress line shows); at an epoch's end, the epoch's values plus val_* ones.

A callback that raises stops training with a CallbackError naming the callback and the hook; the
one exception is NonFiniteLossError (TerminateOnNaN's), which is the message itself.
"""
import csv
import io
import json
import math
import time
from pathlib import Path

import numpy as np

from .backend import to_numpy
from .download import atomic_write
from .progress import Progress

HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
         "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
         "on_test_batch_begin", "on_test_batch_end", "on_predict_begin", "on_predict_end",
         "on_predict_batch_begin", "on_predict_batch_end")


class CallbackError(RuntimeError):
    """A callback raised; the message names it, the hook, and what it raised."""


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; TerminateOnNaN stopped training at that step."""


class Callback:
    """The base: every hook does nothing. on_train_batch_begin/end call Keras 2's
    on_batch_begin/end, so either name works."""

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_batch_begin(self, batch, logs=None): pass
    def on_batch_end(self, batch, logs=None): pass
    def on_train_batch_begin(self, batch, logs=None): self.on_batch_begin(batch, logs)
    def on_train_batch_end(self, batch, logs=None): self.on_batch_end(batch, logs)
    def on_test_begin(self, logs=None): pass
    def on_test_end(self, logs=None): pass
    def on_test_batch_begin(self, batch, logs=None): pass
    def on_test_batch_end(self, batch, logs=None): pass
    def on_predict_begin(self, logs=None): pass
    def on_predict_end(self, logs=None): pass
    def on_predict_batch_begin(self, batch, logs=None): pass
    def on_predict_batch_end(self, batch, logs=None): pass


class CallbackList:
    """Calls each hook on every callback, in order: `callback_list.on_epoch_end(epoch, logs=logs)`
    calls on_epoch_end on each (any name in HOOKS works so). fit adds a History (and, for
    verbose, a ProgbarLogger) unless one is in the list already. Objects that are not Callbacks
    but have some hook methods (an older TextGenerator) are called for the hooks they have."""

    def __init__(self, callbacks=None, add_history=False, add_progbar=False, model=None,
                 **params):
        self.callbacks = list(callbacks or [])
        for cb in self.callbacks:
            if not any(callable(getattr(cb, hook, None)) for hook in HOOKS):
                raise TypeError(f"callbacks: {cb!r} ({type(cb).__name__}) has none of the "
                                f"callback hooks ({', '.join(HOOKS[:4])}, ...)")
        if add_progbar and not any(isinstance(cb, ProgbarLogger) for cb in self.callbacks):
            self.callbacks.insert(0, ProgbarLogger(verbose=params.get("verbose", 1)))
        if add_history:
            history = next((cb for cb in self.callbacks if isinstance(cb, History)), None)
            if history is None:
                self.callbacks.append(History())
        self.params = params
        for cb in self.callbacks:
            if hasattr(cb, "set_params"):
                cb.set_params(params)
            if model is not None:
                if hasattr(cb, "set_model"):
                    cb.set_model(model)
                else:
                    cb.model = model

    def _call(self, hook, args, logs):
        # Keras passes logs positionally to every hook, so a LambdaCallback's
        # lambda batch, logs: ... and lambda logs: ... both fit.
        for cb in self.callbacks:
            method = getattr(cb, hook, None)
            if method is None:
                continue
            try:
                method(*args, logs)
            except NonFiniteLossError:
                raise
            except Exception as e:
                raise CallbackError(f"callback {type(cb).__name__} raised in {hook}: "
                                    f"{type(e).__name__}: {e}") from e

    def __getattr__(self, hook):
        if hook not in HOOKS:
            raise AttributeError(hook)
        return lambda *args, logs=None: self._call(hook, args, {} if logs is None else logs)


# ---- History, progress, CSV ----------------------------------------------------------------------
class History(Callback):
    """history[name] is the list of that log's value at each epoch's end; epoch the epoch numbers.
    fit returns it, and sets it as model.history."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []
        self.model.history = self

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


def _format_logs(logs):
    return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in logs.items())


class ProgbarLogger(Callback):
    """The default verbose output. verbose=1: a progress line at most every second within each
    epoch (step k/N, the running metrics, seconds per step, ETA) and a closing line per epoch;
    verbose=2: the closing line only. Lines go to `log(line)` (default: stderr)."""

    def __init__(self, verbose=1, log=None, label=""):
        super().__init__()
        self.verbose, self.log, self.label = verbose, log, label

    def _emit(self, line):
        if self.log is None:
            import sys
            print(line, file=sys.stderr, flush=True)
        else:
            self.log(line)

    def on_epoch_begin(self, epoch, logs=None):
        epochs = self.params.get("epochs")
        self.title = f"{self.label}epoch {epoch + 1}/{epochs}" if epochs else f"epoch {epoch + 1}"
        self.started, self.steps_done = time.perf_counter(), 0
        self.bar = None
        if self.verbose == 1:
            self.bar = Progress(total=self.params.get("steps"), label=self.title,
                                stream=_LineStream(self._emit))

    def on_train_batch_end(self, batch, logs=None):
        self.steps_done = batch + 1
        if self.bar is not None:
            self.bar.update(batch + 1, **{k: v for k, v in (logs or {}).items()
                                          if isinstance(v, (int, float))})

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.started
        self._emit(f"{self.title}: {_format_logs(logs or {})}  ({self.steps_done} steps, "
                   f"{seconds:.0f} s)")


class _LineStream:
    """A file-like object that hands each printed line to a function."""

    def __init__(self, emit):
        self.emit = emit

    def write(self, text):
        text = text.rstrip("\n")
        if text:
            self.emit(text)

    def flush(self):
        pass


class CSVLogger(Callback):
    """One row per epoch (epoch, then the logs) in a CSV file, rewritten atomically at each
    epoch's end; append=True keeps the rows of a file already there (a resumed run)."""

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename, self.separator, self.append = Path(filename), separator, append
        self.rows = None

    def on_train_begin(self, logs=None):
        self.rows = []
        if self.append and self.filename.exists():
            with open(self.filename, newline="") as f:
                self.rows = list(csv.DictReader(f, delimiter=self.separator))

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch, **(logs or {})})
        keys = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=keys, delimiter=self.separator,
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write(self.filename, lambda tmp: Path(tmp).write_text(text.getvalue()))


class LambdaCallback(Callback):
    """A callback from functions: LambdaCallback(on_epoch_end=lambda epoch, logs: ...). Keras's
    on_batch_begin / on_batch_end mean the training batches."""

    def __init__(self, **hooks):
        super().__init__()
        aliases = {"on_batch_begin": "on_train_batch_begin", "on_batch_end": "on_train_batch_end"}
        for name, fn in hooks.items():
            name = aliases.get(name, name)
            if name not in HOOKS:
                raise TypeError(f"LambdaCallback: unknown hook {name!r}; known: {list(HOOKS)}")
            if fn is not None:
                setattr(self, name, fn)


# ---- stopping ------------------------------------------------------------------------------------
def _is_finite(value):
    return not isinstance(value, (int, float)) or math.isfinite(value)


class TerminateOnNaN(Callback):
    """Stop at the first batch whose logs hold a NaN or infinite value, with a NonFiniteLossError
    naming the epoch and step. Callbacks after it in the list do not see that batch, and
    ModelCheckpoint never saves non-finite weights, so the last good checkpoint stays whole."""

    def on_train_batch_end(self, batch, logs=None):
        bad = {k: v for k, v in (logs or {}).items() if not _is_finite(v)}
        if bad:
            self.model.stop_training = True
            epoch = getattr(self, "_epoch", None)
            where = f"epoch {epoch + 1}, batch {batch + 1}" if epoch is not None else \
                f"batch {batch + 1}"
            raise NonFiniteLossError(
                f"TerminateOnNaN: {', '.join(f'{k} is {v}' for k, v in bad.items())} at {where} "
                f"(step {self.model._train_counter} of the run); training stopped, nothing after "
                "the last good checkpoint was saved")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch


class TimeStopping(Callback):
    """Stop after the batch that passes `seconds` of training (TensorFlow Addons' name)."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = float(seconds)
        self.stopped = False

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() - self.started > self.seconds:
            self.model.stop_training = self.stopped = True


def _monitor_mode(monitor, mode, who):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{who}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        mode = "max" if ("acc" in monitor or monitor.startswith("fmeasure")) else "min"
    return mode


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by more than min_delta for `patience` epochs;
    restore_best_weights puts back the weights of the best epoch."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__()
        self.monitor, self.patience, self.verbose = monitor, int(patience), verbose
        self.mode = _monitor_mode(monitor, mode, "EarlyStopping")
        self.min_delta = abs(min_delta) * (1 if self.mode == "max" else -1)
        self.baseline, self.restore_best_weights = baseline, restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.stopped_epoch = 0

    def _better(self, value, reference):
        if reference is None:
            return True
        return (value - self.min_delta > reference if self.mode == "max"
                else value - self.min_delta < reference)

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best_epoch = 0, 0, 0
        self.best, self.best_weights = None, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(f"EarlyStopping: monitor {self.monitor!r} is not among the logs "
                           f"{sorted(logs or {})}")
        if epoch < self.start_from_epoch:
            return
        self.wait += 1
        if self._better(value, self.best):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._better(value, self.baseline):
                self.wait = 0
                return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch and self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)


# ---- checkpoints ---------------------------------------------------------------------------------
def _all_layers(model):
    """The model and every layer inside, depth first, each once, in a fixed order."""
    out, seen, stack = [], set(), [model]
    while stack:
        layer = stack.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        out.append(layer)
        stack = list(layer._sublayers) + stack
    return out


def _optimizers(model):
    """{name: optimiser}: model.optimizer, then every optimiser held in an attribute (a GAN's
    d_optimizer and g_optimizer), each once."""
    from .optim import Optimizer
    found = {}
    if model.optimizer is not None:
        found["optimizer"] = model.optimizer
    for name, value in vars(model).items():
        if isinstance(value, Optimizer) and all(value is not o for o in found.values()):
            found[name] = value
    return found


def _generators(model):
    """Every random generator training draws from: each layer's (initial weights, dropout masks,
    a sampler's noise) and any numpy Generator held in one of the model's attributes."""
    found = {}
    for i, layer in enumerate(_all_layers(model)):
        if layer._rng is not None:
            found[f"layer/{i}"] = layer._rng
    for name, value in vars(model).items():
        if isinstance(value, np.random.Generator):
            found[f"attribute/{name}"] = value
    return found


def save_training_checkpoint(path, model, epoch, history=None, extra=None):
    """Everything a run needs to go on exactly: weights, each optimiser's state and which of the
    model's weights it holds, the step and epoch counts, every random generator and the shuffle
    seed, and the history so far. One file, written through generative.checkpoint (atomic)."""
    from .generative import checkpoint
    weights = model.weights
    position = {id(w): i for i, w in enumerate(weights)}
    optimizers = _optimizers(model)
    holds = {}
    for name, opt in optimizers.items():
        missing = [p.name for p in opt.params if id(p) not in position]
        if missing:
            raise ValueError(f"ModelCheckpoint: optimizer {name!r} updates weights that are not "
                             f"model '{model.name}''s: {missing[:3]}")
        holds[name] = [position[id(p)] for p in opt.params]
    rngs = {k: g.bit_generator.state for k, g in _generators(model).items()}
    return checkpoint.save_checkpoint(
        path, models={"model": model}, optimizers=optimizers, step=model._train_counter,
        extra={"epoch": int(epoch), "rngs": rngs, "optimizer_weights": holds,
               "shuffle_seed": model._shuffle_seed, "history": history or {}, **(extra or {})})


def restore_training_checkpoint(path, model):
    """Put a model (built and compiled as when it was saved) back where save_training_checkpoint
    left it. Returns the payload's extra dict: pass extra["epoch"] as fit's initial_epoch."""
    from .generative import checkpoint
    payload = checkpoint.read_checkpoint(path)
    extra = payload["extra"]
    optimizers = _optimizers(model)
    missing = sorted(set(payload["optimizers"]) - set(optimizers))
    if missing:
        raise ValueError(f"{path} holds the state of optimizers {missing} that model "
                         f"'{model.name}' does not have: compile it as it was compiled when saved, "
                         "then restore")
    weights = model.weights
    for name, opt in optimizers.items():
        if name in extra.get("optimizer_weights", {}):
            opt.build([weights[i] for i in extra["optimizer_weights"][name]])
    checkpoint.load_checkpoint(path, models={"model": model}, optimizers=optimizers)
    # Layers that have not drawn yet get their generator first, so that it can be set.
    layers = _all_layers(model)
    for key, state in extra.get("rngs", {}).items():
        kind, _, where = key.partition("/")
        generator = (layers[int(where)]._rng_for_layer() if kind == "layer"
                     else getattr(model, where))
        generator.bit_generator.state = state
    model._train_counter = int(payload["step"])
    model._shuffle_seed = extra.get("shuffle_seed")
    return extra


def _weights_finite(model):
    return all(bool(np.isfinite(to_numpy(w.data)).all()) for w in model.weights)


class ModelCheckpoint(Callback):
    """Save the model during training, each time to a temporary file renamed into place.

    save_weights_only: the weights in Keras's HDF5 layout (model.save_weights); otherwise a full
    checkpoint that restore_training_checkpoint resumes exactly (weights, optimiser states,
    epoch and step, random generators, history). save_best_only: only when `monitor` improves
    (mode "min", "max" or "auto"). save_freq: "epoch", or every that many batches.
    `filepath` may hold fields of the epoch and the logs, e.g. "run_{epoch:02d}.h5".
    Nothing is saved while a log or a weight is NaN or infinite. A file saved mid-epoch
    (save_freq in batches) records the epochs completed before it, so resuming from it repeats
    that epoch from its start: exact resumes are from checkpoints saved at an epoch's end."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=False, mode="auto", save_freq="epoch",
                 initial_value_threshold=None, log=print):
        super().__init__()
        if save_freq != "epoch" and not (isinstance(save_freq, int) and save_freq > 0):
            raise ValueError(f"ModelCheckpoint: save_freq must be 'epoch' or a positive number "
                             f"of batches, got {save_freq!r}")
        self.filepath, self.monitor, self.verbose = str(filepath), monitor, verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        self.mode = _monitor_mode(monitor, mode, "ModelCheckpoint")
        self.save_freq, self.best, self.log = save_freq, initial_value_threshold, log
        self.last_saved = None   # (path, epoch, step) of the last file written

    def on_train_begin(self, logs=None):
        self.history = {}
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq != "epoch" and self.model._train_counter % self.save_freq == 0:
            self._save(self._epoch, logs or {}, completed_epochs=self._epoch)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)
        if self.save_freq == "epoch":
            self._save(epoch, logs or {}, completed_epochs=epoch + 1)

    def _save(self, epoch, logs, completed_epochs):
        if not all(_is_finite(v) for v in logs.values()) or not _weights_finite(self.model):
            if self.verbose:
                self.log(f"ModelCheckpoint: not saving at epoch {epoch + 1}: a value is not finite")
            return
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                if self.verbose:
                    self.log(f"ModelCheckpoint: {self.monitor!r} is not in the logs; not saving")
                return
            if self.best is not None and not (value < self.best if self.mode == "min"
                                              else value > self.best):
                return
            self.best = value
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            save_training_checkpoint(path, self.model, completed_epochs, self.history,
                                     extra={"monitor_best": self.best})
        self.last_saved = (path, epoch + 1, self.model._train_counter)
        if self.verbose:
            self.log(f"ModelCheckpoint: saved {path} (epoch {epoch + 1}, step "
                     f"{self.model._train_counter})")


class EpochRecorder(Callback):
    """Counts each epoch's steps and seconds (self.steps, self.seconds), then calls
    record(epoch, logs): how the chapter's train_* functions build their per-epoch records."""

    def __init__(self, record):
        super().__init__()
        self.record = record

    def on_epoch_begin(self, epoch, logs=None):
        self.steps, self.started = 0, time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.started
        self.record(epoch, logs)


# ---- the loss curves as files --------------------------------------------------------------------
def step_values(previous, logs, batch):
    """One batch's own values from the running means before (previous) and after (logs) it:
    v = (b + 1) m_b - b m_(b-1). Keys without a previous mean are taken as they are."""
    if batch == 0 or previous is None:
        return dict(logs)
    return {k: (batch + 1) * v - batch * previous[k] if k in previous else v
            for k, v in logs.items() if isinstance(v, (int, float))}


class HistoryWriter(Callback):
    """Write history.json ({"per_epoch": {"epoch": [...], name: [...]}, "per_step": {name: [...]}})
    and history.png (the curves, micrograd_gen.plot) into `folder` at each epoch's end, each
    atomically. With resume=True the curves of a history.json already there go on; `previous`
    gives them directly (a dict of that form)."""

    def __init__(self, folder, previous=None, plot=True, name="history", resume=False):
        super().__init__()
        self.folder, self.plot, self.name = Path(folder), plot, name
        if previous is None and resume:
            previous = self._read_previous()
        previous = previous or {}
        self.epochs = {k: list(v) for k, v in previous.get("per_epoch", {}).items()}
        self.steps = {k: list(v) for k, v in previous.get("per_step", {}).items()}
        self._steps_written = self._step_count()

    def _read_previous(self):
        path = self.folder / f"{self.name}.json"
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(previous, dict) or "per_step" not in previous:
            return None   # another program's history.json: the curves start afresh
        return previous

    @classmethod
    def beside(cls, checkpoint_path, resume=False):
        """A HistoryWriter for the folder that holds a checkpoint."""
        return cls(Path(checkpoint_path).parent, resume=resume)

    def on_epoch_begin(self, epoch, logs=None):
        self._previous = None

    def on_train_batch_end(self, batch, logs=None):
        for key, value in step_values(self._previous, logs or {}, batch).items():
            self.steps.setdefault(key, []).append(value)
        self._previous = dict(logs or {})

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.setdefault("epoch", []).append(epoch + 1)
        for key, value in (logs or {}).items():
            if isinstance(value, (int, float)):
                self.epochs.setdefault(key, []).append(value)
        self.write()

    def on_train_end(self, logs=None):
        # A run stopped inside an epoch (a time limit) still leaves its steps' curve.
        if self._steps_written != self._step_count():
            self.write()

    def _step_count(self):
        return sum(len(v) for v in self.steps.values())

    def write(self):
        from . import plot
        data = {"per_epoch": self.epochs, "per_step": self.steps}
        json_path = self.folder / f"{self.name}.json"
        atomic_write(json_path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1)))
        if self.plot:
            plot.save_history_plot(self.folder / f"{self.name}.png", self.epochs, self.steps)
        self._steps_written = self._step_count()


__all__ = ["Callback", "CallbackList", "CallbackError", "NonFiniteLossError", "History",
           "ProgbarLogger", "CSVLogger", "LambdaCallback", "TerminateOnNaN", "TimeStopping",
           "EarlyStopping", "ModelCheckpoint", "HistoryWriter", "EpochRecorder",
           "save_training_checkpoint",
           "restore_training_checkpoint", "step_values"]
