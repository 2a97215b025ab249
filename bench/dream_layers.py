"""The DeepDream step's stem layers at 400x600, one at a time: ours against PyTorch's channels_last.

  python bench/dream_layers.py [--torch-python PY] [--reps N]

Each layer as InceptionV3's stem has it (one picture, frozen kernel, as DeepDream runs it): the
forward alone, and forward + dX; the two 3x3 / 2 max pools, forward + backward. PyTorch runs in a
child process (its OpenMP threads never meet our workers) with the same thread count. Why: the
whole step is a sum of many layers, and this says which ones PyTorch's direct kernels win
(bench/README.md, "Issue 17, session 9").
"""
import os
import sys

# (name, input (H, W, C), filters, kernel size, padding); filters None: a 3x3 / 2 max pool
LAYERS = [
    ("conv 3x3 32->32 valid", (199, 299, 32), 32, 3, "valid"),
    ("conv 3x3 32->64 same", (197, 297, 32), 64, 3, "same"),
    ("max pool 197x297x64", (197, 297, 64), None, 3, "valid"),
    ("conv 1x1 64->80", (98, 148, 64), 80, 1, "valid"),
    ("conv 3x3 80->192 valid", (98, 148, 80), 192, 3, "valid"),
    ("max pool 96x146x192", (96, 146, 192), None, 3, "valid"),
]


def ours(reps):
    import numpy as np
    from micrograd_gen import ops
    from micrograd_gen.tensor import Tensor
    from common import median_ms, tune_process
    tune_process()
    rng = np.random.default_rng(0)
    out = {}
    for name, shape, filters, k, padding in LAYERS:
        x = Tensor(np.maximum(rng.standard_normal((1,) + shape, dtype=np.float32), 0),
                   requires_grad=True)
        if filters is None:
            def forward():
                return ops.max_pool2d(x, k, 2)
        else:
            kernel = Tensor(rng.standard_normal((k, k, shape[2], filters), dtype=np.float32) * 0.1)

            def forward():
                return ops.conv2d(x, kernel, padding=padding)
        g = rng.standard_normal(forward().shape).astype(np.float32)
        out[name] = (median_ms(forward, reps), median_ms(lambda: forward().backward(g), reps))
    return out


def torch_twin(reps, threads):
    import torch
    from common import median_ms
    torch.set_num_threads(threads)
    cl = torch.channels_last
    out = {}
    for name, (h, w, c), filters, k, padding in LAYERS:
        x = torch.relu(torch.randn(1, c, h, w)).contiguous(memory_format=cl).requires_grad_(True)
        if filters is None:
            layer = torch.nn.MaxPool2d(k, 2)
        else:
            layer = torch.nn.Conv2d(c, filters, k, padding=1 if padding == "same" else 0,
                                    bias=False).to(memory_format=cl).requires_grad_(False)
        g = torch.randn_like(layer(x)).contiguous(memory_format=cl)

        def forward():
            with torch.no_grad():
                layer(x)
        out[name] = (median_ms(forward, reps),
                     median_ms(lambda: torch.autograd.grad(layer(x), x, g), reps))
    return out


def main(argv=None):
    from common import per_layer_times
    times = per_layer_times(__file__, __doc__, ours, torch_twin, 11, argv)
    if times is None:                       # the PyTorch child, done
        return
    mine, theirs = times
    print(f"{'layer (400x600 stem)':24s} {'ours fwd':>9s} {'fwd+dX':>8s}"
          + (f" {'torch fwd':>10s} {'fwd+dX':>8s}" if theirs else "") + "   ms")
    for name, (fwd, both) in mine.items():
        line = f"{name:24s} {fwd:9.2f} {both:8.2f}"
        if name in theirs:
            line += f" {theirs[name][0]:10.2f} {theirs[name][1]:8.2f}"
        print(line)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
