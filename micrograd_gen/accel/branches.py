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
    """About how much work a branch is (its convolutions' multiplies per input pixel)."""
    cost = 1
    for layer in chain:
        kernel, (sh, sw) = getattr(layer, "kernel", None), getattr(layer, "strides", (1, 1))
        if kernel is not None:
            cost += kernel.size // (sh * sw)
    return cost


def _share_out(chains, threads):
    """The branches of each thread: the largest first, each to the thread with the least work so
    far, so that the threads finish close together. Fixed, so that the input gradient's sums
    are the same on every run."""
    loads, shares = [0] * threads, [[] for _ in range(threads)]
    for i in sorted(range(len(chains)), key=lambda i: -_cost(chains[i])):
        slot = loads.index(min(loads))
        loads[slot] += _cost(chains[i])
        shares[slot].append(i)
    return [share for share in shares if share]


def _output_shape(chain, shape):
    for layer in chain:
        shape = layer.compute_output_shape(shape)
    return tuple(shape)


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

        def run(share, slot):
            for i in share:
                out = self.leaves[i]
                with workers.alone():
                    for layer in chains[i]:
                        out = layer(out, training=training)
                self.outputs[i] = out
                y[..., self.bounds[i]:self.bounds[i + 1]] = out.data    # straight into place
        self.shares = _share_out(chains, workers.chunk_pool()[1] if xp is np else 1)
        workers.for_chunks(self.shares, run, xp, fixed=True)
        if not wants_grad:
            self.leaves = self.outputs = None
        return y

    def backward(self, g):
        xp = get_array_module(g)
        sums = [None] * len(self.shares)

        def run(share, slot):
            for i in share:
                leaf, out = self.leaves[i], self.outputs[i]
                part = g[..., self.bounds[i]:self.bounds[i + 1]]
                if out is leaf:                  # an empty branch: the input itself
                    grad = part
                else:
                    with workers.alone():
                        # retain_graph: the outer backward frees this op, and these graphs
                        out.backward(part, retain_graph=True)
                    # the leaf's own array, free to add into; taken from the leaf, so that a
                    # second backward (retain_graph) starts a new one
                    grad, leaf.grad = leaf.grad, None
                k = self.shares.index(share)
                if sums[k] is None:
                    sums[k] = grad.copy() if out is leaf else grad
                else:
                    sums[k] += grad
        workers.for_chunks(self.shares, run, xp, fixed=True)
        dx = sums[0]
        for other in sums[1:]:                   # a fixed order: the same sum every run
            _add_into(dx, other, xp)
        return dx


def _add_into(total, other, xp):
    """total += other, in bands of rows over the threads (it runs between two parallel
    sections, and is as large as the block's input)."""
    def add(band, slot):
        total[:, band[0]:band[1]] += other[:, band[0]:band[1]]
    rows = total.shape[1]
    workers.for_chunks([(0, rows // 2), (rows // 2, rows)] if rows > 1 else [(0, rows)], add, xp)


def concatenated_branches(chains, x, training=None):
    """applications.Branches's call, fast: NumPy arrays, frozen layers (a weight that wants a
    gradient would get it only through the reference's graph) of x's dtype."""
    layers = [layer for chain in chains for layer in chain]
    if (get_array_module(x.data) is not np or any(layer.dtype != x.dtype for layer in layers)
            or any(w.requires_grad for layer in layers for w in layer.weights)):
        return NotImplemented
    return ConcatenatedBranches.apply(x, chains=chains, training=training)


fastpath.register("concatenated_branches", concatenated_branches)
