"""Sequence-op benchmarks (issue 3): the char LSTM and the Transformer's attention, as JSON lines.

  char_lstm     the book's char LSTM (../shared/BENCHMARKS.md, `char_lstm_step`): x one-hot float32
                (128, 60, 57), LSTM(128) -> Dense(57) -> softmax cross-entropy (mean over the
                batch, from logits), forward + backward (target < 45 ms: PyTorch's whole step
                with RMSprop takes 43 ms here); also forward alone, and the whole step with the
                RMSprop(lr 0.01) update.
  lstm_step_400 400 steps of ops.lstm_step (batch 1, 57 -> 128 units) + Dense(57) + softmax under
                no_grad: the stateful text generator's cost per 400 characters (target well
                under 40 ms).
  attention     MultiHeadAttention(num_heads=2, key_dim=256) on (32, 99, 256), causal
                self-attention, forward + backward to the input and all eight weights.
  environment   BLAS threads, load average before and after, peak RSS.

When PyTorch can be imported (by this interpreter, or the one given with --torch-python) the same
work is timed in PyTorch in a child process (so its OpenMP threads never compete with OpenBLAS's
in this one), with the same thread count, and each line gets the ratio engine / torch. It is
never required.

Timings are medians of --repeat runs after a warm-up, perf_counter around each whole run; `cpu_ms`
is this process's CPU time (all threads) for the same runs.

  python bench/bench_seq_ops.py
  python bench/bench_seq_ops.py --only char_lstm --rounds 3 --torch-python /path/to/python
  OPENBLAS_NUM_THREADS=1 python bench/bench_seq_ops.py    # both sides on one thread
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

N_CHARS, T_CHARS, VOCAB, UNITS = 128, 60, 57, 128
ATT_BATCH, ATT_LEN, ATT_WIDTH, ATT_HEADS, ATT_KEY_DIM = 32, 99, 256, 2, 256


def emit(**record):
    print(json.dumps(record), flush=True)


def blas_threads():
    env = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    return (int(env), "environment") if env else (os.cpu_count(), "os.cpu_count()")


def median_time(fn, repeat, warmup=2):
    """(wall, cpu) medians in seconds."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def peak_extra_mb(fn):
    """Peak memory NumPy allocated during one call (NumPy reports its buffers to tracemalloc)."""
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return round(peak / 2 ** 20, 1)


def ms(seconds):
    return round(seconds * 1e3, 2)


# ---- the engine's side ---------------------------------------------------------------------------

def char_lstm_problem(rng):
    x = np.zeros((N_CHARS, T_CHARS, VOCAB), np.float32)
    x[np.arange(N_CHARS)[:, None], np.arange(T_CHARS), rng.integers(0, VOCAB, (N_CHARS, T_CHARS))] = 1
    y = rng.integers(0, VOCAB, N_CHARS)
    shapes = [(VOCAB, 4 * UNITS), (UNITS, 4 * UNITS), (4 * UNITS,), (UNITS, VOCAB), (VOCAB,)]
    weights = [(rng.standard_normal(s) * 0.1).astype(np.float32) for s in shapes]
    return x, y, weights


def lstm_gflop():
    """GEMM work of one forward + backward (the input is data: no dx)."""
    rows = N_CHARS * T_CHARS
    forward = 2 * rows * 4 * UNITS * (VOCAB + UNITS)                    # z = [K R]^T [x; h]
    backward = 2 * rows * 4 * UNITS * UNITS + 2 * rows * 4 * UNITS * (VOCAB + UNITS)  # dh, dW
    return (forward + backward) / 1e9


def bench_char_lstm(repeat):
    from micrograd_gen import Tensor, ops
    x, y, arrays = char_lstm_problem(np.random.default_rng(0))
    kernel, recurrent, bias, dense_kernel, dense_bias = params = [
        Tensor(a, requires_grad=True) for a in arrays]
    x = Tensor(x)

    def loss_fn():
        h = ops.lstm(x, kernel, recurrent, bias)                         # (128, 128)
        logits = ops.add(ops.matmul(h, dense_kernel), dense_bias)        # (128, 57)
        return ops.sparse_categorical_crossentropy(y, logits, from_logits=True)

    def forward():
        loss_fn()

    def forward_backward():
        for p in params:
            p.grad = None
        loss_fn().backward()

    try:
        from micrograd_gen.optim import RMSprop
        optimizer = RMSprop(params, learning_rate=0.01, rho=0.9, epsilon=1e-7)
    except ImportError:
        optimizer = None

    def train_step():
        optimizer.zero_grad()
        loss_fn().backward()
        optimizer.step()

    fwd, fwd_cpu = median_time(forward, repeat)
    both, both_cpu = median_time(forward_backward, repeat)
    record = dict(fwd_ms=ms(fwd), fwd_cpu_ms=ms(fwd_cpu), fwdbwd_ms=ms(both),
                  fwdbwd_cpu_ms=ms(both_cpu), gflops=round(lstm_gflop() / both, 1))
    if optimizer is not None:
        step, step_cpu = median_time(train_step, repeat)
        record.update(step_ms=ms(step), step_cpu_ms=ms(step_cpu))
    record["peak_extra_mb"] = peak_extra_mb(forward_backward)
    return record


