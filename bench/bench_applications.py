"""Benchmarks for the pretrained models (issue 4), as JSON lines.

  load_<model>              io.load_weights of each Keras file into a built model (target < 2 s)
  deepdream_step_<HxW>      InceptionV3 forward to mixed7 + the book's DeepDream loss + backward to
                            the image + the normalised ascent step (target 0.45 s at 400x600, x1.2)
  style_transfer_eval       VGG19 forward to block5_conv2 on a batch of 3 images of 400x600 + the
                            book's style-transfer loss + backward to the combination image + the
                            SGD step (target 7.6 s, x1.2), with the process's peak RSS
  accuracy                  worst error against the Keras references in ../shared/data/reference,
                            relative to each array's largest value, float32 and float64
  profile_deepdream, profile_style_transfer (with --profile)
                            one step with every conv2d timed: where the time goes, GFLOP/s per
                            layer geometry

Workloads are defined in ../shared/BENCHMARKS.md. Each one runs in a fresh process (so its peak RSS
is its own), after a warm-up, and reports the median of --repeat runs timed with perf_counter
around the whole step. Weights are random and frozen for the timings (time does not depend on the
values); the load and accuracy lines need the real files: $MICROGRAD_GEN_WEIGHTS, else they are
made with ../shared/tools/make_weights_h5.py into a temporary folder.

  OPENBLAS_NUM_THREADS=2 python bench/bench_applications.py            # everything
  OPENBLAS_NUM_THREADS=2 python bench/bench_applications.py --torch-python /path/to/python-with-torch
  python bench/bench_applications.py --only deepdream_step_400x600 --repeat 5

With --torch-python (an interpreter that has PyTorch; never required), each timed workload is also
run in PyTorch right after ours, on the same graph and weights (NCHW), and the ratio is printed:
on a shared machine a ratio taken in one run means more than an absolute time.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import emit, peak_rss_mb, threads, time_runs, tune_process

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
VGG_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
INCEPTION_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
OCTAVES = [(204, 306), (285, 428), (400, 600)]
TARGETS = {"load_vgg19": 2.0, "load_inception_v3": 2.0, "deepdream_step_400x600": 0.45 * 1.2,
           "style_transfer_eval": 7.6 * 1.2}
DREAM_LAYERS = {"mixed4": 1.0, "mixed5": 1.5, "mixed6": 2.0, "mixed7": 2.5}
STYLE_LAYERS = ["block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"]


def other_load():
    """1-minute load average minus this benchmark's own busy core(s), as a hint of noise."""
    return round(os.getloadavg()[0], 2)


_cpu_times = []


def timed(fn, repeat, warmup=1):
    """Wall times of `repeat` calls after `warmup`; their CPU times (all threads) go to _cpu_times:
    on a busy shared machine CPU seconds move much less than wall seconds."""
    times, cpu = time_runs(fn, repeat, warmup)
    _cpu_times[:] = cpu
    return times


def report(name, times, **extra):
    median = statistics.median(times)
    target = TARGETS.get(name)
    emit(bench=name, median_s=round(median, 4), min_s=round(min(times), 4),
         runs=[round(t, 4) for t in times],
         cpu_s_median=round(statistics.median(_cpu_times), 4) if _cpu_times else None,
         threads=threads(),
         **({"target_s": target, "within_target": median <= target} if target else {}),
         peak_rss_mb=peak_rss_mb(), loadavg_1min=other_load(), **extra)


def weight_dir():
    env = os.environ.get("MICROGRAD_GEN_WEIGHTS")
    if env and all((Path(env) / f).is_file() for f in (VGG_FILE, INCEPTION_FILE)):
        return Path(env)
    tool = SHARED / "tools" / "make_weights_h5.py"
    if not tool.is_file():
        return None
    out = Path(tempfile.gettempdir()) / "micrograd_gen_bench_weights"
    subprocess.run([sys.executable, str(tool), str(out)], check=True, capture_output=True)
    return out


# ---- workloads (each runs in its own process) ---------------------------------------------------

