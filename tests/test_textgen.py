"""Text generation (issue 8): sampling, the char LSTM, the Transformer LM, checkpoints, the CLI."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from micrograd_gen.generative.text_sampling import entropy, reweight_distribution, sample_next


# ---- sampling -------------------------------------------------------------------------------

def _distributions(min_size=1, max_size=30):
    # Weights with some exact zeros, normalised: what a float32 softmax can produce.
    weights = hnp.arrays(np.float64, st.integers(min_size, max_size),
                         elements=st.one_of(st.just(0.0), st.floats(1e-30, 1.0)))
    return weights.filter(lambda w: w.sum() > 0).map(lambda w: w / w.sum())


temperatures = st.floats(0.01, 10.0)


def book_sample(preds, temperature, rng):
    """The first edition's `sample()` verbatim (with rng for np.random)."""
    preds = np.asarray(preds).astype("float64")
    preds = np.log(preds) / temperature
    exp_preds = np.exp(preds)
    preds = exp_preds / np.sum(exp_preds)
    probas = rng.multinomial(1, preds, 1)
    return np.argmax(probas)


@settings(max_examples=100, deadline=None)
@given(_distributions(), temperatures)
def test_reweight_is_a_distribution(p, t):
    q = reweight_distribution(p, t)
    assert q.shape == p.shape and np.all(np.isfinite(q)) and np.all(q >= 0)
    assert abs(q.sum() - 1) < 1e-12
    assert np.all(q[p == 0] == 0)         # impossible tokens stay impossible at any temperature


@settings(max_examples=100, deadline=None)
@given(_distributions(), temperatures, temperatures)
def test_lower_temperature_never_raises_entropy(p, t1, t2):
    low, high = sorted((t1, t2))
    assert entropy(reweight_distribution(p, low)) <= entropy(reweight_distribution(p, high)) + 1e-9


@settings(max_examples=100, deadline=None)
@given(_distributions())
def test_temperature_one_returns_p(p):
    np.testing.assert_allclose(reweight_distribution(p, 1.0), p, rtol=1e-12, atol=1e-300)


@settings(max_examples=100, deadline=None)
@given(_distributions(min_size=2), st.integers(0, 2**32 - 1))
def test_greedy_is_the_limit(p, seed):
    greedy = reweight_distribution(p, 0)
    assert greedy[np.argmax(p)] == 1 and greedy.sum() == 1
    assert sample_next(p, 0, np.random.default_rng(seed)) == int(np.argmax(p))
    top = np.sort(p)[-2:]
    if top[1] > top[0] * 1.5:  # a clear winner: T = 0.01 raises the ratio to 1.5**100 = 4e17
        np.testing.assert_allclose(reweight_distribution(p, 0.01), greedy, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float64, st.integers(2, 30), elements=st.floats(0.01, 1.0)).map(lambda w: w / w.sum()),
       st.sampled_from([0.2, 0.5, 1.0, 1.5]), st.integers(0, 2**32 - 1))
def test_sample_next_draws_as_the_book(p, t, seed):
    # Same RandomState, same draw as the listing (the max shift changes rounding only).
    ours = sample_next(p, t, np.random.RandomState(seed))
    assert ours == book_sample(p, t, np.random.RandomState(seed))


def test_sample_next_frequencies():
    p = np.array([0.5, 0.3, 0.2, 0.0])
    rng = np.random.default_rng(0)
    counts = np.bincount([sample_next(p, 1.0, rng) for _ in range(4000)], minlength=4)
    np.testing.assert_allclose(counts / 4000, p, atol=0.03)
    assert counts[3] == 0


def test_sampling_rejects_bad_input():
    with pytest.raises(ValueError, match="temperature"):
        reweight_distribution([0.5, 0.5], -1)
    with pytest.raises(ValueError, match="distribution"):
        reweight_distribution([0.0, 0.0], 1.0)
    with pytest.raises(ValueError, match="1-D"):
        sample_next(np.ones((2, 2)) / 4)


# ---- models -----------------------------------------------------------------------------------
from micrograd_gen import nn  # noqa: E402
from micrograd_gen.data.text import CharVocabulary, TextVectorization  # noqa: E402
from micrograd_gen.generative import char_lstm, transformer_lm  # noqa: E402
from micrograd_gen.generative.text_training import (TextGenerator, load_text_model,  # noqa: E402
                                                    save_text_model, softmax_logits)
from micrograd_gen.tensor import no_grad  # noqa: E402

TINY_TEXT = "the cat sat on the mat. the dog sat on the log. " * 30


