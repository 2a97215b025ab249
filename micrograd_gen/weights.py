"""Known pretrained weight files (weights_manifest.json, beside this module) and finding or
fetching them.

`resolve("vgg19_notop", "imagenet")` returns a path, looking in order at
1. the download cache (`download.weights_dir()`: $MICROGRAD_GEN_HOME/weights, else
   ~/.cache/micrograd_gen/weights): a file there under the official name must have the official md5;
2. local copies: the folder named by $MICROGRAD_GEN_WEIGHTS, then $MICROGRAD_GEN_DATA/weights/. These
   are files someone put there on purpose (for instance ../shared/tools/make_weights_h5.py's
   output, whose bytes differ from the official files), so they are used without a hash check,
   as a file passed by path is. A local folder may also hold the entry's 8-bit archive (the
   project's shared data keeps real weights so: each tensor as uint8 q with value = q * scale +
   min); the first command that needs the weights expands it into a Keras-format file under the
   cache's `from_archive/`;
3. the official URL (then its mirrors): downloaded with a progress line into the cache through a
   temporary file, md5-checked, then renamed into place.

`find` only looks (it is what `weights list` shows): nothing is written until `resolve` needs it.
"""
import json
import os
import sys
from pathlib import Path

from . import download
from .download import DownloadError

# Package data, so that an installed wheel has it too.
MANIFEST = Path(__file__).resolve().parent / "weights_manifest.json"


def manifest():
    """{entry name: {model, file, url, mirrors, md5, bytes, layers, layers_with_weights, layout}}."""
    with open(MANIFEST) as f:
        return json.load(f)


def entry(name):
    known = manifest()
    if name not in known:
        raise KeyError(f"no weight file called {name!r}; known: {', '.join(known)}")
    return known[name]


def local_dirs():
    """Folders of local copies, in the order they are searched (only those that exist)."""
    dirs = []
    if os.environ.get("MICROGRAD_GEN_WEIGHTS"):
        dirs.append(Path(os.environ["MICROGRAD_GEN_WEIGHTS"]).expanduser())
    data = download.shared_data_dir()
    if data is not None:
        dirs.append(data / "weights")
    return [d for d in dirs if d.is_dir()]


def cached_path(name):
    """Where the download cache keeps this entry's file (it may not exist yet)."""
    return download.weights_dir() / entry(name)["file"]


def find(name):
    """(path, source) of an existing copy, or (None, None); looks only, writes nothing.

    source is "cache" (md5-checked), "local" (a local copy, not hash-checked), or "archive" (an
    8-bit archive in a local folder, which `resolve` expands into the cache when it is needed).
    """
    e = entry(name)
    cached = cached_path(name)
    if cached.is_file():
        check_cached(name, cached)
        return cached, "cache"
    for folder in local_dirs():
        candidate = folder / e["file"]
        if candidate.is_file():
            return candidate, "local"
    expanded = expanded_path(name)
    if expanded.is_file():
        return expanded, "local"
    for folder in local_dirs():
        archive = folder / e.get("archive", "-")
        if archive.is_file():
            return archive, "archive"
    return None, None


def expanded_path(name):
    """Where an entry's 8-bit archive is expanded to (in the cache, never beside the archive)."""
    return download.weights_dir() / "from_archive" / entry(name)["file"]


def expand_archive(archive, dest):
    """Write the Keras legacy .h5 that an 8-bit archive describes (atomically) and return dest.

    The archive (.npz, read without pickle) holds `__layout__`, JSON of the file's layers in order
    with their weight names, and for each tensor `KEY:q` (uint8) and `KEY:scale_min`.
    """
    import numpy as np

    from .io import _h5py, _write_name_list
    h5py = _h5py()
    with np.load(archive, allow_pickle=False) as z:
        layout = json.loads(str(z["__layout__"]))

        def write(tmp):
            with h5py.File(str(tmp), "w") as f:
                _write_name_list(f.attrs, "layer_names", [name for name, _ in layout["layers"]])
                for key, value in layout.get("root_attrs", {}).items():
                    f.attrs[key] = np.bytes_(value.encode())
                for name, weights in layout["layers"]:
                    group = f.create_group(name)
                    _write_name_list(group.attrs, "weight_names", [w for w, _ in weights])
                    for weight_name, key in weights:
                        scale, low = z[key + ":scale_min"]
                        value = z[key + ":q"].astype(np.float32) * np.float32(scale) + np.float32(low)
                        group.create_dataset(weight_name, data=value, track_times=False)

        download.atomic_write(dest, write)
    return dest


def check_cached(name, path):
    e = entry(name)
    try:
        download.verify(path, md5=e["md5"])
    except DownloadError as err:
        raise DownloadError(
            f"{err}. {path.name} in the download cache {path.parent} is not the official file. "
            f"Delete it to download it again, or, if it is a file of your own (for example from "
            f"make_weights_h5.py), pass it by path (weights='PATH') or put it in a folder named by "
            f"$MICROGRAD_GEN_WEIGHTS: files found there are used without a hash check") from None


def fetch(name, log=None):
    """Download the entry's file into the cache unless it is there already; return its path."""
    e = entry(name)
    dest = cached_path(name)
    if dest.is_file():
        check_cached(name, dest)
        return dest
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    urls = [e["url"]] + list(e.get("mirrors", []))
    failures = []
    for url in urls:
        try:
            return download.fetch(url, dest, md5=e["md5"], log=log)
        except DownloadError as err:
            failures.append(f"{url}: {err.__cause__ or err}")
    where = ", ".join(str(d) for d in local_dirs()) or "none set"
    raise DownloadError(
        f"could not download {e['file']} ({e['model']} weights, {e['bytes']:,} bytes) from "
        f"{e['url']}.\nWith no network, download it elsewhere and copy it to {dest.parent}/ "
        f"(md5 {e['md5']}), or put any Keras-format copy in the folder named by "
        f"$MICROGRAD_GEN_WEIGHTS (now: {where}), or pass weights='PATH'.\nAttempts:\n  "
        + "\n  ".join(failures))


def resolve(name, weights, log=None):
    """The file to load for `weights` (None, "imagenet" or a path); None when weights is None."""
    if weights is None:
        return None
    if isinstance(weights, str) and weights == "imagenet":
        path, source = find(name)
        if source == "archive":
            return expand_archive(path, expanded_path(name))
        return path if path is not None else fetch(name, log=log)
    path = Path(weights).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"weights={str(weights)!r}: no such file (use None, 'imagenet' or "
                                "the path of a Keras .h5 weight file)")
    return path
