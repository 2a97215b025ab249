"""Keras 3's weight files (`model.save_weights("x.weights.h5")`): where each variable of a model
goes, writing such a file, and finding a model's arrays in one.

Layout (Keras 3's saving_lib; checked against the files Keras 3.15 writes):
```
/vars                        the model's own variables; attr name = the model's name
/layers/<key>/vars/0, 1, ... a layer of the model's layer list, its variables as datasets "0", "1",
                             ... (trainable then non-trainable, each in creation order); attr name
/layers/<key>/<attr>/vars    a sub-layer held in an attribute (lstm/cell, multi_head_attention/
                             query_dense) or a nested model (layers/sequential/layers/dense/vars)
/<attr>/...                  a subclassed model's models and layers held in attributes
                             (a VAE's encoder/layers/conv2d/vars, decoder/...)
```
Every layer, weight-less ones and the functional model's input layers too, has its `vars` group
(empty where it holds nothing). There are no root attributes and no weight names: paths are the
only key. Keras walks a model so (`_save_state`):
1. the model's own variables at its path;
2. a Sequential's or functional model's `layers` first, as a list: each layer in a list is keyed
   by its class in snake_case, with `_k` for the k-th earlier one of the same class in that list
   (conv2d, conv2d_1, ...), the count taking in layers already saved elsewhere;
3. then its attributes in name order, private (`_x`) ones last: a layer in an attribute is keyed by
   the attribute's name, a list of layers is keyed as in 2 under the attribute's name. A subclassed
   model's `layers` is one of these attributes, so a VAE's `sampler` lands in layers/sampler;
4. a layer reached twice (a shared one) is saved once, where it was first reached.
A subclassed model that the Keras code builds with the functional API sets `keras_functional = True`
and is laid out as that functional model is. Where the engine keeps in one layer what Keras keeps
in sub-layers (LSTM's `cell`, MultiHeadAttention's query/key/value/output EinsumDense),
`_SUBLAYERS` says where each weight goes.

Reading uses the same walk: each weight of the model knows its dataset, and io.load_weights checks
counts and shapes before it assigns anything. Files from Keras 3.0-3.3 name MultiHeadAttention's
sub-layers `_query_dense`, ...: a missing attribute is looked for with a leading underscore too.
"""
import re
from pathlib import Path

import numpy as np

from .backend import to_numpy
from .download import atomic_write

SUFFIX = ".weights.h5"

# Engine layers whose Keras 3 counterpart keeps its variables in sub-layers:
# class name -> [(attribute in Keras, the sub-layer's Keras name, the engine's weight names)].
_SUBLAYERS = {
    "LSTM": [("cell", "lstm_cell", ("kernel", "recurrent_kernel", "bias"))],
    "MultiHeadAttention": [
        ("query_dense", "query", ("query/kernel", "query/bias")),
        ("key_dense", "key", ("key/kernel", "key/bias")),
        ("value_dense", "value", ("value/kernel", "value/bias")),
        ("output_dense", "attention_output", ("attention_output/kernel", "attention_output/bias")),
        ("_dropout_layer", "dropout", ()),
        ("_softmax", "softmax", ()),
    ],
}


def is_keras3_name(path):
    """Keras 3 sends every `*.weights.h5` name to this layout, and so do we."""
    return str(path).endswith(SUFFIX)


def snake_case(class_name):
    """Keras 3's `naming.to_snake_case`: Conv2DTranspose -> conv2d_transpose, LSTM -> lstm."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


class Saveable:
    """One `vars` group: its path ("" for the root), Keras's name for it, the weights it holds."""

    def __init__(self, path, name, weights, layer=None):
        self.path, self.name, self.weights, self.layer = path, name, list(weights), layer

    @property
    def vars_path(self):
        return f"{self.path}/vars" if self.path else "vars"

    def __repr__(self):
        return f"Saveable({self.vars_path!r}, {[tuple(w.shape) for w in self.weights]})"


class _InputLayer:
    """A functional model's input, which Keras saves as an InputLayer with an empty `vars`."""

    def __init__(self, name):
        self.name = name


