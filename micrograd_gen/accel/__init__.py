"""Fast paths for the reference ops in micrograd_gen/ops/ (see micrograd_gen/fastpath.py).

Importing this package registers each fast implementation with the op it speeds up; it starts no
threads, loads no library and changes no process setting: those happen on first use, or when the
caller asks (the command line and the bench scripts do). `MICROGRAD_GEN_FAST=0` keeps it unimported.
"""
from . import lstm  # noqa: F401
