"""Corpora are checked before training (issue 19, rule 6): a corpus too short for one batch, or a
folder of empty texts, fails at once with a message that says what is missing, before any epoch
and before any checkpoint is written."""
import numpy as np
import pytest

from micrograd_gen.cli import main
from micrograd_gen.data import CharVocabulary, char_batches, lm_batches, text_files_dataset
from micrograd_gen.data.text import check_char_corpus

CORPUS_61 = ("the quick brown fox jumps over the lazy dog and then it rests." * 2)[:61]


@pytest.mark.parametrize("length, maxlen, step, batch_size, windows", [
    (61, 60, 3, 128, 1),      # the case: one window, no batch
    (60, 60, 3, 128, 0),      # no window at all
    (0, 60, 3, 128, 0),
    (441, 60, 3, 128, 127),   # one window short of a batch
    (19, 5, 2, 8, 7),
])
def test_a_corpus_short_of_one_batch_is_refused(length, maxlen, step, batch_size, windows):
    text = ("abcdefghij" * 100)[:length]
    needed = maxlen + (batch_size - 1) * step + 1
    with pytest.raises(ValueError, match=rf"corpus of {length:,} characters gives {windows} "
                                         rf"window{'s' if windows != 1 else ''} .* fewer than one batch of {batch_size}; it "
                                         rf"needs at least {needed:,} characters"):
        check_char_corpus(text, maxlen, step, batch_size)
    # one more character than that makes the batch
    check_char_corpus(("abcdefghij" * 100)[:needed], maxlen, step, batch_size)
    batches = char_batches(("abcdefghij" * 100)[:needed], CharVocabulary.from_text("abcdefghij"),
                           maxlen, step, batch_size)
    assert len(batches) == 1 and len(next(iter(batches))[1]) == batch_size


@pytest.mark.parametrize("name, value", [("maxlen", 0), ("step", -1), ("batch_size", 0),
                                         ("batch_size", 2.5)])
def test_window_settings_are_checked(name, value):
    settings = {"maxlen": 5, "step": 1, "batch_size": 2} | {name: value}
    with pytest.raises(ValueError, match=rf"char_batches: {name} must be a whole number >= 1, "
                                         rf"got {value}"):
        check_char_corpus("abcdefghij" * 10, **settings)


def test_train_char_lstm_refuses_before_the_first_epoch(tmp_path):
    from micrograd_gen.generative.char_lstm import train_char_lstm
    logged = []
    with pytest.raises(ValueError, match="corpus of 61 characters gives 1 window of"):
        train_char_lstm(CORPUS_61, epochs=1, units=4, log=logged.append, progress=False,
                        sample_every=1, checkpoint=tmp_path / "lstm.h5")
    assert logged == [] and not (tmp_path / "lstm.h5").exists()


def test_cli_textgen_refuses_a_61_character_corpus(tmp_path, capsys):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(CORPUS_61)
    checkpoint = tmp_path / "lstm.h5"
    rc = main(["textgen", "train", "--corpus", str(corpus), "--epochs", "1",
               "--checkpoint", str(checkpoint)])
    err = capsys.readouterr().err
    assert rc == 1 and "corpus of 61 characters" in err and "at least 442 characters" in err
    assert len(err.strip().splitlines()) == 1 and not checkpoint.exists()


# ---- folders of texts -----------------------------------------------------------------------------

@pytest.mark.parametrize("files, found", [
    ({"only.txt": ""}, "1 .txt file, all empty"),
    ({"a.txt": "  \n", "b/c.txt": "\t"}, "2 .txt files, all empty"),
    ({"notes.md": "text, but not .txt"}, "no .txt files"),
    ({}, "no .txt files"),
])
def test_a_folder_without_text_is_refused(tmp_path, files, found):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, body in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(body)
    with pytest.raises(ValueError, match=rf"text_files_dataset: .*corpus holds {found}; a corpus "
                                         r"needs text"):
        list(text_files_dataset(folder))


def test_empty_texts_beside_real_ones_are_kept(tmp_path):
    (tmp_path / "a.txt").write_text("")
    (tmp_path / "b.txt").write_text("a film")
    assert list(text_files_dataset(tmp_path)) == ["", "a film"]  # as Keras keeps them


def test_cli_textgen_transformer_refuses_a_folder_of_one_empty_text(tmp_path, capsys):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "empty.txt").write_text("")
    checkpoint = tmp_path / "lm.h5"
    rc = main(["textgen", "train", "--model", "transformer", "--corpus", str(tmp_path / "corpus"),
               "--epochs", "1", "--checkpoint", str(checkpoint)])
    err = capsys.readouterr().err
    assert rc == 1 and "holds 1 .txt file, all empty" in err and not checkpoint.exists()


@pytest.mark.parametrize("ids, batch_size, message", [
    (np.zeros((4, 10), np.int64), 2, "hold no token but padding"),
    (np.ones((3, 10), np.int64), 4, "3 sequences are fewer than one batch of 4"),
    (np.ones((3, 10), np.int64), 0, "batch_size must be a whole number >= 1, got 0"),
])
def test_lm_batches_refuse_what_cannot_train(ids, batch_size, message):
    with pytest.raises(ValueError, match=f"lm_batches: .*{message}"):
        lm_batches(ids, batch_size=batch_size)
