"""One entry point for the book's benchmarks (../shared/BENCHMARKS.md), on the CPU or the GPU.

  python bench/run.py --device cpu|gpu --suite ops|apps|all [--quick] [--out results.jsonl]
                      [--only NAME,...] [--repeat N] [--threads N] [--torch-python PY]
                      [--rounds N]
  python bench/run.py --list                          # the workloads of each suite
  python bench/run.py --markdown results.jsonl        # the README's results table

Suites. ops: the three VGG19 conv shapes forward and forward+backward, the DCGAN generator's
three Conv2DTranspose layers, the char LSTM as ops, 400 lstm_step calls, the Transformer's
attention, the 2048 matmul (the registry of bench_ops.py). apps: the char-LSTM train step and the
book's 400-character generation loop (bench_textgen.py), the Transformer LM step at batch 32 and
256 (256 only without --quick), the DeepDream step at the three octave sizes and the whole
schedule (bench_dream_style.py), the style-transfer loss + gradient + SGD step at 400x600 with
the book's batch of 3, the VAE step and the DCGAN step (bench_image_gen.py). The workloads are
those scripts' own code; this file only builds them on the right device, times them the same
way, and writes one JSON line per workload (bench/README.md explains the fields).

How it times. Each workload runs in a fresh child process (its peak RSS is then its own), with the
BLAS/OpenMP thread count set before NumPy loads. After --warmup runs, each of --repeat runs is
timed with perf_counter, and on the GPU `cupy.cuda.Device().synchronize()` comes before every
clock read; median, min and max go in the line, with the process's CPU seconds. The parent reads
/proc/stat around the child: the CPU time the rest of the machine used meanwhile, in cores, is
`other_cpu_cores` (this machine is shared; a busy neighbour moves every wall-clock figure).
--quick: small sizes, 1-2 runs, everything in this process (peak memory from tracemalloc), for CI.

PyTorch. When an interpreter that can import torch is at hand (this one, --torch-python or
$MICROGRAD_GEN_TORCH_PYTHON) each workload is also run in PyTorch, in its own child process with
the same thread count, right after ours, and the line gets `ratio_to_torch` = ours / torch. The ops'
twins are timed here like ours (and run on CUDA with --device gpu); the applications' twins are
the other bench scripts' own, which time themselves on the CPU. PyTorch is never required; without
it each line still has `ratio_to_peer`, ours over BENCHMARKS.md's PyTorch figure. With
--rounds N both are timed N times, alternating (ours, PyTorch, ours, ...), and `ratio_to_torch` is
the median of the N per-round ratios, each round's pair of medians listed under `rounds`: this
VM's speed drifts by 10-30% over minutes, for both engines alike, so a ratio is only as good as
the closeness in time of its two halves.
"""
import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

# PyTorch's medians in ../shared/BENCHMARKS.md (CPU, 2 threads, NCHW), seconds.
PEER = {"char_lstm_step": 0.0434, "char_lstm_generate400": 0.164,
        "transformer_lm_step_b32": 0.93, "transformer_lm_step_b256": 10.16,
        "deepdream_step_204x306": 0.118, "deepdream_step_285x428": 0.226,
        "deepdream_step_400x600": 0.448, "deepdream_schedule_400x600": 23.3,
        "style_transfer_eval": 7.58, "vae_step": 0.084, "dcgan_step": 5.81,
        "matmul_2048": 0.090,
        # channels_last (NHWC in memory), what an NHWC engine should aim at
        "conv_block1_conv2_fwdbwd": 0.294, "conv_block3_conv1_fwdbwd": 0.131,
        "conv_block5_conv1_fwdbwd": 0.063}
# BENCHMARKS.md's book-scale estimates: workload median x steps.
ESTIMATES = {"char_lstm_epoch_est": ("char_lstm_step", 1565),
             "style_transfer_sgd4000_est": ("style_transfer_eval", 4000),
             "style_transfer_lbfgs20x20_est": ("style_transfer_eval", 400),
             "vae_epoch_est": ("vae_step", 547), "dcgan_epoch_est": ("dcgan_step", 6332)}
OCTAVES = [(204, 306), (285, 428), (400, 600)]
TORCH_LAYOUTS = ("nchw", "channels_last")   # the values bench/common.py's torch_layout() takes


