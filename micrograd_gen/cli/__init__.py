"""`python -m micrograd_gen <command>`: one command line for the whole chapter.

Each command is a module in this folder with `HELP` (one line), `add_arguments(parser)` and
`run(args)`. The common flags (--device, --seed, --out, --debug) are added here, to every command
that uses them, so they behave alike: a bad value stops the command before any work with one line
naming the flag and the accepted range (exit status 2; cli/_values.py), errors print one line (the
traceback only with --debug), Ctrl-C stops cleanly (exit status 130), and outputs are written
through temporary files so an interrupted run never leaves half a picture or checkpoint.
"""
import argparse
import importlib
import signal
import sys
import warnings

from . import _values

# Order of `--help`; each name is a module micrograd_gen/cli/<name>.py.
COMMANDS = ["tour", "dream", "style", "train-style", "stylize", "textgen", "vae", "gan",
            "denoise", "weights", "bench"]


# Common flags a command has no use for: offering them would suggest they do something.
UNUSED_COMMON = {"stylize": {"--seed"}, "bench": {"--seed"},
                 "weights": {"--device", "--seed", "--out"}}


def _module(command):
    return importlib.import_module(f"micrograd_gen.cli.{command.replace('-', '_')}")


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (the flag, what it accepts, what was given)
    instead of a usage block that can run to a screenful."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" where the default is a value; an option whose default is None (the
    command decides) or a flag says in its own help what happens when it is not given."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


def _common(parser, module, unused=()):
    if "--device" not in unused:
        parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                            help="cpu runs on NumPy, gpu on CuPy")
    if "--seed" not in unused:
        parser.add_argument("--seed", type=_values.seed, default=0,
                            help="seed for every random draw, for repeatable runs")
    if "--out" not in unused:
        parser.add_argument("--out", default=getattr(module, "DEFAULT_OUT", "out"),
                            help=getattr(module, "OUT_HELP",
                                         "folder or file for what the command writes"))
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback when something fails")


def build_parser(prog="micrograd-gen"):
    """prog: how the user ran us, for usage lines (`python -m micrograd_gen` passes its own)."""
    from .. import __version__
    parser = _Parser(
        prog=prog,
        description="The generative deep learning chapter on a small NumPy/CuPy engine.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = _module(name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP,
                           formatter_class=_HelpFormatter)
        _common(p, module, UNUSED_COMMON.get(name, ()))
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def setup(args):
    """Apply the common flags: where tensors live and the seeds."""
    import numpy as np

    from .. import backend, fastpath
    backend.use("cupy" if getattr(args, "device", "cpu") == "gpu" else "numpy")
    if fastpath.enabled():   # reuse freed arrays' pages step after step (accel/memory.py)
        from .. import accel
        accel.keep_freed_memory()
    if hasattr(args, "seed"):
        np.random.seed(args.seed)
        from .. import nn
        nn.set_seed(args.seed)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _interrupt_again(previous_hook):
    """A sys.unraisablehook: a KeyboardInterrupt that lands in a destructor or a weakref callback
    (h5py's clean-up, say) can only be printed there, and the run would go on. Raise it again a
    moment later, once the hook has returned, where it stops the run: a one-shot SIGALRM, whose
    handler runs in the main thread (no thread of our own needed)."""
    def hook(unraisable):
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            try:
                signal.signal(signal.SIGALRM, _raise_keyboard_interrupt)
                signal.setitimer(signal.ITIMER_REAL, 0.01)
            except ValueError:   # not the main thread: signal.signal refuses there
                previous_hook(unraisable)
        else:
            previous_hook(unraisable)
    return hook


def _one_line_warning(message, category, filename, lineno, line=None):
    # A user of the command line reads "warning: ...", not the source line that warned.
    return f"warning: {message}\n"


def main(argv=None, prog="micrograd-gen"):
    """The `micrograd-gen` script; `python -m micrograd_gen` calls it with its own prog."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:   # a bad value (2) or --help (0): a status, also when called in-process
        return e.code
    if not getattr(args, "run", None):
        parser.print_help()
        return 0 if args.command is None else 2
    previous_hook, previous_format = sys.unraisablehook, warnings.formatwarning
    previous_alarm = signal.getsignal(signal.SIGALRM)
    sys.unraisablehook = _interrupt_again(previous_hook)
    warnings.formatwarning = _one_line_warning
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
    finally:
        sys.unraisablehook, warnings.formatwarning = previous_hook, previous_format
        if signal.getsignal(signal.SIGALRM) is _raise_keyboard_interrupt:
            signal.setitimer(signal.ITIMER_REAL, 0)       # a re-raise still pending: not ours now
            signal.signal(signal.SIGALRM, previous_alarm)
