"""The book's VAE: parameter counts, the loss against a NumPy formula, training lowers the loss,
and the latent-space tools (grid, walk, encoding, concept vectors) write pictures of the right size."""
import numpy as np
import pytest
from PIL import Image

from micrograd_gen import Tensor, nn
from micrograd_gen.cli import main
from micrograd_gen.generative import vae as V


def synthetic_digits(n, seed=0):
    """Blurry strokes on black, uint8 (n, 28, 28): two classes, a vertical bar and a ring."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    images, labels = np.zeros((n, 28, 28), np.uint8), np.zeros(n, np.int64)
    for i in range(n):
        cx, cy = 14 + rng.integers(-3, 4), 14 + rng.integers(-3, 4)
        if i % 2:
            mask = np.abs(np.hypot(xx - cx, yy - cy) - 7) < 1.5
        else:
            mask = (np.abs(xx - cx) < 2) & (np.abs(yy - cy) < 9)
        images[i] = mask * 255
        labels[i] = i % 2
    return images, labels


@pytest.fixture
def small_vae():
    nn.set_seed(0)
    return V.VAE(seed=0)


def test_parameter_counts_match_keras():
    assert V.build_encoder().count_params() == 69_076
    assert V.build_decoder().count_params() == 65_089


def test_loss_matches_numpy_formula():
    rng = np.random.default_rng(0)
    x = rng.random((3, 28, 28, 1))
    x[0, :2, :2, 0] = [[0, 1], [1, 0]]
    recon = rng.uniform(0.01, 0.99, (3, 28, 28, 1))
    recon[1, 0, :3, 0] = [0.0, 1.0, 1e-9]  # clipped to [1e-7, 1 - 1e-7], as Keras does
    mean, log_var = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
    total, recon_term, kl_term = V.vae_loss(*(Tensor(a, dtype=np.float64)
                                              for a in (x, mean, log_var, recon)))

    p = np.clip(recon, 1e-7, 1 - 1e-7)
    bce = -(x * np.log(p) + (1 - x) * np.log(1 - p))
    expected_recon = bce.sum(axis=(1, 2, 3)).mean()
    expected_kl = (-0.5 * (1 + log_var - mean ** 2 - np.exp(log_var))).mean()
    np.testing.assert_allclose(recon_term.item(), expected_recon, rtol=1e-12)
    np.testing.assert_allclose(kl_term.item(), expected_kl, rtol=1e-12)
    np.testing.assert_allclose(total.item(), expected_recon + expected_kl, rtol=1e-12)


def test_sampler_is_mean_plus_scaled_seeded_noise():
    sampler = V.Sampler(seed=3)
    mean = np.arange(8, dtype=np.float32).reshape(4, 2)
    log_var = np.linspace(-1, 1, 8, dtype=np.float32).reshape(4, 2)
    z = sampler(Tensor(mean), Tensor(log_var)).numpy()
    eps = np.random.default_rng(3).standard_normal((4, 2), dtype=np.float32)
    np.testing.assert_allclose(z, mean + np.exp(0.5 * log_var) * eps, rtol=1e-6)


def test_forward_shapes(small_vae):
    z_mean, z_log_var, recon = small_vae(V.as_digit_batch(synthetic_digits(5)[0]))
    assert z_mean.shape == z_log_var.shape == (5, 2)
    assert recon.shape == (5, 28, 28, 1)
    assert 0 <= recon.numpy().min() and recon.numpy().max() <= 1


def test_a_few_steps_lower_the_loss(small_vae):
    x, _ = synthetic_digits(64)
    before = V.evaluate_vae(small_vae, x)["reconstruction_loss"]
    lines = []
    vae, history = V.train_vae(x, epochs=3, batch_size=16, vae=small_vae, log=lines.append)
    after = V.evaluate_vae(vae, x)["reconstruction_loss"]
    assert after < before - 30, (before, after)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["loss"] < history[0]["loss"]
    assert all(set(h) >= {"loss", "reconstruction_loss", "kl_loss", "steps"} for h in history)
    assert any("reconstruction" in line and "kl" in line for line in lines)


def test_loss_falls_on_real_mnist(shared_data):
    from micrograd_gen.data import load_mnist
    (x_train, _), _ = load_mnist(shared_data / "mnist", download=False)
    x = x_train[:256]
    nn.set_seed(1)
    vae = V.VAE(seed=1)
    before = V.evaluate_vae(vae, x)["reconstruction_loss"]
    V.train_vae(x, epochs=2, batch_size=32, vae=vae, log=lambda line: None)
    after = V.evaluate_vae(vae, x)["reconstruction_loss"]
    assert after < before - 100, (before, after)


def test_checkpoint_resume_continues_where_it_stopped(tmp_path):
    x, _ = synthetic_digits(32)
    path = tmp_path / "vae.h5"

    def run(epochs, resume):
        nn.set_seed(0)
        vae = V.VAE(seed=0)
        return V.train_vae(x, epochs=epochs, batch_size=16, vae=vae, checkpoint_path=path,
                           resume=resume, log=lambda line: None)

    straight, history_straight = run(2, resume=False)
    path.unlink()
    run(1, resume=False)
    resumed, history_resumed = run(2, resume=True)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert [h["epoch"] for h in history_resumed] == [1, 2]
    np.testing.assert_allclose(history_resumed[1]["loss"], history_straight[1]["loss"], rtol=1e-6)
    loaded = V.load_vae(path)
    for a, b in zip(resumed.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_latent_grid_is_the_books_layout(small_vae, tmp_path):
    images, grid_x, grid_y = V.latent_grid(small_vae.decoder, n=4)
    assert images.shape == (16, 28, 28)
    np.testing.assert_allclose(grid_x, [-1, -1 / 3, 1 / 3, 1])
    np.testing.assert_allclose(grid_y, [1, 1 / 3, -1 / 3, -1])  # z[1] decreases down the rows
    top_right = V.decode(small_vae.decoder, np.array([[1.0, 1.0]]))
    np.testing.assert_allclose(images[3], top_right[0], atol=1e-6)

    path = V.save_latent_grid(small_vae.decoder, tmp_path / "grid.png", n=4)
    with Image.open(path) as im:
        w, h = im.size
    # the 112 x 112 tiles plus margins for the tick labels and the z[0] / z[1] axis names
    assert 112 < w < 112 + 80 and 112 < h < 112 + 80


def test_latent_walk_gif(small_vae, tmp_path):
    x, _ = synthetic_digits(2)
    # An untrained VAE maps both digits to nearly the same picture; spread its latent space so
    # that the frames differ after rounding to 8 bits (the GIF writer merges identical frames).
    z_mean_layer = small_vae.encoder.get_layer("z_mean")
    z_mean_layer.kernel.data *= 30
    small_vae.decoder.layers[0].kernel.data *= 30
    frames = V.latent_walk(small_vae.encoder, small_vae.decoder, x[0], x[1], steps=6)
    assert frames.shape == (6, 28, 28)
    z = V.encode(small_vae.encoder, x)
    np.testing.assert_allclose(frames[0], V.decode(small_vae.decoder, z[:1])[0], atol=1e-6)
    np.testing.assert_allclose(frames[-1], V.decode(small_vae.decoder, z[1:])[0], atol=1e-6)
    path = V.save_latent_walk(small_vae.encoder, small_vae.decoder, x[0], x[1],
                              tmp_path / "walk.gif", steps=6, scale=3)
    with Image.open(path) as im:
        assert im.size == (84, 84)
        assert im.n_frames > 6  # there and back again


def test_encode_and_concept_vector(small_vae, tmp_path):
    x, labels = synthetic_digits(20)
    z = V.encode(small_vae.encoder, x)
    assert z.shape == (20, 2)
    v = V.concept_vector(small_vae.encoder, x, labels == 1)
    np.testing.assert_allclose(v, z[labels == 1].mean(0) - z[labels == 0].mean(0), atol=1e-6)
    row = V.concept_row(small_vae.decoder, z[0], v, alphas=(-1, 0, 1))
    assert row.shape == (3, 28, 28)
    np.testing.assert_allclose(row[1], V.decode(small_vae.decoder, z[:1])[0], atol=1e-6)
    path = V.save_concept_row(small_vae.decoder, z[0], v, tmp_path / "concept.png",
                              alphas=(-1, 0, 1), scale=2)
    with Image.open(path) as im:
        w, h = im.size
    assert w == 3 * 56 + 2 * 2 and 56 < h < 56 + 20  # three tiles and a line of alpha labels
    with pytest.raises(ValueError, match="both with and without"):
        V.concept_vector(small_vae.encoder, x, np.ones(20, bool))


def test_cli_train_grid_walk(shared_data, tmp_path):
    mnist = str(shared_data / "mnist")
    out = tmp_path / "vae"
    assert main(["vae", "train", "--data", mnist, "--epochs", "1", "--steps-per-epoch", "2",
                 "--eval-digits", "200", "--n", "5", "--out", str(out)]) == 0
    assert (out / "vae.h5").exists() and (out / "grid.png").exists()
    assert main(["vae", "grid", "--checkpoint", str(out / "vae.h5"), "--n", "5",
                 "--out", str(tmp_path / "g.png")]) == 0
    assert main(["vae", "walk", "--checkpoint", str(out / "vae.h5"), "--data", mnist,
                 "--steps", "4", "--out", str(tmp_path / "w.gif")]) == 0
    assert main(["vae", "concept", "--checkpoint", str(out / "vae.h5"), "--data", mnist,
                 "--digit", "1", "--out", str(tmp_path / "c.png")]) == 0
    for name in ("g.png", "w.gif", "c.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.slow
def test_five_epochs_on_mnist_reach_the_target(shared_data):
    """The issue's figure: after 5 epochs on all 70,000 digits, test reconstruction loss < 160."""
    from micrograd_gen.data import load_mnist
    (x_train, _), (x_test, _) = load_mnist(shared_data / "mnist", download=False)
    vae, _ = V.train_vae(np.concatenate([x_train, x_test]), epochs=5, log=lambda line: None)
    assert V.evaluate_vae(vae, x_test)["reconstruction_loss"] < 160
