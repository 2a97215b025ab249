"""micrograd_gen.data: MNIST files, downloads, picture datasets and writers, text vectorisation."""
import functools
import gzip
import hashlib
import http.server
import io
import json
import math
import os
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from micrograd_gen import download
from micrograd_gen.data import mnist as mnist_mod
from micrograd_gen.data import text as text_mod
from micrograd_gen.data import (CharVocabulary, TextVectorization, char_batches, char_windows,
                                image_dataset_from_directory, lm_batches, load_image, load_mnist,
                                load_text_corpus, python_stdlib_corpus, read_idx, resize_bilinear,
                                save_gif, save_image, save_image_grid, smart_resize,
                                text_files_dataset)

SHARED = Path(os.environ.get("MICROGRAD_GEN_DATA")
              or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def shared(relative):
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"shared data {path} not present (set MICROGRAD_GEN_DATA)")
    return path


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """No shared data, an empty cache under tmp_path."""
    monkeypatch.delenv("MICROGRAD_GEN_DATA", raising=False)
    monkeypatch.setenv("MICROGRAD_GEN_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "datasets"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path, monkeypatch):
    """A local HTTP server on 127.0.0.1 serving a folder: yields (folder, base URL)."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def read_picture(path):
    with Image.open(path) as im:
        return np.asarray(im)


def closed_port_url(name):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


# ---------------------------------------------------------------------------------------------
# MNIST

def idx_bytes(array):
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">i4").tobytes()
    return header + array.tobytes()


def fake_mnist(rng, n_train=7, n_test=3):
    return ((rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_train, dtype=np.uint8)),
            (rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_test, dtype=np.uint8)))


def write_idx_folder(folder, data, gz):
    folder.mkdir(parents=True, exist_ok=True)
    (xtr, ytr), (xte, yte) = data
    for name, array in (("train-images-idx3-ubyte", xtr), ("train-labels-idx1-ubyte", ytr),
                        ("t10k-images-idx3-ubyte", xte), ("t10k-labels-idx1-ubyte", yte)):
        raw = idx_bytes(array)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)


def assert_same_mnist(got, want):
    for (gx, gy), (wx, wy) in zip(got, want):
        assert gx.dtype == np.uint8 and gy.dtype == np.uint8
        np.testing.assert_array_equal(gx, wx)
        np.testing.assert_array_equal(gy, wy)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_plain_and_gzipped(tmp_path, gz):
    data = fake_mnist(np.random.default_rng(0))
    write_idx_folder(tmp_path / "m", data, gz)
    assert_same_mnist(load_mnist(tmp_path / "m"), data)
    name = "t10k-labels-idx1-ubyte" + (".gz" if gz else "")
    np.testing.assert_array_equal(read_idx(tmp_path / "m" / name), data[1][1])


def test_mnist_npz_file_and_folder(tmp_path):
    data = fake_mnist(np.random.default_rng(1))
    (xtr, ytr), (xte, yte) = data
    np.savez(tmp_path / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    assert_same_mnist(load_mnist(tmp_path / "mnist.npz"), data)
    assert_same_mnist(load_mnist(tmp_path), data)


def test_mnist_shared_idx_files():
    (x_train, y_train), (x_test, y_test) = load_mnist(shared("mnist"))
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    assert y_train.min() == 0 and y_train.max() == 9 and set(np.unique(y_test)) == set(range(10))
    assert x_train.max() == 255 and x_train.flags.writeable


def test_mnist_found_through_env(tmp_path, monkeypatch):
    data = fake_mnist(np.random.default_rng(2))
    write_idx_folder(tmp_path / "shared" / "mnist", data, gz=True)
    monkeypatch.setenv("MICROGRAD_GEN_DATA", str(tmp_path / "shared"))
    monkeypatch.setenv("MICROGRAD_GEN_HOME", str(tmp_path / "home"))
    assert_same_mnist(load_mnist(download=False), data)


@pytest.mark.parametrize("damage, message", [
    (lambda raw: b"\x12\x34" + raw[2:], "not an idx file"),
    (lambda raw: raw[:2] + b"\x0d" + raw[3:], "type code 0x0d"),
    (lambda raw: raw[:-5], "truncated or corrupt"),
    (lambda raw: raw[:10], "truncated inside its header"),
])
def test_corrupt_idx_file(tmp_path, damage, message):
    raw = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(damage(raw))
    with pytest.raises(ValueError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_corrupt_gzip_and_npz(tmp_path):
    (tmp_path / "x.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(40))[:-12])
    with pytest.raises(ValueError, match="not a readable gzip file"):
        read_idx(tmp_path / "x.gz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="junk.npz is not a readable .npz file"):
        load_mnist(tmp_path / "junk.npz")
    np.savez(tmp_path / "partial.npz", x_train=np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="lacks"):
        load_mnist(tmp_path / "partial.npz")


def test_mnist_inconsistent_files(tmp_path):
    (xtr, ytr), test = fake_mnist(np.random.default_rng(3))
    write_idx_folder(tmp_path / "a", ((xtr, ytr[:-1]), test), gz=False)
    with pytest.raises(ValueError, match="train labels have shape"):
        load_mnist(tmp_path / "a")
    write_idx_folder(tmp_path / "b", ((xtr, ytr + 10), test), gz=False)
    with pytest.raises(ValueError, match="labels go up to"):
        load_mnist(tmp_path / "b")


def test_mnist_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither the four MNIST idx files"):
        load_mnist(tmp_path)


# ---------------------------------------------------------------------------------------------
# downloads, against a local server

def test_fetch_hash_ok_and_mismatch(http_root, tmp_path):
    root, base = http_root
    payload = os.urandom(3000)
    (root / "blob.bin").write_bytes(payload)
    good = download.fetch(f"{base}/blob.bin", tmp_path / "dl" / "blob.bin",
                          sha256=hashlib.sha256(payload).hexdigest(), log=lambda m: None)
    assert good.read_bytes() == payload
    with pytest.raises(download.DownloadError, match="sha256"):
        download.fetch(f"{base}/blob.bin", tmp_path / "dl2" / "blob.bin", sha256="0" * 64, log=lambda m: None)
    assert list((tmp_path / "dl2").iterdir()) == []  # neither the file nor a partial one


def test_load_mnist_downloads_and_caches(http_root, isolated_cache, monkeypatch):
    root, base = http_root
    data = fake_mnist(np.random.default_rng(4))
    (xtr, ytr), (xte, yte) = data
    np.savez(root / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    monkeypatch.setattr(mnist_mod, "MNIST_URL", f"{base}/mnist.npz")
    monkeypatch.setattr(mnist_mod, "MNIST_SHA256", download.file_hash(root / "mnist.npz", "sha256"))
    assert_same_mnist(load_mnist(), data)
    assert (isolated_cache / "mnist" / "mnist.npz").is_file()
    (root / "mnist.npz").unlink()  # the second call must use the cache
    assert_same_mnist(load_mnist(download=False), data)


def test_load_mnist_download_hash_mismatch_leaves_nothing(http_root, isolated_cache, monkeypatch):
    root, base = http_root
    (root / "mnist.npz").write_bytes(b"pretend this is mnist")
    monkeypatch.setattr(mnist_mod, "MNIST_URL", f"{base}/mnist.npz")
    with pytest.raises(download.DownloadError, match="sha256 is"):
        load_mnist()
    folder = isolated_cache / "mnist"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_load_mnist_without_network_names_file_url_and_folder(isolated_cache, monkeypatch):
    url = closed_port_url("mnist.npz")
    monkeypatch.setattr(mnist_mod, "MNIST_URL", url)
    with pytest.raises(download.DownloadError) as info:
        load_mnist()
    message = str(info.value)
    assert "mnist.npz" in message and url in message and str(isolated_cache / "mnist") in message
    with pytest.raises(FileNotFoundError, match="download mnist.npz from"):
        load_mnist(download=False)


# ---------------------------------------------------------------------------------------------
# pictures: the streaming dataset

def png_bytes(array, mode=None):
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8), mode).save(buf, "PNG")
    return buf.getvalue()


def constant_pictures(n=10):
    """Picture k is a constant grey 20k+5 at a size and mode that vary with k."""
    pictures = {}
    for k in range(n):
        h, w = 12 + 3 * k, 30 - 2 * k
        value = 20 * k + 5
        if k % 3 == 0:
            data = png_bytes(np.full((h, w), value))                       # grayscale
        elif k % 3 == 1:
            data = png_bytes(np.full((h, w, 4), [value] * 3 + [k * 20]))   # RGBA: alpha dropped
        else:
            data = png_bytes(np.full((h, w, 3), value))
        pictures[f"sub{k % 2}/pic{k:02d}.png"] = data
    return pictures


def write_folder(root, pictures):
    for name, data in pictures.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "notes.txt").write_text("not a picture")
    return root


def write_tar(path, pictures, mode="w"):
    with tarfile.open(path, mode) as tar:
        for name, data in pictures.items():
            info = tarfile.TarInfo(f"pics/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("pics/README")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    return path


def identities(batch):
    """Which constant picture each image of a batch is."""
    values = batch.reshape(len(batch), -1)
    assert np.allclose(values, values[:, :1], atol=1e-6)
    return [int(round((v * 255 - 5) / 20)) for v in values[:, 0]]


@pytest.mark.parametrize("kind", ["folder", "tar"])
def test_image_dataset_sizes_range_and_len(tmp_path, kind):
    pictures = constant_pictures(10)
    source = (write_folder(tmp_path / "pics", pictures) if kind == "folder"
              else write_tar(tmp_path / "pics.tar", pictures))
    ds = image_dataset_from_directory(source, image_size=(16, 8), batch_size=4, seed=0)
    assert len(ds) == 3 and len(ds.file_paths) == 10
    batches = list(ds)
    assert [b.shape for b in batches] == [(4, 16, 8, 3), (4, 16, 8, 3), (2, 16, 8, 3)]
    assert all(b.dtype == np.float32 and 0 <= b.min() and b.max() <= 1 for b in batches)
    assert sorted(sum((identities(b) for b in batches), [])) == list(range(10))


def test_image_dataset_shuffling(tmp_path):
    source = write_tar(tmp_path / "pics.tar", constant_pictures(10))

    def epochs(ds, n):
        return [sum((identities(b) for b in ds), []) for _ in range(n)]

    first = epochs(image_dataset_from_directory(source, image_size=(4, 4), batch_size=3, seed=7), 3)
    again = epochs(image_dataset_from_directory(source, image_size=(4, 4), batch_size=3, seed=7), 3)
    assert first == again                      # the seed fixes every epoch's order
    assert first[0] != first[1] or first[1] != first[2]   # each epoch draws a new order
    ordered = epochs(image_dataset_from_directory(source, image_size=(4, 4), batch_size=3,
                                                  shuffle=False), 1)[0]
    assert ordered == [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]  # sorted paths: sub0/... then sub1/...


def ramp_picture(height, width):
    """Distinct values: red encodes the column, green the row, blue a mix."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([cols * 3 % 256, rows * 5 % 256, (rows * 7 + cols * 11) % 256], -1).astype(np.uint8)


@pytest.mark.parametrize("height, width, crop", [(40, 80, (slice(0, 40), slice(20, 60))),
                                                 (80, 40, (slice(20, 60), slice(0, 40)))])
def test_smart_resize_crops_the_centre_then_resizes(tmp_path, height, width, crop):
    picture = ramp_picture(height, width)
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "p.png").write_bytes(png_bytes(picture))
    batch = next(iter(image_dataset_from_directory(tmp_path / "one", image_size=(20, 20), shuffle=False)))
    # the centred 40x40 crop halved: half-pixel bilinear at scale 2 averages each 2x2 block
    expected = picture[crop].astype(np.float64).reshape(20, 2, 20, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(batch[0] * 255, expected, atol=1e-3)
    np.testing.assert_allclose(smart_resize(picture, (20, 20)), expected, atol=1e-3)


def test_stretch_without_smart_resize(tmp_path):
    picture = ramp_picture(40, 80)
    (tmp_path / "p.png").write_bytes(png_bytes(picture))
    batch = next(iter(image_dataset_from_directory(tmp_path, image_size=(20, 20), smart_resize=False)))
    # rows: scale 2 -> mean of rows 2i, 2i+1; columns: scale 4 -> samples at 4j + 1.5
    p = picture.astype(np.float64)
    rows = p.reshape(20, 2, 80, 3).mean(axis=1)
    expected = (rows[:, 1::4] + rows[:, 2::4]) / 2
    np.testing.assert_allclose(batch[0] * 255, expected, atol=1e-3)


def test_resize_bilinear_hand_values():
    column = np.array([[[0.0]], [[8.0]]], np.float32)          # (2, 1, 1)
    got = resize_bilinear(column, (4, 1))[:, 0, 0]
    np.testing.assert_allclose(got, [0, 2, 6, 8])              # edges clamp, as tf.image.resize
    np.testing.assert_array_equal(resize_bilinear(np.ones((3, 5, 2)), (3, 5)), np.ones((3, 5, 2)))


def test_image_dataset_errors(tmp_path):
    write_tar(tmp_path / "pics.tar.gz", constant_pictures(2), mode="w:gz")
    with pytest.raises(ValueError, match="compressed"):
        image_dataset_from_directory(tmp_path / "pics.tar.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        image_dataset_from_directory(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        image_dataset_from_directory(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="label_mode"):
        image_dataset_from_directory(tmp_path / "empty", label_mode="int")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="x.jpg is not an image"):
        list(image_dataset_from_directory(tmp_path / "broken"))


def test_faces_tar_first_batch():
    ds = image_dataset_from_directory(shared("faces/faces64.tar"), image_size=(64, 64), batch_size=32, seed=0)
    assert len(ds) == math.ceil(len(ds.file_paths) / 32) and len(ds.file_paths) == 8000
    batch = next(iter(ds))
    assert batch.shape == (32, 64, 64, 3) and batch.dtype == np.float32
    assert 0 <= batch.min() and batch.max() <= 1 and batch.std() > 0.05


# ---------------------------------------------------------------------------------------------
# pictures: loading and writing

def test_load_image_conversions(tmp_path):
    Image.fromarray(np.full((3, 4), 77, np.uint8), "L").save(tmp_path / "l.png")
    palette = Image.new("P", (4, 3))
    palette.putpalette([10, 20, 30] + [200, 100, 50] * 255)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "p.png")
    Image.new("RGBA", (4, 3), (10, 20, 30, 0)).save(tmp_path / "rgba.png")
    for name, first, second in (("l.png", [77] * 3, [77] * 3), ("p.png", [10, 20, 30], [200, 100, 50]),
                                ("rgba.png", [10, 20, 30], [10, 20, 30])):  # alpha dropped, not composited
        x = load_image(tmp_path / name)
        assert x.shape == (3, 4, 3) and x.dtype == np.float32
        np.testing.assert_array_equal(x[0, 0], first)
        np.testing.assert_array_equal(x[0, 1], second)


