"""bench/run.py cannot rot: the ops suite at quick sizes (what CI runs, a few seconds), its JSON
fields, the Markdown table made from its output, and the CLI command that forwards to it."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from micrograd_gen import backend, fastpath

ROOT = Path(__file__).resolve().parents[1]
RUN = str(ROOT / "bench" / "run.py")


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def test_quick_ops_suite_runs_and_reports_every_field(tmp_path):
    out = tmp_path / "results.jsonl"
    done = _run(RUN, "--device", "cpu", "--suite", "ops", "--quick", "--no-torch",
                "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    machine = records[0]
    assert machine["record"] == "machine" and machine["device"] == "cpu"
    assert machine["cpu_count"] >= 1 and machine["threads"] >= 1 and machine["quick"] is True
    listed = _run(RUN, "--list").stdout.split("\n")
    ops_names = {line.split()[1] for line in listed if line.startswith("ops")}
    rows = {r["workload"]: r for r in records if "workload" in r}
    assert set(rows) == ops_names and "matmul_2048" in rows and "attention_fwdbwd" in rows
    for name, r in rows.items():
        assert "error" not in r, (name, r.get("error"))
        assert 0 < r["min_s"] <= r["median_s"] <= r["max_s"], name
        assert r["cpu_median_s"] >= 0 and r["reps"] == 2 and r["threads"] == machine["threads"]
        assert "peak_traced_mb" in r and len(r["loadavg_before"]) == 3
        if Path("/proc/stat").exists():
            assert r["other_cpu_cores"] >= 0

    table = _run(RUN, "--markdown", str(out))
    assert table.returncode == 0, table.stderr
    assert "| workload | median |" in table.stdout
    assert "| conv_block1_conv2_fwd |" in table.stdout and "(quick sizes)" in table.stdout


def test_unknown_workload_is_a_usage_error():
    done = _run(RUN, "--only", "no_such_workload")
    assert done.returncode == 2 and "unknown workload" in done.stderr


@pytest.mark.skipif(backend.cupy_available(), reason="CuPy and a device are usable here")
def test_gpu_without_cupy_says_why_in_one_line():
    done = _run(RUN, "--device", "gpu", "--quick", "--only", "matmul_2048")
    assert done.returncode == 2 and "--device gpu" in done.stderr and "CuPy" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_bench_forwards_to_bench_run():
    done = _run("-m", "micrograd_gen", "bench", "--list")
    assert done.returncode == 0, done.stderr
    assert "apps  dcgan_step" in done.stdout and "ops   matmul_2048" in done.stdout


def _load_run():
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_run", RUN)
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    return run


def test_rounds_alternate_the_engines_and_take_the_median_ratio_to_the_faster_layout(monkeypatch):
    import argparse
    run = _load_run()
    calls = []
    timings = {("ours", "nchw"): iter([2.0, 3.0]), ("torch", "nchw"): iter([1.0, 4.0]),
               ("torch", "channels_last"): iter([1.6, 2.0])}

    def fake_child(python, name, engine, args, threads, layout="nchw"):
        calls.append((engine, layout))
        return {"median_s": next(timings[engine, layout])}
    monkeypatch.setattr(run, "run_child", fake_child)
    args = argparse.Namespace(rounds=3)
    extra = run._more_rounds({"median_s": 1.2}, {"nchw": {"median_s": 1.5},
                                                  "channels_last": {"median_s": 1.0}},
                             "vae_step", run.TORCH_LAYOUTS, args, 2, "py")
    assert calls == [("ours", "nchw"), ("torch", "nchw"), ("torch", "channels_last")] * 2
    # each round against its faster layout: 1.2/1.0, 2.0/1.0 (NCHW won), 3.0/2.0 (channels_last)
    assert [r["ratio"] for r in extra["rounds"]] == [1.2, 2.0, 1.5]
    assert extra["rounds"][1] == {"ours_s": 2.0, "torch_nchw_s": 1.0,
                                  "torch_channels_last_s": 1.6, "ratio": 2.0}
    assert extra["ratio_to_torch"] == 1.5 and extra["ratio_to_torch_first_round"] == 1.2


def test_conv_workloads_time_both_torch_layouts_and_the_rest_one():
    run = _load_run()
    workloads = run._workloads()
    for name in ("conv_block1_conv2_fwdbwd", "conv_transpose_dcgan1_fwdbwd",
                 "deepdream_step_400x600", "deepdream_schedule_400x600", "style_transfer_eval",
                 "vae_step", "dcgan_step"):
        assert run.torch_layouts(workloads[name]) == ("nchw", "channels_last"), name
    for name in ("matmul_2048", "char_lstm_step", "attention_fwdbwd"):
        assert run.torch_layouts(workloads[name]) == ("nchw",), name
    assert run.fastest_layout({"nchw": {"median_s": 2.0}, "channels_last": {"median_s": 1.5}}) \
        == "channels_last"
    assert run.fastest_layout({"nchw": {"median_s": 2.0}, "channels_last": {"error": "x"}}) \
        == "nchw"
    assert run.fastest_layout({"nchw": {"error": "x"}}) is None


def test_conv_flop_counter_counts_forward_and_each_gradient():
    import micrograd_gen as mg
    run = _load_run()
    rng = np.random.default_rng(0)
    x = mg.Tensor(rng.standard_normal((2, 5, 6, 3)), requires_grad=True)
    kernel = mg.Tensor(rng.standard_normal((3, 3, 3, 4)))          # frozen, as in DeepDream
    up = mg.Tensor(rng.standard_normal((4, 4, 7, 4)), requires_grad=True)  # (kh, kw, out, in)
    with run.ConvFlopCounter() as counter:
        y = mg.ops.conv2d(x, kernel, padding="same")                # (2, 5, 6, 4)
        mg.ops.conv2d_transpose(y, up, strides=2, padding="same")   # in (2, 5, 6, 4)
        with mg.no_grad():
            mg.ops.conv2d(x, kernel, padding="valid")               # (2, 3, 4, 4), forward only
    conv = 2.0 * 2 * 5 * 6 * 3 * 4 * 9 * 2          # forward + dX
    transpose = 2.0 * 2 * 5 * 6 * 4 * 7 * 16 * 3   # forward + dX + dK
    valid = 2.0 * 2 * 3 * 4 * 3 * 4 * 9
    assert counter.flop == conv + transpose + valid
    assert mg.ops.conv2d is counter.originals["conv2d"]   # restored on exit


def test_ab_alternates_the_two_settings_in_one_process(tmp_path):
    log = tmp_path / "order.txt"
    setup = f"log = open({str(log)!r}, 'a')"
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ab.py"), "conv_block3_conv1_fwd", "--quick", "--runs", "2",
         "--warmup", "0", "--setup", setup, "--old", "log.write('old ') or log.flush()",
         "--new", "log.write('new ') or log.flush()"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    assert log.read_text().split() == ["old", "new", "old", "new", "new"]   # new again at the end
    lines = out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["old", "new", "new / old, paired"]
    assert all("median" in line and "CPU" in line for line in lines)
    ratio = float(lines[2].split("median ")[1].split(",")[0])
    assert 0 < ratio < 100


def test_ab_module_at_loads_a_commits_module_beside_todays():
    """The old code of an A/B from git: a module of its own, today's registrations untouched."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from ab import module_at
    finally:
        sys.path.remove(str(ROOT / "bench"))
    from micrograd_gen import fastpath
    import micrograd_gen.accel.lstm as today
    if shutil.which("git") is None or subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    before = dict(fastpath._implementations)
    old = module_at("HEAD", "micrograd_gen.accel.lstm")
    assert old is not today and old.batch_split_lstm is not today.batch_split_lstm
    assert old.__name__ == "micrograd_gen.accel.lstm@HEAD" and callable(old._infer_one)
    assert fastpath._implementations == before
    with pytest.raises(subprocess.CalledProcessError):
        module_at("HEAD", "micrograd_gen.no_such_module")