# ---- the workloads ------------------------------------------------------------------------------
# make(quick, device) -> (step, info): one call of step() is one timed repetition.
# torch(quick, device) -> (step, info) is timed the same way; a twin marked "measures" is instead
# torch(quick, repeat) -> {"median_s": ...}: another bench script's function that times itself.

class Workload:
    def __init__(self, name, suite, make, torch=None, measures=False, reps=5, quick_reps=1,
                 warmup=1, full_only=False, torch_when_quick=True, convolutional=False):
        self.name, self.suite, self.make, self.torch = name, suite, make, torch
        self.measures, self.reps, self.quick_reps, self.warmup = measures, reps, quick_reps, warmup
        self.full_only, self.torch_when_quick = full_only, torch_when_quick
        # A convolutional workload: PyTorch runs in both layouts, and ours counts its conv FLOPs.
        self.convolutional = convolutional


def _on_device(device, array):
    from micrograd_gen import backend
    return backend.to_module(array, "cupy") if device == "gpu" else array


def char_lstm_step(quick, device):
    import bench_textgen as tg
    from micrograd_gen import nn
    from micrograd_gen.generative.char_lstm import build_char_lstm
    from micrograd_gen.optim import RMSprop
    nn.set_seed(0)
    model = build_char_lstm(tg.V)
    model.train()
    x, y = tg.lstm_batch(np.random.default_rng(0))
    if quick:
        x, y = x[:8], y[:8]
    step = tg.train_step(model, RMSprop(model.parameters(), learning_rate=0.01),
                         _on_device(device, x), y)
    return step, {"batch": len(y)}


def _char_lstm_generation(quick):
    """(char_lstm module, untrained model, vocabulary, 60-character seed, RandomState, length)."""
    import bench_textgen as tg
    from micrograd_gen import nn
    from micrograd_gen.data.text import CharVocabulary
    from micrograd_gen.generative import char_lstm
    nn.set_seed(0)
    vocab = CharVocabulary([chr(32 + i) for i in range(tg.V)])
    seed = "".join(np.random.default_rng(0).choice(vocab.chars, tg.MAXLEN))
    return (char_lstm, char_lstm.build_char_lstm(tg.V), vocab, seed, np.random.RandomState(0),
            20 if quick else 400)


def char_lstm_generate400(quick, device):
    char_lstm, model, vocab, seed, rng, length = _char_lstm_generation(quick)
    return (lambda: char_lstm.book_generate(model, vocab, seed, length, 0.5, rng),
            {"characters": length, "temperature": 0.5, "loop": "book"})


def char_lstm_generate400_carry(quick, device):
    """The engine's own generator: one LSTM state carried from character to character (issue 8's
    target: 400 characters under 40 ms). No PyTorch twin: BENCHMARKS.md times only the book loop."""
    char_lstm, model, vocab, seed, rng, length = _char_lstm_generation(quick)
    return (lambda: char_lstm.generate_text(model, vocab, seed, length, 0.5, rng, context="carry"),
            {"characters": length, "temperature": 0.5, "loop": "carry"})


def transformer_lm_step(batch):
    def make(quick, device):
        import bench_textgen as tg
        from micrograd_gen import nn
        from micrograd_gen.generative.transformer_lm import build_transformer_lm
        from micrograd_gen.optim import RMSprop
        nn.set_seed(0)
        model = build_transformer_lm()
        model.train()
        n = 4 if quick else batch
        x, y = tg.lm_batch(np.random.default_rng(0), n)
        step = tg.train_step(model, RMSprop(model.parameters(), learning_rate=1e-3),
                             _on_device(device, x), y)
        return step, {"batch": n, "params": model.count_params()}
    return make


def deepdream_step(height, width):
    def make(quick, device):
        import bench_dream_style as ds
        dreamer = ds.random_dreamer()
        image = np.random.default_rng(0).uniform(-1, 1, (1, height, width, 3)).astype(np.float32)
        image = _on_device(device, image)
        info = {"shape_nhwc": [1, height, width, 3]}
        return lambda: dreamer.gradient_ascent_step(image, 20.0), info
    return make


def torch_deepdream_step(height, width):
    def make(quick, device):
        import torch
        import bench_dream_style as ds
        from common import on_torch_device
        torch.manual_seed(0)
        # on_torch_device puts both in this child's layout: channels_last needs the weights and the
        # image in it, or PyTorch runs the NCHW kernels under that name
        net, image = on_torch_device(ds.torch_inception_to_mixed7(),
                                     torch.rand(1, 3, height, width) * 2 - 1)
        return lambda: ds.torch_dream_step(net, image), {}
    return make


