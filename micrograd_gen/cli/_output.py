"""What the picture-making commands (dream, style, stylize, train-style) share: where --out points,
checking it before hours of work rather than after, and names for intermediate pictures."""
from pathlib import Path

from PIL import Image


def picture_path(out, default_name):
    """--out as a picture file when it has a suffix, else a folder holding `default_name`; the
    suffix must be a format Pillow can write, checked now rather than after the work is done."""
    path = Path(out)
    if not path.suffix:
        path = path / default_name
    Image.init()
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"--out {out}: {path.suffix!r} is not a picture format Pillow can write; "
                         f"use .png or .jpg")
    if path.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name such as {path / default_name}")
    return path


def numbered(path, label):
    """`dream.png` -> `dream_<label>.png`, beside it: the name of an intermediate picture."""
    path = Path(path)
    return path.with_name(f"{path.stem}_{label}{path.suffix}")


def parse_weights_list(text, what="--layers"):
    """"mixed4=1,mixed5=1.5" -> {"mixed4": 1.0, "mixed5": 1.5} (a bare name weighs 1)."""
    out = {}
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            out[name] = float(value) if sep else 1.0
        except ValueError:
            raise ValueError(f"{what}: {item!r} is not NAME=NUMBER (e.g. mixed4=1,mixed5=1.5)") from None
        if not name:
            raise ValueError(f"{what}: {item!r} has no layer name (e.g. mixed4=1,mixed5=1.5)")
    if not out:
        raise ValueError(f"{what}: name at least one layer (e.g. mixed4=1,mixed5=1.5)")
    return out
