"""Weight files: Keras's legacy HDF5 layout and Keras 3's `.weights.h5` (read and write).

Legacy layout (keras-applications files, Keras 2 `save_weights("x.h5")`, and what we write):
```
/ attrs: layer_names        every layer in model order, weight-less ones too; a long list is
                            split into layer_names0, layer_names1, ... (HDF5 caps one attribute)
/<layer> attrs: weight_names  that layer's arrays in load order (may be split the same way)
/<layer>/<weight_name>      float dataset; the name may hold a slash ("conv2d_1/kernel:0"),
                            which h5py resolves as a nested path
```
A Keras 2 whole-model file keeps the same tree under `/model_weights`.

Keras 3 layout (`model.save_weights("x.weights.h5")`): no names at all, only paths that follow the
model's structure (`layers/conv2d/vars/0`, `encoder/layers/dense_1/vars/1`); keras3_weights.py
describes it, and writes it when a name ends in `.weights.h5` (Keras 3 reads every such name so).

Loading plans every assignment first (counts, names, shapes, values) and assigns only when the
whole plan is sound, so a wrong or damaged file raises `WeightFileError` and leaves the model as it
was: damaged metadata (what h5py reports as OSError, RuntimeError, KeyError, a bad string encoding)
and weights holding NaN or inf (which would only ever compute NaN) included.
Only numeric datasets are read; nothing in a file is executed or unpickled.

The model protocol: `model.layers` is the flat list of leaf layers in order; a layer has `.name`,
`.weights` (Tensors, Keras order), `.weight_names` ("kernel", "bias", ...), `get_weights()` and
`set_weights(arrays)`.
"""
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np

from . import backend, keras3_weights
from .download import atomic_write
from .tensor import Tensor

# Keras splits a list attribute when it would pass this many bytes (HDF5's object header limit).
HDF5_OBJECT_HEADER_LIMIT = 64512
# Keras 2 reads a file without `keras_version` as a Keras 1 file and converts its kernels; we follow
# the Keras 2 layout ("{layer}/{weight}:0"), so say so. `backend` tells it not to flip kernels.
KERAS_VERSION = b"2.15.0"
OPTIMIZER_GROUP = "optimizer_state"


class WeightFileError(ValueError):
    """A weight file that cannot go into this model: wrong file, wrong model, damaged, mismatched."""


# ---- reading ---------------------------------------------------------------------------------------

# What h5py and the decoding of names raise on damaged metadata: a flipped byte in an attribute's
# header gives OSError, RuntimeError or TypeError ("Unknown string encoding"), in a name
# UnicodeDecodeError (a ValueError), in a link KeyError.
_DAMAGE = (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError)


@contextmanager
def _reading(path):
    """Turn any error of reading a damaged file into WeightFileError naming the file."""
    try:
        yield
    except WeightFileError:
        raise
    except _DAMAGE as e:
        what = " ".join(str(e).split())  # h5py's messages may span lines
        raise WeightFileError(f"{path}: the file's structure is damaged ({type(e).__name__}: "
                              f"{what}); it cannot be read: fetch or write it again") from e


def _h5py():
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - h5py is a dependency
        raise ImportError("reading and writing weight files needs h5py: pip install h5py") from e
    return h5py


