"""The denoising autoencoder: the noise, a few training steps, the before/after picture, the CLI."""
import numpy as np
import pytest
from PIL import Image

from micrograd_gen.cli import main
from micrograd_gen.generative import denoise as D
from test_vae import synthetic_digits


def test_model_size():
    assert D.build_denoiser().count_params() == 28_353


def test_noise_is_gaussian_times_factor_clipped():
    clean = np.full((200, 28, 28, 1), 0.5, np.float32)
    noisy = D.add_noise(clean, np.random.default_rng(0), noise_factor=0.5)
    assert noisy.min() == 0 and noisy.max() == 1  # clipped at both ends
    inside = noisy[(noisy > 0) & (noisy < 1)]
    assert abs(np.mean(noisy) - 0.5) < 0.01
    expected = np.random.default_rng(0).standard_normal(clean.shape, dtype=np.float32)
    np.testing.assert_allclose(noisy, np.clip(0.5 + 0.5 * expected, 0, 1))
    assert 0.6 < inside.size / noisy.size < 0.75  # |N(0, 1)| < 1 about 68% of the time


def test_a_few_steps_lower_the_loss_and_the_picture_has_three_rows(tmp_path):
    x, _ = synthetic_digits(64)
    lines = []
    model, history = D.train_denoiser(x, epochs=3, batch_size=16, log=lines.append)
    assert history[-1]["loss"] < history[0]["loss"]
    scores = D.evaluate_denoiser(model, x[:16])
    assert scores["denoised_bce"] < scores["noisy_bce"]
    assert any("denoise epoch 3/3" in line for line in lines)

    path = D.save_denoise_grid(model, x[:5], tmp_path / "before_after.png", scale=2)
    with Image.open(path) as im:
        w, h = im.size
    assert h == 3 * 56 + 2 * 2  # noisy, denoised, clean rows of 56-pixel tiles
    assert 5 * 56 + 4 * 2 < w < 5 * 56 + 4 * 2 + 80  # plus the row labels on the left

    D.save_denoiser(model, tmp_path / "d.h5", history)
    loaded = D.load_denoiser(tmp_path / "d.h5")
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_cli_train_and_show(shared_data, tmp_path):
    mnist = str(shared_data / "mnist")
    out = tmp_path / "denoise"
    assert main(["denoise", "train", "--data", mnist, "--epochs", "1", "--steps-per-epoch", "2",
                 "--eval-digits", "100", "--out", str(out)]) == 0
    assert (out / "denoiser.h5").exists() and (out / "denoise.png").exists()
    assert main(["denoise", "show", "--data", mnist, "--checkpoint", str(out / "denoiser.h5"),
                 "--n", "4", "--out", str(tmp_path / "show.png")]) == 0
    with Image.open(tmp_path / "show.png") as im:
        assert im.size[1] == 3 * 56 + 2 * 2


@pytest.mark.slow
def test_one_epoch_on_mnist_beats_the_noisy_input(shared_data):
    from micrograd_gen.data import load_mnist
    (x_train, _), (x_test, _) = load_mnist(shared_data / "mnist", download=False)
    model, _ = D.train_denoiser(x_train, epochs=1, log=lambda line: None)
    scores = D.evaluate_denoiser(model, x_test[:2000])
    assert scores["denoised_bce"] < 0.75 * scores["noisy_bce"]
