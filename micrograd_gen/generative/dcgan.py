"""The book's DCGAN on 64x64 faces (2nd ed. section 12.5): models, train step, a training loop with
a monitor, checkpoints that resume exactly, and a guard against NaN losses.

    gan = GAN(seed=0)
    history = train_gan(gan, "faces64.tar", epochs=1, checkpoint_path="gan.h5", monitor_dir="out")

train_gan runs `gan.fit` over the pictures; the monitor, the checkpoints and the step limits are
callbacks. The GAN's train_step is the book's, with the two optimisers and loss trackers.

Labels follow the book: the discriminator is taught fake = 1, real = 0 (plus 0.05 * U[0, 1) label
noise), and the generator is trained with "misleading" labels 0, i.e. to make D call its images real.

Exact resume. Everything a step consumes is restored from the checkpoint: both models' weights,
both Adam states, the step count, the GAN's generator of latents and label noise, the dropout
layer's generator, and the order of the data (epoch e is shuffled by a generator seeded with
(seed, e), and a resumed epoch skips the batches already seen). Training k steps, saving, and
resuming for m steps therefore gives the same weights as k + m steps in one go.
"""
import itertools
import math
from pathlib import Path

import numpy as np

from .. import backend, callbacks, metrics, nn, ops
from ..data import image_dataset_from_directory, save_image_grid
from ..nn.training import EpochBatches
from ..tensor import Tensor, no_grad
from . import checkpoint as ckpt

LATENT_DIM = 128
IMAGE_SHAPE = (64, 64, 3)


class NaNLossError(RuntimeError):
    """A loss became NaN or infinite; training stopped before applying that step's update."""


# ---- models --------------------------------------------------------------------------------------
def _filters(count, width):
    return max(1, int(round(count * width)))


def build_discriminator(width=1.0):
    """64x64x3 image -> probability that it is fake; 404,801 weights.

    width scales every layer's filters (0.25: a quarter of them, about 1/16 of the arithmetic): the
    book's architecture at a size a CPU can train to faces in half an hour."""
    return nn.Sequential([
        nn.Input(shape=IMAGE_SHAPE),
        nn.Conv2D(_filters(64, width), kernel_size=4, strides=2, padding="same"),
        nn.LeakyReLU(negative_slope=0.2),
        nn.Conv2D(_filters(128, width), kernel_size=4, strides=2, padding="same"),
        nn.LeakyReLU(negative_slope=0.2),
        nn.Conv2D(_filters(128, width), kernel_size=4, strides=2, padding="same"),
        nn.LeakyReLU(negative_slope=0.2),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Dense(1, activation="sigmoid"),
    ], name="discriminator")


def build_generator(latent_dim=LATENT_DIM, width=1.0):
    """latent vector (latent_dim,) -> 64x64x3 image in [0, 1]; 3,979,651 weights at latent 128.

    width scales every layer's filters, as for the discriminator."""
    seed_channels = _filters(128, width)
    return nn.Sequential([
        nn.Input(shape=(latent_dim,)),
        nn.Dense(8 * 8 * seed_channels),
        nn.Reshape((8, 8, seed_channels)),
        nn.Conv2DTranspose(_filters(128, width), kernel_size=4, strides=2, padding="same"),
        nn.LeakyReLU(negative_slope=0.2),
        nn.Conv2DTranspose(_filters(256, width), kernel_size=4, strides=2, padding="same"),
        nn.LeakyReLU(negative_slope=0.2),
        nn.Conv2DTranspose(_filters(512, width), kernel_size=4, strides=2, padding="same"),
        nn.LeakyReLU(negative_slope=0.2),
        nn.Conv2D(3, kernel_size=5, padding="same", activation="sigmoid"),
    ], name="generator")