def test_load_image_sizes(tmp_path):
    Image.fromarray(ramp_picture(30, 50)).save(tmp_path / "r.png")
    assert load_image(tmp_path / "r.png", target_size=(10, 20)).shape == (10, 20, 3)
    assert load_image(tmp_path / "r.png", height=12).shape == (12, 20, 3)  # round(50 * 12 / 30)
    np.testing.assert_array_equal(load_image(tmp_path / "r.png"), ramp_picture(30, 50))


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file") as missing:
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ValueError, match="is not an image") as not_image:
        load_image(tmp_path / "text.png")
    for info in (missing, not_image):
        assert "\n" not in str(info.value)


def test_save_image_round_trip_and_clip(tmp_path):
    array = np.array([[[-5.0, 0.4, 300.0], [12.7, 128.0, 255.0]]])
    path = save_image(tmp_path / "out" / "a.png", array)
    np.testing.assert_array_equal(read_picture(path), [[[0, 0, 255], [12, 128, 255]]])
    save_image(tmp_path / "out" / "g.png", np.array([[0.0, 0.5], [1.0, 2.0]]), value_range=(0, 1))
    np.testing.assert_array_equal(read_picture(tmp_path / "out" / "g.png"), [[0, 127], [255, 255]])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "g.png"]  # no temporaries
    with pytest.raises(ValueError, match="save_image"):
        save_image(tmp_path / "bad.png", np.zeros((2, 2, 2)))


