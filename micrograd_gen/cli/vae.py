"""`python -m micrograd_gen vae train|grid|walk|concept`: the book's VAE on MNIST and its
latent-space pictures.

    python -m micrograd_gen vae train --epochs 30 --out out/vae    # vae.h5, grid.png, history.json
    python -m micrograd_gen vae grid --checkpoint out/vae/vae.h5 --out grid.png
    python -m micrograd_gen vae walk --checkpoint out/vae/vae.h5 --from-index 0 --to-index 1 \\
        --out walk.gif
    python -m micrograd_gen vae concept --checkpoint out/vae/vae.h5 --digit 1 --out concept.png
"""
import json
from pathlib import Path

import numpy as np

from . import _output, _training, _values

HELP = ("the book's VAE on MNIST: train it, draw the 30x30 latent grid, walk between digits, "
        "concept vectors")
DEFAULT_OUT = "out/vae"
DEFAULT_CHECKPOINT = Path(DEFAULT_OUT) / "vae.h5"


def add_arguments(parser):
    parser.add_argument("action", choices=["train", "grid", "walk", "concept"],
                        help="train: fit on all 70,000 digits; grid: decode a grid over the latent "
                             "square; walk: GIF between two test digits; concept: decode "
                             "z + alpha v")
    parser.add_argument("--data", help="MNIST: a folder with the idx files or mnist.npz (default: "
                                       "$MICROGRAD_GEN_DATA/mnist, the cache, else download)")
    parser.add_argument("--checkpoint",
                        help="checkpoint file that train writes and the others read (default: "
                             f"OUT/vae.h5 when --out is a folder, else {DEFAULT_CHECKPOINT})")
    train = parser.add_argument_group("train")
    train.add_argument("--epochs", type=_values.positive_int, default=30,
                       help="epochs from the start of training (a resumed run goes on to the same "
                            "end)")
    train.add_argument("--batch-size", type=_values.whole(1, 70000), default=128,
                       help="digits per step")
    train.add_argument("--steps-per-epoch", type=_values.positive_int,
                       help="fewer steps per epoch, for a short run (default: one pass)")
    train.add_argument("--max-seconds", type=_values.seconds,
                       help="stop after this much training time (default: no limit)")
    _training.add_arguments(train)
    train.add_argument("--eval-digits", type=_values.whole(1, 10000), default=10000,
                       help="test digits for the closing reconstruction loss")
    grid = parser.add_argument_group("grid")
    grid.add_argument("--n", type=_values.whole(1, 200), default=30,
                      help="the grid is n x n digits (train draws one too)")
    grid.add_argument("--scale", type=_values.number(0, 1000, low_open=True), default=1.0,
                      help="the grid spans [-scale, scale]^2")
    walk = parser.add_argument_group("walk")
    walk.add_argument("--from-index", type=_values.whole(0, 9999), default=0,
                      help="test digit to start from")
    walk.add_argument("--to-index", type=_values.whole(0, 9999), default=1,
                      help="test digit to end at")
    walk.add_argument("--steps", type=_values.whole(2, 1000), default=30,
                      help="frames from one digit to the other")
    concept = parser.add_argument_group("concept")
    concept.add_argument("--digit", type=_values.whole(0, 9), default=1,
                         help="the attribute: being this digit (mean z of those minus the rest)")
    concept.add_argument("--alphas", type=_values.number_list(-1000, 1000), default="-2,-1,0,1,2",
                         help="comma-separated multiples of v")


def _load_digits(args):
    from ..data import load_mnist
    return load_mnist(args.data) if args.data else load_mnist()


def run(args):
    from ..generative import vae as V
    action = {"train": _train, "grid": _grid, "walk": _walk, "concept": _concept}[args.action]
    return action(args, V)


