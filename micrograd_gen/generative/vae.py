"""The book's variational autoencoder on MNIST (2nd ed. section 12.4), and the latent-space tools
around it: the grid of decoded digits, a walk between two images, encoding, concept vectors.

    (x_train, _), (x_test, _) = load_mnist()
    vae, history = train_vae(np.concatenate([x_train, x_test]), epochs=30)
    save_latent_grid(vae.decoder, "grid.png")

The encoder maps a 28x28 digit to the mean and log-variance of a 2-D Gaussian; the Sampler draws
z = mean + exp(0.5 log_var) * eps from it; the decoder maps z back to pixel probabilities. The loss
is the book's: binary cross-entropy summed over the 784 pixels and averaged over the batch, plus the
KL divergence to N(0, 1) averaged over the (batch, 2) entries (`tf.reduce_mean(kl_loss)`).
"""
import time
from pathlib import Path

import numpy as np

from .. import backend, callbacks, metrics, nn, ops
from ..data import save_gif, save_image_grid
from ..nn.training import EpochBatches, gradients
from ..tensor import Tensor, no_grad
from . import checkpoint as ckpt
from .checkpoint import emit

LATENT_DIM = 2
IMAGE_SHAPE = (28, 28, 1)


# ---- model ---------------------------------------------------------------------------------------
def build_encoder(latent_dim=LATENT_DIM):
    """x (N, 28, 28, 1) -> [z_mean, z_log_var], each (N, latent_dim); 69,076 weights at latent 2."""
    encoder_inputs = nn.Input(shape=IMAGE_SHAPE)
    x = nn.Conv2D(32, 3, activation="relu", strides=2, padding="same")(encoder_inputs)
    x = nn.Conv2D(64, 3, activation="relu", strides=2, padding="same")(x)
    x = nn.Flatten()(x)
    x = nn.Dense(16, activation="relu")(x)
    z_mean = nn.Dense(latent_dim, name="z_mean")(x)
    z_log_var = nn.Dense(latent_dim, name="z_log_var")(x)
    return nn.Model(encoder_inputs, [z_mean, z_log_var], name="encoder")


def build_decoder(latent_dim=LATENT_DIM):
    """z (N, latent_dim) -> pixel probabilities (N, 28, 28, 1); 65,089 weights at latent 2."""
    latent_inputs = nn.Input(shape=(latent_dim,))
    x = nn.Dense(7 * 7 * 64, activation="relu")(latent_inputs)
    x = nn.Reshape((7, 7, 64))(x)
    x = nn.Conv2DTranspose(64, 3, activation="relu", strides=2, padding="same")(x)
    x = nn.Conv2DTranspose(32, 3, activation="relu", strides=2, padding="same")(x)
    decoder_outputs = nn.Conv2D(1, 3, activation="sigmoid", padding="same")(x)
    return nn.Model(latent_inputs, decoder_outputs, name="decoder")


class Sampler(nn.Layer):
    """z = z_mean + exp(0.5 * z_log_var) * eps, eps ~ N(0, 1) from the layer's own generator
    (seeded by `seed=` or by nn.set_seed), so a seeded run draws the same eps every time."""

    def call(self, z_mean, z_log_var):
        eps = self._rng_for_layer().standard_normal(z_mean.shape, dtype=np.float32)
        eps = backend.to_module(eps.astype(z_mean.dtype, copy=False), z_mean.device)
        return z_mean + ops.exp(0.5 * z_log_var) * eps

    @property
    def rng(self):
        return self._rng_for_layer()


