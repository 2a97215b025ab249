"""The VAE step's convolutions at batch 128, one at a time: ours against PyTorch in both layouts.

  python bench/vae_layers.py [--torch-python PY] [--reps N] [--threads N]

Each layer as the book's VAE has it (its kernel trains; ReLU, or the sigmoid of the last layer,
after it): the forward alone, and forward + backward (dK and dBias, and dX where the step needs
it: every layer but the first). PyTorch runs in a child process with the same thread count, NCHW
and channels_last, padded as Keras pads ('same' at stride 2 puts the odd pixel bottom / right).
Why: the step's ratio sits at 1.0x, and this says which layers lose (bench/README.md, "Issue 17,
session 10").
"""
import os
import sys

# (name, conv or transposed, input (H, W, C), filters, stride, activation, dX wanted)
LAYERS = [
    ("encoder conv 1->32 /2", "conv", (28, 28, 1), 32, 2, "relu", False),
    ("encoder conv 32->64 /2", "conv", (14, 14, 32), 64, 2, "relu", True),
    ("decoder transposed 64->64 x2", "transposed", (7, 7, 64), 64, 2, "relu", True),
    ("decoder transposed 64->32 x2", "transposed", (14, 14, 64), 32, 2, "relu", True),
    ("decoder conv 32->1", "conv", (28, 28, 32), 1, 1, "sigmoid", True),
]
BATCH = 128


def ours(reps):
    import numpy as np
    from micrograd_gen import nn
    from micrograd_gen.tensor import Tensor
    from common import median_ms, tune_process
    tune_process()
    rng = np.random.default_rng(0)
    out = {}
    for name, kind, shape, filters, stride, activation, wants_dx in LAYERS:
        x = Tensor(rng.random((BATCH,) + shape, dtype=np.float32), requires_grad=wants_dx)
        Layer = nn.Conv2D if kind == "conv" else nn.Conv2DTranspose
        layer = Layer(filters, 3, strides=stride, padding="same", activation=activation)
        g = rng.standard_normal(layer(x).shape).astype(np.float32)

        def step():
            layer(x).backward(g)
            for tensor in layer.parameters() + [x]:
                tensor.grad = None
        out[name] = (median_ms(lambda: layer(x), reps), median_ms(step, reps))
    return out


def torch_twin(reps, threads):
    import torch
    from common import median_ms
    torch.set_num_threads(threads)
    out = {}
    for name, kind, (h, w, c), filters, stride, activation, wants_dx in LAYERS:
        times = []
        for layout in (torch.contiguous_format, torch.channels_last):
            x = torch.rand(BATCH, c, h, w).contiguous(memory_format=layout)
            x.requires_grad_(wants_dx)
            if kind == "transposed":     # Keras's 'same' at stride 2: output 2n
                conv = torch.nn.ConvTranspose2d(c, filters, 3, stride, padding=1,
                                                output_padding=1)
                body = conv
            elif stride == 2:            # Keras's 'same' at stride 2: the odd pixel bottom / right
                conv = torch.nn.Conv2d(c, filters, 3, stride)
                pad = torch.nn.ZeroPad2d((0, 1, 0, 1))

                def body(t, conv=conv, pad=pad):
                    return conv(pad(t))
            else:
                conv = torch.nn.Conv2d(c, filters, 3, padding=1)
                body = conv
            conv.to(memory_format=layout)
            act = torch.relu if activation == "relu" else torch.sigmoid

            def layer(t, body=body, act=act):
                return act(body(t))
            g = torch.randn_like(layer(x)).contiguous(memory_format=layout)

            def forward():
                with torch.no_grad():
                    layer(x)

            def step():
                layer(x).backward(g)
                conv.zero_grad(set_to_none=True)
                x.grad = None
            times.append((median_ms(forward, reps), median_ms(step, reps)))
        out[name] = times
    return out


def main(argv=None):
    from common import per_layer_times
    times = per_layer_times(__file__, __doc__, ours, torch_twin, 21, argv)
    if times is None:                       # the PyTorch child, done
        return
    mine, theirs = times
    print(f"{'layer (batch 128)':30s} {'ours fwd':>9s} {'fwd+bwd':>8s}"
          + (f" {'NCHW fwd':>9s} {'fwd+bwd':>8s} {'CL fwd':>7s} {'fwd+bwd':>8s}" if theirs
             else "") + "   ms")
    for name, (forward, both) in mine.items():
        line = f"{name:30s} {forward:9.2f} {both:8.2f}"
        if name in theirs:
            (nchw, nchw_both), (cl, cl_both) = theirs[name]
            line += f" {nchw:9.2f} {nchw_both:8.2f} {cl:7.2f} {cl_both:8.2f}"
        print(line)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
