"""`python -m micrograd_gen train-style STYLE --data PICTURES --out starry.h5`: train a fast
style-transfer network (Johnson et al.) for one style, to apply later with `stylize`.

    python -m micrograd_gen train-style starry_night.jpg --data photos/ --out starry.h5
    python -m micrograd_gen train-style starry_night.jpg --data faces64.tar --size 64 --steps 200 \\
        --sample tubingen.jpg --save-every 50 --out starry.h5           # starry_0050.png ...
    python -m micrograd_gen train-style starry_night.jpg --data photos/ --out starry.h5  # resumes
    # Johnson et al.'s full size, for a GPU:
    python -m micrograd_gen train-style starry_night.jpg --data coco/ --device gpu \\
        --filters 32,64,128 --residual-blocks 5 --batch-size 4 --steps 40000 --out starry.h5
"""
import argparse
import sys
import time
from pathlib import Path

from . import _output, _training, _values

HELP = "fast style transfer: train a feed-forward network for one style (Johnson et al. 2016)"
DEFAULT_OUT = "fast_style.h5"
# generative/fast_style.py's defaults, repeated so that building the parser imports nothing heavy
FILTERS, RESIDUAL_BLOCKS = "16,32,64", 3
CONTENT_LAYER, CONTENT_WEIGHT, STYLE_WEIGHT, TV_WEIGHT = "block4_conv2", 2e-6, 1e-6, 1e-6


