"""Pictures in and out: loading as Keras does, a streaming dataset of a folder or .tar of images,
and writing single images, labelled grids and animated GIFs.

Colour conversion follows Keras: every picture becomes RGB through Pillow's `convert("RGB")`, so
grayscale is repeated over three channels, palette pictures are expanded, and an alpha channel is
dropped (not composited on a background), as `keras.utils.load_img` and
`image_dataset_from_directory` (which decodes with `channels=3`) both do.

Where `convert("RGB")` alone would lose the picture, pictures load as what they are: the EXIF
orientation of a phone photo is applied (it dreams upright); 16-bit grayscale (PNG, TIFF) is scaled
from 0..65535 to 0..255 instead of clipping to solid white; float pictures (TIFF mode "F") are read
as 0..1 (or 0..255 when they go past 1) instead of truncating to black, and NaN, inf or other
ranges are refused. A picture of more than `max_image_pixels()` pixels (about 89 megapixels, Pillow's
own warning threshold) is refused before it is decoded, since a tiny PNG can decode to gigabytes;
set MICROGRAD_GEN_MAX_IMAGE_PIXELS (or pass `max_pixels=`) to open larger ones.
"""
import io
import math
import os
import tarfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from ..download import atomic_write

# the extensions keras.utils.image_dataset_from_directory accepts
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")

PIL_INTERPOLATION = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                     "hamming": Image.HAMMING, "box": Image.BOX, "lanczos": Image.LANCZOS}


def _as_numpy(array):
    if hasattr(array, "numpy"):  # a Tensor
        array = array.numpy()
    if hasattr(array, "get") and not isinstance(array, np.ndarray):  # a CuPy array
        array = array.get()
    return np.asarray(array)


# Pillow's own threshold (it only warns there, and refuses at twice that): 89,478,485 pixels, a
# 9459x9459 picture, 256 MiB as RGBA.
MAX_IMAGE_PIXELS = 89_478_485
MAX_IMAGE_PIXELS_ENV = "MICROGRAD_GEN_MAX_IMAGE_PIXELS"


def max_image_pixels():
    """The most pixels (width * height) a picture may have: $MICROGRAD_GEN_MAX_IMAGE_PIXELS when
    set, else MAX_IMAGE_PIXELS."""
    value = os.environ.get(MAX_IMAGE_PIXELS_ENV)
    if value is None or not value.strip():
        return MAX_IMAGE_PIXELS
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(f"${MAX_IMAGE_PIXELS_ENV}={value!r}: expected a whole number of pixels "
                         f">= 1 (default {MAX_IMAGE_PIXELS})")
    return limit


