"""MNIST from the standard idx files (gzipped or not) or from Keras's `mnist.npz`.

Where `load_mnist()` looks, in order: the `path` argument; `$MICROGRAD_GEN_DATA/mnist`; the data-set
cache (`download.datasets_dir() / "mnist"`); and, last, a download of Keras's `mnist.npz` into that
cache, checked against the sha256 that `keras.datasets.mnist.load_data` pins.

The idx format (yann.lecun.com/exdb/mnist): a 4-byte magic number -- two zero bytes, a type code
(0x08 = unsigned byte) and the number of dimensions -- then each dimension as a big-endian int32,
then the data in C order.
"""
import gzip
import zlib
from pathlib import Path

import numpy as np

from ..download import DownloadError, datasets_dir, fetch, shared_data_dir

MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"

# (split, images file, labels file); each may also end in .gz
IDX_FILES = (("train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             ("test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_idx(path):
    """Read one idx file of unsigned bytes (gzipped when its name ends in .gz) as a uint8 array."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"read_idx: {path} is not a readable gzip file ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"read_idx: {path} is not an idx file (magic number {raw[:4].hex() or 'missing'})")
    if raw[2] != 0x08:
        raise ValueError(f"read_idx: {path} holds type code 0x{raw[2]:02x}; only unsigned bytes (0x08) "
                         "are supported")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"read_idx: {path} is truncated inside its header ({len(raw)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        raise ValueError(f"read_idx: {path} declares shape {shape} ({expected} bytes of data) but holds "
                         f"{len(raw) - header} bytes (truncated or corrupt)")
    # copy: an array over `bytes` is read-only, and callers normalise or augment in place
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape).copy()


def _find_idx(folder, name):
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _check_split(split, images, labels, source):
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"load_mnist: {source}: {split} images have shape {images.shape}, "
                         "expected (N, 28, 28)")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"load_mnist: {source}: {split} labels have shape {labels.shape} for "
                         f"{images.shape[0]} images")
    if labels.size and labels.max() > 9:
        raise ValueError(f"load_mnist: {source}: {split} labels go up to {labels.max()}, expected 0..9")


def _load_idx_folder(folder):
    arrays = []
    for split, images_name, labels_name in IDX_FILES:
        images = read_idx(_find_idx(folder, images_name))
        labels = read_idx(_find_idx(folder, labels_name))
        _check_split(split, images, labels, folder)
        arrays.append((images, labels))
    return tuple(arrays)


def _load_npz(path):
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k], np.uint8) for k in NPZ_KEYS if k in f.files}
            files = f.files
    except Exception as e:  # BadZipFile, OSError, EOFError, ValueError: a truncated or foreign file
        raise ValueError(f"load_mnist: {path} is not a readable .npz file ({e})") from e
    if len(arrays) != len(NPZ_KEYS):
        raise ValueError(f"load_mnist: {path} lacks {sorted(set(NPZ_KEYS) - set(arrays))} (has {files})")
    x_train, y_train, x_test, y_test = (arrays[k] for k in NPZ_KEYS)
    _check_split("train", x_train, y_train, path)
    _check_split("test", x_test, y_test, path)
    return (x_train, y_train), (x_test, y_test)


def _load_from(place):
    """Load from a folder of idx files, a folder holding mnist.npz, or an .npz file; None if absent."""
    place = Path(place)
    if place.is_file():
        return _load_npz(place)
    if not place.is_dir():
        return None
    if all(_find_idx(place, name) for _, *names in IDX_FILES for name in names):
        return _load_idx_folder(place)
    if (place / "mnist.npz").is_file():
        return _load_npz(place / "mnist.npz")
    return None


def load_mnist(path=None, download=True):
    """Return `(x_train, y_train), (x_test, y_test)`: uint8 images (N, 28, 28) and uint8 labels (N,).

    `path` is a folder with the four idx files (`train-images-idx3-ubyte[.gz]`, ...), a folder with
    `mnist.npz`, or an `.npz` file with Keras's keys. Without `path` the local copies are searched
    first (module docstring); `download=False` turns the final download into an error.
    """
    if path is not None:
        found = _load_from(path)
        if found is None:
            raise FileNotFoundError(
                f"load_mnist: {path} holds neither the four MNIST idx files "
                f"({', '.join(n for _, *names in IDX_FILES for n in names)}, optionally .gz) "
                "nor mnist.npz")
        return found
    cache = datasets_dir() / "mnist"
    places = [shared / "mnist" for shared in [shared_data_dir()] if shared] + [cache]
    for place in places:
        found = _load_from(place)
        if found is not None:
            return found
    target = cache / "mnist.npz"
    if not download:
        raise FileNotFoundError(
            f"load_mnist: MNIST not found in {', '.join(map(str, places))}; download mnist.npz from "
            f"{MNIST_URL} to {target} or put the four idx files in {cache}")
    try:
        fetch(MNIST_URL, target, sha256=MNIST_SHA256)
    except DownloadError as e:
        raise DownloadError(
            f"load_mnist: {e}; or put the four idx files in {cache} or set MICROGRAD_GEN_DATA to a "
            "folder whose mnist/ holds them") from e
    return _load_npz(target)