def test_book_parameter_counts():
    nn.set_seed(0)
    assert char_lstm.build_char_lstm(57).count_params() == 102_585
    model = transformer_lm.build_transformer_lm()
    assert model.count_params() == 9_825_176
    names = [w.name for w in model.weights]
    assert names[0].endswith("embeddings") and names[-1].endswith("bias")


def test_softmax_logits_match_the_softmax_output():
    nn.set_seed(1)
    model = char_lstm.build_char_lstm(7, maxlen=5, units=8)
    x = np.eye(7, dtype=np.float32)[np.random.default_rng(0).integers(0, 7, (3, 5))]
    with no_grad():
        probs = model(x).numpy()
        logits = softmax_logits(model, x).numpy()
    e = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(-1, keepdims=True), probs, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def tiny_lstm():
    """A char LSTM (maxlen 10, 32 units) trained a little on a repetitive text."""
    return char_lstm.train_char_lstm(TINY_TEXT, epochs=3, steps_per_epoch=15, batch_size=32,
                                     maxlen=10, step=1, units=32, seed=0, progress=False)


def test_tiny_char_lstm_learns(tiny_lstm):
    losses = tiny_lstm.history.epoch_losses
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.5
    assert len(tiny_lstm.history.tenths[0]) == 10          # a record at every tenth of an epoch
    text = char_lstm.generate_text(tiny_lstm.model, tiny_lstm.vocab, "the cat sa", 30, 0.2,
                                   np.random.default_rng(0))
    assert len(text) == 30 and set(text) <= set(TINY_TEXT)


@pytest.mark.parametrize("temperature", [0.2, 0.5, 1.0, 1.5])
@pytest.mark.parametrize("seed_text", ["the dog sat on", "t"])
def test_window_generation_equals_the_books_loop(tiny_lstm, temperature, seed_text):
    # 40 characters after a 14- (or 1-) character seed with maxlen 10: the window slides from the
    # start, so every prediction comes from a state that must forget its window's predecessors.
    run = tiny_lstm
    ours = char_lstm.generate_text(run.model, run.vocab, seed_text, 40, temperature,
                                   np.random.RandomState(7))
    book = char_lstm.book_generate(run.model, run.vocab, seed_text, 40, temperature,
                                   np.random.RandomState(7))
    assert ours == book


@pytest.mark.parametrize("temperature", [0.5, 1.0])
def test_carried_state_equals_rerunning_the_whole_text(tiny_lstm, temperature):
    run = tiny_lstm
    ours = char_lstm.generate_text(run.model, run.vocab, "the cat", 40, temperature,
                                   np.random.RandomState(3), context="carry")
    assert ours == char_lstm.book_generate(run.model, run.vocab, "the cat", 40, temperature,
                                           np.random.RandomState(3), whole_text=True)
    # ... and the book's 10-character window loop while the text still fits in the window
    windowed = char_lstm.book_generate(run.model, run.vocab, "the cat", 4, temperature,
                                       np.random.RandomState(3))
    assert ours[:4] == windowed                          # 7 + 3 characters read: within maxlen


def test_generation_probabilities_match_the_model(tiny_lstm):
    # The characters above agree because the probabilities do (up to float32 rounding): check
    # that directly, for the window generator's staggered states.
    run = tiny_lstm
    cell = char_lstm._Cell(run.model)
    ids = run.vocab.encode("the dog sat on the log")
    h = np.zeros((10, cell.units), np.float32)
    c = np.zeros((10, cell.units), np.float32)
    eye = np.eye(len(run.vocab), dtype=np.float32)
    h1 = np.zeros((1, cell.units), np.float32)
    c1 = np.zeros((1, cell.units), np.float32)
    for p, ch in enumerate(ids):
        h[p % 10] = c[p % 10] = 0
        cell.step(h, c, ch)
        cell.step(h1, c1, ch)
        start = max(0, p + 1 - 10)
        with no_grad():
            expected = run.model(eye[ids[start:p + 1]][None]).numpy()[0]
        np.testing.assert_allclose(cell.probabilities(h[start % 10]), expected, atol=2e-6)
    # One carried state has read all 22 characters, not the last 10: it predicts otherwise.
    assert np.abs(cell.probabilities(h1[0]) - expected).max() > 1e-3


def test_generation_rejects_bad_arguments(tiny_lstm):
    run = tiny_lstm
    with pytest.raises(ValueError, match="context"):
        char_lstm.generate_text(run.model, run.vocab, "the", 5, 1.0, context="sideways")
    with pytest.raises(ValueError, match="at least one"):
        char_lstm.generate_text(run.model, run.vocab, "", 5, 1.0)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        char_lstm.generate_text(run.model, run.vocab, "QUIZ", 5, 1.0)


