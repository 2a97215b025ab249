"""Shared test setup: hypothesis profiles and the location of the shared data.

Profiles: "dev" (the default) draws 25 examples per property; "ci", chosen when the environment
variable CI is set (or with --hypothesis-profile=ci), draws 10 and derandomises so that a CI run
is reproducible; "thorough" (--hypothesis-profile=thorough) draws 300 to hunt for rare failures.
None has a deadline: timings on a shared 2-core machine are too noisy for one.
"""
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=10, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def shared_data_dir():
    """$MICROGRAD_GEN_DATA, or ../shared/data beside the repository (None when neither exists)."""
    env = os.environ.get("MICROGRAD_GEN_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data():
    """The shared data folder (see ../shared/data/README.md); skips the test when it is absent."""
    path = shared_data_dir()
    if path is None:
        where = os.environ.get("MICROGRAD_GEN_DATA") or "../shared/data beside the repository"
        pytest.skip(f"shared data not found at {where}; set MICROGRAD_GEN_DATA to its folder")
    return path


@pytest.fixture
def conv_on_the_very_kernel():
    """run(x, kernel, g, fast, trains=False) -> (y, dX) of ops.conv2d(x, kernel, padding="same")
    and its backward with g, on the fast path or the reference, the kernel Tensor holding the
    very array given, so that a change made to it in place shows (the kept-kernel tests)."""
    import micrograd_gen as mg

    def run(x, kernel, g, fast, trains=False):
        with mg.fast_paths(fast):
            tx = mg.Tensor(x, requires_grad=True)
            tk = mg.Tensor(kernel, requires_grad=trains)
            tk.data = kernel
            y = mg.ops.conv2d(tx, tk, padding="same")
            y.backward(g)
            return y.numpy(), tx.grad
    return run
