"""Benchmarks of DeepDream and neural style transfer through the package's own API (issue 7), as
JSON lines. Workloads as ../shared/BENCHMARKS.md sections 3 and 4 define them:

  deepdream_step_<HxW>          DeepDream.gradient_ascent_step at each octave size of a 400x600
                                picture: InceptionV3 to mixed7, the book's loss, backward to the
                                image, image += 20 * l2_normalize(grad)
  deepdream_schedule_400x600    deep_dream's whole loop: 3 octaves x 30 steps with the resizes and
                                the lost-detail re-injection (max_loss off, as the peer's run), no
                                warm-up, one run (target 23 s x 1.2)
  style_transfer_eval           the book's workload: base, style and combination as one batch of 3
                                at 400x600 through VGG19 to block5_conv2, loss, backward to the
                                combination, SGD(ExponentialDecay(100, 100, 0.96)) step
                                (target 7.6 s x 1.2)
  style_transfer_eval_cached    the same loss and gradient as the package runs it by default: the
                                base's and style's targets computed once, only the combination runs
  *_torch (with --torch)        the same workloads in PyTorch (CPU, NCHW, random weights), if it is
                                installed, with the ratio ours / torch

Each workload runs in a fresh process (so peak RSS, from getrusage, is its own) with
OPENBLAS_NUM_THREADS (default 2) set before NumPy loads, after one warm-up, and reports the
median of --repeat runs timed with perf_counter around the whole call. Weights are random and
frozen (timing does not depend on the values). Machines here are shared: each line carries the
1-minute load average at its end.

  python bench/bench_dream_style.py                       # everything but torch
  python bench/bench_dream_style.py --torch --torch-python /tmp/bench-venv/bin/python --repeat 5
  python bench/bench_dream_style.py --only deepdream_step_400x600 --profile
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import emit, in_torch_layout, on_torch_device, peak_rss_mb, threads, time_runs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OCTAVES = [(204, 306), (285, 428), (400, 600)]
TARGETS = {"deepdream_schedule_400x600": 23.3 * 1.2, "style_transfer_eval": 7.58 * 1.2,
           "deepdream_step_204x306": 0.118 * 1.2, "deepdream_step_285x428": 0.226 * 1.2,
           "deepdream_step_400x600": 0.448 * 1.2}
WORKLOADS = ([f"deepdream_step_{h}x{w}" for h, w in OCTAVES]
             + ["deepdream_schedule_400x600", "style_transfer_eval", "style_transfer_eval_cached"])


def timed(fn, repeat, warmup=1):
    """Wall seconds of each run; the CPU seconds (all threads) go to CPU_TIMES beside them."""
    times, cpu = time_runs(fn, repeat, warmup)
    CPU_TIMES[:] = cpu
    return times


CPU_TIMES = []


def report(name, times, **extra):
    median = statistics.median(times)
    target = TARGETS.get(name)
    # On a shared machine wall time moves with the others' load; CPU time (summed over this
    # process's threads) much less, so both are given.
    emit(bench=name, median_s=round(median, 4), runs=[round(t, 4) for t in times],
         cpu_median_s=round(statistics.median(CPU_TIMES), 4) if CPU_TIMES else None,
         threads=threads(), peak_rss_mb=peak_rss_mb(),
         **({"target_s": round(target, 3), "within_target": median <= target} if target else {}),
         loadavg_1min=round(os.getloadavg()[0], 2), **extra)
    return median


# ---- ours ---------------------------------------------------------------------------------------

def random_dreamer():
    from micrograd_gen import applications
    from micrograd_gen.generative.deepdream import DeepDream
    model = applications.InceptionV3(weights=None)
    model.trainable = False  # as pretrained weights are: no weight gradients
    return DeepDream(model)


def bench_deepdream_step(height, width, repeat):
    import numpy as np
    dreamer = random_dreamer()
    image = np.random.default_rng(0).uniform(-1, 1, (1, height, width, 3)).astype(np.float32)
    return report(f"deepdream_step_{height}x{width}",
                  timed(lambda: dreamer.gradient_ascent_step(image, 20.0), repeat))


def bench_deepdream_schedule(repeat):
    import numpy as np
    dreamer = random_dreamer()
    picture = np.random.default_rng(0).uniform(0, 255, (400, 600, 3)).astype(np.float32)
    steps = []
    times = timed(lambda: dreamer.run(picture, octaves=3, octave_scale=1.4, iterations=30,
                                      max_loss=None, callback=lambda s: steps.append(s.seconds)),
                  repeat=1, warmup=0)
    return report("deepdream_schedule_400x600", times, steps=len(steps),
                  sum_of_step_times_s=round(sum(steps), 3))


def style_loss(batch3, height=400, width=600):
    import numpy as np
    from micrograd_gen import applications
    from micrograd_gen.generative.style_transfer import StyleTransferLoss
    model = applications.VGG19(weights=None)
    model.trainable = False
    rng = np.random.default_rng(0)
    mean = np.array([103.939, 116.779, 123.68], np.float32)
    base, style, comb = (rng.uniform(0, 255, (1, height, width, 3)).astype(np.float32) - mean
                         for _ in range(3))
    return StyleTransferLoss(base, style, model=model, batch3=batch3), comb


def bench_style_transfer(batch3, repeat):
    from micrograd_gen.optim import SGD, ExponentialDecay
    from micrograd_gen.tensor import Tensor
    loss, comb = style_loss(batch3)
    variable = Tensor(comb)
    opt = SGD([variable], learning_rate=ExponentialDecay(100.0, 100, 0.96))

    def step():
        _, _, grad = loss.loss_and_grad(variable.data)
        opt.apply_gradients([(grad, variable)])

    name = "style_transfer_eval" + ("" if batch3 else "_cached")
    return report(name, timed(step, repeat), batch=3 if batch3 else 1,
                  layers_run=len(loss.features.layers_run))


def profile(name):
    """cProfile of a workload's warm-up and one timed run: which functions take the time."""
    import cProfile
    import io
    import pstats
    prof = cProfile.Profile()
    prof.enable()
    CHILDREN[name](1)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
    print(out.getvalue(), file=sys.stderr)


