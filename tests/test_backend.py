"""Backend selection: the array module comes from the arrays; use() and MICROGRAD_GEN_BACKEND
choose where new tensors live; Tensor.to moves data; mixing NumPy and CuPy is a TypeError.

CuPy is optional: without it, asking for "cupy" is a clear error and the GPU tests skip."""
import os
import subprocess
import sys

import numpy as np
import pytest

import micrograd_gen as mg
from micrograd_gen import Tensor, backend, ops

gpu = pytest.mark.skipif(not backend.cupy_available(), reason="needs CuPy and a CUDA device")
no_cupy = pytest.mark.skipif(backend.cupy_available(), reason="CuPy is usable here")


class FakeCupyArray:
    """Stands in for a cupy.ndarray: the backend recognises CuPy arrays by their module name."""
    __module__ = "cupy"
    shape = (2,)
    ndim = 1
    dtype = np.dtype(np.float32)


@pytest.fixture
def restore_default_backend():
    before = backend.default_name()
    yield
    backend.use(before)


def test_get_array_module_follows_the_arrays():
    assert backend.get_array_module(np.ones(2)) is np
    assert backend.get_array_module(np.ones(2), 3.0, None, np.float32(1)) is np
    assert backend.get_array_module() is np  # nothing to go by: NumPy


def test_mixing_numpy_and_cupy_is_a_type_error_that_says_how_to_move():
    assert type(FakeCupyArray()).__module__ == "cupy"
    with pytest.raises(TypeError, match=r"NumPy and CuPy.*\.to\('cupy'\).*\.to\('numpy'\)"):
        backend.get_array_module(np.ones(2), FakeCupyArray())


def test_an_op_on_mixed_tensors_is_a_type_error():
    on_gpu = Tensor._wrap(FakeCupyArray(), None, 0)
    with pytest.raises(TypeError, match=r"tensor\.to\('cupy'\)"):
        ops.add(Tensor(np.ones(2)), on_gpu)


def test_a_raw_array_from_the_other_backend_is_a_type_error_not_a_copy():
    with pytest.raises(TypeError, match="NumPy and CuPy"):
        ops.multiply(Tensor(np.ones(2)), FakeCupyArray())


def test_use_sets_the_default_and_rejects_unknown_names(restore_default_backend):
    backend.use("numpy")
    assert backend.default_name() == "numpy" and backend.default_module() is np
    assert isinstance(Tensor([1.0]).data, np.ndarray)
    with pytest.raises(ValueError, match="expected one of"):
        backend.use("tpu")
    assert backend.default_name() == "numpy"


@no_cupy
def test_asking_for_cupy_without_it_is_a_clear_error(restore_default_backend):
    # What works from a checkout or a plain install, not an index the project is not on.
    with pytest.raises(RuntimeError, match=r"needs CuPy.*pip install cupy-cuda12x.*cupy-cuda13x"
                                           r".*pip install -e '\.\[gpu\]'.*'\.\[gpu-cuda13\]'") as err:
        backend.use("cupy")
    assert "micrograd_gen[gpu]" not in str(err.value)
    assert backend.default_name() == "numpy"  # a failed use() changes nothing
    with pytest.raises(RuntimeError, match="needs CuPy"):
        Tensor([1.0]).to("cupy")


def test_to_numpy_keeps_requires_grad_and_shares_the_array():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = x.to("numpy")
    assert y.requires_grad and y.is_leaf and y.device == "numpy"
    assert y.data is x.data
    with pytest.raises(ValueError, match="expected 'numpy' or 'cupy'"):
        x.to("gpu")


def _python(code, backend_name):
    env = dict(os.environ, MICROGRAD_GEN_BACKEND=backend_name)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)


def test_environment_variable_sets_the_default():
    done = _python("from micrograd_gen import backend; print(backend.default_name())", " NumPy ")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "numpy"
    done = _python("import micrograd_gen", "tpu")
    assert done.returncode != 0
    assert "MICROGRAD_GEN_BACKEND='tpu'" in done.stderr


@no_cupy
def test_environment_variable_cupy_without_cupy():
    # importing works (CuPy is never needed just to import); making a tensor says what is missing
    done = _python("import micrograd_gen as mg\nprint('imported')\nmg.Tensor([1.0])", "cupy")
    assert "imported" in done.stdout
    assert done.returncode != 0 and "needs CuPy" in done.stderr


# ---- on a GPU ----------------------------------------------------------------------------------

@pytest.mark.gpu
@gpu
def test_tensor_round_trip_to_cupy():
    import cupy
    x = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    g = x.to("cupy")
    assert isinstance(g.data, cupy.ndarray) and g.device == "cupy" and g.requires_grad
    np.testing.assert_array_equal(g.to("numpy").numpy(), x.numpy())
    np.testing.assert_array_equal(g.numpy(), x.numpy())


@pytest.mark.gpu
@gpu
def test_ops_on_cupy_match_numpy_and_give_cupy_gradients():
    import cupy
    rng = np.random.default_rng(0)
    a_np, b_np = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    results = []
    for name in ("numpy", "cupy"):
        a = Tensor(a_np, requires_grad=True).to(name)
        b = Tensor(b_np, requires_grad=True).to(name)
        loss = ops.logsumexp(ops.tanh(a @ b) * 2 + 1, axis=0).sum()
        loss.backward()
        results.append((loss.numpy(), backend.to_numpy(a.grad), backend.to_numpy(b.grad)))
        if name == "cupy":
            assert isinstance(a.grad, cupy.ndarray)
    for got, want in zip(results[1], results[0]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@gpu
def test_mixing_real_cupy_and_numpy_is_a_type_error():
    with pytest.raises(TypeError, match="NumPy and CuPy"):
        Tensor(np.ones(2)) + Tensor(np.ones(2)).to("cupy")


@pytest.mark.gpu
@gpu
def test_gradcheck_on_cupy():
    import cupy
    from micrograd_gen.gradcheck import gradcheck
    x = cupy.asarray(np.random.default_rng(1).standard_normal((3, 4)))
    assert gradcheck(lambda t: ops.softmax(t * t, axis=-1), [x])


@pytest.mark.gpu
@gpu
def test_use_cupy_makes_new_tensors_on_the_gpu(restore_default_backend):
    import cupy
    backend.use("cupy")
    assert isinstance(Tensor([1.0, 2.0]).data, cupy.ndarray)
    assert isinstance(Tensor(np.ones(2)).data, np.ndarray)  # a NumPy array stays where it is
    assert mg.backend.default_module() is cupy
