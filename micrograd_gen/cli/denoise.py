"""`python -m micrograd_gen denoise train|show`: a convolutional autoencoder that cleans noisy
MNIST digits (x + 0.5 * N(0, 1), clipped).

    python -m micrograd_gen denoise train --epochs 5 --out out/denoise   # denoiser.h5, denoise.png
    python -m micrograd_gen denoise show --checkpoint out/denoise/denoiser.h5 --out before_after.png
"""
import json
from pathlib import Path

from . import _output, _training, _values

HELP = "a denoising autoencoder on MNIST: train it, show noisy / denoised / clean digits"
DEFAULT_OUT = "out/denoise"
DEFAULT_CHECKPOINT = Path(DEFAULT_OUT) / "denoiser.h5"


def add_arguments(parser):
    parser.add_argument("action", choices=["train", "show"],
                        help="train: fit on noisy MNIST digits, resuming from the checkpoint; "
                             "show: noisy / denoised / clean test digits in one picture")
    parser.add_argument("--data", help="MNIST: a folder with the idx files or mnist.npz (default: "
                                       "$MICROGRAD_GEN_DATA/mnist, the cache, else download)")
    parser.add_argument("--checkpoint",
                        help="weights file that train writes and show reads (default: "
                             f"OUT/denoiser.h5 when --out is a folder, else {DEFAULT_CHECKPOINT})")
    parser.add_argument("--noise", type=_values.number(0, 10), default=0.5,
                        help="noise factor: x + noise * N(0, 1), clipped to [0, 1]")
    parser.add_argument("--n", type=_values.whole(1, 100), default=10,
                        help="test digits in the picture")
    train = parser.add_argument_group("train")
    train.add_argument("--epochs", type=_values.positive_int, default=5,
                       help="epochs from the start of training (a resumed run goes on to the same "
                            "end)")
    train.add_argument("--batch-size", type=_values.whole(1, 60000), default=128,
                       help="digits per step")
    train.add_argument("--steps-per-epoch", type=_values.positive_int,
                       help="fewer steps per epoch, for a short run (default: one pass)")
    train.add_argument("--max-seconds", type=_values.seconds,
                       help="stop after this much training time (default: no limit)")
    train.add_argument("--eval-digits", type=_values.whole(1, 10000), default=10000,
                       help="test digits for the closing score")
    _training.add_arguments(train)


def _load_digits(args):
    from ..data import load_mnist
    if args.data is not None and not Path(args.data).exists():
        raise FileNotFoundError(f"--data {args.data}: no such file or folder")
    return load_mnist(args.data) if args.data else load_mnist()


def run(args):
    from ..generative import denoise as D
    if args.action == "train":
        return _train(args, D)
    if args.checkpoint:
        path = Path(args.checkpoint)
    elif not Path(args.out).suffix:   # a folder: where `denoise train --out` put it
        path = Path(args.out) / "denoiser.h5"
    else:
        path = DEFAULT_CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no denoiser at {path}: train one first "
                                "(python -m micrograd_gen denoise train) or pass --checkpoint")
    target = _output.check_writable(_output.picture_path(args.out, "denoise.png"))
    _training.read_existing(path, "denoise", writing=False)
    model = D.load_denoiser(path)
    _, (x_test, _) = _load_digits(args)
    picture = D.save_denoise_grid(model, x_test[:args.n], target, args.noise, seed=args.seed)
    print(f"denoise: wrote noisy / denoised / clean rows for {args.n} test digits to {picture}")


def _train(args, D):
    out = Path(args.out)
    checkpoint = Path(args.checkpoint) if args.checkpoint else out / "denoiser.h5"
    for name in ("denoise.png", "history.json"):
        _output.check_writable(out / name)
    with _training.locked(checkpoint):
        payload = _training.plan(args, checkpoint, "denoise", "denoise")
        model, history = None, []
        if payload is not None:
            history = list(payload["extra"].get("history", []))
            if len(history) >= args.epochs:
                return _training.nothing_to_do("denoise", checkpoint, len(history), args.epochs,
                                               "epochs")
            model = D.load_denoiser(checkpoint)
            # the checkpoint keeps the weights only: say what does not carry over
            print(f"denoise: epochs {len(history) + 1}..{args.epochs} from the saved weights; "
                  "Adam starts afresh (its state is not saved)", flush=True)
        (x_train, _), (x_test, _) = _load_digits(args)
        print(f"denoise: training on {len(x_train):,} digits with noise factor {args.noise}",
              flush=True)
        model, new = D.train_denoiser(x_train, epochs=args.epochs - len(history),
                                      batch_size=args.batch_size, noise_factor=args.noise,
                                      model=model, steps_per_epoch=args.steps_per_epoch,
                                      max_seconds=args.max_seconds, seed=args.seed + len(history),
                                      log=print)
        done = len(history)
        history += [dict(record, epoch=record["epoch"] + done) for record in new]
        D.save_denoiser(model, checkpoint, history)
    scores = D.evaluate_denoiser(model, x_test[:args.eval_digits], args.noise, seed=args.seed)
    print(f"denoise: test binary cross-entropy per pixel {scores['denoised_bce']:.4f} "
          f"(the noisy digits themselves: {scores['noisy_bce']:.4f})")
    picture = D.save_denoise_grid(model, x_test[:args.n], out / "denoise.png", args.noise,
                                  seed=args.seed)
    _output.write_text(out / "history.json",
                       json.dumps({"epochs": history, "test": scores}, indent=1))
    print(f"denoise: wrote {checkpoint} and {picture}")
