"""What the two text models share: the fused softmax/cross-entropy path, a small training loop
with a progress line and a loss record, the TextGenerator callback, and checkpoints that hold the
weights, the vocabulary and the model config together.

Both models end in `Dense(vocab, activation="softmax")`, as the book builds them, and calling the
model gives probabilities. Training does not go through those probabilities: `softmax_logits`
runs the model up to the final Dense without its softmax, and the loss is the fused
log-softmax + NLL on the logits (`from_logits=True`). The two are the same function of the
weights; the fused form skips a (batch, vocab) softmax, its backward, and Keras's clipping of the
probabilities to [1e-7, 1 - 1e-7] (which only changes the loss of a target given < 1e-7).
"""
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .. import backend, ops
from ..nn import activations
from ..nn.base import Sequential
from ..progress import Progress
from .checkpoint import read_checkpoint, save_checkpoint

TEMPERATURES = (0.2, 0.5, 0.7, 1.0, 1.5)


# ---- logits of a softmax model ------------------------------------------------------------------
def softmax_logits(model, x):
    """The pre-softmax outputs of `model(x)`.

    A model with a `logits(x)` method (TransformerLM) is asked for them; a Sequential whose last
    layer is a Dense with activation="softmax" runs its other layers, then the Dense's affine part.
    """
    if hasattr(model, "logits"):
        return model.logits(x)
    if isinstance(model, Sequential) and model.stack:
        dense = model.stack[-1]
        if getattr(dense, "activation", None) is activations.softmax:
            for layer in model.stack[:-1]:
                x = layer(x)
            if not dense.built:
                dense(x)  # build from the shape; the value is not used
            y = ops.matmul(x, dense.kernel)
            return y + dense.bias if dense.bias is not None else y
    raise TypeError(f"softmax_logits: {type(model).__name__} '{model.name}' neither has a logits() "
                    "method nor ends in a Dense layer with activation='softmax'")


def sparse_lm_loss(model, x, y):
    """Mean sparse categorical cross-entropy of `model` on targets `y` (integer ids), fused."""
    logits = softmax_logits(model, x)
    return ops.sparse_categorical_crossentropy(y, logits, from_logits=True)


# ---- the training loop --------------------------------------------------------------------------
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


def _cycle(batches):
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("fit: the batches are empty")


def fit(model, optimizer, batches, loss_fn=sparse_lm_loss, epochs=1, steps_per_epoch=None,
        max_seconds=None, callbacks=(), history=None, initial_epoch=0, progress=True,
        stream=None):
    """Train `model` on `batches`, an iterable of (x, y) that can be iterated once per epoch.

    steps_per_epoch: default one pass over `batches`; a smaller number ends each epoch early, a
    larger one goes round again. max_seconds: stop after the step that crosses this budget (the
    epoch is then recorded as far as it got). Callbacks have `on_epoch_end(epoch, logs)`; epoch
    numbers count from 0 as Keras's do. Returns the History (extended in place when given).
    """
    history = history or History()
    steps = steps_per_epoch or len(batches)
    started = time.perf_counter()
    source = _cycle(batches)
    device = model.weights[0].device if model.weights else "numpy"   # batches come as NumPy
    model.train()
    for epoch in range(initial_epoch, initial_epoch + epochs):
        bar = Progress(total=steps, label=f"epoch {epoch + 1}/{initial_epoch + epochs}",
                       unit="batch", stream=stream) if progress else None
        total, tenth_total, tenth_start, tenths = 0.0, 0.0, 0, []
        marks = {max(1, round(steps * k / 10)): k for k in range(1, 11)}
        samples, epoch_started, done = 0, time.perf_counter(), 0
        for step in range(1, steps + 1):
            x, y = next(source)
            loss = loss_fn(model, backend.to_module(x, device), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            value = float(loss.item())
            if not math.isfinite(value):
                raise FloatingPointError(f"fit: the loss became {value} at epoch {epoch + 1}, "
                                         f"step {step}; lower the learning rate")
            history.step_losses.append(value)
            total += value
            tenth_total += value
            samples += len(x)
            done = step
            if step in marks:
                tenths.append((step, total / step, tenth_total / (step - tenth_start)))
                tenth_total, tenth_start = 0.0, step
            out_of_time = max_seconds is not None and time.perf_counter() - started > max_seconds
            if bar is not None:
                elapsed = time.perf_counter() - epoch_started
                bar.update(step, force=out_of_time, loss=total / step,
                           **{"samples/s": round(samples / max(elapsed, 1e-9), 1)})
            if out_of_time:
                history.stopped_early = True
                break
        history.epoch_losses.append(total / max(done, 1))
        history.tenths.append(tenths)
        history.seconds = time.perf_counter() - started
        model.eval()
        for callback in callbacks:
            callback.on_epoch_end(epoch, {"loss": history.epoch_losses[-1], "steps": done})
        model.train()
        if history.stopped_early:
            break
    model.eval()
    history.seconds = time.perf_counter() - started
    return history


# ---- the TextGenerator callback -----------------------------------------------------------------
class TextGenerator:
    """Every `every` epochs, generate from a prompt at each temperature and print the texts.

    generate(prompt, temperature, rng) -> str (the continuation). prompt: a string ("this movie"
    for the Transformer) or a callable rng -> str (a random corpus window for the char LSTM). The
    texts of the last call stay in `self.samples` as {temperature: prompt + continuation}.
    """

    def __init__(self, generate, prompt, temperatures=TEMPERATURES, every=1, rng=None,
                 print_fn=print, separator=""):
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


def load_text_model(path, learning_rate=None):
    """The TrainedText saved by `save_text_model`, with a fresh optimiser carrying the saved state
    (so training can go on)."""
    from ..data.text import CharVocabulary, TextVectorization
    from ..optim import RMSprop
    payload = read_checkpoint(path)
    saved = payload["extra"].get("textgen")
    if saved is None:
        raise ValueError(f"{path} is a checkpoint, but not of a text model (no 'textgen' entry)")
    config, vocabulary = saved["config"], saved["vocabulary"]
    if config["kind"] == "lstm":
        from .char_lstm import build_char_lstm
        vocab = CharVocabulary(vocabulary["chars"])
        model = build_char_lstm(config["vocab_size"], config["maxlen"], config["units"])
    elif config["kind"] == "transformer":
        from .transformer_lm import build_transformer_lm
        vocab = TextVectorization(**vocabulary["vectorizer"], vocabulary=vocabulary["tokens"])
        model = build_transformer_lm(**{k: config[k] for k in (
            "vocab_size", "sequence_length", "embed_dim", "dense_dim", "num_heads")})
    else:
        raise ValueError(f"{path}: unknown text model kind {config['kind']!r}")
    model.set_weights(payload["models"]["model"])
    optimizer = RMSprop(model.parameters(), learning_rate=learning_rate or config["learning_rate"])
    if payload["optimizers"].get("optimizer"):
        optimizer.set_state(payload["optimizers"]["optimizer"])
    history = History()
    for key, value in saved.get("history", {}).items():
        setattr(history, key, value)
    return TrainedText(model, vocab, optimizer, history, config)


class SaveCheckpoint:
    """Callback: save the run (`save_text_model`) after every epoch, and say so through `log`."""

    def __init__(self, path, run, log=print):
        self.path, self.run, self.log = path, run, log

    def on_epoch_end(self, epoch, logs=None):
        save_text_model(self.path, self.run)
        self.log(f"epoch {epoch + 1}: loss {logs['loss']:.4f}; saved {self.path}")
