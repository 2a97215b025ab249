"""Fast style transfer (Johnson, Alahi and Fei-Fei, 2016): a feed-forward network trained once per
style, which then stylises any picture in one forward pass instead of hundreds of VGG19
evaluations.

The transformation network is Johnson et al.'s: a 9x9 convolution, two stride-2 convolutions
down, residual blocks, two stride-2 transposed convolutions up and a 9x9 convolution to RGB,
with instance normalisation (Ulyanov et al.'s improvement: each picture normalised on its own,
so the style does not depend on what else is in the batch) and ReLU between. It is trained
against the perceptual loss of `style_transfer` (VGG19 content, Gram-matrix style and total
variation terms) on a folder of pictures.

Johnson et al. use 32, 64, 128 filters and 5 residual blocks, trained on 80,000 COCO pictures at
256x256 for 40,000 steps of 4 on a GPU. The defaults here are a CPU-sized network (16, 32, 64
filters, 3 residual blocks) and run; `filters` and `residual_blocks` give the paper's.

    net = train_style("starry_night.jpg", "photos/", steps=400, weights="vgg19_notop.h5")
    save_model("starry.h5", net)
    picture = stylize(load_model("starry.h5"), photo_rgb)
"""
import json
import time

import numpy as np

from .. import applications, backend, callbacks, metrics, nn, ops
from ..applications import vgg19
from ..data.images import ImageDataset, load_image, smart_resize
from ..nn.training import gradients
from ..optim import Adam
from ..tensor import Tensor, no_grad
from . import checkpoint
from .style_transfer import STYLE_LAYERS, total_variation_loss

FORMAT = "micrograd_gen-fast-style-1"
FILTERS = (16, 32, 64)
RESIDUAL_BLOCKS = 3
# Weights for training a network from scratch. The book's optimisation starts from the content
# picture, so its tiny content weight (2.5e-8) suffices there; a network must learn to keep the
# content, which needs the content term at the style term's scale.
CONTENT_LAYER = "block4_conv2"
CONTENT_WEIGHT = 2e-6
STYLE_WEIGHT = 1e-6
TV_WEIGHT = 1e-6


# ---- the transformation network -------------------------------------------------------------------

