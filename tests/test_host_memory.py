"""micrograd_gen keeps freed host memory for reuse (host_memory.py): on glibc it is on after
import, and MICROGRAD_GEN_KEEP_FREED_MEMORY=0 leaves malloc as it was."""
import os
import subprocess
import sys
import time

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


def _minor_faults_of_a_big_array_loop(env):
    code = ("import resource, numpy as np, micrograd_gen\n"
            "a = np.ones(12_000_000, np.float32); del a\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "for _ in range(5):\n"
            "    a = np.ones(12_000_000, np.float32); del a\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, check=True,
                         capture_output=True, text=True).stdout
    return int(out)


@glibc
def test_a_freed_48_mb_array_is_reused_without_page_faults():
    # Above 32 MB glibc always mmaps an array and faults it in again (zero-filled) after each
    # free: thousands of faults for 5 x 48 MB, fewer than 4 KiB pages where NumPy asks for huge
    # pages. Kept, the heap's pages are reused and nothing faults.
    kept = _minor_faults_of_a_big_array_loop({"MICROGRAD_GEN_KEEP_FREED_MEMORY": "1"})
    default = _minor_faults_of_a_big_array_loop({"MICROGRAD_GEN_KEEP_FREED_MEMORY": "0"})
    assert kept < 200 and default > 2000, (kept, default)
