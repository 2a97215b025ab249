"""Inception blocks as one layer: applications.group_branches and the Branches layer, whose fast
path (accel/branches.py) runs the branches side by side. The grouped graph computes what the
graph as written computes, on the fast path and on the reference, forward and input gradient;
the Keras agreement on the real weights is in test_applications.py (its "grouped" cases)."""
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import micrograd_gen as mg
from micrograd_gen import applications, nn
from micrograd_gen.accel import workers
from micrograd_gen.applications.network import Branches, InputLayer, Network

TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def block_network(channels, filters, strided, identity, dtype, seed=0):
    """stem conv -> an Inception-like block (a 1x1 branch, 1x1 -> 3x3 -> 3x3, a pool branch,
    maybe the input itself) -> one more conv, so the block is neither first nor last."""
    nn.set_seed(seed)
    d = dtype
    net = Network("block", InputLayer(name="input", dtype=d), dtype=d)
    x = net.add(nn.Conv2D(channels, 3, padding="same", activation="relu", name="stem",
                          dtype=d), "input")
    stride, pad = (2, "valid") if strided else (1, "same")
    a = net.add(nn.Conv2D(filters, 3, strides=stride, padding=pad, activation="relu",
                          name="a", dtype=d), x)
    b = net.add(nn.Conv2D(filters + 1, 1, activation="relu", name="b1", dtype=d), x)
    b = net.add(nn.Conv2D(filters, 3, padding="same", activation="relu", name="b2", dtype=d), b)
    b = net.add(nn.Conv2D(filters + 2, 3, strides=stride, padding=pad, name="b3", dtype=d), b)
    if strided:
        p = net.add(nn.MaxPooling2D(3, strides=2, name="pool", dtype=d), x)
    else:
        p = net.add(nn.AveragePooling2D(3, strides=1, padding="same", name="pool", dtype=d), x)
        p = net.add(nn.Conv2D(3, 1, activation="relu", name="p1", dtype=d), p)
    parts = [a, b, p] + ([x] if identity and not strided else [])
    y = net.add(nn.Concatenate(axis=-1, name="block", dtype=d), *parts)
    y = net.add(nn.Conv2D(4, 1, name="head", dtype=d), y)
    return net.finish(y, (None, None, None, 3))


def output_and_grad(model, x, g_seed=1):
    t = mg.Tensor(x, requires_grad=True, dtype=x.dtype)
    y = model(t)
    g = np.random.default_rng(g_seed).standard_normal(y.shape).astype(x.dtype)
    y.backward(g)
    return y.numpy(), t.grad


@settings(max_examples=12, deadline=None)
@given(h=st.integers(7, 14), w=st.integers(7, 14), channels=st.sampled_from([3, 16, 20]),
       filters=st.sampled_from([2, 16, 17]), strided=st.booleans(), identity=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_grouped_block_equals_the_graph_as_written(h, w, channels, filters, strided, identity,
                                                   dtype):
    net = block_network(channels, filters, strided, identity, dtype)
    net.trainable = False
    grouped = applications.group_branches(net)
    assert isinstance(grouped.get_layer("block"), Branches)
    x = np.random.default_rng(0).uniform(-1, 1, (2, h, w, 3)).astype(dtype)
    with mg.fast_paths(False):
        want_y, want_dx = output_and_grad(net, x)
    for fast in (True, False):
        with mg.fast_paths(fast):
            y, dx = output_and_grad(grouped, x)
        np.testing.assert_allclose(y, want_y, **TOL[dtype], err_msg=f"output, fast={fast}")
        np.testing.assert_allclose(dx, want_dx, **TOL[dtype], err_msg=f"dx, fast={fast}")
    assert all(v.grad is None for v in grouped.weights)          # frozen: no weight gradients


def test_the_fast_path_runs_the_block_the_same_way_every_time():
    net = block_network(16, 17, False, True, np.float32)
    net.trainable = False
    block = applications.group_branches(net).get_layer("block")
    x = mg.Tensor(np.random.default_rng(0).uniform(0, 1, (1, 12, 13, 16)).astype(np.float32),
                  requires_grad=True)
    results = []
    for _ in range(3):
        with mg.fast_paths(True):
            y = block(x)
        assert type(y._ctx).__name__ == "ConcatenatedBranches"
        y.backward(np.ones(y.shape, np.float32))
        results.append((y.numpy(), x.grad))
        x.grad = None
    for y, dx in results[1:]:
        np.testing.assert_array_equal(y, results[0][0])
        np.testing.assert_array_equal(dx, results[0][1])


def test_backward_twice_through_a_kept_graph_adds_the_gradient_twice():
    net = block_network(16, 16, False, True, np.float64)
    net.trainable = False
    block = applications.group_branches(net).get_layer("block")
    x = mg.Tensor(np.random.default_rng(2).uniform(-1, 1, (1, 9, 10, 16)), requires_grad=True,
                  dtype=np.float64)
    y = block(x)
    g = np.random.default_rng(3).standard_normal(y.shape)
    y.backward(g, retain_graph=True)
    once = x.grad.copy()
    y.backward(g)
    np.testing.assert_allclose(x.grad, 2 * once, rtol=1e-12)


def test_a_block_without_gradients_keeps_nothing_and_still_runs():
    net = block_network(16, 16, False, True, np.float32)
    net.trainable = False
    grouped = applications.group_branches(net)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 9, 9, 3)).astype(np.float32)
    with mg.no_grad():
        y = grouped(x)
    with mg.fast_paths(False), mg.no_grad():
        want = net(x)
    np.testing.assert_allclose(y.numpy(), want.numpy(), **TOL[np.float32])
    assert y._ctx is None


