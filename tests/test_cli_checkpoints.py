"""Checkpoints under adversarial use (issue 19 rules 1 and 3): all-or-nothing loads, damaged
files (byte-mutation fuzz over each kind), one writer at a time, stale temporaries, fsync before
the rename, Ctrl-C during a write, and SIGINT / SIGKILL at random moments of a training run."""
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from micrograd_gen.generative import checkpoint as ckpt
from micrograd_gen.generative.checkpoint import CheckpointError, CheckpointLockedError
from micrograd_gen.io import WeightFileError

ROOT = Path(__file__).resolve().parents[1]


def _weights(model):
    return [w.copy() for w in model.get_weights()]


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def _small_gan(seed=0):
    from micrograd_gen.generative import dcgan
    return dcgan.GAN(seed=seed, width=0.125)


# ---- all or nothing ------------------------------------------------------------------------------
def test_checkpoint_error_is_the_documented_weight_file_error():
    assert issubclass(CheckpointError, WeightFileError) and issubclass(CheckpointError, ValueError)


def test_gan_load_with_a_missing_optimizer_changes_nothing(tmp_path):
    saved = _small_gan(seed=1)
    path = ckpt.save_checkpoint(  # as GAN.save_checkpoint, less the discriminator's optimiser
        tmp_path / "gan.h5", models={"generator": saved.generator,
                                     "discriminator": saved.discriminator},
        optimizers={"g_optimizer": saved.g_optimizer}, step=5,
        extra={"rngs": {n: g.bit_generator.state for n, g in saved._generators().items()},
               **saved.config})
    live = _small_gan(seed=2)
    before = _weights(live.generator), _weights(live.discriminator), live.rng.bit_generator.state
    with pytest.raises(CheckpointError, match="no optimizer 'd_optimizer'"):
        live.load_checkpoint(path)
    assert _same(_weights(live.generator), before[0])
    assert _same(_weights(live.discriminator), before[1])
    assert live.rng.bit_generator.state == before[2] and live.step == 0


def test_every_bad_part_is_found_before_anything_is_assigned(tmp_path):
    from micrograd_gen import nn, ops
    from micrograd_gen.optim import Adam
    from micrograd_gen.tensor import Tensor

    def dense(units, seed):
        nn.set_seed(seed)
        layer = nn.Dense(units)
        layer(Tensor(np.zeros((1, 3), np.float32)))
        return layer

    a, b = dense(2, 0), dense(2, 1)
    opt_a = Adam(a.parameters())
    ops.sum(a(Tensor(np.ones((1, 3), np.float32)))).backward()
    opt_a.step()                                    # so that it has moments to save
    rng = np.random.default_rng(0)
    good = {"models": {"a": a, "b": b}, "optimizers": {"opt": opt_a}, "rng": rng}
    path = ckpt.save_checkpoint(tmp_path / "c.h5", **good,
                                extra={"rngs": {"g": rng.bit_generator.state}})
    bad_state = dict(rng.bit_generator.state, bit_generator="MT19937")
    cases = {
        "shape": ({"a": dense(2, 2), "b": dense(4, 3)}, {}, None, {}),
        "missing model": ({"a": dense(2, 2), "c": dense(2, 3)}, {}, None, {}),
        "optimizer shapes": ({"a": dense(2, 2)}, {"opt": Adam(dense(4, 4).parameters())}, None, {}),
        "missing generator": ({"a": dense(2, 2)}, {}, None, {"h": np.random.default_rng(1)}),
    }
    for name, (models, optimizers, generator, generators) in cases.items():
        before = {k: _weights(m) for k, m in models.items()}
        states = {k: g.bit_generator.state for k, g in generators.items()}
        with pytest.raises(CheckpointError):
            ckpt.load_checkpoint(path, models=models, optimizers=optimizers, rng=generator,
                                 generators=generators)
        for k, m in models.items():
            assert _same(_weights(m), before[k]), name
        assert {k: g.bit_generator.state for k, g in generators.items()} == states
        for opt in optimizers.values():
            assert opt.iterations == 0 and not any(a is not None for s in opt._slots.values()
                                                   for a in s), name
    # a generator state that does not fit, written by hand: nothing assigned either
    target = dense(2, 5)
    before = _weights(target)
    path2 = ckpt.save_checkpoint(tmp_path / "d.h5", models={"a": a},
                                 extra={"rngs": {"g": bad_state}})
    with pytest.raises(CheckpointError, match="random generator state 'g'"):
        ckpt.load_checkpoint(path2, models={"a": target}, generators={"g": np.random.default_rng()})
    assert _same(_weights(target), before)