@contextmanager
def _our_limit_only():
    # Our limit decides, checked on the header as soon as Pillow has read it. Pillow's own check
    # would warn under it and refuse above twice its threshold whatever the user allowed, so it
    # is off while a picture is opened here (and put back after, whatever happens).
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _to_rgb(img, name, caller):
    """RGB 8-bit, scaling the pictures that convert("RGB") would clip: 16-bit and 32-bit integer
    grayscale (modes I;16*, I) from 0..65535, float grayscale (mode F) from 0..1, or 0..255 when
    its values go past 1."""
    if not (img.mode.startswith("I") or img.mode == "F"):
        return img.convert("RGB")
    values = np.asarray(img).astype(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        raise ValueError(f"{caller}: {name} holds {int((~finite).sum())} NaN or infinite pixels")
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if img.mode == "F" and lo >= 0 and hi <= 1:
        scale = 255.0
    elif img.mode == "F" and lo >= 0 and hi <= 255:
        scale = 1.0
    elif img.mode != "F" and lo >= 0 and hi <= 65535:
        scale = 255.0 / 65535.0
    else:
        expected = "0..1 (or 0..255)" if img.mode == "F" else "0..65535"
        raise ValueError(f"{caller}: {name} is a mode {img.mode} picture with values in "
                         f"[{lo:g}, {hi:g}]; expected {expected}")
    gray = np.clip(np.round(values * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


def _open_rgb(source, name, caller, max_pixels=None):
    """Decode a file path or bytes with Pillow as RGB 8-bit, upright (EXIF orientation applied)
    and scaled when it has more than 8 bits (see `_to_rgb`); one-line errors, and a picture of
    more than `max_pixels` (default `max_image_pixels()`) is refused before it is decoded."""
    limit = max_image_pixels() if max_pixels is None else int(max_pixels)
    if limit < 1:
        raise ValueError(f"{caller}: max_pixels must be >= 1, got {max_pixels!r}")
    try:
        with _our_limit_only(), \
                Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            width, height = img.size  # from the header: nothing is decoded yet
            if width * height <= limit:
                upright = ImageOps.exif_transpose(img)  # decoded, a copy that outlives the file
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError) as e:
        raise ValueError(f"{caller}: {name} is not an image Pillow can read ({e})") from None
    if width * height > limit:
        raise ValueError(
            f"{caller}: {name} is {width}x{height} = {width * height:,} pixels, more than the limit "
            f"of {limit:,} (a decompression bomb?); to open it anyway, set {MAX_IMAGE_PIXELS_ENV} "
            f"to a larger number of pixels")
    return _to_rgb(upright, name, caller)


# ---------------------------------------------------------------------------------------------
# loading single pictures (keras.utils.load_img + img_to_array)

def load_image(path, target_size=None, height=None, interpolation="nearest", max_pixels=None):
    """A picture as float32 (H, W, 3) with values in [0, 255], as `img_to_array(load_img(path))`,
    upright by its EXIF orientation, 16-bit and float pictures scaled (see the module's docstring).

    `target_size=(height, width)` resizes to exactly that size; `height=h` resizes to height h and
    width `round(w * h / original_h)` (the book's style-transfer sizing). Resizing uses Pillow's
    resampling, `interpolation` as Keras's `load_img` names it ("nearest" by default, as there).
    `max_pixels`: refuse larger pictures (default `max_image_pixels()`).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"load_image: no such file: {path}")
    if not path.is_file():
        raise ValueError(f"load_image: {path} is a folder, not an image file")
    if interpolation not in PIL_INTERPOLATION:
        raise ValueError(f"load_image: interpolation={interpolation!r}; use one of {sorted(PIL_INTERPOLATION)}")
    if target_size is not None and height is not None:
        raise ValueError("load_image: give target_size or height, not both")
    img = _open_rgb(path, path, "load_image", max_pixels)
    if height is not None:
        target_size = (int(height), round(img.width * height / img.height))
    if target_size is not None:
        size = (int(target_size[1]), int(target_size[0]))  # Pillow wants (width, height)
        if img.size != size:
            img = img.resize(size, PIL_INTERPOLATION[interpolation])
    return np.asarray(img, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# resizing as tf.image.resize and keras.utils.smart_resize do it

def _bilinear_axis(in_size, out_size):
    # tf.image.resize (half-pixel centres, no antialiasing): sample at (o + 0.5) * in / out - 0.5,
    # clamped to the edge pixels.
    pos = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    lower = np.floor(pos)
    frac = (pos - lower).astype(np.float32)
    lo = np.clip(lower, 0, in_size - 1).astype(np.intp)
    hi = np.clip(lower + 1, 0, in_size - 1).astype(np.intp)
    return lo, hi, frac


def resize_bilinear(image, size):
    """Resize float (H, W, C) to `size=(height, width)` exactly as tf.image.resize(method="bilinear")."""
    image = np.asarray(image, dtype=np.float32)
    out_h, out_w = size
    if image.shape[:2] == (out_h, out_w):
        return image.copy()
    y0, y1, fy = _bilinear_axis(image.shape[0], out_h)
    x0, x1, fx = _bilinear_axis(image.shape[1], out_w)
    fy, fx = fy[:, None, None], fx[None, :, None]
    top = image[y0][:, x0] * (1 - fx) + image[y0][:, x1] * fx      # (out_h, out_w, C)
    bottom = image[y1][:, x0] * (1 - fx) + image[y1][:, x1] * fx   # (out_h, out_w, C)
    return top * (1 - fy) + bottom * fy


def smart_resize(image, size):
    """Keras's smart_resize: take the largest centred crop with the target's aspect ratio, then
    resize it bilinearly to `size=(height, width)`. (H, W, C) in, float32 (height, width, C) out."""
    image = np.asarray(image)
    height, width = image.shape[:2]
    target_h, target_w = size
    # the same integer arithmetic as keras.src.utils.image_utils.smart_resize
    crop_h = max(min(height, int(float(width * target_h) / target_w)), 1)
    crop_w = max(min(width, int(float(height * target_w) / target_h)), 1)
    top = int(float(height - crop_h) / 2)
    left = int(float(width - crop_w) / 2)
    return resize_bilinear(image[top:top + crop_h, left:left + crop_w], size)


# ---------------------------------------------------------------------------------------------
# a streaming dataset of pictures

class ImageDataset:
    """Batches of pictures from a folder tree or an uncompressed .tar, decoded as they are needed.

    Iterating gives one epoch: float32 (B, height, width, 3) batches in [0, 1], the last one
    possibly smaller; with `shuffle`, each epoch draws a new order from the seeded generator.
    `file_paths` lists the pictures (member names for a tar) in sorted order.
    """

    def __init__(self, source, image_size=(64, 64), batch_size=32, shuffle=True, seed=None,
                 smart_resize=True):
        self.source = Path(source)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.smart_resize = smart_resize
        self._rng = np.random.default_rng(seed)
        if self.batch_size < 1:
            raise ValueError(f"image_dataset_from_directory: batch_size={batch_size} must be >= 1")
        if self.source.is_dir():
            self._members = None
            self.file_paths = sorted(
                str(Path(root) / name)
                for root, _, names in os.walk(self.source, followlinks=False)
                for name in names if name.lower().endswith(IMAGE_EXTENSIONS))
        elif self.source.is_file():
            self._members = self._index_tar()
            self.file_paths = sorted(self._members)
        else:
            raise FileNotFoundError(f"image_dataset_from_directory: no such folder or .tar file: {source}")
        if not self.file_paths:
            raise ValueError(f"image_dataset_from_directory: no images ({' '.join(IMAGE_EXTENSIONS)}) "
                             f"found in {source}")

    def _index_tar(self):
        try:
            # "r:" refuses compressed archives: reading members in shuffled order from a .tar.gz
            # would decompress from the start for every picture.
            with tarfile.open(self.source, "r:") as tar:
                return {m.name: m for m in tar.getmembers()
                        if m.isreg() and m.name.lower().endswith(IMAGE_EXTENSIONS)}
        except tarfile.ReadError as e:
            with open(self.source, "rb") as f:
                compressed = f.read(3)[:2] in (b"\x1f\x8b", b"BZ") or f.name.endswith((".xz", ".gz"))
            hint = ("it is compressed: decompress it to a plain .tar (gunzip) or extract it to a folder"
                    if compressed else "it is neither a folder nor a tar file")
            raise ValueError(f"image_dataset_from_directory: cannot read {self.source} ({hint}; {e})") from None

    def __len__(self):
        return math.ceil(len(self.file_paths) / self.batch_size)

    def _decode(self, data, name):
        image = np.asarray(_open_rgb(data, name, "image_dataset_from_directory"), dtype=np.float32)
        if self.smart_resize:
            image = smart_resize(image, self.image_size)
        else:
            image = resize_bilinear(image, self.image_size)
        return image

    def __iter__(self):
        n = len(self.file_paths)
        order = self._rng.permutation(n) if self.shuffle else np.arange(n)
        tar = tarfile.open(self.source, "r:") if self._members is not None else None
        try:
            for start in range(0, n, self.batch_size):
                indices = order[start:start + self.batch_size]
                batch = np.empty((len(indices), *self.image_size, 3), np.float32)
                for k, i in enumerate(indices):
                    name = self.file_paths[i]
                    if tar is None:
                        data = Path(name).read_bytes()
                    else:
                        data = tar.extractfile(self._members[name]).read()
                    batch[k] = self._decode(data, name)
                batch *= np.float32(1 / 255)
                yield batch
        finally:
            if tar is not None:
                tar.close()


def image_dataset_from_directory(directory, image_size=(64, 64), batch_size=32, shuffle=True,
                                 seed=None, smart_resize=True, label_mode=None):
    """The book's `keras.utils.image_dataset_from_directory(dir, label_mode=None, ...)`, followed by
    its `map(lambda x: x / 255.)`: an `ImageDataset` of float32 batches in [0, 1].

    `directory` is a folder (searched recursively) or an uncompressed .tar of pictures. With
    `smart_resize` each picture is centre-cropped to the target aspect ratio before the bilinear
    resize, as Keras does; otherwise it is stretched. Only `label_mode=None` is supported.
    """
    if label_mode is not None:
        raise ValueError(f"image_dataset_from_directory: label_mode={label_mode!r}; only None "
                         "(pictures without labels) is supported")
    return ImageDataset(directory, image_size=image_size, batch_size=batch_size, shuffle=shuffle,
                        seed=seed, smart_resize=smart_resize)


# ---------------------------------------------------------------------------------------------
# writing pictures

def _to_uint8(array, value_range):
    array = _as_numpy(array).astype(np.float32)
    lo, hi = value_range
    if (lo, hi) != (0, 255):
        array = (array - lo) * (255.0 / (hi - lo))
    # clip then truncate, as the book's deprocess_image does
    return np.clip(array, 0, 255).astype(np.uint8)


def _pil_image(array, caller):
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)):
        return Image.fromarray(array)
    raise ValueError(f"{caller}: expected an image (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); "
                     f"got shape {array.shape}")


def save_image(path, array, value_range=(0, 255)):
    """Write an (H, W[, C]) array as a picture (format from the suffix), atomically.

    Values in `value_range` map to 0..255; outside it they are clipped.
    """
    img = _pil_image(_to_uint8(array, value_range), "save_image")
    return atomic_write(path, img.save)


def _text_size(font, text):
    left, top, right, bottom = font.getbbox(text)
    return right - left, bottom


def save_image_grid(path, images, ncols=None, value_range=(0, 255), padding=0, labels=None,
                    row_labels=None, col_labels=None, xlabel=None, ylabel=None, scale=1):
    """Tile `images` (N, H, W[, C]) into a grid of `ncols` columns and write it atomically.

    Text is drawn with Pillow's default font, black on white margins: `labels` (one per image) under
    each tile; `row_labels` (one per row) left of the rows and `col_labels` (one per column) under
    the grid, as axis tick labels; `xlabel` under the column labels and `ylabel` rotated at the
    far left. `scale` enlarges each tile by an integer factor (nearest neighbour) before the text
    is drawn. Without any text the picture is exactly
    (rows * H * scale + (rows - 1) * padding) by (ncols * W * scale + (ncols - 1) * padding).
    """
    tiles = _to_uint8(images, value_range)
    if tiles.ndim == 4 and tiles.shape[3] == 1:
        tiles = tiles[..., 0]
    if tiles.ndim not in (3, 4) or (tiles.ndim == 4 and tiles.shape[3] != 3) or len(tiles) == 0:
        raise ValueError("save_image_grid: expected images (N, H, W), (N, H, W, 1) or (N, H, W, 3) "
                         f"with N >= 1; got shape {tiles.shape}")
    n = len(tiles)
    ncols = int(ncols or math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncols)
    for name, values, count in (("labels", labels, n), ("row_labels", row_labels, nrows),
                                ("col_labels", col_labels, ncols)):
        if values is not None and len(values) != count:
            raise ValueError(f"save_image_grid: {name} has {len(values)} entries for {count} "
                             f"({nrows} rows x {ncols} columns, {n} images)")
    if scale != 1:
        tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    tile_h, tile_w = tiles.shape[1:3]
    mode, ink = ("RGB", (0, 0, 0)) if tiles.ndim == 4 else ("L", 0)

    font = ImageFont.load_default()
    line_h = _text_size(font, "Ag[]y-0")[1] + 2
    caption_h = line_h if labels is not None else 0
    row_label_w = max((_text_size(font, str(t))[0] for t in row_labels), default=0) + 4 if row_labels is not None else 0
    ylabel_w = line_h + 2 if ylabel else 0
    left = ylabel_w + row_label_w
    grid_w = ncols * tile_w + (ncols - 1) * padding
    grid_h = nrows * (tile_h + caption_h) + (nrows - 1) * padding
    bottom = (line_h if col_labels is not None else 0) + (line_h + 2 if xlabel else 0)

    canvas = Image.new(mode, (left + grid_w, grid_h + bottom), "white")
    draw = ImageDraw.Draw(canvas)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, ncols)
        x, y = left + c * (tile_w + padding), r * (tile_h + caption_h + padding)
        canvas.paste(Image.fromarray(tile).convert(mode), (x, y))
        if labels is not None:
            text = str(labels[k])
            draw.text((x + (tile_w - _text_size(font, text)[0]) // 2, y + tile_h), text, fill=ink, font=font)
    if row_labels is not None:
        for r, text in enumerate(map(str, row_labels)):
            w, h = _text_size(font, text)
            y = r * (tile_h + caption_h + padding) + (tile_h - h) // 2
            draw.text((left - 3 - w, y), text, fill=ink, font=font)
    if col_labels is not None:
        for c, text in enumerate(map(str, col_labels)):
            x = left + c * (tile_w + padding) + (tile_w - _text_size(font, text)[0]) // 2
            draw.text((x, grid_h + 1), text, fill=ink, font=font)
    if xlabel:
        w = _text_size(font, xlabel)[0]
        draw.text((left + (grid_w - w) // 2, grid_h + bottom - line_h - 1), xlabel, fill=ink, font=font)
    if ylabel:
        w = _text_size(font, ylabel)[0]
        strip = Image.new(mode, (w + 2, line_h), "white")
        ImageDraw.Draw(strip).text((1, 0), ylabel, fill=ink, font=font)
        strip = strip.rotate(90, expand=True)
        canvas.paste(strip, (1, max(0, (grid_h - strip.height) // 2)))
    return atomic_write(path, canvas.save)


def save_gif(path, frames, duration_ms=100, loop=0, value_range=(0, 255), scale=1):
    """Write frames (T, H, W[, C]) as an animated GIF, atomically; `loop=0` repeats forever.

    Pillow merges identical consecutive frames into one longer frame.
    """
    frames = _to_uint8(frames, value_range)
    if frames.ndim not in (3, 4) or len(frames) == 0:
        raise ValueError(f"save_gif: expected frames (T, H, W) or (T, H, W, C) with T >= 1; got {frames.shape}")
    if scale != 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    pictures = [_pil_image(f, "save_gif") for f in frames]

    def write(tmp):
        pictures[0].save(tmp, save_all=True, append_images=pictures[1:], duration=int(duration_ms),
                         loop=int(loop))
    return atomic_write(path, write)