class _Frozen:
    """`with _Frozen(model):` its weights stop requiring gradients, so backward through it computes
    only the input gradients (no dW work for the discriminator during the generator's step)."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.model.trainable = False

    def __exit__(self, *exc):
        self.model.trainable = True
        return False


def _on_device(array):
    return Tensor(backend.to_module(np.asarray(array, dtype=np.float32), backend.default_name()))


class GAN(nn.Model):
    """Discriminator, generator, their two Adam optimisers (the book's: 1e-4, Keras defaults
    otherwise), the generator of latents and label noise (`rng`), and the count of steps done
    (`step`).

    `seed` seeds `rng` and, when the models are built here, their initial weights and the dropout
    mask generator (through nn.set_seed). `width` scales both models' filters (see
    build_discriminator); `learning_rate` and `beta_1` are both Adams' (the DCGAN paper's 2e-4 and
    0.5 learn faces in fewer steps than the book's 1e-4 and 0.9). All four are saved in checkpoints."""

    def __init__(self, latent_dim=LATENT_DIM, seed=0, learning_rate=1e-4, discriminator=None,
                 generator=None, width=1.0, beta_1=0.9, **kwargs):
        super().__init__(**kwargs)
        from ..optim import Adam
        self.latent_dim = latent_dim
        self.config = {"latent_dim": latent_dim, "width": float(width),
                       "learning_rate": float(learning_rate), "beta_1": float(beta_1)}
        if discriminator is None or generator is None:
            nn.set_seed(seed)
        self.discriminator = discriminator or build_discriminator(width)
        self.generator = generator or build_generator(latent_dim, width)
        self.discriminator.train()  # dropout is active in both of D's passes, as in the book
        self.d_optimizer = Adam(self.discriminator.parameters(), learning_rate=learning_rate,
                                beta_1=beta_1)
        self.g_optimizer = Adam(self.generator.parameters(), learning_rate=learning_rate,
                                beta_1=beta_1)
        self.rng = np.random.default_rng(seed)
        self.step = 0
        self.d_loss_metric = metrics.Mean(name="d_loss")
        self.g_loss_metric = metrics.Mean(name="g_loss")

    def compile(self, d_optimizer=None, g_optimizer=None):
        """The book's GAN.compile: the two optimisers (default: the ones made in __init__)."""
        super().compile(optimizer=None)
        if d_optimizer is not None:
            self.d_optimizer = d_optimizer
            d_optimizer.build(self.discriminator.trainable_weights)
        if g_optimizer is not None:
            self.g_optimizer = g_optimizer
            g_optimizer.build(self.generator.trainable_weights)

    @property
    def metrics(self):
        return [self.d_loss_metric, self.g_loss_metric]

    def call(self, z):
        return self.generator(z)

    def train_step(self, real_images):
        """The book's train_step on one batch of real images (B, 64, 64, 3) in [0, 1]: one
        discriminator step, then one generator step on a fresh batch of latents.

        Raises NaNLossError, before that optimiser's update, if a loss is not finite.
        Returns {"d_loss", "g_loss"}: their means over the epoch so far (fit resets them at each
        epoch's start).
        """
        d_loss = self.discriminator_step(real_images)
        g_loss = self.generator_step(len(real_images))
        self.step += 1
        self.d_loss_metric.update_state(d_loss)
        self.g_loss_metric.update_state(g_loss)
        return {m.name: m.result() for m in self.metrics}

    def discriminator_labels(self, batch_size):
        """1 for the batch_size generated images, then 0 for the real ones, plus 0.05 * U[0, 1)."""
        labels = np.concatenate([np.ones((batch_size, 1), np.float32),
                                 np.zeros((batch_size, 1), np.float32)])
        labels += np.float32(0.05) * self.rng.random(labels.shape, dtype=np.float32)
        return labels

    def _latents(self, batch_size):
        return _on_device(self.rng.standard_normal((batch_size, self.latent_dim), dtype=np.float32))

    def discriminator_step(self, real_images):
        """Update D on generated images (labelled fake) and real ones; G is run without a graph."""
        real = real_images if isinstance(real_images, Tensor) else _on_device(real_images)
        batch_size = real.shape[0]
        with no_grad():
            generated = self.generator(self._latents(batch_size))
        combined = ops.concatenate([generated, real], axis=0)
        labels = _on_device(self.discriminator_labels(batch_size))
        predictions = self.discriminator(combined, training=True)
        d_loss = ops.binary_crossentropy(labels, predictions)
        value = self._finite(d_loss, "discriminator")
        self.d_optimizer.zero_grad()
        d_loss.backward()
        self.d_optimizer.step()
        return value

    def generator_step(self, batch_size):
        """Update G so that D calls its images real (label 0). D is frozen meanwhile: backward
        goes through it for the input gradient only, and its weights get no gradient at all."""
        misleading_labels = _on_device(np.zeros((batch_size, 1), np.float32))
        with _Frozen(self.discriminator):
            predictions = self.discriminator(self.generator(self._latents(batch_size)),
                                             training=True)
            g_loss = ops.binary_crossentropy(misleading_labels, predictions)
            value = self._finite(g_loss, "generator")
            self.g_optimizer.zero_grad()
            g_loss.backward()
        self.g_optimizer.step()
        return value

    def _finite(self, loss, which):
        value = float(loss)
        if not math.isfinite(value):
            raise NaNLossError(f"the {which} loss became {value} at step {self.step + 1}; "
                               "training stopped before that update")
        return value

    def generate(self, z):
        """Images (M, 64, 64, 3) in [0, 1] as NumPy float32, for latent vectors z (M, latent_dim)."""
        with no_grad():
            return self.generator(_on_device(z)).numpy()

    # ---- checkpoints ----------------------------------------------------------------------------
    def _generators(self):
        # Keyed by position, not by layer name: automatic names differ from one process to another.
        dropout = [layer for layer in self.discriminator.layers if isinstance(layer, nn.Dropout)]
        return {"gan": self.rng,
                **{f"dropout/{i}": d._rng_for_layer() for i, d in enumerate(dropout)}}

    def save_checkpoint(self, path, extra=None):
        """Weights, both optimiser states, the step and every random generator, atomically."""
        rngs = {name: g.bit_generator.state for name, g in self._generators().items()}
        return ckpt.save_checkpoint(
            path, models={"generator": self.generator, "discriminator": self.discriminator},
            optimizers={"g_optimizer": self.g_optimizer, "d_optimizer": self.d_optimizer},
            step=self.step, extra={"rngs": rngs, **self.config, **(extra or {})})

    def load_checkpoint(self, path):
        """Restore what save_checkpoint wrote; returns the payload's `extra` dict."""
        saved = checkpoint_config(path)
        for key in ("latent_dim", "width"):   # checked first: the weights' shapes follow from them
            if float(saved[key]) != float(self.config[key]):
                raise ValueError(f"{path}: checkpoint has {key} {saved[key]}, this GAN has "
                                 f"{self.config[key]} (dcgan.load_gan builds the right one)")
        payload = ckpt.load_checkpoint(
            path, models={"generator": self.generator, "discriminator": self.discriminator},
            optimizers={"g_optimizer": self.g_optimizer, "d_optimizer": self.d_optimizer},
            generators=self._generators())
        for optimizer in (self.d_optimizer, self.g_optimizer):  # the rate it was built with wins
            optimizer.learning_rate = self.config["learning_rate"]
        self.step = int(payload["step"])
        return payload["extra"]


