"""Where the second core waits in a workload's step: the parallel sections, the gaps between them.

  python bench/idle.py WORKLOAD [--steps N] [--warmup N] [--quick] [--top N]

WORKLOAD is a name from `python bench/run.py --list` (deepdream_step_204x306, vae_step, ...).
Every call of accel.workers.for_chunks that hands work to the worker threads is a section; its
idle core time is threads x its wall time - the time its chunks took. Between sections one
thread works alone (Python, the graph, the ops too small to share): the gaps, named by the
section before them, with what the main thread was doing there (its stack, sampled every 0.3 ms
while in a gap; the sampler needs the GIL too, so a gap spent in one long NumPy call is
under-sampled).

Why. On two cores a step loses time three ways: work that one core does while the other
waits (the gaps), sections whose chunks end unevenly, and the hand-offs themselves. Summed per
site, this says which of them a change should aim at (bench/README.md, "Issue 17, session 13").
Timing adds a few microseconds a chunk; the sampler costs the main thread a little more.
"""
import argparse
import collections
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


class SectionLog:
    """Wraps for_chunks (where accel's modules look it up) to time each top-level section."""

    def __init__(self, workers):
        self.workers, self.original = workers, workers.for_chunks
        self.sections = collections.defaultdict(lambda: [0, 0.0, 0.0])  # site -> calls, wall, busy
        self.gaps = collections.defaultdict(lambda: [0, 0.0])            # site before -> n, time
        self.samples = collections.Counter()
        self.in_gap, self.recording = False, False
        self.last_end, self.last_site = time.perf_counter(), "(step start)"
        self.inside = threading.local()
        self.main = threading.get_ident()

    def install(self):
        for module in list(sys.modules.values()):
            if (getattr(module, "__name__", "").startswith("micrograd_gen")
                    and getattr(module, "for_chunks", None) is self.original):
                module.for_chunks = self.for_chunks
        threading.Thread(target=self._sample, daemon=True).start()

    def for_chunks(self, chunks, work, xp, fixed=False):
        chunks = list(chunks)
        executor, threads = self.workers.chunk_pool()
        if getattr(self.inside, "busy", False) or executor is None or len(chunks) < 2:
            return self.original(chunks, work, xp, fixed)
        busy, lock = [0.0], threading.Lock()

        def timed(chunk, slot):
            started = time.perf_counter()
            try:
                work(chunk, slot)
            finally:
                with lock:
                    busy[0] += time.perf_counter() - started
        started = time.perf_counter()
        site = f"{work.__qualname__} ({os.path.basename(work.__code__.co_filename)}:" \
               f"{work.__code__.co_firstlineno})"
        if self.recording:
            gap = self.gaps[self.last_site]
            gap[0] += 1
            gap[1] += started - self.last_end
        self.in_gap, self.inside.busy = False, True
        try:
            result = self.original(chunks, timed, xp, fixed)
        finally:
            self.inside.busy = False
            self.last_end, self.last_site, self.in_gap = time.perf_counter(), site, True
        if self.recording:
            entry = self.sections[site]
            entry[0] += 1
            entry[1] += (self.last_end - started) * threads
            entry[2] += busy[0]
        return result

    def _sample(self):
        while True:
            time.sleep(0.0003)
            if not (self.recording and self.in_gap):
                continue
            frame = sys._current_frames().get(self.main)
            where = []
            while frame is not None and len(where) < 3:
                if "bench" not in frame.f_code.co_filename:
                    where.append(f"{os.path.basename(frame.f_code.co_filename)}:"
                                 f"{frame.f_lineno} {frame.f_code.co_name}")
                frame = frame.f_back
            self.samples[" < ".join(where)] += 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", help="a name from `python bench/run.py --list`")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="run.py's small sizes (for tests)")
    parser.add_argument("--top", type=int, default=12, help="rows in each table (default 12)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.top < 1:
        parser.error(f"--steps and --top must be at least 1 and --warmup at least 0, got "
                     f"{args.steps}, {args.top} and {args.warmup}")
    import run
    from micrograd_gen.accel import workers
    step, _ = run.cpu_step(args.workload, args.quick, parser)
    log = SectionLog(workers)
    log.install()
    for _ in range(args.warmup):
        step()
    threads = workers.chunk_pool()[1]
    log.recording = True
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        log.last_end, log.last_site, log.in_gap = time.perf_counter(), "(step start)", True
        step()
        gap = log.gaps["(step end)"]
        gap[0] += 1
        gap[1] += time.perf_counter() - log.last_end
    log.recording = False
    n = args.steps
    wall, cpu = (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n
    in_sections = sum(s[1] for s in log.sections.values()) / threads / n
    section_idle = sum(s[1] - s[2] for s in log.sections.values()) / n
    gaps = sum(g[1] for g in log.gaps.values()) / n
    print(f"{args.workload}: {threads} threads, step {wall * 1e3:.1f} ms wall, {cpu * 1e3:.1f} ms "
          f"CPU; sections {in_sections * 1e3:.1f} ms wall ({section_idle * 1e3:.1f} core-ms "
          f"idle), gaps {gaps * 1e3:.1f} ms ({gaps * (threads - 1) * 1e3:.1f} core-ms idle)")
    print(f"\n{'section (the work handed out)':62s} {'calls':>5s} {'core-ms':>8s} {'idle':>6s}")
    for site, (calls, core, busy) in sorted(log.sections.items(),
                                            key=lambda kv: kv[1][2] - kv[1][1])[:args.top]:
        idle = (core - busy) / n * 1e3
        print(f"{site[:62]:62s} {calls / n:5.0f} {core / n * 1e3:8.1f} {idle:6.1f}")
    print(f"\n{'gap after':62s} {'count':>5s} {'ms':>8s}")
    for site, (count, total) in sorted(log.gaps.items(), key=lambda kv: -kv[1][1])[:args.top]:
        print(f"{site[:62]:62s} {count / n:5.0f} {total / n * 1e3:8.1f}")
    sampled = sum(log.samples.values())
    if sampled:
        print(f"\nthe main thread in the gaps ({sampled} samples):")
        for where, count in log.samples.most_common(args.top):
            print(f"{100 * count / sampled:5.1f}%  {where}")


if __name__ == "__main__":
    main()
