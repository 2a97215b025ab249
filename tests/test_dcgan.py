"""The book's DCGAN: parameter counts, which weights each half of the step touches, label noise,
exact resume from a checkpoint, the NaN guard, the monitor and the command line.

A step of the book's model takes seconds on a CPU even at small batches, so the tests of the
training loop (resume, NaN guard, monitor) run it on a miniature GAN of the same shape: same
layers, same 64x64x3 images, a few channels each. The step tests use the book's model at batch 2."""
import json

import numpy as np
import pytest
from PIL import Image

from micrograd_gen import nn
from micrograd_gen.cli import main
from micrograd_gen.generative import dcgan
from micrograd_gen.generative.checkpoint import read_checkpoint


def faces(n, seed=0):
    return np.random.default_rng(seed).random((n, 64, 64, 3), dtype=np.float32)


def mini_gan(seed=0):
    """The book's layer sequence with 4-8 channels instead of 64-512, and latent size 16."""
    nn.set_seed(seed)
    discriminator = nn.Sequential([
        nn.Input(shape=(64, 64, 3)),
        nn.Conv2D(4, 4, strides=2, padding="same"), nn.LeakyReLU(0.2),
        nn.Conv2D(8, 4, strides=4, padding="same"), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Dropout(0.2), nn.Dense(1, activation="sigmoid")])
    generator = nn.Sequential([
        nn.Input(shape=(16,)),
        nn.Dense(8 * 8 * 8), nn.Reshape((8, 8, 8)),
        nn.Conv2DTranspose(8, 4, strides=2, padding="same"), nn.LeakyReLU(0.2),
        nn.Conv2DTranspose(4, 4, strides=4, padding="same"), nn.LeakyReLU(0.2),
        nn.Conv2D(3, 5, padding="same", activation="sigmoid")])
    return dcgan.GAN(latent_dim=16, seed=seed, discriminator=discriminator, generator=generator)


@pytest.fixture(scope="module")
def gan():
    return dcgan.GAN(seed=0)


def snapshot(model):
    return [w.copy() for w in model.get_weights()]


def changed(before, model):
    return [not np.array_equal(a, b) for a, b in zip(before, model.get_weights())]


def test_parameter_counts_match_keras():
    assert dcgan.build_discriminator().count_params() == 404_801
    assert dcgan.build_generator().count_params() == 3_979_651


def test_generator_makes_64x64_rgb_in_unit_range(gan):
    images = gan.generate(np.zeros((2, 128), np.float32))
    assert images.shape == (2, 64, 64, 3)
    assert images.min() >= 0 and images.max() <= 1


def test_discriminator_step_updates_only_the_discriminator(gan):
    d_before, g_before = snapshot(gan.discriminator), snapshot(gan.generator)
    for w in gan.generator.weights:
        w.grad = None
    loss = gan.discriminator_step(faces(2))
    assert np.isfinite(loss)
    assert all(changed(d_before, gan.discriminator))
    assert not any(changed(g_before, gan.generator))
    assert all(w.grad is None for w in gan.generator.weights)  # G ran without a graph


def test_generator_step_computes_no_discriminator_gradients(gan):
    d_before, g_before = snapshot(gan.discriminator), snapshot(gan.generator)
    for w in gan.discriminator.weights:
        w.grad = None
    loss = gan.generator_step(2)
    assert np.isfinite(loss)
    assert all(changed(g_before, gan.generator))
    assert not any(changed(d_before, gan.discriminator))
    # D's weights were frozen for the step: no dW was computed or accumulated...
    assert all(w.grad is None for w in gan.discriminator.weights)
    # ...and they are trainable again afterwards.
    assert all(w.requires_grad for w in gan.discriminator.weights)
    assert len(gan.discriminator.trainable_weights) == 8


def test_label_noise_is_the_books():
    gan = dcgan.GAN(seed=1)
    labels = np.concatenate([gan.discriminator_labels(32) for _ in range(20)]).reshape(20, 64)
    fake, real = labels[:, :32], labels[:, 32:]
    assert fake.min() >= 1 and fake.max() < 1.05
    assert real.min() >= 0 and real.max() < 0.05
    noise = np.concatenate([fake - 1, real]).ravel()
    assert abs(noise.mean() - 0.025) < 0.002 and noise.std() > 0.012  # 0.05 * U[0, 1)


def test_train_step_counts_steps(gan):
    step = gan.step
    losses = gan.train_step(faces(2, seed=3))
    assert set(losses) == {"d_loss", "g_loss"} and gan.step == step + 1


