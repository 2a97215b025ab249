"""Helpers every bench script needs: one JSON line out, the thread count, peak RSS, and timed runs.

Each script used to carry its own copy of these, and the copies had begun to drift (one read
OMP_NUM_THREADS, another did not). Each script still shapes its own JSON lines; only the
measuring lives here, so that all of them measure the same way. Imported as `common`: the scripts
run with bench/ on sys.path, whether started directly or imported by run.py.
"""
import json
import os
import resource
import time


def emit(**record):
    # Flushed at once: a script and the children it starts share one stdout, and a buffered line
    # would come out of order, or not at all if the process is killed.
    print(json.dumps(record), flush=True)


def threads():
    """The BLAS/OpenMP threads this process was given; OpenBLAS too falls back to OMP_NUM_THREADS,
    then to every core."""
    return int(os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
               or os.cpu_count())


def peak_rss_mb():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: kB


def time_runs(fn, repeat, warmup):
    """(wall seconds, CPU seconds) of each of `repeat` calls of fn() after `warmup` untimed ones.

    The CPU seconds are this process's, all threads: on a shared machine the wall time includes
    waiting for a core that another process holds, the CPU time much less so."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def tune_process():
    """What the command line does before a run: keep freed host memory for reuse
    (micrograd_gen.accel.keep_freed_memory). Not with MICROGRAD_GEN_FAST=0, which measures the
    reference ops alone and never imports accel."""
    from micrograd_gen import fastpath
    if fastpath.enabled():
        from micrograd_gen import accel
        accel.keep_freed_memory()