def bench_lstm_step_400(repeat):
    from micrograd_gen import Tensor, no_grad, ops
    rng = np.random.default_rng(1)
    _, _, arrays = char_lstm_problem(rng)
    kernel, recurrent, bias, dense_kernel, dense_bias = [Tensor(a) for a in arrays]
    ids = rng.integers(0, VOCAB, 400)
    one_hot = np.zeros((1, VOCAB), np.float32)

    def generate():
        h = c = None
        with no_grad():
            for i in ids:
                one_hot[:] = 0
                one_hot[0, i] = 1
                h, c = ops.lstm_step(one_hot, h, c, kernel, recurrent, bias)
                ops.softmax(ops.add(ops.matmul(h, dense_kernel), dense_bias))

    wall, cpu = median_time(generate, repeat)
    return dict(ms=ms(wall), cpu_ms=ms(cpu), us_per_char=round(wall / 400 * 1e6, 1))


def attention_problem(rng):
    d, n, k = ATT_WIDTH, ATT_HEADS, ATT_KEY_DIM
    shapes = [(d, n, k), (n, k), (d, n, k), (n, k), (d, n, k), (n, k), (n, k, d), (d,)]
    weights = [(rng.standard_normal(s) * 0.05).astype(np.float32) for s in shapes]
    x = rng.standard_normal((ATT_BATCH, ATT_LEN, d)).astype(np.float32)
    cotangent = rng.standard_normal((ATT_BATCH, ATT_LEN, d)).astype(np.float32)
    return x, weights, cotangent


def attention_gflop():
    b, t, d, n, k = ATT_BATCH, ATT_LEN, ATT_WIDTH, ATT_HEADS, ATT_KEY_DIM
    projections = 4 * 2 * b * t * d * n * k                              # q, k, v, output
    attention = 2 * 2 * b * n * t * t * k                                # q k^T, p v
    return 3 * (projections + attention) / 1e9                           # forward + 2x backward


def bench_attention(repeat):
    from micrograd_gen import Tensor, ops
    x, arrays, cotangent = attention_problem(np.random.default_rng(2))
    weights = [Tensor(a, requires_grad=True) for a in arrays]
    x = Tensor(x, requires_grad=True)

    def forward():
        return ops.multi_head_attention(x, x, None, *weights, causal=True)

    def forward_backward():
        for p in weights + [x]:
            p.grad = None
        forward().backward(cotangent)

    fwd, fwd_cpu = median_time(forward, repeat)
    both, both_cpu = median_time(forward_backward, repeat)
    return dict(fwd_ms=ms(fwd), fwd_cpu_ms=ms(fwd_cpu), fwdbwd_ms=ms(both),
                fwdbwd_cpu_ms=ms(both_cpu), gflops=round(attention_gflop() / both, 1),
                peak_extra_mb=peak_extra_mb(forward_backward))


# ---- the same work in PyTorch (run in a child process) ------------------------------------------

def torch_char_lstm(repeat):
    import torch
    from torch import nn
    x, y, _ = char_lstm_problem(np.random.default_rng(0))
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    lstm, dense = nn.LSTM(VOCAB, UNITS, batch_first=True), nn.Linear(UNITS, VOCAB)
    params = list(lstm.parameters()) + list(dense.parameters())
    optimizer = torch.optim.RMSprop(params, lr=0.01, alpha=0.9, eps=1e-7)

    def loss_fn():
        _, (h, _) = lstm(x)
        return nn.functional.cross_entropy(dense(h[0]), y)

    def forward():  # with the graph recorded, as the engine's forward alone
        loss_fn()

    def forward_backward():
        optimizer.zero_grad()
        loss_fn().backward()

    def train_step():
        forward_backward()
        optimizer.step()

    fwd, fwd_cpu = median_time(forward, repeat)
    both, both_cpu = median_time(forward_backward, repeat)
    step, step_cpu = median_time(train_step, repeat)
    return dict(fwd_ms=ms(fwd), fwd_cpu_ms=ms(fwd_cpu), fwdbwd_ms=ms(both),
                fwdbwd_cpu_ms=ms(both_cpu), step_ms=ms(step), step_cpu_ms=ms(step_cpu))


def torch_lstm_step_400(repeat):
    import torch
    from torch import nn
    rng = np.random.default_rng(1)
    cell, dense = nn.LSTMCell(VOCAB, UNITS), nn.Linear(UNITS, VOCAB)
    ids = rng.integers(0, VOCAB, 400)
    one_hot = torch.zeros(1, VOCAB)

    def generate():
        state = None
        with torch.no_grad():
            for i in ids:
                one_hot.zero_()
                one_hot[0, int(i)] = 1
                state = cell(one_hot, state)
                torch.softmax(dense(state[0]), dim=-1)

    wall, cpu = median_time(generate, repeat)
    return dict(ms=ms(wall), cpu_ms=ms(cpu), us_per_char=round(wall / 400 * 1e6, 1))


