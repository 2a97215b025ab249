"""Neural style transfer (Gatys, Ecker and Bethge, 2015) as the book writes it (§12.3 of the second
edition, §8.3 of the first).

A picture is optimised so that VGG19 sees the content picture's deep features (block5_conv2) and
the style picture's feature correlations (Gram matrices of block1_conv1 .. block5_conv1), while a
total-variation term keeps it smooth:

    loss = 2.5e-8 * content + sum over 5 layers of (1e-6 / 5) * style_l + 1e-6 * tv

Two optimisers, as the two editions use them: L-BFGS (scipy's L-BFGS-B, restarted every 20
evaluations: the first edition's rounds of `maxfun=20`) and the second edition's plain SGD with
ExponentialDecay(100, 100, 0.96) for 4000 steps.

The book runs base, style and combination pictures as one batch of three through VGG19 at every
step. The base's and the style's features never change, so by default `StyleTransferLoss` computes
them once and runs only the combination picture: the same loss and gradient (each image goes
through the convolutions on its own) for a third of the work. `batch3=True` runs the book's batch.

    from micrograd_gen.generative.style_transfer import style_transfer
    picture = style_transfer("tubingen.jpg", "starry_night.jpg", weights="vgg19_notop.h5")

A loss or picture that stops being finite (an SGD rate far too large, NaN weights) stops the
optimisation at that step or L-BFGS evaluation with `NonFiniteError`, before the callback sees the
picture.
"""
import math
import time

import numpy as np
from PIL import Image

from .. import applications, backend, ops
from ..applications import vgg19
from ..data.images import load_image
from ..optim import SGD, ExponentialDecay, lbfgs
from ..tensor import Tensor, no_grad
from .nonfinite import NonFiniteError, check_step, count_non_finite  # noqa: F401  (optimize raises it)

CONTENT_LAYER = "block5_conv2"
STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")
CONTENT_WEIGHT = 2.5e-8
STYLE_WEIGHT = 1e-6
TV_WEIGHT = 1e-6
HEIGHT = 400
# The book's iteration counts: L-BFGS rounds of 20 evaluations (1st edition), SGD steps (2nd).
ITERATIONS = {"lbfgs": 20, "sgd": 4000}
# The 2nd edition's SGD rate, ExponentialDecay(100, 100, 0.96), is tuned for 400x600 pictures.
BOOK_PIXELS = 400 * 600
SGD_LEARNING_RATE = 100.0
LBFGS_EVALUATIONS_PER_ROUND = 20


# ---- the three losses -----------------------------------------------------------------------------

def gram_matrix(x):
    """(C, C) Gram matrix of one feature map x (H, W, C): F^T F with F = x as (H*W, C) rows.
    The book transposes to (C, H*W) first and multiplies by the transpose; the product is the
    same, and ops.gram's backward makes one product where matmul's would make two."""
    h, w, c = x.shape
    features = ops.reshape(x, (h * w, c))              # (HW, C)
    return ops.gram(features)                          # (C, C)


def content_loss(base, combination):
    """sum((combination - base)^2) over one layer's features."""
    d = combination - base
    return ops.sum(d * d)


def style_loss_from_gram(style_gram, combination, size, channels=3):
    """The style term given the style picture's Gram matrix (a constant).

    Divided by 4 * channels^2 * size^2 with channels = 3 and size = the *image's* height * width
    for every layer, as the book writes it (Gatys et al. use each layer's own N_l^2 M_l^2; the
    book's constant only rescales each layer's term, and the weights were tuned with it)."""
    d = gram_matrix(combination) - style_gram
    return ops.sum(d * d) / float(4.0 * (channels ** 2) * (size ** 2))


def style_loss(style, combination, size, channels=3):
    """The book's style_loss(style_img, combination_img): Gram matrices of one layer's features
    (H, W, C) of the style and the combination picture; `size` is the image's height * width."""
    return style_loss_from_gram(gram_matrix(style), combination, size, channels)