def deepdream_schedule(quick, device):
    import bench_dream_style as ds
    dreamer = ds.random_dreamer()
    picture = np.random.default_rng(0).uniform(0, 255, (400, 600, 3)).astype(np.float32)
    iterations = 1 if quick else 30
    return (lambda: dreamer.run(picture, octaves=3, octave_scale=1.4, iterations=iterations,
                                max_loss=None),
            {"octaves": 3, "iterations": iterations})


def style_transfer_eval(quick, device):
    import bench_dream_style as ds
    from micrograd_gen.optim import SGD, ExponentialDecay
    from micrograd_gen.tensor import Tensor
    height, width = (100, 150) if quick else (400, 600)
    loss, combination = ds.style_loss(True, height, width)
    loss.base, loss.style = _on_device(device, loss.base), _on_device(device, loss.style)
    variable = Tensor(_on_device(device, combination))
    optimizer = SGD([variable], learning_rate=ExponentialDecay(100.0, 100, 0.96))

    def step():
        _, _, grad = loss.loss_and_grad(variable.data)
        optimizer.apply_gradients([(grad, variable)])
    return step, {"batch": 3, "shape_nhwc": [3, height, width, 3]}


def image_gen_step(name):
    def make(quick, device):
        import bench_image_gen as ig
        if quick and name == "dcgan_step":  # batch 4: a CPU step at 32 takes tens of seconds
            from micrograd_gen.generative import dcgan
            gan = dcgan.GAN(seed=0)
            real = np.random.default_rng(0).random((4, 64, 64, 3), dtype=np.float32)
            return lambda: gan.train_step(real), {"batch": 4}
        return ig.engine_step(name), {"batch": 128 if name == "vae_step" else 32}
    return make


def measured(fn):
    """A twin that another bench script times itself: the median of what it prints or returns."""
    def twin(quick, repeat):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            result = fn(repeat)
        lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
        record = result if isinstance(result, dict) else next(
            (r for r in reversed(lines) if "median_s" in r), {})
        figures = {"median_s": record.get("median_s"), "min_s": record.get("min_s"),
                   "cpu_median_s": record.get("cpu_s") or record.get("cpu_median_s")
                   or record.get("median_cpu_s"), "runs": record.get("runs")}
        if figures["min_s"] is None and figures["runs"]:
            figures["min_s"], figures["max_s"] = min(figures["runs"]), max(figures["runs"])
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in figures.items()
                if v is not None}
    return twin


def textgen_twin(name):
    def fn(repeat):
        import bench_textgen as tg
        return getattr(tg, f"torch_{name}")(repeat)
    return measured(fn)


def dream_style_twin(name):
    def fn(repeat):
        import bench_dream_style as ds
        return ds.CHILDREN[name](repeat)
    return measured(fn)


def image_gen_twin(name):
    def fn(repeat):
        import bench_image_gen as ig
        argv = sys.argv
        sys.argv = ["torch_worker", name, str(repeat), str(_threads())]
        try:
            exec(compile(ig.TORCH_WORKER, "bench_image_gen.TORCH_WORKER", "exec"), {})
        finally:
            sys.argv = argv
    return measured(fn)


