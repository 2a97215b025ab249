"""Which array module (NumPy or CuPy) an array belongs to, and moving arrays between them.

Every op asks `get_array_module(*inputs)` for its `xp`, so the same code runs on both; nothing in
the engine branches on a global "gpu" flag. `use()` only decides where *new* tensors are made
(from Python lists, scalars, random initialisers).
"""
import os

import numpy as np

_BACKENDS = ("numpy", "cupy")
_default = os.environ.get("MICROGRAD_GEN_BACKEND", "numpy").strip().lower() or "numpy"
if _default not in _BACKENDS:
    raise ValueError(f"MICROGRAD_GEN_BACKEND={_default!r}: expected one of {_BACKENDS}")


def _is_cupy_array(a):
    # Checked by module name so that CuPy is never imported just to ask the question.
    return type(a).__module__.split(".", 1)[0] == "cupy"


def cupy_module():
    """Import CuPy, or say clearly why it cannot be used."""
    try:
        import cupy
    except ImportError as e:
        raise RuntimeError(
            "the 'cupy' backend needs CuPy, the wheel that matches your CUDA driver "
            "(nvidia-smi shows its CUDA version): pip install cupy-cuda12x (CUDA 12) or "
            "cupy-cuda13x (CUDA 13); from a checkout of micrograd_gen, pip install -e '.[gpu]' "
            "(CUDA 12) or -e '.[gpu-cuda13]' (CUDA 13)") from e
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or no visible device
        raise RuntimeError(f"CuPy is installed but no CUDA device is usable: {e}") from e
    return cupy


def cupy_available():
    try:
        cupy_module()
        return True
    except RuntimeError:
        return False


def get_array_module(*arrays):
    """numpy or cupy, whichever the arrays belong to (non-arrays are ignored).

    Mixing the two is a TypeError: an op cannot silently copy between host and device.
    """
    on_gpu = on_cpu = False
    for a in arrays:
        if isinstance(a, np.ndarray):  # the common case first: it is the cheaper test
            on_cpu = True
        elif _is_cupy_array(a):
            on_gpu = True
    if on_gpu and on_cpu:
        raise TypeError("an op got both NumPy and CuPy arrays; move them to one place first "
                        "with tensor.to('cupy') or tensor.to('numpy')")
    if on_gpu:
        import cupy
        return cupy
    return np


def use(name):
    """Set where new tensors are created: "numpy" (default) or "cupy"."""
    global _default
    name = name.strip().lower()
    if name not in _BACKENDS:
        raise ValueError(f"backend.use({name!r}): expected one of {_BACKENDS}")
    if name == "cupy":
        cupy_module()
    _default = name


def default_name():
    return _default


def default_module():
    return cupy_module() if _default == "cupy" else np


def to_module(array, name):
    """Copy `array` to the named backend (no copy when it is already there)."""
    if name == "numpy":
        return array.get() if _is_cupy_array(array) else np.asarray(array)
    if name == "cupy":
        return cupy_module().asarray(array)
    raise ValueError(f"to({name!r}): expected 'numpy' or 'cupy'")


def to_numpy(array):
    return to_module(array, "numpy")
