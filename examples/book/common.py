"""What the chapter scripts share: their command line and where the book's data is found.

Each script in this folder is one section of the book's companion notebooks, in the "percent"
format (`# %%` cells): `python examples/book/SCRIPT.py [--quick] [--out DIR]` runs it, and Jupyter
(with jupytext) or VS Code opens it as a notebook. Data comes from the shared data folder named by
$MICROGRAD_GEN_DATA (mnist/, text/, imdb/, images/, faces/, weights/) or from what the engine
finds or draws by itself; nothing is downloaded, and a script whose data is missing says so and
stops. Outputs go to --out, or to a new temporary folder: never into the repository.
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(ROOT))


def setup(name, description):
    """(quick, out): --quick asks for tiny sizes (under a minute on 2 CPU cores); out is the
    folder for everything the script writes."""
    parser = argparse.ArgumentParser(prog=name, description=description)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and few steps: the code of every listing runs in under "
                             "a minute on 2 CPU cores (what CI runs)")
    parser.add_argument("--out", type=Path,
                        help="folder for the pictures and text it writes (default: a new "
                             "temporary folder)")
    args, _ = parser.parse_known_args()  # a notebook kernel passes arguments of its own
    out = args.out or Path(tempfile.mkdtemp(prefix=f"{name}_"))
    if ROOT in [out.resolve(), *out.resolve().parents]:
        parser.error(f"--out {out}: outputs do not go into the repository; name a folder "
                     "outside it")
    out.mkdir(parents=True, exist_ok=True)
    print(f"{name}: {'quick run' if args.quick else 'full run'}; writing to {out}", flush=True)
    return args.quick, out


def shared_data(relative, what):
    """The path of `relative` in $MICROGRAD_GEN_DATA; without it, say what is missing and stop."""
    folder = os.environ.get("MICROGRAD_GEN_DATA")
    path = Path(folder).expanduser() / relative if folder else None
    if path is None or not path.exists():
        print(f"SKIPPED: {what} needs {relative} in the shared data folder; set "
              f"MICROGRAD_GEN_DATA to a folder that has it "
              f"({'unset now' if not folder else f'now {folder}'})", flush=True)
        sys.exit(0)
    return path


def pretrained(name, model):
    """'imagenet' when the engine finds `name`'s weight file without downloading, else None
    (random weights: every listing still runs, the pictures just show no learned features)."""
    from micrograd_gen import weights
    path, _ = weights.find(name)
    if path is None:
        print(f"NOTE: no local {model} weights ({weights.entry(name)['file']} in "
              f"$MICROGRAD_GEN_WEIGHTS or $MICROGRAD_GEN_DATA/weights): using random weights",
              flush=True)
        return None
    return "imagenet"
