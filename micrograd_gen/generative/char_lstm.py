"""The first edition's character-level LSTM (§8.1): model, training, and generation.

    model = build_char_lstm(len(vocab))          # LSTM(128) -> Dense(V, softmax), 102,585 params
    run = train_char_lstm(text, epochs=1)         # RMSprop(0.01), batch 128, windows 60 / step 3
    generate_text(run.model, run.vocab, seed_text, 400, temperature=0.5, rng=rng)

## Generation, and what exactly equals the book
The book generates each character by re-running the model on the last 60 characters from a zero
state (`book_generate`): 60 LSTM steps per character. Carrying one LSTM state forward one
character at a time is 60 times cheaper, but it is not the same computation: after the first new
character the carried state has seen 61 characters, the book's window only the last 60, so the
probabilities (and soon the characters) differ. Two generators here carry state instead:

- `context="window"` (default) reproduces the book exactly. The book's window for position p
  starts at p - 60 from a zero state; that window's state can be carried too, from the moment it
  starts. So we keep 60 states at once, one per window that is still open, as one (60, 128) batch:
  each new character advances all of them with ONE batched step, the oldest (which has now seen
  exactly 60 characters) gives the prediction and is restarted from zeros as the newest window.
  Every state sees exactly the characters of the book's window, in the same order, from zero, so
  the probabilities are the book's up to float32 rounding (different GEMM shapes) and, for the same
  random state, the characters are the same. Cost per character: one (60, 128) x (128, 512) GEMM
  and one pass of the gates over (60, 512), instead of sixty steps of batch 1.
- `context="carry"` keeps ONE state over the whole text (unbounded context, the cheapest: one
  (1, 128) step per character). It equals re-running the model over the whole text so far
  (`book_generate(..., whole_text=True)`), and the book's window loop as long as the text it reads
  has at most `maxlen` characters, i.e. for the first `maxlen - len(seed_text) + 1` characters.

Seeds shorter than `maxlen`: the book always seeds with a full 60-character window. For a shorter
one, the window is "the last `maxlen` characters, or all of them when there are fewer" (no zero
padding), in both the book loop here and the window generator.

Generation runs in NumPy float32 on the trained weights (copied off the GPU once), with the
one-hot input turned into a row lookup: x @ kernel picks one row of the kernel, to which the bias is
added once.
"""
import numpy as np

from .. import backend, nn
from ..data.text import CharVocabulary, char_batches
from ..ops.lstm import lstm_cell
from ..optim import RMSprop
from ..tensor import no_grad
from .text_sampling import sample_next
from .text_training import (TEMPERATURES, TextGenerator, TrainedText, register_text_model,
                            train_text_model)

MAXLEN, STEP, UNITS, BATCH_SIZE, LEARNING_RATE = 60, 3, 128, 128, 0.01


def build_char_lstm(vocab_size, maxlen=MAXLEN, units=UNITS):
    """The book's model: LSTM(128, input_shape=(maxlen, V)) -> Dense(V, activation="softmax")."""
    return nn.Sequential([
        nn.LSTM(units, input_shape=(maxlen, vocab_size)),
        nn.Dense(vocab_size, activation="softmax"),
    ])


def _rebuild(config, vocabulary):
    """For load_text_model: the model of a saved config, and its vocabulary."""
    return (build_char_lstm(config["vocab_size"], config["maxlen"], config["units"]),
            CharVocabulary(vocabulary["chars"]))


register_text_model("lstm", _rebuild)


def window_length(model):
    """The maxlen the model was built for (its input shape is (None, maxlen, V))."""
    return int(model._input_batch_shape[1])


def char_lstm_config(model):
    lstm, dense = model.stack
    return {"kind": "lstm", "maxlen": window_length(model), "units": lstm.units,
            "vocab_size": dense.units}


# ---- generation ---------------------------------------------------------------------------------
class _Cell:
    """The trained weights as float32 NumPy arrays, and one LSTM step on a batch of states."""

    def __init__(self, model):
        lstm, dense = model.stack
        kernel, recurrent, bias = (np.asarray(backend.to_numpy(w.data), np.float32)
                                   for w in (lstm.kernel, lstm.recurrent_kernel, lstm.bias))
        self.units = recurrent.shape[0]
        self.input_rows = kernel + bias                       # (V, 4U): one-hot x @ kernel + bias
        self.recurrent = recurrent                            # (U, 4U)
        self.dense_kernel = np.asarray(backend.to_numpy(dense.kernel.data), np.float32)  # (U, V)
        self.dense_bias = np.asarray(backend.to_numpy(dense.bias.data), np.float32)

    def step(self, h, c, char_id):
        """Advance every state (N, U) by the same character, in place: the LSTM op's own cell."""
        z = h @ self.recurrent                                # (N, 4U), gate blocks i, f, c, o
        z += self.input_rows[char_id]
        h[...], c[...], _, _ = lstm_cell(z, c)

    def probabilities(self, h_row):
        """softmax(h @ W + b) for one state (U,), as float32 like the model's output."""
        logits = h_row @ self.dense_kernel + self.dense_bias
        logits -= logits.max()
        e = np.exp(logits)
        return e / e.sum()


def _seed_ids(vocab, seed_text):
    if not seed_text:
        raise ValueError("generate_text: seed_text must hold at least one character")
    return [int(i) for i in vocab.encode(seed_text)]


