"""`python -m micrograd_gen gan train|sample`: the book's DCGAN on 64x64 faces.

    python -m micrograd_gen gan train --data faces64.tar --epochs 100 --out out/gan
    python -m micrograd_gen gan sample --checkpoint out/gan/gan.h5 --n 16 --out faces.png

train writes OUT/gan.h5 (weights, both Adam states, step and random state: rerunning the same
command resumes exactly where it stopped; --fresh starts over), OUT/epoch_NNN.png (16 faces from
fixed latents after each epoch) and OUT/history.json (D and G loss at every step).
"""
import json
from pathlib import Path

from . import _output, _training, _values

HELP = ("the book's DCGAN on 64x64 faces: train it (resumable checkpoints, a grid per epoch), "
        "sample faces")
DEFAULT_OUT = "out/gan"
DEFAULT_CHECKPOINT = Path(DEFAULT_OUT) / "gan.h5"


def add_arguments(parser):
    parser.add_argument("action", choices=["train", "sample"],
                        help="train: fit on faces, resuming from the checkpoint; sample: a grid of "
                             "generated faces")
    parser.add_argument("--data",
                        help="a folder or an uncompressed .tar of face pictures (the book uses "
                             "CelebA; default: $MICROGRAD_GEN_DATA/faces/faces64.tar)")
    parser.add_argument("--checkpoint",
                        help="checkpoint file that train writes and sample reads (default: "
                             f"OUT/gan.h5 when --out is a folder, else {DEFAULT_CHECKPOINT})")
    train = parser.add_argument_group("train")
    train.add_argument("--epochs", type=_values.positive_int, default=100,
                       help="epochs from the start of training (a resumed run goes on to the same "
                            "end)")
    train.add_argument("--batch-size", type=_values.whole(1, 65536), default=32,
                       help="real faces per step")
    train.add_argument("--steps-per-epoch", type=_values.positive_int,
                       help="fewer steps per epoch, for a short run (default: one pass)")
    train.add_argument("--max-steps", type=_values.positive_int,
                       help="stop after this many steps in all (default: no limit)")
    train.add_argument("--max-seconds", type=_values.seconds,
                       help="stop after this much training time (default: no limit)")
    train.add_argument("--checkpoint-every", type=_values.count, default=50,
                       help="steps between checkpoints (0: only at each epoch's end and the stop)")
    train.add_argument("--width", type=_values.number(1 / 64, 4),
                       help="scale every layer's filters (0.25: a CPU-sized GAN; default: the "
                            "book's 1 for a new run, the checkpoint's when resuming)")
    train.add_argument("--learning-rate", type=_values.learning_rate,
                       help="both Adams' (default: the book's 1e-4 for a new run, the "
                            "checkpoint's when resuming)")
    train.add_argument("--beta-1", type=_values.number(0, 1 - 1e-9),
                       help="both Adams' beta_1 (default: the book's (Keras's) 0.9 for a new run, "
                            "the checkpoint's when resuming; the DCGAN paper: 0.5)")
    _training.add_arguments(train)
    sample = parser.add_argument_group("sample")
    sample.add_argument("--n", type=_values.whole(1, 1024), default=16, help="how many faces")


def _faces(args):
    if args.data:
        if not Path(args.data).exists():
            raise FileNotFoundError(f"--data {args.data}: no such file or folder")
        return args.data
    from ..download import shared_data_dir
    shared = shared_data_dir()
    if shared and (shared / "faces" / "faces64.tar").exists():
        return str(shared / "faces" / "faces64.tar")
    raise FileNotFoundError("no face pictures: pass --data with a folder or .tar of faces (the "
                            "book uses CelebA, https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, "
                            "img_align_celeba) or set MICROGRAD_GEN_DATA")


def run(args):
    from ..generative import dcgan
    return (_train if args.action == "train" else _sample)(args, dcgan)


BOOK = {"width": 1.0, "learning_rate": 1e-4, "beta_1": 0.9}


def _train(args, dcgan):
    data = _faces(args)
    out = Path(args.out)
    checkpoint = Path(args.checkpoint) if args.checkpoint else out / "gan.h5"
    _output.refuse_inputs(checkpoint, {"face data": data}, "--checkpoint")
    _output.check_writable(out / "history.json")
    asked = {k: getattr(args, k) for k in BOOK if getattr(args, k) is not None}
    with _training.locked(checkpoint):
        payload = _training.plan(args, checkpoint, "gan", "gan")
        config = dict(BOOK, **asked)
        if payload is not None:   # the run goes on with its settings, except what was asked for
            config = dcgan.checkpoint_config(checkpoint)
            if "width" in asked and asked["width"] != config["width"]:
                raise ValueError(f"--width {asked['width']:g}, but {checkpoint} was trained with "
                                 f"width {config['width']:g} (the weights' shapes follow from it); "
                                 "drop --width to resume, or --fresh to start over")
            changed = {k: (config[k], v) for k, v in asked.items() if v != config[k]}
            print(f"gan: the checkpoint's settings {config}"
                  + "".join(f"; --{k.replace('_', '-')} {new:g} replaces {old:g}"
                            for k, (old, new) in changed.items()), flush=True)
            config.update(asked)
        # A GAN keeps the learning rate it is built with when it loads a checkpoint.
        gan = dcgan.GAN(seed=args.seed, **config)
        print(f"gan: training on {data}, batch {args.batch_size}, {args.epochs} epochs; checkpoint "
              f"{checkpoint}, pictures in {out}", flush=True)
        try:
            dcgan.train_gan(
                gan, data, epochs=args.epochs, batch_size=args.batch_size,
                steps_per_epoch=args.steps_per_epoch, checkpoint_path=checkpoint,
                checkpoint_every=args.checkpoint_every, monitor_dir=out, max_steps=args.max_steps,
                max_seconds=args.max_seconds, seed=args.seed, log=print,
                resume=payload is not None)
        finally:
            if checkpoint.exists():
                _output.write_text(out / "history.json",
                                   json.dumps(dcgan.read_history(checkpoint)))
    if payload is not None and gan.step == payload["step"]:
        print(f"gan: {checkpoint} is at step {gan.step} already: nothing to train (raise --epochs "
              "or --max-steps to go on, or --fresh to start over)")
        return 0
    print(f"gan: {gan.step} steps done; wrote {checkpoint} and {out / 'history.json'}")


def _sample(args, dcgan):
    if args.checkpoint:
        path = Path(args.checkpoint)
    elif not Path(args.out).suffix:   # a folder: where `gan train --out` put it
        path = Path(args.out) / "gan.h5"
    else:
        path = DEFAULT_CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no GAN checkpoint at {path}: train one first "
                                "(python -m micrograd_gen gan train) or pass --checkpoint")
    target = _output.check_writable(_output.picture_path(args.out, "samples.png"))
    _training.read_existing(path, "gan", writing=False)
    gan = dcgan.load_gan(path)
    z = dcgan.fixed_latents(args.n, gan.latent_dim, seed=args.seed)
    dcgan.save_sample_grid(gan, target, z)
    print(f"gan: wrote {args.n} faces from step {gan.step} (seed {args.seed}) to {target}")
