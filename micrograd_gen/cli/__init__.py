"""`python -m micrograd_gen <command>`: one command line for the whole chapter.

Each command is a module in this folder with `HELP` (one line), `add_arguments(parser)` and
`run(args)`. Every command gets --device, --seed, --out and --debug here, so they behave alike:
errors print one line (the traceback only with --debug), Ctrl-C stops cleanly, and outputs are
written through temporary files so an interrupted run never leaves half a picture or checkpoint.
"""
import argparse
import importlib
import sys

# Order of `--help`; each name is a module micrograd_gen/cli/<name>.py.
COMMANDS = ["tour", "dream", "style", "train-style", "stylize", "textgen", "vae", "gan",
            "denoise", "weights", "bench"]


def _module(command):
    return importlib.import_module(f"micrograd_gen.cli.{command.replace('-', '_')}")


def _common(parser, default_out):
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                        help="cpu runs on NumPy, gpu on CuPy (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for every random draw, for repeatable runs (default: %(default)s)")
    parser.add_argument("--out", default=default_out,
                        help="folder or file for what the command writes (default: %(default)s)")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback when something fails")


def build_parser(prog="micrograd-gen"):
    """prog: how the user ran us, for usage lines (`python -m micrograd_gen` passes its own)."""
    from .. import __version__
    parser = argparse.ArgumentParser(
        prog=prog,
        description="The generative deep learning chapter on a small NumPy/CuPy engine.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = _module(name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        _common(p, getattr(module, "DEFAULT_OUT", "out"))
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def setup(args):
    """Apply the common flags: where tensors live and the seeds."""
    import numpy as np

    from .. import backend
    backend.use("cupy" if args.device == "gpu" else "numpy")
    np.random.seed(args.seed)
    try:
        from .. import nn
        nn.set_seed(args.seed)
    except (ImportError, AttributeError):
        pass


def main(argv=None, prog="micrograd-gen"):
    """The `micrograd-gen` script; `python -m micrograd_gen` calls it with its own prog."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        setup(args)
        return args.run(args) or 0
    except KeyboardInterrupt:
        print("\ninterrupted: nothing half-written was kept", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001  one line for users, the traceback with --debug
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