class VAE(nn.Model):
    """encoder + sampler + decoder; calling it returns (z_mean, z_log_var, reconstruction).
    Trained as the book trains it: vae.compile(optimizer=Adam()); vae.fit(digits, ...), through
    its own train_step and three loss trackers."""

    def __init__(self, encoder=None, decoder=None, latent_dim=LATENT_DIM, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder or build_encoder(latent_dim)
        self.decoder = decoder or build_decoder(latent_dim)
        self.sampler = Sampler(seed=seed)
        self.latent_dim = latent_dim
        # The book names the first "total_loss"; "loss" keeps the key this project's histories use.
        self.total_loss_tracker = metrics.Mean(name="loss")
        self.reconstruction_loss_tracker = metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = metrics.Mean(name="kl_loss")

    @property
    def metrics(self):
        return [self.total_loss_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker]

    def call(self, x):
        z_mean, z_log_var = self.encoder(x)
        z = self.sampler(z_mean, z_log_var)
        return z_mean, z_log_var, self.decoder(z)

    def train_step(self, data):
        z_mean, z_log_var, reconstruction = self(data)
        total, recon, kl = vae_loss(data, z_mean, z_log_var, reconstruction)
        grads = gradients(total, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        self.total_loss_tracker.update_state(total)
        self.reconstruction_loss_tracker.update_state(recon)
        self.kl_loss_tracker.update_state(kl)
        return {m.name: m.result() for m in self.metrics}


# ---- loss ----------------------------------------------------------------------------------------
def reconstruction_loss(x, reconstruction, reduction="mean"):
    """Binary cross-entropy (Keras's, on probabilities) summed over the pixels of each image:
    per image with reduction="none", averaged over the batch with "mean"."""
    # binary_crossentropy averages over the last axis, the single channel, so the sum over
    # (H, W) is the sum over all 784 pixels, as the book's reduce_sum(axis=(1, 2)).
    per_image = ops.sum(ops.binary_crossentropy(x, reconstruction, reduction="none"), axis=(1, 2))
    return per_image if reduction == "none" else ops.mean(per_image)


def kl_loss(z_mean, z_log_var):
    """The book's KL term: -0.5 (1 + log_var - mean^2 - exp(log_var)) averaged over every entry."""
    kl = -0.5 * (1 + z_log_var - z_mean * z_mean - ops.exp(z_log_var))
    return ops.mean(kl)


def vae_loss(x, z_mean, z_log_var, reconstruction):
    """(total, reconstruction, kl) as scalar Tensors; total = reconstruction + kl."""
    reconstruction_term = reconstruction_loss(x, reconstruction)
    kl_term = kl_loss(z_mean, z_log_var)
    return reconstruction_term + kl_term, reconstruction_term, kl_term


# ---- data ----------------------------------------------------------------------------------------
def digits_float(images):
    """uint8 (N, 28, 28) or float (N, 28, 28[, 1]) -> NumPy float32 (N, 28, 28, 1) in [0, 1].
    uint8 is scaled by 1/255 as the book does; floats are taken as they are."""
    images = np.asarray(backend.to_numpy(images.data if isinstance(images, Tensor) else images))
    x = (images.astype(np.float32) / np.float32(255) if images.dtype == np.uint8
         else images.astype(np.float32, copy=False))
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"expected digits of shape (N, 28, 28) or (N, 28, 28, 1), got "
                         f"{tuple(images.shape)}")
    return x


def as_digit_batch(images):
    """`digits_float(images)` as a Tensor on the current backend."""
    return Tensor(backend.to_module(digits_float(images), backend.default_name()))


# ---- training ------------------------------------------------------------------------------------
def train_step(vae, optimizer, x):
    """One step of the book's train_step: forward, loss, backward, Adam. Returns the three losses."""
    z_mean, z_log_var, reconstruction = vae(x)
    total, recon, kl = vae_loss(x, z_mean, z_log_var, reconstruction)
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    return float(total), float(recon), float(kl)


def train_vae(x, epochs=1, batch_size=128, vae=None, optimizer=None, steps_per_epoch=None,
              max_seconds=None, seed=0, log=None, on_epoch_end=None, checkpoint_path=None,
              resume=False):
    """Train the book's VAE on digits `x` (uint8 (N, 28, 28) or floats in [0, 1]) with vae.fit.

    Each epoch shuffles the digits (as Keras's fit does; epoch e's order comes from a generator
    seeded with (seed, e)) and runs ceil(N / batch_size) steps, or `steps_per_epoch` for a short
    run. `max_seconds` stops after the step that passes it. `log(line)` (default: stderr) gets
    progress lines within each epoch and one line per epoch with the mean total, reconstruction
    and KL losses. `on_epoch_end(epoch, vae, record)` runs after each epoch (pictures, say).
    With `checkpoint_path` a checkpoint (weights, Adam state, sampler generator, history) is
    written after each epoch, with history.json and history.png beside it; with `resume` too,
    training continues from it up to `epochs`.

    Returns (vae, history): history is a list of per-epoch dicts with keys epoch, steps, loss,
    reconstruction_loss, kl_loss, seconds.
    """
    if vae is None:
        nn.set_seed(seed)
        vae = VAE(seed=seed)
    if optimizer is None:
        from ..optim import Adam
        optimizer = Adam(learning_rate=1e-3)
    vae.compile(optimizer=optimizer)
    n = len(x)
    if n == 0:
        raise ValueError("train_vae: no digits to train on")
    steps = -(-n // batch_size)
    if steps_per_epoch is not None:
        steps = min(steps, int(steps_per_epoch))
    history, first_epoch = [], 1
    if checkpoint_path and resume and Path(checkpoint_path).exists():
        extra = load_vae_checkpoint(checkpoint_path, vae, optimizer)
        history = list(extra.get("history", []))
        first_epoch = int(extra.get("epoch", 0)) + 1
        emit(log, f"vae: resumed from {checkpoint_path} after epoch {first_epoch - 1}")

    def batches(epoch):  # fit counts epochs from 0, the records from 1
        order = np.random.default_rng([seed, epoch + 1]).permutation(n)
        for step in range(steps):
            yield as_digit_batch(x[order[step * batch_size:(step + 1) * batch_size]])

    def record(epoch, logs):
        history.append({"epoch": epoch + 1, "steps": recorder.steps, "loss": logs["loss"],
                        "reconstruction_loss": logs["reconstruction_loss"],
                        "kl_loss": logs["kl_loss"], "seconds": recorder.seconds})
        if checkpoint_path:
            save_vae_checkpoint(checkpoint_path, vae, optimizer, epoch + 1, history)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, vae, history[-1])

    recorder = callbacks.EpochRecorder(record)
    run_callbacks = [callbacks.TerminateOnNaN(), callbacks.ProgbarLogger(log=log, label="vae "),
                     recorder]
    if checkpoint_path:
        writer = callbacks.HistoryWriter.beside(checkpoint_path, resume)
        if resume and history and not writer.epochs:   # no history.json of ours: the records
            writer.epochs = {key: [record[key] for record in history] for key in (
                "epoch", "loss", "reconstruction_loss", "kl_loss")}
        run_callbacks.append(writer)
    if max_seconds is not None:
        run_callbacks.append(callbacks.TimeStopping(max_seconds))
    vae.fit(EpochBatches(batches, first_epoch - 1, steps), epochs=epochs,
            initial_epoch=min(first_epoch - 1, epochs), callbacks=run_callbacks)
    return vae, history


def save_vae_checkpoint(path, vae, optimizer=None, epoch=0, history=()):
    """Weights (encoder then decoder), Adam state, the sampler's generator, epoch and history."""
    return ckpt.save_checkpoint(
        path, models={"vae": vae}, optimizers={"optimizer": optimizer} if optimizer else None,
        step=epoch, rng=vae.sampler.rng,
        extra={"epoch": epoch, "history": list(history), "latent_dim": vae.latent_dim})


def load_vae_checkpoint(path, vae, optimizer=None):
    """Restore `vae` (and `optimizer`) in place; return the checkpoint's extra dict."""
    payload = ckpt.load_checkpoint(path, models={"vae": vae},
                                   optimizers={"optimizer": optimizer} if optimizer else None,
                                   rng=vae.sampler.rng)
    return payload["extra"]


def load_vae(path):
    """A VAE with the weights of a checkpoint written by train_vae / save_vae_checkpoint."""
    latent_dim = int(ckpt.read_checkpoint(path)["extra"].get("latent_dim", LATENT_DIM))
    vae = VAE(latent_dim=latent_dim)
    load_vae_checkpoint(path, vae)
    return vae.eval()


def evaluate_vae(vae, x, batch_size=1000, use_mean=False, seed=0):
    """Mean per-image reconstruction loss (BCE summed over 784 pixels) and mean KL on digits `x`.

    By default z is sampled as in training (the book's loss); `use_mean=True` decodes z_mean.
    """
    recon_sum, kl_sum, n = 0.0, 0.0, len(x)
    rng = np.random.default_rng(seed)
    with no_grad():
        for start in range(0, n, batch_size):
            batch = as_digit_batch(x[start:start + batch_size])
            z_mean, z_log_var = vae.encoder(batch)
            if use_mean:
                z = z_mean
            else:
                eps = rng.standard_normal(z_mean.shape, dtype=np.float32)
                z = z_mean + ops.exp(0.5 * z_log_var) * backend.to_module(eps, z_mean.device)
            reconstruction = vae.decoder(z)
            recon_sum += float(ops.sum(reconstruction_loss(batch, reconstruction, "none")))
            kl_sum += float(kl_loss(z_mean, z_log_var)) * len(batch)
    return {"reconstruction_loss": recon_sum / n, "kl_loss": kl_sum / n}


# ---- latent-space tools --------------------------------------------------------------------------
def decode(decoder, z, batch_size=1000):
    """Decode latent points z (M, latent_dim) to images: NumPy float32 (M, 28, 28) in [0, 1]."""
    z = np.asarray(backend.to_numpy(z), dtype=np.float32)
    out = []
    with no_grad():
        for start in range(0, len(z), batch_size):
            zb = Tensor(backend.to_module(z[start:start + batch_size], backend.default_name()))
            out.append(decoder(zb).numpy()[..., 0])
    return np.concatenate(out) if out else np.zeros((0, 28, 28), np.float32)


def encode(encoder, images, batch_size=1000):
    """z_mean of each image: NumPy float32 (N, latent_dim). `images` as for `as_digit_batch`."""
    out = []
    with no_grad():
        for start in range(0, len(images), batch_size):
            z_mean, _ = encoder(as_digit_batch(images[start:start + batch_size]))
            out.append(z_mean.numpy())
    return np.concatenate(out)


def latent_grid(decoder, n=30, scale=1.0):
    """The book's grid: decode z = (x_j, y_i) over [-scale, scale]^2, z[1] decreasing down the rows.

    Returns (images (n*n, 28, 28), grid_x, grid_y), images in row-major order.
    """
    grid_x = np.linspace(-scale, scale, n)
    grid_y = np.linspace(-scale, scale, n)[::-1]
    z = np.array([[xi, yi] for yi in grid_y for xi in grid_x], dtype=np.float32)
    return decode(decoder, z), grid_x, grid_y


def save_latent_grid(decoder, path, n=30, scale=1.0, tick_every=None):
    """Write the n x n grid of decoded digits as one PNG, with z[0] / z[1] axis tick labels
    (every `tick_every`-th tick, default about 10 per axis, rounded to one decimal as the book)."""
    images, grid_x, grid_y = latent_grid(decoder, n, scale)
    every = tick_every or max(1, n // 10)
    # round(v, 1) + 0.0 turns -0.0 into 0.0
    col_labels = [f"{round(v, 1) + 0.0:.1f}" if j % every == 0 else "" for j, v in enumerate(grid_x)]
    row_labels = [f"{round(v, 1) + 0.0:.1f}" if i % every == 0 else "" for i, v in enumerate(grid_y)]
    return save_image_grid(path, images, ncols=n, value_range=(0, 1),
                           row_labels=row_labels, col_labels=col_labels, xlabel="z[0]",
                           ylabel="z[1]")


def latent_walk(encoder, decoder, image_a, image_b, steps=30):
    """Decoded images along the straight line between the two images' z_mean: (steps, 28, 28)."""
    z = encode(encoder, np.stack([np.asarray(image_a), np.asarray(image_b)]))
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    return decode(decoder, (1 - t) * z[0] + t * z[1])


def save_latent_walk(encoder, decoder, image_a, image_b, path, steps=30, duration_ms=80, scale=4):
    """The walk as an animated GIF that goes there and back (pictures enlarged `scale` times)."""
    frames = latent_walk(encoder, decoder, image_a, image_b, steps)
    frames = np.concatenate([frames, frames[::-1]])
    return save_gif(path, frames, duration_ms=duration_ms, value_range=(0, 1), scale=scale)


def concept_vector(encoder, images, has_attribute):
    """mean z of the images with the attribute minus mean z of those without: (latent_dim,)."""
    has_attribute = np.asarray(has_attribute, dtype=bool)
    if has_attribute.shape != (len(images),):
        raise ValueError(f"concept_vector: has_attribute has shape {has_attribute.shape}, expected "
                         f"({len(images)},), one flag per image")
    if has_attribute.all() or not has_attribute.any():
        raise ValueError("concept_vector: needs images both with and without the attribute")
    z = encode(encoder, images)
    return z[has_attribute].mean(axis=0) - z[~has_attribute].mean(axis=0)


def concept_row(decoder, z, vector, alphas=(-2, -1, 0, 1, 2)):
    """Decode z + alpha * vector for each alpha: (len(alphas), 28, 28)."""
    z = np.asarray(z, dtype=np.float32).reshape(-1)
    alphas = np.asarray(alphas, dtype=np.float32)[:, None]
    return decode(decoder, z[None, :] + alphas * np.asarray(vector, dtype=np.float32)[None, :])


def save_concept_row(decoder, z, vector, path, alphas=(-2, -1, 0, 1, 2), scale=2):
    """The concept row as one PNG, each image labelled with its alpha."""
    images = concept_row(decoder, z, vector, alphas)
    return save_image_grid(path, images, ncols=len(images), value_range=(0, 1),
                           labels=[f"{a:+g}" for a in alphas], scale=scale, padding=2)
