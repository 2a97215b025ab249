"""A convolutional denoising autoencoder on MNIST: noisy digit in, clean digit out.

The model is the Keras example's ("Convolutional autoencoder for image denoising"): two
Conv2D(32, 3, relu, same) + MaxPooling2D(2) down to 7x7, two Conv2DTranspose(32, 3, stride 2,
relu) back to 28x28, and Conv2D(1, 3, sigmoid); 28,353 weights. Noise as in "Building
Autoencoders in Keras": x + 0.5 * N(0, 1), clipped to [0, 1], drawn afresh for every batch.
The loss is Keras's binary cross-entropy averaged over the pixels; Adam at 1e-3.
"""
import numpy as np

from .. import callbacks, nn
from ..data import save_image_grid
from ..tensor import no_grad
from . import checkpoint as ckpt
from .vae import as_digit_batch, digits_float

NOISE_FACTOR = 0.5


def build_denoiser():
    """(N, 28, 28, 1) noisy digits -> (N, 28, 28, 1) pixel probabilities."""
    inputs = nn.Input(shape=(28, 28, 1))
    x = nn.Conv2D(32, 3, activation="relu", padding="same")(inputs)
    x = nn.MaxPooling2D(2, padding="same")(x)
    x = nn.Conv2D(32, 3, activation="relu", padding="same")(x)
    x = nn.MaxPooling2D(2, padding="same")(x)
    x = nn.Conv2DTranspose(32, 3, strides=2, activation="relu", padding="same")(x)
    x = nn.Conv2DTranspose(32, 3, strides=2, activation="relu", padding="same")(x)
    outputs = nn.Conv2D(1, 3, activation="sigmoid", padding="same")(x)
    return nn.Model(inputs, outputs, name="denoiser")


def add_noise(clean, rng, noise_factor=NOISE_FACTOR):
    """clean float32 (N, 28, 28, 1) in [0, 1] (NumPy) -> clip(clean + factor * N(0, 1), 0, 1)."""
    noise = rng.standard_normal(clean.shape, dtype=np.float32)
    return np.clip(clean + np.float32(noise_factor) * noise, 0, 1)


def train_denoiser(x, epochs=1, batch_size=128, noise_factor=NOISE_FACTOR, model=None,
                   steps_per_epoch=None, max_seconds=None, seed=0, log=None, history_dir=None):
    """Train on digits `x` (uint8 (N, 28, 28) or floats in [0, 1]) with model.fit, binary
    cross-entropy and Adam(1e-3); fresh noise for every batch. With `history_dir`,
    history.json and history.png are written there after every epoch.

    Returns (model, history), history a list of per-epoch dicts (epoch, steps, loss, seconds).
    """
    from ..optim import Adam
    if model is None:
        nn.set_seed(seed)
        model = build_denoiser()
    model.compile(optimizer=Adam(learning_rate=1e-3), loss="binary_crossentropy")
    n = len(x)
    steps = -(-n // batch_size)
    if steps_per_epoch is not None:
        steps = min(steps, int(steps_per_epoch))
    rng = np.random.default_rng(seed)   # one generator for the order and the noise, in turn

    class NoisyDigits:
        def __len__(self):
            return steps

        def __iter__(self):
            order = rng.permutation(n)
            for step in range(steps):
                clean = digits_float(x[order[step * batch_size:(step + 1) * batch_size]])
                yield add_noise(clean, rng, noise_factor), clean

    history = []

    def record(epoch, logs):
        history.append({"epoch": epoch + 1, "steps": recorder.steps, "loss": logs["loss"],
                        "seconds": recorder.seconds})

    recorder = callbacks.EpochRecorder(record)
    run_callbacks = [callbacks.TerminateOnNaN(), callbacks.ProgbarLogger(log=log, label="denoise "),
                     recorder]
    if history_dir is not None:
        run_callbacks.append(callbacks.HistoryWriter(history_dir))
    if max_seconds is not None:
        run_callbacks.append(callbacks.TimeStopping(max_seconds))
    model.fit(NoisyDigits(), epochs=epochs, callbacks=run_callbacks)
    return model, history


def denoise(model, noisy, batch_size=500):
    """Run the model on noisy digits (N, 28, 28[, 1]) in [0, 1]: NumPy float32 (N, 28, 28)."""
    out = []
    with no_grad():
        for start in range(0, len(noisy), batch_size):
            out.append(model(as_digit_batch(noisy[start:start + batch_size])).numpy()[..., 0])
    return np.concatenate(out)


def evaluate_denoiser(model, x, noise_factor=NOISE_FACTOR, seed=0):
    """Mean binary cross-entropy per pixel between the denoised noisy digits and the clean ones,
    and the same for the noisy digits themselves (what doing nothing scores)."""
    clean = digits_float(x)[..., 0]
    noisy = add_noise(clean, np.random.default_rng(seed), noise_factor)
    denoised = denoise(model, noisy)

    def bce(p):
        p = np.clip(p, 1e-7, 1 - 1e-7)
        return float(-(clean * np.log(p) + (1 - clean) * np.log(1 - p)).mean())

    return {"denoised_bce": bce(denoised), "noisy_bce": bce(noisy)}


def save_denoise_grid(model, x, path, noise_factor=NOISE_FACTOR, seed=0, scale=2):
    """Three rows for the digits `x` (N, 28, 28): noisy, denoised, clean; written as one PNG."""
    clean = digits_float(x)[..., 0]
    noisy = add_noise(clean, np.random.default_rng(seed), noise_factor)
    denoised = denoise(model, noisy)
    rows = np.concatenate([noisy, denoised, clean])
    return save_image_grid(path, rows, ncols=len(clean), value_range=(0, 1), padding=2,
                           row_labels=["noisy", "denoised", "clean"], scale=scale)


def save_denoiser(model, path, history=()):
    """The weights (and the training history) in one checkpoint file, written atomically."""
    return ckpt.save_checkpoint(path, models={"denoiser": model}, extra={"history": list(history)})


def load_denoiser(path):
    model = build_denoiser()
    ckpt.load_checkpoint(path, models={"denoiser": model})
    return model