def test_trainable_weights_take_the_reference_and_get_their_gradients():
    """The fast path declines a block whose weights want gradients: the weights get exactly the
    gradients of the graph as written."""
    x = np.random.default_rng(0).uniform(-1, 1, (1, 8, 9, 3)).astype(np.float64)
    net = block_network(16, 16, False, False, np.float64)
    grouped = applications.group_branches(net)
    _, want_dx = output_and_grad(net, x)
    want = [w.grad.copy() for w in net.weights]
    for w in net.weights:
        w.grad = None
    _, dx = output_and_grad(grouped, x)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-10, atol=1e-12)
    got = {id(w): w.grad for w in grouped.weights}
    for w, g in zip(net.weights, want):
        np.testing.assert_allclose(got[id(w)], g, rtol=1e-10, atol=1e-12, err_msg=w.name)


def test_group_branches_on_inception_v3():
    model = applications.InceptionV3(weights=None, input_shape=(None, None, 3))
    model.trainable = False                         # as pretrained weights are: batch norm folds
    folded = applications.fold_batch_norm(model)
    grouped = applications.group_branches(folded, keep=["activation_30"])
    blocks = [l.name for l in grouped.graph_layers if isinstance(l, Branches)]
    # mixed3 has activation_30 inside (kept); mixed9 and mixed10 nest concatenations, whose
    # inner ones (one shared 1x1 feeding two convs) are blocks of their own
    assert blocks == ["mixed0", "mixed1", "mixed2", "mixed4", "mixed5", "mixed6", "mixed7",
                      "mixed8", "mixed9_0", "concatenate_1", "mixed9_1", "concatenate_2"]
    assert grouped.get_layer("activation_12") is folded.get_layer("activation_12")
    assert isinstance(grouped.get_layer("mixed3"), nn.Concatenate)
    assert len(grouped.weights) == len(folded.weights)
    with pytest.raises(ValueError, match="folded it into"):
        grouped.get_layer("conv2d_12")
    with pytest.raises(TypeError, match="Network"):
        applications.group_branches(nn.Sequential([nn.Dense(2)]))


def test_alone_runs_every_chunk_in_the_calling_thread():
    x = np.zeros(1)
    workers.chunk_pool()
    seen = []
    with workers.alone():
        assert workers.chunk_pool() == (None, 1)
        slots = workers.for_chunks(range(6), lambda c, s: seen.append(
            (threading.get_ident(), s)), np)
    assert slots == 1 and set(seen) == {(threading.get_ident(), 0)} and len(seen) == 6
    assert workers.chunk_pool() != (None, 1) or workers.chunk_pool()[1] == 1