def total_variation_loss(x):
    """sum((a + b)^1.25) over the picture x (1, H, W, 3), with a and b the squared differences to
    the pixel below and to the right (the last row and column have neither)."""
    h, w = x.shape[1:3]
    corner = x[:, :h - 1, :w - 1, :]
    a = corner - x[:, 1:, :w - 1, :]
    b = corner - x[:, :h - 1, 1:, :]
    return ops.sum((a * a + b * b) ** 1.25)


# ---- the loss on VGG19 ----------------------------------------------------------------------------

class StyleTransferLoss:
    """The book's loss of a combination picture, for a fixed base and style picture.

    base, style: preprocessed (1, H, W, 3) arrays of the same size (vgg19.preprocess_input).
    model: a VGG19 from micrograd_gen.applications, or None to load one with `weights`.
    batch3: run base, style and combination as one batch every time, as the book does; otherwise
    (default) the base's and style's targets are computed once and only the combination runs.
    """

    def __init__(self, base, style, model=None, weights="imagenet", content_weight=CONTENT_WEIGHT,
                 style_weight=STYLE_WEIGHT, tv_weight=TV_WEIGHT, batch3=False):
        if tuple(base.shape) != tuple(style.shape) or base.ndim != 4:
            raise ValueError(f"style transfer: base and style must be preprocessed (1, H, W, 3) "
                             f"arrays of one size, got {tuple(base.shape)} and {tuple(style.shape)}")
        if model is None:
            model = applications.VGG19(include_top=False, weights=weights)
        if getattr(model, "name", None) != "vgg19":
            raise ValueError(f"style transfer needs VGG19, got the model "
                             f"{getattr(model, 'name', model)!r}")
        self.model = model
        self.content_weight, self.style_weight, self.tv_weight = (
            float(content_weight), float(style_weight), float(tv_weight))
        for name, value in (("content_weight", self.content_weight),
                            ("style_weight", self.style_weight), ("tv_weight", self.tv_weight)):
            if not math.isfinite(value):
                raise ValueError(f"style transfer: {name} must be a finite number, got {value}")
        for what, picture in (("base", base), ("style", style)):
            if count_non_finite(picture):
                raise ValueError(f"style transfer: the {what} picture holds "
                                 f"{count_non_finite(picture)} NaN or infinite values")
        self.size = int(base.shape[1] * base.shape[2])
        self.batch3 = batch3
        # the book's feature_extractor stops at block5_conv2: nothing later feeds the loss
        self.features = applications.feature_extractor(applications.fold_batch_norm(model),
                                                       list(STYLE_LAYERS) + [CONTENT_LAYER])
        self.base, self.style = base, style
        if not batch3:
            with no_grad():
                feats = self.features(ops.concatenate([Tensor(base, dtype=base.dtype),
                                                       Tensor(style, dtype=style.dtype)]).data)
                self.content_target = feats[CONTENT_LAYER][0].data      # (h, w, 512)
                self.style_grams = {name: gram_matrix(feats[name][1]).data  # (C, C)
                                    for name in STYLE_LAYERS}

    def __call__(self, combination):
        """(total loss, {"content", "style", "tv": weighted parts}) as Tensors, for a (1, H, W, 3)
        combination Tensor."""
        if self.batch3:
            batch = ops.concatenate([Tensor(self.base, dtype=combination.dtype),
                                     Tensor(self.style, dtype=combination.dtype), combination])
            feats = self.features(batch)
            content_target = feats[CONTENT_LAYER][0]
            style_grams = {name: gram_matrix(feats[name][1]) for name in STYLE_LAYERS}
            comb_index = 2
        else:
            feats = self.features(combination)
            content_target, style_grams, comb_index = self.content_target, self.style_grams, 0
        content = self.content_weight * content_loss(content_target, feats[CONTENT_LAYER][comb_index])
        per_layer = self.style_weight / len(STYLE_LAYERS)
        style = None
        for name in STYLE_LAYERS:
            term = per_layer * style_loss_from_gram(style_grams[name], feats[name][comb_index],
                                                    self.size)
            style = term if style is None else style + term
        tv = self.tv_weight * total_variation_loss(combination)
        return content + style + tv, {"content": content, "style": style, "tv": tv}

    def loss_and_grad(self, combination):
        """(loss, {part: float}, gradient array) for a combination array (1, H, W, 3)."""
        x = Tensor(combination, requires_grad=True, dtype=combination.dtype)
        loss, parts = self(x)
        loss.backward()
        return float(loss.item()), {k: float(v.item()) for k, v in parts.items()}, x.grad