def _workloads():
    import bench_ops
    out = [Workload(name, "ops", case, twin, reps=7, quick_reps=2, warmup=2,
                    convolutional=name.startswith("conv"))
           for name, (case, twin) in bench_ops.WORKLOADS.items()]
    apps = [
        Workload("char_lstm_step", "apps", char_lstm_step, textgen_twin("char_lstm_step"),
                 measures=True, reps=11, quick_reps=2, torch_when_quick=False),
        Workload("char_lstm_generate400", "apps", char_lstm_generate400,
                 textgen_twin("char_lstm_generate400_book_loop"), measures=True, reps=3,
                 torch_when_quick=False),
        Workload("char_lstm_generate400_carry", "apps", char_lstm_generate400_carry, reps=7),
        Workload("transformer_lm_step_b32", "apps", transformer_lm_step(32),
                 textgen_twin("transformer_lm_step_b32"), measures=True, reps=5,
                 torch_when_quick=False),
        Workload("transformer_lm_step_b256", "apps", transformer_lm_step(256),
                 textgen_twin("transformer_lm_step_b256"), measures=True, reps=2,
                 full_only=True),
    ]
    for i, (h, w) in enumerate(OCTAVES):
        apps.append(Workload(f"deepdream_step_{h}x{w}", "apps", deepdream_step(h, w),
                             torch_deepdream_step(h, w), reps=5, full_only=i > 0,
                             convolutional=True))
    apps += [
        Workload("deepdream_schedule_400x600", "apps", deepdream_schedule,
                 dream_style_twin("deepdream_schedule_400x600_torch"), measures=True, reps=1,
                 quick_reps=1, warmup=0, torch_when_quick=False, convolutional=True),
        Workload("style_transfer_eval", "apps", style_transfer_eval,
                 dream_style_twin("style_transfer_eval_torch"), measures=True, reps=3,
                 torch_when_quick=False, convolutional=True),
        Workload("vae_step", "apps", image_gen_step("vae_step"), image_gen_twin("vae_step"),
                 measures=True, reps=15, quick_reps=2, convolutional=True),
        Workload("dcgan_step", "apps", image_gen_step("dcgan_step"), image_gen_twin("dcgan_step"),
                 measures=True, reps=5, warmup=1, torch_when_quick=False,
                 convolutional=True),
    ]
    return {w.name: w for w in out + apps}


def cpu_step(name, quick, parser):
    """(step, info) of the workload `name` on the CPU, built as the children here build it
    (freed memory kept for reuse); an unknown name is parser's usage error, naming the known
    ones. For the scripts that time one workload their own way (ab.py, idle.py)."""
    from micrograd_gen.accel.memory import keep_freed_memory
    keep_freed_memory()
    workloads = _workloads()
    if name not in workloads:
        parser.error(f"unknown workload {name!r}; known: {', '.join(sorted(workloads))}")
    return workloads[name].make(quick, "cpu")


# ---- measuring ------------------------------------------------------------------------------------

class ConvFlopCounter:
    """Counts the direct-convolution FLOPs of every `ops.conv2d` / `ops.conv2d_transpose` call while
    installed: 2·N·OH·OW·Cin·Cout·kh·kw for the forward product (for a transposed convolution the
    input's spatial size stands in for the output's), and the same again for each gradient that
    backward will compute: the input's if it requires one, the kernel's if it does. This is what
    a direct (im2col or shifted-GEMM) convolution multiplies, so FLOP / time measures an engine
    against the machine's GEMM rate; a method that multiplies less (Winograd) can pass 100%."""

    def __init__(self):
        from micrograd_gen import ops
        self.ops, self.flop, self.calls = ops, 0.0, 0
        self.originals = {name: getattr(ops, name) for name in ("conv2d", "conv2d_transpose")}

    def _counting(self, name):
        from micrograd_gen import is_grad_enabled
        original = self.originals[name]

        def counted(x, kernel, *args, **kwargs):
            y = original(x, kernel, *args, **kwargs)
            kh, kw = kernel.shape[:2]
            if name == "conv2d":
                n, oh, ow, cout = y.shape
                cin = kernel.shape[2]
            else:
                n, oh, ow, cin = x.shape
                cout = kernel.shape[2]
            forward = 2.0 * n * oh * ow * cin * cout * kh * kw
            passes = 1
            if is_grad_enabled():
                passes += bool(getattr(x, "requires_grad", False))
                passes += bool(getattr(kernel, "requires_grad", False))
            self.flop += forward * passes
            return y
        return counted

    def __enter__(self):
        for name in self.originals:
            setattr(self.ops, name, self._counting(name))
        return self

    def __exit__(self, *exc):
        for name, original in self.originals.items():
            setattr(self.ops, name, original)
        return False


def _threads():
    env = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    return int(env) if env else os.cpu_count()


def _synchronizer(device, engine):
    if device != "gpu":
        return lambda: None
    if engine == "torch":
        import torch
        return torch.cuda.synchronize
    import cupy
    return cupy.cuda.Device().synchronize


