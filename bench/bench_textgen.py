"""Text-generation benchmarks (issue 8), the book's workloads of ../shared/BENCHMARKS.md §1-2, as
JSON lines.

  char_lstm_step          the book's model built with micrograd_gen.generative.char_lstm: one-hot
                          x (128, 60, 57), zero_grad + forward + fused softmax cross-entropy +
                          backward + RMSprop(0.01) update (target: within 1.0x of PyTorch's 43 ms).
  char_lstm_generate400   400 characters at temperature 0.5 after a 60-character seed, three ways:
                          `carry` (one state carried over the whole text; target < 40 ms),
                          `window` (60 staggered states, the book's exact output) and `book_loop`
                          (the book's loop: re-run the model on the last 60 characters per
                          character; PyTorch: 164 ms).
  transformer_lm_step_b32 the book's Transformer LM (9,825,176 parameters), token ids (32, 99),
                          zero_grad + forward + fused sparse cross-entropy over all 32 x 99
                          positions + backward + RMSprop(1e-3) (target: within 1.0x of 0.93 s).
  transformer_lm_generate50  50 words after "this movie" with the key/value cache and with the
                          book's re-run of the whole sequence per word.
  transformer_lm_b256     the same step at the book's batch 256, in a child process, for its peak
                          memory (ru_maxrss; PyTorch: 7.5 GB) and time (PyTorch: 10.16 s).
  environment             BLAS threads, load average before and after (the machine is shared: a
                          busy other core slows every figure), peak RSS of this process.

Timings are medians of --repeat runs after a warm-up, perf_counter around each whole run, with the
process's CPU seconds for the same runs beside them (`cpu_s`). When an interpreter that can import
torch is given (--torch-python, default this one), the char-LSTM step, the book's generation loop
and the Transformer step are timed in PyTorch too, in a child process with the same thread count,
and each line gets the ratios engine / torch (wall and CPU); --rounds alternates the two. Never
required.

  python bench/bench_textgen.py
  python bench/bench_textgen.py --only char_lstm_step --repeat 21 --rounds 3 --torch-python /path/to/python
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

from common import emit, on_torch_device, peak_rss_mb, time_runs
from common import threads as blas_threads  # main() keeps the name `threads` for the count

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

V, MAXLEN, UNITS, LSTM_BATCH = 57, 60, 128, 128
VOCAB, SEQ, EMBED, DENSE, HEADS = 15000, 100, 256, 2048, 2
PEER = {"char_lstm_step": 0.0434, "char_lstm_generate400_book_loop": 0.164,
        "transformer_lm_step_b32": 0.93, "transformer_lm_step_b256": 10.16}


def timed(fn, repeat, warmup=2):
    """Median wall seconds, and the median CPU seconds of this process (all threads) for the same
    runs: on the shared machine the load moves wall time several-fold, CPU time much less."""
    wall, cpu = time_runs(fn, repeat, warmup)
    return {"median_s": round(statistics.median(wall), 5), "min_s": round(min(wall), 5),
            "cpu_s": round(statistics.median(cpu), 5), "repeat": repeat}


def lstm_batch(rng):
    x = np.eye(V, dtype=np.float32)[rng.integers(0, V, (LSTM_BATCH, MAXLEN))]
    return x, rng.integers(0, V, LSTM_BATCH)


def lm_batch(rng, batch):
    seq = rng.integers(1, VOCAB, (batch, SEQ))
    return seq[:, :-1], seq[:, 1:]


# ---- the engine ---------------------------------------------------------------------------------
def train_step(model, optimizer, x, y):
    from micrograd_gen.generative.text_training import sparse_lm_loss

    def step():
        optimizer.zero_grad()
        sparse_lm_loss(model, x, y).backward()
        optimizer.step()
    return step


def bench_char_lstm_step(repeat):
    from micrograd_gen import nn
    from micrograd_gen.generative.char_lstm import build_char_lstm
    from micrograd_gen.optim import RMSprop
    nn.set_seed(0)
    model = build_char_lstm(V)
    model.train()
    x, y = lstm_batch(np.random.default_rng(0))
    step = train_step(model, RMSprop(model.parameters(), learning_rate=0.01), x, y)
    return [dict(workload="char_lstm_step", batch=LSTM_BATCH, params=model.count_params(),
                 **timed(step, repeat))]


def bench_char_lstm_generate400(repeat):
    from micrograd_gen import nn
    from micrograd_gen.data.text import CharVocabulary
    from micrograd_gen.generative import char_lstm
    nn.set_seed(0)
    vocab = CharVocabulary([chr(32 + i) for i in range(V)])
    model = char_lstm.build_char_lstm(V)
    seed = "".join(np.random.default_rng(0).choice(vocab.chars, MAXLEN))
    out = []
    for how in ("carry", "window", "book_loop"):
        rng = np.random.RandomState(0)
        if how == "book_loop":
            def fn():
                char_lstm.book_generate(model, vocab, seed, 400, 0.5, rng)
            reps = max(3, repeat // 3)
        else:
            def fn(how=how):
                char_lstm.generate_text(model, vocab, seed, 400, 0.5, rng, context=how)
            reps = repeat
        out.append(dict(workload=f"char_lstm_generate400_{how}", temperature=0.5,
                        **timed(fn, reps, warmup=1)))
    return out


def bench_transformer_lm_step_b32(repeat, batch=32):
    from micrograd_gen import nn
    from micrograd_gen.generative.transformer_lm import build_transformer_lm
    from micrograd_gen.optim import RMSprop
    nn.set_seed(0)
    model = build_transformer_lm()
    model.train()
    x, y = lm_batch(np.random.default_rng(0), batch)
    step = train_step(model, RMSprop(model.parameters(), learning_rate=1e-3), x, y)
    return [dict(workload=f"transformer_lm_step_b{batch}", batch=batch,
                 params=model.count_params(), **timed(step, repeat, warmup=1))]


def bench_transformer_lm_generate50(repeat):
    from micrograd_gen import nn
    from micrograd_gen.generative import transformer_lm
    nn.set_seed(0)
    model = transformer_lm.build_transformer_lm()
    out = []
    for how, fn in (("cache", transformer_lm.generate_ids),
                    ("book_rerun", transformer_lm.book_generate_ids)):
        rng = np.random.RandomState(0)
        out.append(dict(workload=f"transformer_lm_generate50_{how}", temperature=0.7,
                        **timed(lambda: fn(model, [11, 17], 50, 0.7, rng), max(3, repeat // 3),
                                warmup=1)))
    return out


def bench_transformer_lm_b256(repeat, python=sys.executable):
    """Run in a child so that its peak RSS is the step's alone."""
    done = subprocess.run([python, __file__, "--child", "transformer_lm_b256",
                           "--repeat", str(repeat)], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return [dict(workload="transformer_lm_step_b256", error=tail)]
    return [json.loads(done.stdout.strip().splitlines()[-1])]


def child_transformer_lm_b256(repeat):
    record = bench_transformer_lm_step_b32(max(1, repeat), batch=256)[0]
    record["peak_rss_mb"] = peak_rss_mb()
    return record


# ---- PyTorch, for comparison only ---------------------------------------------------------------
def torch_char_lstm_step(repeat):
    import torch
    from torch import nn as tnn
    lstm, dense = tnn.LSTM(V, UNITS, batch_first=True), tnn.Linear(UNITS, V)
    params = list(lstm.parameters()) + list(dense.parameters())
    optimizer = torch.optim.RMSprop(params, lr=0.01, alpha=0.9, eps=1e-7)
    x, y = lstm_batch(np.random.default_rng(0))
    lstm, dense, x, y = on_torch_device(lstm, dense, torch.from_numpy(x), torch.from_numpy(y))

    def step():
        optimizer.zero_grad()
        _, (h, _) = lstm(x)
        torch.nn.functional.cross_entropy(dense(h[0]), y).backward()
        optimizer.step()
    return dict(workload="char_lstm_step", **timed(step, repeat))


def torch_char_lstm_generate400_book_loop(repeat):
    import torch
    from torch import nn as tnn

    from micrograd_gen.generative.text_sampling import sample_next
    lstm, dense = tnn.LSTM(V, UNITS, batch_first=True), tnn.Linear(UNITS, V)
    rng = np.random.RandomState(0)
    text = list(np.random.default_rng(0).integers(0, V, MAXLEN))

    def generate():
        generated = list(text)
        with torch.no_grad():
            for _ in range(400):
                sampled = np.zeros((1, MAXLEN, V), np.float32)
                sampled[0, np.arange(MAXLEN), generated[-MAXLEN:]] = 1
                _, (h, _) = lstm(torch.from_numpy(sampled))
                preds = torch.softmax(dense(h[0]), -1)[0].numpy()
                generated.append(sample_next(preds, 0.5, rng))
    return dict(workload="char_lstm_generate400_book_loop", **timed(generate, max(3, repeat // 3),
                                                                     warmup=1))


def torch_transformer_lm_step_b32(repeat, batch=32):
    import torch
    from torch import nn as tnn
    F = tnn.functional

    class MHA(tnn.Module):  # Keras's layout: key_dim 256 per head, so 256 -> 2 x 256
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = (tnn.Linear(EMBED, HEADS * EMBED) for _ in range(3))
            self.o = tnn.Linear(HEADS * EMBED, EMBED)

        def forward(self, query, value, mask):
            b, t, _ = query.shape
            q, k, v = (f(x).view(b, -1, HEADS, EMBED).transpose(1, 2)
                       for f, x in ((self.q, query), (self.k, value), (self.v, value)))
            scores = (q / EMBED ** 0.5) @ k.transpose(-1, -2)
            scores = scores.masked_fill(~mask, -1e9)
            probs = torch.softmax(scores, -1) * mask
            return self.o((probs @ v).transpose(1, 2).reshape(b, t, -1))

    class LM(tnn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos = tnn.Embedding(VOCAB, EMBED), tnn.Embedding(SEQ, EMBED)
            self.a1, self.a2 = MHA(), MHA()
            self.proj = tnn.Sequential(tnn.Linear(EMBED, DENSE), tnn.ReLU(), tnn.Linear(DENSE, EMBED))
            self.ln = tnn.ModuleList(tnn.LayerNorm(EMBED, eps=1e-3) for _ in range(3))
            self.out = tnn.Linear(EMBED, VOCAB)

        def forward(self, ids):
            t = ids.shape[1]
            x = self.tok(ids) + self.pos(torch.arange(t, device=ids.device))
            causal = torch.ones(t, t, dtype=torch.bool, device=ids.device).tril()[None, None]
            padding = (ids != 0)[:, None, None, :] & causal
            a1 = self.ln[0](x + self.a1(x, x, causal))
            a2 = self.ln[1](a1 + self.a2(a1, x, padding))
            return self.out(self.ln[2](a2 + self.proj(a2)))

    model = on_torch_device(LM())
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    x, y = on_torch_device(*(torch.from_numpy(a) for a in lm_batch(np.random.default_rng(0),
                                                                     batch)))

    def step():
        optimizer.zero_grad()
        F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1)).backward()
        optimizer.step()
    return dict(workload=f"transformer_lm_step_b{batch}", **timed(step, repeat, warmup=1))


def torch_transformer_lm_step_b256(repeat):
    return torch_transformer_lm_step_b32(repeat, batch=256)


TORCH = {"char_lstm_step": torch_char_lstm_step,
         "char_lstm_generate400_book_loop": torch_char_lstm_generate400_book_loop,
         "transformer_lm_step_b32": torch_transformer_lm_step_b32,
         "transformer_lm_step_b256": torch_transformer_lm_step_b256}


def run_child(python, name, repeat, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    try:
        done = subprocess.run([python, __file__, "--child", name, "--repeat", str(repeat)],
                              capture_output=True, text=True, env=env, timeout=1200)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{type(e).__name__}: {e}"
    if done.returncode != 0:
        return None, (done.stderr.strip().splitlines() or ["no output"])[-1]
    return json.loads(done.stdout.strip().splitlines()[-1]), None


# ---- main ---------------------------------------------------------------------------------------
def merge_rounds(records):
    """One line from the same workload's records of every round (see main)."""
    record = dict(records[0])
    workload = record["workload"]
    if "median_s" not in record:
        return record
    for key in ("median_s", "cpu_s"):
        record[key] = round(statistics.median(r[key] for r in records), 5)
    record["min_s"] = min(r["min_s"] for r in records)
    record["rounds"] = len(records)
    if workload in TARGETS:
        record.update(target_s=TARGETS[workload], meets_target=record["median_s"] <= TARGETS[workload])
    if workload in PEER:
        record["ratio_to_pytorch_figure"] = round(record["median_s"] / PEER[workload], 2)
    if "torch" in record:
        measured = [r["torch"][0] for r in records if r["torch"][0] is not None]
        if len(measured) < len(records):
            record["torch"] = f"not measured ({next(r['torch'][1] for r in records if r['torch'][0] is None)})"
        else:
            record["torch"] = {"median_s": round(statistics.median(t["median_s"] for t in measured), 5),
                               "cpu_s": round(statistics.median(t["cpu_s"] for t in measured), 5),
                               "version": measured[0]["torch"]}
            for key, field in (("ratio_engine_over_torch", "median_s"),
                               ("cpu_ratio_engine_over_torch", "cpu_s")):
                record[key] = round(statistics.median(
                    r[field] / t[field] for r, t in zip(records, measured)), 2)
    return record


BENCHES = {"char_lstm_step": bench_char_lstm_step,
           "char_lstm_generate400": bench_char_lstm_generate400,
           "transformer_lm_step_b32": bench_transformer_lm_step_b32,
           "transformer_lm_generate50": bench_transformer_lm_generate50,
           "transformer_lm_b256": bench_transformer_lm_b256}
TARGETS = {"char_lstm_step": 0.0434, "char_lstm_generate400_carry": 0.040,
           "transformer_lm_step_b32": 0.93}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--only", choices=sorted(BENCHES), action="append")
    parser.add_argument("--torch-python", default=sys.executable,
                        help="an interpreter that can import torch (default: this one)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate engine and PyTorch this many times (medians over rounds)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    threads = blas_threads()
    if args.child:
        if args.child == "transformer_lm_b256":
            print(json.dumps(child_transformer_lm_b256(args.repeat)))
        else:
            import torch
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            print(json.dumps(dict(TORCH[args.child](args.repeat), torch=torch.__version__)))
        return
    load_before = os.getloadavg()
    for name, bench in BENCHES.items():
        if args.only and name not in args.only:
            continue
        repeat = 2 if name == "transformer_lm_b256" else (
            max(3, args.repeat // 2) if name.startswith("transformer") else args.repeat)
        # Rounds alternate the engine and PyTorch, so that a change in the machine's load hits
        # both; each figure is the median over rounds, each ratio the median of the rounds' ratios.
        rounds = []
        for _ in range(args.rounds if name != "transformer_lm_b256" else 1):
            records = bench(repeat)
            for record in records:
                if record["workload"] in TORCH and not args.no_torch and "median_s" in record:
                    record["torch"] = run_child(args.torch_python, record["workload"], repeat,
                                                threads)
            rounds.append(records)
        for i, record in enumerate(rounds[0]):
            emit(threads=threads, loadavg=[round(v, 2) for v in os.getloadavg()],
                 **merge_rounds([r[i] for r in rounds]))
    emit(workload="environment", threads=threads, cpu_count=os.cpu_count(),
         numpy=np.__version__, loadavg_before=[round(v, 2) for v in load_before],
         loadavg_after=[round(v, 2) for v in os.getloadavg()], peak_rss_mb=peak_rss_mb())


if __name__ == "__main__":
    main()