# ---- PyTorch, for comparison only (never required) -----------------------------------------------

def torch_inception_to_mixed7():
    """keras.applications.InceptionV3 up to mixed7 in torch.nn (BENCHMARKS.md section 3)."""
    import torch
    from torch import nn
    F = torch.nn.functional

    def conv_bn(cin, cout, kh, kw, stride=1, same=True):
        pad = (kh // 2, kw // 2) if same else 0
        return nn.Sequential(nn.Conv2d(cin, cout, (kh, kw), stride, pad, bias=False),
                             nn.BatchNorm2d(cout, eps=1e-3), nn.ReLU())

    def avg(x):
        return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)

    class A(nn.Module):
        def __init__(self, c, pool):
            super().__init__()
            self.b1 = conv_bn(c, 64, 1, 1)
            self.b5 = nn.Sequential(conv_bn(c, 48, 1, 1), conv_bn(48, 64, 5, 5))
            self.b3 = nn.Sequential(conv_bn(c, 64, 1, 1), conv_bn(64, 96, 3, 3), conv_bn(96, 96, 3, 3))
            self.bp = conv_bn(c, pool, 1, 1)

        def forward(self, x):
            return torch.cat([self.b1(x), self.b5(x), self.b3(x), self.bp(avg(x))], 1)

    class B(nn.Module):
        def __init__(self):
            super().__init__()
            self.b3 = conv_bn(288, 384, 3, 3, 2, False)
            self.bd = nn.Sequential(conv_bn(288, 64, 1, 1), conv_bn(64, 96, 3, 3),
                                    conv_bn(96, 96, 3, 3, 2, False))

        def forward(self, x):
            return torch.cat([self.b3(x), self.bd(x), F.max_pool2d(x, 3, 2)], 1)

    class C(nn.Module):
        def __init__(self, f):
            super().__init__()
            self.b1 = conv_bn(768, 192, 1, 1)
            self.b7 = nn.Sequential(conv_bn(768, f, 1, 1), conv_bn(f, f, 1, 7), conv_bn(f, 192, 7, 1))
            self.bd = nn.Sequential(conv_bn(768, f, 1, 1), conv_bn(f, f, 7, 1), conv_bn(f, f, 1, 7),
                                    conv_bn(f, f, 7, 1), conv_bn(f, 192, 1, 7))
            self.bp = conv_bn(768, 192, 1, 1)

        def forward(self, x):
            return torch.cat([self.b1(x), self.b7(x), self.bd(x), self.bp(avg(x))], 1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(conv_bn(3, 32, 3, 3, 2, False), conv_bn(32, 32, 3, 3, 1, False),
                                      conv_bn(32, 64, 3, 3), nn.MaxPool2d(3, 2),
                                      conv_bn(64, 80, 1, 1, 1, False),
                                      conv_bn(80, 192, 3, 3, 1, False), nn.MaxPool2d(3, 2),
                                      A(192, 32), A(256, 64), A(288, 64), B())
            self.mixed = nn.ModuleList([C(f) for f in (128, 160, 160, 192)])

        def forward(self, x):
            x, outs = self.stem(x), []
            for block in self.mixed:
                x = block(x)
                outs.append(x)
            return outs

    net = Net().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def torch_dream_step(net, image):
    import torch
    x = image.clone().requires_grad_(True)
    loss = sum(c * (a[:, :, 2:-2, 2:-2] ** 2).mean()
               for c, a in zip((1.0, 1.5, 2.0, 2.5), net(x)))
    (grad,) = torch.autograd.grad(loss, x)
    grad = grad / torch.sqrt(torch.clamp((grad * grad).sum(), min=1e-12))
    return image + 20.0 * grad


def bench_torch_deepdream_step(height, width, repeat):
    import torch
    torch.set_num_threads(threads())
    torch.manual_seed(0)
    net, image = on_torch_device(torch_inception_to_mixed7(),
                                 torch.rand(1, 3, height, width) * 2 - 1)
    return report(f"deepdream_step_{height}x{width}_torch",
                  timed(lambda: torch_dream_step(net, image), repeat))


def bench_torch_deepdream_schedule(repeat):
    import torch
    F = torch.nn.functional
    torch.set_num_threads(threads())
    torch.manual_seed(0)
    net, original = on_torch_device(torch_inception_to_mixed7(),
                                    torch.rand(1, 3, 400, 600) * 2 - 1)

    def resize(x, shape):
        return in_torch_layout(F.interpolate(x, size=shape, mode="bilinear", align_corners=False,
                                             antialias=False))

    def schedule():
        shapes = [(204, 306), (285, 428), (400, 600)]
        shrunk = resize(original, shapes[0])
        img = original
        for shape in shapes:
            img = resize(img, shape)
            for _ in range(30):
                img = torch_dream_step(net, img)
            img = img + resize(original, shape) - resize(shrunk, shape)
            shrunk = resize(original, shape)
        return img

    return report("deepdream_schedule_400x600_torch", timed(schedule, 1, warmup=0))


def bench_torch_style_transfer(repeat):
    import torch
    from torch import nn
    torch.set_num_threads(threads())
    torch.manual_seed(0)
    blocks = [(1, 64, 2), (2, 128, 2), (3, 256, 4), (4, 512, 4), (5, 512, 2)]  # to block5_conv2
    convs, cin = [], 3
    for _, f, n in blocks:
        for _ in range(n):
            convs.append(on_torch_device(nn.Conv2d(cin, f, 3, 1, 1).requires_grad_(False)))
            cin = f
    style_layers = [f"block{b}_conv1" for b in range(1, 6)]
    h, w = 400, 600

    def features(x):
        out, k = {}, 0
        for b, _, n in blocks:
            for c in range(1, n + 1):
                x = torch.relu(convs[k](x))
                out[f"block{b}_conv{c}"] = x
                k += 1
            if b < 5:
                x = torch.nn.functional.max_pool2d(x, 2)
        return out

    def gram(f):
        f = f.reshape(f.shape[0], -1)
        return f @ f.T

    base, style, comb = (on_torch_device(torch.rand(1, 3, h, w) * 255 - 120) for _ in range(3))
    comb.requires_grad_(True)
    opt = torch.optim.SGD([comb], lr=100.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.96 ** (s / 100))

    def step():
        opt.zero_grad()
        feats = features(torch.cat([base, style, comb]))
        f = feats["block5_conv2"]
        loss = 2.5e-8 * ((f[2] - f[0]) ** 2).sum()
        for name in style_layers:
            f = feats[name]
            loss = loss + 1e-6 / 5 * ((gram(f[1]) - gram(f[2])) ** 2).sum() / (4.0 * 9 * (h * w) ** 2)
        a = (comb[:, :, :-1, :-1] - comb[:, :, 1:, :-1]) ** 2
        b = (comb[:, :, :-1, :-1] - comb[:, :, :-1, 1:]) ** 2
        loss = loss + 1e-6 * ((a + b) ** 1.25).sum()
        loss.backward()
        opt.step()
        sched.step()

    return report("style_transfer_eval_torch", timed(step, repeat), batch=3)


CHILDREN = {
    **{f"deepdream_step_{h}x{w}": (lambda r, h=h, w=w: bench_deepdream_step(h, w, r))
       for h, w in OCTAVES},
    "deepdream_schedule_400x600": bench_deepdream_schedule,
    "style_transfer_eval": lambda r: bench_style_transfer(True, r),
    "style_transfer_eval_cached": lambda r: bench_style_transfer(False, r),
    **{f"deepdream_step_{h}x{w}_torch": (lambda r, h=h, w=w: bench_torch_deepdream_step(h, w, r))
       for h, w in OCTAVES},
    "deepdream_schedule_400x600_torch": bench_torch_deepdream_schedule,
    "style_transfer_eval_torch": bench_torch_style_transfer,
}


# ---- the parent: one process per workload ----------------------------------------------------------

def torch_version(python):
    probe = subprocess.run([python, "-c", "import torch; print(torch.__version__)"],
                           capture_output=True, text=True)
    return probe.stdout.strip() if probe.returncode == 0 else None


def run_child(name, repeat, python=sys.executable):
    env = dict(os.environ)
    env.setdefault("OPENBLAS_NUM_THREADS", "2")
    env.setdefault("OMP_NUM_THREADS", env["OPENBLAS_NUM_THREADS"])
    proc = subprocess.run([python, __file__, "--child", name, "--repeat", str(repeat)],
                          capture_output=True, text=True, env=env)
    records = []
    for line in proc.stdout.splitlines():
        print(line, flush=True)
        if line.startswith("{"):
            records.append(json.loads(line))
    if proc.returncode != 0:
        emit(bench=name, error=proc.stderr.strip().splitlines()[-1:] or ["failed"])
    return records


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="run only these workloads")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--torch", action="store_true",
                        help="also time the same workloads in PyTorch when it is installed")
    parser.add_argument("--torch-python", default=sys.executable,
                        help="the interpreter that has torch (e.g. a venv's bin/python)")
    parser.add_argument("--profile", action="store_true", help="cProfile one run of each workload")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.profile:
            profile(args.child)
        else:
            CHILDREN[args.child](args.repeat)
        return
    names = args.only or list(WORKLOADS)
    if args.profile:
        for name in names:
            env = dict(os.environ, OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "2"))
            subprocess.run([sys.executable, __file__, "--child", name, "--profile"], env=env)
        return
    version = torch_version(args.torch_python) if args.torch else None
    use_torch = version is not None
    if args.torch:
        emit(torch=version or f"not installed for {args.torch_python}: only our figures")
    medians = {}
    for name in names:
        for r in run_child(name, args.repeat):
            medians[r["bench"]] = r.get("median_s")
        if use_torch and f"{name}_torch" in CHILDREN and not name.endswith("_cached"):
            for r in run_child(f"{name}_torch", args.repeat, args.torch_python):
                medians[r["bench"]] = r.get("median_s")
            ours, theirs = medians.get(name), medians.get(f"{name}_torch")
            if ours and theirs:
                emit(bench=f"{name}_ratio", ours_over_torch=round(ours / theirs, 3))
    steps = [medians.get(f"deepdream_step_{h}x{w}") for h, w in OCTAVES]
    if all(steps):
        emit(bench="deepdream_schedule_est", median_s=round(30 * sum(steps), 3),
             note="30 x (sum of the three step medians), as BENCHMARKS.md estimates the schedule")


if __name__ == "__main__":
    main()
