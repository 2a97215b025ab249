"""What the training loops (VAE, DCGAN, denoiser) share: checkpoints that resume a run exactly
(weights, optimiser state, step and random generator state), and progress lines sent to a `log`.

One HDF5 file holds everything, so a checkpoint is never half of one model and half of another.
It is written to a temporary file and renamed into place (`download.atomic_write`): a run killed
while saving keeps the previous checkpoint whole.

Layout: every array is a dataset `arrays/<i>`; the rest (the nesting of models, optimiser states,
the step, a NumPy bit generator's state, whatever `extra` the caller adds) is one JSON document in
the root attribute `tree`, where each array appears as {"__array__": i}. JSON keeps Python's big
integers exactly, which the PCG64 state needs.
"""
import json
import sys

import h5py
import numpy as np

from ..backend import to_numpy
from ..download import atomic_write
from ..progress import Progress

FORMAT = "micrograd_gen-checkpoint-1"


def _flatten(value, arrays):
    """The JSON-able tree of `value`, with each array moved into `arrays`."""
    if isinstance(value, dict):
        return {str(k): _flatten(v, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_flatten(v, arrays) for v in value]
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # numpy / cupy arrays, numpy scalars
        arrays.append(np.asarray(to_numpy(value)))
        return {"__array__": len(arrays) - 1}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"checkpoint: cannot store a {type(value).__name__}; "
                    "use arrays, numbers, strings, lists and dicts")


def _unflatten(tree, arrays):
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            return arrays[tree["__array__"]]
        return {k: _unflatten(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_unflatten(v, arrays) for v in tree]
    return tree


def save_checkpoint(path, models=None, optimizers=None, step=0, rng=None, extra=None):
    """Write one checkpoint file atomically.

    models: {name: layer with get_weights()}; optimizers: {name: optimiser with get_state()};
    rng: a numpy.random.Generator (its bit generator's state is stored) or None;
    extra: any JSON-able dict of arrays, numbers and strings (histories, fixed latent vectors).
    """
    payload = {
        "format": FORMAT,
        "step": int(step),
        "models": {name: list(m.get_weights()) for name, m in (models or {}).items()},
        "optimizers": {name: o.get_state() for name, o in (optimizers or {}).items()},
        "rng": rng.bit_generator.state if rng is not None else None,
        "extra": extra or {},
    }
    arrays = []
    tree = _flatten(payload, arrays)

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            f.attrs["tree"] = json.dumps(tree)
            group = f.create_group("arrays")
            for i, a in enumerate(arrays):
                group.create_dataset(str(i), data=a)

    return atomic_write(path, write)


def read_checkpoint(path):
    """The stored payload as a dict: format, step, models, optimizers, rng, extra."""
    with h5py.File(path, "r") as f:
        if "tree" not in f.attrs:
            raise ValueError(f"{path} is not a micrograd_gen training checkpoint (no 'tree' attribute)")
        tree = json.loads(f.attrs["tree"])
        group = f["arrays"]
        arrays = [group[str(i)][()] for i in range(len(group))]
    return _unflatten(tree, arrays)


def load_checkpoint(path, models=None, optimizers=None, rng=None):
    """Restore the named models, optimisers and generator in place; return the payload.

    The names must match the ones the checkpoint was saved with; a missing one is a KeyError that
    lists what the file holds.
    """
    payload = read_checkpoint(path)
    for name, model in (models or {}).items():
        if name not in payload["models"]:
            raise KeyError(f"{path}: no model {name!r} (the file has {sorted(payload['models'])})")
        model.set_weights(payload["models"][name])
    for name, optimizer in (optimizers or {}).items():
        if name not in payload["optimizers"]:
            raise KeyError(f"{path}: no optimizer {name!r} "
                           f"(the file has {sorted(payload['optimizers'])})")
        optimizer.set_state(payload["optimizers"][name])
    if rng is not None:
        if payload["rng"] is None:
            raise KeyError(f"{path}: the checkpoint holds no random generator state")
        rng.bit_generator.state = payload["rng"]
    return payload


class _LineLog:
    """A file-like object that hands each printed line to `log(line)`."""

    def __init__(self, log):
        self.log = log

    def write(self, text):
        text = text.rstrip("\n")
        if text:
            self.log(text)

    def flush(self):
        pass


def progress(total, label, log=None):
    """A Progress (micrograd_gen.progress) whose lines go to `log(line)`, or to stderr if None:
    the training loops take `log=` so a caller (the tour, a test) can collect their lines."""
    return Progress(total=total, label=label, stream=_LineLog(log) if log else None)


def emit(log, line):
    """One closing line (per epoch, per run) through `log`, or to stderr."""
    if log is None:
        print(line, file=sys.stderr, flush=True)
    else:
        log(line)