# ---- pictures in and out --------------------------------------------------------------------------

def output_size(shape, height=HEIGHT):
    """(height, round(width * height / original height)): the book's img_height / img_width."""
    h, w = shape[:2]
    return int(height), max(1, round(w * height / h))


def _load(picture, size, what):
    """A path or an RGB array (H, W, 3) as float32 RGB of `size` = (height, width), resized with
    Keras load_img's default (nearest), as the book loads both pictures."""
    if isinstance(picture, (str, bytes)) or hasattr(picture, "__fspath__"):
        return load_image(picture, target_size=size)
    array = np.asarray(picture)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"style transfer: the {what} picture must be RGB (height, width, 3), "
                         f"got shape {array.shape}")
    if array.shape[:2] != tuple(size):
        img = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
        array = np.asarray(img.resize((size[1], size[0]), Image.NEAREST))
    return array.astype(np.float32)


def _picture_shape(picture):
    if isinstance(picture, (str, bytes)) or hasattr(picture, "__fspath__"):
        return load_image(picture).shape
    return np.asarray(picture).shape


def prepare(content, style, height=HEIGHT):
    """The book's preprocess_image for both pictures: the content at `height` with its aspect
    kept, the style resized to the same size; both preprocessed for VGG19, (1, H, W, 3), on the
    current backend."""
    size = output_size(_picture_shape(content), height)
    xp = backend.default_module()
    base = vgg19.preprocess_input(xp.asarray(_load(content, size, "content")[None]))
    ref = vgg19.preprocess_input(xp.asarray(_load(style, size, "style")[None]))
    return base, ref


def initial_image(base, init="content", seed=0):
    """Where the optimisation starts: the content picture (the book) or uniform noise over 0..255
    (Gatys et al.'s white noise), preprocessed."""
    if init == "content":
        return base.copy()
    if init == "noise":
        rng = np.random.default_rng(seed)
        noise = rng.uniform(0, 255, size=base.shape).astype(base.dtype)
        return vgg19.preprocess_input(backend.get_array_module(base).asarray(noise))
    raise ValueError(f"style transfer: init must be 'content' or 'noise', got {init!r}")


# ---- the optimisation -----------------------------------------------------------------------------

class StyleStep:
    """What `callback` gets after each iteration (an SGD step or an L-BFGS round)."""

    __slots__ = ("iteration", "iterations", "loss", "parts", "seconds", "evaluations", "image")

    def __init__(self, iteration, iterations, loss, parts, seconds, evaluations, image):
        self.iteration, self.iterations = iteration, iterations
        self.loss, self.parts = loss, parts  # parts: weighted content, style, tv
        self.seconds, self.evaluations = seconds, evaluations
        self.image = image  # preprocessed (1, H, W, 3)

    def picture(self):
        return vgg19.deprocess_image(self.image)


def sgd_learning_rate(shape):
    """The book's initial SGD rate (100) at 400x600, scaled by the picture's pixel count elsewhere.

    The style term divides by (height * width)^2 while its Gram matrices grow as height * width,
    so its value does not depend on the size but its gradient per pixel goes as
    1 / (height * width): the book's rate diverges on small pictures (at 64x96 the loss reaches
    1e19 in three steps) and crawls on large ones. Scaling the rate with the pixel count keeps the
    book's steps at its size and the same behaviour at any other."""
    return SGD_LEARNING_RATE * int(shape[1]) * int(shape[2]) / BOOK_PIXELS


