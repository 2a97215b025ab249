"""The fast concatenated branches (an Inception block: applications.Branches): the branches run
side by side on the worker threads, each on single-threaded BLAS, forward and backward.

The reference runs the branches one after the other and each convolution spreads its own rows
over the threads: InceptionV3's convolutions at 35x35 and 17x17 are small, so every one of them
pays a hand-off and a join, and the small ops between them (pooling, the ReLU masks, the copies
that lay a convolution's input out) run on one core. Whole branches per thread keep both cores
busy with one join per block. Each branch is the same layers on the same op code (its own small
graph from a leaf on the block's input), so the numbers are the reference's.

Branches are unequal (a 3x3 -> 3x3 branch beside a lone 1x1), and a branch's cost in the
backward is not its forward's (pooling's backward costs several times its forward). So each
direction hands out the branches largest first, by the thread time each took in that direction
the last time the block ran on an input of that shape (the first time, by an estimate from
their kernels), each to whichever thread is free. Which thread runs a branch then changes from
run to run; the input gradient sums the branches' in their own order afterwards, so that the
result does not.
"""
import time

import numpy as np

from .. import fastpath, ops
from ..backend import get_array_module
from ..nn import activations
from ..nn.convolutional import AveragePooling2D, Conv2D
from ..tensor import Function, Tensor
from . import workers

# (the chains' layers, input shape, "forward" or "backward") -> the thread seconds each branch
# took there the last time: a schedule only, never part of a result.
_LAST_COSTS = {}


def _cost(chain):
    """About how much work a branch is (its convolutions' multiplies per input pixel)."""
    cost = 1
    for layer in chain:
        kernel, (sh, sw) = getattr(layer, "kernel", None), getattr(layer, "strides", (1, 1))
        if kernel is not None:
            cost += kernel.size // (sh * sw)
    return cost


def _largest_first(chains, key):
    """The branch indices, the costliest first: by the thread time measured under `key`, else by
    the estimate from the kernels."""
    costs = _LAST_COSTS.get(key) or [_cost(chain) for chain in chains]
    return sorted(range(len(chains)), key=lambda i: -costs[i])


def _remember(costs, key):
    """Keep the measured costs of one run (a bounded table: a schedule hint per model and size)."""
    if len(_LAST_COSTS) > 1000:
        _LAST_COSTS.clear()
    _LAST_COSTS[key] = costs


def _output_shape(chain, shape):
    for layer in chain:
        shape = layer.compute_output_shape(shape)
    return tuple(shape)


def _run_chain(chain, x, training):
    """The chain's layers on x, in order, but for a pool branch (a 3x3 stride-1 'same' average
    pool, then a 1x1 convolution): the convolution first, then the pool. Both are linear and act
    on different axes (the pool over pixels, with weights summing to 1 in every window, so a
    bias passes through; the 1x1 over channels), so they commute, and pooled after it the
    convolution's output is a quarter of its input (InceptionV3: 768 -> 192, 256 -> 64
    channels): the pool's forward and backward on a quarter of the numbers."""
    if _pool_then_pointwise(chain):
        pool, conv = chain[:2]
        activation = activations.get(conv.activation)
        y = ops.conv2d(x, conv.kernel, conv.bias, padding=conv.padding)
        y = ops.avg_pool2d(y, pool.pool_size, strides=pool.strides, padding=pool.padding)
        x, chain = activation(y), chain[2:]
    for layer in chain:
        x = layer(x, training=training)
    return x


def _pool_then_pointwise(chain):
    if len(chain) < 2:
        return False
    pool, conv = chain[:2]
    return (type(pool) is AveragePooling2D and type(conv) is Conv2D
            and tuple(pool.pool_size) == (3, 3) and tuple(pool.strides) == (1, 1)
            and pool.padding == "same" and conv.kernel.shape[:2] == (1, 1)
            and tuple(conv.strides) == (1, 1) and tuple(conv.dilation_rate) == (1, 1)
            and conv.groups == 1 and conv.kernel.shape[3] < conv.kernel.shape[2]
            and activations.get(conv.activation) in (activations.relu, activations.linear))

