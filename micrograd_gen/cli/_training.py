"""What the training commands (textgen train, vae train, gan train, denoise train, train-style)
share: one rule for their checkpoint.

- The checkpoint is --checkpoint when given, else a file in (or named by) --out.
- If a checkpoint of this command is there, the run resumes from it; --fresh starts over, and the
  old checkpoint is replaced only when the first new one is written. --resume is accepted for
  old scripts and insists: with no checkpoint there it is an error (a mistyped path must not
  train from scratch without a word).
- A file there that is not this command's checkpoint (a picture, another model's checkpoint) is
  never overwritten, --fresh or not.
- Everything is checked before anything is written, and the start line says which case it is.
- The checkpoint is locked for the whole run: a second run on the same file stops at once.
"""
import contextlib
from pathlib import Path

from . import _output

# What the checkpoint kinds are called in messages (generative/checkpoint.py's kind_of names).
KIND_NAMES = {"vae": "VAE", "gan": "GAN", "denoise": "denoiser", "textgen": "text model",
              "fast_style": "fast-style (train-style)"}


def add_arguments(parser):
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--fresh", action="store_true",
                       help="start over even if the checkpoint exists (without it a run resumes "
                            "from an existing checkpoint); the old one is replaced only when the "
                            "new one is written")
    group.add_argument("--resume", action="store_true",
                       help="resuming is the default when the checkpoint exists; --resume "
                            "insists, and stops with an error when there is none")


def read_existing(path, kind, flag="--checkpoint", writing=True):
    """The payload of the checkpoint at `path`, None when there is no file; an error when the
    file there is not a checkpoint of `kind` (when `writing`, it is then never overwritten)."""
    from ..generative.checkpoint import CheckpointError, kind_of, read_checkpoint
    path = Path(path)
    if not path.exists():
        return None
    what = KIND_NAMES[kind]
    refusal = "; refusing to overwrite it: give another path" if writing else ""
    try:
        payload = read_checkpoint(path)
    except CheckpointError as e:
        raise CheckpointError(f"{flag} {path} exists and is not a {what} checkpoint ({e})"
                              f"{refusal}") from None
    found = kind_of(payload)
    if found != kind:
        raise CheckpointError(f"{flag} {path} is a {KIND_NAMES.get(found, 'different kind of')} "
                              f"checkpoint, not a {what} one{refusal}")
    return payload


def plan(args, path, kind, command, flag="--checkpoint"):
    """Apply the rule to `path` before any work: returns the payload to resume from, or None for
    a fresh start, and prints which it is."""
    from ..generative.checkpoint import remove_stale_temporaries
    path = Path(path)
    _output.check_writable(path, flag)
    payload = read_existing(path, kind, flag)
    if args.resume and payload is None:
        raise FileNotFoundError(f"--resume: no checkpoint at {path} to continue (check the path; "
                                "without --resume a new run starts there)")
    remove_stale_temporaries(path.parent)   # what killed runs left: checkpoints, pictures
    if payload is not None and not args.fresh:
        print(f"{command}: resuming from {path} (--fresh starts over)", flush=True)
        return payload
    if payload is not None:
        print(f"{command}: --fresh: starting over; {path} is replaced when the new checkpoint is "
              "written", flush=True)
    else:
        print(f"{command}: new run; checkpoint {path}", flush=True)
    return None


@contextlib.contextmanager
def locked(path, flag="--checkpoint"):
    """Hold the checkpoint's lock for the whole run (generative/checkpoint.py's lock): a second
    run on the same checkpoint stops here, before it reads or writes anything."""
    from ..generative.checkpoint import lock
    _output.check_writable(path, flag)
    with lock(path):
        yield


def nothing_to_do(command, path, done, total, unit):
    """The checkpoint is already at (or past) the end asked for: say so, write nothing."""
    print(f"{command}: {path} has done {done} of --{unit} {total}: nothing to train (raise "
          f"--{unit} to go on, or --fresh to start over)", flush=True)
    return 0