def test_ab_names_an_unknown_workload():
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "ab.py"), "no_such", "--old", "0",
                             "--new", "0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unknown workload 'no_such'" in result.stderr


def test_conv_layout_audit_counts_convolutions_that_ran_in_nchw():
    """A twin that leaves both the input and the weight in NCHW runs PyTorch's NCHW kernels under
    the channels_last name (the DeepDream step twin did, sessions 4-8): the audit counts them."""
    from types import SimpleNamespace
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from common import ConvLayoutAudit
    finally:
        sys.path.remove(str(ROOT / "bench"))
    channels_last = object()

    class FakeTensor:
        def __init__(self, in_channels_last):
            self.in_channels_last = in_channels_last

        def is_contiguous(self, memory_format):
            assert memory_format is channels_last
            return self.in_channels_last

    ran = []
    functional = SimpleNamespace(conv2d=lambda x, w, *a, **k: ran.append(("conv2d", a, k)) or 1,
                                 conv_transpose2d=lambda x, w, *a, **k: ran.append("ct") or 2)
    fake_torch = SimpleNamespace(nn=SimpleNamespace(functional=functional),
                                 channels_last=channels_last)
    originals = (functional.conv2d, functional.conv_transpose2d)
    with ConvLayoutAudit(fake_torch) as audit:
        nchw, cl = FakeTensor(False), FakeTensor(True)
        assert functional.conv2d(cl, nchw, None, stride=2) == 1      # input in channels_last
        assert functional.conv2d(nchw, cl) == 1                      # weight in channels_last
        assert functional.conv_transpose2d(nchw, nchw) == 2          # neither: counted
        assert functional.conv2d(nchw, nchw, None, 1, 1) == 1        # neither: counted
    assert (audit.calls, audit.nchw_calls) == (4, 2)
    assert ran[0] == ("conv2d", (None,), {"stride": 2}) and ran[2] == "ct"
    assert (functional.conv2d, functional.conv_transpose2d) == originals   # put back


