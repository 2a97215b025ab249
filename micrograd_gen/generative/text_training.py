"""What the two text models share: the fused loss, training through `model.fit` with the
TextGenerator and checkpoint callbacks, the loss record, and checkpoints that hold the weights,
the vocabulary and the model config together.

Both models end in `Dense(vocab, activation="softmax")`, as the book builds them, and calling the
model gives probabilities. Training does not go through those probabilities: compiled with
"sparse_categorical_crossentropy", fit runs the model up to the final Dense without its softmax
(`softmax_logits`) and takes the fused log-softmax + NLL on the logits (`from_logits=True`). The
two are the same function of the weights; the fused form skips a (batch, vocab) softmax, its
backward, and Keras's clipping of the probabilities to [1e-7, 1 - 1e-7] (which only changes the
loss of a target given < 1e-7).

The two model modules register themselves here (`register_text_model`), so that a checkpoint can
be loaded back into the right model without this module importing them.
"""
import time
from dataclasses import dataclass, field

import numpy as np

from .. import callbacks, ops
from ..nn.training import softmax_logits
from .checkpoint import read_checkpoint, save_checkpoint

TEMPERATURES = (0.2, 0.5, 0.7, 1.0, 1.5)
__all__ = ["softmax_logits", "sparse_lm_loss", "train_text_model", "TextGenerator", "History",
           "TrainedText", "save_text_model", "load_text_model", "register_text_model"]


def sparse_lm_loss(model, x, y):
    """Mean sparse categorical cross-entropy of `model` on targets `y` (integer ids), fused."""
    logits = softmax_logits(model, x)
    if logits is None:
        raise TypeError(f"sparse_lm_loss: {type(model).__name__} '{model.name}' neither has a "
                        "logits() method nor ends in a Dense layer with activation='softmax'")
    return ops.sparse_categorical_crossentropy(y, logits, from_logits=True)


# ---- the loss record ----------------------------------------------------------------------------
class History:
    """Losses of a run: every step's, each epoch's mean (what Keras prints at an epoch's end), and
    at each tenth of an epoch the mean so far in that epoch and the mean over that tenth."""

    def __init__(self):
        self.step_losses = []           # one float per step, in order
        self.epoch_losses = []          # mean over each finished (or cut short) epoch
        self.tenths = []                # per epoch: [(step, running mean, mean over the tenth)]
        self.seconds = 0.0
        self.stopped_early = False

    def as_dict(self):
        return {"step_losses": self.step_losses, "epoch_losses": self.epoch_losses,
                "tenths": self.tenths, "seconds": self.seconds,
                "stopped_early": self.stopped_early}


class RecordLosses(callbacks.Callback):
    """Fills a History from fit's logs (each step's loss recovered from the running means)."""

    def __init__(self, history, time_limit=None):
        super().__init__()
        self.history, self.time_limit = history, time_limit

    def on_train_begin(self, logs=None):
        self.started, self.seconds_before = time.perf_counter(), self.history.seconds

    def on_epoch_begin(self, epoch, logs=None):
        steps = self.params.get("steps") or 0
        self.marks = {max(1, round(steps * k / 10)): k for k in range(1, 11)}
        self.previous, self.tenth_total, self.tenth_start, self.tenths = None, 0.0, 0, []

    def on_train_batch_end(self, batch, logs=None):
        value = callbacks.step_values(self.previous, logs, batch)["loss"]
        self.previous = dict(logs)
        self.history.step_losses.append(value)
        self.tenth_total += value
        step = batch + 1
        if step in self.marks:
            self.tenths.append((step, logs["loss"], self.tenth_total / (step - self.tenth_start)))
            self.tenth_total, self.tenth_start = 0.0, step

    def on_epoch_end(self, epoch, logs=None):
        self.history.epoch_losses.append(logs["loss"])
        self.history.tenths.append(self.tenths)
        self.history.seconds = self.seconds_before + time.perf_counter() - self.started
        if self.time_limit is not None and self.time_limit.stopped:
            self.history.stopped_early = True


def train_text_model(run, batches, epochs=1, steps_per_epoch=None, max_seconds=None,
                     extra_callbacks=(), progress=True, checkpoint=None, log=print, generator=None):
    """Train run.model on `batches` ((x, y) pairs, iterated once per epoch) with model.fit,
    carrying on run.history. The callbacks are TerminateOnNaN, the loss record, `extra_callbacks`,
    then (with `checkpoint`) the checkpoint and history.json / history.png beside it, then the
    TextGenerator `generator`, which samples from what was just saved."""
    run.model.compile(optimizer=run.optimizer, loss="sparse_categorical_crossentropy")
    time_limit = callbacks.TimeStopping(max_seconds) if max_seconds is not None else None
    run_callbacks = [callbacks.TerminateOnNaN(), RecordLosses(run.history, time_limit)]
    if progress:
        run_callbacks.append(callbacks.ProgbarLogger())
    run_callbacks += list(extra_callbacks)
    if checkpoint is not None:
        run_callbacks += [SaveCheckpoint(checkpoint, run, log),
                          callbacks.HistoryWriter.beside(checkpoint,
                                                         resume=bool(run.history.epoch_losses))]
    if generator is not None:
        run_callbacks.append(generator)
    if time_limit is not None:
        run_callbacks.append(time_limit)
    initial_epoch = len(run.history.epoch_losses)
    run.model.fit(batches, epochs=initial_epoch + epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=steps_per_epoch, callbacks=run_callbacks, verbose=0)
    return run


