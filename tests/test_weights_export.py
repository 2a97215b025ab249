"""`weights export CHECKPOINT OUT.weights.h5` and `weights verify` on the command line's own training
checkpoints (generative/checkpoint.py): each kind of checkpoint becomes a Keras 3 file of the trained
model, which loads back into the model the same command builds."""
import h5py
import numpy as np
import pytest

import micrograd_gen as mg
from micrograd_gen import nn
from micrograd_gen.cli import weights as cli_weights


def _perturb(model, seed):
    """Weights no fresh model has, so that a load that does nothing cannot pass."""
    rng = np.random.default_rng(seed)
    model.set_weights([w + rng.standard_normal(w.shape).astype(w.dtype) * 0.01
                       for w in model.get_weights()])


def vae_checkpoint(path):
    from micrograd_gen.generative import vae
    model = vae.VAE(latent_dim=2)
    _perturb(model, 1)
    vae.save_vae_checkpoint(path, model, epoch=3)
    return model, lambda m: m.decoder(np.zeros((1, 2), "f4"))


def gan_checkpoint(path):
    from micrograd_gen.generative import dcgan
    gan = dcgan.GAN(latent_dim=8, width=0.125)
    _perturb(gan, 2)
    gan.save_checkpoint(path)
    return gan, lambda m: m.generator(np.full((1, 8), 0.5, "f4"))


def denoise_checkpoint(path):
    from micrograd_gen.generative import denoise
    model = denoise.build_denoiser()
    _perturb(model, 3)
    denoise.save_denoiser(model, path)
    return model, lambda m: m(np.full((1, 28, 28, 1), 0.5, "f4"))


def char_lstm_checkpoint(path):
    from micrograd_gen.data.text import CharVocabulary
    from micrograd_gen.generative import char_lstm, text_training
    model = char_lstm.build_char_lstm(vocab_size=5, maxlen=4, units=6)
    _perturb(model, 4)
    config = {**char_lstm.char_lstm_config(model), "learning_rate": 0.01}
    run = text_training.TrainedText(model, CharVocabulary("abcde"), config=config)
    text_training.save_text_model(path, run)
    return model, lambda m: m(np.eye(5, dtype="f4")[None, [0, 1, 2, 3]])


CHECKPOINTS = [vae_checkpoint, gan_checkpoint, denoise_checkpoint, char_lstm_checkpoint]


@pytest.mark.parametrize("make", CHECKPOINTS, ids=lambda m: m.__name__)
def test_export_writes_the_trained_model_for_keras_3(make, tmp_path, capsys):
    nn.clear_session()
    trained, probe = make(tmp_path / "ckpt.h5")
    out = tmp_path / "model.weights.h5"
    assert cli_weights.main(["export", str(tmp_path / "ckpt.h5"), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "in Keras 3's layout" in printed and "load_weights" in printed
    with h5py.File(out, "r") as f:
        assert "vars" in f and "layer_names" not in f.attrs and "tree" not in f
    # The same file loads into the model the command line builds, and computes the same thing.
    what, fresh = cli_weights.checkpoint_model(tmp_path / "ckpt.h5")
    _perturb(fresh, 99)
    fresh.load_weights(out)
    for a, b in zip(trained.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)
    with mg.no_grad():
        np.testing.assert_array_equal(probe(fresh).numpy(), probe(trained).numpy())


def test_export_keeps_what_it_did_not_make(tmp_path, capsys):
    denoise_checkpoint(tmp_path / "ckpt.h5")
    ckpt_bytes = (tmp_path / "ckpt.h5").read_bytes()
    mine = tmp_path / "mine.weights.h5"
    mine.write_bytes(b"someone's file")
    assert cli_weights.main(["export", str(tmp_path / "ckpt.h5"), str(mine)]) == 1
    assert "--overwrite" in capsys.readouterr().err and mine.read_bytes() == b"someone's file"
    assert cli_weights.main(["export", str(tmp_path / "ckpt.h5"), str(tmp_path / "x.h5")]) == 1
    assert ".weights.h5" in capsys.readouterr().err and not (tmp_path / "x.h5").exists()
    assert cli_weights.main(["export", str(tmp_path / "ckpt.h5"), str(mine), "--overwrite"]) == 0
    assert mine.read_bytes()[:4] == b"\x89HDF"
    assert (tmp_path / "ckpt.h5").read_bytes() == ckpt_bytes
    same = tmp_path / "ckpt.weights.h5"
    same.write_bytes(ckpt_bytes)
    assert cli_weights.main(["export", str(same), str(same), "--overwrite"]) == 1
    assert "is the checkpoint itself" in capsys.readouterr().err and same.read_bytes() == ckpt_bytes
    # A Keras weight file is not a checkpoint: said so, nothing written.
    assert cli_weights.main(["export", str(mine), str(tmp_path / "again.weights.h5")]) == 1
    assert "not a training checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "again.weights.h5").exists()


def test_verify_recognises_checkpoints(tmp_path, capsys):
    vae_checkpoint(tmp_path / "vae.h5")
    assert cli_weights.main(["verify", str(tmp_path / "vae.h5")]) == 0
    out = capsys.readouterr().out
    assert "a micrograd_gen training checkpoint" in out and "step 3" in out
    assert "model vae:" in out and "the vae (encoder, decoder) rebuilds from it" in out
    assert "--model" not in out
    # A checkpoint whose arrays do not fit its model is an error that says so.
    with h5py.File(tmp_path / "vae.h5", "r+") as f:
        del f["arrays/0"]
        f["arrays/0"] = np.zeros((1, 1), "f4")
        del f.attrs["sha256"]   # as a file from before the checksum (with it: "damaged")
    assert cli_weights.main(["verify", str(tmp_path / "vae.h5")]) == 1
    assert "shape" in capsys.readouterr().err
