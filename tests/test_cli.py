"""The command line under bad input (issue 19 rules 1, 4, 5; issue 16's command line section).

- every flag at 0, negative, NaN, infinite and absurd values stops with exit status 2 and one
  line naming the flag, before any work (parse level: nothing is trained or loaded);
- --help shows every default, never "(default: None)" or "(default: False)", and every option
  has help text; flags that would do nothing are not offered;
- an output that is one of the inputs, or an unwritable one, is refused before the work;
- one resume rule for every training command, a foreign file is never overwritten, and resuming
  honours what the user asked (or says why not).
"""
import argparse
import os
import stat
import sys

import numpy as np
import pytest

from micrograd_gen.cli import COMMANDS, build_parser, main

# ---- rule 4: every typed value is checked --------------------------------------------------------
# (command line before the flag, flag, bad values). Values that parse as a different type (a
# word for a number) are included: the message must name the flag all the same.
FLAGS = {
    "dream": (["dream", "in.png"], {
        "--octaves": ["0", "-1", "nan", "21", "2.5"],
        "--scale": ["1", "0", "-1.4", "nan", "inf", "1e300"],
        "--iterations": ["0", "-3", "nan", "1e9", "99999999999"],
        "--step": ["0", "-20", "nan", "inf", "1e39"],
        "--max-loss": ["-1", "nan", "inf", "-inf"],
        "--max-size": ["-1", "nan", "100000"],
        "--save-every": ["-1", "nan", "x"],
        "--layers": ["mixed4=nan", "=1", "mixed4=x", ",", "mixed4=inf"],
    }),
    "style": (["style", "c.png", "s.png"], {
        "--height": ["0", "-1", "31", "nan", "100000"],
        "--iterations": ["0", "-1", "nan", "1.5"],
        "--learning-rate": ["0", "-1", "nan", "inf", "1e39"],
        "--content-weight": ["-1", "nan", "inf"],
        "--style-weight": ["-1e-6", "nan", "inf"],
        "--tv-weight": ["-1", "nan", "-inf"],
        "--save-every": ["-1", "nan"],
    }),
    "train-style": (["train-style", "s.jpg", "--data", "photos"], {
        "--size": ["0", "-4", "30", "nan", "100000", "33"],
        "--batch-size": ["0", "-1", "nan", "100000"],
        "--steps": ["0", "-1", "nan", "1e99"],
        "--learning-rate": ["0", "-1", "nan", "inf", "1e9"],
        "--lr": ["0", "-1", "nan"],
        "--filters": ["0,1,1", "8,8", "-1,2,3", "nan", "8,8,8,8", "1,2,100000"],
        "--residual-blocks": ["0", "-1", "1000", "nan"],
        "--content-weight": ["-1", "nan", "inf"],
        "--style-weight": ["-1", "nan"],
        "--tv-weight": ["-1", "inf"],
        "--save-every": ["-1", "nan"],
        "--content-layer": ["block4_conv9", "block1_conv3", "mixed4", ""],
    }),
    "stylize": (["stylize", "in.png", "--model", "m.h5"], {
        "--max-size": ["-1", "nan", "100000"],
    }),
    "textgen": (["textgen", "train"], {
        "--temperature": ["0", "-1", "nan", "inf", "1e9"],
        "--length": ["0", "-5", "nan", "1e12"],
        "--epochs": ["0", "-1", "nan", "10000000"],
        "--steps-per-epoch": ["0", "-2", "nan"],
        "--batch-size": ["0", "-1", "nan", "10000000"],
        "--learning-rate": ["0", "-0.01", "nan", "inf", "1e9"],
        "--max-seconds": ["0", "-1", "nan", "inf"],
        "--sample-every": ["-1", "nan"],
        "--temperatures": ["0", "nan", "", "0.5,-1", "0.5,inf"],
    }),
    "vae": (["vae", "train"], {
        "--epochs": ["0", "-1", "nan"],
        "--batch-size": ["0", "-1", "1000000"],
        "--steps-per-epoch": ["0", "-1"],
        "--max-seconds": ["0", "-5", "nan"],
        "--eval-digits": ["0", "-5", "10001"],
        "--n": ["0", "-1", "201", "nan"],
        "--scale": ["0", "-1", "nan", "inf"],
        "--from-index": ["-1", "10000", "nan"],
        "--to-index": ["-1", "10000"],
        "--steps": ["0", "1", "-1", "100000"],
        "--digit": ["-1", "10", "nan"],
        "--alphas": ["nan", "", "1,inf", "1,x"],
    }),
    "gan": (["gan", "train"], {
        "--epochs": ["0", "-1"],
        "--batch-size": ["0", "-1", "nan"],
        "--steps-per-epoch": ["-1", "0"],
        "--max-steps": ["0", "-1"],
        "--max-seconds": ["0", "nan", "-inf"],
        "--checkpoint-every": ["-1", "nan"],
        "--width": ["0", "-1", "nan", "inf", "100", "0.001"],
        "--learning-rate": ["0", "-1", "nan"],
        "--beta-1": ["-0.1", "1", "nan", "2"],
        "--n": ["0", "-1", "100000"],
    }),
    "denoise": (["denoise", "train"], {
        "--noise": ["nan", "-1", "inf", "1e30"],
        "--n": ["-1", "0", "101", "579987"],
        "--epochs": ["0", "-1"],
        "--batch-size": ["0", "-1"],
        "--steps-per-epoch": ["0", "-1"],
        "--max-seconds": ["-1", "0"],
        "--eval-digits": ["0", "-1", "10001"],
    }),
    "bench": (["bench"], {
        "--repeat": ["0", "-1", "nan"],
        "--threads": ["0", "-1", "100000"],
    }),
    "tour": (["tour"], {}),
}
SEED_BAD = ["-1", "nan", str(2**32), "1.5"]
# Options whose value is a name or a path (checked when the command runs, before its work).
FREE_TEXT = {"--out", "--data", "--checkpoint", "--weights", "--sample",
             "--prompt", "--corpus", "--model", "--only", "--torch-python", "--markdown"}

