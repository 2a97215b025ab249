"""Pictures load as what they are (issue 19, rule 6): 16-bit and float pictures are scaled, not
clipped to white or black; the EXIF orientation is applied; a picture whose header promises more
than the pixel limit is refused before it is decoded, and the user can raise that limit."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from micrograd_gen.data import images
from micrograd_gen.data.images import (MAX_IMAGE_PIXELS, image_dataset_from_directory, load_image,
                                       max_image_pixels)


def png_header_only(path, width, height):
    """A ~60-byte grayscale PNG whose header says width x height and whose data is empty: what a
    decompression bomb looks like before it is decoded."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


# ---- more than 8 bits ---------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path, suffix):
    values = np.array([[0, 257, 32768, 65535], [1000, 20000, 40000, 60000]], np.uint16)
    path = tmp_path / f"gray16{suffix}"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I;16")
    picture = load_image(path)
    assert picture.shape == (2, 4, 3) and picture.dtype == np.float32
    np.testing.assert_array_equal(picture[..., 0], np.round(values * (255 / 65535)))
    np.testing.assert_array_equal(picture[..., 0], picture[..., 2])  # gray over three channels
    assert len(np.unique(picture)) == 8  # not solid 255


def test_float_tiff_in_0_1_is_scaled_and_in_0_255_kept(tmp_path):
    unit = np.array([[0.0, 0.25, 0.5, 1.0]], np.float32)
    Image.fromarray(unit).save(tmp_path / "unit.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "unit.tif")[0, :, 1], [0, 64, 128, 255])
    byte_range = np.array([[0.0, 17.4, 200.0, 255.0]], np.float32)
    Image.fromarray(byte_range).save(tmp_path / "bytes.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "bytes.tif")[0, :, 0], [0, 17, 200, 255])


@pytest.mark.parametrize("values, message", [
    ([0.0, np.nan, 0.5], "holds 1 NaN or infinite pixels"),
    ([0.0, np.inf, 0.5], "holds 1 NaN or infinite pixels"),
    ([-1.0, 0.0, 0.5], r"mode F picture with values in \[-1, 0.5\]; expected 0..1 \(or 0..255\)"),
    ([0.0, 300.0, 0.5], r"values in \[0, 300\]"),
])
def test_float_tiff_outside_a_picture_range_is_refused(tmp_path, values, message):
    path = tmp_path / "odd.tif"
    Image.fromarray(np.array([values], np.float32)).save(path)
    with pytest.raises(ValueError, match=f"load_image: .*odd.tif.*{message}"):
        load_image(path)


def test_32_bit_integer_pictures(tmp_path):
    Image.fromarray(np.array([[0, 65535]], np.int32)).save(tmp_path / "i.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "i.tif")[0, :, 0], [0, 255])
    Image.fromarray(np.array([[0, 70000]], np.int32)).save(tmp_path / "big.tif")
    with pytest.raises(ValueError, match=r"mode I picture with values in \[0, 70000\]"):
        load_image(tmp_path / "big.tif")


def test_the_dataset_scales_16_bit_too(tmp_path):
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / "white.png")
    Image.fromarray(np.full((8, 8), 16448, np.uint16)).save(tmp_path / "gray.png")  # 64 * 257
    batch = next(iter(image_dataset_from_directory(tmp_path, image_size=(8, 8), shuffle=False)))
    np.testing.assert_allclose(batch[0], 64 / 255, rtol=1e-6)   # gray.png sorts first
    np.testing.assert_allclose(batch[1], 1.0)


# ---- EXIF orientation ---------------------------------------------------------------------------

def marked_picture(height=20, width=40):
    """RGB, distinct everywhere: red grows down the rows, green across the columns."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows * 10, cols * 6, np.full_like(rows, 50)], -1).astype(np.uint8)


@pytest.mark.parametrize("orientation, upright", [
    (1, lambda a: a),
    (3, lambda a: a[::-1, ::-1]),             # upside down
    (6, lambda a: np.rot90(a, k=-1)),         # the phone held upright: turn 90 degrees clockwise
    (8, lambda a: np.rot90(a, k=1)),
    (2, lambda a: a[:, ::-1]),                # mirrored
])
def test_exif_orientation_is_applied(tmp_path, orientation, upright):
    pixels = marked_picture()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(tmp_path / "photo.png", exif=exif)
    np.testing.assert_array_equal(load_image(tmp_path / "photo.png"), upright(pixels))


def test_a_phone_jpeg_loads_upright_at_its_target_size(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(marked_picture(30, 60)).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    assert load_image(tmp_path / "phone.jpg").shape == (60, 30, 3)
    assert load_image(tmp_path / "phone.jpg", height=120).shape == (120, 60, 3)


# ---- the pixel limit ----------------------------------------------------------------------------

def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    bomb = png_header_only(tmp_path / "bomb.png", 46341, 46341)  # 2.1 gigapixels in ~60 bytes
    assert bomb.stat().st_size < 100
    with pytest.raises(ValueError, match=r"load_image: .*bomb.png is 46341x46341 = 2,147,488,281 "
                                         r"pixels, more than the limit of 89,478,485 .*"
                                         r"MICROGRAD_GEN_MAX_IMAGE_PIXELS"):
        load_image(bomb)
    with pytest.raises(ValueError, match="more than the limit"):
        list(image_dataset_from_directory(tmp_path, image_size=(8, 8)))


def test_just_over_the_default_limit_is_an_error_not_a_warning(tmp_path):
    # Pillow only warns between its threshold and twice that; here it is an error.
    png_header_only(tmp_path / "big.png", MAX_IMAGE_PIXELS // 8000 + 1, 8000)
    with pytest.raises(ValueError, match="more than the limit of 89,478,485"):
        load_image(tmp_path / "big.png")


def test_the_limit_can_be_lowered_and_raised(tmp_path, monkeypatch):
    Image.fromarray(marked_picture(100, 100)).save(tmp_path / "p.png")
    with pytest.raises(ValueError, match="10,000 pixels, more than the limit of 9,999"):
        load_image(tmp_path / "p.png", max_pixels=9999)
    monkeypatch.setenv("MICROGRAD_GEN_MAX_IMAGE_PIXELS", "5000")
    assert max_image_pixels() == 5000
    with pytest.raises(ValueError, match="limit of 5,000"):
        load_image(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png", max_pixels=10_000).shape == (100, 100, 3)
    # raised past Pillow's own hard limit (twice its threshold): our limit decides, and the
    # header-only file then fails as the truncated picture it is, not as too large
    monkeypatch.setenv("MICROGRAD_GEN_MAX_IMAGE_PIXELS", "3_000_000_000")
    png_header_only(tmp_path / "bomb.png", 46341, 46341)
    pillows = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ValueError, match="not an image Pillow can read"):
        load_image(tmp_path / "bomb.png")
    assert Image.MAX_IMAGE_PIXELS == pillows  # put back


@pytest.mark.parametrize("value", ["lots", "0", "-5"])
def test_a_bad_limit_in_the_environment_is_named(monkeypatch, value):
    monkeypatch.setenv("MICROGRAD_GEN_MAX_IMAGE_PIXELS", value)
    with pytest.raises(ValueError, match=rf"\$MICROGRAD_GEN_MAX_IMAGE_PIXELS='{value}'"):
        images.max_image_pixels()