def test_save_image_grid_sizes(tmp_path):
    tiles = np.random.default_rng(0).random((7, 5, 6, 3))
    path = save_image_grid(tmp_path / "g.png", tiles, ncols=3, value_range=(0, 1), padding=2)
    assert read_picture(path).shape[:2] == (3 * 5 + 2 * 2, 3 * 6 + 2 * 2)
    path = save_image_grid(tmp_path / "s.png", tiles[..., :1], ncols=4, value_range=(0, 1), scale=3)
    with Image.open(path) as im:
        assert im.size == (4 * 18, 2 * 15) and im.mode == "L"
    with pytest.raises(ValueError, match="row_labels has 3 entries"):
        save_image_grid(tmp_path / "x.png", tiles, ncols=4, row_labels=["a", "b", "c"])


def test_vae_style_grid_with_axis_labels(tmp_path):
    n, size = 30, 28
    digits = np.random.default_rng(1).random((n * n, size, size))
    ticks = [f"{v:.1f}" for v in np.linspace(-1, 1, n)]
    path = save_image_grid(tmp_path / "vae.png", digits, ncols=n, value_range=(0, 1),
                           col_labels=ticks, row_labels=ticks[::-1], xlabel="z[0]", ylabel="z[1]")
    picture = read_picture(path)
    assert picture.shape[0] > n * size and picture.shape[1] > n * size
    # the digits sit untouched in the top right; the labels only use the margins
    left = picture.shape[1] - n * size
    grid = np.clip(digits.astype(np.float32) * np.float32(255), 0, 255).astype(np.uint8)
    grid = grid.reshape(n, n, size, size)
    np.testing.assert_array_equal(picture[:n * size, left:], grid.transpose(0, 2, 1, 3).reshape(n * size, n * size))
    assert picture[n * size:].min() < 100 and picture[:, :left].min() < 100  # text was drawn