CASES = [(command, flag, value) for command, (_, flags) in FLAGS.items()
         for flag, values in flags.items() for value in values]
CASES += [(command, "--seed", value) for command in FLAGS if command not in ("stylize", "bench")
          for value in SEED_BAD]


@pytest.mark.parametrize("command,flag,value", CASES)
def test_every_bad_value_stops_with_status_2_naming_the_flag(command, flag, value, capsys):
    prefix = FLAGS[command][0]
    assert main(prefix + [f"{flag}={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"argument {flag}" in err and "error:" in err, err
    assert repr(value) in err or "(see" in err


def _subparsers():
    parser = build_parser()
    choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    return {name: choices[name] for name in COMMANDS}


def _options(parser):
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


def test_every_typed_flag_is_in_the_table():
    """A new numeric flag must come with its bad values above."""
    for name, parser in _subparsers().items():
        if name == "weights":
            continue   # cli/weights.py: only names and paths
        listed = set(FLAGS[name][1]) | {"--seed", "--device", "--debug"} | FREE_TEXT
        for action in _options(parser):
            if action.nargs == 0 or action.choices:
                continue
            flag = next(s for s in action.option_strings if s.startswith("--"))
            if flag == "--resume":
                continue
            assert flag in listed, f"{name} {flag}: add its bad values to FLAGS"


def test_good_values_still_parse():
    parser = build_parser()
    args = parser.parse_args(["textgen", "train", "--epochs", "3", "--learning-rate", "1e-3",
                              "--temperatures", "0.2,1.5", "--sample-every", "0", "--seed", "7"])
    assert (args.epochs, args.learning_rate, args.temperatures, args.sample_every, args.seed) == \
        (3, 1e-3, [0.2, 1.5], 0, 7)
    args = parser.parse_args(["dream", "x.png", "--step", "auto", "--max-loss", "0",
                              "--layers", "mixed4=1,mixed5"])
    assert args.step is None and args.max_loss == 0 and args.layers == {"mixed4": 1.0,
                                                                        "mixed5": 1.0}
    args = parser.parse_args(["train-style", "s.jpg", "--data", "d", "--lr", "0.01"])
    assert args.learning_rate == 0.01 and args.filters is None
    assert parser.parse_args(["gan", "train", "--width", "0.25"]).width == 0.25


# ---- issue 16: --help ----------------------------------------------------------------------------
@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_every_default_and_no_empty_ones(command, capsys):
    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: False)" not in text
    parser = _subparsers()[command]
    for action in parser._actions:
        if action.dest == "help" or action.help == argparse.SUPPRESS:
            continue
        if command != "weights" or action.option_strings:
            assert action.help, f"{command} {action.option_strings or action.dest}: no help text"
    for action in _options(parser):
        # a value default is shown by the formatter, unless the help says it in its own words
        if action.default is not None and action.default is not False \
                and action.help != argparse.SUPPRESS and "default" not in (action.help or ""):
            shown = action.default if isinstance(action.default, str) else f"{action.default}"
            assert f"(default: {shown})" in text, (command, action.option_strings)


def test_flags_that_do_nothing_are_not_offered(capsys):
    for argv in (["weights", "list", "--seed", "1"], ["weights", "--device", "gpu", "list"],
                 ["weights", "--out", "x", "list"], ["stylize", "a.png", "--model", "m.h5",
                                                     "--seed", "3"],
                 ["bench", "--seed", "1"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "unrecognized arguments" in err or "invalid choice" in err, err


def test_one_spelling_and_one_resume_rule_for_every_training_command():
    subs = _subparsers()
    for name in ("textgen", "vae", "gan", "denoise", "train-style"):
        flags = {s for a in _options(subs[name]) for s in a.option_strings}
        assert {"--fresh", "--resume"} <= flags, name
    for name in ("textgen", "gan", "train-style"):
        flags = {s for a in _options(subs[name]) if a.help != argparse.SUPPRESS
                 for s in a.option_strings}
        assert "--learning-rate" in flags and "--lr" not in flags, name


# ---- rule 1 and 4: outputs -----------------------------------------------------------------------
@pytest.fixture
def picture(tmp_path):
    from PIL import Image
    path = tmp_path / "in.png"
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(path)
    return path


def _refused(argv, capsys, *words):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, err
    return err


def test_an_output_that_is_an_input_is_refused(tmp_path, picture, capsys):
    before = picture.read_bytes()
    style = tmp_path / "s.png"
    style.write_bytes(before)
    cases = [
        ["dream", str(picture), "--out", str(picture)],
        ["dream", str(picture), "--out", str(tmp_path / "." / "in.png")],
        ["style", str(picture), str(style), "--out", str(style)],
        ["style", str(picture), str(style), "--out", str(picture)],
        ["stylize", str(picture), "--model", "m.h5", "--out", str(picture)],
        ["train-style", str(style), "--data", str(tmp_path), "--out", str(style)],
        ["train-style", str(style), "--data", str(tmp_path), "--sample", str(picture),
         "--out", str(picture)],
    ]
    for argv in cases:
        _refused(argv, capsys, "--out", "destroy an input")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text " * 50)
    _refused(["textgen", "train", "--corpus", str(corpus), "--checkpoint", str(corpus)], capsys,
             "--checkpoint", "corpus")
    assert picture.read_bytes() == before and style.read_bytes() == before
    assert corpus.read_text() == "some text " * 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "in.png", "s.png"]


def test_an_unwritable_out_is_found_before_the_work(tmp_path, picture, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    for out in ("/proc/o.png", str(blocker / "x.png")):
        for argv in (["dream", str(picture)], ["style", str(picture), str(picture)],
                     ["stylize", str(picture), "--model", "m.h5"],
                     ["vae", "grid"], ["gan", "sample"], ["denoise", "show"]):
            err = _refused(argv + ["--out", out, "--checkpoint", str(tmp_path / "x.h5")]
                           if argv[0] in ("vae", "gan", "denoise") else argv + ["--out", out],
                           capsys)
            assert ".tmp" not in err
            if argv[0] not in ("vae", "gan", "denoise"):   # those first say there is no checkpoint
                assert out in err, err
    for argv in (["textgen", "train"], ["vae", "train"], ["denoise", "train"]):
        err = _refused(argv + ["--checkpoint", str(blocker / "ck.h5")], capsys, str(blocker))
        assert "is a file, not a folder" in err
    if os.geteuid() != 0:   # root writes anywhere
        locked = tmp_path / "ro"
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        _refused(["dream", str(picture), "--out", str(locked / "d.png")], capsys, "cannot write")


# ---- rule 1 and 5: training commands -------------------------------------------------------------
TEXT = "the cat sat on the mat and the dog ran far away from the cat. " * 20


def _textgen(tmp_path, *extra, checkpoint=None):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    return ["textgen", "train", "--corpus", str(corpus), "--steps-per-epoch", "1",
            "--batch-size", "8", "--sample-every", "0", "--checkpoint",
            str(checkpoint or tmp_path / "t.h5"), *extra]


def test_textgen_resumes_by_default_honours_the_learning_rate_and_fresh(tmp_path, capsys):
    from micrograd_gen.generative import char_lstm  # noqa: F401  (registers the lstm kind)
    from micrograd_gen.generative.text_training import load_text_model
    path = tmp_path / "t.h5"
    assert main(_textgen(tmp_path, "--epochs", "1")) == 0
    assert "new run" in capsys.readouterr().out
    assert main(_textgen(tmp_path, "--epochs", "2", "--learning-rate", "0.002")) == 0
    out = capsys.readouterr().out
    assert "resuming from" in out and "learning rate 0.002 (the checkpoint had 0.01)" in out
    run = load_text_model(path)
    assert len(run.history.epoch_losses) == 2 and run.optimizer.learning_rate == 0.002
    # --epochs counts from the start: nothing is left to do, and nothing is written
    stamp = path.stat().st_mtime_ns
    assert main(_textgen(tmp_path, "--epochs", "2")) == 0
    assert "nothing to train" in capsys.readouterr().out and path.stat().st_mtime_ns == stamp
    assert main(_textgen(tmp_path, "--epochs", "1", "--fresh")) == 0
    assert "--fresh: starting over" in capsys.readouterr().out
    assert len(load_text_model(path).history.epoch_losses) == 1


def test_resume_of_a_missing_checkpoint_is_an_error(tmp_path, capsys):
    for argv in (_textgen(tmp_path, "--resume"),
                 ["vae", "train", "--resume", "--checkpoint", str(tmp_path / "typo.h5")],
                 ["denoise", "train", "--resume", "--checkpoint", str(tmp_path / "typo.h5")],
                 ["gan", "train", "--resume", "--data", str(tmp_path), "--checkpoint",
                  str(tmp_path / "typo.h5")]):
        _refused(argv, capsys, "--resume: no checkpoint at", "typo.h5" if "vae" in argv else "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]


def _vae_checkpoint(path):
    from micrograd_gen.generative import vae as V
    return V.save_vae_checkpoint(path, V.VAE(seed=0))


def test_a_file_that_is_not_this_commands_checkpoint_is_never_overwritten(tmp_path, picture,
                                                                          capsys):
    vae_h5 = _vae_checkpoint(tmp_path / "vae.h5")
    keep = {p: p.read_bytes() for p in (picture, vae_h5)}
    for fresh in ([], ["--fresh"]):
        _refused(_textgen(tmp_path, *fresh, checkpoint=picture), capsys, "refusing to overwrite")
        _refused(_textgen(tmp_path, *fresh, checkpoint=vae_h5), capsys,
                 "is a VAE checkpoint, not a text model one")
        _refused(["denoise", "train", "--checkpoint", str(vae_h5), *fresh], capsys,
                 "refusing to overwrite")
        _refused(["gan", "train", "--data", str(tmp_path), "--checkpoint", str(vae_h5), *fresh],
                 capsys, "is a VAE checkpoint, not a GAN one")
        _refused(["vae", "train", "--checkpoint", str(picture), *fresh], capsys,
                 "not a VAE checkpoint")
    _refused(["gan", "sample", "--checkpoint", str(vae_h5), "--out", str(tmp_path / "f.png")],
             capsys, "not a GAN")
    _refused(["textgen", "sample", "--checkpoint", str(vae_h5)], capsys, "not a text model")
    for path, content in keep.items():
        assert path.read_bytes() == content


def test_gan_fresh_with_missing_data_leaves_the_checkpoint(tmp_path, capsys):
    from micrograd_gen.generative import dcgan
    path = tmp_path / "gan.h5"
    dcgan.GAN(width=0.125).save_checkpoint(path)
    before = path.read_bytes()
    _refused(["gan", "train", "--fresh", "--data", str(tmp_path / "none"), "--checkpoint",
              str(path)], capsys, "--data", "no such")
    assert main(["gan", "train", "--fresh", "--batch-size", "0", "--checkpoint", str(path)]) == 2
    assert "--batch-size" in capsys.readouterr().err
    assert path.read_bytes() == before
    # resuming with another --width is refused, naming both
    _refused(["gan", "train", "--data", str(tmp_path), "--checkpoint", str(path), "--width", "0.5"],
             capsys, "--width 0.5", "width 0.125")
    assert path.read_bytes() == before


def test_train_style_resume_with_another_network_names_both(tmp_path, picture, capsys):
    from micrograd_gen.generative import fast_style as F
    from micrograd_gen.tensor import Tensor
    net = F.TransformerNet((4, 4, 4), 1, name="transformer_net")
    net(Tensor(np.zeros((1, 16, 16, 3), np.float32)))
    model = F.save_model(tmp_path / "m.h5", net, step=1)
    before = model.read_bytes()
    base = ["train-style", str(picture), "--data", str(tmp_path), "--out", str(model)]
    _refused(base + ["--filters", "8,8,8"], capsys, "--filters 8,8,8", "--filters 4,4,4")
    _refused(base + ["--residual-blocks", "2"], capsys, "--residual-blocks 2",
             "--residual-blocks 1")
    _refused(base + ["--resume", "--filters", "4,4,8"], capsys, "4,4,8", "4,4,4")
    assert main(base + ["--steps", "1"]) == 0     # at step 1 of 1 already
    assert "nothing to train" in capsys.readouterr().out
    assert model.read_bytes() == before


# ---- rule 3: Ctrl-C always stops -----------------------------------------------------------------
def test_a_ctrl_c_swallowed_by_a_destructor_still_stops_the_command(monkeypatch, capsys):
    """Python can only print a KeyboardInterrupt raised in __del__ or a weakref callback (h5py's
    clean-up was one) and goes on; the command line raises it again where it stops the run."""
    import time

    from micrograd_gen.cli import tour

    class Swallowed:
        def __del__(self):
            raise KeyboardInterrupt

    def long_run(args):
        Swallowed()
        deadline = time.perf_counter() + 20
        while time.perf_counter() < deadline:
            pass
        return 0

    monkeypatch.setattr(tour, "run", long_run)
    started = time.perf_counter()
    assert main(["tour"]) == 130
    assert time.perf_counter() - started < 10
    assert "interrupted" in capsys.readouterr().err


def test_gan_resume_applies_a_new_learning_rate_and_says_when_nothing_is_left(shared_data,
                                                                              tmp_path, capsys):
    from micrograd_gen.generative import dcgan
    common = ["gan", "train", "--data", str(shared_data / "faces" / "faces64.tar"),
              "--steps-per-epoch", "1", "--batch-size", "2", "--out", str(tmp_path)]
    assert main(common + ["--epochs", "1", "--width", "0.125"]) == 0
    path = tmp_path / "gan.h5"
    stamp = path.stat().st_mtime_ns
    assert main(common + ["--epochs", "1", "--learning-rate", "3e-4"]) == 0
    assert "nothing to train" in capsys.readouterr().out and path.stat().st_mtime_ns == stamp
    assert main(common + ["--epochs", "2", "--learning-rate", "3e-4"]) == 0
    assert "--learning-rate 0.0003 replaces 0.0001" in capsys.readouterr().out
    gan = dcgan.load_gan(path)
    assert gan.step == 2 and gan.config["width"] == 0.125
    assert gan.d_optimizer.learning_rate == gan.g_optimizer.learning_rate == 3e-4


def test_a_warning_during_a_command_prints_as_one_line(monkeypatch, capsys):
    import warnings

    import micrograd_gen.cli as cli

    def warn(args):
        warnings.warn("octave 1/3 is 91x122: mixed7 keeps nothing there", UserWarning)
    monkeypatch.setattr(cli, "setup", warn)
    before = warnings.formatwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = (lambda message, category, filename, lineno, file=None, line=None:
                                sys.stderr.write(warnings.formatwarning(message, category,
                                                                        filename, lineno, line)))
        assert cli.main(["weights", "list"]) == 0
    err = capsys.readouterr().err
    assert "warning: octave 1/3 is 91x122: mixed7 keeps nothing there\n" in err
    assert "warnings.warn(" not in err and "UserWarning" not in err
    assert warnings.formatwarning is before          # put back after the command
