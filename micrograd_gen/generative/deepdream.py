"""DeepDream (Mordvintsev, Olah and Tyka, 2015) as the book's second edition writes it (§12.2).

The picture itself is optimised: gradient *ascent* on the mean squared activation of a few layers
of a pretrained convnet, so that whatever those layers half-see in the picture gets drawn more
strongly. The book's schedule, kept exactly:

- loss = sum over the chosen layers of coeff * mean(square(act[:, 2:-2, 2:-2, :])): a 2-pixel
  border of each feature map is left out, because border activations see zero padding and would
  otherwise be amplified into frame artefacts;
- each step adds `step * g / ||g||` (tf.math.l2_normalize: the norm floored at 1e-6) to the
  preprocessed image, so the step size does not depend on the loss's scale;
- octaves: the picture is processed at `int(dim / octave_scale**i)` for i = octaves-1 .. 0, smallest
  first; between octaves it is upscaled (bilinear, half-pixel centres as tf.image.resize), and the
  detail that the down-and-up-scaling lost is added back from the original, so the dream keeps the
  photo's sharpness;
- a step whose loss exceeds `max_loss` is the last of its octave (the book checks after the step,
  so that step is kept);
- on a small picture a deep layer's feature map can be all border at the smallest octaves: that
  layer is left out there (the book's code then adds the mean of an empty slice, which gives
  no gradient), with a warning; only when no layer keeps a pixel at any octave is it an error.

A loss or picture that stops being finite (a step far too large, NaN weights) stops the dream at
that step with `NonFiniteError`, before the callback sees the picture.

    from micrograd_gen.generative.deepdream import deep_dream
    picture = deep_dream(image_rgb_0_255, weights="path/to/inception_v3_notop.h5")

Works on VGG19 too (`model="vgg19"`): its lower layers give geometric textures.
"""
import math
import numbers
import time
import warnings

import numpy as np

from .. import applications, backend, ops
from ..tensor import Tensor, no_grad
from .nonfinite import NonFiniteError, check_step, count_non_finite  # noqa: F401  (run raises it)

# The book's layers and weights for InceptionV3; for VGG19, a mid-level blend that draws textures.
DEFAULT_LAYERS = {
    "inception_v3": {"mixed4": 1.0, "mixed5": 1.5, "mixed6": 2.0, "mixed7": 2.5},
    "vgg19": {"block3_conv4": 1.0, "block4_conv4": 1.0},
}
# The book's step is 20 in InceptionV3's units (pixels scaled to [-1, 1]). VGG19 works on raw
# 0..255 values, 127.5 times larger; but that same step in pixels saturates a VGG19 dream's
# colours within 20 steps, so its default is a quarter of it.
DEFAULT_STEP = {"inception_v3": 20.0, "vgg19": 20.0 * 127.5 / 4}
# The book's early stop is on InceptionV3's scale; VGG19's activations are unnormalised and far
# larger, so 15 would end every octave after its first step: no early stop there.
DEFAULT_MAX_LOSS = {"inception_v3": 15.0, "vgg19": None}
# Feature maps must keep something after the 2-pixel border is cut.
BORDER = 2

MODELS = {"inception_v3": applications.inception_v3, "vgg19": applications.vgg19}


def octave_shapes(shape, octaves=3, octave_scale=1.4):
    """The book's `successive_shapes`, smallest first: (int(h / s**i), int(w / s**i)) for
    i = octaves-1 .. 0. (400, 600) with 3 octaves of 1.4 gives (204, 306), (285, 428), (400, 600)."""
    if int(octaves) < 1:
        raise ValueError(f"deep_dream: octaves must be at least 1, got {octaves}")
    if not octave_scale > 0:
        raise ValueError(f"deep_dream: octave_scale must be positive, got {octave_scale}")
    height, width = (int(d) for d in shape)
    shapes = [(height, width)]
    for i in range(1, int(octaves)):
        shapes.append(tuple(int(dim / (octave_scale ** i)) for dim in (height, width)))
    return shapes[::-1]