def test_the_input_gradient_does_not_depend_on_the_schedule():
    """The branches go out largest first by their last measured thread time, each to whichever
    thread is free, so which thread runs which branch changes from run to run; the input
    gradient adds the branches' in their own order, and so is the same bit for bit whatever
    the schedule (here forced: every order of the branches' measured costs)."""
    from itertools import permutations

    from micrograd_gen.accel import branches as fast_branches
    net = block_network(16, 17, False, True, np.float32)
    net.trainable = False
    block = applications.group_branches(net).get_layer("block")
    x = mg.Tensor(np.random.default_rng(4).uniform(0, 1, (1, 11, 12, 16)).astype(np.float32),
                  requires_grad=True)
    g = np.random.default_rng(5).standard_normal((1, 11, 12, 17 + 19 + 3 + 16)).astype(np.float32)
    results = []
    for costs in permutations([1.0, 2.0, 3.0, 4.0]):
        with mg.fast_paths(True):
            y = block(x)
            for key in [k for k in fast_branches._LAST_COSTS if k[1] == x.shape]:
                fast_branches._LAST_COSTS[key] = list(costs)
            y.backward(g)
        results.append((y.numpy(), x.grad))
        x.grad = None
    keys = [k for k in fast_branches._LAST_COSTS if k[1] == x.shape]
    assert sorted(k[2] for k in keys) == ["backward", "forward"]
    assert all(len(fast_branches._LAST_COSTS[k]) == 4 for k in keys)
    with mg.fast_paths(False):
        y = block(x)
        y.backward(g)
    for got_y, got_dx in results:
        np.testing.assert_array_equal(got_y, results[0][0])
        np.testing.assert_array_equal(got_dx, results[0][1])
    np.testing.assert_allclose(results[0][1], x.grad, **TOL[np.float32])


@given(n=st.integers(1, 5), borrowed=st.lists(st.booleans(), min_size=5, max_size=5),
       seed=st.integers(0, 99))
def test_the_branch_gradients_add_in_their_own_order(n, borrowed, seed):
    """_sum_in_order: ((g0 + g1) + g2) + ..., the same as NumPy's sum in that order, without
    writing into a borrowed gradient (a view of the block's cotangent)."""
    from micrograd_gen.accel.branches import _sum_in_order
    rng = np.random.default_rng(seed)
    grads = [rng.standard_normal((1, 7, 3, 5)).astype(np.float32) for _ in range(n)]
    kept = [a.copy() for a in grads]
    total = _sum_in_order(grads, borrowed[:n], np)
    first = next((i for i in range(n) if not borrowed[i]), 0)
    want = kept[first].copy()
    for i in range(n):
        if i != first:
            want = want + kept[i]
    np.testing.assert_array_equal(total, want)
    for i in range(n):
        if borrowed[i]:
            np.testing.assert_array_equal(grads[i], kept[i])


def test_a_pool_branch_runs_its_1x1_convolution_before_the_pool():
    """accel/branches.py swaps a 3x3 stride-1 average pool and the 1x1 convolution after it
    (they commute; pooled after the convolution the pool has fewer channels): the block's pool
    branch qualifies when the convolution narrows, and InceptionV3's four kinds of pool branch
    all do; test_grouped_block_equals_the_graph_as_written holds the numbers."""
    from micrograd_gen.accel import branches
    net = block_network(16, 16, False, False, np.float32)
    net.trainable = False
    block = applications.group_branches(net).get_layer("block")
    assert [branches._pool_then_pointwise(chain) for chain in block.chains] == [False, False, True]
    wide = block_network(3, 16, False, False, np.float32)       # 3 -> 3 channels: left in order
    wide.trainable = False
    chains = applications.group_branches(wide).get_layer("block").chains
    assert not any(branches._pool_then_pointwise(chain) for chain in chains)
    inception = applications.InceptionV3(weights=None)
    inception.trainable = False                # frozen, as DeepDream runs it: batch norm folds
    inception = applications.group_branches(applications.fold_batch_norm(inception))
    pool_branches = [chain for layer in inception.layers if isinstance(layer, Branches)
                     for chain in layer.chains
                     if chain and type(chain[0]).__name__ == "AveragePooling2D"]
    assert len(pool_branches) >= 7 and all(map(branches._pool_then_pointwise, pool_branches))
