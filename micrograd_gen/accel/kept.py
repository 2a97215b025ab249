"""Arrays made from a frozen kernel, kept while the kernel stays as it was: Winograd's kernel
transforms (accel/winograd.py) and a 1 x k kernel turned for its input gradient
(accel/conv_1d.py).

A frozen kernel (no gradient wanted: inference, DeepDream's and style transfer's networks) is
the same array with the same numbers step after step, and what is made from it would be made
again at every call. Each made array is kept beside a copy of the kernel and used again while
the kernel equals that copy: comparing reads the kernel twice, a fraction of what making a
transform writes, and a kernel changed in place is never missed. Up to _KEPT_BYTES in all, the
latest used kept (style transfer's two block5 layers take 171 MB of Winograd transforms).
"""
import threading
from collections import OrderedDict

import numpy as np

_KEPT_BYTES = 192 << 20
_kept = OrderedDict()   # (address, shape, strides, dtype) -> (the kernel's copy, {name: array})
_lock = threading.Lock()          # an Inception block's branches run on two threads at once


def derived(kernel, name, make):
    """make(kernel), kept under `name` for this kernel while the kernel stays equal to the copy
    taken when it was first kept."""
    key = (kernel.ctypes.data, kernel.shape, kernel.strides, kernel.dtype.str)
    with _lock:
        entry = _kept.get(key)
    # compared outside the lock, so that the other thread's kernels are not held up meanwhile
    if entry is None or not np.array_equal(entry[0], kernel):
        entry = (kernel.copy(order="K"), {})
    with _lock:
        _kept[key] = entry
        _kept.move_to_end(key)
        made = entry[1].get(name)
    if made is None:
        made = make(kernel)
        with _lock:
            entry[1][name] = made
            while len(_kept) > 1 and sum(copy.nbytes + sum(a.nbytes for a in arrays.values())
                                         for copy, arrays in _kept.values()) > _KEPT_BYTES:
                _kept.popitem(last=False)
    return made
