"""bench/run.py cannot rot: the ops suite at quick sizes (what CI runs, a few seconds), its JSON
fields, the Markdown table made from its output, and the CLI command that forwards to it."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from micrograd_gen import backend

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


def test_rounds_alternate_the_engines_and_take_the_median_ratio(monkeypatch):
    import argparse
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_run", RUN)
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    calls, timings = [], {"ours": iter([2.0, 3.0]), "torch": iter([1.0, 4.0])}

    def fake_child(python, name, engine, args, threads):
        calls.append(engine)
        return {"median_s": next(timings[engine])}
    monkeypatch.setattr(run, "run_child", fake_child)
    args = argparse.Namespace(rounds=3)
    extra = run._more_rounds({"median_s": 1.2}, {"median_s": 1.0}, "vae_step", args, 2, "py")
    assert calls == ["ours", "torch", "ours", "torch"]
    assert [r["ratio"] for r in extra["rounds"]] == [1.2, 2.0, 0.75]
    assert extra["ratio_to_torch"] == 1.2 and extra["ratio_to_torch_first_round"] == 1.2
