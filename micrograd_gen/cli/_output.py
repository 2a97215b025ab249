"""What the picture-making commands (dream, style, stylize, train-style) share: where --out points,
checking it before hours of work rather than after, and names for intermediate pictures."""
from pathlib import Path

# Pillow writes these for RGB pictures without extra plug-ins
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm")


def picture_path(out, default_name):
    """--out as a picture file when it has a suffix, else a folder holding `default_name`; the
    suffix must be a picture format, checked now rather than after the work is done."""
    path = Path(out)
    if not path.suffix:
        path = path / default_name
    if path.suffix.lower() not in PICTURE_SUFFIXES:
        raise ValueError(f"--out {out}: {path.suffix!r} is not a picture format this writes; "
                         f"use one of {' '.join(PICTURE_SUFFIXES)}")
    if path.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name such as {path / default_name}")
    return path


def auto_or(kind):
    """An argparse type: "auto" (None: the command picks, e.g. per model) or a number of `kind`."""
    def convert(text):
        if text == "auto":
            return None
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"expected a number or 'auto', got {text!r}") from None
    convert.__name__ = f"{kind.__name__} or 'auto'"
    return convert


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
            raise ValueError(f"{what}: {item!r} is not NAME=NUMBER (e.g. mixed4=1,mixed5=1.5)"
                             ) from None
        if not name:
            raise ValueError(f"{what}: {item!r} has no layer name (e.g. mixed4=1,mixed5=1.5)")
    if not out:
        raise ValueError(f"{what}: name at least one layer (e.g. mixed4=1,mixed5=1.5)")
    return out
