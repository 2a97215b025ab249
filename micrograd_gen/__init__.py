"""micrograd_gen: a small, readable deep-learning engine on NumPy (CPU) and CuPy (GPU) that runs
the generative deep learning chapter of Chollet's Deep Learning with Python."""
import importlib

from . import backend, fastpath
from .tensor import Function, Tensor, is_grad_enabled, no_grad
from . import ops

if fastpath.enabled():
    from . import accel  # registers the fast paths; MICROGRAD_GEN_FAST=0 never imports it


class fast_paths:
    """`fast_paths(False)` runs the reference ops only, `fast_paths(True)` the fast paths again.

    Works as a call (`mg.fast_paths(False)`) and as a context manager
    (`with mg.fast_paths(False): ...`, which restores the previous setting on exit)."""

    def __init__(self, flag=True):
        if flag:
            from . import accel  # noqa: F401  (registers on first import)
        self._previous = fastpath.set_enabled(flag)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        fastpath.set_enabled(self._previous)
        return False

__version__ = "0.1.0"
__all__ = ["Tensor", "Function", "no_grad", "fast_paths", "is_grad_enabled", "backend", "ops", "nn", "optim",
           "io", "applications", "generative", "data", "gradcheck", "weights", "callbacks", "losses",
           "metrics", "plot", "viz"]

_SUBMODULES = {"nn", "optim", "io", "applications", "generative", "data", "gradcheck", "weights",
               "callbacks", "losses", "metrics", "plot", "viz"}


def __getattr__(name):
    # `mg.nn`, `mg.applications`, ... load on first use, so `import micrograd_gen` stays quick.
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'micrograd_gen' has no attribute {name!r}")
