"""micrograd_gen: a small, readable deep-learning engine on NumPy (CPU) and CuPy (GPU) that runs
the generative deep learning chapter of Chollet's Deep Learning with Python."""
import importlib

from . import backend, host_memory
from .tensor import Function, Tensor, is_grad_enabled, no_grad
from . import ops

host_memory.apply_default()   # reuse freed arrays' pages step after step (see host_memory.py)

__version__ = "0.1.0"
__all__ = ["Tensor", "Function", "no_grad", "is_grad_enabled", "backend", "ops", "nn", "optim",
           "io", "applications", "generative", "data", "gradcheck", "weights"]

_SUBMODULES = {"nn", "optim", "io", "applications", "generative", "data", "gradcheck", "weights"}


def __getattr__(name):
    # `mg.nn`, `mg.applications`, ... load on first use, so `import micrograd_gen` stays quick.
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'micrograd_gen' has no attribute {name!r}")