def dream_loss(features, layer_weights):
    """sum of coeff * mean(act[:, 2:-2, 2:-2, :] ** 2) over `layer_weights` ({name: coeff}), from
    `features` ({name: NHWC Tensor}). Returns (total, {name: weighted term}) as Tensors."""
    total, terms = None, {}
    for name, coeff in layer_weights.items():
        act = features[name]
        h, w = act.shape[1:3]
        if h <= 2 * BORDER or w <= 2 * BORDER:
            raise ValueError(
                f"deep_dream: layer {name!r} gives a {h}x{w} feature map here, which leaves "
                f"nothing once its {BORDER}-pixel border is dropped; use a larger picture, fewer "
                f"octaves or a lower layer")
        inner = act[:, BORDER:-BORDER, BORDER:-BORDER, :]
        terms[name] = term = float(coeff) * ops.mean(inner * inner)
        total = term if total is None else total + term
    return total, terms


class DreamWarning(UserWarning):
    """A layer was left out of the dream at an octave where it has no pixel inside its border."""


def feature_shapes(model, names, image_shape):
    """{name: (height, width)} of the named layers' feature maps for a picture of `image_shape`
    (height, width), from each layer's compute_output_shape: no pixel is computed."""
    shapes = {}
    for name in model.ancestors(names):
        parents = model._parents[name]
        if not parents:
            shape = (1, *image_shape, 3)
        elif len(parents) == 1:
            shape = shapes[parents[0]]
        else:
            shape = [shapes[p] for p in parents]
        shapes[name] = model.get_layer(name).compute_output_shape(shape)
    return {name: tuple(int(d) for d in shapes[name][1:3]) for name in names}


def has_inside(size):
    """Whether a feature map of `size` (height, width) keeps a pixel once the border is cut."""
    return min(size) > 2 * BORDER


def l2_normalize(grad, epsilon=1e-12):
    """tf.math.l2_normalize over the whole array: g / sqrt(max(sum(g**2), epsilon))."""
    xp = backend.get_array_module(grad)
    norm = xp.sqrt(xp.maximum(xp.sum(grad * grad), epsilon))
    return grad / norm.astype(grad.dtype)


def model_kind(model):
    """"inception_v3" or "vgg19" for a model object, from its name."""
    name = getattr(model, "name", None)
    if name not in MODELS:
        raise ValueError(f"deep_dream: the model must be InceptionV3 or VGG19 from "
                         f"micrograd_gen.applications, got {name!r}")
    return name


def load_model(model="inception_v3", weights="imagenet"):
    """A pretrained InceptionV3 or VGG19 (frozen), from its name; a model object is returned as is."""
    if not isinstance(model, str):
        model_kind(model)
        return model
    key = model.lower().replace("-", "_")
    if key not in MODELS:
        raise ValueError(f"unknown model {model!r}: use 'inception_v3' or 'vgg19'")
    build = applications.InceptionV3 if key == "inception_v3" else applications.VGG19
    return build(include_top=False, weights=weights)


class DreamStep:
    """What `callback` gets after each gradient-ascent step (octave and step count from 1)."""

    __slots__ = ("octave", "octaves", "shape", "step", "iterations", "loss", "seconds", "image",
                 "_deprocess")

    def __init__(self, octave, octaves, shape, step, iterations, loss, seconds, image, deprocess):
        self.octave, self.octaves, self.shape = octave, octaves, shape
        self.step, self.iterations = step, iterations
        self.loss, self.seconds = loss, seconds
        self.image = image  # the current image, preprocessed, (1, H, W, 3)
        self._deprocess = deprocess

    def picture(self):
        """The current image as uint8 RGB (H, W, 3)."""
        return self._deprocess(self.image)


