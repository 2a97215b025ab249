"""The worker threads behind conv2d and the LSTM: every chunk runs once, fixed slots are fixed,
and an exception in any thread reaches the caller."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from micrograd_gen.accel.workers import chunk_pool, for_chunks


def test_every_chunk_runs_once_and_slot_zero_is_the_caller():
    seen, lock = [], threading.Lock()
    caller = threading.get_ident()

    def work(chunk, slot):
        with lock:
            seen.append((chunk, slot, threading.get_ident() == caller))
    slots = for_chunks(range(40), work, np)
    assert sorted(c for c, _, _ in seen) == list(range(40))
    assert slots == chunk_pool()[1]
    for _, slot, in_caller in seen:
        assert (slot == 0) == in_caller


def test_fixed_slots_take_every_nth_chunk():
    seen = {}
    slots = for_chunks(range(9), lambda chunk, slot: seen.__setitem__(chunk, slot), np,
                       fixed=True)
    assert seen == {c: c % slots for c in range(9)}


@pytest.mark.parametrize("failing", [0, 7])
def test_an_exception_in_any_thread_reaches_the_caller(failing):
    def work(chunk, slot):
        if chunk == failing:
            raise RuntimeError(f"chunk {chunk} failed")
    with pytest.raises(RuntimeError, match=f"chunk {failing} failed"):
        for_chunks(range(8), work, np, fixed=True)
    # the pool still works afterwards
    done = []
    for_chunks(range(4), lambda chunk, slot: done.append(chunk), np)
    assert sorted(done) == [0, 1, 2, 3]


def test_numpy_keeps_its_blas_threads_after_a_parallel_section():
    """The pool's threads run single-threaded BLAS only while they work: afterwards NumPy's own
    products get every thread back, from the very first section on (a fresh process each time,
    since the first section also starts the pool's workers)."""
    code = ("import ctypes, numpy as np\n"
            "from micrograd_gen.accel import blas, workers\n"
            "lib = blas.numpy_blas()[1]\n"
            "get = lib and (getattr(lib, 'scipy_openblas_get_num_threads64_', None)\n"
            "               or getattr(lib, 'scipy_openblas_get_num_threads', None))\n"
            "if get is None or workers.chunk_pool()[0] is None:\n"
            "    print('no pool'); raise SystemExit\n"
            "get.restype = ctypes.c_int\n"
            "before = get()\n"
            "a = np.ones((64, 64))\n"
            "for _ in range(3):\n"
            "    workers.for_chunks(range(6), lambda chunk, slot: a @ a, np)\n"
            "    print(before, get())\n")
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "OPENBLAS_NUM_THREADS": "2"}, check=True).stdout
        if out.strip() == "no pool":
            pytest.skip("this NumPy's BLAS has no per-thread setting: no worker threads")
        for line in out.splitlines():
            before, after = line.split()
            assert before == after == "2", out