def time_step(step, reps, warmup, sync):
    """Wall and CPU seconds of each of `reps` runs after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    sync()
    wall, cpu = [], []
    for _ in range(reps):
        sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        sync()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def summary(wall, cpu, flop=None):
    med = statistics.median(wall)
    out = {"median_s": round(med, 6), "min_s": round(min(wall), 6), "max_s": round(max(wall), 6),
           "cpu_median_s": round(statistics.median(cpu), 6), "reps": len(wall)}
    if flop:
        out["gflops"] = round(flop / med / 1e9, 2)
    return out


def _peak_device_mb(step, device, engine, sync):
    """Device memory one run needs at most: CuPy's pool after one run from an emptied pool (the
    pool keeps what it took), or torch's max_memory_allocated."""
    if engine == "torch":
        import torch
        torch.cuda.reset_peak_memory_stats()
        step()
        sync()
        return round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    import cupy
    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    step()
    sync()
    return round(pool.total_bytes() / 2 ** 20, 1)


def measure(workload, engine, device, quick, reps, in_process):
    """Build and time one workload in this process; a dict of figures (no load fields)."""
    if engine == "torch":
        import torch
        torch.set_num_threads(_threads())
    else:
        from micrograd_gen import backend
        backend.use("cupy" if device == "gpu" else "numpy")
        from common import tune_process
        tune_process()   # as the command line does (not with MICROGRAD_GEN_FAST=0)
    from common import ConvLayoutAudit, torch_layout
    audited = engine == "torch" and workload.convolutional and torch_layout() == "channels_last"
    with ConvLayoutAudit(torch) if audited else contextlib.nullcontext() as audit:
        record = _timed(workload, engine, device, quick, reps, in_process)
    if audited and audit.nchw_calls:
        raise RuntimeError(f"{workload.name}: {audit.nchw_calls} of PyTorch's {audit.calls} "
                           "convolutions ran with the input and weight in NCHW under "
                           "channels_last (the twin misses common.in_torch_layout)")
    if not in_process:
        record["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if engine == "torch":
        record["torch_version"] = torch.__version__
    return record


def _timed(workload, engine, device, quick, reps, in_process):
    """measure()'s figures of the workload's steps (or its own bench script's)."""
    if engine == "torch" and workload.measures:
        return workload.torch(quick, reps)
    counter = ConvFlopCounter() if engine == "ours" and workload.suite == "apps" \
        and workload.convolutional else contextlib.nullcontext()
    with contextlib.redirect_stdout(sys.stderr), counter:  # chatter must not mix with JSON
        build = workload.make if engine == "ours" else workload.torch
        step, info = build(quick, device)
        sync = _synchronizer(device, engine)
        wall, cpu = time_step(step, reps, workload.warmup, sync)
        if isinstance(counter, ConvFlopCounter) and counter.flop:
            info["flop"] = counter.flop / (reps + workload.warmup)
        record = dict(summary(wall, cpu, info.pop("flop", None)), warmup=workload.warmup,
                      **info)
        if device == "gpu":
            record["peak_device_mb"] = _peak_device_mb(step, device, engine, sync)
        elif in_process:
            import tracemalloc
            tracemalloc.start()
            step()
            record["peak_traced_mb"] = round(tracemalloc.get_traced_memory()[1] / 2 ** 20, 1)
            tracemalloc.stop()
    return record


def _busy_seconds():
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat (None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)           # idle + iowait
    return (sum(fields[:8]) - idle) / hz


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def with_load(fn, own_cpu):
    """fn()'s result with the load figures: load average before / after, and the CPU time the
    rest of the machine used during fn, in cores (own_cpu() counts what we used ourselves)."""
    load_before, busy, mine, start = os.getloadavg(), _busy_seconds(), own_cpu(), time.time()
    result = fn()
    wall = max(time.time() - start, 1e-9)
    after = _busy_seconds()
    if isinstance(result, dict):
        result["loadavg_before"] = [round(v, 2) for v in load_before]
        result["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
        if busy is not None and after is not None:
            others = (after - busy) - (own_cpu() - mine)
            result["other_cpu_cores"] = round(max(others, 0.0) / wall, 2)
    return result


def run_child(python, name, engine, args, threads, layout="nchw"):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), MICROGRAD_GEN_TORCH_LAYOUT=layout,
               MICROGRAD_GEN_TORCH_DEVICE="cuda" if args.device == "gpu" else "cpu")
    command = [python, str(Path(__file__).resolve()), "--child", name, "--engine", engine,
               "--device", args.device] + (["--quick"] if args.quick else [])
    if args.repeat:
        command += ["--repeat", str(args.repeat)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[-500:]}
    return json.loads(lines[-1])


