"""The worker threads behind conv2d and the LSTM: every chunk runs once, fixed slots are fixed,
and an exception in any thread reaches the caller."""
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
