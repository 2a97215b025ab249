"""InceptionV3's convolutional base (Szegedy et al. 2015) with the layer names of the
keras-applications weight file, and its preprocessing (x / 127.5 - 1).

Written as keras-applications' inception_v3.py writes it, so that each `conv2d_bn` call gets the
number Keras's automatic naming gave it (conv2d_k, batch_normalization_k, activation_k: the k-th
call), the pools theirs (max_pooling2d_k, average_pooling2d_k) and the unnamed inner concatenations
of mixed9/mixed10 theirs (concatenate_1, concatenate_2). Strided convolutions and max pools are
'valid'; the average pools of the pool branches are 3x3 stride 1 'same' (not counting the pad).
"""
import numpy as np

from .. import nn
from .network import InputLayer, Network, check_arguments
from .preprocessing import as_array, like_input, squeeze_batch

WEIGHTS = "inception_v3_notop"  # entry of weights/manifest.json


class _Builder:
    """Adds layers to the network under Keras 2's automatic names (prefix_1, prefix_2, ...)."""

    def __init__(self, model, dtype, kernel_initializer):
        self.model, self.dtype, self.counts = model, dtype, {}
        self.kernel_initializer = kernel_initializer

    def name(self, prefix):
        self.counts[prefix] = self.counts.get(prefix, 0) + 1
        return f"{prefix}_{self.counts[prefix]}"

    def conv2d_bn(self, x, filters, rows, cols, padding="same", strides=1):
        """Conv2D without bias -> BatchNormalization without gamma (scale=False) -> ReLU."""
        add, d = self.model.add, self.dtype
        x = add(nn.Conv2D(filters, (rows, cols), strides=strides, padding=padding, use_bias=False,
                          kernel_initializer=self.kernel_initializer, name=self.name("conv2d"),
                          dtype=d), x)
        x = add(nn.BatchNormalization(axis=3, scale=False, name=self.name("batch_normalization"),
                                      dtype=d), x)
        return add(nn.Activation("relu", name=self.name("activation"), dtype=d), x)

    def max_pool(self, x):
        return self.model.add(nn.MaxPooling2D(3, strides=2, name=self.name("max_pooling2d"),
                                              dtype=self.dtype), x)

    def avg_pool(self, x):
        return self.model.add(nn.AveragePooling2D(3, strides=1, padding="same",
                                                  name=self.name("average_pooling2d"),
                                                  dtype=self.dtype), x)

    def concatenate(self, branches, name=None):
        return self.model.add(nn.Concatenate(axis=3, name=name or self.name("concatenate"),
                                             dtype=self.dtype), *branches)