def generate_ids(model, seed_ids, length, temperature=1.0, rng=None, context="window",
                 maxlen=None):
    """`length` new character ids after `seed_ids` (see the module notes on `context`)."""
    cell = _Cell(model)
    maxlen = maxlen or window_length(model)
    seq = list(seed_ids)
    if context == "carry":
        h = np.zeros((1, cell.units), np.float32)
        c = np.zeros((1, cell.units), np.float32)
        for ch in seq:
            cell.step(h, c, ch)
        out = []
        for k in range(length):
            out.append(sample_next(cell.probabilities(h[0]), temperature, rng))
            if k + 1 < length:
                cell.step(h, c, out[-1])
        return out
    if context != "window":
        raise ValueError(f"generate_text: context must be 'window' or 'carry', got {context!r}")
    # Row p % maxlen holds the window that starts at position p; it is restarted from zeros just
    # before position p's character goes in, after it has given its prediction.
    h = np.zeros((maxlen, cell.units), np.float32)
    c = np.zeros((maxlen, cell.units), np.float32)
    out = []
    p = 0
    while len(out) < length:
        row = p % maxlen
        h[row] = 0
        c[row] = 0
        cell.step(h, c, seq[p])
        if p >= len(seq) - 1:
            oldest = max(0, p + 1 - maxlen) % maxlen          # the window [p + 1 - maxlen, p + 1)
            seq.append(sample_next(cell.probabilities(h[oldest]), temperature, rng))
            out.append(seq[-1])
        p += 1
    return out


def generate_text(model, vocab, seed_text, length=400, temperature=0.5, rng=None,
                  context="window"):
    """The `length` characters the model writes after `seed_text` (the seed is not included)."""
    ids = generate_ids(model, _seed_ids(vocab, seed_text), length, temperature, rng, context)
    return vocab.decode(ids)


def book_generate(model, vocab, seed_text, length=400, temperature=0.5, rng=None,
                  whole_text=False):
    """The book's loop, for reference and tests: for each character, one-hot the last `maxlen`
    characters (the whole text so far with whole_text=True) into a fresh array, run the whole model
    from a zero state, then `sample()`. Returns the new characters."""
    seed_ids = vocab.encode(seed_text)
    # the text so far as indices, in an array filled as it grows (so that a window is a view, not
    # a list turned into an array for every character)
    generated = np.empty(len(seed_ids) + length, np.intp)
    generated[:len(seed_ids)] = seed_ids
    eye = np.eye(len(vocab), dtype=np.float32)
    maxlen = window_length(model)
    out = []
    model.eval()
    with no_grad():
        for end in range(len(seed_ids), len(generated)):
            window = generated[0 if whole_text else max(0, end - maxlen):end]
            sampled = eye.take(window, axis=0)[None]                 # (1, len(window), V)
            preds = model(sampled).numpy()[0]
            next_index = sample_next(preds, temperature, rng)
            generated[end] = next_index
            out.append(vocab.chars[next_index])
    return "".join(out)


def random_seed_window(text, maxlen=MAXLEN):
    """A prompt as the book picks one: `maxlen` characters from a random place in the corpus."""
    def pick(rng):
        start = int(rng.integers(0, len(text) - maxlen - 1))
        return text[start:start + maxlen]
    return pick


# ---- training -----------------------------------------------------------------------------------
def train_char_lstm(text, epochs=1, max_seconds=None, steps_per_epoch=None, batch_size=BATCH_SIZE,
                    maxlen=MAXLEN, step=STEP, learning_rate=LEARNING_RATE, seed=0, units=UNITS,
                    temperatures=TEMPERATURES, sample_every=None, sample_length=400, log=print,
                    progress=True, run=None, callbacks=(), checkpoint=None):
    """Train the book's char LSTM on `text` (lower-case it first, as the book does).

    Trains through model.fit (text_training.train_text_model). Stops after `epochs` epochs or
    `max_seconds`, whichever comes first. With `sample_every=N` a TextGenerator prints samples
    every N epochs through `log`. Pass `run` (a TrainedText) to go on training it; with
    `checkpoint=PATH` the run is saved there after every epoch, with history.json and
    history.png beside it. `callbacks` are more Keras callbacks for fit. Returns a TrainedText
    with the model, vocabulary, optimiser and loss history.
    """
    if run is None:
        vocab = CharVocabulary.from_text(text)
        nn.set_seed(seed)
        model = build_char_lstm(len(vocab), maxlen, units)
        run = TrainedText(model, vocab, RMSprop(learning_rate=learning_rate),
                          config=char_lstm_config(model) | {"learning_rate": learning_rate})
    maxlen = run.config["maxlen"]
    batches = char_batches(text, run.vocab, maxlen=maxlen, step=step, batch_size=batch_size,
                           shuffle=True, seed=seed + len(run.history.epoch_losses))
    generator = None
    if sample_every:
        generator = TextGenerator(
            lambda prompt, t, rng: generate_text(run.model, run.vocab, prompt, sample_length, t, rng),
            random_seed_window(text, maxlen), temperatures, every=sample_every,
            rng=np.random.default_rng(seed), print_fn=log)
    return train_text_model(run, batches, epochs=epochs, steps_per_epoch=steps_per_epoch,
                            max_seconds=max_seconds, extra_callbacks=callbacks, progress=progress,
                            checkpoint=checkpoint, log=log, generator=generator)