def checkpoint_config(path):
    """The GAN(...) arguments a checkpoint was trained with: latent_dim, width, learning_rate,
    beta_1 (the book's values where an older checkpoint does not say)."""
    extra = ckpt.read_checkpoint(path)["extra"]
    return {"latent_dim": int(extra.get("latent_dim", LATENT_DIM)),
            "width": float(extra.get("width", 1.0)),
            "learning_rate": float(extra.get("learning_rate", 1e-4)),
            "beta_1": float(extra.get("beta_1", 0.9))}


def load_gan(path):
    """A GAN restored from a checkpoint written by train_gan / GAN.save_checkpoint."""
    gan = GAN(**checkpoint_config(path))
    gan.load_checkpoint(path)
    return gan


def read_checkpoint_step(path):
    """The number of steps a checkpoint has done."""
    return int(ckpt.read_checkpoint(path)["step"])


def read_history(path):
    """The per-step history stored in a checkpoint: {"step", "epoch", "d_loss", "g_loss"} lists."""
    history = ckpt.read_checkpoint(path)["extra"].get("history", {})
    return {k: np.asarray(v).tolist() for k, v in history.items()}


# ---- data ----------------------------------------------------------------------------------------
def _epoch_batches(data, epoch, batch_size, seed):
    """The batches of one epoch, in an order fixed by (seed, epoch).

    `data` is an array of images (N, 64, 64, 3) (uint8, or floats in [0, 1]) or a folder / .tar
    of pictures, streamed through image_dataset_from_directory (smart_resize to 64x64)."""
    if isinstance(data, (str, Path)):
        return iter(image_dataset_from_directory(data, image_size=IMAGE_SHAPE[:2],
                                                 batch_size=batch_size, shuffle=True,
                                                 seed=[seed, epoch]))
    order = np.random.default_rng([seed, epoch]).permutation(len(data))

    def batches():
        for start in range(0, len(data), batch_size):
            batch = np.asarray(data[order[start:start + batch_size]])
            yield (batch.astype(np.float32) / np.float32(255) if batch.dtype == np.uint8
                   else batch.astype(np.float32, copy=False))
    return batches()


