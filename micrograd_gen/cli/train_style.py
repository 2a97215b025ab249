"""`python -m micrograd_gen train-style STYLE --data PICTURES --out starry.h5`: train a fast
style-transfer network (Johnson et al.) for one style, to apply later with `stylize`.

    python -m micrograd_gen train-style starry_night.jpg --data photos/ --out starry.h5
    python -m micrograd_gen train-style starry_night.jpg --data faces64.tar --size 64 --steps 200 \\
        --sample tubingen.jpg --save-every 50 --out starry.h5           # starry_0050.png ...
    python -m micrograd_gen train-style starry_night.jpg --data photos/ --out starry.h5 --resume
    # Johnson et al.'s full size, for a GPU:
    python -m micrograd_gen train-style starry_night.jpg --data coco/ --device gpu \\
        --filters 32,64,128 --residual-blocks 5 --batch-size 4 --steps 40000 --out starry.h5
"""
import sys
import time
from pathlib import Path

from . import _output

HELP = "fast style transfer: train a feed-forward network for one style (Johnson et al. 2016)"
DEFAULT_OUT = "fast_style.h5"
# generative/fast_style.py's defaults, repeated so that building the parser imports nothing heavy
FILTERS, RESIDUAL_BLOCKS = "16,32,64", 3
CONTENT_LAYER, CONTENT_WEIGHT, STYLE_WEIGHT, TV_WEIGHT = "block4_conv2", 2e-6, 1e-6, 1e-6


def add_arguments(parser):
    parser.add_argument("style", help="the style picture")
    parser.add_argument("--data", required=True,
                        help="training pictures: a folder (searched recursively) or an uncompressed "
                             ".tar, e.g. ../shared/data/faces/faces64.tar")
    parser.add_argument("--size", type=int, default=256,
                        help="training pictures are centre-cropped and resized to size x size")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=400,
                        help="training steps (the default trains the default network in well "
                             "under an hour on 2 CPU cores at 256x256)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    parser.add_argument("--filters", default=FILTERS,
                        help="filters of the three convolution stages (Johnson et al.: 32,64,128)")
    parser.add_argument("--residual-blocks", type=int, default=RESIDUAL_BLOCKS,
                        help="residual blocks (Johnson et al.: 5)")
    parser.add_argument("--content-layer", default=CONTENT_LAYER,
                        help="VGG19 layer of the content loss")
    parser.add_argument("--content-weight", type=float, default=CONTENT_WEIGHT)
    parser.add_argument("--style-weight", type=float, default=STYLE_WEIGHT)
    parser.add_argument("--tv-weight", type=float, default=TV_WEIGHT)
    parser.add_argument("--weights", default="imagenet",
                        help="VGG19 weights: 'imagenet' or the path of the Keras .h5 file")
    parser.add_argument("--save-every", type=int, default=0, metavar="N",
                        help="save the model every N steps (and OUT_<step>.png of --sample)")
    parser.add_argument("--sample", help="a picture to stylise at each save, to watch progress")
    parser.add_argument("--resume", action="store_true",
                        help="continue the training saved in --out (weights, Adam state, step)")


def model_path(out):
    path = Path(out)
    if not path.suffix:
        path = path / DEFAULT_OUT
    if path.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name such as {path / DEFAULT_OUT}")
    return path


def parse_filters(text):
    try:
        filters = tuple(int(f) for f in str(text).split(","))
    except ValueError:
        filters = ()
    if len(filters) != 3 or min(filters) < 1:
        raise ValueError(f"--filters must be three positive numbers such as 16,32,64, got {text!r}")
    return filters


def run(args):
    from ..data.images import load_image, save_image
    from ..generative import fast_style as F
    from ..optim import Adam
    from ..progress import Progress

    out = model_path(args.out)
    filters = parse_filters(args.filters)
    for name, value in (("--steps", args.steps), ("--batch-size", args.batch_size),
                        ("--residual-blocks", args.residual_blocks)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if args.save_every < 0:
        raise ValueError("--save-every must not be negative")
    sample = load_image(args.sample) if args.sample else None
    sample_out = out.with_suffix(".png")  # samples go beside the model: OUT_<step>.png
    net = optimizer = None
    start = 0
    if args.resume:
        if not out.is_file():
            raise FileNotFoundError(f"--resume: no model at {out} to continue")
        net, payload, _ = F.read_model(out)
        optimizer = Adam(net.trainable_weights, learning_rate=args.lr)
        if "adam" in payload["optimizers"]:
            optimizer.set_state(payload["optimizers"]["adam"])
        start = int(payload["step"])
        if start >= args.steps:
            raise ValueError(f"--resume: {out} is already at step {start} of --steps {args.steps}")
    print(f"train-style: {args.style} on {args.data} at {args.size}x{args.size}, batch "
          f"{args.batch_size}, steps {start + 1}..{args.steps}; network filters {filters}, "
          f"{args.residual_blocks} residual blocks; saving to {out}", flush=True)
    progress = Progress(total=args.steps, label="train-style", stream=sys.stdout)
    progress.last_step = start
    started = time.perf_counter()
    last = {"step": start}

    def save(net, optimizer, step):
        F.save_model(out, net, optimizer, step=step,
                     extra={"style": str(args.style), "size": args.size})
        if sample is not None:
            path = save_image(_output.numbered(sample_out, f"{step:05d}"), F.stylize(net, sample))
            print(f"  saved {out} and {path}", flush=True)

    def on_step(s):
        progress.update(s.step, loss=s.loss, content=s.parts["content"], style=s.parts["style"],
                        tv=s.parts["tv"])
        last["step"] = s.step
        if args.save_every and s.step % args.save_every == 0 and s.step < s.steps:
            save(s.net, s.optimizer, s.step)

    net, optimizer = F.train_style(
        args.style, args.data, size=args.size, batch_size=args.batch_size, steps=args.steps,
        learning_rate=args.lr, filters=filters, residual_blocks=args.residual_blocks,
        weights=args.weights, content_weight=args.content_weight, style_weight=args.style_weight,
        tv_weight=args.tv_weight, content_layer=args.content_layer, seed=args.seed,
        callback=on_step, net=net, optimizer=optimizer, start_step=start)
    save(net, optimizer, last["step"])
    print(f"train-style: wrote {out} in {time.perf_counter() - started:.0f} s; apply it with "
          f"python -m micrograd_gen stylize --model {out} PICTURE --out styled.png", flush=True)
    return 0
