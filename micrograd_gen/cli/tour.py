"""`python -m micrograd_gen tour`: the whole chapter on this machine in about five minutes."""
HELP = ("a five-minute tour: text generation, a denoiser, and (when data is there) VAE, DeepDream, "
        "style")
DEFAULT_OUT = "out/tour"


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true",
                        help="a run of under a minute with tiny budgets (what CI runs)")


def run(args):
    from ..tour import run_tour
    parts = run_tour(args.out, quick=args.quick)
    return 1 if any(p.status == "failed" for p in parts) else 0
