"""The installed package is self-contained: what a wheel carries, where caches go, the licence, the
version and the program name. (.ci/run builds the wheel, installs it into a fresh virtual
environment and runs it from another folder; these tests hold the pieces that make that work.)"""
import fnmatch
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import micrograd_gen
from micrograd_gen import download, weights

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(micrograd_gen.__file__).resolve().parent
tomllib = pytest.importorskip("tomllib")   # Python 3.11+
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _shipped(relative):
    """Whether pyproject's package-data (or being a .py file) puts this package file in a wheel."""
    if relative.endswith(".py"):
        return True
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["micrograd_gen"]
    return any(fnmatch.fnmatch(relative, p) for p in patterns)


def test_manifest_and_cuda_sources_are_package_data():
    assert weights.MANIFEST == PACKAGE / "weights_manifest.json" and weights.MANIFEST.is_file()
    assert _shipped("weights_manifest.json")
    from micrograd_gen.accel import cuda
    kernel_dir = PACKAGE / "kernels"
    if not os.environ.get("MICROGRAD_GEN_KERNELS"):
        assert cuda.KERNEL_DIR == kernel_dir
    for name in cuda.KERNEL_FILES:
        assert (kernel_dir / f"{name}.cu").is_file(), name
    files = [p.relative_to(PACKAGE).as_posix() for p in kernel_dir.iterdir()]
    assert files and all(_shipped(f) for f in files), [f for f in files if not _shipped(f)]
    assert not _shipped("kernels/notes.txt")   # the check can fail


def test_caches_default_to_the_user_cache_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MICROGRAD_GEN_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert download.weights_dir() == tmp_path / ".cache" / "micrograd_gen" / "weights"
    assert download.datasets_dir() == tmp_path / ".cache" / "micrograd_gen" / "datasets"
    assert weights.cached_path("vgg19_notop").parent == download.weights_dir()
    assert PACKAGE not in weights.cached_path("vgg19_notop").parents
    monkeypatch.setenv("MICROGRAD_GEN_HOME", str(tmp_path / "elsewhere"))
    assert download.weights_dir() == tmp_path / "elsewhere" / "weights"
    assert weights.expanded_path("vgg19_notop").parent == tmp_path / "elsewhere" / "weights" / \
        "from_archive"


def test_licence():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text
    assert PYPROJECT["project"]["license"] == "MIT"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]


def test_version_has_one_home():
    assert re.fullmatch(r"\d+\.\d+\.\d+", micrograd_gen.__version__)
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == \
        {"attr": "micrograd_gen.__version__"}


def test_gpu_extras_cover_cuda_12_and_13():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert any(d.startswith("cupy-cuda12x") for d in extras["gpu"])
    assert any(d.startswith("cupy-cuda13x") for d in extras["gpu-cuda13"])


def test_version_flag_and_program_name(capsys, tmp_path):
    from micrograd_gen.cli import main
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert capsys.readouterr().out.strip() == f"micrograd-gen {micrograd_gen.__version__}"
    # Run as a module, from another folder: the usage lines say `python -m micrograd_gen`.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "micrograd_gen", "--version"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"python -m micrograd_gen {micrograd_gen.__version__}"
    done = subprocess.run([sys.executable, "-m", "micrograd_gen", "weights", "nonsense"],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    # errors are one line (cli/__init__.py's parser), led by the program name
    assert done.returncode == 2 and done.stderr.startswith("python -m micrograd_gen weights: error")