def InceptionV3(include_top=False, weights="imagenet", input_shape=None, dtype="float32"):
    """keras.applications.InceptionV3's convolutional base, output mixed10.

    weights: None (random initialisation), "imagenet" (found in the cache or local copies, else
    downloaded; see micrograd_gen.weights) or the path of a Keras weight file. Pretrained weights
    are frozen (requires_grad=False) and batch normalisation runs on its moving statistics. Only
    include_top=False is available. Inputs must be at least 75x75.
    """
    check_arguments("InceptionV3", include_top, input_shape, min_size=75)
    model = Network("inception_v3", InputLayer(min_size=75, name="input_1", dtype=dtype),
                    dtype=dtype)
    # pretrained: zeros until the file is read, rather than random draws to overwrite
    b = _Builder(model, dtype, "glorot_uniform" if weights is None else "zeros")
    x = "input_1"
    x = b.conv2d_bn(x, 32, 3, 3, strides=2, padding="valid")
    x = b.conv2d_bn(x, 32, 3, 3, padding="valid")
    x = b.conv2d_bn(x, 64, 3, 3)
    x = b.max_pool(x)
    x = b.conv2d_bn(x, 80, 1, 1, padding="valid")
    x = b.conv2d_bn(x, 192, 3, 3, padding="valid")
    x = b.max_pool(x)

    # mixed0, 1, 2: 35 x 35 x 256 / 288 / 288 (at 299 x 299)
    for i, pool_filters in enumerate([32, 64, 64]):
        branch1x1 = b.conv2d_bn(x, 64, 1, 1)
        branch5x5 = b.conv2d_bn(x, 48, 1, 1)
        branch5x5 = b.conv2d_bn(branch5x5, 64, 5, 5)
        branch3x3dbl = b.conv2d_bn(x, 64, 1, 1)
        branch3x3dbl = b.conv2d_bn(branch3x3dbl, 96, 3, 3)
        branch3x3dbl = b.conv2d_bn(branch3x3dbl, 96, 3, 3)
        branch_pool = b.conv2d_bn(b.avg_pool(x), pool_filters, 1, 1)
        x = b.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], f"mixed{i}")

    # mixed3: 17 x 17 x 768
    branch3x3 = b.conv2d_bn(x, 384, 3, 3, strides=2, padding="valid")
    branch3x3dbl = b.conv2d_bn(x, 64, 1, 1)
    branch3x3dbl = b.conv2d_bn(branch3x3dbl, 96, 3, 3)
    branch3x3dbl = b.conv2d_bn(branch3x3dbl, 96, 3, 3, strides=2, padding="valid")
    branch_pool = b.max_pool(x)
    x = b.concatenate([branch3x3, branch3x3dbl, branch_pool], "mixed3")

    # mixed4, 5, 6, 7: 17 x 17 x 768; (rows, cols) = (1, 7) is a 1-high, 7-wide kernel
    for i, f in enumerate([128, 160, 160, 192], start=4):
        branch1x1 = b.conv2d_bn(x, 192, 1, 1)
        branch7x7 = b.conv2d_bn(x, f, 1, 1)
        branch7x7 = b.conv2d_bn(branch7x7, f, 1, 7)
        branch7x7 = b.conv2d_bn(branch7x7, 192, 7, 1)
        branch7x7dbl = b.conv2d_bn(x, f, 1, 1)
        branch7x7dbl = b.conv2d_bn(branch7x7dbl, f, 7, 1)
        branch7x7dbl = b.conv2d_bn(branch7x7dbl, f, 1, 7)
        branch7x7dbl = b.conv2d_bn(branch7x7dbl, f, 7, 1)
        branch7x7dbl = b.conv2d_bn(branch7x7dbl, 192, 1, 7)
        branch_pool = b.conv2d_bn(b.avg_pool(x), 192, 1, 1)
        x = b.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], f"mixed{i}")

    # mixed8: 8 x 8 x 1280
    branch3x3 = b.conv2d_bn(x, 192, 1, 1)
    branch3x3 = b.conv2d_bn(branch3x3, 320, 3, 3, strides=2, padding="valid")
    branch7x7x3 = b.conv2d_bn(x, 192, 1, 1)
    branch7x7x3 = b.conv2d_bn(branch7x7x3, 192, 1, 7)
    branch7x7x3 = b.conv2d_bn(branch7x7x3, 192, 7, 1)
    branch7x7x3 = b.conv2d_bn(branch7x7x3, 192, 3, 3, strides=2, padding="valid")
    branch_pool = b.max_pool(x)
    x = b.concatenate([branch3x3, branch7x7x3, branch_pool], "mixed8")

    # mixed9, 10: 8 x 8 x 2048
    for i in range(2):
        branch1x1 = b.conv2d_bn(x, 320, 1, 1)
        branch3x3 = b.conv2d_bn(x, 384, 1, 1)
        branch3x3_1 = b.conv2d_bn(branch3x3, 384, 1, 3)
        branch3x3_2 = b.conv2d_bn(branch3x3, 384, 3, 1)
        branch3x3 = b.concatenate([branch3x3_1, branch3x3_2], f"mixed9_{i}")
        branch3x3dbl = b.conv2d_bn(x, 448, 1, 1)
        branch3x3dbl = b.conv2d_bn(branch3x3dbl, 384, 3, 3)
        branch3x3dbl_1 = b.conv2d_bn(branch3x3dbl, 384, 1, 3)
        branch3x3dbl_2 = b.conv2d_bn(branch3x3dbl, 384, 3, 1)
        branch3x3dbl = b.concatenate([branch3x3dbl_1, branch3x3dbl_2])
        branch_pool = b.conv2d_bn(b.avg_pool(x), 192, 1, 1)
        x = b.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], f"mixed{9 + i}")

    model.finish(x, (None,) + tuple(input_shape or (None, None, 3)))
    return model.load(weights, WEIGHTS)


def preprocess_input(x):
    """Keras's InceptionV3 preprocessing ("tf" mode): x / 127.5 - 1, from RGB 0..255 to -1..1.
    Returns a new float array (float32 unless x is float64), or a Tensor for a Tensor; x is left
    unchanged."""
    data, _ = as_array(x)
    return like_input(x, data / data.dtype.type(127.5) - data.dtype.type(1.0))


def deprocess_image(x):
    """The book's DeepDream inverse: (x / 2 + 0.5) * 255, clipped to 0..255, as uint8. A leading
    batch axis of 1 is dropped; x is left unchanged. Returns a NumPy array."""
    data, xp = as_array(x)
    img = (data / 2.0 + 0.5) * 255.0
    return squeeze_batch(xp.clip(img, 0, 255).astype(np.uint8))