class ConcatenatedBranches(Function):
    """concatenate([chain(x) for chain in chains], axis=-1), the chains run concurrently."""

    def forward(self, x, chains=None, training=None):
        xp = get_array_module(x)
        wants_grad = self.needs_input_grad[0]
        self.leaves = [Tensor(x, requires_grad=wants_grad, dtype=x.dtype) for _ in chains]
        self.outputs = [None] * len(chains)
        shapes = [_output_shape(chain, x.shape) for chain in chains]
        self.bounds = np.cumsum([0] + [shape[-1] for shape in shapes])
        y = xp.empty(shapes[0][:-1] + (int(self.bounds[-1]),), x.dtype)
        self.chains = chains
        self.key = (tuple(id(layer) for chain in chains for layer in chain), x.shape)
        costs = [0.0] * len(chains)

        def run(i, slot):
            started = time.thread_time()
            out = self.leaves[i]
            with workers.alone():
                out = _run_chain(chains[i], out, training)
            self.outputs[i] = out
            y[..., self.bounds[i]:self.bounds[i + 1]] = out.data    # straight into place
            costs[i] = time.thread_time() - started
        workers.for_chunks(_largest_first(chains, self.key + ("forward",)), run, xp)
        _remember(costs, self.key + ("forward",))
        if not wants_grad:
            self.leaves = self.outputs = self.chains = None
        return y

    def backward(self, g):
        xp = get_array_module(g)
        grads, costs = [None] * len(self.leaves), [0.0] * len(self.leaves)

        def run(i, slot):
            started = time.thread_time()
            leaf, out = self.leaves[i], self.outputs[i]
            part = g[..., self.bounds[i]:self.bounds[i + 1]]
            if out is leaf:                      # an empty branch: the input itself
                grads[i] = part
            else:
                with workers.alone():
                    # retain_graph: the outer backward frees this op, and these graphs
                    out.backward(part, retain_graph=True)
                # the leaf's own array, free to add into; taken from the leaf, so that a
                # second backward (retain_graph) starts a new one
                grads[i], leaf.grad = leaf.grad, None
            costs[i] = time.thread_time() - started
        key = self.key + ("backward",)
        workers.for_chunks(_largest_first(self.chains, key), run, xp)
        _remember(costs, key)
        return _sum_in_order(grads, [out is leaf for out, leaf in zip(self.outputs, self.leaves)],
                             xp)


def _sum_in_order(grads, borrowed, xp):
    """grads[0] + grads[1] + ..., added in that order whichever thread made each, in bands of
    rows over the threads (it runs between two parallel sections, and each is as large as the
    block's input). A borrowed gradient (a view of the block's cotangent) is not added into."""
    first = next((i for i, b in enumerate(borrowed) if not b), None)
    total = grads[0].copy() if first is None else grads[first]
    order = [i for i in range(len(grads)) if i != (0 if first is None else first)]

    def add(band, slot):
        rows = slice(*band)
        for i in order:
            total[:, rows] += grads[i][:, rows]
    workers.for_chunks(workers.even_cuts(total.shape[1], 2 * workers.chunk_pool()[1])
                       if xp is np else [(0, total.shape[1])], add, xp)
    return total


def concatenated_branches(chains, x, training=None):
    """applications.Branches's call, fast: NumPy arrays, frozen layers (a weight that wants a
    gradient would get it only through the reference's graph) of x's dtype."""
    layers = [layer for chain in chains for layer in chain]
    if (get_array_module(x.data) is not np or any(layer.dtype != x.dtype for layer in layers)
            or any(w.requires_grad for layer in layers for w in layer.weights)):
        return NotImplemented
    return ConcatenatedBranches.apply(x, chains=chains, training=training)


fastpath.register("concatenated_branches", concatenated_branches)