# ---- the TextGenerator callback -----------------------------------------------------------------
class TextGenerator(callbacks.Callback):
    """Every `every` epochs, generate from a prompt at each temperature and print the texts.

    generate(prompt, temperature, rng) -> str (the continuation). prompt: a string ("this movie"
    for the Transformer) or a callable rng -> str (a random corpus window for the char LSTM). The
    texts of the last call stay in `self.samples` as {temperature: prompt + continuation}.
    """

    def __init__(self, generate, prompt, temperatures=TEMPERATURES, every=1, rng=None,
                 print_fn=print, separator=""):
        super().__init__()
        self.generate, self.prompt = generate, prompt
        self.temperatures, self.every = tuple(temperatures), int(every)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.print_fn, self.separator = print_fn, separator
        self.samples = {}

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        prompt = self.prompt(self.rng) if callable(self.prompt) else self.prompt
        self.print_fn(f"--- generating with seed: {prompt!r}")
        for temperature in self.temperatures:
            text = prompt + self.separator + self.generate(prompt, temperature, self.rng)
            self.samples[temperature] = text
            self.print_fn(f"------ temperature: {temperature}\n{text}")


# ---- a trained model with its vocabulary, and checkpoints ---------------------------------------
@dataclass
class TrainedText:
    """What training returns and a checkpoint holds: the model, its vocabulary (a CharVocabulary
    or a TextVectorization), the optimiser, the loss history and the model's config."""
    model: object
    vocab: object
    optimizer: object = None
    history: History = field(default_factory=History)
    config: dict = field(default_factory=dict)


def save_text_model(path, run):
    """One HDF5 file (written atomically): weights, optimiser state, the vocabulary, the config
    and the loss history, so that `load_text_model` rebuilds the model without the corpus."""
    if run.config["kind"] == "lstm":
        vocabulary = {"chars": list(run.vocab.chars)}
    else:
        vocabulary = {"tokens": run.vocab.get_vocabulary(), "vectorizer": run.vocab.get_config()}
    extra = {"textgen": {"config": dict(run.config), "vocabulary": vocabulary,
                         "history": run.history.as_dict()}}
    optimizers = {"optimizer": run.optimizer} if run.optimizer is not None else None
    return save_checkpoint(path, models={"model": run.model}, optimizers=optimizers,
                           step=len(run.history.step_losses), extra=extra)


_KINDS = {}   # config["kind"] -> rebuild(config, saved vocabulary) -> (model, vocabulary)


def register_text_model(kind, rebuild):
    """How load_text_model rebuilds a model of `kind` ("lstm", "transformer") from its config and
    saved vocabulary; char_lstm and transformer_lm register themselves when imported."""
    _KINDS[kind] = rebuild


def load_text_model(path, learning_rate=None):
    """The TrainedText saved by `save_text_model`, with a fresh optimiser carrying the saved state
    (so training can go on)."""
    from ..optim import RMSprop
    payload = read_checkpoint(path)
    saved = payload["extra"].get("textgen")
    if saved is None:
        raise ValueError(f"{path} is a checkpoint, but not of a text model (no 'textgen' entry)")
    config, vocabulary = saved["config"], saved["vocabulary"]
    if config["kind"] not in _KINDS:
        raise ValueError(f"{path}: text model kind {config['kind']!r} is not registered (import "
                         f"micrograd_gen.generative.char_lstm or transformer_lm first; known: "
                         f"{sorted(_KINDS)})")
    model, vocab = _KINDS[config["kind"]](config, vocabulary)
    model.set_weights(payload["models"]["model"])
    optimizer = RMSprop(model.parameters(), learning_rate=learning_rate or config["learning_rate"])
    if payload["optimizers"].get("optimizer"):
        optimizer.set_state(payload["optimizers"]["optimizer"])
    history = History()
    for key, value in saved.get("history", {}).items():
        setattr(history, key, value)
    return TrainedText(model, vocab, optimizer, history, config)


class SaveCheckpoint(callbacks.Callback):
    """Save the run (`save_text_model`) after every epoch, and say so through `log`."""

    def __init__(self, path, run, log=print):
        super().__init__()
        self.path, self.run, self.log = path, run, log

    def on_epoch_end(self, epoch, logs=None):
        save_text_model(self.path, self.run)
        self.log(f"epoch {epoch + 1}: loss {logs['loss']:.4f}; saved {self.path}")
