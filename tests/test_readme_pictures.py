"""The README's pictures exist, show at a size where their content reads, and stay small."""
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PICTURES = re.findall(r"!\[[^\]]*\]\((docs/images/[^)]+)\)", README)


def test_the_readme_shows_its_pictures():
    assert len(PICTURES) >= 7
    for name in PICTURES:
        assert (ROOT / name).is_file(), name
    # Every picture in docs/images that the README names is one of these; no stale copies of them.
    stems = {Path(name).stem for name in PICTURES}
    for path in (ROOT / "docs" / "images").iterdir():
        if path.stem in stems:
            assert f"docs/images/{path.name}" in PICTURES, f"{path.name}: a stale copy"


@pytest.mark.parametrize("name", [n for n in PICTURES if not n.endswith(".svg")])
def test_each_picture_reads_and_is_a_few_hundred_kb_at_most(name):
    path = ROOT / name
    assert path.stat().st_size <= 400 * 1024, f"{name}: {path.stat().st_size // 1024} KB"
    with Image.open(path) as im:
        width, height = im.size
    if "vae_grid" in name:
        assert width == height and width % 28 == 0 and width // 28 <= 30  # 28 px a digit
    else:
        assert width >= 512, f"{name} is {width} px wide"


def test_the_graph_drawing_is_svg():
    names = [n for n in PICTURES if n.endswith(".svg")]
    assert names == ["docs/images/graph_mlp.svg"]
    root = ET.parse(ROOT / names[0]).getroot()
    words = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "dense/kernel" in words and "SoftmaxCrossEntropy" in words