def _count(data):
    if isinstance(data, (str, Path)):
        return len(image_dataset_from_directory(data, batch_size=1, shuffle=False))
    return len(data)


# ---- monitor ------------------------------------------------------------------------------------
def fixed_latents(n=16, latent_dim=LATENT_DIM, seed=1234):
    """The same latent vectors every epoch, so the monitor's grids can be compared."""
    return np.random.default_rng(seed).standard_normal((n, latent_dim), dtype=np.float32)


def save_sample_grid(gan, path, z=None, n=16, ncols=None, scale=1):
    """Generate images for latents `z` (default: n fixed ones) and write them as one PNG grid."""
    z = fixed_latents(n, gan.latent_dim) if z is None else np.asarray(z, dtype=np.float32)
    images = gan.generate(z)
    return save_image_grid(path, images, ncols=ncols or int(math.ceil(math.sqrt(len(z)))),
                           value_range=(0, 1), padding=2, scale=scale)


# ---- training through fit -----------------------------------------------------------------------
class GANMonitor(callbacks.Callback):
    """The book's GANMonitor: after each complete epoch, `folder`/epoch_NNN.png, a grid of the
    images of the same 16 latent vectors."""

    def __init__(self, folder, steps_per_epoch, n=16):
        super().__init__()
        self.folder, self.steps_per_epoch, self.n = Path(folder), steps_per_epoch, n

    def on_epoch_end(self, epoch, logs=None):
        if self.model.step == (epoch + 1) * self.steps_per_epoch:
            save_sample_grid(self.model, self.folder / f"epoch_{epoch + 1:03d}.png",
                             fixed_latents(self.n, self.model.latent_dim))


class GANCheckpoint(callbacks.Callback):
    """Record every step's losses in `history` and save the GAN (GAN.save_checkpoint, with the
    history) every `every` steps, at each epoch's end and at the end of training. `saved_step`
    is the step of the last checkpoint written (None before the first)."""

    def __init__(self, path, history, seed, every=None, saved_step=None):
        super().__init__()
        self.path, self.history, self.seed, self.every = path, history, seed, every
        self.saved_step = saved_step

    def save(self):
        if self.path and self.saved_step != self.model.step:
            self.model.save_checkpoint(self.path, extra={"history": self.history,
                                                         "seed": self.seed})
            self.saved_step = self.model.step

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.previous = epoch, None

    def on_train_batch_end(self, batch, logs=None):
        values = callbacks.step_values(self.previous, logs, batch)
        self.previous = dict(logs)
        for key, value in (("step", self.model.step), ("epoch", self.epoch + 1),
                           ("d_loss", values["d_loss"]), ("g_loss", values["g_loss"])):
            self.history[key].append(value)
        if self.every and self.model.step % self.every == 0:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.save()

    def on_train_end(self, logs=None):
        self.save()


class StepLimit(callbacks.Callback):
    """Stop once the model has done `max_steps` steps in all."""

    def __init__(self, max_steps):
        super().__init__()
        self.max_steps = max_steps

    def on_train_batch_end(self, batch, logs=None):
        if self.model.step >= self.max_steps:
            self.model.stop_training = True


