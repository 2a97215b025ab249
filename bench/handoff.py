"""What handing work to the second core costs on this machine: a parallel section with nothing in
it, two equal chunks side by side against one after the other, and one thread waking another.

  python bench/handoff.py [--repeat N]

Every parallel section of the fast paths (accel.workers.for_chunks) hands chunks to a worker
thread and waits for it; every time two threads want Python's GIL at once, one of them sleeps
until the other lets go. Both are a wake-up of a sleeping thread, and what that costs is the
machine's, not the engine's: on a virtual machine whose idle vCPUs halt at once it is a round
trip through the hypervisor. This prints
  section, no work      for_chunks over 2 and 8 chunks that do nothing (the fixed cost of one
                        section: submit, wake, wait);
  two chunks            two 256x256 products (one each, single-threaded BLAS) in one section,
                        against the same two on the calling thread one after the other;
  wake-up round trip    two threads passing a lock back and forth (one round trip = two
                        wake-ups), three runs in a row (the first often runs faster);
  cpuidle               the kernel's idle driver and haltpoll's settings, where readable.

Why. A DeepDream step at 204x306 hands work out about forty times, and its two branch threads
often want the GIL together; with the guest's halt polling turned on (a diagnostic: wake-ups of
7-8 us instead of 76-94) the step ran 4% faster (bench/README.md, "Issue 17, session 18"): a
share of the step that no change to the engine's arithmetic recovers.
"""
import argparse
import glob
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402


def per_call_us(fn, calls, repeat):
    """The median over `repeat` runs of the mean time of one call in a run of `calls`."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(runs)


def lock_round_trip_us(trips=3000):
    """Two threads passing a lock to and fro: microseconds per round trip."""
    ping, pong = threading.Lock(), threading.Lock()
    ping.acquire()
    pong.acquire()

    def other():
        for _ in range(trips):
            ping.acquire()
            pong.release()
    thread = threading.Thread(target=other)
    thread.start()
    start = time.perf_counter()
    for _ in range(trips):
        ping.release()
        pong.acquire()
    elapsed = time.perf_counter() - start
    thread.join()
    return elapsed / trips * 1e6


def cpuidle():
    """The kernel's cpuidle driver and haltpoll's parameters, where the files are readable."""
    found = {}
    for path in ["/sys/devices/system/cpu/cpuidle/current_driver",
                 *sorted(glob.glob("/sys/module/haltpoll/parameters/*"))]:
        try:
            with open(path) as f:
                found[os.path.basename(path)] = f.read().strip()
        except OSError:
            pass
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")

    from micrograd_gen.accel import workers
    from micrograd_gen.accel.memory import keep_freed_memory
    keep_freed_memory()
    threads = workers.chunk_pool()[1]          # the pool pins BLAS to one thread per caller
    print(f"threads: {threads}")
    if threads < 2:
        print("one thread: no hand-offs to measure")
        return

    def nothing(chunk, slot):
        pass
    for chunks in (2, 8):
        us = per_call_us(lambda: workers.for_chunks(range(chunks), nothing, np), 2000,
                         args.repeat)
        print(f"section, no work, {chunks} chunks: {us:.1f} us")

    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 256)).astype(np.float32)
    b = rng.standard_normal((256, 256)).astype(np.float32)

    def product(chunk, slot):
        a @ b
    alone = per_call_us(lambda: product(0, 0), 300, args.repeat)
    side_by_side = per_call_us(lambda: workers.for_chunks([0, 1], product, np), 300, args.repeat)
    with workers.alone():
        in_turn = per_call_us(lambda: workers.for_chunks([0, 1], product, np), 300, args.repeat)
    print(f"two chunks (a 256x256 product each, {alone:.0f} us alone): side by side "
          f"{side_by_side:.0f} us, one after the other {in_turn:.0f} us; the section's cost "
          f"beyond one chunk {side_by_side - alone:.0f} us")

    trips = [lock_round_trip_us() for _ in range(3)]
    print("wake-up round trip (two threads, a lock): "
          + ", ".join(f"{t:.1f}" for t in trips) + " us")
    print("cpuidle: " + (", ".join(f"{k} {v}" for k, v in cpuidle().items()) or "not readable"))


if __name__ == "__main__":
    main()