def _train(args, V):
    out = Path(args.out)
    checkpoint = Path(args.checkpoint) if args.checkpoint else out / "vae.h5"
    _check_data(args)
    for name in ("grid.png", "history.json"):
        _output.check_writable(out / name)
    with _training.locked(checkpoint):
        payload = _training.plan(args, checkpoint, "vae", "vae")
        if payload is not None:
            done = int(payload["extra"].get("epoch", 0))
            if done >= args.epochs:
                return _training.nothing_to_do("vae", checkpoint, done, args.epochs, "epochs")
        (x_train, _), (x_test, _) = _load_digits(args)
        digits = np.concatenate([x_train, x_test])  # all 70,000, as the book trains
        print(f"vae: training on {len(digits):,} digits, batch {args.batch_size}, {args.epochs} "
              f"epochs; checkpoint {checkpoint}", flush=True)
        vae, history = V.train_vae(digits, epochs=args.epochs, batch_size=args.batch_size,
                                   steps_per_epoch=args.steps_per_epoch,
                                   max_seconds=args.max_seconds, seed=args.seed,
                                   checkpoint_path=checkpoint, resume=payload is not None,
                                   log=print)
    test = x_test[:args.eval_digits]
    scores = V.evaluate_vae(vae, test)
    print(f"vae: test reconstruction loss {scores['reconstruction_loss']:.2f} (binary "
          f"cross-entropy summed over 784 pixels, mean over {len(test):,} test digits), kl "
          f"{scores['kl_loss']:.3f}")
    grid = V.save_latent_grid(vae.decoder, out / "grid.png", n=args.n, scale=args.scale)
    _output.write_text(out / "history.json",
                       json.dumps({"epochs": history, "test": scores}, indent=1))
    print(f"vae: wrote {checkpoint}, {grid} and {out / 'history.json'}")


def _check_data(args):
    if args.data is not None and not Path(args.data).exists():
        raise FileNotFoundError(f"--data {args.data}: no such file or folder")


def _checkpoint(args):
    """--checkpoint, else vae.h5 in --out when --out is a folder (where `vae train --out` put
    it), else the default one."""
    if args.checkpoint:
        path = Path(args.checkpoint)
    elif not Path(args.out).suffix:
        path = Path(args.out) / "vae.h5"
    else:
        path = DEFAULT_CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no VAE checkpoint at {path}: train one first "
                                f"(python -m micrograd_gen vae train) or pass --checkpoint")
    _training.read_existing(path, "vae", writing=False)
    return path


def _grid(args, V):
    target = _output.check_writable(_output.picture_path(args.out, "grid.png"))
    vae = V.load_vae(_checkpoint(args))
    path = V.save_latent_grid(vae.decoder, target, n=args.n, scale=args.scale)
    print(f"vae: wrote the {args.n}x{args.n} latent grid over [-{args.scale:g}, {args.scale:g}]^2 "
          f"to {path}")


def _walk(args, V):
    target = Path(args.out) if Path(args.out).suffix else Path(args.out) / "walk.gif"
    if target.suffix.lower() != ".gif":
        raise ValueError(f"--out {args.out}: the walk is an animated GIF; give a .gif name")
    _output.check_writable(target)
    _check_data(args)
    vae = V.load_vae(_checkpoint(args))
    _, (x_test, y_test) = _load_digits(args)
    for flag, index in (("--from-index", args.from_index), ("--to-index", args.to_index)):
        if not 0 <= index < len(x_test):
            raise ValueError(f"{flag} must be in [0, {len(x_test)}), got {index}")
    path = V.save_latent_walk(vae.encoder, vae.decoder, x_test[args.from_index],
                              x_test[args.to_index], target, steps=args.steps)
    print(f"vae: wrote the walk from test digit {args.from_index} (a {y_test[args.from_index]}) to "
          f"{args.to_index} (a {y_test[args.to_index]}), {args.steps} steps, to {path}")


def _concept(args, V):
    target = _output.check_writable(_output.picture_path(args.out, "concept.png"))
    _check_data(args)
    vae = V.load_vae(_checkpoint(args))
    _, (x_test, y_test) = _load_digits(args)
    alphas = args.alphas
    vector = V.concept_vector(vae.encoder, x_test, y_test == args.digit)
    start = V.encode(vae.encoder, x_test[y_test != args.digit][:1])[0]
    path = V.save_concept_row(vae.decoder, start, vector, target, alphas=alphas)
    print(f"vae: concept vector 'is a {args.digit}' = {np.round(vector, 3).tolist()}; decoded "
          f"z + alpha v for alpha in {alphas} to {path}")