def train_gan(gan, data, epochs=1, batch_size=32, steps_per_epoch=None, checkpoint_path=None,
              checkpoint_every=None, monitor_dir=None, resume=True, max_steps=None,
              max_seconds=None, seed=0, log=None):
    """Train `gan` on `data` (an image array or a folder / .tar of pictures) with gan.fit.

    An epoch is ceil(N / batch_size) steps, or `steps_per_epoch` for short runs; `epochs` counts
    from the start of training, so a resumed run goes on to the same end. With `checkpoint_path`,
    a checkpoint is written every `checkpoint_every` steps, at each epoch's end and when the run
    stops (max_steps, max_seconds), with history.json and history.png beside it; if the file
    exists and `resume`, training resumes from it (mid-epoch too: the epoch's order is fixed by
    (seed, epoch) and the batches already seen are passed over).
    `monitor_dir` gets `epoch_NNN.png`, a grid of 16 images from fixed latents, after each epoch.

    A loss that becomes NaN raises NaNLossError naming the step and the last good checkpoint,
    which is left as it was. Returns the history: {"step", "epoch", "d_loss", "g_loss"} lists over
    every step of the run so far (a resumed run includes the steps before the checkpoint).
    """
    log = log or (lambda line: ckpt.emit(None, line))
    per_epoch = math.ceil(_count(data) / batch_size)
    steps = min(per_epoch, steps_per_epoch) if steps_per_epoch else per_epoch
    history = {"step": [], "epoch": [], "d_loss": [], "g_loss": []}
    if checkpoint_path and resume and Path(checkpoint_path).exists():
        extra = gan.load_checkpoint(checkpoint_path)
        history = {k: np.asarray(v).tolist() for k, v in extra.get("history", history).items()}
        log(f"gan: resumed from {checkpoint_path} at step {gan.step}")
    gan.compile()
    saved_step = gan.step if checkpoint_path and Path(checkpoint_path).exists() else None
    saver = GANCheckpoint(checkpoint_path, history, seed, checkpoint_every, saved_step)
    first_epoch, skip = divmod(gan.step, steps)
    if first_epoch >= epochs or (max_steps is not None and gan.step >= max_steps):
        return history

    def batches(epoch):
        # A resumed epoch passes over the batches it had already trained on.
        start = skip if epoch == first_epoch else 0
        return itertools.islice(_epoch_batches(data, epoch, batch_size, seed), start, steps)

    run_callbacks = [callbacks.ProgbarLogger(log=log, label="gan "), saver]
    if checkpoint_path:
        run_callbacks.append(callbacks.HistoryWriter(Path(checkpoint_path).parent,
                                                     _history_writer_start(history)))
    if monitor_dir:
        run_callbacks.append(GANMonitor(monitor_dir, steps))
    if max_steps is not None:
        run_callbacks.append(StepLimit(max_steps))
    if max_seconds is not None:
        run_callbacks.append(callbacks.TimeStopping(max_seconds))
    try:
        gan.fit(EpochBatches(batches, first_epoch, steps), epochs=epochs,
                initial_epoch=first_epoch, callbacks=run_callbacks, verbose=0)
    except NaNLossError as e:
        where = (f"the last good checkpoint is {checkpoint_path} (step {saver.saved_step})"
                 if saver.saved_step is not None else "no checkpoint was written yet")
        raise NaNLossError(f"{e}; {where}") from None
    return history


def _history_writer_start(history):
    """What a HistoryWriter starts from when a run resumes: the steps so far, and each epoch's
    means over them."""
    per_epoch = {"epoch": sorted(set(history["epoch"]))}
    for key in ("d_loss", "g_loss"):
        per_epoch[key] = [float(np.mean([v for v, e in zip(history[key], history["epoch"])
                                         if e == epoch])) for epoch in per_epoch["epoch"]]
    return {"per_epoch": per_epoch,
            "per_step": {"d_loss": list(history["d_loss"]), "g_loss": list(history["g_loss"])}}