def torch_layouts(workload):
    """PyTorch's layouts to time: both for a convolutional workload (users pick the faster), NCHW
    for the rest, where there is no choice to make."""
    return TORCH_LAYOUTS if workload.convolutional else ("nchw",)


def run_torch(python, name, layouts, args, threads):
    """{layout: PyTorch's figures}, one fresh child process per layout."""
    return {layout: run_child(python, name, "torch", args, threads, layout) for layout in layouts}


def fastest_layout(theirs):
    """The layout whose median is the smallest, or None when no layout was timed."""
    timed = [layout for layout, record in theirs.items() if "median_s" in record]
    return min(timed, key=lambda layout: theirs[layout]["median_s"]) if timed else None


def _more_rounds(first_ours, first_theirs, name, layouts, args, threads, torch_at):
    """Rounds 2..N of (ours, PyTorch in each layout), each in fresh processes; a round's ratio is
    ours over PyTorch's faster layout in that round, the result the median of the rounds' ratios,
    and every round's medians are kept."""
    def medians(theirs):
        return {layout: r["median_s"] for layout, r in theirs.items() if "median_s" in r}

    rounds = [(first_ours["median_s"], medians(first_theirs))]
    for _ in range(args.rounds - 1):
        ours = run_child(sys.executable, name, "ours", args, threads)
        theirs = medians(run_torch(torch_at, name, layouts, args, threads))
        if "median_s" in ours and theirs:
            rounds.append((ours["median_s"], theirs))
    ratios = sorted(a / min(b.values()) for a, b in rounds)
    middle = len(ratios) // 2
    median = ratios[middle] if len(ratios) % 2 else (ratios[middle - 1] + ratios[middle]) / 2
    return {"rounds": [{"ours_s": a, **{f"torch_{layout}_s": t for layout, t in b.items()},
                        "ratio": round(a / min(b.values()), 3)} for a, b in rounds],
            "ratio_to_torch": round(median, 3),
            "ratio_to_torch_first_round": round(rounds[0][0] / min(rounds[0][1].values()), 3)}


def torch_python(args):
    """An interpreter that can import torch, or None."""
    candidates = [args.torch_python, os.environ.get("MICROGRAD_GEN_TORCH_PYTHON"), sys.executable]
    for python in candidates:
        if not python:
            continue
        probe = subprocess.run([python, "-c", "import torch; print(torch.__version__)"],
                               capture_output=True, text=True)
        if probe.returncode == 0:
            return python
        if python == args.torch_python:
            print(f"warning: --torch-python {python} cannot import torch", file=sys.stderr)
    return None


# ---- the machine ------------------------------------------------------------------------------------

def machine(args, threads, torch_at):
    cpu_model = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next((line.split(":", 1)[1].strip() for line in f
                              if line.startswith("model name")), None)
    except OSError:
        pass
    record = {"record": "machine", "date": datetime.datetime.now().astimezone().isoformat(
        timespec="seconds"), "host": platform.node(), "cpu_model": cpu_model or platform.processor(),
        "cpu_count": os.cpu_count(), "threads": threads, "device": args.device,
        "suite": args.suite, "quick": args.quick, "python": platform.python_version(),
        "numpy": np.__version__, "loadavg": [round(v, 2) for v in os.getloadavg()],
        "torch_python": torch_at, "command": " ".join(["python", "bench/run.py"] + sys.argv[1:])}
    if args.device == "gpu":
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        record.update(gpu=props["name"].decode() if isinstance(props["name"], bytes)
                      else props["name"], cupy=cupy.__version__,
                      gpu_memory_gb=round(props["totalGlobalMem"] / 2 ** 30, 1))
    return record


def estimates(records):
    medians = {r["workload"]: r["median_s"] for r in records if "median_s" in r}
    out = {name: round(medians[w] * n, 1) for name, (w, n) in ESTIMATES.items() if w in medians}
    steps = [medians.get(f"deepdream_step_{h}x{w}") for h, w in OCTAVES]
    if all(steps):
        out["deepdream_book_schedule_est"] = round(30 * sum(steps), 2)
    return {"record": "estimates", "note": "BENCHMARKS.md's book-scale figures: median x steps",
            **out} if out else None


