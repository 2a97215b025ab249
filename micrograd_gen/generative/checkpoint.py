"""What the training loops (VAE, DCGAN, denoiser, text models, fast style) share: checkpoints
that resume a run exactly (weights, optimiser state, step and random generator state), and
progress lines sent to a `log`.

One HDF5 file holds everything, so a checkpoint is never half of one model and half of another.
What keeps a good checkpoint good:
- writing: a temporary file beside it (`.NAME.tmp<pid>.h5`), flushed to disk (fsync) and then
  renamed into place, with Ctrl-C held back until the rename is done (a KeyboardInterrupt raised
  inside h5py's clean-up is printed and swallowed by Python, and training went on), so a kill at
  any moment leaves the previous checkpoint or the new one, whole. Temporaries that a killed
  process left behind are removed by the next write.
- one writer: `lock(path)` holds `.NAME.lock` for a whole training run; a second process that
  wants to write the same checkpoint gets CheckpointLockedError at once.
- reading: a SHA-256 of the whole content is stored and checked, sizes are checked before any
  array is read, and every problem is a CheckpointError (a WeightFileError, a ValueError).
- loading into live models is all-or-nothing: the payload is checked against every model,
  optimiser and generator before the first one is changed.

Layout: every array is a dataset `arrays/<i>`; the rest (the nesting of models, optimiser states,
the step, a NumPy bit generator's state, whatever `extra` the caller adds) is one JSON document in
the root attribute `tree`, where each array appears as {"__array__": i}. JSON keeps Python's big
integers exactly, which the PCG64 state needs. The root attribute `sha256` is the digest of the
tree and the arrays (files written before it existed have none and are read unchecked).
"""
import contextlib
import hashlib
import json
import os
import re
import signal
import sys
from pathlib import Path

import h5py
import numpy as np

from ..backend import to_numpy
from ..io import WeightFileError
from ..progress import Progress

FORMAT = "micrograd_gen-checkpoint-1"


class CheckpointError(WeightFileError):
    """A file that is not a checkpoint, a damaged one, or one that does not fit the models it is
    loaded into. Nothing was changed when it is raised."""


