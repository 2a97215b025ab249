"""The fast concatenated branches (an Inception block: applications.Branches): the branches run
side by side, one per worker thread, each on single-threaded BLAS, forward and backward.

The reference runs the branches one after the other and each convolution spreads its own rows
over the threads: InceptionV3's convolutions at 35x35 and 17x17 are small, so every one of them
pays a hand-off and a join, and the small ops between them (pooling, the ReLU masks, the copies
that lay a convolution's input out) run on one core. Whole branches per thread keep both cores
busy with one join per block. Each branch is the same layers on the same op code (its own small
graph from a leaf on the block's input), so the numbers are the reference's; the input gradient
sums the branches' in a fixed order.
"""
import numpy as np

from .. import fastpath
from ..backend import get_array_module
from ..tensor import Function, Tensor
from . import workers


def _cost(chain):
    """About how much work a branch is (its convolutions' multiplies per input pixel), to start
    the largest first: the threads then finish close together."""
    cost = 1
    for layer in chain:
        kernel, (sh, sw) = getattr(layer, "kernel", None), getattr(layer, "strides", (1, 1))
        if kernel is not None:
            cost += kernel.size // (sh * sw)
    return cost


class ConcatenatedBranches(Function):
    """concatenate([chain(x) for chain in chains], axis=-1), the chains run concurrently."""

    def forward(self, x, chains=None, training=None):
        xp = get_array_module(x)
        wants_grad = self.needs_input_grad[0]
        self.leaves = [Tensor(x, requires_grad=wants_grad, dtype=x.dtype) for _ in chains]
        self.outputs = [None] * len(chains)

        def run(i, slot):
            y = self.leaves[i]
            with workers.alone():
                for layer in chains[i]:
                    y = layer(y, training=training)
            self.outputs[i] = y
        self.order = sorted(range(len(chains)), key=lambda i: -_cost(chains[i]))
        workers.for_chunks(self.order, run, xp)
        y = xp.concatenate([out.data for out in self.outputs], axis=-1)
        if not wants_grad:
            self.leaves = self.outputs = None
        return y

    def backward(self, g):
        xp = get_array_module(g)
        bounds = np.cumsum([0] + [out.shape[-1] for out in self.outputs])
        grads = [None] * len(self.outputs)

        def run(i, slot):
            leaf, out, part = self.leaves[i], self.outputs[i], g[..., bounds[i]:bounds[i + 1]]
            if out is leaf:                      # an empty branch: the input itself
                grads[i] = part
                return
            with workers.alone():
                # retain_graph: the outer backward frees this op, and with it these graphs
                out.backward(part, retain_graph=True)
            grads[i] = leaf.grad                 # the leaf's own array: free to add into
        workers.for_chunks(self.order, run, xp)
        dx = None
        for i, grad in enumerate(grads):         # a fixed order: the same sum every run
            if grad is None:
                continue
            if dx is None:
                dx = grad if grad is self.leaves[i].grad else grad.copy()
            else:
                dx += grad
        return dx


def concatenated_branches(chains, x, training=None):
    """applications.Branches's call, fast: NumPy arrays and frozen layers (a weight that wants a
    gradient would get it only through the reference's graph)."""
    if get_array_module(x.data) is not np or any(
            w.requires_grad for chain in chains for layer in chain for w in layer.weights):
        return NotImplemented
    return ConcatenatedBranches.apply(x, chains=chains, training=training)


fastpath.register("concatenated_branches", concatenated_branches)
