"""`python -m micrograd_gen gan train|sample`: the book's DCGAN on 64x64 faces.

    python -m micrograd_gen gan train --data faces64.tar --epochs 100 --out out/gan
    python -m micrograd_gen gan sample --checkpoint out/gan/gan.h5 --n 16 --out faces.png

train writes OUT/gan.h5 (weights, both Adam states, step and random state: rerunning the same
command resumes exactly where it stopped), OUT/epoch_NNN.png (16 faces from fixed latents after
each epoch) and OUT/history.json (D and G loss at every step).
"""
import json
import os
from pathlib import Path

from . import _output

HELP = "the book's DCGAN on 64x64 faces: train it (resumable checkpoints, a grid per epoch), sample faces"
DEFAULT_OUT = "out/gan"
DEFAULT_CHECKPOINT = Path(DEFAULT_OUT) / "gan.h5"


def add_arguments(parser):
    parser.add_argument("action", choices=["train", "sample"])
    parser.add_argument("--data", help="a folder or an uncompressed .tar of face pictures (the book "
                                       "uses CelebA; default: $MICROGRAD_GEN_DATA/faces/faces64.tar)")
    parser.add_argument("--checkpoint", help="checkpoint file (train: default OUT/gan.h5; "
                                             f"sample: default {DEFAULT_CHECKPOINT})")
    train = parser.add_argument_group("train")
    train.add_argument("--epochs", type=int, default=100)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--steps-per-epoch", type=int, help="fewer steps per epoch, for a short run")
    train.add_argument("--max-steps", type=int, help="stop after this many steps in all")
    train.add_argument("--max-seconds", type=float, help="stop after this much training time")
    train.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints")
    train.add_argument("--width", type=float, default=1.0,
                       help="scale every layer's filters (0.25: a CPU-sized GAN; default: the book's 1)")
    train.add_argument("--learning-rate", type=float, default=1e-4, help="both Adams' (book: 1e-4)")
    train.add_argument("--beta-1", type=float, default=0.9,
                       help="both Adams' beta_1 (book: Keras's 0.9; the DCGAN paper: 0.5)")
    train.add_argument("--fresh", action="store_true",
                       help="start over even if the checkpoint exists (it is overwritten)")
    sample = parser.add_argument_group("sample")
    sample.add_argument("--n", type=int, default=16, help="how many faces")


def _faces(args):
    if args.data:
        return args.data
    from ..download import shared_data_dir
    shared = shared_data_dir()
    if shared and (shared / "faces" / "faces64.tar").exists():
        return str(shared / "faces" / "faces64.tar")
    raise FileNotFoundError("no face pictures: pass --data with a folder or .tar of faces (the book "
                            "uses CelebA, https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, "
                            "img_align_celeba) or set MICROGRAD_GEN_DATA")


def run(args):
    from ..generative import dcgan
    return (_train if args.action == "train" else _sample)(args, dcgan)


def _train(args, dcgan):
    data = _faces(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(args.checkpoint) if args.checkpoint else out / "gan.h5"
    if args.fresh and checkpoint.exists():
        os.remove(checkpoint)
    config = {"width": args.width, "learning_rate": args.learning_rate, "beta_1": args.beta_1}
    if checkpoint.exists():   # resuming: the run goes on with the settings it was started with
        config = dcgan.checkpoint_config(checkpoint)
        print(f"gan: resuming {checkpoint} with its settings {config}", flush=True)
    gan = dcgan.GAN(seed=args.seed, **config)
    print(f"gan: training on {data}, batch {args.batch_size}, {args.epochs} epochs; checkpoint "
          f"{checkpoint}, pictures in {out}", flush=True)
    try:
        history = dcgan.train_gan(
            gan, data, epochs=args.epochs, batch_size=args.batch_size,
            steps_per_epoch=args.steps_per_epoch, checkpoint_path=checkpoint,
            checkpoint_every=args.checkpoint_every, monitor_dir=out, max_steps=args.max_steps,
            max_seconds=args.max_seconds, seed=args.seed, log=print)
    finally:
        if checkpoint.exists():
            history = dcgan.read_history(checkpoint)
            (out / "history.json").write_text(json.dumps(history))
    print(f"gan: {gan.step} steps done; wrote {checkpoint} and {out / 'history.json'}")


def _sample(args, dcgan):
    path = Path(args.checkpoint) if args.checkpoint else DEFAULT_CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no GAN checkpoint at {path}: train one first "
                                "(python -m micrograd_gen gan train) or pass --checkpoint")
    gan = dcgan.load_gan(path)
    target = _output.picture_path(args.out, "samples.png")
    z = dcgan.fixed_latents(args.n, gan.latent_dim, seed=args.seed)
    dcgan.save_sample_grid(gan, target, z)
    print(f"gan: wrote {args.n} faces from step {gan.step} (seed {args.seed}) to {target}")