@pytest.mark.parametrize("script, layers", [
    ("dream_layers.py", ["conv 3x3 32->32 valid", "conv 3x3 32->64 same", "max pool 197x297x64",
                         "conv 1x1 64->80", "conv 3x3 80->192 valid", "max pool 96x146x192"]),
    ("vae_layers.py", ["encoder conv 1->32 /2", "encoder conv 32->64 /2",
                       "decoder transposed 64->64 x2", "decoder transposed 64->32 x2",
                       "decoder conv 32->1"]),
])
def test_per_layer_scripts_time_every_layer_of_ours(script, layers):
    done = _run(str(ROOT / "bench" / script), "--reps", "1", "--threads", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = done.stdout.strip().splitlines()[1:]
    assert [row.split("  ")[0].strip() for row in rows] == layers
    for row in rows:
        # One repetition on a busy 2-core machine can time the forward above forward + backward,
        # so only the numbers' sanity is checked here, not their order.
        forward, both = (float(v) for v in row.split()[-2:])
        assert 0 < forward < 60_000 and 0 < both < 60_000, row
    for flag in ("--reps", "--threads"):
        bad = _run(str(ROOT / "bench" / script), flag, "0")
        assert bad.returncode == 2 and flag in bad.stderr


def test_idle_names_the_sections_and_gaps_of_a_step():
    """bench/idle.py on a small conv workload: the step's totals, then its sections (work
    handed to the worker threads) and the gaps between them, each with a count."""
    done = _run(str(ROOT / "bench" / "idle.py"), "conv_block3_conv1_fwdbwd", "--quick",
                "--steps", "2", "--warmup", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    head = lines[0]
    assert head.startswith("conv_block3_conv1_fwdbwd:") and "ms wall" in head and "idle" in head
    wall = float(head.split("step ")[1].split(" ms")[0])
    assert 0 < wall < 60_000
    assert any(line.startswith("section") for line in lines)
    assert any(line.startswith("gap after") for line in lines)
    assert any("(step end)" in line for line in lines)
    for flag in ("--steps", "--top"):
        bad = _run(str(ROOT / "bench" / "idle.py"), "vae_step", flag, "0")
        assert bad.returncode == 2 and flag in bad.stderr
    unknown = _run(str(ROOT / "bench" / "idle.py"), "no_such")
    assert unknown.returncode == 2 and "unknown workload 'no_such'" in unknown.stderr


def test_dream_convs_lists_every_convolution_of_a_step_once():
    """bench/dream_convs.py without PyTorch: the step's distinct convolutions, each timed on
    one thread, their counts adding up to the convolutions of one forward (InceptionV3 to
    mixed7: 5 in the stem, 7 in each of mixed0-2, 4 in mixed3, 10 in each of mixed4-7)."""
    done = _run(str(ROOT / "bench" / "dream_convs.py"), "--size", "140x140", "--reps", "1",
                "--top", "100")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    rows = [line for line in lines[2:] if line and not line.startswith("all")]
    names = [line[:38].strip() for line in rows]
    assert len(names) == len(set(names)) == int(lines[0].split(": ")[1].split(" distinct")[0])
    counts = sum(int(line[38:].split()[0]) for line in rows)
    assert counts == 5 + 3 * 7 + 4 + 4 * 10 and f"all {counts} convolutions" in lines[-1]
    assert "140x140x3 3x3/2 -> 32 valid" in names
    for line in rows:
        forward, both = (float(v) for v in line[38:].split()[1:3])
        assert 0 < forward < 60_000 and 0 < both < 60_000, line
    bad = _run(str(ROOT / "bench" / "dream_convs.py"), "--size", "40x40")
    assert bad.returncode == 2 and "at least 75x75" in bad.stderr
    small = _run(str(ROOT / "bench" / "dream_convs.py"), "--size", "100x100", "--flops")
    assert small.returncode == 2 and "--size 100x100" in small.stderr
    assert "larger picture" in small.stderr and "Traceback" not in small.stderr


def test_dream_convs_flops_add_up_to_the_counted_step(monkeypatch):
    """bench/dream_convs.py --flops: the step's FLOPs by kernel, stride and grid, their total
    what bench/run.py's ConvFlopCounter counts for the same step, the shares summing to 100%."""
    done = _run(str(ROOT / "bench" / "dream_convs.py"), "--size", "140x140", "--flops")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    total = float(lines[0].split(": ")[1].split(" GFLOP")[0])
    rows = [line.split() for line in lines[1:]]
    kinds = {(row[0], row[2]) for row in rows}
    assert len(kinds) == len(rows)
    # the stem's first layer, 140 -> 69 with a 3x3 stride-2 valid window; mixed3's 3x3 / 2
    assert ("3x3/2", "69x69") in kinds and ("3x3/2", "7x7") in kinds
    assert abs(sum(float(row[3]) for row in rows) - total) < 0.01 * len(rows)
    assert abs(sum(float(row[5].rstrip("%")) for row in rows) - 100) < 0.1 * len(rows)
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    run = _load_run()
    step, _ = run.deepdream_step(140, 140)(False, "cpu")
    with run.ConvFlopCounter() as counter:
        step()
    assert abs(counter.flop / 1e9 - total) < 0.006


def test_handoff_times_a_section_and_a_wake_up():
    """bench/handoff.py: the fixed cost of a parallel section, two chunks side by side against
    one after the other, and a wake-up round trip, each a positive number of microseconds."""
    done = _run(str(ROOT / "bench" / "handoff.py"), "--repeat", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    threads = int(lines[0].split("threads: ")[1])
    if threads < 2:
        assert lines[1] == "one thread: no hand-offs to measure"
        return
    sections = [line for line in lines if line.startswith("section, no work")]
    assert len(sections) == 2
    for line in sections:
        assert 0 < float(line.split(": ")[1].split(" us")[0]) < 1e6, line
    two = next(line for line in lines if line.startswith("two chunks"))
    assert "side by side" in two and "one after the other" in two
    trips = next(line for line in lines if line.startswith("wake-up round trip"))
    values = [float(v) for v in trips.split(": ")[1].split(" us")[0].split(", ")]
    assert len(values) == 3 and all(0 < v < 1e6 for v in values)
    assert lines[-1].startswith("cpuidle: ")
    bad = _run(str(ROOT / "bench" / "handoff.py"), "--repeat", "0")
    assert bad.returncode == 2 and "--repeat" in bad.stderr


def test_branch_balance_lists_each_block_both_ways():
    """bench/branch_balance.py on the DeepDream step: every Inception block to mixed7 (eight)
    forward and backward, each with its branches' times, the largest-first makespan, no less
    than half the block's work nor than its largest branch, and their total excess. On the
    reference alone (MICROGRAD_GEN_FAST=0) no block runs side by side, and it says so."""
    done = _run(str(ROOT / "bench" / "branch_balance.py"), "deepdream_step_204x306", "--steps",
                "1", "--warmup", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    if not fastpath.enabled():
        assert lines == ["deepdream_step_204x306: no Inception block ran on the fast path"]
        return
    assert lines[0].startswith("deepdream_step_204x306: ") and "threads" in lines[0]
    rows = [line.split() for line in lines[2:-1]]
    assert len(rows) == 16
    assert sum(r[1] == "forward" for r in rows) == sum(r[1] == "backward" for r in rows) == 8
    threads = int(lines[0].split(": ")[1].split(" threads")[0])
    for row in rows:
        branches = [float(v) for v in row[2:-3]]
        makespan, half, largest = (float(v) for v in row[-3:])
        assert len(branches) in (3, 4) and all(b >= 0 for b in branches)
        assert abs(half - sum(branches) / threads) < 0.02 and abs(largest - max(branches)) < 0.02
        assert makespan >= max(half, largest) - 0.02
    assert lines[-1].startswith("makespans beyond the halves, a step: ")
    bad = _run(str(ROOT / "bench" / "branch_balance.py"), "--steps", "0")
    assert bad.returncode == 2 and "--steps" in bad.stderr
