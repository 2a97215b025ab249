"""Op micro-benchmarks (issue 3) as JSON lines, one per workload.

Workloads (../shared/BENCHMARKS.md, section 7; batch 1, float32, NHWC, 3x3 'same' with bias):
  conv_block1_conv2_{fwd,fwdbwd}   64 -> 64 at 400x600     (targets fwd+bwd: 0.45 s)
  conv_block3_conv1_{fwd,fwdbwd}   128 -> 256 at 100x150   (0.15 s)
  conv_block5_conv1_{fwd,fwdbwd}   512 -> 512 at 25x37     (0.07 s)
  conv_transpose_dcgan{1,2,3}_fwdbwd   the DCGAN generator's Conv2DTranspose(k=4, s=2, 'same')
                                   layers at batch 32: 8x8x128 -> 16x16x128, 16x16x128 ->
                                   32x32x256, 32x32x256 -> 64x64x512
  char_lstm_fwdbwd                 the book's char LSTM as ops (BENCHMARKS.md section 1 without
                                   the optimiser): one-hot x (128, 60, 57), LSTM(128) -> Dense(57)
                                   -> softmax cross-entropy from logits (mean), forward + backward
  lstm_step_400                    400 steps of ops.lstm_step (batch 1, 57 -> 128) + Dense(57) +
                                   softmax under no_grad: a stateful generator's 400 characters
  attention_fwdbwd                 MultiHeadAttention(num_heads=2, key_dim=256) of the Transformer
                                   LM on (32, 99, 256), causal self-attention, forward + backward
                                   to the input and all eight weights
  matmul_2048                      float32 (2048, 2048) @ (2048, 2048) through ops.matmul under
                                   no_grad (PyTorch: torch.mm(a, b, out=c))
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

To add a workload: write `def my_case(quick, device="cpu")` returning (run, info) and,
optionally, a PyTorch twin with the same signature, then `register("name", my_case,
torch=my_torch_case)`. run() does one repetition; info is a dict merged into the JSON line (put
"flop" in it to get GFLOP/s). device "gpu" puts the data on CuPy (the engine) or CUDA (PyTorch);
bench/run.py, the one entry point for every suite, imports this registry and times it on either.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np

import common

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORKLOADS = {}   # name -> (engine case, torch case or None)


def register(name, case, torch=None):
    WORKLOADS[name] = (case, torch)


# ---- measuring -------------------------------------------------------------------------------

def time_runs(run, reps, warmup=2, cpu=None):
    """Wall seconds of each run; if a list is given as cpu, this process's CPU seconds (all
    threads) of each run go into it: cpu / wall well below the thread count means the run
    waited for a core that another process held."""
    seconds, cpu_seconds = common.time_runs(run, reps, warmup)
    if cpu is not None:
        cpu.extend(cpu_seconds)
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


def tensors(device, *arrays, requires_grad=False):
    """Engine tensors of NumPy arrays, moved to CuPy when device == "gpu"."""
    import micrograd_gen as mg
    out = [mg.Tensor(a, requires_grad=requires_grad) for a in arrays]
    return [t.to("cupy") for t in out] if device == "gpu" else out


def on_device(device, array):
    """A NumPy array as the engine wants it on `device` (a cotangent, integer labels)."""
    from micrograd_gen import backend
    return backend.to_module(array, "cupy") if device == "gpu" else array


def torch_tensors(device, *arrays, requires_grad=False):
    import torch
    where = "cuda" if device == "gpu" else "cpu"
    return [torch.from_numpy(a).to(where).requires_grad_(requires_grad) for a in arrays]


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
    def case(quick, device="cpu"):
        import micrograd_gen as mg
        x, kernel, bias, grad, flop = conv_arrays(shape, quick)
        info = {"shape_nhwc": list(x.shape), "kernel_hwio": list(kernel.shape)}
        if not backward:
            inputs = tensors(device, x, kernel, bias)

            def run():
                with mg.no_grad():
                    mg.ops.conv2d(*inputs, padding="same")
            return run, dict(info, flop=flop)
        inputs = tensors(device, x, kernel, bias, requires_grad=True)
        grad = on_device(device, grad)

        def run():
            for t in inputs:
                t.grad = None
            mg.ops.conv2d(*inputs, padding="same").backward(grad)
        return run, dict(info, flop=3 * flop)
    return case


def torch_conv_case(shape, backward):
    def case(quick, device="cpu"):
        import torch
        x, kernel, bias, grad, flop = conv_arrays(shape, quick)
        x, w, b, g = torch_tensors(device, x, kernel, bias, grad)
        x, w, g = common.in_torch_layout(x.permute(0, 3, 1, 2).contiguous(),
                                         w.permute(3, 2, 0, 1).contiguous(),
                                         g.permute(0, 3, 1, 2).contiguous())
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
    def case(quick, device="cpu"):
        import micrograd_gen as mg
        x, kernel, bias, grad, flop = transpose_arrays(shape, quick)
        inputs = tensors(device, x, kernel, bias, requires_grad=True)
        info = {"shape_nhwc": list(x.shape), "kernel": list(kernel.shape), "flop": 3 * flop}
        grad = on_device(device, grad)

        def run():
            for t in inputs:
                t.grad = None
            mg.ops.conv2d_transpose(*inputs, strides=2, padding="same").backward(grad)
        return run, info
    return case


def torch_transpose_case(shape):
    def case(quick, device="cpu"):
        import torch
        x, kernel, bias, grad, flop = transpose_arrays(shape, quick)
        x, w, b, g = torch_tensors(device, x, kernel, bias, grad)
        # Keras (kh, kw, out, in) -> torch (in, out, kh, kw); k=4, s=2 'same' crops (1, 1),
        # which is torch's symmetric padding=1.
        x, w, g = common.in_torch_layout(x.permute(0, 3, 1, 2).contiguous(),
                                         w.permute(3, 2, 0, 1).contiguous(),
                                         g.permute(0, 3, 1, 2).contiguous())
        x, w, b = x.requires_grad_(), w.requires_grad_(), b.requires_grad_()

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


# ---- the char LSTM and the Transformer's attention as ops (were bench/bench_seq_ops.py) ---------

CHAR_LSTM = (128, 60, 57, 128)            # batch, time, vocabulary, units
QUICK_CHAR_LSTM = (4, 6, 57, 16)
ATTENTION = (32, 99, 256, 2, 256)         # batch, length, width, heads, key_dim
QUICK_ATTENTION = (2, 7, 16, 2, 8)


def char_lstm_problem(quick):
    n, t, vocab, units = QUICK_CHAR_LSTM if quick else CHAR_LSTM
    rng = np.random.default_rng(0)
    x = np.zeros((n, t, vocab), np.float32)
    x[np.arange(n)[:, None], np.arange(t), rng.integers(0, vocab, (n, t))] = 1
    y = rng.integers(0, vocab, n)
    shapes = [(vocab, 4 * units), (units, 4 * units), (4 * units,), (units, vocab), (vocab,)]
    weights = [(rng.standard_normal(s) * 0.1).astype(np.float32) for s in shapes]
    rows = n * t  # GEMM work of forward + backward (the input is data: no dx)
    flop = (2 * rows * 4 * units * (vocab + units)            # z = [K R]^T [x; h]
            + 2 * rows * 4 * units * units                    # dh
            + 2 * rows * 4 * units * (vocab + units))         # dK, dR
    return x, y, weights, flop


def char_lstm_case(quick, device="cpu"):
    from micrograd_gen import ops
    x, y, weights, flop = char_lstm_problem(quick)
    params = tensors(device, *weights, requires_grad=True)
    kernel, recurrent, bias, dense_kernel, dense_bias = params
    (x,) = tensors(device, x)
    y = on_device(device, y)

    def run():
        for p in params:
            p.grad = None
        h = ops.lstm(x, kernel, recurrent, bias)                          # (N, U)
        logits = ops.add(ops.matmul(h, dense_kernel), dense_bias)         # (N, V)
        ops.sparse_categorical_crossentropy(y, logits, from_logits=True).backward()
    return run, {"shape": list(x.shape), "flop": flop}


def torch_char_lstm_case(quick, device="cpu"):
    import torch
    from torch import nn
    x, y, _, flop = char_lstm_problem(quick)
    x, y = torch_tensors(device, x, y)
    lstm = nn.LSTM(x.shape[2], QUICK_CHAR_LSTM[3] if quick else CHAR_LSTM[3], batch_first=True)
    dense = nn.Linear(lstm.hidden_size, x.shape[2])
    lstm, dense = lstm.to(x.device), dense.to(x.device)
    params = list(lstm.parameters()) + list(dense.parameters())

    def run():
        for p in params:
            p.grad = None
        _, (h, _) = lstm(x)
        nn.functional.cross_entropy(dense(h[0]), y).backward()
    return run, {"flop": flop}


def lstm_step_case(quick, device="cpu"):
    from micrograd_gen import no_grad, ops
    _, _, weights, _ = char_lstm_problem(quick)
    kernel, recurrent, bias, dense_kernel, dense_bias = tensors(device, *weights)
    vocab = weights[0].shape[0]
    ids = np.random.default_rng(1).integers(0, vocab, 20 if quick else 400)
    one_hot = np.eye(vocab, dtype=np.float32)[:, None]                    # (V, 1, V): rows ready
    one_hot = on_device(device, one_hot)

    def run():
        h = c = None
        with no_grad():
            for i in ids:
                h, c = ops.lstm_step(one_hot[i], h, c, kernel, recurrent, bias)
                ops.softmax(ops.add(ops.matmul(h, dense_kernel), dense_bias))
    return run, {"steps": len(ids)}


def torch_lstm_step_case(quick, device="cpu"):
    import torch
    from torch import nn
    _, _, weights, _ = char_lstm_problem(quick)
    vocab, units = weights[0].shape[0], weights[1].shape[0]
    where = "cuda" if device == "gpu" else "cpu"
    cell, dense = nn.LSTMCell(vocab, units).to(where), nn.Linear(units, vocab).to(where)
    ids = np.random.default_rng(1).integers(0, vocab, 20 if quick else 400)
    one_hot = torch.eye(vocab, device=where)[:, None]

    def run():
        state = None
        with torch.no_grad():
            for i in ids:
                state = cell(one_hot[int(i)], state)
                torch.softmax(dense(state[0]), dim=-1)
    return run, {"steps": len(ids)}


def attention_problem(quick):
    b, t, d, n, k = QUICK_ATTENTION if quick else ATTENTION
    rng = np.random.default_rng(2)
    shapes = [(d, n, k), (n, k), (d, n, k), (n, k), (d, n, k), (n, k), (n, k, d), (d,)]
    weights = [(rng.standard_normal(s) * 0.05).astype(np.float32) for s in shapes]
    x = rng.standard_normal((b, t, d)).astype(np.float32)
    cotangent = rng.standard_normal((b, t, d)).astype(np.float32)
    projections = 4 * 2 * b * t * d * n * k                               # q, k, v, output
    attention = 2 * 2 * b * n * t * t * k                                 # q k^T, p v
    return x, weights, cotangent, 3 * (projections + attention)           # forward + 2x backward


def attention_case(quick, device="cpu"):
    from micrograd_gen import ops
    x, weights, cotangent, flop = attention_problem(quick)
    weights = tensors(device, *weights, requires_grad=True)
    (x,) = tensors(device, x, requires_grad=True)
    cotangent = on_device(device, cotangent)

    def run():
        for p in weights + [x]:
            p.grad = None
        ops.multi_head_attention(x, x, None, *weights, causal=True).backward(cotangent)
    return run, {"shape": list(x.shape), "flop": flop}


def torch_attention_case(quick, device="cpu"):
    import torch
    x, weights, cotangent, flop = attention_problem(quick)
    wq, bq, wk, bk, wv, bv, wo, bo = torch_tensors(device, *weights, requires_grad=True)
    x, cotangent = torch_tensors(device, x, cotangent)
    x.requires_grad_()
    b, t, d, n, k = QUICK_ATTENTION if quick else ATTENTION

    def project(w, bias):
        y = x.reshape(b * t, d) @ w.reshape(d, n * k) + bias.reshape(n * k)
        return y.reshape(b, t, n, k).transpose(1, 2)                      # (B, n, T, k)

    def run():
        for p in (wq, bq, wk, bk, wv, bv, wo, bo, x):
            p.grad = None
        q, kk, v = project(wq, bq), project(wk, bk), project(wv, bv)
        o = torch.nn.functional.scaled_dot_product_attention(q, kk, v, is_causal=True)
        out = o.transpose(1, 2).reshape(b * t, n * k) @ wo.reshape(n * k, d) + bo
        out.reshape(b, t, d).backward(cotangent)
    return run, {"flop": flop}


def matmul_arrays(quick):
    n = 128 if quick else 2048
    rng = np.random.default_rng(3)
    return rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32), \
        2.0 * n ** 3


def matmul_case(quick, device="cpu"):
    import micrograd_gen as mg
    a, b, flop = matmul_arrays(quick)
    a, b = tensors(device, a, b)

    def run():
        with mg.no_grad():
            mg.ops.matmul(a, b)
    return run, {"shape": list(a.shape), "flop": flop}


def torch_matmul_case(quick, device="cpu"):
    import torch
    a, b, flop = matmul_arrays(quick)
    a, b = torch_tensors(device, a, b)
    c = torch.empty_like(a)
    return lambda: torch.mm(a, b, out=c), {"flop": flop}


register("char_lstm_fwdbwd", char_lstm_case, torch_char_lstm_case)
register("lstm_step_400", lstm_step_case, torch_lstm_step_case)
register("attention_fwdbwd", attention_case, torch_attention_case)
register("matmul_2048", matmul_case, torch_matmul_case)


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
    threads = common.threads()
    if args.torch_child:
        torch_child(args.torch_child, args.quick, reps, threads)
        return
    common.tune_process()   # this process times the engine; PyTorch runs in children
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
        cpu = []
        seconds = time_runs(run, reps, cpu=cpu)
        record = {"workload": name, **summary(seconds, flop), "reps": reps,
                  "cpu_median_s": round(statistics.median(cpu), 5),
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
