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
    waiting for a core that another process holds, the CPU time much less so. A PyTorch twin on
    CUDA queues its kernels, so the device is synchronised before every clock read."""
    sync = torch_synchronizer()
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeat):
        sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def median_ms(fn, reps, warmup=2):
    """The median wall time of `reps` calls of fn(), in milliseconds (two decimals)."""
    import statistics
    return round(statistics.median(time_runs(fn, reps, warmup)[0]) * 1e3, 2)


def per_layer_times(script, doc, ours, torch_twin, reps, argv=None):
    """The command line of a per-layer script (dream_layers.py, vae_layers.py): (ours(reps),
    torch_twin(reps, threads) or {}), the second from a child process under --torch-python (of
    its own, so that PyTorch's OpenMP threads never meet our workers), with the same thread
    count; None in that child, once it has printed its JSON."""
    import argparse
    import subprocess
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--torch-python", help="an interpreter that can import torch")
    parser.add_argument("--reps", type=int, default=reps)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--torch-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reps < 1 or args.threads < 1:
        parser.error("--reps and --threads must be at least 1")
    if args.torch_child:
        print(json.dumps(torch_twin(args.reps, args.threads)))
        return None
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    mine = ours(args.reps)
    if not args.torch_python:
        return mine, {}
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    done = subprocess.run([args.torch_python, os.path.abspath(script), "--torch-child", "--reps",
                           str(args.reps), "--threads", str(args.threads)],
                          capture_output=True, text=True, env=env, check=True)
    return mine, json.loads(done.stdout.strip().splitlines()[-1])


# ---- PyTorch's device -----------------------------------------------------------------------------
# run.py --device gpu sets MICROGRAD_GEN_TORCH_DEVICE=cuda for the PyTorch twins' child processes.

def torch_device():
    return os.environ.get("MICROGRAD_GEN_TORCH_DEVICE", "cpu")


def torch_synchronizer():
    if torch_device() != "cuda":
        return lambda: None
    import torch
    return torch.cuda.synchronize


def on_torch_device(*modules_or_tensors):
    """The modules and tensors on this process's PyTorch device, in its layout."""
    moved = [item.to(torch_device()) for item in modules_or_tensors]
    return in_torch_layout(*moved)


# ---- PyTorch's memory layout ----------------------------------------------------------------------
# PyTorch's CPU convolutions are often faster in channels_last (NHWC in memory) than in its default
# NCHW, and a user picks the faster one, so every conv twin runs in both and run.py compares with
# the faster. run.py says which through this variable, one child process per layout.
TORCH_LAYOUTS = ("nchw", "channels_last")


def torch_layout():
    layout = os.environ.get("MICROGRAD_GEN_TORCH_LAYOUT", "nchw")
    if layout not in TORCH_LAYOUTS:
        raise ValueError(f"MICROGRAD_GEN_TORCH_LAYOUT={layout!r}: expected one of {TORCH_LAYOUTS}")
    return layout


def in_torch_layout(*modules_or_tensors):
    """The modules and 4-d tensors in this process's PyTorch layout (unchanged for 'nchw')."""
    if torch_layout() == "nchw":
        return modules_or_tensors if len(modules_or_tensors) > 1 else modules_or_tensors[0]
    import torch
    out = []
    for item in modules_or_tensors:
        if isinstance(item, torch.nn.Module):
            out.append(item.to(memory_format=torch.channels_last))
        elif item.dim() == 4:
            out.append(item.contiguous(memory_format=torch.channels_last))
        else:
            out.append(item)
    return tuple(out) if len(out) > 1 else out[0]


def tune_process():
    """What the command line does before a run: keep freed host memory for reuse
    (micrograd_gen.accel.keep_freed_memory). Not with MICROGRAD_GEN_FAST=0, which measures the
    reference ops alone and never imports accel."""
    from micrograd_gen import fastpath
    if fastpath.enabled():
        from micrograd_gen import accel
        accel.keep_freed_memory()


class ConvLayoutAudit:
    """Counts the PyTorch convolutions a twin runs with neither the input nor the weight in
    channels_last. PyTorch picks its channels_last kernels only when one of them is in that
    layout, so a twin that forgets in_torch_layout runs NCHW under the channels_last name; a
    single such call makes that column a different benchmark, and run.py refuses it.

    Wraps torch.nn.functional.conv2d and conv_transpose2d (what nn.Conv2d and nn.ConvTranspose2d
    call) while in use; a couple of microseconds per call."""
    names = ("conv2d", "conv_transpose2d")

    def __init__(self, torch_module):
        self.torch, self.nchw_calls, self.calls, self.originals = torch_module, 0, 0, {}

    def __enter__(self):
        functional = self.torch.nn.functional
        cl = self.torch.channels_last
        for name in self.names:
            original = self.originals[name] = getattr(functional, name)

            def counted(input, weight, *args, _original=original, **kwargs):
                self.calls += 1
                if not (input.is_contiguous(memory_format=cl)
                        or weight.is_contiguous(memory_format=cl)):
                    self.nchw_calls += 1
                return _original(input, weight, *args, **kwargs)
            setattr(functional, name, counted)
        return self

    def __exit__(self, *exc):
        for name, original in self.originals.items():
            setattr(self.torch.nn.functional, name, original)