# ---- the Markdown table -------------------------------------------------------------------------------

def _fmt_s(v):
    if v is None:
        return ""
    return f"{v * 1e3:.1f} ms" if v < 1 else f"{v:.2f} s"


def _memory(record):
    return next((f"{record[k]:.0f} MB{' (device)' if k == 'peak_device_mb' else ''}"
                 for k in ("peak_device_mb", "peak_rss_mb", "peak_traced_mb") if k in record), "")


def markdown(paths):
    """The README's results table from one or more results.jsonl files."""
    lines = []
    for path in paths:
        records = [json.loads(line) for line in Path(path).read_text().splitlines()
                   if line.startswith("{")]
        meta = next((r for r in records if r.get("record") == "machine"), {})
        rows = [r for r in records if "workload" in r]
        loads = [r["other_cpu_cores"] for r in rows if "other_cpu_cores" in r]
        device = meta.get("gpu") if meta.get("device") == "gpu" else meta.get("cpu_model")
        lines += [f"**{meta.get('device', '?').upper()}**, {meta.get('date', '?')[:10]}: "
                  f"{device}, {meta.get('cpu_count')} cores, {meta.get('threads')} BLAS threads, "
                  f"numpy {meta.get('numpy')}; load average at the start "
                  f"{(meta.get('loadavg') or ['?'])[0]}, other processes' CPU use during the "
                  f"runs {min(loads, default=0):.1f}-{max(loads, default=0):.1f} cores"
                  + (" (quick sizes)" if meta.get("quick") else "") + ".",
                  f"`{meta.get('command', 'python bench/run.py')}`", "",
                  "| workload | median | min - max | runs | peak memory | PyTorch NCHW "
                  "| PyTorch channels_last | PyTorch peak memory | ratio to the faster (rounds) "
                  "| GFLOP/s | of the matmul rate | BENCHMARKS.md PyTorch | ratio |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
                  "| ---: | ---: |"]
        matmul = next((r.get("gflops") for r in rows if r["workload"] == "matmul_2048"), None)
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['workload']} | failed: {r['error'][:60]} |" + " |" * 11)
                continue
            torch = {layout: r.get(key) if isinstance(r.get(key), dict) else {}
                     for layout, key in (("nchw", "torch"), ("channels_last", "torch_channels_last"))}
            best = torch.get(r.get("torch_best_layout"), {})
            rounds = ", ".join(str(x["ratio"]) for x in r.get("rounds", []))
            share = (f"{100 * r['gflops'] / matmul:.0f}%" if matmul and r.get("gflops")
                     and r["workload"] != "matmul_2048" else "")
            lines.append(
                f"| {r['workload']} | {_fmt_s(r['median_s'])} | {_fmt_s(r['min_s'])} - "
                f"{_fmt_s(r['max_s'])} | {r['reps']} | {_memory(r)} | "
                f"{_fmt_s(torch['nchw'].get('median_s'))} | "
                f"{_fmt_s(torch['channels_last'].get('median_s'))} | {_memory(best)} | "
                f"{r.get('ratio_to_torch', '')}{f' ({rounds})' if rounds else ''} | "
                f"{r.get('gflops', '')} | {share} | {_fmt_s(r.get('peer_s'))} | "
                f"{r.get('ratio_to_peer', '')} |")
        est = next((r for r in records if r.get("record") == "estimates"), None)
        if est:
            lines += ["", "Book-scale estimates: " + ", ".join(
                f"{k} {_fmt_s(v)}" for k, v in est.items() if k not in ("record", "note")) + "."]
        lines.append("")
    return "\n".join(lines)


