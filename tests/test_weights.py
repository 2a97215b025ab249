"""micrograd_gen.weights: the manifest, the cache, local copies, and downloads from a local HTTP server
on 127.0.0.1 serving a file the test makes (no internet)."""
import hashlib
import http.server
import json
import re
import socket
import threading

import pytest

from micrograd_gen import weights
from micrograd_gen.download import DownloadError


@pytest.fixture
def server(tmp_path):
    """(base URL, served folder, list of requested paths)."""
    root = tmp_path / "served"
    root.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root, hits
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An empty cache under $MICROGRAD_GEN_HOME, no local folders, and a manifest of our own."""
    monkeypatch.setenv("MICROGRAD_GEN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MICROGRAD_GEN_WEIGHTS", raising=False)
    monkeypatch.delenv("MICROGRAD_GEN_DATA", raising=False)
    manifest = tmp_path / "manifest.json"
    monkeypatch.setattr(weights, "MANIFEST", manifest)

    def write(**entries):
        manifest.write_text(json.dumps(entries))
    return write


def _entry(url, data, md5=None, mirrors=()):
    return {"model": "Tiny", "file": "tiny_notop.h5", "url": url, "mirrors": list(mirrors),
            "md5": md5 or hashlib.md5(data).hexdigest(), "bytes": len(data), "layers": 2,
            "layers_with_weights": 1, "layout": "test"}


def _closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/tiny_notop.h5"


def test_download_checks_md5_and_caches(server, env, tmp_path):
    base, root, hits = server
    data = b"\x89HDF pretend weights " * 5000
    (root / "tiny_notop.h5").write_bytes(data)
    env(tiny=_entry(f"{base}/tiny_notop.h5", data))
    lines = []
    path = weights.resolve("tiny", "imagenet", log=lines.append)
    assert path == tmp_path / "home" / "weights" / "tiny_notop.h5"
    assert path.read_bytes() == data
    assert lines and "downloading tiny_notop.h5" in lines[-1] and "100.0%" in lines[-1]
    assert weights.resolve("tiny", "imagenet") == path  # from the cache: no second request
    assert hits == ["/tiny_notop.h5"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny_notop.h5"]


def test_wrong_md5_keeps_nothing(server, env, tmp_path):
    base, root, _ = server
    (root / "tiny_notop.h5").write_bytes(b"a different file")
    env(tiny=_entry(f"{base}/tiny_notop.h5", b"x", md5="0" * 32))
    with pytest.raises(DownloadError, match="md5"):
        weights.resolve("tiny", "imagenet", log=lambda m: None)
    cache = tmp_path / "home" / "weights"
    assert not cache.exists() or not list(cache.iterdir())


def test_mirror_is_tried_after_the_official_url(server, env):
    base, root, hits = server
    data = b"weights"
    (root / "mirror.h5").write_bytes(data)
    env(tiny=_entry(f"{base}/missing.h5", data, mirrors=[f"{base}/mirror.h5"]))
    path = weights.resolve("tiny", "imagenet", log=lambda m: None)
    assert path.read_bytes() == data and hits == ["/missing.h5", "/mirror.h5"]


def test_no_network_error_names_file_url_and_folder(env, tmp_path):
    url = _closed_port_url()
    env(tiny=_entry(url, b"x"))
    with pytest.raises(DownloadError) as e:
        weights.resolve("tiny", "imagenet", log=lambda m: None)
    msg = str(e.value)
    assert "tiny_notop.h5" in msg and url in msg and str(tmp_path / "home" / "weights") in msg
    assert "MICROGRAD_GEN_WEIGHTS" in msg


def test_cached_file_with_wrong_md5_is_an_error(env, tmp_path):
    env(tiny=_entry(_closed_port_url(), b"official bytes"))
    cache = tmp_path / "home" / "weights"
    cache.mkdir(parents=True)
    (cache / "tiny_notop.h5").write_bytes(b"made by make_weights_h5.py")
    with pytest.raises(DownloadError, match=r"not the official file.*by path"):
        weights.resolve("tiny", "imagenet")


def test_local_copies_are_used_without_hash_check(env, tmp_path, monkeypatch):
    env(tiny=_entry(_closed_port_url(), b"official bytes"))
    local = tmp_path / "local"
    local.mkdir()
    (local / "tiny_notop.h5").write_bytes(b"other bytes")
    monkeypatch.setenv("MICROGRAD_GEN_WEIGHTS", str(local))
    assert weights.resolve("tiny", "imagenet") == local / "tiny_notop.h5"
    assert weights.find("tiny") == (local / "tiny_notop.h5", "local")
    # $MICROGRAD_GEN_DATA/weights/ is searched too.
    monkeypatch.delenv("MICROGRAD_GEN_WEIGHTS")
    data = tmp_path / "data"
    (data / "weights").mkdir(parents=True)
    (data / "weights" / "tiny_notop.h5").write_bytes(b"more bytes")
    monkeypatch.setenv("MICROGRAD_GEN_DATA", str(data))
    assert weights.resolve("tiny", "imagenet") == data / "weights" / "tiny_notop.h5"


def test_path_and_none(env, tmp_path):
    env(tiny=_entry(_closed_port_url(), b"x"))
    assert weights.resolve("tiny", None) is None
    f = tmp_path / "mine.h5"
    f.write_bytes(b"x")
    assert weights.resolve("tiny", str(f)) == f
    with pytest.raises(FileNotFoundError, match="no such file"):
        weights.resolve("tiny", str(tmp_path / "absent.h5"))
    with pytest.raises(KeyError, match="known: tiny"):
        weights.entry("resnet50")


def test_shipped_manifest():
    known = weights.manifest()
    assert set(known) == {"vgg19_notop", "inception_v3_notop"}
    for e in known.values():
        assert re.fullmatch(r"[0-9a-f]{32}", e["md5"])
        assert e["url"].startswith("https://") and e["url"].endswith(e["file"])
        assert all(m.endswith(e["file"]) for m in e["mirrors"])
    assert known["vgg19_notop"]["md5"] == "253f8cb515780f3b799900260a226db6"
    assert known["inception_v3_notop"]["md5"] == "bcbd6486424b2319ff4ef7d526e38f63"
    assert known["vgg19_notop"]["layers_with_weights"] == 16
    assert known["inception_v3_notop"]["layers_with_weights"] == 188


# ---- the command line ----------------------------------------------------------------------------

def test_cli_list_and_fetch(server, env, tmp_path, capsys, monkeypatch):
    from micrograd_gen.cli import weights as cli_weights
    base, root, _ = server
    data = b"weights"
    (root / "tiny_notop.h5").write_bytes(data)
    env(tiny=_entry(f"{base}/tiny_notop.h5", data))
    assert cli_weights.main(["list"]) == 0
    assert "not downloaded" in capsys.readouterr().out
    monkeypatch.setattr("sys.stderr", open(tmp_path / "progress.txt", "w"))
    assert cli_weights.main(["fetch", "tiny"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "home" / "weights" / "tiny_notop.h5")
    assert cli_weights.main(["list"]) == 0
    assert "(md5 checked)" in capsys.readouterr().out
    assert cli_weights.main(["fetch", "resnet"]) == 1


def test_cli_verify(tmp_path, capsys):
    import h5py
    import numpy as np
    from micrograd_gen import applications, io
    from micrograd_gen.cli import weights as cli_weights
    path = tmp_path / "vgg.h5"
    io.save_weights(applications.VGG19(weights=None), path)
    assert cli_weights.main(["verify", str(path)]) == 0  # the model is guessed from the names
    out = capsys.readouterr().out
    assert "block1_conv1  ok" in out and "16 of 16 layers match" in out
    assert "not the official file" in out
    with h5py.File(path, "r+") as f:
        del f["block5_conv4/block5_conv4/kernel:0"]
        f["block5_conv4/block5_conv4/kernel:0"] = np.zeros((3, 3, 512, 256), "f4")
    assert cli_weights.main(["verify", "--model", "vgg19", str(path)]) == 1
    out = capsys.readouterr().out
    assert "block5_conv4  MISMATCH" in out and "(3, 3, 512, 256)" in out
    assert "(3, 3, 512, 512)" in out and "15 of 16 layers match" in out
    assert cli_weights.main(["verify", "--model", "inception_v3", str(path)]) == 1
    assert "16 layers with weights, the model has 188" in capsys.readouterr().err


def test_cli_verify_guesses_the_model_of_a_keras_3_file(tmp_path, capsys):
    from micrograd_gen import applications
    from micrograd_gen.cli import weights as cli_weights
    path = applications.VGG19(weights=None).save_weights(tmp_path / "vgg.weights.h5")
    assert cli_weights.main(["verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert "keras3 Keras weight file, checked against vgg19" in out
    assert "16 of 16 layers match" in out


def test_a_failed_download_leaves_no_folder(env, tmp_path):
    env(tiny=_entry(_closed_port_url(), b"x"))
    with pytest.raises(DownloadError):
        weights.fetch("tiny")
    assert not (tmp_path / "home").exists()
