"""8-bit weight archives (value = q * scale + min per tensor) expand into Keras-format files."""
import json

import h5py
import numpy as np

from micrograd_gen import weights


def make_archive(path):
    layout = {"layers": [["input_1", []],
                         ["block1_conv1", [["block1_conv1_W_1:0", "k"], ["block1_conv1_b_1:0", "b"]]]],
              "root_attrs": {}}
    q = np.arange(2 * 2 * 3 * 4, dtype=np.uint8).reshape(2, 2, 3, 4)
    np.savez(path, __layout__=json.dumps(layout),
             **{"k:q": q, "k:scale_min": np.array([0.5, -1.0]),
                "b:q": np.array([0, 255], np.uint8), "b:scale_min": np.array([0.01, 0.0])})
    return q


def test_archive_in_the_data_folder_is_found_and_expanded_once(tmp_path, monkeypatch):
    data, home = tmp_path / "data", tmp_path / "home"
    (data / "weights").mkdir(parents=True)
    q = make_archive(data / "weights" / weights.entry("vgg19_notop")["archive"])
    monkeypatch.setenv("MICROGRAD_GEN_DATA", str(data))
    monkeypatch.setenv("MICROGRAD_GEN_HOME", str(home))
    monkeypatch.delenv("MICROGRAD_GEN_WEIGHTS", raising=False)

    archive = data / "weights" / weights.entry("vgg19_notop")["archive"]
    # Looking only looks: the archive is reported, and nothing is written anywhere.
    assert weights.find("vgg19_notop") == (archive, "archive")
    assert not home.exists()
    path = weights.resolve("vgg19_notop", "imagenet")   # a command needs it: expanded into the cache
    assert path == home / "weights" / "from_archive" / weights.entry("vgg19_notop")["file"]
    assert path.is_file() and weights.find("vgg19_notop") == (path, "local")
    with h5py.File(path) as f:
        assert [n.decode() for n in f.attrs["layer_names"]] == ["input_1", "block1_conv1"]
        group = f["block1_conv1"]
        assert [n.decode() for n in group.attrs["weight_names"]] == ["block1_conv1_W_1:0",
                                                                       "block1_conv1_b_1:0"]
        np.testing.assert_allclose(group["block1_conv1_W_1:0"][...], q * 0.5 - 1.0)
        np.testing.assert_allclose(group["block1_conv1_b_1:0"][...], [0.0, 2.55], rtol=1e-6)
    stamp = path.stat().st_mtime_ns
    assert weights.resolve("vgg19_notop", "imagenet") == path and path.stat().st_mtime_ns == stamp


def test_no_archive_means_not_found(tmp_path, monkeypatch):
    monkeypatch.setenv("MICROGRAD_GEN_DATA", str(tmp_path))
    monkeypatch.setenv("MICROGRAD_GEN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MICROGRAD_GEN_WEIGHTS", raising=False)
    assert weights.find("inception_v3_notop") == (None, None)


def test_weights_list_writes_nothing(tmp_path, monkeypatch, capsys):
    # `weights list` used to expand every archive (168 MB with the shared data) into the checkout.
    from micrograd_gen.cli import weights as cli_weights
    data, home = tmp_path / "data", tmp_path / "home"
    (data / "weights").mkdir(parents=True)
    make_archive(data / "weights" / weights.entry("vgg19_notop")["archive"])
    monkeypatch.setenv("MICROGRAD_GEN_DATA", str(data))
    monkeypatch.setenv("MICROGRAD_GEN_HOME", str(home))
    monkeypatch.delenv("MICROGRAD_GEN_WEIGHTS", raising=False)
    before = sorted(p for p in tmp_path.rglob("*"))
    assert cli_weights.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "8-bit archive" in out and "from_archive" in out
    assert sorted(p for p in tmp_path.rglob("*")) == before and not home.exists()