def optimize(loss, x, optimizer="lbfgs", iterations=None, callback=None,
             evaluations=LBFGS_EVALUATIONS_PER_ROUND, learning_rate=None):
    """Minimise `loss` (a StyleTransferLoss) from x (1, H, W, 3); returns the final array.

    "lbfgs": `iterations` rounds of scipy L-BFGS-B with maxfun=`evaluations` (20) each, restarted
    from the round's result (1st edition, 20 rounds).
    "sgd": `iterations` steps of SGD with ExponentialDecay(learning_rate, 100, 0.96) (2nd
    edition, 4000); learning_rate defaults to the book's 100 at 400x600 (`sgd_learning_rate`).
    callback(StyleStep) after each; returning True stops.
    """
    if optimizer not in ITERATIONS:
        raise ValueError(f"style transfer: optimizer must be 'lbfgs' or 'sgd', got {optimizer!r}")
    iterations = ITERATIONS[optimizer] if iterations is None else int(iterations)
    if count_non_finite(x):
        raise ValueError(f"style transfer: the initial picture holds {count_non_finite(x)} NaN or "
                         "infinite values")
    if optimizer == "sgd":
        variable = Tensor(x.copy(), dtype=x.dtype)
        if learning_rate is None:
            learning_rate = sgd_learning_rate(x.shape)
        learning_rate = float(learning_rate)
        if not (math.isfinite(learning_rate) and learning_rate > 0):
            raise ValueError(f"style transfer: the SGD learning rate must be a finite number > 0, "
                             f"got {learning_rate}")
        opt = SGD([variable], learning_rate=ExponentialDecay(learning_rate, 100, 0.96))
        for i in range(1, iterations + 1):
            started = time.perf_counter()
            value, parts, grad = loss.loss_and_grad(variable.data)
            opt.apply_gradients([(grad, variable)])
            check_step("style transfer", f"SGD step {i}",
                       f"is the learning rate, {learning_rate:g}, far too large?", value,
                       variable.data)
            if callback is not None and callback(StyleStep(
                    i, iterations, value, parts, time.perf_counter() - started, 1, variable.data)):
                break
        return variable.data
    for i in range(1, iterations + 1):
        started = time.perf_counter()
        seen = []

        def fun(t, round_number=i):
            # scipy would carry a NaN on as a failed line search; stop at the first one instead
            where = f"L-BFGS round {round_number}, evaluation {len(seen) + 1}"
            check_step("style transfer", where, "a NaN gradient at the evaluation before?",
                       picture=t.data)
            total, parts = loss(t)
            value = float(total.item())
            check_step("style transfer", where, "NaN weights, or a loss weight far too large?",
                       loss=value)
            seen.append((value, {k: float(v.item()) for k, v in parts.items()}))
            return total

        # a Tensor in, a Tensor out: x stays on its device (NumPy or CuPy) between rounds
        result, info = lbfgs(fun, Tensor(x, dtype=x.dtype), maxiter=15000,
                             maxfun=int(evaluations), dtype=x.dtype)
        x = result.data
        check_step("style transfer", f"the end of L-BFGS round {i}", "a NaN gradient?",
                   info["loss"], x)
        # scipy returns its best point; report the parts measured there
        value = info["loss"]
        parts = next((p for v, p in seen if v == value), seen[-1][1])
        if callback is not None and callback(StyleStep(
                i, iterations, value, parts, time.perf_counter() - started, len(seen), x)):
            break
    return x


def style_transfer(content, style, height=HEIGHT, optimizer="lbfgs", iterations=None,
                   content_weight=CONTENT_WEIGHT, style_weight=STYLE_WEIGHT, tv_weight=TV_WEIGHT,
                   weights="imagenet", model=None, init="content", seed=0, batch3=False,
                   learning_rate=None, callback=None):
    """Paint the content picture in the style picture's manner; returns uint8 RGB.

    content, style: file paths or RGB arrays (H, W, 3) in 0..255. The output is `height` pixels
    high with the content's aspect ratio; the style picture is resized to the same size.
    optimizer "lbfgs" (iterations = rounds of 20 evaluations, default 20) or "sgd" (default 4000,
    learning_rate: see `sgd_learning_rate`). init "content" (the book) or "noise". See
    `StyleTransferLoss` for batch3.
    """
    base, ref = prepare(content, style, height)
    loss = StyleTransferLoss(base, ref, model=model, weights=weights,
                             content_weight=content_weight, style_weight=style_weight,
                             tv_weight=tv_weight, batch3=batch3)
    x = optimize(loss, initial_image(base, init, seed), optimizer, iterations, callback,
                 learning_rate=learning_rate)
    return vgg19.deprocess_image(x)
