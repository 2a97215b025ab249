"""Keeping freed host memory for reuse (accel/memory.py) is an explicit call: importing the engine
leaves malloc as it was, keep_freed_memory() turns it on, MICROGRAD_GEN_KEEP_FREED_MEMORY=0 makes
the call do nothing."""
import os
import subprocess
import sys

import pytest


def glibc_here():
    return sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None


glibc = pytest.mark.skipif(not glibc_here(),
                           reason="mallopt is glibc's; elsewhere nothing is tuned")


def _minor_faults_of_a_step_loop(setup, env):
    # A "step" that allocates two 24 MB arrays and a 12 MB one and frees them: under 32 MB, so
    # kept memory serves them from the heap again; glibc's default trims the freed top of the
    # heap (or unmaps) and faults the pages in again, zero-filled, every step.
    code = ("import resource, numpy as np, micrograd_gen\n"
            f"{setup}\n"
            "def step():\n"
            "    a = np.ones(6_000_000, np.float32); b = np.ones(6_000_000, np.float32)\n"
            "    c = np.ones(3_000_000, np.float32)\n"
            "step()\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "for _ in range(5):\n"
            "    step()\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, check=True,
                         capture_output=True, text=True).stdout
    return int(out.split()[-1])


CALL = "import micrograd_gen.accel; assert micrograd_gen.accel.keep_freed_memory() in (True, False)"


@glibc
def test_the_call_keeps_a_steps_freed_arrays_and_importing_does_not():
    kept = _minor_faults_of_a_step_loop(CALL, {})
    imported_only = _minor_faults_of_a_step_loop("", {})
    assert kept < 1000 and imported_only > 3 * kept + 2000, (kept, imported_only)


@glibc
def test_the_environment_opts_out():
    code = ("import micrograd_gen.accel as accel\n"
            "print(accel.keep_freed_memory(), accel.keep_freed_memory())\n")
    for value, expected in (("0", "False False"), ("1", "True True")):
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                             text=True, env={**os.environ,
                                             "MICROGRAD_GEN_KEEP_FREED_MEMORY": value}).stdout
        assert out.strip() == expected
    opted_out = _minor_faults_of_a_step_loop(CALL,
                                             {"MICROGRAD_GEN_KEEP_FREED_MEMORY": "0"})
    assert opted_out > 2000, opted_out


def test_the_command_line_makes_the_call_and_the_reference_run_does_not():
    code = ("import argparse, sys\n"
            "from micrograd_gen import cli\n"
            "cli.setup(argparse.Namespace(device='cpu', seed=0))\n"
            "accel = sys.modules.get('micrograd_gen.accel.memory')\n"
            "print(None if accel is None else accel._applied)\n")
    for fast, expected in (("1", "True"), ("0", "None")):
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                             text=True, env={**os.environ, "MICROGRAD_GEN_FAST": fast,
                                              "MICROGRAD_GEN_KEEP_FREED_MEMORY": "1"}).stdout
        if fast == "1" and not glibc_here():
            expected = "False"
        assert out.strip() == expected, (fast, out)

