"""The error that stops an optimisation of a picture (DeepDream, style transfer) when its loss or
the picture stops being finite: a NaN or inf never becomes a result, so the run stops at the first
one, says where, and writes nothing (pictures saved earlier stay as they were)."""
import math

from ..backend import get_array_module
from ..callbacks import NonFiniteLossError


class NonFiniteError(NonFiniteLossError):
    """A loss or the picture being optimised became NaN or infinite; the run stopped there. (One
    family with the training loops' error: `except NonFiniteLossError` catches both.)"""


def count_non_finite(array):
    """How many elements of an array (NumPy or CuPy) are NaN or infinite."""
    xp = get_array_module(array)
    return int(array.size - int(xp.count_nonzero(xp.isfinite(array))))


def check_step(caller, where, hint, loss=None, picture=None):
    """Raise NonFiniteError naming `where` (the step, the octave) when `loss` (a float) or
    `picture` (an array), each when given, is not finite; `hint` says what usually causes it."""
    if loss is not None and not math.isfinite(loss):
        raise NonFiniteError(f"{caller}: the loss became {loss} at {where}; stopped there, no "
                             f"picture written ({hint})")
    bad = 0 if picture is None else count_non_finite(picture)
    if bad:
        raise NonFiniteError(f"{caller}: the picture became NaN or infinite ({bad:,} values) at "
                             f"{where}; stopped there, no picture written ({hint})")
