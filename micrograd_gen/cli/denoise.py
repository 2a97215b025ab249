"""`python -m micrograd_gen denoise train|show`: a convolutional autoencoder that cleans noisy
MNIST digits (x + 0.5 * N(0, 1), clipped).

    python -m micrograd_gen denoise train --epochs 5 --out out/denoise   # denoiser.h5, denoise.png
    python -m micrograd_gen denoise show --checkpoint out/denoise/denoiser.h5 --out before_after.png
"""
import json
from pathlib import Path

from . import _output

HELP = "a denoising autoencoder on MNIST: train it, show noisy / denoised / clean digits"
DEFAULT_OUT = "out/denoise"
DEFAULT_CHECKPOINT = Path(DEFAULT_OUT) / "denoiser.h5"


def add_arguments(parser):
    parser.add_argument("action", choices=["train", "show"])
    parser.add_argument("--data", help="MNIST: a folder with the idx files or mnist.npz (default: "
                                       "$MICROGRAD_GEN_DATA/mnist, the cache, else download)")
    parser.add_argument("--checkpoint", help="weights file (train: default OUT/denoiser.h5; "
                                             f"show: default {DEFAULT_CHECKPOINT})")
    parser.add_argument("--noise", type=float, default=0.5, help="noise factor")
    parser.add_argument("--n", type=int, default=10, help="test digits in the picture")
    train = parser.add_argument_group("train")
    train.add_argument("--epochs", type=int, default=5)
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--steps-per-epoch", type=int, help="fewer steps per epoch, for a short run")
    train.add_argument("--max-seconds", type=float, help="stop after this much training time")
    train.add_argument("--eval-digits", type=int, default=10000,
                       help="test digits for the closing score")


def _load_digits(args):
    from ..data import load_mnist
    return load_mnist(args.data) if args.data else load_mnist()


def run(args):
    from ..generative import denoise as D
    (x_train, _), (x_test, _) = _load_digits(args)
    if args.action == "train":
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        checkpoint = Path(args.checkpoint) if args.checkpoint else out / "denoiser.h5"
        print(f"denoise: training on {len(x_train):,} digits with noise factor {args.noise}",
              flush=True)
        model, history = D.train_denoiser(x_train, epochs=args.epochs, batch_size=args.batch_size,
                                          noise_factor=args.noise, steps_per_epoch=args.steps_per_epoch,
                                          max_seconds=args.max_seconds, seed=args.seed, log=print)
        D.save_denoiser(model, checkpoint, history)
        scores = D.evaluate_denoiser(model, x_test[:args.eval_digits], args.noise, seed=args.seed)
        print(f"denoise: test binary cross-entropy per pixel {scores['denoised_bce']:.4f} "
              f"(the noisy digits themselves: {scores['noisy_bce']:.4f})")
        picture = D.save_denoise_grid(model, x_test[:args.n], out / "denoise.png", args.noise,
                                      seed=args.seed)
        (out / "history.json").write_text(json.dumps({"epochs": history, "test": scores}, indent=1))
        print(f"denoise: wrote {checkpoint} and {picture}")
        return
    path = Path(args.checkpoint) if args.checkpoint else DEFAULT_CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no denoiser at {path}: train one first "
                                "(python -m micrograd_gen denoise train) or pass --checkpoint")
    model = D.load_denoiser(path)
    picture = D.save_denoise_grid(model, x_test[:args.n],
                                  _output.picture_path(args.out, "denoise.png"), args.noise,
                                  seed=args.seed)
    print(f"denoise: wrote noisy / denoised / clean rows for {args.n} test digits to {picture}")