class InstanceNormalization(nn.Layer):
    """(x - mean) / sqrt(var + epsilon) * gamma + beta, with mean and variance over each picture's
    own height and width, per channel (Ulyanov et al. 2016)."""

    def __init__(self, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight("gamma", (channels,), "ones")
        self.beta = self.add_weight("beta", (channels,), "zeros")

    def call(self, x):
        mean = ops.mean(x, axis=(1, 2), keepdims=True)             # (B, 1, 1, C)
        centered = x - mean
        var = ops.mean(centered * centered, axis=(1, 2), keepdims=True)
        return centered / ops.sqrt(var + self.epsilon) * self.gamma + self.beta

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class ResidualBlock(nn.Layer):
    """x + IN(conv3x3(relu(IN(conv3x3(x))))), Johnson et al.'s block (with 'same' padding, so the
    skip needs no crop)."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = nn.Conv2D(filters, 3, padding="same", use_bias=False)
        self.norm1 = InstanceNormalization()
        self.conv2 = nn.Conv2D(filters, 3, padding="same", use_bias=False)
        self.norm2 = InstanceNormalization()

    def call(self, x):
        h = ops.relu(self.norm1(self.conv1(x)))
        return x + self.norm2(self.conv2(h))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class TransformerNet(nn.Model):
    """RGB 0..255 (B, H, W, 3) -> stylised RGB 0..255 of the same size (H and W multiples of 4 keep
    the size exactly; others come back rounded up to one, then cropped)."""

    def __init__(self, filters=FILTERS, residual_blocks=RESIDUAL_BLOCKS, **kwargs):
        super().__init__(**kwargs)
        f1, f2, f3 = (int(f) for f in filters)
        self.filters, self.residual_blocks = (f1, f2, f3), int(residual_blocks)
        # Convolutions followed by instance norm need no bias: the norm removes it.
        self.conv_in = nn.Conv2D(f1, 9, padding="same", use_bias=False)
        self.norm_in = InstanceNormalization()
        self.down1 = nn.Conv2D(f2, 3, strides=2, padding="same", use_bias=False)
        self.norm_d1 = InstanceNormalization()
        self.down2 = nn.Conv2D(f3, 3, strides=2, padding="same", use_bias=False)
        self.norm_d2 = InstanceNormalization()
        self.blocks = [ResidualBlock(f3) for _ in range(self.residual_blocks)]
        self.up1 = nn.Conv2DTranspose(f2, 3, strides=2, padding="same", use_bias=False)
        self.norm_u1 = InstanceNormalization()
        self.up2 = nn.Conv2DTranspose(f1, 3, strides=2, padding="same", use_bias=False)
        self.norm_u2 = InstanceNormalization()
        self.conv_out = nn.Conv2D(3, 9, padding="same")

    def call(self, x):
        h, w = x.shape[1:3]
        ph, pw = -h % 4, -w % 4
        if ph or pw:  # two stride-2 steps: work on a multiple of 4, crop back at the end
            x = ops.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
        y = x / 127.5 - 1.0
        y = ops.relu(self.norm_in(self.conv_in(y)))
        y = ops.relu(self.norm_d1(self.down1(y)))
        y = ops.relu(self.norm_d2(self.down2(y)))
        for block in self.blocks:
            y = block(y)
        y = ops.relu(self.norm_u1(self.up1(y)))
        y = ops.relu(self.norm_u2(self.up2(y)))
        y = (ops.tanh(self.conv_out(y)) + 1.0) * 127.5
        return y[:, :h, :w, :] if ph or pw else y

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {"filters": list(self.filters), "residual_blocks": self.residual_blocks}


# ---- the perceptual loss --------------------------------------------------------------------------

def batch_gram(features):
    """(B, C, C) Gram matrices of features (B, H, W, C)."""
    b, h, w, c = features.shape
    f = ops.reshape(features, (b, h * w, c))                   # (B, HW, C)
    return ops.gram(f)                                          # (B, C, C)


def vgg_preprocess(rgb):
    """vgg19.preprocess_input as ops, so that gradients flow through it: RGB -> BGR, minus the
    ImageNet mean."""
    return rgb[..., ::-1] - vgg19.MEAN_BGR.astype(np.float32)


class PerceptualLoss:
    """The book's style-transfer loss for a batch of generated pictures against their content
    pictures and one style picture, each term averaged over the batch.

    style: RGB 0..255 (H, W, 3) at the training size (the Gram matrices are sums over pixels, so
    the style's must be taken at the size of the pictures compared with it).
    """

    def __init__(self, style, model=None, weights="imagenet", content_weight=CONTENT_WEIGHT,
                 style_weight=STYLE_WEIGHT, tv_weight=TV_WEIGHT, content_layer=CONTENT_LAYER):
        self.model = model if model is not None else applications.VGG19(weights=weights)
        self.content_layer = content_layer
        self.features = applications.feature_extractor(self.model,
                                                       list(STYLE_LAYERS) + [content_layer])
        self.content_features = applications.feature_extractor(self.model, [content_layer])
        self.content_weight, self.style_weight, self.tv_weight = (
            float(content_weight), float(style_weight), float(tv_weight))
        self.size = int(style.shape[0] * style.shape[1])
        xp = backend.default_module()
        with no_grad():
            x = vgg19.preprocess_input(xp.asarray(np.asarray(style, np.float32)[None]))
            feats = self.features(x)
            self.style_grams = {n: batch_gram(feats[n]).data for n in STYLE_LAYERS}  # (1, C, C)

    def __call__(self, generated, content):
        """(loss, {"content", "style", "tv"}) as Tensors, for generated RGB 0..255 (B, H, W, 3)
        Tensor and the content pictures content RGB 0..255 (B, H, W, 3) array."""
        b = generated.shape[0]
        with no_grad():
            target = self.content_features(vgg19.preprocess_input(content))[self.content_layer]
        feats = self.features(vgg_preprocess(generated))
        d = feats[self.content_layer] - target.data
        content_term = self.content_weight / b * ops.sum(d * d)
        norm = 4.0 * 9.0 * float(self.size) ** 2  # the book's 4 * channels^2 * size^2
        style_term = None
        for name in STYLE_LAYERS:
            d = batch_gram(feats[name]) - self.style_grams[name]
            term = (self.style_weight / len(STYLE_LAYERS) / b / norm) * ops.sum(d * d)
            style_term = term if style_term is None else style_term + term
        tv_term = self.tv_weight / b * total_variation_loss(generated)
        return content_term + style_term + tv_term, {"content": content_term, "style": style_term,
                                                      "tv": tv_term}


# ---- training -------------------------------------------------------------------------------------

def _batches(data, size, batch_size, seed):
    """Endless RGB 0..255 batches (B, size, size, 3) from a folder or .tar of pictures: each
    picture centre-cropped to a square at 5/4 of the size, then a random size x size crop of it,
    flipped left-right half the time, so that a small folder still gives varied examples.
    The folder is checked now (a missing folder fails before any model is loaded)."""
    loaded = size + size // 4
    dataset = ImageDataset(data, image_size=(loaded, loaded), batch_size=batch_size, shuffle=True,
                           seed=seed)
    if len(dataset.file_paths) < batch_size:
        raise ValueError(f"train_style: {data} holds {len(dataset.file_paths)} pictures, fewer "
                         f"than one batch of {batch_size}")
    rng = np.random.default_rng(seed)

    def endless():
        while True:
            for batch in dataset:
                if len(batch) < batch_size:
                    continue
                out = np.empty((batch_size, size, size, 3), np.float32)
                for k, picture in enumerate(batch):
                    top, left = rng.integers(0, loaded - size + 1, size=2)
                    crop = picture[top:top + size, left:left + size]
                    out[k] = crop[:, ::-1] if rng.random() < 0.5 else crop
                yield out * np.float32(255.0)

    return endless()


class TrainStep:
    """What `callback` gets after each training step."""

    __slots__ = ("step", "steps", "loss", "parts", "seconds", "net", "optimizer")

    def __init__(self, step, steps, loss, parts, seconds, net, optimizer):
        self.step, self.steps, self.loss, self.parts = step, steps, loss, parts
        self.seconds, self.net, self.optimizer = seconds, net, optimizer


class StyleTraining(nn.Model):
    """A TransformerNet and its perceptual loss as one model for fit: each step stylises a batch of
    content pictures and moves the network's weights down the loss."""

    def __init__(self, net, loss_fn, **kwargs):
        super().__init__(**kwargs)
        self.net, self.loss_fn = net, loss_fn
        self.trackers = [metrics.Mean(name=name) for name in ("loss", "content", "style", "tv")]

    @property
    def metrics(self):
        return self.trackers

    def call(self, content):
        return self.net(content)

    def train_step(self, content):
        generated = self.net(content)
        loss, parts = self.loss_fn(generated, content.data)
        weights = self.net.trainable_weights
        self.optimizer.apply_gradients(zip(gradients(loss, weights), weights))
        for tracker, value in zip(self.trackers, [loss] + [parts[k] for k in ("content", "style",
                                                                              "tv")]):
            tracker.update_state(value)
        return {m.name: m.result() for m in self.metrics}


class _StepCallback(callbacks.Callback):
    """Hands each step to train_style's callback(TrainStep); a True answer stops training."""

    def __init__(self, callback, start_step, steps):
        super().__init__()
        self.callback, self.start_step, self.steps = callback, start_step, steps
        self.previous = None

    def on_train_batch_begin(self, batch, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        values = callbacks.step_values(self.previous, logs, batch)
        self.previous = dict(logs)
        step = TrainStep(self.start_step + batch + 1, self.steps, values["loss"],
                         {k: values[k] for k in ("content", "style", "tv")},
                         time.perf_counter() - self.started, self.model.net,
                         self.model.optimizer)
        if self.callback(step):
            self.model.stop_training = True


def load_style_picture(style, size):
    """A path or an RGB array as float32 RGB 0..255 (size, size, 3): centre-cropped to a square
    and resized (Keras's smart_resize), as the training pictures are."""
    image = load_image(style) if not hasattr(style, "shape") else np.asarray(style, np.float32)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"train_style: the style picture must be RGB (H, W, 3), got {image.shape}")
    return smart_resize(image, (size, size))


def train_style(style, data, size=256, batch_size=2, steps=400, learning_rate=1e-3,
                filters=FILTERS, residual_blocks=RESIDUAL_BLOCKS, weights="imagenet", model=None,
                content_weight=CONTENT_WEIGHT, style_weight=STYLE_WEIGHT, tv_weight=TV_WEIGHT,
                content_layer=CONTENT_LAYER, seed=0, callback=None, net=None, optimizer=None,
                start_step=0, history_dir=None):
    """Train a TransformerNet for one style picture on the pictures in `data` (a folder or an
    uncompressed .tar), at size x size, with Adam. Returns (net, optimizer).

    Trains through fit (StyleTraining.train_step). callback(TrainStep) after each step;
    returning True stops. net/optimizer/start_step continue an earlier run. With `history_dir`,
    history.json and history.png (loss, content, style and tv per step) are written there at the
    end (carrying on the curves of the run that start_step continues).
    """
    if size < 32 or size % 4:
        raise ValueError(f"train_style: size must be a multiple of 4 of at least 32, got {size}")
    if batch_size < 1 or steps < 1:
        raise ValueError(f"train_style: batch_size and steps must be positive, got {batch_size}, "
                         f"{steps}")
    batches = _batches(data, size, batch_size, seed + start_step)
    loss_fn = PerceptualLoss(load_style_picture(style, size), model=model, weights=weights,
                             content_weight=content_weight, style_weight=style_weight,
                             tv_weight=tv_weight, content_layer=content_layer)
    if net is None:
        nn.set_seed(seed)
        net = TransformerNet(filters, residual_blocks, name="transformer_net")
    # A new optimiser takes on the network's weights at its first step, once they are built.
    optimizer = optimizer if optimizer is not None else Adam(learning_rate=learning_rate)
    trainer = StyleTraining(net, loss_fn, name="style_training")
    trainer.compile(optimizer=optimizer)
    if start_step < steps:
        run_callbacks = [callbacks.TerminateOnNaN()]
        if callback is not None:
            run_callbacks.append(_StepCallback(callback, start_step, steps))
        if history_dir is not None:
            run_callbacks.append(callbacks.HistoryWriter(history_dir, resume=start_step > 0))
        trainer.fit(batches, epochs=1, steps_per_epoch=steps - start_step,
                    callbacks=run_callbacks, verbose=0)
    return net, optimizer


# ---- saving, loading, applying --------------------------------------------------------------------

def save_model(path, net, optimizer=None, step=0, extra=None):
    """One HDF5 file (written atomically) with the network's weights and configuration, and the
    optimiser's state when given (so training can resume)."""
    info = {"format": FORMAT, "config": net.get_config(), **(extra or {})}
    return checkpoint.save_checkpoint(
        path, models={"transformer_net": net},
        optimizers={"adam": optimizer} if optimizer is not None else None, step=step,
        extra={"fast_style": json.dumps(info)})


def read_model(path):
    """(net, payload) from a file save_model wrote; a clear error for any other file."""
    from pathlib import Path
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such model file: {path}")
    try:
        payload = checkpoint.read_checkpoint(path)
        info = json.loads(payload["extra"]["fast_style"])
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise checkpoint.CheckpointError(
            f"{path} is not a fast-style model written by train-style ({e})") from None
    if info.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown fast-style format {info.get('format')!r}")
    config = info["config"]
    net = TransformerNet(config["filters"], config["residual_blocks"], name="transformer_net")
    net(Tensor(np.zeros((1, 16, 16, 3), np.float32)))  # build the weights
    net.set_weights(payload["models"]["transformer_net"])
    return net, payload, info


def load_model(path):
    """The TransformerNet saved at `path`."""
    return read_model(path)[0]


def stylize(net, image):
    """Apply a trained network to an RGB 0..255 picture (H, W, 3); returns uint8 RGB (H, W, 3)."""
    data = np.asarray(image, np.float32)
    if data.ndim != 3 or data.shape[2] != 3:
        raise ValueError(f"stylize: expected an RGB picture (H, W, 3), got shape {data.shape}")
    with no_grad():
        out = net(Tensor(backend.default_module().asarray(data[None])))
    return np.clip(out.numpy()[0], 0, 255).astype(np.uint8)