def test_save_gif_frames_and_size(tmp_path):
    frames = np.stack([np.full((8, 10), 30 * k) for k in range(5)])
    path = save_gif(tmp_path / "walk.gif", frames, duration_ms=80, scale=2)
    with Image.open(path) as gif:
        assert gif.size == (20, 16) and gif.n_frames == 5 and gif.info["duration"] == 80
    assert [p.name for p in tmp_path.iterdir()] == ["walk.gif"]


# ---------------------------------------------------------------------------------------------
# text: corpora and characters

def test_nietzsche_windows_and_vocabulary():
    text = load_text_corpus(shared("text/nietzsche.txt"))
    vocab = CharVocabulary.from_text(text)
    starts, next_chars = char_windows(text, maxlen=60, step=3)
    assert len(text) == 600_893 and len(vocab) == 57 and len(starts) == 200_278 == len(next_chars)
    batches = char_batches(text, vocab, maxlen=60, step=3, batch_size=128, shuffle=False)
    assert len(batches) == math.ceil(200_278 / 128)
    x, y = next(iter(batches))
    assert x.shape == (128, 60, 57) and x.dtype == np.float32 and y.shape == (128,) and y.dtype == np.int64
    assert (x.sum(-1) == 1).all()
    for k in (0, 1, 127):
        assert vocab.decode(x[k].argmax(-1)) == text[3 * k:3 * k + 60]
        assert vocab.indices_char[int(y[k])] == text[3 * k + 60] == next_chars[k]


