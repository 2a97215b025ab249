"""Winograd against the shifted route, layer by layer (bench/README.md, "Winograd").

For each 3x3 stride-1 layer below: the forward (bias and ReLU), the input gradient (with a ReLU's
mask on dY) and the kernel gradient, each on the shifted route (accel/conv.py) and on Winograd
(accel/winograd.py), alternating in one process; the minimum of --reps runs after a warm-up
(on a shared machine the minimum is the least disturbed), and wall and CPU milliseconds. The
layers: VGG19's at the style transfer's batch of 3 at 400x600, the conv micro-benchmarks' three
(batch 1), and InceptionV3's 3x3 layers at the sizes a DeepDream step at 400x600 meets.

  python bench/bench_winograd.py                 # everything, one JSON line per layer
  python bench/bench_winograd.py --only block5 --reps 11
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from micrograd_gen.accel import conv as fast_conv  # noqa: E402
from micrograd_gen.accel import keep_freed_memory, winograd  # noqa: E402
from micrograd_gen.ops.conv import ConvGeometry  # noqa: E402

# name: (N, H, W, C, F), 'same' padding
LAYERS = {
    "vgg19_block1_conv2_b3": (3, 400, 600, 64, 64),
    "vgg19_block2_conv1_b3": (3, 200, 300, 64, 128),
    "vgg19_block2_conv2_b3": (3, 200, 300, 128, 128),
    "vgg19_block3_conv1_b3": (3, 100, 150, 128, 256),
    "vgg19_block3_conv2_b3": (3, 100, 150, 256, 256),
    "vgg19_block4_conv1_b3": (3, 50, 75, 256, 512),
    "vgg19_block4_conv2_b3": (3, 50, 75, 512, 512),
    "vgg19_block5_conv1_b3": (3, 25, 37, 512, 512),
    "conv_block1_conv2": (1, 400, 600, 64, 64),
    "conv_block3_conv1": (1, 100, 150, 128, 256),
    "conv_block5_conv1": (1, 25, 37, 512, 512),
    "inception_conv2d_3": (1, 197, 297, 32, 64),
    "inception_mixed_3x3dbl_2": (1, 47, 72, 64, 96),
    "inception_mixed_3x3dbl_3": (1, 47, 72, 96, 96),
}


def _timed(fn, reps):
    fn()
    best_wall = best_cpu = float("inf")
    for _ in range(reps):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall * 1e3, best_cpu * 1e3


def layer(name, shape, reps):
    N, H, W, C, F = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, H, W, C)).astype(np.float32)
    kernel = (rng.standard_normal((3, 3, C, F)) * (2 / (9 * C)) ** 0.5).astype(np.float32)
    bias = rng.standard_normal(F).astype(np.float32)
    g = rng.standard_normal((N, H, W, F)).astype(np.float32)
    positive = g > 0
    geom = ConvGeometry.of(x.shape, kernel.shape, (1, 1), "same")
    shifted = fast_conv.shifted_geometry(geom)
    pads = (geom.pt, geom.pb, geom.pl, geom.pr)
    pairs = {
        "forward": (lambda: fast_conv._shifted_forward(x, kernel, shifted, bias, True),
                    lambda: winograd.conv3x3(x, kernel, pads, bias, True)),
        "dx": (lambda: fast_conv._shifted_backward(g, x, kernel, shifted, True, False,
                                                   positive=positive),
               lambda: winograd.conv3x3_input_gradient(g, kernel, pads, x.shape, mask=positive)),
        "dk": (lambda: fast_conv._shifted_backward(g, x, kernel, shifted, False, True),
               lambda: winograd.conv3x3_kernel_gradient(x, g, pads)),
    }
    record = {"layer": name, "shape_nhwc": list(shape[:4]), "filters": F,
              "tiles": N * -(-H // 4) * -(-W // 4),
              "routed": bool(fast_conv._winograd_fits(geom, F, x, kernel))}
    for what, (direct, fast) in pairs.items():
        (dw, dc), (ww, wc) = _timed(direct, reps), _timed(fast, reps)
        record[what] = {"shifted_ms": round(dw, 2), "winograd_ms": round(ww, 2),
                        "ratio": round(ww / dw, 3), "cpu_ratio": round(wc / dc, 3)}
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated parts of layer names")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error(f"--reps must be at least 1, got {args.reps}")
    keep_freed_memory()
    wanted = [w for w in args.only.split(",") if w]
    for name, shape in LAYERS.items():
        if not wanted or any(w in name for w in wanted):
            print(json.dumps(layer(name, shape, args.reps)), flush=True)


if __name__ == "__main__":
    main()
