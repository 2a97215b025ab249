"""Every convolution of a DeepDream step, one thread each: ours against PyTorch's channels_last.

  python bench/dream_convs.py [--size 400x600] [--torch-python PY] [--reps N] [--top N]
  python bench/dream_convs.py [--size 400x600] --flops

Runs one step (InceptionV3 to mixed7, random weights, as bench/run.py's deepdream_step) to list
its distinct convolutions (input, kernel, stride, padding) and how often each runs, then times
each on its own: forward with the fused ReLU, then forward + dX, the kernel frozen, as the step
runs them. One thread on both sides (ours: single-threaded BLAS, as inside an Inception branch;
PyTorch: set_num_threads(1), in a child process of its own under --torch-python), so that the
figures compare the convolutions themselves, not how a step spreads them over the cores.
Sorted by what each layer's count costs us more than PyTorch. With --flops nothing is timed:
the step's direct-convolution FLOPs (forward and dX, as bench/run.py counts them) by kernel
shape, stride and output grid: how much of a step a method that does fewer multiplies than
the direct one (Winograd, for 3x3 stride 1) could reach, and on what sizes.

Why. The whole step is a sum of some sixty different layers, and the ratio of the sum hides
which of them PyTorch's kernels win (bench/README.md, "Issue 17, session 13").
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


def layers_of_a_step(height, width):
    """[(x shape NHWC, kernel shape, strides, padding name, count)] of one DeepDream step."""
    import numpy as np
    import bench_dream_style as ds
    from micrograd_gen import ops
    seen = {}
    real = ops.conv2d

    def spy(x, kernel, bias=None, strides=1, padding="valid", *args, **kwargs):
        s = (strides, strides) if isinstance(strides, int) else tuple(strides)
        key = (tuple(x.shape), tuple(kernel.shape), s, padding)
        seen[key] = seen.get(key, 0) + 1
        return real(x, kernel, bias, strides, padding, *args, **kwargs)
    modules = [m for m in list(sys.modules.values())
               if getattr(m, "__name__", "").startswith("micrograd_gen")
               and getattr(m, "conv2d", None) is real]
    for module in modules:
        module.conv2d = spy
    try:
        dreamer = ds.random_dreamer()
        image = np.random.default_rng(0).uniform(-1, 1, (1, height, width, 3)).astype(np.float32)
        dreamer.gradient_ascent_step(image, 20.0)
    finally:
        for module in modules:
            module.conv2d = real
    return [list(key) + [count] for key, count in seen.items()]


def flop_shares(layers):
    """[(kernel / stride, output grid, GFLOP, share)] of one step, largest first: forward + dX
    of every convolution, 2 * N * OH * OW * Cin * Cout * kh * kw each way (the image needs its
    gradient, so the first layer's dX counts too), summed by kernel shape, stride and grid."""
    from micrograd_gen.nn.convolutional import conv_output_length
    kinds = {}
    for (n, h, w, c), (kh, kw, _, f), (sh, sw), padding, count in layers:
        oh, ow = conv_output_length(h, kh, padding, sh), conv_output_length(w, kw, padding, sw)
        key = (f"{kh}x{kw}/{sh}", f"{oh}x{ow}")
        kinds[key] = kinds.get(key, 0.0) + count * 2 * (2.0 * n * oh * ow * c * f * kh * kw)
    total = sum(kinds.values())
    return [(kernel, grid, flop / 1e9, flop / total)
            for (kernel, grid), flop in sorted(kinds.items(), key=lambda kv: -kv[1])]


def ours(layers, reps):
    import numpy as np
    from micrograd_gen import ops
    from micrograd_gen.accel import workers
    from micrograd_gen.tensor import Tensor
    from common import median_ms, tune_process
    tune_process()
    workers.chunk_pool()         # from here NumPy's BLAS runs one thread, as in the step
    rng = np.random.default_rng(0)
    out = []
    with workers.alone():
        for shape, kernel_shape, strides, padding, _ in layers:
            x = Tensor(np.maximum(rng.standard_normal(shape, dtype=np.float32), 0),
                       requires_grad=True)
            kernel = Tensor(rng.standard_normal(kernel_shape, dtype=np.float32) * 0.05)
            bias = Tensor(rng.standard_normal(kernel_shape[3], dtype=np.float32) * 0.05)

            def forward():
                return ops.conv2d(x, kernel, bias, strides, padding, relu=True)
            g = rng.standard_normal(forward().shape).astype(np.float32)
            out.append((median_ms(forward, reps),
                        median_ms(lambda: forward().backward(g), reps)))
    return out


def torch_twin(layers, reps):
    import torch
    from common import median_ms
    torch.set_num_threads(1)
    cl = torch.channels_last
    out = []
    for (n, h, w, c), (kh, kw, _, f), strides, padding, _ in layers:
        x = torch.relu(torch.randn(n, c, h, w)).contiguous(memory_format=cl).requires_grad_(True)
        if padding == "same" and tuple(strides) != (1, 1):
            raise ValueError("a strided 'same' layer: PyTorch pads it otherwise")  # none here
        pad = (kh // 2, kw // 2) if padding == "same" else 0
        conv = torch.nn.Conv2d(c, f, (kh, kw), tuple(strides), pad).to(memory_format=cl)
        conv.requires_grad_(False)

        def forward():
            return torch.relu(conv(x))
        with torch.no_grad():
            g = torch.randn_like(forward()).contiguous(memory_format=cl)

        def no_grad_forward():
            with torch.no_grad():
                forward()
        out.append((median_ms(no_grad_forward, reps),
                    median_ms(lambda: torch.autograd.grad(forward(), x, g), reps)))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="400x600", help="the picture, HxW (default 400x600)")
    parser.add_argument("--torch-python", help="an interpreter that can import torch")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--flops", action="store_true",
                        help="print the step's FLOPs by kernel, stride and grid; time nothing")
    parser.add_argument("--torch-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_child:
        with open(args.torch_child) as f:
            layers = json.load(f)
        print(json.dumps(torch_twin(layers, args.reps)))
        return
    try:
        height, width = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size must be HxW, e.g. 400x600, got {args.size!r}")
    if args.reps < 1 or args.top < 1 or min(height, width) < 75:
        parser.error("--reps and --top must be at least 1 and the picture at least 75x75")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        layers = layers_of_a_step(height, width)
    except ValueError as error:     # the dream's loss refuses a picture too small for its layers
        parser.error(f"--size {args.size}: {error}")
    if args.flops:
        shares = flop_shares(layers)
        print(f"DeepDream step at {height}x{width}: {sum(g for _, _, g, _ in shares):.2f} GFLOP "
              f"(direct convolution, forward + dX), by kernel / stride and output grid")
        for kernel, grid, gflop, share in shares:
            print(f"{kernel:6s} on {grid:9s} {gflop:7.2f} GFLOP {100 * share:5.1f}%")
        return
    mine = ours(layers, args.reps)
    theirs = None
    if args.torch_python:
        import tempfile
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "layers.json")
            with open(path, "w") as f:
                json.dump(layers, f)
            done = subprocess.run([args.torch_python, os.path.abspath(__file__), "--torch-child",
                                   path, "--reps", str(args.reps)], capture_output=True,
                                  text=True, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        theirs = json.loads(done.stdout.strip().splitlines()[-1])
    rows = []
    for i, (shape, kernel_shape, strides, padding, count) in enumerate(layers):
        name = (f"{shape[1]}x{shape[2]}x{shape[3]} {kernel_shape[0]}x{kernel_shape[1]}"
                f"/{strides[0]} -> {kernel_shape[3]} {padding}")
        lost = count * (mine[i][1] - theirs[i][1]) if theirs else 0.0
        rows.append((lost, name, count, mine[i], theirs[i] if theirs else None))
    rows.sort(key=lambda r: -r[0] if theirs else -r[2] * r[3][1])
    print(f"DeepDream step at {height}x{width}: {len(layers)} distinct convolutions, one thread, "
          f"ms (fwd, fwd + dX)")
    header = f"{'layer':38s} {'count':>5s} {'ours':>15s}"
    if theirs:
        header += f" {'PyTorch CL':>15s} {'lost':>9s}  (lost: count x the fwd + dX difference)"
    print(header)
    for lost, name, count, (fwd, both), other in rows[:args.top]:
        line = f"{name:38s} {count:5d} {fwd:7.2f} {both:7.2f}"
        if other:
            line += f" {other[0]:7.2f} {other[1]:7.2f} {lost:+9.2f}"
        print(line)
    total_ours = sum(r[2] * r[3][1] for r in rows)
    line = f"\nall {sum(r[2] for r in rows)} convolutions, fwd + dX: ours {total_ours:.1f} ms"
    if theirs:
        line += f", PyTorch {sum(r[2] * r[4][1] for r in rows):.1f} ms"
    print(line)


if __name__ == "__main__":
    main()