def test_char_batches_cover_every_window_once():
    text = "abcdefghij" * 7
    vocab = CharVocabulary.from_text(text)
    starts, next_chars = char_windows(text, maxlen=5, step=2)
    batches = char_batches(text, vocab, maxlen=5, step=2, batch_size=4, seed=3)
    seen = []
    for x, y in batches:
        seen += [(vocab.decode(w.argmax(-1)), vocab.indices_char[int(c)]) for w, c in zip(x, y)]
    assert sorted(seen) == sorted((text[s:s + 5], c) for s, c in zip(starts, next_chars))
    assert len(list(char_batches(text, vocab, 5, 2, 4, shuffle=False))) == len(batches) == math.ceil(len(starts) / 4)


def test_char_vocabulary_save_load_and_errors(tmp_path):
    vocab = CharVocabulary.from_text("hello, wörld")
    assert vocab.chars == sorted(set("hello, wörld"))
    np.testing.assert_array_equal(vocab.encode("lol"), [vocab.char_indices[c] for c in "lol"])
    assert vocab.decode(vocab.encode("wörld, hello")) == "wörld, hello"
    again = CharVocabulary.load(vocab.save(tmp_path / "chars.json"))
    assert again.chars == vocab.chars and again.indices_char == vocab.indices_char
    with pytest.raises(ValueError, match="not in the vocabulary"):
        vocab.encode("xyz")


