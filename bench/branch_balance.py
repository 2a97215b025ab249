"""How evenly an Inception block's branches fill the two threads: each block's branches' thread
times, forward and backward, against the best any split of whole branches could do.

  python bench/branch_balance.py [WORKLOAD] [--steps N] [--warmup N] [--quick]

WORKLOAD is a name from `python bench/run.py --list` whose network has Inception blocks
(default deepdream_step_204x306). The fast path runs a block's branches side by side, the
largest first, each on whichever thread is free (accel/branches.py), and keeps each branch's
thread time from its last run; this reads those after every step and prints, per block and
direction, the median branch times, the block's makespan by that largest-first rule, half the
block's work (no split of whole branches does better) and the largest branch, then what the
makespans exceed the halves by in all: the thread time one core waits on the other in a step,
at best, for want of even work.

Why. A block whose one branch is more than half its work (InceptionV3's mixed3: a 3x3 stride-2
convolution to 384 filters beside a branch a third its size) leaves a thread waiting, however
the branches are handed out; whether that waiting is worth a finer cut is this figure
(bench/README.md, "Issue 17, session 18").
"""
import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


def largest_first_makespan(costs, threads):
    """The time the last thread ends when each cost, the largest first, goes to the thread that
    is free first."""
    ends = [0.0] * threads
    for cost in sorted(costs, reverse=True):
        ends[ends.index(min(ends))] += cost
    return max(ends)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", nargs="?", default="deepdream_step_204x306",
                        help="a name from `python bench/run.py --list`")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="run.py's small sizes (for tests)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error(f"--steps must be at least 1 and --warmup at least 0, got {args.steps} and "
                     f"{args.warmup}")
    import run
    from micrograd_gen.accel import branches, workers
    step, _ = run.cpu_step(args.workload, args.quick, parser)
    for _ in range(args.warmup):
        step()
    # Each run of a block replaces its entry in the table it orders its next run by, so the
    # table after a step holds that step's costs; it is read, never cleared (the step would
    # then hand out its branches by the kernels' estimate, not as it normally does).
    runs = {}                                 # (block's key, direction) -> [costs per step]
    for _ in range(args.steps):
        step()
        for key, costs in branches._LAST_COSTS.items():
            runs.setdefault(key, []).append(list(costs))
    if not runs:
        print(f"{args.workload}: no Inception block ran on the fast path")
        return
    threads = workers.chunk_pool()[1]
    print(f"{args.workload}: {threads} threads, medians of {args.steps} steps, ms of thread time")
    print(f"{'block input':22s} {'direction':9s} {'branches':34s} {'makespan':>8s} "
          f"{'half':>6s} {'largest':>7s}")
    waiting = 0.0
    for (*_, shape, direction), per_step in runs.items():
        costs = [statistics.median(step_costs) * 1e3 for step_costs in zip(*per_step)]
        makespan = largest_first_makespan(costs, threads)
        half = sum(costs) / threads
        waiting += makespan - half
        listed = " ".join(f"{c:.2f}" for c in costs)
        print(f"{'x'.join(map(str, shape[1:])):22s} {direction:9s} {listed:34s} "
              f"{makespan:8.2f} {half:6.2f} {max(costs):7.2f}")
    print(f"makespans beyond the halves, a step: {waiting:.2f} ms")


if __name__ == "__main__":
    main()