def test_text_generator_callback_prints_each_temperature(tiny_lstm):
    run, lines = tiny_lstm, []
    callback = TextGenerator(
        lambda prompt, t, rng: char_lstm.generate_text(run.model, run.vocab, prompt, 20, t, rng),
        char_lstm.random_seed_window(TINY_TEXT, 10), every=2, rng=np.random.default_rng(0),
        print_fn=lines.append)
    callback.on_epoch_end(0)
    assert lines == []                                   # every 2 epochs: not after the first
    callback.on_epoch_end(1)
    assert sorted(callback.samples) == [0.2, 0.5, 0.7, 1.0, 1.5]
    assert all(len(text) == 30 for text in callback.samples.values())
    assert sum("temperature" in line for line in lines) == 5


def test_lstm_checkpoint_round_trip(tiny_lstm, tmp_path):
    run = tiny_lstm
    path = save_text_model(tmp_path / "lstm.h5", run)
    loaded = load_text_model(path)
    assert loaded.vocab.chars == run.vocab.chars and loaded.config == run.config
    assert loaded.history.epoch_losses == run.history.epoch_losses
    for a, b in zip(loaded.model.get_weights(), run.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    same = [char_lstm.generate_text(r.model, r.vocab, "the cat", 30, 0.7, np.random.RandomState(1))
            for r in (run, loaded)]
    assert same[0] == same[1]
    # The optimiser state came along, so training goes on where it stopped.
    saved, restored = run.optimizer.get_state(), loaded.optimizer.get_state()
    assert sorted(saved) == sorted(restored) and int(restored["iterations"]) == 45
    for key in saved:
        np.testing.assert_array_equal(saved[key], restored[key])


# ---- the Transformer LM -----------------------------------------------------------------------
TINY_TRANSFORMER = dict(vocab_size=40, sequence_length=12, embed_dim=16, dense_dim=32, num_heads=2)


@pytest.fixture(scope="module")
def tiny_transformer():
    nn.set_seed(3)
    model = transformer_lm.build_transformer_lm(**TINY_TRANSFORMER)
    # Random weights give nearly flat predictions; larger ones make sampling depend on them.
    model.set_weights([w * 4 for w in model.get_weights()])
    return model


def test_transformer_cache_probabilities_match_the_model(tiny_transformer):
    ids = [5, 9, 0, 3, 17, 2, 8]                         # a padding id in the middle, masked
    decoder = transformer_lm._Decoder(tiny_transformer)
    decoder.feed(ids[:3])                                 # several positions at once, then one
    for token in ids[3:]:
        decoder.feed([token])
    sequence = np.zeros((1, 12), np.int64)
    sequence[0, :len(ids)] = ids
    with no_grad():
        full = tiny_transformer(sequence).numpy()[0]
    for position in range(len(ids)):
        np.testing.assert_allclose(decoder.probabilities(position), full[position], atol=2e-6)


@pytest.mark.parametrize("book_indexing", [False, True])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.5])
def test_transformer_cache_generation_equals_the_books_rerun(tiny_transformer, book_indexing,
                                                             temperature):
    prompt = [4, 11]
    ours = transformer_lm.generate_ids(tiny_transformer, prompt, 9, temperature,
                                       np.random.RandomState(5), book_indexing=book_indexing)
    book = transformer_lm.book_generate_ids(tiny_transformer, prompt, 9, temperature,
                                            np.random.RandomState(5), book_indexing=book_indexing)
    assert ours == book and len(ours) == 9


def test_transformer_generation_past_the_sequence_length(tiny_transformer):
    # 3 + 20 tokens > 12 positions: both keep the last 12 tokens.
    ours = transformer_lm.generate_ids(tiny_transformer, [4, 11, 7], 20, 1.0, np.random.RandomState(2))
    book = transformer_lm.book_generate_ids(tiny_transformer, [4, 11, 7], 20, 1.0,
                                            np.random.RandomState(2))
    assert ours == book
    with pytest.raises(ValueError, match="book_indexing"):
        transformer_lm.generate_ids(tiny_transformer, [4], 13, 1.0, book_indexing=True)


IMDB_LIKE = ["This movie was great, I loved it.<br />The acting was good.",
             "This movie was bad. I hated the acting and the story!",
             "A great story, good acting; I loved this film.",
             "The film was bad and the story was boring."] * 4