class DeepDream:
    """The dream's loss on one model and its gradient-ascent schedule.

    model: "inception_v3" (the book's), "vgg19", or a model from micrograd_gen.applications.
    weights: "imagenet" or a path to the Keras weight file (used when model is a name).
    layer_weights: {layer name: coefficient}; default the book's mixed4..mixed7 (1, 1.5, 2, 2.5).
    """

    def __init__(self, model="inception_v3", weights="imagenet", layer_weights=None):
        self.model = load_model(model, weights)
        self.kind = model_kind(self.model)
        module = MODELS[self.kind]
        self.preprocess_input, self.deprocess_image = module.preprocess_input, module.deprocess_image
        layer_weights = dict(DEFAULT_LAYERS[self.kind] if layer_weights is None else layer_weights)
        if not layer_weights:
            raise ValueError("deep_dream: name at least one layer")
        for name, coeff in layer_weights.items():
            if not isinstance(coeff, numbers.Real) or not math.isfinite(coeff):
                raise ValueError(f"deep_dream: the weight of layer {name!r} must be a finite "
                                 f"number, got {coeff!r}")
        self.layer_weights = layer_weights
        # raises for an unknown layer name, with the closest names; frozen conv + batch norm +
        # ReLU triples run as one conv2d each (the dream never asks for their own outputs), and
        # each Inception block is one layer whose branches the fast path runs side by side
        inference_model = applications.group_branches(
            applications.fold_batch_norm(self.model, keep=layer_weights), keep=layer_weights)
        self.features = applications.feature_extractor(inference_model, list(layer_weights))

    def loss(self, image, layer_weights=None):
        """The dream loss of a preprocessed (1, H, W, 3) image (array or Tensor), as a Tensor, over
        `layer_weights` (default: all the dream's layers)."""
        if layer_weights is None:
            layer_weights = self.layer_weights
        return dream_loss(self.features(image), layer_weights)[0]

    def loss_and_grad(self, image, layer_weights=None):
        """(loss as a float, d loss / d image as an array) for a preprocessed image array."""
        x = Tensor(image, requires_grad=True, dtype=image.dtype)
        loss = self.loss(x, layer_weights)
        loss.backward()
        return float(loss.item()), x.grad

    def gradient_ascent_step(self, image, step, layer_weights=None):
        """The book's step: image + step * l2_normalize(grad). Returns (loss before it, new image)."""
        loss, grad = self.loss_and_grad(image, layer_weights)
        return loss, image + image.dtype.type(step) * l2_normalize(grad)

    def octave_layers(self, shapes):
        """For each octave shape, the layers (with their weights) that keep pixels inside the
        border there. Raises ValueError, naming the sizes, when no layer keeps a pixel at any
        octave; otherwise warns (DreamWarning) about each octave that leaves layers out."""
        names = list(self.layer_weights)
        sizes = [feature_shapes(self.model, names, shape) for shape in shapes]
        plan = [{n: c for n, c in self.layer_weights.items() if has_inside(at[n])} for at in sizes]
        if not any(plan):
            raise ValueError(
                f"deep_dream: no layer keeps a pixel inside its {BORDER}-pixel border at any "
                f"octave: even at the largest, {shapes[-1][0]}x{shapes[-1][1]}, "
                + ", ".join(f"{n} is {h}x{w}" for n, (h, w) in sizes[-1].items())
                + "; use a larger picture (--max-size), fewer octaves or lower layers")
        for octave, (shape, at, kept) in enumerate(zip(shapes, sizes, plan), start=1):
            left_out = [f"{n} ({at[n][0]}x{at[n][1]})" for n in names if n not in kept]
            if left_out:
                what = "the other layers dream" if kept else "its steps are skipped"
                warnings.warn(
                    f"deep_dream: octave {octave}/{len(shapes)} is {shape[0]}x{shape[1]}: "
                    f"{', '.join(left_out)} keep nothing inside the {BORDER}-pixel border and are "
                    f"left out there; {what}", DreamWarning, stacklevel=3)
        return plan

    def preprocess(self, image):
        """RGB 0..255 (H, W, 3) -> the model's input (1, H, W, 3) float32 on the current backend."""
        xp = backend.default_module()
        data = np.asarray(image, dtype=np.float32)
        if data.ndim != 3 or data.shape[2] != 3:
            raise ValueError(f"deep_dream: expected an RGB image (height, width, 3), got shape "
                             f"{data.shape}")
        return self.preprocess_input(xp.asarray(data[None]))

    def run(self, image, octaves=3, octave_scale=1.4, iterations=30, step=None, max_loss="auto",
            callback=None):
        """The book's octave loop on an RGB 0..255 picture; returns the dream as uint8 RGB.

        step: None for the model's default (20 for InceptionV3). max_loss: "auto" for the
        model's default (15 for InceptionV3, none for VGG19); None never stops early.
        callback(DreamStep) runs after every step; returning True stops the whole dream.
        """
        step = DEFAULT_STEP[self.kind] if step is None else float(step)
        if not math.isfinite(step):
            raise ValueError(f"deep_dream: step must be a finite number, got {step}")
        if isinstance(max_loss, str):
            if max_loss != "auto":
                raise ValueError(f"deep_dream: max_loss must be a number, None or 'auto', got "
                                 f"{max_loss!r}")
            max_loss = DEFAULT_MAX_LOSS[self.kind]
        if max_loss is not None and math.isnan(max_loss):
            raise ValueError("deep_dream: max_loss must be a number or None, got nan")
        original = self.preprocess(image)
        bad = count_non_finite(original)
        if bad:
            raise ValueError(f"deep_dream: the picture holds {bad} NaN or infinite values")
        shapes = octave_shapes(original.shape[1:3], octaves, octave_scale)
        self._check_size(shapes[0])
        layers_at = self.octave_layers(shapes)
        shrunk_original = resize(original, shapes[0])
        img = original
        stop = False
        for octave, shape in enumerate(shapes, start=1):
            img = resize(img, shape)
            layer_weights = layers_at[octave - 1]
            steps = int(iterations) if layer_weights else 0  # no layer here: nothing to ascend
            for i in range(1, steps + 1):
                started = time.perf_counter()
                loss, img = self.gradient_ascent_step(img, step, layer_weights)
                seconds = time.perf_counter() - started
                check_step("deep_dream", f"octave {octave}/{len(shapes)} ({shape[0]}x{shape[1]}), "
                           f"step {i}", f"is the step, {step:g}, far too large?", loss, img)
                if callback is not None and callback(DreamStep(
                        octave, len(shapes), shape, i, int(iterations), loss, seconds, img,
                        self.deprocess_image)):
                    stop = True
                if stop or (max_loss is not None and loss > max_loss):
                    break
            # Re-inject the detail lost by shrinking: what the original has at this size that
            # the upscaled small version has not.
            upscaled_shrunk_original = resize(shrunk_original, shape)
            same_size_original = resize(original, shape)
            img = img + (same_size_original - upscaled_shrunk_original)
            shrunk_original = resize(original, shape)
            if stop:
                break
        return self.deprocess_image(img)

    def _check_size(self, shape):
        """A clear error before any work when the smallest octave is too small for the model."""
        minimum = 75 if self.kind == "inception_v3" else 32
        if min(shape) < minimum:
            raise ValueError(
                f"deep_dream: the smallest octave is {shape[0]}x{shape[1]} pixels, but "
                f"{self.kind} needs at least {minimum}x{minimum}; use a larger picture, fewer "
                f"octaves or a smaller octave scale")


def resize(image, shape):
    """Bilinear resize of a (1, H, W, C) array to `shape` as tf.image.resize does (half-pixel
    centres, no antialiasing); the same array when it already has that shape."""
    if tuple(image.shape[1:3]) == tuple(shape):
        return image
    from ..ops.resize import resize_bilinear
    with no_grad():
        return resize_bilinear(Tensor(image, dtype=image.dtype), tuple(shape)).data


def deep_dream(image, model="inception_v3", weights="imagenet", layer_weights=None, octaves=3,
               octave_scale=1.4, iterations=30, step=None, max_loss="auto", callback=None):
    """Dream on an RGB picture (H, W, 3), values 0..255; returns uint8 RGB of the same size.

    The book's defaults: InceptionV3, mixed4..mixed7 weighted 1, 1.5, 2, 2.5, 3 octaves of 1.4,
    30 steps of 20 per octave, stop an octave once the loss passes 15. See `DeepDream.run`.
    """
    dreamer = DeepDream(model, weights, layer_weights)
    return dreamer.run(image, octaves=octaves, octave_scale=octave_scale, iterations=iterations,
                       step=step, max_loss=max_loss, callback=callback)
