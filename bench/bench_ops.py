"""Op micro-benchmarks (issue 3) as JSON lines, one per workload.

Workloads (../shared/BENCHMARKS.md, section 7; batch 1, float32, NHWC, 3x3 'same' with bias):
  conv_block1_conv2_{fwd,fwdbwd}   64 -> 64 at 400x600     (targets fwd+bwd: 0.45 s)
  conv_block3_conv1_{fwd,fwdbwd}   128 -> 256 at 100x150   (0.15 s)
  conv_block5_conv1_{fwd,fwdbwd}   512 -> 512 at 25x37     (0.07 s)
  conv_transpose_dcgan{1,2,3}_fwdbwd   the DCGAN generator's Conv2DTranspose(k=4, s=2, 'same')
                                   layers at batch 32: 8x8x128 -> 16x16x128, 16x16x128 ->
                                   32x32x256, 32x32x256 -> 64x64x512
'fwd' runs under no_grad; 'fwdbwd' runs forward and y.backward(grad_out) with a fixed random
grad_out, computing dx, dkernel and dbias. GFLOP/s counts 2*OH*OW*Cin*Cout*kh*kw per pass (for
the transposed conv, its input positions in place of OH*OW), three passes for fwdbwd.

Each line: median / min / max seconds over --reps runs after a warm-up (perf_counter around
each whole run), GFLOP/s at the median, peak extra memory during one run (tracemalloc: NumPy
reports its buffers to it; inputs made beforehand do not count), BLAS threads, and the load
average before and after, because this machine is shared and the other core's load moves every
figure. When PyTorch can be imported (by this interpreter or --torch-python) the same work is
timed in PyTorch (channels_last, same thread count) in a child process, so its OpenMP threads
never compete with OpenBLAS's here, and the line gets torch_median_s and ratio = ours / torch.
PyTorch is never required.

  python bench/bench_ops.py                        # everything
  python bench/bench_ops.py --only conv_block3_conv1_fwdbwd --reps 15
  python bench/bench_ops.py --quick                # tiny sizes, two runs each: a smoke test for CI

To add a workload: write `def my_case(quick)` returning (run, info) and, optionally, a PyTorch
twin with the same signature, then `register("name", my_case, torch=my_torch_case)`. run() does
one repetition; info is a dict merged into the JSON line (put "flop" in it to get GFLOP/s).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORKLOADS = {}   # name -> (engine case, torch case or None)


def register(name, case, torch=None):
    WORKLOADS[name] = (case, torch)


# ---- measuring -------------------------------------------------------------------------------

def blas_threads():
    env = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    return int(env) if env else os.cpu_count()


def time_runs(run, reps, warmup=2):
    for _ in range(warmup):
        run()
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds


def summary(seconds, flop=None, prefix=""):
    med = statistics.median(seconds)
    out = {prefix + "median_s": round(med, 5), prefix + "min_s": round(min(seconds), 5),
           prefix + "max_s": round(max(seconds), 5)}
    if flop:
        out[prefix + "gflops"] = round(flop / med / 1e9, 1)
    return out


def peak_extra_mb(run):
    """Peak memory allocated during one run, above what was allocated when it started."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return round((peak - base) / 2 ** 20, 1)


# ---- convolutions ----------------------------------------------------------------------------

VGG = {  # name: (H, W, Cin, Cout), the style-transfer VGG19 layers at 400x600
    "block1_conv2": (400, 600, 64, 64),
    "block3_conv1": (100, 150, 128, 256),
    "block5_conv1": (25, 37, 512, 512),
}
DCGAN = {  # name: (N, H, W, Cin, Cout) of the generator's Conv2DTranspose(4, strides=2, 'same')
    "dcgan1": (32, 8, 8, 128, 128),
    "dcgan2": (32, 16, 16, 128, 256),
    "dcgan3": (32, 32, 32, 256, 512),
}
QUICK_CONV = (12, 18, 16, 24)
QUICK_DCGAN = (2, 4, 4, 16, 8)


def conv_arrays(shape, quick):
    H, W, C, F = QUICK_CONV if quick else shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, H, W, C), np.float32)
    kernel = rng.standard_normal((3, 3, C, F), np.float32) * np.float32((2 / (9 * C)) ** 0.5)
    bias = rng.standard_normal(F, np.float32)
    grad = rng.standard_normal((1, H, W, F), np.float32)
    return x, kernel, bias, grad, 2.0 * H * W * C * F * 9


def conv_case(shape, backward):
    def case(quick):
        import micrograd_gen as mg
        x, kernel, bias, grad, flop = conv_arrays(shape, quick)
        info = {"shape_nhwc": list(x.shape), "kernel_hwio": list(kernel.shape)}
        if not backward:
            tensors = [mg.Tensor(a) for a in (x, kernel, bias)]

            def run():
                with mg.no_grad():
                    mg.ops.conv2d(*tensors, padding="same")
            return run, dict(info, flop=flop)
        tensors = [mg.Tensor(a, requires_grad=True) for a in (x, kernel, bias)]

        def run():
            for t in tensors:
                t.grad = None
            mg.ops.conv2d(*tensors, padding="same").backward(grad)
        return run, dict(info, flop=3 * flop)
    return case