def test_resume_from_checkpoint_is_exact(tmp_path):
    data = faces(8)
    kwargs = dict(epochs=2, batch_size=2, steps_per_epoch=3, seed=7, log=lambda line: None)
    straight = mini_gan(seed=0)
    history = dcgan.train_gan(straight, data, **kwargs)
    assert straight.step == 6 and history["step"] == [1, 2, 3, 4, 5, 6]

    path = tmp_path / "gan.h5"
    first = mini_gan(seed=0)
    dcgan.train_gan(first, data, checkpoint_path=path, max_steps=4, **kwargs)  # stops mid-epoch 2
    assert read_checkpoint(path)["step"] == 4
    resumed = mini_gan(seed=99)  # other initial weights and generators: all must come from the file
    history_resumed = dcgan.train_gan(resumed, data, checkpoint_path=path, **kwargs)
    assert resumed.step == 6
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    np.testing.assert_allclose(history_resumed["d_loss"], history["d_loss"], rtol=1e-6)
    np.testing.assert_allclose(history_resumed["g_loss"], history["g_loss"], rtol=1e-6)
    assert straight.rng.bit_generator.state == resumed.rng.bit_generator.state


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    path = tmp_path / "gan.h5"
    gan = mini_gan(seed=0)
    data = faces(4)
    dcgan.train_gan(gan, data, epochs=1, batch_size=2, checkpoint_path=path, log=lambda line: None)
    good = read_checkpoint(path)
    assert good["step"] == 2
    gan.generator.layers[-1].bias.data[:] = np.nan  # the generator now draws NaN images
    with pytest.raises(dcgan.NaNLossError, match=r"discriminator loss became nan at step 3.*"
                                                 r"last good checkpoint is .*gan\.h5 \(step 2\)"):
        dcgan.train_gan(gan, data, epochs=2, batch_size=2, checkpoint_path=path, resume=False,
                        log=lambda line: None)
    kept = read_checkpoint(path)
    assert kept["step"] == 2
    for a, b in zip(good["models"]["generator"], kept["models"]["generator"]):
        np.testing.assert_array_equal(a, b)
    assert all(np.isfinite(w).all() for w in kept["models"]["generator"])


def test_monitor_writes_a_grid_per_epoch(tmp_path):
    gan = mini_gan(seed=0)
    lines = []
    history = dcgan.train_gan(gan, faces(4), epochs=2, batch_size=2, steps_per_epoch=1,
                              monitor_dir=tmp_path, log=lines.append)
    assert history["epoch"] == [1, 2]
    for epoch in (1, 2):
        with Image.open(tmp_path / f"epoch_{epoch:03d}.png") as im:
            assert im.size == (4 * 64 + 3 * 2, 4 * 64 + 3 * 2)  # 16 faces, 2-pixel gaps
    assert any("d_loss" in line and "g_loss" in line for line in lines)


def test_cli_train_and_sample_on_the_faces(shared_data, tmp_path):
    tar = shared_data / "faces" / "faces64.tar"
    out = tmp_path / "gan"
    argv = ["gan", "train", "--data", str(tar), "--epochs", "1", "--steps-per-epoch", "2",
            "--batch-size", "2", "--out", str(out)]
    assert main(argv) == 0
    assert (out / "gan.h5").exists() and (out / "epoch_001.png").exists()
    history = json.loads((out / "history.json").read_text())
    assert history["step"] == [1, 2] and len(history["g_loss"]) == 2
    assert main(["gan", "sample", "--checkpoint", str(out / "gan.h5"), "--n", "4",
                 "--out", str(tmp_path / "faces.png")]) == 0
    with Image.open(tmp_path / "faces.png") as im:
        assert im.size == (2 * 64 + 2, 2 * 64 + 2)


def test_width_scales_every_layer_and_travels_with_the_checkpoint(tmp_path):
    d, g = dcgan.build_discriminator(width=0.25), dcgan.build_generator(width=0.25)
    assert [layer.filters for layer in d.layers if isinstance(layer, nn.Conv2D)] == [16, 32, 32]
    assert [layer.filters for layer in g.layers if isinstance(layer, nn.Conv2DTranspose)] == [32, 64, 128]
    assert g.layers[0].units == 8 * 8 * 32
    small = dcgan.GAN(seed=0, width=0.25, learning_rate=2e-4, beta_1=0.5)
    assert small.d_optimizer.beta_1 == small.g_optimizer.beta_1 == 0.5
    small.train_step(faces(2))
    path = small.save_checkpoint(tmp_path / "small.h5") or tmp_path / "small.h5"
    assert dcgan.checkpoint_config(path) == {"latent_dim": 128, "width": 0.25,
                                             "learning_rate": 2e-4, "beta_1": 0.5}
    loaded = dcgan.load_gan(path)
    assert loaded.step == 1
    for a, b in zip(small.generator.get_weights(), loaded.generator.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="checkpoint has width 0.25, this GAN has 1.0"):
        dcgan.GAN(seed=0).load_checkpoint(path)


def test_cli_resume_keeps_the_settings_the_run_started_with(shared_data, tmp_path, capsys):
    tar = shared_data / "faces" / "faces64.tar"
    out = tmp_path / "gan"
    common = ["gan", "train", "--data", str(tar), "--epochs", "1", "--batch-size", "2",
              "--out", str(out)]
    assert main(common + ["--steps-per-epoch", "1", "--width", "0.125", "--beta-1", "0.5"]) == 0
    # another --width cannot resume those weights: said, not ignored (issue 19 rule 5)
    assert main(common + ["--steps-per-epoch", "2", "--width", "1"]) == 1
    assert "--width 1, but" in capsys.readouterr().err
    assert main(common + ["--steps-per-epoch", "2"]) == 0   # goes on, still narrow
    assert "resuming" in capsys.readouterr().out
    config = dcgan.checkpoint_config(out / "gan.h5")
    assert config["width"] == 0.125 and config["beta_1"] == 0.5
    assert read_checkpoint(out / "gan.h5")["step"] == 2