def torch_attention(repeat):
    import torch
    x, arrays, cotangent = attention_problem(np.random.default_rng(2))
    wq, bq, wk, bk, wv, bv, wo, bo = [torch.from_numpy(a).requires_grad_() for a in arrays]
    x = torch.from_numpy(x).requires_grad_()
    cotangent = torch.from_numpy(cotangent)
    b, t, d, n, k = ATT_BATCH, ATT_LEN, ATT_WIDTH, ATT_HEADS, ATT_KEY_DIM

    def project(w, bias):
        y = x.reshape(b * t, d) @ w.reshape(d, n * k) + bias.reshape(n * k)
        return y.reshape(b, t, n, k).transpose(1, 2)                     # (B, n, T, k)

    def forward():
        q, kk, v = project(wq, bq), project(wk, bk), project(wv, bv)
        o = torch.nn.functional.scaled_dot_product_attention(q, kk, v, is_causal=True)
        return o.transpose(1, 2).reshape(b * t, n * k) @ wo.reshape(n * k, d) + bo

    def forward_backward():
        for p in (wq, bq, wk, bk, wv, bv, wo, bo, x):
            p.grad = None
        forward().reshape(b, t, d).backward(cotangent)

    fwd, fwd_cpu = median_time(forward, repeat)
    both, both_cpu = median_time(forward_backward, repeat)
    return dict(fwd_ms=ms(fwd), fwd_cpu_ms=ms(fwd_cpu), fwdbwd_ms=ms(both),
                fwdbwd_cpu_ms=ms(both_cpu))


TORCH = {"char_lstm": torch_char_lstm, "lstm_step_400": torch_lstm_step_400,
         "attention": torch_attention}


def torch_child(name, repeat, threads):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    print(json.dumps(dict(TORCH[name](repeat), torch=torch.__version__)))


def run_torch(name, repeat, threads, python):
    """PyTorch's figures for `name` from a child process, or None (with the reason)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    try:
        done = subprocess.run([python, __file__, "--torch-child", name, "--repeat", str(repeat)],
                              capture_output=True, text=True, env=env, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{type(e).__name__}: {e}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, last
    return json.loads(done.stdout.strip().splitlines()[-1]), None


# ---- main ----------------------------------------------------------------------------------------

TARGETS = {"char_lstm": ("fwdbwd_ms", 45.0), "lstm_step_400": ("ms", 40.0)}


def median_records(records):
    """Field by field median of several rounds' records (numbers only; the rest from the first)."""
    out = dict(records[0])
    for key, value in records[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = round(statistics.median(r[key] for r in records), 2)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate engine and torch this many times, report the medians "
                             "(load from other jobs then hits both alike)")
    parser.add_argument("--only", choices=["char_lstm", "lstm_step_400", "attention"])
    parser.add_argument("--torch-python", default=sys.executable,
                        help="interpreter that can import torch (default: this one)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--torch-child", choices=sorted(TORCH), help=argparse.SUPPRESS)
    args = parser.parse_args()
    threads, threads_from = blas_threads()
    if args.torch_child:
        torch_child(args.torch_child, args.repeat, threads)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    load_before = os.getloadavg()
    benches = {"char_lstm": bench_char_lstm, "lstm_step_400": bench_lstm_step_400,
               "attention": bench_attention}
    for name, bench in benches.items():
        if args.only not in (None, name):
            continue
        ours, theirs, why = [], [], None
        for _ in range(args.rounds):
            ours.append(bench(args.repeat))
            if not args.no_torch and why is None:
                result, why = run_torch(name, args.repeat, threads, args.torch_python)
                if result is not None:
                    theirs.append(result)
        record = median_records(ours)
        if name in TARGETS:
            key, target = TARGETS[name]
            record.update(target_ms=target, meets_target=record[key] < target)
        if theirs:
            theirs = median_records(theirs)
            record["torch"] = theirs
            key = "fwdbwd_ms" if "fwdbwd_ms" in record else "ms"
            record[f"ratio_{key}_engine_over_torch"] = round(record[key] / theirs[key], 2)
            cpu_key = key.replace("ms", "cpu_ms")  # steadier when the machine is busy
            record[f"ratio_{cpu_key}_engine_over_torch"] = round(
                record[cpu_key] / theirs[cpu_key], 2)
        elif not args.no_torch:
            record["torch"] = f"not measured ({why})"
        emit(bench=name, dtype="float32", repeat=args.repeat, rounds=args.rounds,
             threads=threads, **record)
    emit(bench="environment", blas_threads=threads, blas_threads_from=threads_from,
         cpu_count=os.cpu_count(), numpy=np.__version__, python=sys.version.split()[0],
         loadavg_before=[round(v, 2) for v in load_before],
         loadavg_after=[round(v, 2) for v in os.getloadavg()],
         peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))


if __name__ == "__main__":
    main()