# ---- main ---------------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="bench/README.md explains every workload and every field of the output.")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--suite", choices=["ops", "apps", "all"], default="ops")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, 1-2 runs, all in this process: a smoke test for CI")
    parser.add_argument("--only", action="append", metavar="NAME[,NAME...]",
                        help="run only these workloads (see --list)")
    parser.add_argument("--repeat", type=int, help="timed runs per workload (default: each "
                                                   "workload's own, fewer with --quick)")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS/OpenMP threads for the child processes (default: "
                             "$OPENBLAS_NUM_THREADS or the number of cores)")
    parser.add_argument("--out", help="also append the JSON lines to this file")
    parser.add_argument("--torch-python", help="an interpreter that can import torch (default: "
                                               "$MICROGRAD_GEN_TORCH_PYTHON, else this one)")
    parser.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    parser.add_argument("--rounds", type=int, default=1,
                        help="time ours and PyTorch this many times each, alternating, and "
                             "give the median of the per-round ratios (this VM's speed drifts "
                             "by 10-30%% over minutes, so a ratio is fairest when both sides "
                             "ran close together; default 1)")
    parser.add_argument("--isolate", action="store_true",
                        help="with --quick, still run each workload in its own process")
    parser.add_argument("--list", action="store_true", help="print the workloads and exit")
    parser.add_argument("--markdown", nargs="+", metavar="RESULTS_JSONL",
                        help="print the Markdown results table of these files and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="ours", choices=["ours", "torch"],
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.markdown:
        print(markdown(args.markdown))
        return 0
    workloads = _workloads()
    if args.child:
        w = workloads[args.child]
        reps = args.repeat or (w.quick_reps if args.quick else w.reps)
        print(json.dumps(measure(w, args.engine, args.device, args.quick, reps, False)),
              flush=True)
        return 0
    if args.list:
        for w in workloads.values():
            print(f"{w.suite:4}  {w.name}" + ("  (not with --quick)" if w.full_only else ""))
        return 0

    names = [n for n, w in workloads.items() if args.suite in ("all", w.suite)
             and not (args.quick and w.full_only)]
    if args.only:
        names = [n for spec in args.only for n in spec.split(",") if n]
        unknown = [n for n in names if n not in workloads]
        if unknown:
            parser.error(f"unknown workload(s) {unknown}; see --list")
    if args.device == "gpu":
        from micrograd_gen import backend
        try:
            backend.cupy_module()
        except RuntimeError as e:  # say why before any workload runs
            parser.error(f"--device gpu: {e}")
    threads = args.threads or _threads()
    torch_at = None if args.no_torch else torch_python(args)
    in_process = args.quick and not args.isolate
    out = open(args.out, "a") if args.out else None

    def emit(record):
        line = json.dumps(record)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    emit(machine(args, threads, torch_at))
    records = []
    for name in names:
        w = workloads[name]
        reps = args.repeat or (w.quick_reps if args.quick else w.reps)
        if in_process:
            def ours(w=w, reps=reps):
                try:
                    return measure(w, "ours", args.device, args.quick, reps, True)
                except Exception as e:  # noqa: BLE001  one failed workload must not stop the rest
                    return {"error": f"{type(e).__name__}: {e}"[:500]}
            record = with_load(ours, time.process_time)
        else:
            record = with_load(lambda: run_child(sys.executable, name, "ours", args, threads),
                               _children_cpu)
        record = {"workload": name, "suite": w.suite, "device": args.device,
                  "quick": args.quick, "threads": threads, **record}
        if name in PEER and "median_s" in record and not args.quick and args.device == "cpu":
            record.update(peer_s=PEER[name], ratio_to_peer=round(record["median_s"] / PEER[name],
                                                                 3))
        wants_torch = w.torch is not None and (w.torch_when_quick or not args.quick)
        if wants_torch and torch_at and "median_s" in record:
            layouts = torch_layouts(w)
            theirs = {layout: with_load(lambda layout=layout: run_child(
                torch_at, name, "torch", args, threads, layout), _children_cpu)
                for layout in layouts}
            record["torch"] = theirs["nchw"]
            if "channels_last" in theirs:
                record["torch_channels_last"] = theirs["channels_last"]
            best = fastest_layout(theirs)
            if best:
                record["torch_best_layout"] = best
                record["ratio_to_torch"] = round(record["median_s"] / theirs[best]["median_s"], 3)
                if theirs[best].get("cpu_median_s"):
                    record["cpu_ratio_to_torch"] = round(
                        record["cpu_median_s"] / theirs[best]["cpu_median_s"], 3)
                if args.rounds > 1 and not in_process:
                    record.update(_more_rounds(record, theirs, name, layouts, args, threads,
                                               torch_at))
        elif wants_torch and not torch_at and not args.no_torch:
            record["torch"] = "not measured: no interpreter here can import torch"
        records.append(record)
        emit(record)
    summary_record = None if args.quick else estimates(records)
    if summary_record:
        emit(summary_record)
    if out:
        out.close()
    return 1 if any("error" in r for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
