"""Worker threads that each run single-threaded BLAS on whole chunks of an op's work.

NumPy's matrix products are spread by BLAS over its own threads, one product at a time, with a
join after each. Work made of many small products (a conv2d's per-tap products on chunks of
output rows, an LSTM's per-step products) spends much of its time in those joins, and on a
shared machine one stalled BLAS thread stalls every product. Handing each core a whole piece of
the work instead (a chunk of output rows; a slice of the batch through all time steps), on which
it calls single-threaded BLAS, costs one join per op. Used by accel/conv.py and the LSTM's
batch split. The pool is started on the first call of chunk_pool(), never at import.
"""
import ctypes
import os
import threading
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .blas import numpy_blas

_POOL = None   # (pid, executor or None, threads, openblas_set_num_threads_local)
_THIS_THREAD = threading.local()   # .alone: this thread runs its chunks itself (see alone())


def chunk_pool():
    """(executor, n): n threads in all, the caller and the executor's n - 1 workers, each
    running single-threaded BLAS on whole chunks.

    One multi-threaded BLAS call per kernel tap splits a product of a few dozen MFLOP over the
    cores and joins them again, hundreds of times per layer; handing each core whole chunks
    instead costs one join per layer. That needs OpenBLAS's openblas_set_num_threads_local
    (OpenBLAS >= 0.3.27); without it (or with one BLAS thread) the chunks run in the caller, one
    after the other, on BLAS's own threading.

    In NumPy's OpenBLAS build that setting is the process's, not the thread's, so from the start
    of the pool on NumPy's own products run single-threaded too: set here, once, rather than left
    to the race between the workers' initializer and the first section (which, lost, left
    OpenBLAS's own threads on: a 4 MFLOP product then took 12-19 ms instead of 0.07 on a busy
    machine). That pays for a VAE step (15% faster than giving NumPy both threads back after each
    section, bench/README.md); big products outside the sections are cut over the workers by
    accel/linalg.py instead.
    """
    global _POOL
    if getattr(_THIS_THREAD, "alone", False):
        return None, 1
    if _POOL is not None and _POOL[0] == os.getpid():
        return _POOL[1], _POOL[2]
    executor, threads = None, 1
    lib = numpy_blas()[1]
    set_local = getattr(lib, "openblas_set_num_threads_local", None) if lib else None
    get_threads = (getattr(lib, "scipy_openblas_get_num_threads64_", None)
                   or getattr(lib, "scipy_openblas_get_num_threads", None)) if lib else None
    if set_local is not None and get_threads is not None:
        get_threads.restype = ctypes.c_int
        set_local.argtypes, set_local.restype = [ctypes.c_int], ctypes.c_int
        threads = int(get_threads())
        if threads > 1:
            executor = ThreadPoolExecutor(threads - 1, thread_name_prefix="conv",
                                          initializer=lambda: set_local(1))
            set_local(1)
    _POOL = (os.getpid(), executor, threads, set_local)   # a forked child builds its own
    return executor, threads


@contextmanager
def alone():
    """Inside this block the calling thread runs every op's chunks itself, on single-threaded
    BLAS, as one slot: for work that is already spread over the threads a level up (the
    branches of an Inception block, accel/branches.py), where handing chunks on again would
    wait for a thread that is busy with another branch."""
    before = getattr(_THIS_THREAD, "alone", False)
    _THIS_THREAD.alone = True
    try:
        yield
    finally:
        _THIS_THREAD.alone = before


def even_cuts(length, pieces):
    """[(start, stop)] cutting range(length) into `pieces` near-equal runs, empty runs left out."""
    cuts = [(length * i // pieces, length * (i + 1) // pieces) for i in range(pieces)]
    return [cut for cut in cuts if cut[1] > cut[0]]


def started():
    """True once this process has its worker pool (and NumPy's BLAS runs one thread)."""
    return _POOL is not None and _POOL[0] == os.getpid()


def for_chunks(chunks, work, xp, fixed=False):
    """Call work(chunk, slot) for every chunk, spread over the worker threads for NumPy arrays.

    slot (0 .. threads - 1) names the thread running the call, so that work can keep
    per-thread partial sums. Slot 0 is the caller itself, which works rather than waits: it
    starts at once, and only the others have to be woken and waited for (a DeepDream step
    makes hundreds of hand-offs; bench/README.md has what one costs). Chunks go to whichever
    thread is free (a shared machine may stall one of them), or with fixed=True chunk i always
    goes to slot i % threads, so that partial sums, and so results, are the same on every run.
    Returns the number of slots."""
    executor, threads = chunk_pool() if xp is np else (None, 1)
    chunks = list(chunks)
    if executor is None or len(chunks) < 2:
        for chunk in chunks:
            work(chunk, 0)
        return 1
    queue, lock = iter(chunks), threading.Lock()

    def drain(slot):
        if fixed:
            for chunk in chunks[slot::threads]:
                work(chunk, slot)
            return
        while True:
            with lock:
                chunk = next(queue, None)
            if chunk is None:
                return
            work(chunk, slot)

    futures = [executor.submit(drain, slot) for slot in range(1, threads)]
    set_local = _POOL[3]
    previous = set_local(1)           # the caller's BLAS calls stay single-threaded meanwhile
    try:
        drain(0)
    finally:
        set_local(previous)
        for future in futures:
            future.exception()        # wait for every worker before anything is re-raised
    for future in futures:
        future.result()   # re-raises a worker's exception here
    return threads