class CheckpointLockedError(CheckpointError):
    """Another process is writing this checkpoint."""


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
            index = tree["__array__"]
            if not isinstance(index, int) or not 0 <= index < len(arrays):
                raise ValueError(f"the tree refers to array {index!r}, the file has {len(arrays)}")
            return arrays[index]
        return {k: _unflatten(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_unflatten(v, arrays) for v in tree]
    return tree


def _digest(tree_text, arrays):
    """SHA-256 of the JSON tree and of every array's dtype, shape and bytes, in order."""
    digest = hashlib.sha256(tree_text.encode())
    for a in arrays:
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


# ---- writing -------------------------------------------------------------------------------------
def save_checkpoint(path, models=None, optimizers=None, step=0, rng=None, extra=None):
    """Write one checkpoint file atomically (see the module's docstring for what that guarantees).

    models: {name: layer with get_weights()}; optimizers: {name: optimiser with get_state()};
    rng: a numpy.random.Generator (its bit generator's state is stored) or None;
    extra: any JSON-able dict of arrays, numbers and strings (histories, fixed latent vectors).
    Weights that are NaN or infinite are refused (CheckpointError): they would replace a good
    checkpoint with one that can only produce NaN.
    """
    models = {name: list(m.get_weights()) for name, m in (models or {}).items()}
    for name, weights in models.items():
        _check_finite(path, name, weights, "refusing to save")
    payload = {
        "format": FORMAT,
        "step": int(step),
        "models": models,
        "optimizers": {name: o.get_state() for name, o in (optimizers or {}).items()},
        "rng": rng.bit_generator.state if rng is not None else None,
        "extra": extra or {},
    }
    arrays = []
    tree_text = json.dumps(_flatten(payload, arrays))

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            # The tree is a dataset of UTF-8 bytes, not a variable-length string attribute: h5py
            # can crash (not raise) reading a damaged variable-length string, and a dataset has
            # no 64 KiB limit as a fixed-length attribute would.
            f.create_dataset("tree", data=np.frombuffer(tree_text.encode(), np.uint8))
            f.attrs["sha256"] = np.bytes_(_digest(tree_text, arrays).encode())
            group = f.create_group("arrays")
            for i, a in enumerate(arrays):
                group.create_dataset(str(i), data=a)

    with lock(path):
        return write_atomically(path, write)


def write_atomically(path, write):
    """Call write(tmp) on a temporary file beside `path`, fsync it and rename it onto `path`.

    The old file survives any failure; Ctrl-C during the write is held back and raised once the
    file is complete and in place (or abandoned on an error). Temporaries of processes that no
    longer run are removed first. Errors name `path`, not the temporary file.
    """
    path = Path(path)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    with _sigint_held_back():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_folder(path.parent)
        except OSError as e:
            raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None
        finally:
            if tmp.exists():
                tmp.unlink()
    return path


def _fsync_folder(folder):
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _sigint_held_back():
    """Hold SIGINT back inside the block and deliver it after the block, to whatever handler was
    there (Python's raises KeyboardInterrupt), so that Ctrl-C can neither tear a file half-written
    nor be swallowed by h5py's clean-up. Only the main thread can handle signals; elsewhere, or
    where the handler was not set from Python, the block runs as it is."""
    previous = signal.getsignal(signal.SIGINT)
    received = []
    try:
        if previous is None:
            raise ValueError("SIGINT's handler was not set from Python")
        signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    except ValueError:   # not the main thread (signal.signal refuses there), or not Python's
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        signal.raise_signal(signal.SIGINT)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's process: alive
        return True
    return True


def remove_stale_temporaries(path):
    """Delete the `.NAME.tmp<pid>.SUFFIX` files whose process is gone (a kill -9 during a write
    leaves one, as big as the file): those of the file `path`, or, for a folder, every one in it
    (atomic writes of pictures and histories use the same names). Returns the paths removed."""
    path = Path(path)
    if path.is_dir():
        folder, pattern = path, re.compile(r"\..+\.tmp(\d+)(\.[^.]*)?")
    else:
        folder = path.parent
        pattern = re.compile(rf"\.{re.escape(path.stem)}\.tmp(\d+){re.escape(path.suffix)}")
    removed = []
    if not folder.is_dir():
        return removed
    for candidate in folder.iterdir():
        match = pattern.fullmatch(candidate.name)
        if match and candidate.is_file() and not _pid_alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                candidate.unlink()
                removed.append(candidate)
    return removed


# ---- one writer at a time ------------------------------------------------------------------------
_held_locks = {}   # resolved checkpoint path -> [open lock file, depth]: re-entrant in a process


def lock_path(path):
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def lock(path):
    """Hold the lock on checkpoint `path` inside the block: an flock on `.NAME.lock` beside it,
    which the system releases when the process dies, so a kill leaves no stale lock. Re-entrant
    within a process; another process gets CheckpointLockedError naming the holder's pid."""
    key = os.path.abspath(path)
    if key in _held_locks:
        _held_locks[key][1] += 1
        try:
            yield
        finally:
            _held_locks[key][1] -= 1
        return
    handle = _acquire(Path(path))
    _held_locks[key] = [handle, 1]
    try:
        yield
    finally:
        del _held_locks[key]
        _release(handle)


def _acquire(path):
    try:
        import fcntl
    except ImportError:   # no flock (Windows): run unlocked
        return None
    name = lock_path(path)
    while True:
        try:
            name.parent.mkdir(parents=True, exist_ok=True)
            handle = open(name, "a+")
        except OSError as e:
            raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise CheckpointLockedError(
                f"{path} is being written by process {holder} (lock file {name}); wait for it to "
                "finish or stop it, or write to another path") from None
        # The holder before us may have removed the file between our open and our flock: then
        # we hold a lock on a name nobody else sees; take a fresh one.
        try:
            ours, named = os.fstat(handle.fileno()), os.stat(name)
            if (ours.st_dev, ours.st_ino) == (named.st_dev, named.st_ino):
                break
        except FileNotFoundError:
            pass
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _release(handle):
    if handle is None:
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(handle.name)
    handle.close()   # closing drops the flock


# ---- reading -------------------------------------------------------------------------------------
def read_checkpoint(path):
    """The stored payload as a dict: format, step, models, optimizers, rng, extra.

    Raises FileNotFoundError when there is no file, CheckpointError for anything else that is
    wrong with it (not HDF5, not a checkpoint, damaged: the stored SHA-256 does not match)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    if head != b"\x89HDF\r\n\x1a\n":
        raise CheckpointError(f"{path} is not a micrograd_gen checkpoint (not an HDF5 file; it "
                              f"starts with {head!r})")
    try:
        payload = _read(path)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001  h5py raises many kinds on damaged files
        raise CheckpointError(f"{path} is damaged or not a micrograd_gen checkpoint "
                              f"({type(e).__name__}: {e})") from None
    return payload


def _read(path):
    size = os.path.getsize(path)
    with h5py.File(path, "r") as f:
        if isinstance(f.get("tree"), h5py.Dataset):
            tree = f["tree"]
            if tree.dtype != np.uint8 or tree.ndim != 1 or tree.size > size:
                raise CheckpointError(f"{path} is damaged: its tree is {tree.shape} {tree.dtype}")
            tree_text = tree[()].tobytes().decode()
        elif "tree" in f.attrs:   # written before the tree became a dataset
            tree_text = f.attrs["tree"]
            if isinstance(tree_text, bytes):
                tree_text = tree_text.decode()
        else:
            raise CheckpointError(f"{path} is HDF5 but not a micrograd_gen training checkpoint "
                                  "(no 'tree'; a Keras weight file?)")
        group = f["arrays"]
        datasets = [group[str(i)] for i in range(len(group))]
        # Arrays are stored uncompressed: one larger than the file is a damaged header, and
        # reading it would try to allocate that much.
        for i, d in enumerate(datasets):
            if d.size * d.dtype.itemsize > size:
                raise CheckpointError(f"{path} is damaged: array {i} claims {d.shape} "
                                      f"{d.dtype} in a file of {size} bytes")
        arrays = [np.asarray(d[()]) for d in datasets]
        stored = f.attrs.get("sha256")
    if stored is not None:
        stored = stored.decode() if isinstance(stored, bytes) else str(stored)
        if stored != _digest(tree_text, arrays):
            raise CheckpointError(f"{path} is damaged: its content does not match the SHA-256 "
                                  "stored with it")
    payload = _unflatten(json.loads(tree_text), arrays)
    _check_layout(path, payload)
    return payload


def _check_layout(path, payload):
    """The parts every checkpoint has, with the types the loaders rely on."""
    def bad(what):
        raise CheckpointError(f"{path} is not a micrograd_gen checkpoint ({what})")

    if not isinstance(payload, dict):
        bad("its tree is not a dict")
    if payload.get("format") != FORMAT:
        bad(f"format {payload.get('format')!r}, expected {FORMAT!r}")
    if not isinstance(payload.get("step"), int) or payload["step"] < 0:
        bad(f"step {payload.get('step')!r}")
    for part in ("models", "optimizers", "extra"):
        if not isinstance(payload.get(part), dict):
            bad(f"no '{part}' dict")
    for name, weights in payload["models"].items():
        if not isinstance(weights, list) or not all(
                isinstance(w, np.ndarray) and w.dtype.kind in "biuf" for w in weights):
            bad(f"model {name!r} is not a list of numeric arrays")
    for name, state in payload["optimizers"].items():
        if not isinstance(state, dict):
            bad(f"optimizer {name!r} is not a dict")


def kind_of(payload):
    """What wrote a checkpoint, from the names of its models: 'vae', 'gan', 'denoise',
    'textgen', 'fast_style', or None for a set of names none of these uses."""
    if "textgen" in payload["extra"]:
        return "textgen"
    if "fast_style" in payload["extra"]:
        return "fast_style"
    return {("vae",): "vae", ("discriminator", "generator"): "gan",
            ("denoiser",): "denoise"}.get(tuple(sorted(payload["models"])))


# ---- loading into live models: all or nothing ----------------------------------------------------
def load_checkpoint(path, models=None, optimizers=None, rng=None, generators=None):
    """Restore the named models, optimisers and generators in place; return the payload.

    rng: a numpy Generator restored from the payload's `rng`; generators: {name: Generator}
    restored from `extra["rngs"][name]` (for a model with several, such as the DCGAN's). The
    names must match the ones the checkpoint was saved with. Everything is checked (names,
    weight counts and shapes, finiteness, optimiser entries, generator states) before anything
    is assigned, so a CheckpointError leaves every model, optimiser and generator as it was.
    """
    payload = read_checkpoint(path)
    models, optimizers, generators = models or {}, optimizers or {}, generators or {}
    for name, model in models.items():
        if name not in payload["models"]:
            raise CheckpointError(f"{path}: no model {name!r} (the file has "
                                  f"{sorted(payload['models'])}: {_kind_text(payload)})")
        _check_weights(path, name, model, payload["models"][name])
    for name, optimizer in optimizers.items():
        if name not in payload["optimizers"]:
            raise CheckpointError(f"{path}: no optimizer {name!r} (the file has "
                                  f"{sorted(payload['optimizers'])})")
        try:
            optimizer.check_state(payload["optimizers"][name])
        except ValueError as e:
            raise CheckpointError(f"{path}: optimizer {name!r}: {e}") from None
    states = {}
    if rng is not None:
        if payload["rng"] is None:
            raise CheckpointError(f"{path}: the checkpoint holds no random generator state")
        states[rng] = _checked_state(path, "rng", rng, payload["rng"])
    saved = payload["extra"].get("rngs", {})
    for name, generator in generators.items():
        if not isinstance(saved, dict) or name not in saved:
            raise CheckpointError(f"{path}: no random generator state {name!r}")
        states[generator] = _checked_state(path, name, generator, saved[name])
    # Everything fits: assign.
    for name, model in models.items():
        model.set_weights(payload["models"][name])
    for name, optimizer in optimizers.items():
        optimizer.set_state(payload["optimizers"][name])
    for generator, state in states.items():
        generator.bit_generator.state = state
    return payload


def _kind_text(payload):
    kind = kind_of(payload)
    return f"a {kind} checkpoint" if kind else "an unknown kind of checkpoint"


def _check_weights(path, name, model, arrays):
    expected = [tuple(w.shape) for w in model.weights]
    got = [tuple(a.shape) for a in arrays]
    if got != expected:
        raise CheckpointError(
            f"{path}: model {name!r} has {len(expected)} weights of shapes {expected}, the file "
            f"has {len(got)} of shapes {got}")
    _check_finite(path, name, arrays, "refusing to load")


def _check_finite(path, name, arrays, doing):
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise CheckpointError(f"{path}: {doing} model {name!r}: weight {i} {a.shape} holds "
                                  "NaN or infinite values")


def _checked_state(path, name, generator, state):
    """Try `state` on a scratch bit generator of the same type, so a bad one changes nothing."""
    try:
        type(generator.bit_generator)().state = state
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: random generator state {name!r} does not fit a "
                              f"{type(generator.bit_generator).__name__} ({e})") from None
    return state


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
