"""`python -m micrograd_gen bench`: the book's benchmarks, through bench/run.py of the checkout."""
import subprocess
import sys
from pathlib import Path

from . import _values

HELP = "time the book's workloads (bench/run.py): ops and applications, CPU or GPU, vs PyTorch"
DEFAULT_OUT = None
OUT_HELP = "also append the JSON result lines to this file (default: the screen only)"
RUNNER = Path(__file__).resolve().parents[2] / "bench" / "run.py"


def add_arguments(parser):
    parser.add_argument("--suite", choices=["ops", "apps", "all"], default="ops",
                        help="op micro-benchmarks, whole application steps, or both")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and 1-2 runs, in one process (seconds; what CI runs)")
    parser.add_argument("--only", metavar="NAME[,NAME...]",
                        help="only these workloads (default: all of the suite)")
    parser.add_argument("--repeat", type=_values.whole(1, 1000),
                        help="timed runs per workload (default: each workload's own)")
    parser.add_argument("--threads", type=_values.whole(1, 1024),
                        help="BLAS/OpenMP threads (default: $OPENBLAS_NUM_THREADS or all cores)")
    parser.add_argument("--torch-python",
                        help="an interpreter that can import torch (default: "
                             "$MICROGRAD_GEN_TORCH_PYTHON, else this one)")
    parser.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    parser.add_argument("--list", action="store_true", help="list the workloads")
    parser.add_argument("--markdown", nargs="+", metavar="RESULTS_JSONL",
                        help="print the README's results table for these result files")


def run(args):
    """Forward to bench/run.py in a child process (it starts one per workload anyway). There is
    no --seed: every workload draws from its own fixed seed, so runs are comparable."""
    if not RUNNER.is_file():
        raise RuntimeError(f"{RUNNER} not found: the benchmarks live in the repository's bench/ "
                           f"folder, so run this from a checkout (pip install -e .)")
    command = [sys.executable, str(RUNNER), "--device", args.device, "--suite", args.suite]
    for flag in ("quick", "no_torch", "list"):
        if getattr(args, flag):
            command.append("--" + flag.replace("_", "-"))
    for option in ("only", "repeat", "threads", "torch_python", "out"):
        value = getattr(args, option)
        if value is not None:
            command += ["--" + option.replace("_", "-"), str(value)]
    if args.markdown:
        command += ["--markdown", *args.markdown]
    return subprocess.run(command).returncode