def torch_conv_case(shape, backward):
    def case(quick):
        import torch
        x, kernel, bias, grad, flop = conv_arrays(shape, quick)
        cl = torch.channels_last
        x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=cl)
        w = torch.from_numpy(kernel).permute(3, 2, 0, 1).contiguous(memory_format=cl)
        b = torch.from_numpy(bias)
        g = torch.from_numpy(grad).permute(0, 3, 1, 2).contiguous(memory_format=cl)
        if not backward:
            def run():
                with torch.no_grad():
                    torch.nn.functional.conv2d(x, w, b, padding=1)
            return run, {"flop": flop}
        for t in (x, w, b):
            t.requires_grad_()

        def run():
            x.grad = w.grad = b.grad = None
            torch.nn.functional.conv2d(x, w, b, padding=1).backward(g)
        return run, {"flop": 3 * flop}
    return case


def transpose_arrays(shape, quick):
    N, H, W, C, F = QUICK_DCGAN if quick else shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, H, W, C), np.float32)
    kernel = rng.standard_normal((4, 4, F, C), np.float32) * np.float32((1 / (16 * C)) ** 0.5)
    bias = rng.standard_normal(F, np.float32)
    grad = rng.standard_normal((N, 2 * H, 2 * W, F), np.float32)
    return x, kernel, bias, grad, 2.0 * N * H * W * C * F * 16


def transpose_case(shape):
    def case(quick):
        import micrograd_gen as mg
        x, kernel, bias, grad, flop = transpose_arrays(shape, quick)
        tensors = [mg.Tensor(a, requires_grad=True) for a in (x, kernel, bias)]

        def run():
            for t in tensors:
                t.grad = None
            mg.ops.conv2d_transpose(*tensors, strides=2, padding="same").backward(grad)
        return run, {"shape_nhwc": list(x.shape), "kernel": list(kernel.shape), "flop": 3 * flop}
    return case


def torch_transpose_case(shape):
    def case(quick):
        import torch
        x, kernel, bias, grad, flop = transpose_arrays(shape, quick)
        cl = torch.channels_last
        x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=cl).requires_grad_()
        # Keras (kh, kw, out, in) -> torch (in, out, kh, kw); k=4, s=2 'same' crops (1, 1),
        # which is torch's symmetric padding=1.
        w = torch.from_numpy(kernel).permute(3, 2, 0, 1).contiguous(memory_format=cl)
        w.requires_grad_()
        b = torch.from_numpy(bias).requires_grad_()
        g = torch.from_numpy(grad).permute(0, 3, 1, 2).contiguous(memory_format=cl)

        def run():
            x.grad = w.grad = b.grad = None
            torch.nn.functional.conv_transpose2d(x, w, b, stride=2, padding=1).backward(g)
        return run, {"flop": 3 * flop}
    return case


for _name, _shape in VGG.items():
    register(f"conv_{_name}_fwd", conv_case(_shape, False), torch_conv_case(_shape, False))
    register(f"conv_{_name}_fwdbwd", conv_case(_shape, True), torch_conv_case(_shape, True))
for _name, _shape in DCGAN.items():
    register(f"conv_transpose_{_name}_fwdbwd", transpose_case(_shape), torch_transpose_case(_shape))


# ---- PyTorch in a child process --------------------------------------------------------------

def torch_child(name, quick, reps, threads):
    import torch
    torch.set_num_threads(threads)
    run, info = WORKLOADS[name][1](quick)
    seconds = time_runs(run, reps)
    print(json.dumps(dict(summary(seconds, info.get("flop")), version=torch.__version__)))


def run_torch(name, quick, reps, threads, python):
    command = [python, __file__, "--torch-child", name, "--reps", str(reps)]
    if quick:
        command.append("--quick")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, last
    return json.loads(done.stdout.strip().splitlines()[-1]), None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only these workloads (repeatable, or comma-separated)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, two runs each")
    parser.add_argument("--reps", type=int, default=None, help="timed runs (default 7, quick 2)")
    parser.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    parser.add_argument("--torch-python", default=sys.executable,
                        help="interpreter that can import torch (default: this one)")
    parser.add_argument("--list", action="store_true", help="print the workload names")
    parser.add_argument("--torch-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    reps = args.reps or (2 if args.quick else 7)
    threads = blas_threads()
    if args.torch_child:
        torch_child(args.torch_child, args.quick, reps, threads)
        return
    if args.list:
        print("\n".join(WORKLOADS))
        return
    names = list(WORKLOADS)
    if args.only:
        names = [n for spec in args.only for n in spec.split(",") if n]
        unknown = [n for n in names if n not in WORKLOADS]
        if unknown:
            parser.error(f"unknown workload(s) {unknown}; known: {', '.join(WORKLOADS)}")
    for name in names:
        case, torch_case = WORKLOADS[name]
        run, info = case(args.quick)
        flop = info.pop("flop", None)
        load_before = os.getloadavg()[0]
        seconds = time_runs(run, reps)
        record = {"workload": name, **summary(seconds, flop), "reps": reps,
                  "peak_extra_mb": peak_extra_mb(run), "threads": threads,
                  "loadavg_before": round(load_before, 2),
                  "loadavg_after": round(os.getloadavg()[0], 2), "quick": args.quick, **info}
        del run
        if torch_case is not None and not args.no_torch:
            theirs, why = run_torch(name, args.quick, reps, threads, args.torch_python)
            if theirs is None:
                record["torch"] = f"not measured ({why})"
            else:
                record.update({"torch_" + k: v for k, v in theirs.items()})
                record["ratio"] = round(record["median_s"] / theirs["median_s"], 3)
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