def test_non_finite_weights_are_neither_saved_nor_loaded(tmp_path):
    from micrograd_gen import nn
    from micrograd_gen.tensor import Tensor
    layer = nn.Dense(2)
    layer(Tensor(np.zeros((1, 3), np.float32)))
    path = ckpt.save_checkpoint(tmp_path / "good.h5", models={"m": layer})
    good = path.read_bytes()
    weights = layer.get_weights()
    weights[0][0, 0] = np.nan
    layer.set_weights(weights)
    with pytest.raises(CheckpointError, match="refusing to save model 'm': weight 0"):
        ckpt.save_checkpoint(path, models={"m": layer})
    assert path.read_bytes() == good


# ---- byte-mutation fuzz over every kind ----------------------------------------------------------
def _kinds(tmp_path):
    """{kind: (path, load(path) -> loaded weights as a list, live objects' weights or None)}."""
    from micrograd_gen.generative import denoise as D
    from micrograd_gen.generative import fast_style as F
    from micrograd_gen.generative import vae as V
    from micrograd_gen.generative.char_lstm import train_char_lstm
    from micrograd_gen.generative.text_training import load_text_model, save_text_model
    from micrograd_gen.tensor import Tensor
    kinds = {}

    gan = _small_gan(1)
    live_gan = _small_gan(2)
    kinds["gan"] = (gan.save_checkpoint(tmp_path / "gan.h5"),
                    lambda p: (live_gan.load_checkpoint(p), _weights(live_gan.generator))[1],
                    lambda: _weights(live_gan.generator) + _weights(live_gan.discriminator))
    vae, live_vae = V.VAE(seed=1), V.VAE(seed=2)
    kinds["vae"] = (V.save_vae_checkpoint(tmp_path / "vae.h5", vae),
                    lambda p: (V.load_vae_checkpoint(p, live_vae), _weights(live_vae))[1],
                    lambda: _weights(live_vae))
    den, live_den = D.build_denoiser(), D.build_denoiser()
    kinds["denoise"] = (D.save_denoiser(den, tmp_path / "den.h5"),
                        lambda p: (ckpt.load_checkpoint(p, models={"denoiser": live_den}),
                                   _weights(live_den))[1],
                        lambda: _weights(live_den))
    run = train_char_lstm("abcab " * 40, epochs=1, steps_per_epoch=1, batch_size=4, units=4,
                          maxlen=8, step=3, log=lambda line: None, progress=False)
    kinds["textgen"] = (save_text_model(tmp_path / "text.h5", run),
                        lambda p: load_text_model(p).model.get_weights(), None)
    net = F.TransformerNet((2, 2, 2), 1, name="transformer_net")
    net(Tensor(np.zeros((1, 16, 16, 3), np.float32)))
    kinds["fast_style"] = (F.save_model(tmp_path / "fs.h5", net),
                           lambda p: F.read_model(p)[0].get_weights(), None)
    return kinds


def _mutations(data, rng, count):
    """Damaged copies of `data`: flipped bytes (half of them in the first and last 4 KB, where
    HDF5 keeps its superblock, object headers and the attributes), zeroed runs, truncations."""
    n = len(data)
    for i in range(count):
        damaged = bytearray(data)
        how = i % 4
        if how in (0, 1):
            for _ in range(rng.integers(1, 8)):
                where = (rng.integers(0, min(4096, n)) if how == 0 and rng.random() < 0.5
                         else n - 1 - rng.integers(0, min(4096, n)) if how == 0
                         else rng.integers(0, n))
                damaged[where] ^= 1 << int(rng.integers(0, 8))
        elif how == 2:
            start = int(rng.integers(0, n))
            end = min(n, start + int(rng.integers(1, 256)))
            damaged[start:end] = bytes(end - start)
        else:
            damaged = damaged[:int(rng.integers(0, n))]
        yield bytes(damaged)


FUZZ_PER_KIND = 40


