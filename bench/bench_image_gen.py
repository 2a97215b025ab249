"""Benchmarks for image generation (issue 5), as JSON lines.

  vae_step     the book's VAE train step at batch 128: zero_grad + forward + loss + backward + Adam
               (target 84 ms, x1.0: PyTorch CPU's time on this kind of machine)
  dcgan_step   the book's DCGAN train_step at batch 32: G forward without a graph, D step on 64
               images, G step through a frozen D, two Adam updates (target 5.8 s, x1.2)
  denoise_step the denoising autoencoder's train step at batch 128 (no target; for reference)

Workloads are defined in ../shared/BENCHMARKS.md (sections 5 and 6). Each runs in a fresh process,
so its peak RSS (ru_maxrss) is its own; the time is the median of --repeat runs after a warm-up,
timed with perf_counter around the whole step. With --torch, the same steps are timed in PyTorch
(NCHW, the figures in BENCHMARKS.md) in another fresh process, under --torch-python if torch is
not importable here, and the ratio is printed; nothing requires torch.

  OPENBLAS_NUM_THREADS=2 python bench/bench_image_gen.py
  OPENBLAS_NUM_THREADS=2 python bench/bench_image_gen.py --only vae_step --repeat 20 \
      --torch --torch-python /tmp/bench-venv/bin/python
  python bench/bench_image_gen.py --profile dcgan_step     # where the time goes, by op
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import emit, peak_rss_mb, threads, time_runs, tune_process

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"vae_step": 0.084, "dcgan_step": 5.81 * 1.2}
PEER = {"vae_step": 0.084, "dcgan_step": 5.81}
REPEATS = {"vae_step": 15, "dcgan_step": 5, "denoise_step": 15}


# ---- micrograd_gen ---------------------------------------------------------------------------------
def engine_step(name):
    """A zero-argument callable running one training step of `name` on random data."""
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from micrograd_gen import nn
    rng = np.random.default_rng(0)
    if name == "vae_step":
        from micrograd_gen.generative import vae as V
        from micrograd_gen.optim import Adam
        nn.set_seed(0)
        model = V.VAE(seed=0).train()
        optimizer = Adam(model.parameters(), learning_rate=1e-3)
        x = V.as_digit_batch(rng.random((128, 28, 28, 1), dtype=np.float32))
        return lambda: V.train_step(model, optimizer, x)
    if name == "dcgan_step":
        from micrograd_gen.generative import dcgan
        gan = dcgan.GAN(seed=0)
        real = rng.random((32, 64, 64, 3), dtype=np.float32)
        return lambda: gan.train_step(real)
    if name == "denoise_step":
        from micrograd_gen import Tensor, ops
        from micrograd_gen.generative import denoise as D
        from micrograd_gen.optim import Adam
        model = D.build_denoiser()
        optimizer = Adam(model.parameters())
        clean = rng.random((128, 28, 28, 1), dtype=np.float32)
        noisy = D.add_noise(clean, rng)

        def step():
            loss = ops.binary_crossentropy(Tensor(clean), model(Tensor(noisy)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return step
    raise ValueError(f"unknown workload {name!r}")


def run_engine(name, repeat):
    step = engine_step(name)
    times, cpu = time_runs(step, repeat, warmup=2)
    median = statistics.median(times)
    target = TARGETS.get(name)
    emit(bench=name, engine="micrograd_gen", median_s=round(median, 4), min_s=round(min(times), 4),
         median_cpu_s=round(statistics.median(cpu), 4),
         runs=[round(t, 4) for t in times], threads=threads(),
         **({"target_s": round(target, 4), "within_target": median <= target,
             "ratio_to_peer": round(median / PEER[name], 3)} if target else {}),
         peak_rss_mb=peak_rss_mb(), loadavg_1min=round(os.getloadavg()[0], 2))


def profile(name, repeat):
    """Time spent in each op's forward and backward over `repeat` steps, largest first: wall time,
    and CPU time of the process (all threads), which a busy shared machine distorts less."""
    from collections import defaultdict
    step = engine_step(name)
    step()
    from micrograd_gen import tensor
    wall, cpu = defaultdict(float), defaultdict(float)
    originals = {}

    def wrap(cls, method):
        original = getattr(cls, method)
        key = f"{cls.__name__}.{method}"

        def timed_method(self, *args, **kwargs):
            start, start_cpu = time.perf_counter(), time.process_time()
            try:
                return original(self, *args, **kwargs)
            finally:
                wall[key] += time.perf_counter() - start
                cpu[key] += time.process_time() - start_cpu
        originals[(cls, method)] = original
        setattr(cls, method, timed_method)

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    for cls in set(subclasses(tensor.Function)):
        for method in ("forward", "backward"):
            if method in cls.__dict__:
                wrap(cls, method)
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        step()
    total, total_cpu = ((time.perf_counter() - start) / repeat,
                        (time.process_time() - start_cpu) / repeat)
    for (cls, method), original in originals.items():
        setattr(cls, method, original)
    rows = sorted(wall, key=lambda k: -cpu[k])[:15]
    emit(bench=name, profile="per step", threads=threads(), step_s=round(total, 4),
         step_cpu_s=round(total_cpu, 4),
         ops={k: {"wall_s": round(wall[k] / repeat, 4), "cpu_s": round(cpu[k] / repeat, 4)}
              for k in rows},
         outside_ops_cpu_s=round(total_cpu - sum(cpu.values()) / repeat, 4),
         loadavg_1min=round(os.getloadavg()[0], 2))


# ---- PyTorch, for comparison only ------------------------------------------------------------------
TORCH_WORKER = r'''
import json, os, statistics, sys, time, resource
import torch
from torch import nn
torch.set_num_threads(int(sys.argv[3]))
torch.manual_seed(0)
name, repeat = sys.argv[1], int(sys.argv[2])

def bce(y, p):  # Keras's binary cross-entropy on probabilities
    p = p.clamp(1e-7, 1 - 1e-7)
    return -(y * p.log() + (1 - y) * (1 - p).log())

if name == "vae_step":
    enc = nn.Sequential(nn.Conv2d(1, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(3136, 16), nn.ReLU(), nn.Linear(16, 4))
    dec = nn.Sequential(nn.Linear(2, 3136), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
                        nn.ConvTranspose2d(64, 64, 3, 2, 1, 1), nn.ReLU(),
                        nn.ConvTranspose2d(64, 32, 3, 2, 1, 1), nn.ReLU(),
                        nn.Conv2d(32, 1, 3, 1, 1), nn.Sigmoid())
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=1e-3, eps=1e-7)
    x = torch.rand(128, 1, 28, 28)
    def step():
        opt.zero_grad()
        mean, log_var = enc(x).chunk(2, dim=1)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        recon = dec(z)
        loss = bce(x, recon).sum(dim=(1, 2, 3)).mean() + (-0.5 * (1 + log_var - mean ** 2 - log_var.exp())).mean()
        loss.backward()
        opt.step()
else:
    D = nn.Sequential(nn.Conv2d(3, 64, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(64, 128, 4, 2, 1),
                      nn.LeakyReLU(0.2), nn.Conv2d(128, 128, 4, 2, 1), nn.LeakyReLU(0.2),
                      nn.Flatten(), nn.Dropout(0.2), nn.Linear(8192, 1), nn.Sigmoid())
    G = nn.Sequential(nn.Linear(128, 8192), nn.Unflatten(1, (128, 8, 8)),
                      nn.ConvTranspose2d(128, 128, 4, 2, 1), nn.LeakyReLU(0.2),
                      nn.ConvTranspose2d(128, 256, 4, 2, 1), nn.LeakyReLU(0.2),
                      nn.ConvTranspose2d(256, 512, 4, 2, 1), nn.LeakyReLU(0.2),
                      nn.Conv2d(512, 3, 5, 1, 2), nn.Sigmoid())
    d_opt = torch.optim.Adam(D.parameters(), lr=1e-4, eps=1e-7)
    g_opt = torch.optim.Adam(G.parameters(), lr=1e-4, eps=1e-7)
    real = torch.rand(32, 3, 64, 64)
    def step():
        with torch.no_grad():
            fake = G(torch.randn(32, 128))
        labels = torch.cat([torch.ones(32, 1), torch.zeros(32, 1)])
        labels += 0.05 * torch.rand_like(labels)
        d_opt.zero_grad()
        bce(labels, D(torch.cat([fake, real]))).mean().backward()
        d_opt.step()
        for p in D.parameters():
            p.requires_grad_(False)
        g_opt.zero_grad()
        bce(torch.zeros(32, 1), D(G(torch.randn(32, 128)))).mean().backward()
        g_opt.step()
        for p in D.parameters():
            p.requires_grad_(True)
device = os.environ.get("MICROGRAD_GEN_TORCH_DEVICE", "cpu")
sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
if name == "vae_step":
    enc, dec, x = enc.to(device), dec.to(device), x.to(device)
else:
    D, G, real = D.to(device), G.to(device), real.to(device)
torch.set_default_device(device)   # the latents and labels each step draws
if os.environ.get("MICROGRAD_GEN_TORCH_LAYOUT", "nchw") == "channels_last":
    cl = torch.channels_last
    if name == "vae_step":
        enc, dec, x = enc.to(memory_format=cl), dec.to(memory_format=cl), x.contiguous(memory_format=cl)
    else:
        D, G, real = D.to(memory_format=cl), G.to(memory_format=cl), real.contiguous(memory_format=cl)
for _ in range(2):
    step()
times, cpu = [], []
for _ in range(repeat):
    sync()
    t, c = time.perf_counter(), time.process_time()
    step()
    sync()
    times.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
print(json.dumps({"median_s": statistics.median(times), "runs": times, "torch": torch.__version__,
                  "median_cpu_s": statistics.median(cpu),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def run_torch(name, repeat, python):
    if name not in PEER:
        return None
    result = subprocess.run([python, "-c", TORCH_WORKER, name, str(repeat), str(threads())],
                            capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["?"])[-1]
        emit(bench=name, engine="torch", skipped=f"torch not usable under {python}: {last}")
        return None
    record = json.loads(result.stdout.strip().splitlines()[-1])
    emit(bench=name, engine="torch", torch=record["torch"], median_s=round(record["median_s"], 4),
         median_cpu_s=round(record["median_cpu_s"], 4),
         runs=[round(t, 4) for t in record["runs"]], threads=threads(),
         peak_rss_mb=round(record["peak_rss_mb"], 1), loadavg_1min=round(os.getloadavg()[0], 2))
    return record["median_s"], record["median_cpu_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=list(REPEATS), help="run only these")
    parser.add_argument("--repeat", type=int, help="timed runs (default: 15 VAE, 5 DCGAN)")
    parser.add_argument("--torch", action="store_true", help="also time the same steps in PyTorch")
    parser.add_argument("--torch-python", default=sys.executable,
                        help="the interpreter that has torch (default: this one)")
    parser.add_argument("--profile", choices=list(REPEATS), help="per-op time of one workload")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        tune_process()
        run_engine(args.worker, args.repeat or REPEATS[args.worker])
        return
    if args.profile:
        tune_process()   # as the timed runs do: without it large arrays page-fault every step
        profile(args.profile, args.repeat or 3)
        return
    for name in args.only or ["vae_step", "dcgan_step"]:
        repeat = args.repeat or REPEATS[name]
        # A fresh process per workload, so that its peak RSS is its own.
        result = subprocess.run([sys.executable, __file__, "--worker", name, "--repeat", str(repeat)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            emit(bench=name, engine="micrograd_gen", error=result.stderr.strip()[-2000:])
            continue
        line = result.stdout.strip().splitlines()[-1]
        print(line, flush=True)
        ours = json.loads(line)
        if args.torch:
            theirs = run_torch(name, repeat, args.torch_python)
            if theirs:
                emit(bench=name, ratio_micrograd_gen_to_torch=round(ours["median_s"] / theirs[0], 3),
                     cpu_ratio_micrograd_gen_to_torch=round(ours["median_cpu_s"] / theirs[1], 3),
                     note="same thread count, measured one after the other in this run")


if __name__ == "__main__":
    main()
