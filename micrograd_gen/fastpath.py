"""The one switch between the reference ops and their fast paths.

Every heavy op in `micrograd_gen/ops/` is written as the textbook writes it. A faster version of some
of them lives in `micrograd_gen/accel/`, which registers itself here when the package is imported
with fast paths on (the default). An op asks for its fast version by name and falls back to its own
code when there is none:

    fast = fastpath.lookup("conv2d_forward")
    if fast is not None:
        y = fast(x, kernel, ...)
        if y is not NotImplemented:
            return y
    ...the reference...

A fast implementation takes the reference's arguments and may return `NotImplemented` for inputs it
does not cover (a dtype, a geometry, an array module); the op then runs its reference.

`MICROGRAD_GEN_FAST=0` in the environment, or `micrograd_gen.fast_paths(False)` in Python, makes
every lookup answer None, so only the reference runs. This module imports nothing from accel/.
"""
import os

_implementations = {}   # op name -> fast implementation, filled by micrograd_gen.accel
_enabled = os.environ.get("MICROGRAD_GEN_FAST", "1").strip() != "0"


def register(op_name, implementation):
    """Called by micrograd_gen.accel: `implementation` replaces the reference of `op_name`."""
    _implementations[op_name] = implementation


def lookup(op_name):
    """The fast implementation of `op_name`, or None when fast paths are off or it has none."""
    return _implementations.get(op_name) if _enabled else None


def enabled():
    return _enabled


def set_enabled(flag):
    global _enabled
    previous, _enabled = _enabled, bool(flag)
    return previous