def add_arguments(parser):
    parser.add_argument("style", help="the style picture")
    parser.add_argument("--data", required=True,
                        help="training pictures: a folder (searched recursively) or an "
                             "uncompressed .tar, e.g. ../shared/data/faces/faces64.tar")
    parser.add_argument("--size", type=_multiple_of_4, default=256,
                        help="training pictures are centre-cropped and resized to size x size")
    parser.add_argument("--batch-size", type=_values.whole(1, 1024), default=2,
                        help="pictures per step")
    parser.add_argument("--steps", type=_values.positive_int, default=400,
                        help="training steps from the start of training, so a resumed run goes on "
                             "to the same end (the default trains the default network in well "
                             "under an hour on 2 CPU cores at 256x256)")
    parser.add_argument("--learning-rate", type=_values.learning_rate,
                        help="Adam's, also when resuming (default: 1e-3 for a new run, the "
                             "checkpoint's when resuming)")
    parser.add_argument("--lr", type=_values.learning_rate, dest="learning_rate",
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # old spelling
    parser.add_argument("--filters", type=parse_filters,
                        help=f"filters of the three convolution stages (default: {FILTERS}, or "
                             "the checkpoint's when resuming; Johnson et al.: 32,64,128)")
    parser.add_argument("--residual-blocks", type=_values.whole(1, 100),
                        help=f"residual blocks (default: {RESIDUAL_BLOCKS}, or the checkpoint's "
                             "when resuming; Johnson et al.: 5)")
    parser.add_argument("--content-layer", type=_vgg19_conv, default=CONTENT_LAYER,
                        help="VGG19 convolution of the content loss (block<b>_conv<c>)")
    parser.add_argument("--content-weight", type=_values.nonnegative, default=CONTENT_WEIGHT,
                        help="weight of the content loss")
    parser.add_argument("--style-weight", type=_values.nonnegative, default=STYLE_WEIGHT,
                        help="weight of the style loss (shared by the style layers)")
    parser.add_argument("--tv-weight", type=_values.nonnegative, default=TV_WEIGHT,
                        help="total-variation weight (smoothness)")
    parser.add_argument("--weights", default="imagenet",
                        help="VGG19 weights: 'imagenet' or the path of the Keras .h5 file")
    parser.add_argument("--save-every", type=_values.count, default=0, metavar="N",
                        help="save the model every N steps (and OUT_<step>.png of --sample; "
                             "0: only at the end)")
    parser.add_argument("--sample", help="a picture to stylise at each save, to watch progress")
    _training.add_arguments(parser)


# VGG19's convolutions: two in each of blocks 1 and 2, four in blocks 3 to 5
VGG19_CONVS = [f"block{b}_conv{c}" for b in range(1, 6) for c in range(1, 3 if b < 3 else 5)]


def _vgg19_conv(text):
    if text not in VGG19_CONVS:
        raise argparse.ArgumentTypeError(f"must be one of VGG19's convolutions "
                                         f"({', '.join(VGG19_CONVS)}), got {text!r}")
    return text


def _multiple_of_4(text):
    value = _values.whole(32, 4096)(text)
    if value % 4:
        raise argparse.ArgumentTypeError(f"must be a multiple of 4 (the network halves the size "
                                         f"twice), got {text!r}")
    return value


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
    if len(filters) != 3 or min(filters) < 1 or max(filters) > 4096:
        raise argparse.ArgumentTypeError(
            f"must be three whole numbers from 1 to 4096 such as 16,32,64, got {text!r}")
    return filters


def run(args):
    from ..data.images import load_image, save_image
    from ..generative import fast_style as F
    from ..optim import Adam
    from ..progress import Progress

    out = model_path(args.out)
    if not Path(args.data).exists():
        raise FileNotFoundError(f"--data {args.data}: no such folder or .tar file")
    for flag, given in (("STYLE", args.style), ("--sample", args.sample)):
        if given is not None and not Path(given).is_file():
            raise FileNotFoundError(f"{flag} {given}: no such picture")
    _output.refuse_inputs(out, {"style picture": args.style, "--sample picture": args.sample,
                                "--data": args.data, "--weights file": args.weights})
    sample = load_image(args.sample) if args.sample else None
    sample_out = out.with_suffix(".png")  # samples go beside the model: OUT_<step>.png
    with _training.locked(out, "--out"):
        payload = _training.plan(args, out, "fast_style", "train-style", "--out")
        net = optimizer = None
        start = 0
        filters = args.filters or parse_filters(FILTERS)
        blocks = args.residual_blocks or RESIDUAL_BLOCKS
        learning_rate = args.learning_rate or 1e-3
        if payload is not None:
            net, payload, _ = F.read_model(out)
            saved = {"--filters": tuple(net.get_config()["filters"]),
                     "--residual-blocks": int(net.get_config()["residual_blocks"])}
            for flag, asked in (("--filters", args.filters),
                                ("--residual-blocks", args.residual_blocks)):
                if asked is not None and asked != saved[flag]:
                    raise ValueError(f"{flag} {_text(asked)}, but {out} holds a network with "
                                     f"{flag} {_text(saved[flag])}; drop {flag} to resume it, or "
                                     "--fresh to start a new one")
            filters, blocks = saved["--filters"], saved["--residual-blocks"]
            optimizer = Adam(net.trainable_weights, learning_rate=learning_rate)
            if "adam" in payload["optimizers"]:
                optimizer.set_state(payload["optimizers"]["adam"])
            if args.learning_rate is not None:   # what the user asked wins over the saved state
                optimizer.learning_rate = args.learning_rate
            learning_rate = optimizer.learning_rate
            start = int(payload["step"])
            if start >= args.steps:
                return _training.nothing_to_do("train-style", out, start, args.steps, "steps")
        print(f"train-style: {args.style} on {args.data} at {args.size}x{args.size}, batch "
              f"{args.batch_size}, steps {start + 1}..{args.steps}, learning rate "
              f"{learning_rate:g}; network filters {filters}, {blocks} residual blocks; saving to "
              f"{out}", flush=True)
        progress = Progress(total=args.steps, label="train-style", stream=sys.stdout)
        progress.last_step = start
        started = time.perf_counter()
        last = {"step": start}

        def save(net, optimizer, step):
            F.save_model(out, net, optimizer, step=step,
                         extra={"style": str(args.style), "size": args.size})
            if sample is not None:
                path = save_image(_output.numbered(sample_out, f"{step:05d}"),
                                  F.stylize(net, sample))
                print(f"  saved {out} and {path}", flush=True)

        def on_step(s):
            progress.update(s.step, loss=s.loss, content=s.parts["content"],
                            style=s.parts["style"], tv=s.parts["tv"])
            last["step"] = s.step
            if args.save_every and s.step % args.save_every == 0 and s.step < s.steps:
                save(s.net, s.optimizer, s.step)

        net, optimizer = F.train_style(
            args.style, args.data, size=args.size, batch_size=args.batch_size, steps=args.steps,
            learning_rate=learning_rate, filters=filters, residual_blocks=blocks,
            weights=args.weights, content_weight=args.content_weight,
            style_weight=args.style_weight, tv_weight=args.tv_weight,
            content_layer=args.content_layer, seed=args.seed, callback=on_step, net=net,
            optimizer=optimizer, start_step=start)
        save(net, optimizer, last["step"])
    print(f"train-style: wrote {out} in {time.perf_counter() - started:.0f} s; apply it with "
          f"python -m micrograd_gen stylize --model {out} PICTURE --out styled.png", flush=True)
    return 0


def _text(value):
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