def test_fuzz_byte_mutations_of_every_checkpoint_kind(tmp_path):
    """Every damaged file either loads exactly what was saved (the damage hit unused bytes) or
    raises CheckpointError, and a live model is left as it was."""
    rng = np.random.default_rng(19)
    tally = {}
    for kind, (path, load, live) in _kinds(tmp_path).items():
        original = load(path)
        data = path.read_bytes()
        damaged_path = tmp_path / f"damaged_{kind}.h5"
        errors = same = 0
        for damaged in _mutations(data, rng, FUZZ_PER_KIND):
            damaged_path.write_bytes(damaged)
            before = live() if live else None
            try:
                loaded = load(damaged_path)
            except CheckpointError as e:
                errors += 1
                assert str(damaged_path) in str(e)
                if live:
                    assert _same(live(), before), f"{kind}: half-loaded after {e}"
                continue
            assert _same(loaded, original), f"{kind}: a damaged file loaded other weights"
            same += 1
        tally[kind] = (errors, same)
        assert errors + same == FUZZ_PER_KIND and errors > FUZZ_PER_KIND // 2, (kind, tally)
    print("fuzz (CheckpointError, loaded unchanged) per kind:", tally)


def test_other_files_are_a_clear_checkpoint_error(tmp_path):
    from micrograd_gen import io, nn
    from micrograd_gen.tensor import Tensor
    (tmp_path / "text.h5").write_text("not hdf5")
    layer = nn.Dense(2)
    layer(Tensor(np.zeros((1, 3), np.float32)))
    keras = tmp_path / "keras.h5"
    io.save_weights(nn.Sequential([layer]), keras)
    with h5py.File(tmp_path / "empty.h5", "w"):
        pass
    (tmp_path / "folder.h5").mkdir()
    for name, words in (("text.h5", "not an HDF5 file"), ("keras.h5", "not a micrograd_gen"),
                        ("empty.h5", "not a micrograd_gen"), ("folder.h5", "is a folder")):
        with pytest.raises(CheckpointError, match=words):
            ckpt.read_checkpoint(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        ckpt.read_checkpoint(tmp_path / "none.h5")


# ---- writing: interrupted, failing, fsync, stale temporaries -------------------------------------
def _dense():
    from micrograd_gen import nn
    from micrograd_gen.tensor import Tensor
    layer = nn.Dense(3)
    layer(Tensor(np.zeros((1, 4), np.float32)))
    return layer


def test_ctrl_c_during_a_write_finishes_it_then_stops(tmp_path, monkeypatch):
    layer = _dense()
    path = ckpt.save_checkpoint(tmp_path / "c.h5", models={"m": layer}, step=1)
    original = h5py.Group.create_dataset
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)   # Ctrl-C in the middle of the write
            time.sleep(0.05)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(path, models={"m": layer}, step=2)
    monkeypatch.setattr(h5py.Group, "create_dataset", original)
    assert len(calls) == 3     # the write went on to the end (the tree, kernel, bias) ...
    assert ckpt.read_checkpoint(path)["step"] == 2  # ... and is in place, whole
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert [p.name for p in tmp_path.iterdir()] == ["c.h5"]


def test_a_failed_write_keeps_the_old_checkpoint_and_names_the_path(tmp_path, monkeypatch):
    layer = _dense()
    path = ckpt.save_checkpoint(tmp_path / "c.h5", models={"m": layer}, step=1)

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(h5py.Group, "create_dataset", full_disk)
    with pytest.raises(OSError, match=f"cannot write {path}") as info:
        ckpt.save_checkpoint(path, models={"m": layer}, step=2)
    assert ".tmp" not in str(info.value)
    assert ckpt.read_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.h5"]


def test_the_temporary_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(
        f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else fd)), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(a))),
                                                     real_replace(a, b)))
    ckpt.save_checkpoint(tmp_path / "c.h5", models={"m": _dense()})
    kinds = [e[0] for e in events]
    assert kinds.index("fsync") < kinds.index("replace")
    if os.path.exists("/proc/self/fd"):
        assert events[0][1] == events[kinds.index("replace")][1]   # the temporary itself


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    path = tmp_path / "c.h5"
    stale = tmp_path / f".c.tmp{_dead_pid()}.h5"
    live = tmp_path / f".c.tmp{os.getppid()}.h5"     # a running process's write in progress
    other = tmp_path / f".d.tmp{_dead_pid()}.png"    # another file's: left to the folder sweep
    kept = [tmp_path / "notes.tmp1.txt", tmp_path / ".c.tmp.h5", tmp_path / "c.tmp9.h5"]
    for p in (stale, live, other, *kept):
        p.write_bytes(b"x" * 1000)
    ckpt.save_checkpoint(path, models={"m": _dense()})
    assert not stale.exists() and live.exists() and other.exists()
    # a training command sweeps its folder before it starts
    assert ckpt.remove_stale_temporaries(tmp_path) == [other]
    assert live.exists() and all(p.exists() for p in kept)