def open_weight_file(path):
    """Open `path` read-only as HDF5, or raise WeightFileError saying what the file looks like."""
    h5py = _h5py()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weight file {path} does not exist")
    if path.is_dir():
        raise WeightFileError(f"{path} is a folder, not a weight file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(64)
    if not h5py.is_hdf5(str(path)):
        hint = ""
        if head.lstrip().lower().startswith((b"<!doctype", b"<html", b"<?xml")):
            hint = " (it is a web page: a download that returned an error page?)"
        elif head.startswith(b"PK"):
            hint = " (it is a zip archive: a .keras model? pass its model.weights.h5 instead)"
        elif size == 0:
            hint = " (it is empty)"
        raise WeightFileError(f"{path} is not an HDF5 weight file{hint}; it starts with {head[:16]!r}")
    try:
        return h5py.File(str(path), "r")
    except OSError as e:
        raise WeightFileError(
            f"{path} ({size:,} bytes) cannot be read as HDF5: {e}. The file is damaged or "
            "truncated (an interrupted download?): delete it and fetch it again") from e


def _attr(attrs, name, default=None):
    """attrs.get(name, default), reading only strings and numbers. The type of a damaged
    attribute can turn into a variable-length sequence or a reference, and reading one of those
    makes HDF5 follow whatever pointer the damage wrote: a segmentation fault, not an error."""
    h5py = _h5py()
    if name not in attrs:
        return default
    kind = attrs.get_id(name).get_type().get_class()
    if kind not in (h5py.h5t.STRING, h5py.h5t.INTEGER, h5py.h5t.FLOAT):
        raise ValueError(f"attribute {name!r} has HDF5 type class {kind}, not a string or a "
                         "number")  # _reading names the file
    return attrs[name]


def _name_list(attrs, name):
    """A list attribute as str, joining Keras's split form name0, name1, ... when needed.
    (Messages show these names with repr(): a damaged name may hold a newline or worse.)"""
    whole = _attr(attrs, name)
    if whole is not None:
        chunks = [whole]
    else:
        chunks, k = [], 0
        while (chunk := _attr(attrs, f"{name}{k}")) is not None:
            chunks.append(chunk)
            k += 1
    out = []
    for chunk in chunks:
        for item in np.atleast_1d(chunk):
            out.append(item.decode("utf8") if isinstance(item, bytes) else str(item))
    return out


def _has_list(attrs, name):
    return name in attrs or f"{name}0" in attrs


def file_format(f):
    """'legacy' (Keras 2 / keras-applications), or 'keras3' (`.weights.h5`), or None."""
    if _has_list(f.attrs, "layer_names"):
        return "legacy"
    if "model_weights" in f and _has_list(f["model_weights"].attrs, "layer_names"):
        return "legacy"
    if "vars" in f or "layers" in f or "_layer_checkpoint_dependencies" in f:
        return "keras3"
    return None


class FileLayer:
    """One layer of a weight file: its name and its (weight name, h5py dataset) pairs in order."""

    def __init__(self, name, entries):
        self.name = name
        self.entries = entries

    @property
    def shapes(self):
        return [tuple(ds.shape) for _, ds in self.entries]

    def __repr__(self):
        return f"FileLayer({self.name!r}, {self.shapes})"


def _numeric(path, layer, weight_name, ds):
    h5py = _h5py()
    if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "fiub":
        kind = "a group" if isinstance(ds, h5py.Group) else f"dtype {getattr(ds, 'dtype', '?')}"
        raise WeightFileError(f"{path}: layer {layer!r} weight {weight_name!r} is {kind}, "
                              "not a numeric array")
    return ds


def legacy_layers(f, path):
    """Every layer of a legacy file in file order (weight-less layers too), as FileLayer."""
    root = f if _has_list(f.attrs, "layer_names") else f["model_weights"]
    layers = []
    for name in _name_list(root.attrs, "layer_names"):
        try:
            group = root[name]
        except KeyError:
            raise WeightFileError(f"{path}: layer {name!r} is listed in layer_names but has no "
                                  "group (a damaged file?)") from None
        entries = []
        for weight_name in _name_list(group.attrs, "weight_names"):
            try:
                ds = group[weight_name]
            except KeyError:
                raise WeightFileError(f"{path}: layer {name!r} lists weight {weight_name!r} that "
                                      "is not in the file (a damaged file?)") from None
            entries.append((weight_name, _numeric(path, name, weight_name, ds)))
        layers.append(FileLayer(name, entries))
    return layers


# ---- matching the file to the model --------------------------------------------------------------

def _has_weights(layer):
    return len(getattr(layer, "weights", None) or []) > 0


def _model_shapes(layer):
    return [tuple(w.shape) for w in layer.weights]


def _fmt(shapes):
    return "[" + ", ".join(str(tuple(s)) for s in shapes) + "]"


class Match:
    """One model layer paired with the file layer meant for it, and what is wrong, if anything."""

    def __init__(self, layer, file_layer, problem=None):
        self.layer = layer
        self.file_layer = file_layer
        self.problem = problem

    @property
    def ok(self):
        return self.problem is None


def _check_pair(path, layer, file_layer):
    model_shapes = _model_shapes(layer)
    file_shapes = file_layer.shapes
    where = (f"model layer '{layer.name}'" if layer.name == file_layer.name
             else f"model layer '{layer.name}' (file layer {file_layer.name!r})")
    if len(model_shapes) != len(file_shapes):
        return (f"{path}: {where} has {len(model_shapes)} weights {_fmt(model_shapes)}, the file "
                f"has {len(file_shapes)} {_fmt(file_shapes)}")
    for i, (ms, fs) in enumerate(zip(model_shapes, file_shapes)):
        if ms != fs:
            names = getattr(layer, "weight_names", None) or []
            wname = names[i] if i < len(names) else f"weight {i}"
            return (f"{path}: {where} {wname}: the file has shape {fs} "
                    f"({file_layer.entries[i][0]!r}), the model has {ms}")
    return None


def _unbuilt_hint(model):
    unbuilt = [l.name for l in model.layers if getattr(l, "built", True) is False]
    if unbuilt:
        return (f"; layers {unbuilt[:3]} have no weights yet (layers build them on their first "
                "call: run the model on an input first)")
    return ""


def match_layers(model, f, path, by_name=False):
    """Pair each model layer that has weights with a file layer; list of Match (problems inside).

    by order: the k-th file layer with weights goes to the k-th model layer with weights (how Keras
    loads legacy files). by name: each model layer takes the file layer of its name; file layers
    the model does not have are ignored (a notop model from a full file). by_name="auto": by name
    when every model layer with weights has a namesake in the file, else by order (what a model
    with Keras's own layer names wants: the file's order cannot mislead it). A Keras 3 file is matched
    by class and position, its only key. Raises WeightFileError for problems that concern the
    whole file (unknown format, no layer in common, different counts).
    """
    fmt = file_format(f)
    if fmt is None:
        raise WeightFileError(f"{path} is HDF5 but not a Keras weight file (no layer_names "
                              f"attribute, no layers/ group; top-level keys: {list(f)[:8]})")
    model_layers = [l for l in model.layers if _has_weights(l)]
    if fmt == "keras3":
        matches = []
        for layer, key, entries, problem in keras3_weights.layer_entries(model, f, path):
            file_layer = None if entries is None else FileLayer(key, entries)
            matches.append(Match(layer, file_layer, problem or _check_pair(path, layer, file_layer)))
        if matches and all(m.file_layer is None for m in matches):
            raise WeightFileError(f"{path}: none of the model's layers is in this Keras 3 file "
                                  f"(groups with weights: {sorted(keras3_weights.file_vars(f))[:8]})")
        return matches

    file_layers = legacy_layers(f, path)
    if by_name == "auto":
        named = {fl.name for fl in file_layers if fl.entries}
        by_name = bool(model_layers) and all(l.name in named for l in model_layers)
    if by_name:
        by = {fl.name: fl for fl in file_layers}
        if model_layers and not any(l.name in by for l in model_layers):
            raise WeightFileError(
                f"{path}: no layer of the model is in the file (another model's file?); file "
                f"layers {[fl.name for fl in file_layers if fl.entries][:5]}..., model layers "
                f"{[l.name for l in model_layers][:5]}...{_unbuilt_hint(model)}")
        matches = []
        for layer in model_layers:
            fl = by.get(layer.name)
            if fl is None or not fl.entries:
                matches.append(Match(layer, None, f"{path}: model layer '{layer.name}' "
                                     f"{_fmt(_model_shapes(layer))} is not in the file"))
            else:
                matches.append(Match(layer, fl, _check_pair(path, layer, fl)))
        return matches

    weighted = [fl for fl in file_layers if fl.entries]
    if len(weighted) != len(model_layers):
        raise WeightFileError(
            f"{path}: the file has {len(weighted)} layers with weights, the model has "
            f"{len(model_layers)} (another model's file?); file: "
            f"{[fl.name for fl in weighted][:4]}..., model: "
            f"{[l.name for l in model_layers][:4]}...{_unbuilt_hint(model)}")
    return [Match(l, fl, _check_pair(path, l, fl)) for l, fl in zip(model_layers, weighted)]


# ---- loading -----------------------------------------------------------------------------------

def load_weights(model, path, by_name=False, optimizer=None):
    """Load a weight file into `model` (and `optimizer`'s state, when given and saved).

    by_name: False (by order, as Keras loads legacy files), True, or "auto" (by name when every
    model layer with weights has a namesake in the file, else by order); see match_layers.
    Every array is read and shape-checked before anything is assigned; any problem raises
    WeightFileError naming the file, the layer and both shapes, and the model keeps its weights.
    Returns the list of (model layer name, file layer name) pairs that were loaded.
    """
    path = Path(path)
    with open_weight_file(path) as f, _reading(path):
        matches = match_layers(model, f, path, by_name=by_name)
        for m in matches:
            if not m.ok:
                raise WeightFileError(m.problem)
        plan = []
        for m in matches:
            arrays = []
            for (weight_name, ds), w in zip(m.file_layer.entries, m.layer.weights):
                value = _read_array(path, m.file_layer.name, weight_name, ds)
                _require_finite(path, m, weight_name, value)
                arrays.append(value.astype(w.dtype, copy=False))
            plan.append((m.layer, arrays))
        state = None
        if optimizer is not None:
            if OPTIMIZER_GROUP not in f:
                raise WeightFileError(f"{path}: no optimiser state in this file (it was saved "
                                      "without optimizer=...)")
            state = _read_state(f[OPTIMIZER_GROUP], path)
    _assign(path, plan, optimizer, state)
    return [(m.layer.name, m.file_layer.name) for m in matches]


def _read_array(path, layer_name, weight_name, ds):
    try:
        return np.asarray(ds[()])
    except OSError as e:
        raise WeightFileError(
            f"{path}: cannot read layer {layer_name!r} weight {weight_name!r} "
            f"{tuple(ds.shape)}: {e} (a truncated or damaged file?)") from e


def _require_finite(path, match, weight_name, value):
    """A weight holding NaN or inf is refused: the model would compute NaN everywhere after it."""
    if value.dtype.kind != "f":
        return
    bad = int(value.size - np.count_nonzero(np.isfinite(value)))
    if bad:
        layer, file_layer = match.layer.name, match.file_layer.name
        where = f"layer {layer!r}" + (f" (file layer {file_layer!r})" if file_layer != layer else "")
        raise WeightFileError(
            f"{path}: {where} weight {weight_name!r} {tuple(value.shape)} holds {bad} NaN or "
            f"infinite values; a damaged or diverged file: the model was left as it was")


def _assign(path, plan, optimizer, state):
    # set_weights already checks; if anything still fails half-way, put the old weights (and the
    # optimiser's old state) back. The optimiser is the first to say that a state does not fit it.
    old = [(layer, layer.get_weights()) for layer, _ in plan]
    old_state = optimizer.get_state() if optimizer is not None else None
    try:
        for layer, arrays in plan:
            layer.set_weights(arrays)
        if optimizer is not None:
            optimizer.set_state(state)
    except BaseException as e:
        for layer, arrays in old:
            layer.set_weights(arrays)
        if optimizer is not None:
            optimizer.set_state(old_state)
        if optimizer is not None and isinstance(e, (ValueError, TypeError, KeyError)):
            raise WeightFileError(f"{path}: the optimiser state in the file does not fit "
                                  f"{type(optimizer).__name__}: {e}") from e
        raise


def read_weights(path):
    """{layer name: [(weight name, array)]} for every layer of a file with weights, in file order.

    For a Keras 3 file the names are its layers' paths (layers/conv2d, encoder/layers/dense, ...).
    """
    path = Path(path)
    with open_weight_file(path) as f, _reading(path):
        fmt = file_format(f)
        if fmt == "legacy":
            layers = legacy_layers(f, path)
        elif fmt == "keras3":
            layers = [FileLayer(vars_path[:-len("/vars")] or "(model)", entries)
                      for vars_path, entries in keras3_weights.file_vars(f).items()]
        else:
            raise WeightFileError(f"{path} is HDF5 but not a Keras weight file")
        return {fl.name: [(n, np.asarray(ds[()])) for n, ds in fl.entries]
                for fl in layers if fl.entries}


# ---- writing -----------------------------------------------------------------------------------

def _write_name_list(attrs, name, names):
    """Keras's save_attributes_to_hdf5_group: split the list when one attribute would be too big."""
    data = np.array([n.encode("utf8") for n in names], dtype="S") if names else np.array([])
    chunks = [data]
    while any(c.nbytes > HDF5_OBJECT_HEADER_LIMIT for c in chunks):
        chunks = np.array_split(data, len(chunks) + 1)
    if len(chunks) == 1:
        attrs[name] = data
    else:
        for k, chunk in enumerate(chunks):
            attrs[f"{name}{k}"] = chunk


def save_weights(model, path, optimizer=None):
    """Write the model's weights in the legacy Keras layout (see the module docstring), or in Keras
    3's when the name ends in `.weights.h5` (keras3_weights.py), as Keras 3 itself does.

    Legacy names are Keras 2's: `/<layer>/<layer>/<short>:0` (e.g. conv2d_1/conv2d_1/kernel:0), so the file
    loads back by name and by order, here and in Keras. With `optimizer`, its `get_state()` is kept
    in the group `optimizer_state` (Keras ignores it) for resuming training. Written to a temporary
    file and renamed, so an interrupted save never leaves half a file.
    """
    h5py = _h5py()
    state = optimizer.get_state() if optimizer is not None else None
    if keras3_weights.is_keras3_name(path):
        return keras3_weights.save_weights(model, path, write_more=None if state is None else (
            lambda f: _write_state(f.create_group(OPTIMIZER_GROUP), state)))
    layers = list(model.layers)
    names = [layer.name for layer in layers]
    dup = sorted(n for n, count in Counter(names).items() if count > 1)
    if dup:
        raise ValueError(f"save_weights: layer names must be unique, these repeat: {dup}")

    def write(tmp):
        with h5py.File(str(tmp), "w") as f:
            _write_name_list(f.attrs, "layer_names", names)
            f.attrs["backend"] = np.bytes_(b"tensorflow")  # fixed-length, as Keras wrote it
            f.attrs["keras_version"] = np.bytes_(KERAS_VERSION)
            for layer in layers:
                group = f.create_group(layer.name)
                arrays = [backend.to_numpy(a) for a in layer.get_weights()] if _has_weights(layer) else []
                shorts = list(getattr(layer, "weight_names", None) or [])
                if len(shorts) != len(arrays):
                    shorts = [f"weight_{i}" for i in range(len(arrays))]
                weight_names = [f"{layer.name}/{s}:0" for s in shorts]
                _write_name_list(group.attrs, "weight_names", weight_names)
                for weight_name, array in zip(weight_names, arrays):
                    group.create_dataset(weight_name, data=array, track_times=False)
            if state is not None:
                _write_state(f.create_group(OPTIMIZER_GROUP), state)

    atomic_write(path, write)
    return Path(path)


# Optimiser state: nested dicts and lists of arrays and numbers. Dicts and lists become groups
# (a list's group has attr kind="list", its items named 0, 1, ...), arrays and numbers datasets
# (attr kind says which Python type a scalar was), strings and None attributes. Keys are
# %-quoted, since optimisers use keys such as "m/0" that h5py would read as paths.
# Strings are written fixed-length (UTF-8 bytes), as Keras writes its names: a variable-length
# string lives in HDF5's global heap, and reading a damaged one can hang or crash the process
# instead of raising. (Files written before still load: the reader takes both.)

def _fixed(text):
    return np.bytes_(text.encode("utf8"))


def _write_state(group, state):
    group.attrs["kind"] = _fixed("list" if isinstance(state, (list, tuple)) else "dict")
    items = enumerate(state) if isinstance(state, (list, tuple)) else state.items()
    for key, value in items:
        key = quote(str(key), safe="")  # "m/0" is one key, not a path
        if isinstance(value, (dict, list, tuple)):
            _write_state(group.create_group(key), value)
        elif value is None or isinstance(value, str):
            group.attrs[f"attr:{key}"] = _fixed("None:" if value is None else "str:" + value)
        else:
            kind = type(value).__name__ if isinstance(value, (bool, int, float)) else "array"
            if isinstance(value, Tensor):
                value = value.data
            ds = group.create_dataset(key, data=backend.to_numpy(value), track_times=False)
            ds.attrs["kind"] = _fixed(kind)


def _read_state(group, path):
    h5py = _h5py()
    out = {}
    for name in group:
        item, key = group[name], unquote(name)
        if isinstance(item, h5py.Group):
            out[key] = _read_state(item, path)
            continue
        _numeric(path, OPTIMIZER_GROUP, key, item)
        value = item[()]
        if item.dtype.kind == "f" and not np.isfinite(value).all():
            raise WeightFileError(f"{path}: optimiser state {key!r} holds NaN or infinite values; "
                                  "a damaged or diverged file: nothing was loaded")
        kind = _attr(item.attrs, "kind", "array")
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind in ("bool", "int", "float"):
            value = {"bool": bool, "int": int, "float": float}[kind](value)
        out[key] = value
    for name in group.attrs:
        if name.startswith("attr:"):
            value = _attr(group.attrs, name)
            value = value.decode() if isinstance(value, bytes) else str(value)
            out[unquote(name[5:])] = None if value == "None:" else value[4:]
    kind = _attr(group.attrs, "kind", "dict")
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    if kind == "list":
        return [out[str(i)] for i in range(len(out))]
    return out
