"""Keep freed host memory for the next step instead of handing it back to the kernel.

A training step allocates the same large arrays every time (an LSTM's (T, 4U, N) gates, a conv
layer's padded input, a VAE's activations) and frees them at the end of the step. glibc's malloc
serves arrays above its mmap threshold (128 KiB, rising to at most 32 MiB) with fresh mmap'd
pages and returns them with munmap, and it trims the top of the heap back to the kernel as well;
so every step page-faults its working set in again, zero-filling each 4 KiB page.

keep_freed_memory() asks glibc to serve every allocation from the heap (M_MMAP_MAX = 0) and
never to trim it (M_TRIM_THRESHOLD), so a freed array's pages are reused by the next one, as
PyTorch's caching allocator does on a GPU. Arrays above 32 MiB matter most (VGG19's activations
in style transfer), so the mmap threshold alone would not do. What it buys is in bench/README.md.

The trade: the resident size stays at the heap's peak, and freed blocks that a later, larger
array does not fit into raise that peak. It changes malloc for the whole process, every library
in it included, so it is never done on import: the command line, the tour and the bench scripts
call it; MICROGRAD_GEN_KEEP_FREED_MEMORY=0 makes the call do nothing. On other C libraries
(macOS, musl, Windows) it does nothing either.
"""
import ctypes
import ctypes.util
import os

# From glibc's <malloc.h>.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
# The largest value mallopt accepts for the trim threshold (a C int): 2 GiB - 1.
_NEVER_TRIM = 2 ** 31 - 1

_applied = None


def keep_freed_memory():
    """Tell glibc's malloc to keep freed memory for reuse, for the rest of the process.

    True if it did; False off glibc, when refused, or with MICROGRAD_GEN_KEEP_FREED_MEMORY=0."""
    global _applied
    if _applied is not None:
        return _applied
    if os.environ.get("MICROGRAD_GEN_KEEP_FREED_MEMORY", "1").strip().lower() in (
            "0", "no", "false", "off"):
        return False
    _applied = False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False   # not glibc: nothing to tune
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
    return _applied