# ---- one writer at a time ------------------------------------------------------------------------
def test_a_second_writer_gets_a_clear_error(tmp_path):
    path = tmp_path / "t.h5"
    code = ("import sys; from micrograd_gen.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat. " * 40)
    argv = ["textgen", "train", "--corpus", str(corpus), "--epochs", "1", "--steps-per-epoch", "1",
            "--batch-size", "4", "--sample-every", "0", "--checkpoint", str(path)]
    with ckpt.lock(path):
        with ckpt.lock(path):          # re-entrant in one process
            pass
        second = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 1, second.stderr
        assert f"is being written by process {os.getpid()}" in second.stderr
        assert not path.exists()
        # the API's own writes are refused as well
        probe = ("import sys; from micrograd_gen.generative import checkpoint as c; "
                 "c.save_checkpoint(sys.argv[1], step=1)")
        api = subprocess.run([sys.executable, "-c", probe, str(path)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert api.returncode == 1 and "CheckpointLockedError" in api.stderr
    assert not ckpt.lock_path(path).exists()
    # a holder killed with SIGKILL leaves no lock behind
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from micrograd_gen."
                               "generative import checkpoint as c; held = c.lock(sys.argv[1]); "
                               "held.__enter__();"
                               " print('held', flush=True); time.sleep(60)", str(path)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(CheckpointLockedError):
        with ckpt.lock(path):
            pass
    holder.kill()
    holder.wait()
    with ckpt.lock(path):
        pass


# ---- kill test: SIGINT and SIGKILL at random moments of a training run ---------------------------
@pytest.mark.parametrize("kills", [
    {"SIGINT": 3, "SIGKILL": 2},
    pytest.param({"SIGINT": 20, "SIGKILL": 15}, marks=pytest.mark.slow)])
def test_sigint_stops_and_sigkill_never_loses_the_last_checkpoint(tmp_path, kills):
    from micrograd_gen.generative import char_lstm  # noqa: F401  (registers the lstm kind)
    from micrograd_gen.generative.text_training import load_text_model
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat and the dog ran far away. " * 30)
    path = tmp_path / "t.h5"
    argv = [sys.executable, "-m", "micrograd_gen", "textgen", "train", "--corpus", str(corpus),
            "--epochs", "100000", "--steps-per-epoch", "1", "--batch-size", "4",
            "--sample-every", "0", "--checkpoint", str(path)]
    rng = random.Random(3)
    order = [s for s, n in kills.items() for _ in range(n)]
    rng.shuffle(order)
    epochs = 0
    passed = {s: 0 for s in kills}
    for how in order:
        child = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        saves = []
        reader = threading.Thread(target=lambda: saves.extend(
            line for line in child.stdout if "saved" in line), daemon=True)
        reader.start()
        deadline = time.time() + 120
        while not saves and time.time() < deadline and child.poll() is None:
            time.sleep(0.02)
        assert saves, f"no checkpoint written: {child.stderr.read() if child.poll() else ''}"
        time.sleep(rng.uniform(0, 0.3))
        child.send_signal(getattr(signal, how))
        try:
            rc = child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            pytest.fail(f"{how}: the run did not stop")
        reader.join(5)
        err = child.stderr.read()
        if how == "SIGINT":
            assert rc == 130 and "interrupted" in err, (rc, err[-2000:])
            assert "Exception ignored" not in err, err[-2000:]
        else:
            assert rc == -signal.SIGKILL
        run = load_text_model(path)             # the last checkpoint always loads
        assert len(run.history.epoch_losses) >= epochs
        epochs = len(run.history.epoch_losses)
        assert not ckpt.lock_path(path).exists() or how == "SIGKILL"
        passed[how] += 1
    # the next run removes what a killed writer left
    subprocess.run(argv[:argv.index("--epochs") + 1] + [str(epochs + 1)] + argv[argv.index(
        "--epochs") + 2:], cwd=ROOT, capture_output=True, timeout=120, check=True)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]   # no .tmp, .lock
    print("kills stopped cleanly with the last checkpoint loading:", passed)
