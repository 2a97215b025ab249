"""VGG19's convolutional base (Simonyan & Zisserman 2014) with Keras's layer names, and its
"caffe" preprocessing. Five blocks of 3x3 'same' ReLU convolutions (64,64 | 128,128 | 256 x4 |
512 x4 | 512 x4), each followed by a 2x2 max pool: block1_conv1 ... block5_pool."""
import numpy as np

from .. import nn
from .network import InputLayer, Network, check_arguments
from .preprocessing import as_array, like_input, squeeze_batch

WEIGHTS = "vgg19_notop"  # entry of weights/manifest.json
BLOCKS = [(64, 2), (128, 2), (256, 4), (512, 4), (512, 4)]
# ImageNet's mean pixel in BGR order, as Keras subtracts it ("caffe" mode)
MEAN_BGR = np.array([103.939, 116.779, 123.68])


def VGG19(include_top=False, weights="imagenet", input_shape=None, dtype="float32"):
    """keras.applications.VGG19's convolutional base.

    weights: None (random initialisation), "imagenet" (found in the cache or local copies, else
    downloaded; see micrograd_gen.weights) or the path of a Keras weight file. Pretrained weights
    are frozen (requires_grad=False). Only the convolutional base is built: include_top=True is
    refused, since the chapter never uses the classifier. input_shape=(height, width, 3) is
    checked if given; any size from 32x32 up runs.
    """
    check_arguments("VGG19", include_top, input_shape, min_size=32)
    model = Network("vgg19", InputLayer(min_size=32, name="input_1", dtype=dtype), dtype=dtype)
    init = "glorot_uniform" if weights is None else "zeros"  # no random draws to overwrite
    x = "input_1"
    for b, (filters, convs) in enumerate(BLOCKS, start=1):
        for c in range(1, convs + 1):
            x = model.add(nn.Conv2D(filters, 3, padding="same", activation="relu",
                                    kernel_initializer=init, name=f"block{b}_conv{c}",
                                    dtype=dtype), x)
        x = model.add(nn.MaxPooling2D(2, strides=2, name=f"block{b}_pool", dtype=dtype), x)
    model.finish(x, (None,) + tuple(input_shape or (None, None, 3)))
    return model.load(weights, WEIGHTS)


def preprocess_input(x):
    """Keras's VGG19 preprocessing ("caffe"): RGB -> BGR, then subtract the ImageNet mean pixel
    [103.939, 116.779, 123.68] (BGR); no scaling. Takes RGB values in 0..255 (NHWC or HWC array or
    Tensor) and returns a new float array (float32 unless x is float64); x is left unchanged."""
    data, xp = as_array(x)
    out = data[..., ::-1] - xp.asarray(MEAN_BGR, dtype=data.dtype)
    return like_input(x, out)


def deprocess_image(x):
    """The book's inverse for display: add the mean back, BGR -> RGB, clip to 0..255, uint8.
    A leading batch axis of 1 is dropped; x is left unchanged. Returns a NumPy array."""
    data, xp = as_array(x)
    img = (data + xp.asarray(MEAN_BGR, dtype=data.dtype))[..., ::-1]
    return squeeze_batch(xp.clip(img, 0, 255).astype(np.uint8))
