"""`python -m micrograd_gen dream IMAGE --out dream.png`: the book's DeepDream on a picture.

    python -m micrograd_gen dream photo.jpg --out dream.png
    python -m micrograd_gen dream photo.jpg --layers mixed3=1,mixed5=2 --iterations 20 --out d.png
    python -m micrograd_gen dream photo.jpg --model vgg19 --layers block3_conv1=1 --out geo.png
    python -m micrograd_gen dream photo.jpg --save-every 10 --out dream.png   # dream_o1s010.png ...
"""
import argparse
import time

from . import _output, _values

HELP = "DeepDream: amplify what a pretrained convnet half-sees in a picture (the book's algorithm)"
DEFAULT_OUT = "dream.png"


def add_arguments(parser):
    parser.add_argument("image", help="the picture to dream on (any format Pillow reads)")
    parser.add_argument("--model", choices=["inception_v3", "vgg19"], default="inception_v3",
                        help="the convnet whose layers are amplified")
    parser.add_argument("--layers", type=_values.auto_or(_layer_weights), default="auto",
                        help="LAYER=WEIGHT,...; auto: mixed4=1,mixed5=1.5,mixed6=2,mixed7=2.5 for "
                             "inception_v3, block3_conv4=1,block4_conv4=1 for vgg19")
    parser.add_argument("--octaves", type=_values.whole(1, 20), default=3,
                        help="number of scales, smallest first")
    parser.add_argument("--scale", type=_values.number(1, 10, low_open=True), default=1.4,
                        help="size ratio between octaves")
    parser.add_argument("--iterations", type=_values.positive_int, default=30,
                        help="gradient-ascent steps per octave")
    parser.add_argument("--step", type=_values.auto_or(_values.positive_float32),
                        default="auto",
                        help="step size on the L2-normalised gradient, in the model's input units; "
                             "auto: 20 for inception_v3, 20*127.5/4 for vgg19 (input 0..255)")
    parser.add_argument("--max-loss", type=_values.auto_or(_values.nonnegative), default="auto",
                        help="end an octave once the loss passes this (0: never); auto: 15 for "
                             "inception_v3 as the book, never for vgg19")
    parser.add_argument("--weights", default="imagenet",
                        help="'imagenet' (cache, $MICROGRAD_GEN_WEIGHTS, else download) or the "
                             "path of the model's Keras .h5 weight file")
    parser.add_argument("--max-size", type=_values.whole(0, 16384), default=400,
                        help="shrink the picture so its longer side is at most this (0: keep)")
    parser.add_argument("--save-every", type=_values.count, default=0, metavar="N",
                        help="also save the picture every N steps (at the octave's size), as "
                             "OUT_o<octave>s<step>.png (0: never)")


def _layer_weights(text):
    try:
        return _output.parse_weights_list(text, what="")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).lstrip(": ")) from None


_layer_weights.__name__ = "LAYER=WEIGHT,..."


def load_picture(path, max_size):
    """The picture as float32 RGB 0..255, its longer side shrunk to max_size (Pillow's antialiased
    bilinear) when it is longer."""
    from ..data.images import load_image
    image = load_image(path)
    h, w = image.shape[:2]
    if max_size and max(h, w) > max_size:
        ratio = max_size / max(h, w)
        image = load_image(path, target_size=(max(1, round(h * ratio)), max(1, round(w * ratio))),
                           interpolation="bilinear")
    return image


def run(args):
    from ..data.images import save_image
    from ..generative.deepdream import DEFAULT_MAX_LOSS, DEFAULT_STEP, DeepDream

    out = _output.picture_path(args.out, DEFAULT_OUT)
    _output.refuse_inputs(out, {"picture to dream on": args.image, "--weights file": args.weights})
    _output.check_writable(out)
    layers = args.layers
    image = load_picture(args.image, args.max_size)
    started = time.perf_counter()
    dreamer = DeepDream(args.model, args.weights, layers)
    step = DEFAULT_STEP[dreamer.kind] if args.step is None else args.step
    max_loss = DEFAULT_MAX_LOSS[dreamer.kind] if args.max_loss is None else (args.max_loss or None)
    layer_text = ", ".join(f"{k}={v:g}" for k, v in dreamer.layer_weights.items())
    print(f"dream: {args.image} ({image.shape[0]}x{image.shape[1]}), {args.model} "
          f"[{layer_text}], {args.octaves} octaves x {args.iterations} steps of {step:g}",
          flush=True)
    state = {"count": 0}

    def on_step(s):
        if s.step == 1:
            print(f"octave {s.octave}/{s.octaves}: {s.shape[0]}x{s.shape[1]}", flush=True)
        print(f"  octave {s.octave}  step {s.step}/{s.iterations}  loss {s.loss:.4g}  "
              f"{s.seconds:.3g} s/step", flush=True)
        if max_loss is not None and s.loss > max_loss and s.step < s.iterations:
            print(f"  loss {s.loss:.4g} > max loss {max_loss:g}: this octave ends here", flush=True)
        state["count"] += 1
        if args.save_every and state["count"] % args.save_every == 0:
            path = save_image(_output.numbered(out, f"o{s.octave}s{s.step:03d}"), s.picture())
            print(f"  saved {path}", flush=True)

    result = dreamer.run(image, octaves=args.octaves, octave_scale=args.scale,
                         iterations=args.iterations, step=step, max_loss=max_loss,
                         callback=on_step)
    save_image(out, result)
    print(f"dream: wrote {out} ({result.shape[0]}x{result.shape[1]}) in "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    return 0