def test_load_text_corpus_lookup_and_download(tmp_path, isolated_cache, monkeypatch, http_root):
    (tmp_path / "mine.txt").write_text("Hello World\n", encoding="utf-8")
    assert load_text_corpus(tmp_path / "mine.txt") == "hello world\n"
    assert load_text_corpus(tmp_path / "mine.txt", lower=False) == "Hello World\n"
    with pytest.raises(FileNotFoundError, match="nietzsche.txt not found"):
        load_text_corpus(download=False)
    root, base = http_root
    (root / "nietzsche.txt").write_text("Supposing That Truth Is A Woman", encoding="utf-8")
    monkeypatch.setattr(text_mod, "NIETZSCHE_URL", f"{base}/nietzsche.txt")
    with pytest.raises(download.DownloadError, match="expected 600893"):
        load_text_corpus()
    assert not (isolated_cache / "text" / "nietzsche.txt").exists()
    monkeypatch.setattr(text_mod, "NIETZSCHE_CHARS", 31)
    assert load_text_corpus() == "supposing that truth is a woman"
    assert (isolated_cache / "text" / "nietzsche.txt").is_file()


def test_python_stdlib_corpus_is_deterministic():
    corpus = python_stdlib_corpus(max_chars=50_000)
    assert len(corpus) == 50_000 and "def " in corpus and "import " in corpus
    assert python_stdlib_corpus(max_chars=50_000) == corpus
    assert python_stdlib_corpus(max_chars=20_000) == corpus[:20_000]


# ---------------------------------------------------------------------------------------------
# text: words

TEXTS = ["The cat sat.", "the CAT, the dog!", "A dog's life"]


def test_text_vectorization_vocabulary_order():
    tv = TextVectorization()
    tv.adapt(TEXTS)
    # counts: the 3, cat 2, then count 1 tokens by descending UTF-8 bytes (Keras's tie-break)
    assert tv.get_vocabulary() == ["", "[UNK]", "the", "cat", "sat", "life", "dogs", "dog", "a"]
    assert tv.get_vocabulary(include_special_tokens=False)[:2] == ["the", "cat"]
    small = TextVectorization(max_tokens=6)
    small.adapt(TEXTS)
    assert small.get_vocabulary() == ["", "[UNK]", "the", "cat", "sat", "life"]
    assert small.vocabulary_size() == 6


