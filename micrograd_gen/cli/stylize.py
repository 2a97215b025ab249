"""`python -m micrograd_gen stylize --model starry.h5 PICTURE --out styled.png`: apply a network
that `train-style` trained, in one forward pass.

    python -m micrograd_gen stylize --model starry.h5 tubingen.jpg --out tubingen_starry.png
    python -m micrograd_gen stylize --model starry.h5 big_photo.jpg --max-size 1024 --out out.png
"""
import time

from . import _output, _values

HELP = "fast style transfer: apply a network trained by train-style to a picture (one forward pass)"
DEFAULT_OUT = "stylized.png"


def add_arguments(parser):
    parser.add_argument("image", help="the picture to stylise")
    parser.add_argument("--model", required=True, help="a model file written by train-style")
    parser.add_argument("--max-size", type=_values.whole(0, 16384), default=0,
                        help="shrink the picture so its longer side is at most this (0: keep)")


def run(args):
    from ..data.images import save_image
    from ..generative import fast_style as F
    from .dream import load_picture

    out = _output.picture_path(args.out, DEFAULT_OUT)
    _output.refuse_inputs(out, {"picture to stylise": args.image, "--model file": args.model})
    _output.check_writable(out)
    net = F.load_model(args.model)
    image = load_picture(args.image, args.max_size)
    started = time.perf_counter()
    result = F.stylize(net, image)
    save_image(out, result)
    print(f"stylize: wrote {out} ({result.shape[0]}x{result.shape[1]}) in "
          f"{time.perf_counter() - started:.2f} s", flush=True)
    return 0