def _join(path, key):
    return f"{path}/{key}" if path else key


def _own_weights(layer):
    """The layer's own weights as Keras saves them: trainable, then non-trainable (as created)."""
    records = getattr(layer, "_weight_records", None)
    if records is None:   # a layer that only follows io's protocol (name, weights)
        weights = getattr(layer, "weights", None)
        return list(weights) if isinstance(weights, (list, tuple)) else []
    return [t for _, t, tr in records if tr] + [t for _, t, tr in records if not tr]


# Models are told apart by what they have, not by their class: nn imports io, which imports this
# module, so importing nn here would close an import cycle.

def _is_model(layer):
    return isinstance(getattr(type(layer), "layers", None), property)


def _layer_list(layer):
    """Keras's `layers` of a Sequential or functional model (walked first), else None."""
    if hasattr(layer, "stack") and hasattr(layer, "pop"):            # Sequential
        return list(layer.stack)
    if getattr(layer, "keras_functional", False):
        # A subclassed model that Keras code builds as Model(inputs, outputs) over the same
        # layers (the book's Transformer): one input, then its layers in the order they were set.
        return [_InputLayer("input_layer")] + list(layer._sublayers)
    tracked = getattr(layer, "_tracked", {})
    if _is_model(layer) and "graph_layers" in tracked:               # functional
        graph = getattr(layer, "_graph", None)
        inputs = graph[0] if graph is not None else []
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        return [_InputLayer(getattr(kt, "name", "input_layer")) for kt in inputs] + \
            list(layer.graph_layers)
    if not hasattr(layer, "_tracked") and isinstance(getattr(layer, "layers", None), list):
        return list(layer.layers)   # a model that only follows io's protocol: a functional one
    return None


def _attributes(layer):
    """(attribute, layer or list of layers) that Keras visits after the layer list, in its order."""
    tracked = dict(getattr(layer, "_tracked", {}))
    for internal in ("stack", "graph_layers"):
        tracked.pop(internal, None)
    if _is_model(layer) and _layer_list(layer) is None:
        tracked["layers"] = list(layer._sublayers)   # a subclassed model's `layers` attribute
    return sorted(tracked.items(), key=lambda kv: "~" + kv[0] if kv[0].startswith("_") else kv[0])


def saveables(model):
    """Every `vars` group Keras 3 writes for a model built as `model` is, in Keras's order."""
    out, visited = [], set()

    def visit(layer, path):
        if id(layer) in visited:
            return
        visited.add(id(layer))
        if isinstance(layer, _InputLayer):
            out.append(Saveable(path, layer.name, []))
            return
        special = _SUBLAYERS.get(type(layer).__name__)
        if special is None:
            out.append(Saveable(path, getattr(layer, "name", "model"), _own_weights(layer), layer))
        else:
            by_name = dict(zip(layer.weight_names, layer.weights))
            out.append(Saveable(path, layer.name, [], layer))
            for attribute, name, weight_names in special:
                out.append(Saveable(_join(path, attribute), name,
                                    [by_name[n] for n in weight_names if n in by_name], layer))
        children = _layer_list(layer)
        if children is not None:
            visit_list(children, _join(path, "layers"))
        for attribute, value in _attributes(layer):
            if isinstance(value, (list, tuple)):
                visit_list(value, _join(path, attribute))
            else:
                visit(value, _join(path, attribute))

    def visit_list(layers, path):
        used = {}
        for layer in layers:
            key = "input_layer" if isinstance(layer, _InputLayer) else snake_case(type(layer).__name__)
            if key in used:
                used[key] += 1
                key = f"{key}_{used[key]}"
            else:
                used[key] = 0
            visit(layer, _join(path, key))

    visit(model, "")
    return out


# ---- writing -------------------------------------------------------------------------------------

