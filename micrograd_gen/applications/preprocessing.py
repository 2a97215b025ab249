"""What the models' preprocess_input / deprocess_image share: taking arrays or Tensors without
touching them, and giving the same kind back."""
import numpy as np

from ..backend import get_array_module, to_numpy
from ..tensor import Tensor


def as_array(x):
    """(a float array copy-safe to compute from, xp). Integers and uint8 become float32, as Keras
    casts them to floatx; float64 stays float64."""
    data = x.data if isinstance(x, Tensor) else x
    xp = get_array_module(data)
    data = xp.asarray(data)
    if data.dtype.kind != "f":
        data = data.astype(np.float32)
    if data.shape[-1:] != (3,):
        raise ValueError(f"expected RGB images with 3 channels last, got shape {tuple(data.shape)}")
    return data, xp


def like_input(x, out):
    """A Tensor when x was one (data only: preprocessing is not part of a gradient), else the array."""
    return Tensor(out, dtype=out.dtype) if isinstance(x, Tensor) else out


def squeeze_batch(img):
    img = to_numpy(img)
    return img[0] if img.ndim == 4 and img.shape[0] == 1 else img