def bench_load(model_name, repeat):
    from micrograd_gen import applications, io
    folder = weight_dir()
    if folder is None:
        emit(bench=f"load_{model_name}", skipped="no weight files ($MICROGRAD_GEN_WEIGHTS or "
                                                 "../shared/tools/make_weights_h5.py)")
        return
    build, file = {"vgg19": (applications.VGG19, VGG_FILE),
                   "inception_v3": (applications.InceptionV3, INCEPTION_FILE)}[model_name]
    model = build(weights=None)
    path = folder / file
    times = timed(lambda: io.load_weights(model, path), repeat)
    whole = timed(lambda: build(weights=str(path)), max(1, repeat // 2), warmup=0)
    report(f"load_{model_name}", times, file_mb=round(path.stat().st_size / 1e6, 1),
           constructor_with_weights_s=round(statistics.median(whole), 4))


def dream_step(extractor, image):
    import micrograd_gen as mg
    from micrograd_gen import ops
    x = mg.Tensor(image, requires_grad=True)
    acts = extractor(x)
    loss = None
    for name, coeff in DREAM_LAYERS.items():
        a = acts[name][:, 2:-2, 2:-2, :]
        term = coeff * ops.mean(a * a)
        loss = term if loss is None else loss + term
    loss.backward()
    grads = x.grad
    grads = grads / max(float((grads * grads).sum()) ** 0.5, 1e-6)
    return image + 20.0 * grads


def bench_deepdream(height, width, repeat):
    import numpy as np
    from micrograd_gen import applications
    model = applications.InceptionV3(weights=None)
    model.trainable = False  # as pretrained: no weight gradients
    extractor = applications.feature_extractor(model, DREAM_LAYERS)
    image = np.random.default_rng(0).uniform(-1, 1, (1, height, width, 3)).astype(np.float32)
    times = timed(lambda: dream_step(extractor, image), repeat)
    report(f"deepdream_step_{height}x{width}", times, layers_run=len(extractor.layers_run))


def style_loss_and_grad(extractor, base, style, combination, height, width):
    import micrograd_gen as mg
    from micrograd_gen import ops
    comb = mg.Tensor(combination, requires_grad=True)
    x = ops.concatenate([mg.Tensor(base), mg.Tensor(style), comb], axis=0)
    feats = extractor(x)
    f = feats["block5_conv2"]
    diff = f[2] - f[0]
    loss = 2.5e-8 * ops.sum(diff * diff)
    size = height * width
    for name in STYLE_LAYERS:
        f = feats[name]
        channels = f.shape[-1]
        s = ops.reshape(f[1], (-1, channels))
        c = ops.reshape(f[2], (-1, channels))
        d = ops.matmul(ops.transpose(s), s) - ops.matmul(ops.transpose(c), c)  # Gram, (C, C)
        loss = loss + (1e-6 / len(STYLE_LAYERS)) * ops.sum(d * d) / (4.0 * 9 * size ** 2)
    a = comb[:, :-1, :-1, :] - comb[:, 1:, :-1, :]
    b = comb[:, :-1, :-1, :] - comb[:, :-1, 1:, :]
    loss = loss + 1e-6 * ops.sum((a * a + b * b) ** 1.25)
    loss.backward()
    return loss, comb.grad


def bench_style_transfer(height, width, repeat):
    import numpy as np
    from micrograd_gen import applications
    model = applications.VGG19(weights=None)
    model.trainable = False
    extractor = applications.feature_extractor(model, STYLE_LAYERS + ["block5_conv2"])
    rng = np.random.default_rng(0)
    mean = np.array([103.939, 116.779, 123.68], np.float32)
    base, style, combination = (rng.uniform(0, 255, (1, height, width, 3)).astype(np.float32) - mean
                                for _ in range(3))
    state = {"image": combination, "step": 0}

    def step():
        _, grad = style_loss_and_grad(extractor, base, style, state["image"], height, width)
        lr = 100.0 * 0.96 ** (state["step"] / 100)  # ExponentialDecay(100, 100, 0.96)
        state["image"] = state["image"] - lr * grad
        state["step"] += 1

    times = timed(step, repeat)
    report("style_transfer_eval" + ("" if (height, width) == (400, 600) else f"_{height}x{width}"),
           times, batch=3, layers_run=len(extractor.layers_run))


def bench_accuracy():
    import numpy as np
    import micrograd_gen as mg
    from micrograd_gen import applications
    folder = weight_dir()
    data = Path(os.environ.get("MICROGRAD_GEN_DATA") or SHARED / "data")
    if folder is None or not (data / "reference").is_dir():
        emit(bench="accuracy", skipped="needs the weight files and ../shared/data/reference")
        return

    def worst(got, want):
        got = got.numpy() if isinstance(got, mg.Tensor) else np.asarray(got)
        return float(np.max(np.abs(got.astype(np.float64) - want)) / np.max(np.abs(want)))

    ref = dict(np.load(data / "reference" / "keras_vgg19_tubingen.npz"))
    names = [k[4:] for k in ref if k.startswith("act/")]
    for dtype in ("float32", "float64"):
        model = applications.VGG19(weights=str(folder / VGG_FILE), dtype=dtype)
        with mg.no_grad():
            out = applications.feature_extractor(model, names)(ref["input"].astype(dtype))
        for n in names:
            emit(bench="accuracy", model="vgg19", dtype=dtype, array=f"act/{n}",
                 worst_rel_error=worst(out[n], ref[f"act/{n}"]))

    ref = dict(np.load(data / "reference" / "keras_inception_v3_chelsea.npz"))
    names = [f"mixed{i}" for i in range(11)]
    results = {}
    for dtype in ("float32", "float64"):
        model = applications.InceptionV3(weights=str(folder / INCEPTION_FILE), dtype=dtype)
        with mg.no_grad():
            out = applications.feature_extractor(model, names)(ref["input"].astype(dtype))
        for n in names:
            emit(bench="accuracy", model="inception_v3", dtype=dtype, array=f"act/{n}",
                 worst_rel_error=worst(out[n], ref[f"act/{n}"]))
        for kink in (False, True):
            # kink=True: the input of activation_19 at (0, 11, 10, 2), +2.6e-7 in exact arithmetic,
            # put below zero as Keras's float32 run had it (tests/test_applications.py explains).
            # Swapping the layer's activation function also keeps it out of the fused
            # conv2d(..., relu=True) that a frozen model otherwise runs it in.
            layer = model.get_layer("activation_19")
            original = layer.activation
            if kink:
                def shifted(x, _original=original):
                    delta = np.zeros(x.shape, x.dtype)
                    delta[0, 11, 10, 2] = -1e-3
                    return _original(x + delta)
                layer.activation = shifted
            x = mg.Tensor(ref["input"], requires_grad=True, dtype=dtype)
            acts = applications.feature_extractor(model, DREAM_LAYERS)(x)
            layer.activation = original
            terms = []
            for name, coeff in DREAM_LAYERS.items():
                a = acts[name][:, 2:-2, 2:-2, :]
                terms.append(coeff * mg.ops.mean(a * a))
            loss = terms[0] + terms[1] + terms[2] + terms[3]
            loss.backward()
            note = " (activation_19[0,11,10,2] <= 0 as in Keras)" if kink else ""
            results[dtype, kink] = x.grad
            emit(bench="accuracy", model="inception_v3", dtype=dtype, array="deepdream/loss" + note,
                 worst_rel_error=worst(loss, ref["deepdream/loss"]))
            emit(bench="accuracy", model="inception_v3", dtype=dtype,
                 array="deepdream/terms" + note,
                 worst_rel_error=worst(np.array([t.item() for t in terms]),
                                       ref["deepdream/terms"]))
            emit(bench="accuracy", model="inception_v3", dtype=dtype, array="deepdream/grad" + note,
                 worst_rel_error=worst(x.grad, ref["deepdream/grad"]))
    for kink in (False, True):
        emit(bench="accuracy", model="inception_v3", dtype="float32 vs float64",
             array="deepdream/grad" + (" (kink shifted in both)" if kink else ""),
             worst_rel_error=worst(results["float32", kink], results["float64", kink]))


def conv_profile(label, fn):
    """Run fn() once with every conv2d forward and backward timed, and print the geometries that
    take the most time, with their GFLOP/s, next to the whole step's time."""
    from collections import defaultdict
    from micrograd_gen.ops import conv
    stats = defaultdict(lambda: [0.0, 0.0, 0.0, 0])  # key -> fwd s, bwd s, fwd flop, count
    forward, backward = conv.Conv2D.forward, conv.Conv2D.backward

    def timed_forward(self, x, kernel, *args, **kwargs):
        start = time.perf_counter()
        y = forward(self, x, kernel, *args, **kwargs)
        self._bench_key = (tuple(x.shape), tuple(kernel.shape), tuple(y.shape))
        entry = stats[self._bench_key]
        entry[0] += time.perf_counter() - start
        entry[2] += 2.0 * y.size * kernel.shape[0] * kernel.shape[1] * kernel.shape[2]
        entry[3] += 1
        return y

    def timed_backward(self, *grads):
        key = self._bench_key
        start = time.perf_counter()
        out = backward(self, *grads)
        stats[key][1] += time.perf_counter() - start
        return out

    conv.Conv2D.forward, conv.Conv2D.backward = timed_forward, timed_backward
    try:
        start = time.perf_counter()
        fn()
        total = time.perf_counter() - start
    finally:
        conv.Conv2D.forward, conv.Conv2D.backward = forward, backward
    fwd = sum(v[0] for v in stats.values())
    bwd = sum(v[1] for v in stats.values())
    flop = sum(v[2] for v in stats.values())
    emit(bench=f"profile_{label}", step_s=round(total, 3), conv_forward_s=round(fwd, 3),
         conv_backward_s=round(bwd, 3), other_s=round(total - fwd - bwd, 3),
         conv_forward_gflop=round(flop / 1e9, 2),
         conv_forward_gflops=round(flop / 1e9 / max(fwd, 1e-9), 1),
         conv_backward_input_gflops=round(flop / 1e9 / max(bwd, 1e-9), 1), threads=threads(),
         loadavg_1min=other_load())
    for key, (f, b, fl, n) in sorted(stats.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:12]:
        emit(bench=f"profile_{label}_conv", x=key[0], kernel=key[1], y=key[2], calls=n,
             forward_s=round(f, 4), backward_s=round(b, 4), gflop=round(fl / 1e9, 3),
             forward_gflops=round(fl / 1e9 / max(f, 1e-9), 1),
             backward_gflops=round(fl / 1e9 / max(b, 1e-9), 1))


def bench_profile(name):
    import numpy as np
    from micrograd_gen import applications
    if name == "profile_deepdream":
        model = applications.InceptionV3(weights=None)
        model.trainable = False
        extractor = applications.feature_extractor(model, DREAM_LAYERS)
        image = np.random.default_rng(0).uniform(-1, 1, (1, 400, 600, 3)).astype(np.float32)
        dream_step(extractor, image)  # warm-up
        conv_profile("deepdream_step_400x600", lambda: dream_step(extractor, image))
    else:
        model = applications.VGG19(weights=None)
        model.trainable = False
        extractor = applications.feature_extractor(model, STYLE_LAYERS + ["block5_conv2"])
        rng = np.random.default_rng(0)
        images = [rng.uniform(-120, 130, (1, 400, 600, 3)).astype(np.float32) for _ in range(3)]
        conv_profile("style_transfer_eval",
                     lambda: style_loss_and_grad(extractor, *images, 400, 600))


# ---- the same work in PyTorch, when some interpreter has it (for ratios taken in one run) ---------

def torch_graph(model, names):
    """A function (NCHW torch tensor) -> {name: tensor} that runs `model`'s graph with torch ops
    on its weights (NCHW, as BENCHMARKS.md's peer figures), only as far as `names` need."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    ops_by_name = {}
    for name in model.ancestors(names):
        layer, kind = model.get_layer(name), type(model.get_layer(name)).__name__
        if kind == "Conv2D":
            kh, kw = layer.kernel_size
            same = layer.padding == "same"
            assert not same or (layer.strides == (1, 1) and kh % 2 and kw % 2)  # symmetric pad
            w = torch.from_numpy(np.ascontiguousarray(layer.kernel.numpy().transpose(3, 2, 0, 1)))
            b = None if layer.bias is None else torch.from_numpy(layer.bias.numpy())
            relu = layer.activation.__name__ == "relu"
            ops_by_name[name] = (lambda x, w=w, b=b, s=layer.strides, p=(kh // 2, kw // 2) if same
                                 else (0, 0), relu=relu:
                                 (F.relu if relu else (lambda t: t))(F.conv2d(x, w, b, s, p)))
        elif kind == "BatchNormalization":
            beta, mean, var = (torch.from_numpy(a).view(1, -1, 1, 1) for a in layer.get_weights())
            inv = 1.0 / torch.sqrt(var + layer.epsilon)
            ops_by_name[name] = lambda x, m=mean, i=inv, b=beta: (x - m) * i + b
        elif kind == "Activation":
            ops_by_name[name] = F.relu
        elif kind == "MaxPooling2D":
            assert layer.padding == "valid"
            ops_by_name[name] = lambda x, k=layer.pool_size, s=layer.strides: F.max_pool2d(x, k, s)
        elif kind == "AveragePooling2D":
            assert layer.padding == "same" and layer.strides == (1, 1)
            ops_by_name[name] = lambda x, k=layer.pool_size: F.avg_pool2d(
                x, k, 1, (k[0] // 2, k[1] // 2), count_include_pad=False)
        elif kind == "Concatenate":
            ops_by_name[name] = lambda xs: torch.cat(xs, dim=1)
        else:
            ops_by_name[name] = lambda x: x
    order = model.ancestors(names)

    def run(x):
        values = {}
        for name in order:
            parents = model._parents[name]
            inputs = (x if not parents else values[parents[0]] if len(parents) == 1
                      else [values[p] for p in parents])
            values[name] = ops_by_name[name](inputs)
        return {n: values[n] for n in names}
    return run


def bench_torch(name, repeat):
    import numpy as np
    import torch
    torch.set_num_threads(threads())
    from micrograd_gen import applications
    rng = np.random.default_rng(0)
    if name.startswith("torch_deepdream_step_"):
        h, w = map(int, name.rsplit("_", 1)[1].split("x"))
        run = torch_graph(applications.InceptionV3(weights=None), list(DREAM_LAYERS))
        image = torch.from_numpy(rng.uniform(-1, 1, (1, 3, h, w)).astype(np.float32))

        def step():
            x = image.clone().requires_grad_(True)
            acts = run(x)
            loss = sum(c * acts[n][:, :, 2:-2, 2:-2].square().mean() for n, c in DREAM_LAYERS.items())
            grads, = torch.autograd.grad(loss, x)
            grads = grads / torch.clamp(grads.square().sum().sqrt(), min=1e-6)
            return image + 20.0 * grads
    else:
        h, w = 400, 600
        run = torch_graph(applications.VGG19(weights=None), STYLE_LAYERS + ["block5_conv2"])
        mean = np.array([103.939, 116.779, 123.68], np.float32).reshape(1, 3, 1, 1)
        base, style, comb0 = (torch.from_numpy(rng.uniform(0, 255, (1, 3, h, w)).astype(np.float32)
                                               - mean) for _ in range(3))

        def step():
            comb = comb0.clone().requires_grad_(True)
            feats = run(torch.cat([base, style, comb]))
            f = feats["block5_conv2"]
            loss = 2.5e-8 * (f[2] - f[0]).square().sum()
            for n in STYLE_LAYERS:
                f = feats[n]
                s, c = f[1].flatten(1), f[2].flatten(1)
                loss = loss + 1e-6 / 5 * (s @ s.T - c @ c.T).square().sum() / (4.0 * 9 * (h * w) ** 2)
            a = comb[:, :, :-1, :-1] - comb[:, :, 1:, :-1]
            b = comb[:, :, :-1, :-1] - comb[:, :, :-1, 1:]
            loss = loss + 1e-6 * (a.square() + b.square()).pow(1.25).sum()
            grads, = torch.autograd.grad(loss, comb)
            return comb0 - 100.0 * grads
    times = timed(step, repeat)
    report(name, times, torch=torch.__version__, layout="NCHW")


# ---- driver ---------------------------------------------------------------------------------------

def workloads(args):
    names = ["load_vgg19", "load_inception_v3"]
    names += [f"deepdream_step_{h}x{w}" for h, w in (OCTAVES if args.all_octaves else OCTAVES[-1:])]
    names += ["style_transfer_eval", "accuracy"]
    if args.profile:
        names += ["profile_deepdream", "profile_style_transfer"]
    return names


def run_one(name, args):
    if not name.startswith("torch_"):
        tune_process()
    if name.startswith("load_"):
        bench_load(name[5:], args.repeat or 5)
    elif name.startswith("deepdream_step_"):
        h, w = map(int, name.rsplit("_", 1)[1].split("x"))
        bench_deepdream(h, w, args.repeat or 5)
    elif name.startswith("style_transfer_eval"):
        h, w = (400, 600) if name == "style_transfer_eval" else map(int, name.rsplit("_", 1)[1].split("x"))
        bench_style_transfer(h, w, args.repeat or 3)
    elif name == "accuracy":
        bench_accuracy()
    elif name in ("profile_deepdream", "profile_style_transfer"):
        bench_profile(name)
    elif name.startswith("torch_"):
        bench_torch(name, args.repeat or (5 if "deepdream" in name else 3))
    else:
        raise SystemExit(f"unknown workload {name!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="run one workload in this process (names: see the docstring; "
                                       "style_transfer_eval_HxW and deepdream_step_HxW take any size)")
    parser.add_argument("--repeat", type=int, help="timed runs after the warm-up")
    parser.add_argument("--all-octaves", action="store_true",
                        help="also time the DeepDream step at 204x306 and 285x428")
    parser.add_argument("--torch-python", default=sys.executable,
                        help="an interpreter with PyTorch: each timed workload is then also run "
                             "in PyTorch (same graph and weights, NCHW) right after ours, and the "
                             "ratio printed; skipped when that interpreter has no torch")
    parser.add_argument("--profile", action="store_true",
                        help="also time every conv2d of one DeepDream step and one style-transfer "
                             "evaluation, to show where the time goes")
    args = parser.parse_args()
    if args.only:
        run_one(args.only, args)
        return
    import numpy
    probe = subprocess.run([args.torch_python, "-c", "import torch; print(torch.__version__)"],
                           capture_output=True, text=True)
    torch_version = probe.stdout.strip() if probe.returncode == 0 else None
    emit(bench="meta", python=platform.python_version(), numpy=numpy.__version__,
         cpu_count=os.cpu_count(), threads=threads(), loadavg_1min=other_load(),
         torch=torch_version or f"not installed for {args.torch_python}: peer figures are those "
                                "of ../shared/BENCHMARKS.md")

    def child(python, name):
        cmd = [python, __file__, "--only", name] + (["--repeat", str(args.repeat)]
                                                   if args.repeat else [])
        result = subprocess.run(cmd, capture_output=True, text=True)
        sys.stdout.write(result.stdout)
        if result.returncode:
            emit(bench=name, error=result.stderr.strip().splitlines()[-1:])
            return None
        lines = [json.loads(l) for l in result.stdout.splitlines() if l.startswith("{")]
        return lines[-1] if lines else None

    for name in workloads(args):
        ours = child(sys.executable, name)
        timed_workload = name.startswith(("deepdream_step_", "style_transfer_eval"))
        if torch_version and timed_workload and ours and "median_s" in ours:
            peer = child(args.torch_python, "torch_" + name)
            if peer and "median_s" in peer:
                emit(bench=name + "_vs_torch", ratio=round(ours["median_s"] / peer["median_s"], 2),
                     ours_s=ours["median_s"], torch_s=peer["median_s"], target_ratio=1.2)


if __name__ == "__main__":
    main()
