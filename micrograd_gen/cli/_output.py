"""What the commands share about what they write: where --out points, checking before hours of
work rather than after that it can be written and is none of the inputs, and names for
intermediate pictures."""
import math
import os
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


def check_writable(path, flag="--out"):
    """Find out now that the file `path` can be written: its folder exists or can be made, and a
    file can be created there. The error names `flag` and the user's path (not a temporary)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder, not a file")
    folder = path.parent
    for ancestor in (folder, *folder.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise ValueError(f"{flag} {path}: {ancestor} is a file, not a folder")
            break
    probe = folder / f".{path.name}.probe{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.open("x").close()
        probe.unlink()
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None
    return path


def write_text(path, text):
    """Write a small text file (history.json) through a temporary file, as every output is."""
    from ..download import atomic_write
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def refuse_inputs(out, inputs, flag="--out"):
    """An output that is one of the inputs is refused: `dream in.png --out in.png` would replace
    the picture it dreams on. `inputs`: {what the input is: its path or None}."""
    for what, given in inputs.items():
        if given is not None and _same_file(out, given):
            raise ValueError(f"{flag} {out} is the {what} ({given}): writing it would destroy an "
                             "input; give another name")


def _same_file(a, b):
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


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
            out[name] = math.nan
        if not math.isfinite(out[name]):
            raise ValueError(f"{what}: {item!r} is not NAME=NUMBER with a finite number (e.g. "
                             "mixed4=1,mixed5=1.5)")
        if not name:
            raise ValueError(f"{what}: {item!r} has no layer name (e.g. mixed4=1,mixed5=1.5)")
    if not out:
        raise ValueError(f"{what}: name at least one layer (e.g. mixed4=1,mixed5=1.5)")
    return out
