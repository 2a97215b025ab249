"""micrograd_gen keeps freed host memory for reuse (host_memory.py): on glibc it is on after
import, and MICROGRAD_GEN_KEEP_FREED_MEMORY=0 leaves malloc as it was."""
import os
import subprocess
import sys

import numpy as np
import pytest

import micrograd_gen
from micrograd_gen import host_memory

glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr(
    "CS_GNU_LIBC_VERSION") is None, reason="mallopt is glibc's; elsewhere nothing is tuned")


@glibc
def test_on_after_import_and_idempotent():
    assert micrograd_gen.host_memory.keep_freed_memory() is True
    assert host_memory.keep_freed_memory() is True


def _minor_faults_of_a_step_loop(env):
    # A "step" that allocates two 24 MB arrays and a 12 MB one and frees them: under 32 MB, so
    # kept memory serves them from the heap again; glibc's default trims the freed top of the
    # heap (or unmaps) and faults the pages in again, zero-filled, every step.
    code = ("import resource, numpy as np, micrograd_gen\n"
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
    return int(out)


@glibc
def test_a_steps_freed_arrays_are_reused_without_page_faults():
    kept = _minor_faults_of_a_step_loop({"MICROGRAD_GEN_KEEP_FREED_MEMORY": "1"})
    default = _minor_faults_of_a_step_loop({"MICROGRAD_GEN_KEEP_FREED_MEMORY": "0"})
    assert kept < 1000 and default > 3 * kept + 2000, (kept, default)