def save_weights(model, path, write_more=None):
    """Write `model`'s weights in Keras 3's layout, through a temporary file renamed into place.

    write_more(h5file), when given, adds groups Keras does not read (io keeps an optimiser's state
    so); Keras 3 loads the file all the same, since it only looks up the paths its model has.
    """
    import h5py
    path = Path(path)
    if not is_keras3_name(path):
        raise ValueError(f"{path}: Keras 3 reads this layout only from names ending in {SUFFIX}")
    groups = saveables(model)
    seen = {}
    for s in groups:
        if s.vars_path in seen:
            raise ValueError(f"save_weights: '{s.name}' and '{seen[s.vars_path]}' would both be "
                             f"saved at {s.vars_path} (an attribute named like Keras's own?)")
        seen[s.vars_path] = s.name

    def write(tmp):
        with h5py.File(str(tmp), "w") as f:
            for s in groups:
                group = f.create_group(s.vars_path)
                group.attrs["name"] = s.name
                for i, weight in enumerate(s.weights):
                    group.create_dataset(str(i), data=np.asarray(to_numpy(weight.data)))
            if write_more is not None:
                write_more(f)

    atomic_write(path, write)
    return path


# ---- reading -------------------------------------------------------------------------------------

def _find_group(f, vars_path):
    """The group at vars_path, trying `_attr` for a missing `attr` (Keras 3.0-3.3's names)."""
    node = f
    for part in vars_path.split("/"):
        if part in node:
            node = node[part]
        elif f"_{part}" in node:
            node = node[f"_{part}"]
        else:
            return None
    return node


def _datasets(group):
    """A vars group's datasets "0", "1", ... in number order (h5py lists "10" before "2")."""
    return sorted(((k, group[k]) for k in group), key=lambda kv: (not kv[0].isdigit(),
                                                                  int(kv[0]) if kv[0].isdigit() else 0))


def layer_entries(model, f, path):
    """For each layer of `model.layers` with weights: (layer, its Keras path, entries, problem).

    entries are (dataset path, h5py dataset) in the order of `layer.weights`, or None with a
    problem saying what is missing or different: the layer's name and class, the vars group, and
    the shapes on both sides.
    """
    import h5py
    groups = saveables(model)
    where = {}
    for s in groups:
        for i, weight in enumerate(s.weights):
            where[id(weight)] = (s, i)
    out = []
    for layer in model.layers:
        weights = list(getattr(layer, "weights", None) or [])
        if not weights:
            continue
        located = [where.get(id(w)) for w in weights]
        label = f"model layer '{layer.name}' ({type(layer).__name__})"
        if any(loc is None for loc in located):
            out.append((layer, None, None, f"{path}: {label} has weights outside the model's "
                                           "Keras 3 walk"))
            continue
        key = located[0][0].path
        entries, problem = [], None
        for s in dict.fromkeys(loc[0] for loc in located):
            group = _find_group(f, s.vars_path)
            model_shapes = [tuple(w.shape) for w in s.weights]
            if group is None:
                problem = (f"{path}: {label} has no weights in this Keras 3 file (looked for "
                           f"{s.vars_path}, for {model_shapes})")
                break
            found = _datasets(group)
            bad = [k for k, ds in found if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "fiub"]
            if bad:
                problem = f"{path}: {label}: {s.vars_path}/{bad[0]} is not a numeric array"
                break
            if len(found) != len(s.weights):
                problem = (f"{path}: {label} has {len(s.weights)} weights {model_shapes} at "
                           f"{s.vars_path}, the file has {len(found)} "
                           f"{[tuple(ds.shape) for _, ds in found]}")
                break
        if problem is None:
            for s, i in located:
                group = _find_group(f, s.vars_path)
                entries.append((f"{s.vars_path}/{i}", group[str(i)]))
        out.append((layer, key, None if problem else entries, problem))
    return out


def file_vars(f):
    """{vars path: [(dataset path, dataset)]} for every vars group of a file that holds data."""
    import h5py
    found = {}

    def collect(name, node):
        if isinstance(node, h5py.Group) and name.split("/")[-1] == "vars":
            items = [(f"{name}/{k}", ds) for k, ds in _datasets(node) if isinstance(ds, h5py.Dataset)]
            if items:
                found[name] = items

    f.visititems(collect)
    return found
