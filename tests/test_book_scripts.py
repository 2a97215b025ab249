"""Every script in examples/book/ runs in --quick mode and writes what its last listing makes.

Each runs in a subprocess, as a reader runs it, with the shared data folder; the checks look at
the files it wrote (pictures of the right size that are not blank, text of the right shape).
"""
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image


ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "examples" / "book"


def run_script(name, out, shared_data):
    env = dict(os.environ, MICROGRAD_GEN_DATA=str(shared_data))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(BOOK / f"{name}.py"), "--quick", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "SKIPPED" not in done.stdout, done.stdout
    print(f"{name} --quick: {time.perf_counter() - started:.1f} s")
    return done.stdout


def picture(path, size=None):
    """The picture at path as an array; it has the given (width, height) and is not one colour."""
    with Image.open(path) as im:
        if size is not None:
            assert im.size == size, path
        array = np.asarray(im, dtype=np.float32)
    assert array.std() > 1, f"{path} is blank"
    return array


def test_every_chapter_section_has_a_script():
    names = sorted(p.stem for p in BOOK.glob("chapter*.py"))
    assert names == ["chapter12_part01_text-generation", "chapter12_part02_deep-dream",
                     "chapter12_part03_neural-style-transfer",
                     "chapter12_part04_variational-autoencoders", "chapter12_part05_gans",
                     "chapter8_part01_char-lstm"]
    for name in names:
        text = (BOOK / f"{name}.py").read_text()
        assert text.startswith("# %% [markdown]\n")
        headings = [line for line in text.splitlines() if line.startswith("# ## Listing ")]
        numbers = [h.split()[3].rstrip(":") for h in headings]
        # The companion notebooks' listings of each section: the first and the last.
        first, last = {"chapter8_part01": ((8, 1), (8, 7)), "chapter12_part01": ((12, 1), (12, 8)),
                       "chapter12_part02": ((12, 9), (12, 15)),
                       "chapter12_part03": ((12, 16), (12, 23)),
                       "chapter12_part04": ((12, 24), (12, 29)),
                       "chapter12_part05": ((12, 30), (12, 38))}[name.split("_")[0] + "_"
                                                                 + name.split("_")[1]]
        # Every listing of the section, in order, each once.
        parsed = [tuple(int(p) for p in n.split(".")) for n in numbers]
        assert parsed == [(first[0], k) for k in range(first[1], last[1] + 1)], name


def test_text_generation(tmp_path, shared_data):
    output = run_script("chapter12_part01_text-generation", tmp_path, shared_data)
    lines = (tmp_path / "generated.txt").read_text().splitlines()
    assert len(lines) == 2 * 5   # two epochs, five temperatures
    for line in lines:
        head, sentence = line.split(": ", 1)
        assert sentence.startswith("This movie ") and len(sentence.split()) == 2 + 10
    assert "loss per epoch" in output
    root = ET.parse(tmp_path / "lm_loss_graph.svg").getroot()
    words = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    assert "MultiHeadAttention" in words or "ScaledDotProductAttention" in words
    assert "|grad|" in words


def test_deep_dream(tmp_path, shared_data):
    run_script("chapter12_part02_deep-dream", tmp_path, shared_data)
    dream = picture(tmp_path / "dream.png", (293, 220))
    with Image.open(shared_data / "images" / "golden_gate.jpg") as im:
        original = np.asarray(im.convert("RGB").resize((293, 220)), dtype=np.float32)
    assert np.abs(dream - original).mean() > 1   # it dreamt something


def test_neural_style_transfer(tmp_path, shared_data):
    output = run_script("chapter12_part03_neural-style-transfer", tmp_path, shared_data)
    losses = [float(line.split("loss=")[1]) for line in output.splitlines() if "loss=" in line]
    assert len(losses) == 2 and all(np.isfinite(losses)) and losses[1] < losses[0]
    for i in (10, 20):
        picture(tmp_path / f"combination_image_at_iteration_{i}.png", (85, 64))


def test_variational_autoencoder(tmp_path, shared_data):
    run_script("chapter12_part04_variational-autoencoders", tmp_path, shared_data)
    grid = picture(tmp_path / "latent_grid.png", (280, 280))
    cells = grid.reshape(10, 28, 10, 28).transpose(0, 2, 1, 3).reshape(100, -1)
    assert len({tuple(np.round(c / 32)) for c in cells}) > 1   # the decoder's output varies


def test_gans(tmp_path, shared_data):
    output = run_script("chapter12_part05_gans", tmp_path, shared_data)
    picture(tmp_path / "first_image.png", (64, 64))
    made = sorted(p.name for p in tmp_path.glob("generated_img_*.png"))
    assert made == [f"generated_img_{e:03d}_{i}.png" for e in range(2) for i in range(10)]
    for name in made[:3]:
        with Image.open(tmp_path / name) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
    assert "d_loss" in output and "nan" not in output.lower()


def test_first_edition_char_lstm(tmp_path, shared_data):
    run_script("chapter8_part01_char-lstm", tmp_path, shared_data)
    lines = (tmp_path / "generated.txt").read_text(encoding="utf-8").split("\ntemperature ")
    assert lines[0].startswith('epoch 1, seed "')
    temperatures = [line.split(": ", 1) for line in lines[1:]]
    assert [t for t, _ in temperatures] == ["0.2", "0.5", "1.0", "1.2"]
    # 40 characters each (which may include newlines); the file ends with one more
    assert [len(sample) for _, sample in temperatures] == [40, 40, 40, 41]


def test_outputs_never_go_into_the_repository(shared_data):
    done = subprocess.run([sys.executable, str(BOOK / "chapter12_part02_deep-dream.py"), "--quick",
                           "--out", str(ROOT / "out_book")], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ,
                                                          MICROGRAD_GEN_DATA=str(shared_data)))
    assert done.returncode == 2 and "outside" in done.stderr
    assert not (ROOT / "out_book").exists()


def test_a_missing_data_folder_is_a_clear_skip(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MICROGRAD_GEN_DATA"}
    done = subprocess.run([sys.executable, str(BOOK / "chapter12_part02_deep-dream.py"), "--quick",
                           "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0
    assert "SKIPPED" in done.stdout and "images/golden_gate.jpg" in done.stdout
    assert "MICROGRAD_GEN_DATA" in done.stdout
