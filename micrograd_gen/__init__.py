"""micrograd_gen: a small, readable deep-learning engine on NumPy (CPU) and CuPy (GPU) that runs
the generative deep learning chapter of Chollet's Deep Learning with Python."""
from . import backend
from .tensor import Function, Tensor, is_grad_enabled, no_grad
from . import ops

__version__ = "0.1.0"
__all__ = ["Tensor", "Function", "no_grad", "is_grad_enabled", "backend", "ops"]