def test_text_vectorization_padding_truncation_and_unk():
    tv = TextVectorization(max_tokens=6, output_sequence_length=8)
    tv.adapt(TEXTS)
    out = tv(["the dog sat on the mat", "Cat!"])
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [[2, 1, 4, 1, 2, 1, 0, 0], [3, 0, 0, 0, 0, 0, 0, 0]])
    short = TextVectorization(max_tokens=6, output_sequence_length=3, vocabulary=tv.get_vocabulary())
    np.testing.assert_array_equal(short("the dog sat on the mat"), [2, 1, 4])
    ragged = TextVectorization(vocabulary=tv.get_vocabulary())  # no length: pad to the longest
    np.testing.assert_array_equal(ragged(["cat", "the cat sat"]), [[3, 0, 0], [2, 3, 4]])


def test_text_vectorization_standardization():
    tv = TextVectorization()
    # punctuation is deleted, not replaced by a space: "--" glues the words around it
    assert tv.tokenize("It's--GREAT!!! (really) well-known e.g. 3.5/10") == \
        ["itsgreat", "really", "wellknown", "eg", "3510"]
    # as tf.strings.lower / tf.strings.split: only ASCII letters are lowered, only ASCII
    # whitespace splits
    assert tv.tokenize("Élan ÉLAN a\xa0b\tc\nd") == ["Élan", "Élan", "a\xa0b", "c", "d"]
    assert TextVectorization(standardize="lower").tokenize("Hi, you!") == ["hi,", "you!"]
    assert TextVectorization(standardize=None, split="character").tokenize("Ab") == ["A", "b"]
    with pytest.raises(TypeError):
        tv.adapt("one string")


def test_text_vectorization_save_load(tmp_path):
    tv = TextVectorization(max_tokens=20, output_sequence_length=5)
    tv.adapt(TEXTS)
    again = TextVectorization.load(tv.save(tmp_path / "vocab.json"))
    assert again.get_vocabulary() == tv.get_vocabulary()
    np.testing.assert_array_equal(again(TEXTS), tv(TEXTS))
    assert json.loads((tmp_path / "vocab.json").read_text())["config"]["output_sequence_length"] == 5
    with pytest.raises(ValueError, match="cannot be saved"):
        TextVectorization(standardize=str.upper).save(tmp_path / "x.json")


def test_text_files_folder(tmp_path):
    for name, body in (("a/pos/1.txt", "Great film.<br /><br />Loved it"), ("a/neg/2.txt", "Dull"),
                       ("a/README", "not a review")):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    texts = list(text_files_dataset(tmp_path / "a"))
    assert texts == ["Dull", "Great film.  Loved it"]  # sorted by path: neg before pos
    assert list(text_files_dataset(tmp_path / "a", limit=1)) == ["Dull"]


def test_imdb_reviews_vectorized_for_a_language_model():
    reviews = list(text_files_dataset(shared("imdb/aclImdb_train.tar.gz"), limit=6))
    assert len(reviews) == 6 and all(r and "<br />" not in r for r in reviews)
    tv = TextVectorization(max_tokens=15000, output_sequence_length=100)
    tv.adapt(reviews)
    vocab = tv.get_vocabulary()
    assert vocab[:2] == ["", "[UNK]"] and "the" in vocab[2:6]
    ids = tv(reviews)
    assert ids.shape == (6, 100) and ids.dtype == np.int64 and ids.max() < len(vocab)
    words = tv.tokenize(reviews[0])
    assert [vocab[i] for i in ids[0, :min(100, len(words))]] == words[:100]
    batches = lm_batches(ids, batch_size=4, seed=0)
    assert len(batches) == 2
    rows = []
    for inputs, targets in batches:
        assert inputs.shape[1] == targets.shape[1] == 99
        np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
        rows += [tuple(np.concatenate([i, t[-1:]])) for i, t in zip(inputs, targets)]
    assert sorted(rows) == sorted(map(tuple, ids))