def test_tiny_transformer_trains_and_round_trips(tmp_path):
    run = transformer_lm.train_transformer_lm(
        [t.replace("<br />", " ") for t in IMDB_LIKE], epochs=4, batch_size=8, seed=0,
        sequence_length=16, learning_rate=1e-2, progress=False,
        model_kwargs=dict(embed_dim=16, dense_dim=32, num_heads=2))
    losses = run.history.epoch_losses
    assert losses[-1] < losses[0]
    assert run.vocab.get_vocabulary()[:2] == ["", "[UNK]"] and "movie" in run.vocab.get_vocabulary()
    text = transformer_lm.generate_text(run.model, run.vocab, "this movie", 5, 0.7,
                                        np.random.RandomState(0))
    assert len(text.split()) == 5
    loaded = load_text_model(save_text_model(tmp_path / "t.h5", run))
    assert loaded.vocab.get_vocabulary() == run.vocab.get_vocabulary()
    assert loaded.config == run.config
    again = transformer_lm.generate_text(loaded.model, loaded.vocab, "this movie", 5, 0.7,
                                         np.random.RandomState(0))
    assert again == text


# ---- the command line -------------------------------------------------------------------------
def test_cli_trains_and_samples_the_lstm(tmp_path, capsys):
    from micrograd_gen.cli import main
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT)
    checkpoint = tmp_path / "lstm.h5"
    assert main(["textgen", "train", "--model", "lstm", "--corpus", str(corpus), "--epochs", "2",
                 "--steps-per-epoch", "3", "--batch-size", "16", "--length", "20",
                 "--temperatures", "0.5,1.0", "--checkpoint", str(checkpoint)]) == 0
    out = capsys.readouterr()
    assert checkpoint.is_file()
    assert "temperature: 0.5" in out.out and "temperature: 1.0" in out.out
    assert "s/step" in out.err and "ETA" in out.err and "loss" in out.err
    assert main(["textgen", "sample", "--checkpoint", str(checkpoint), "--prompt", "the cat ",
                 "--length", "25", "--temperature", "0.7"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("the cat ") and len(printed) >= len("the cat ") + 20
    # --resume goes on from the saved epochs (--epochs counts from the start of training)
    assert main(["textgen", "train", "--model", "lstm", "--corpus", str(corpus), "--epochs", "3",
                 "--steps-per-epoch", "2", "--batch-size", "16", "--sample-every", "0",
                 "--checkpoint", str(checkpoint), "--resume"]) == 0
    assert len(load_text_model(checkpoint).history.epoch_losses) == 3


def test_cli_trains_and_samples_the_transformer(tmp_path, capsys):
    from micrograd_gen.cli import main
    folder = tmp_path / "reviews" / "pos"
    folder.mkdir(parents=True)
    for i, text in enumerate(IMDB_LIKE[:4]):
        (folder / f"{i}_1.txt").write_text(text)
    checkpoint = tmp_path / "tlm.h5"
    assert main(["textgen", "train", "--model", "transformer", "--corpus", str(tmp_path / "reviews"),
                 "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--length", "4",
                 "--temperatures", "0.7", "--checkpoint", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "temperature: 0.7" in out and "this movie" in out
    assert main(["textgen", "sample", "--checkpoint", str(checkpoint), "--length", "6"]) == 0
    printed = capsys.readouterr().out.rstrip("\n")
    # six words joined by spaces (a sampled padding id decodes to "", as in the book)
    assert printed.startswith("this movie ") and printed.count(" ") == 7


def test_cli_sample_without_checkpoint_says_so(tmp_path, capsys):
    from micrograd_gen.cli import main
    assert main(["textgen", "sample", "--checkpoint", str(tmp_path / "none.h5")]) == 1
    assert "no checkpoint" in capsys.readouterr().err


def test_fit_stops_at_the_time_budget():
    run = char_lstm.train_char_lstm(TINY_TEXT, epochs=5, max_seconds=0, batch_size=8, maxlen=10,
                                    units=8, progress=False)
    history = run.history
    assert history.stopped_early and len(history.step_losses) == 1
    assert len(history.epoch_losses) == 1           # the cut epoch is recorded as far as it got


def _data_dir():
    import os
    from pathlib import Path
    path = os.environ.get("MICROGRAD_GEN_DATA")
    return Path(path) if path else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.slow
def test_char_lstm_on_nietzsche_learns_quickly():
    # The first 200 steps of the book's run (about a minute on an idle machine): the loss of the
    # last tenth is well below the ~3.1 of a model that only knows the character frequencies.
    path = _data_dir() / "text" / "nietzsche.txt"
    if not path.is_file():
        pytest.skip(f"no Nietzsche text at {path} (set MICROGRAD_GEN_DATA)")
    from micrograd_gen.data.text import load_text_corpus
    run = char_lstm.train_char_lstm(load_text_corpus(path), epochs=1, steps_per_epoch=200,
                                    progress=False)
    assert len(run.vocab) == 57 and run.model.count_params() == 102_585
    assert run.history.tenths[0][-1][2] < 2.7
