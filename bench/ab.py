"""Old code against new in one process: one workload of bench/run.py, its steps alternating
between two settings, each a Python statement run before its step.

  python bench/ab.py WORKLOAD --old STATEMENT --new STATEMENT [--setup STATEMENTS] [--runs N]
                    [--quick]

For example, a fast path's shortcut switched off and on again:

  python bench/ab.py deepdream_step_400x600 --runs 9 \\
      --setup "import micrograd_gen.accel.branches as B; new = B._pool_then_pointwise" \\
      --old "B._pool_then_pointwise = lambda chain: False" --new "B._pool_then_pointwise = new"

Why. This machine's speed drifts by 10-30% over minutes, so two runs of bench/run.py a few minutes
apart differ by more than most single changes buy; steps alternated in one process see the same
machine. Prints the median wall and CPU time of each setting's steps and every step's wall time,
then the median over pairs of each new step's time against the old step just before it (a
slow minute moves both steps of a pair).
bench/README.md's "session 7" figures were taken this way.

Code from an earlier commit, beside today's: `module_at(COMMIT, MODULE)` (from ab import
module_at) loads MODULE's source as of COMMIT as a module of its own, for example

  python bench/ab.py char_lstm_generate400 --runs 31 \
      --setup "from ab import module_at; from micrograd_gen import fastpath
import micrograd_gen.accel.lstm as new; old = module_at('40983df', 'micrograd_gen.accel.lstm')" \
      --old "fastpath.register('lstm', old.batch_split_lstm)" \
      --new "fastpath.register('lstm', new.batch_split_lstm)"
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


def module_at(commit, name):
    """The module `name` (dotted, inside the repository) as it was at `commit`: its source from
    git, run as a new module beside the one imported now (its relative imports resolve to
    today's package). The fast paths it registers while loading are taken back, so that
    --old and --new choose which one runs."""
    import subprocess
    import types

    from micrograd_gen import fastpath
    root = os.path.dirname(HERE)
    path = name.replace(".", "/") + ".py"
    source = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=root, capture_output=True,
                            text=True, check=True).stdout
    module = types.ModuleType(f"{name}@{commit}")
    module.__package__, module.__file__ = name.rpartition(".")[0], f"{path}@{commit}"
    registered = dict(fastpath._implementations)
    try:
        exec(compile(source, module.__file__, "exec"), module.__dict__)
    finally:
        fastpath._implementations.clear()
        fastpath._implementations.update(registered)
    return module


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", help="a name from `python bench/run.py --list`")
    parser.add_argument("--old", required=True, help="statement run before each old step")
    parser.add_argument("--new", required=True, help="statement run before each new step")
    parser.add_argument("--setup", default="", help="statements run once, after the workload "
                        "is built (names it defines are seen by --old and --new)")
    parser.add_argument("--runs", type=int, default=7, help="steps per setting (default 7)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--quick", action="store_true", help="run.py's small sizes (for tests)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error(f"--runs must be at least 1 and --warmup at least 0, got {args.runs} and "
                     f"{args.warmup}")
    import run
    step, _ = run.cpu_step(args.workload, args.quick, parser)
    scope = {}
    exec(args.setup, scope)
    for _ in range(args.warmup):
        step()
    times = {"old": ([], []), "new": ([], [])}
    for _ in range(args.runs):
        for name, statement in (("old", args.old), ("new", args.new)):
            exec(statement, scope)
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            times[name][0].append(time.perf_counter() - wall)
            times[name][1].append(time.process_time() - cpu)
    exec(args.new, scope)                   # leave the process as the code is
    for name, (wall, cpu) in times.items():
        print(f"{name}: median {statistics.median(wall) * 1e3:.1f} ms, CPU "
              f"{statistics.median(cpu) * 1e3:.1f} ms; each: "
              f"{', '.join(f'{t * 1e3:.0f}' for t in wall)} ms")
    # each new step against the old step just before it: what a drift of the machine's speed
    # over minutes moves less than it moves either median
    pairs = [new / old for old, new in zip(times["old"][0], times["new"][0])]
    print(f"new / old, paired: median {statistics.median(pairs):.3f}, wall; CPU "
          f"{statistics.median(n / o for o, n in zip(times['old'][1], times['new'][1])):.3f}")


if __name__ == "__main__":
    main()
