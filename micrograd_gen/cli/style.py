"""`python -m micrograd_gen style CONTENT STYLE --out styled.png`: the book's neural style transfer.

    python -m micrograd_gen style tubingen.jpg starry_night.jpg --out styled.png  # L-BFGS 20 rounds
    python -m micrograd_gen style tubingen.jpg starry_night.jpg --optimizer sgd --iterations 4000
    python -m micrograd_gen style photo.jpg scream.jpg --height 256 --iterations 5 --save-every 1
"""
import time

from . import _output, _values

HELP = ("neural style transfer: paint a picture in the manner of another (the book's loss and "
        "optimisers)")
DEFAULT_OUT = "styled.png"


# the book's constants (generative/style_transfer.py), repeated so that building the parser
# imports nothing heavy
HEIGHT, CONTENT_WEIGHT, STYLE_WEIGHT, TV_WEIGHT = 400, 2.5e-8, 1e-6, 1e-6


def add_arguments(parser):
    parser.add_argument("content", help="the picture whose content is kept")
    parser.add_argument("style",
                        help="the picture whose style is copied (resized to the content's size)")
    parser.add_argument("--height", type=_values.whole(32, 8192), default=HEIGHT,
                        help="output height in pixels; the width keeps the content's aspect ratio")
    parser.add_argument("--optimizer", choices=["lbfgs", "sgd"], default="lbfgs",
                        help="lbfgs: scipy L-BFGS-B in rounds of 20 evaluations (1st edition); "
                             "sgd: SGD with ExponentialDecay(100, 100, 0.96) (2nd edition)")
    parser.add_argument("--iterations", type=_values.auto_or(_values.positive_int), default="auto",
                        help="L-BFGS rounds or SGD steps; auto: 20 rounds for lbfgs, 4000 steps "
                             "for sgd, as the book")
    parser.add_argument("--learning-rate", type=_values.auto_or(_values.positive_float32),
                        default="auto",
                        help="sgd's initial rate; auto: the book's 100 at 400x600, scaled by the "
                             "pixel count at other sizes")
    parser.add_argument("--content-weight", type=_values.nonnegative, default=CONTENT_WEIGHT,
                        help="weight of the content loss")
    parser.add_argument("--style-weight", type=_values.nonnegative, default=STYLE_WEIGHT,
                        help="shared equally by the five style layers")
    parser.add_argument("--tv-weight", type=_values.nonnegative, default=TV_WEIGHT,
                        help="total-variation weight (smoothness)")
    parser.add_argument("--init", choices=["content", "noise"], default="content",
                        help="start from the content picture (the book) or from noise")
    parser.add_argument("--weights", default="imagenet",
                        help="'imagenet' (cache, $MICROGRAD_GEN_WEIGHTS, else download) or the "
                             "path of VGG19's Keras .h5 weight file")
    parser.add_argument("--save-every", type=_values.count, default=0, metavar="N",
                        help="also save the picture every N iterations, as OUT_<iteration>.png "
                             "(0: never)")
    parser.add_argument("--book-batch", action="store_true",
                        help="run content, style and result through VGG19 as one batch of three at "
                             "every evaluation, as the book does (same result, 3x the work)")


def run(args):
    from ..applications import VGG19
    from ..data.images import save_image
    from ..generative import style_transfer as S

    out = _output.picture_path(args.out, DEFAULT_OUT)
    _output.refuse_inputs(out, {"content picture": args.content, "style picture": args.style,
                                "--weights file": args.weights})
    _output.check_writable(out)
    base, ref = S.prepare(args.content, args.style, args.height)
    started = time.perf_counter()
    model = VGG19(include_top=False, weights=args.weights)
    loss = S.StyleTransferLoss(base, ref, model=model, content_weight=args.content_weight,
                               style_weight=args.style_weight, tv_weight=args.tv_weight,
                               batch3=args.book_batch)
    iterations = args.iterations or S.ITERATIONS[args.optimizer]
    unit = "round" if args.optimizer == "lbfgs" else "step"
    print(f"style: {args.content} in the style of {args.style}, {base.shape[1]}x{base.shape[2]}, "
          f"{args.optimizer} {iterations} {unit}s"
          + (f" of {S.LBFGS_EVALUATIONS_PER_ROUND} evaluations" if unit == "round" else ""),
          flush=True)
    # SGD steps are quick and many: print about every 10 s; L-BFGS rounds are slow: print each.
    last_print = [0.0]

    def on_iteration(s):
        now = time.perf_counter()
        if (unit == "round" or s.iteration in (1, s.iterations) or now - last_print[0] > 10
                or (args.save_every and s.iteration % args.save_every == 0)):
            last_print[0] = now
            p = s.parts
            print(f"{unit} {s.iteration}/{s.iterations}  loss {s.loss:.5g}  "
                  f"(content {p['content']:.4g}  style {p['style']:.4g}  tv {p['tv']:.4g})  "
                  f"{s.seconds:.3g} s/{unit}"
                  + (f" ({s.evaluations} evaluations)" if unit == "round" else ""), flush=True)
        if args.save_every and s.iteration % args.save_every == 0:
            path = save_image(_output.numbered(out, f"{s.iteration:04d}"), s.picture())
            print(f"  saved {path}", flush=True)

    x = S.optimize(loss, S.initial_image(base, args.init, args.seed), args.optimizer, iterations,
                   on_iteration, learning_rate=args.learning_rate)
    result = S.vgg19.deprocess_image(x)
    save_image(out, result)
    print(f"style: wrote {out} ({result.shape[0]}x{result.shape[1]}) in "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    return 0
