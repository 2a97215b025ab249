"""Engine-core benchmarks (issue 2), as JSON lines.

  op_overhead   a chain of 1,000 tiny elementwise ops on shape (4,), alternately `y * w` and
                `y + b` with tensor operands, forward + backward: microseconds per op (target
                < 20), wall clock and this process's CPU time. Also forward alone, the same
                chain under no_grad, and with Python-number operands (which the engine turns
                into constants).
  matmul_2048   float32 (2048, 2048) @ (2048, 2048) through the engine, forward + backward
                (3 GEMMs: a @ b, g @ b.T, a.T @ g), in GFLOP/s, next to plain np.matmul doing the
                same 3 products, measured alternately in the same run (target: engine >= 90% of
                NumPy).
  environment   BLAS threads (asked from OpenBLAS itself when it can be found, else the
                environment), load average before and after (the machine is shared: a busy
                other core makes every figure noisier), peak RSS.

Timings are medians of --repeat runs after a warm-up, with perf_counter around each whole run.

  python bench/bench_core.py
  OPENBLAS_NUM_THREADS=1 python bench/bench_core.py --repeat 9
"""
import argparse
import ctypes
import glob
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from common import emit, peak_rss_mb, time_runs, tune_process

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import micrograd_gen as mg  # noqa: E402
from micrograd_gen import Tensor  # noqa: E402

CHAIN = 1000
MATMUL_N = 2048


def blas_threads():
    """(threads, how we know): OpenBLAS's own answer when its library can be found."""
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*"))
    for path in libs:
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                     "openblas_get_num_threads"):
            fn = getattr(lib, name, None)
            if fn is not None:
                return int(fn()), f"{name}()"
    env = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    return (int(env), "environment") if env else (os.cpu_count(), "os.cpu_count()")


def median_time(fn, repeat, warmup=2):
    """(wall, cpu) medians in seconds. The CPU time of this process is the steadier figure when
    other processes compete for the cores (it is what the op costs, not what the queue adds)."""
    wall, cpu = time_runs(fn, repeat, warmup)
    return statistics.median(wall), statistics.median(cpu)


def bench_op_overhead(repeat):
    x = Tensor(np.linspace(0.1, 0.4, 4), requires_grad=True)
    w = Tensor(np.full(4, 1.0001))
    b = Tensor(np.full(4, 0.001))

    def forward(scalars=False):
        y = x
        for i in range(CHAIN):
            if scalars:
                y = y * 1.0001 if i % 2 == 0 else y + 0.001
            else:
                y = y * w if i % 2 == 0 else y + b
        return y

    def forward_backward():
        forward().backward(np.ones(4, dtype=np.float32))

    def forward_backward_scalars():
        forward(scalars=True).backward(np.ones(4, dtype=np.float32))

    def no_grad_forward():
        with mg.no_grad():
            forward()

    record = {}
    for name, fn in [("fwd_bwd", forward_backward), ("fwd", forward),
                     ("no_grad_fwd", no_grad_forward),
                     ("fwd_bwd_scalar_operands", forward_backward_scalars)]:
        wall, cpu = median_time(fn, repeat)
        record[f"us_per_op_{name}"] = round(wall / CHAIN * 1e6, 2)
        record[f"cpu_us_per_op_{name}"] = round(cpu / CHAIN * 1e6, 2)
    emit(bench="op_overhead", ops=CHAIN, shape=[4], dtype="float32", **record, target_us=20,
         meets_target=record["us_per_op_fwd_bwd"] < 20, repeat=repeat)


def bench_matmul(repeat):
    rng = np.random.default_rng(0)
    a_np, b_np, g_np = (rng.standard_normal((MATMUL_N, MATMUL_N), dtype=np.float32)
                        for _ in range(3))
    a = Tensor(a_np, requires_grad=True)
    b = Tensor(b_np, requires_grad=True)

    def engine():
        a.zero_grad()
        b.zero_grad()
        (a @ b).backward(g_np)

    def numpy_same_products():  # what the engine computes: forward, then dA and dB
        np.matmul(a_np, b_np)
        np.matmul(g_np, b_np.T)
        np.matmul(a_np.T, g_np)

    def numpy_plain():  # three plain products, no transposed operand
        np.matmul(a_np, b_np)
        np.matmul(g_np, b_np)
        np.matmul(a_np, g_np)

    # Alternate the three so that a burst of load from elsewhere hits them all alike.
    runs = {"engine": [], "numpy": [], "numpy_plain": []}
    for fn in (engine, numpy_same_products, numpy_plain):
        fn()  # warm-up
    for _ in range(repeat):
        for name, fn in (("engine", engine), ("numpy", numpy_same_products),
                         ("numpy_plain", numpy_plain)):
            start = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - start)
    flops = 3 * 2 * MATMUL_N ** 3
    gflops = {name: flops / statistics.median(t) / 1e9 for name, t in runs.items()}
    ratio = gflops["engine"] / gflops["numpy"]
    # Each engine run against the NumPy run right after it: steadier than a ratio of medians
    # when the load from other processes drifts during the benchmark.
    paired = statistics.median(n / e for e, n in zip(runs["engine"], runs["numpy"]))
    emit(bench="matmul_2048", shape=[MATMUL_N, MATMUL_N], dtype="float32", gemms=3,
         engine_gflops=round(gflops["engine"], 1), numpy_gflops=round(gflops["numpy"], 1),
         numpy_plain_gflops=round(gflops["numpy_plain"], 1),
         engine_ms=round(statistics.median(runs["engine"]) * 1e3, 1),
         numpy_ms=round(statistics.median(runs["numpy"]) * 1e3, 1),
         ratio=round(ratio, 3), ratio_paired_median=round(paired, 3), ratio_to_plain=round(gflops["engine"] / gflops["numpy_plain"], 3),
         target_ratio=0.9, meets_target=ratio >= 0.9, repeat=repeat)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--only", choices=["op_overhead", "matmul_2048"])
    args = parser.parse_args()
    tune_process()
    load_before = os.getloadavg()
    if args.only in (None, "op_overhead"):
        bench_op_overhead(max(args.repeat, 5))
    if args.only in (None, "matmul_2048"):
        bench_matmul(args.repeat)
    threads, source = blas_threads()
    emit(bench="environment", blas_threads=threads, blas_threads_from=source,
         cpu_count=os.cpu_count(), numpy=np.__version__, python=sys.version.split()[0],
         loadavg_before=[round(v, 2) for v in load_before],
         loadavg_after=[round(v, 2) for v in os.getloadavg()],
         peak_rss_mb=peak_rss_mb())


if __name__ == "__main__":
    main()
