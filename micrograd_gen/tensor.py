"""Tensor and reverse-mode autodiff.

A Tensor wraps one array (NumPy or CuPy). An op is a `Function` subclass with `forward` and
`backward` side by side (see micrograd_gen/ops/). Calling `Function.apply(...)` runs forward on the
raw arrays and, when gradients are wanted, links the output to a Function instance (`ctx`) that
remembers its inputs and whatever backward needs. `Tensor.backward()` walks those ctx nodes in
reverse topological order, sums the gradients flowing into each output, and calls each
`ctx.backward` once. The operators (`a + b`, `a @ b`, `x[i]`, `x.sum()`, ...) are ops too: the ops
attach them to Tensor (micrograd_gen/ops/__init__.py), so this module imports no op.

Gradients (`tensor.grad`) are plain arrays of the tensor's own dtype and module; each leaf owns
its `.grad` (never a view of another array), and it accumulates with `+=` until `zero_grad()`.

Dtypes. `Tensor(python_float_or_float_array)` is float32 unless `dtype=` says otherwise; integer and
bool data keep their dtype. Inside an op:
- Python numbers and raw arrays (NumPy or CuPy, any numeric dtype) adopt the dtype of the op's
  first float tensor input: `x * 2`, `x + np.ones(3)` and `2 ** x` stay float32 for a float32 x.
- Two tensors of different float dtypes follow NumPy's promotion (float32 op float64 -> float64).
- Each input's gradient is cast back to that input's own dtype, so a float32 parameter always
  gets a float32 `.grad` even when it met float64 data on the way.
"""
import numpy as np

from . import backend, fastpath

_grad_enabled = True


class no_grad:
    """`with no_grad():` runs ops without recording anything for backward (inference, updates)."""

    def __enter__(self):
        global _grad_enabled
        self._previous = _grad_enabled
        _grad_enabled = False

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous
        return False


def is_grad_enabled():
    return _grad_enabled


class Function:
    """One differentiable op.

    Subclasses define `forward(self, *arrays, **params)` returning an array (or a tuple of arrays)
    and `backward(self, *output_grads)` returning one gradient per positional input (None where an
    input needs none). Forward may store on `self` what backward needs. Before forward runs,
    `self.needs_input_grad` says which positional inputs want a gradient, so forward can keep less
    and backward can skip work (a frozen conv kernel needs no dW).

    The grads backward receives are not its own: they may be shared with other ops or be
    read-only broadcast views, so backward never writes into them (its own saved buffers it may
    reuse). Each returned gradient must have its input's exact shape; the engine checks that and
    casts it to the input's dtype. What backward returns is handed over: a fresh array, a view,
    or an incoming grad passed on, never a buffer the op will write again (a leaf may adopt a
    fresh array as its `.grad` without copying it).
    """

    n_outputs = 1
    freed = False

    @classmethod
    def apply(cls, *inputs, **params):
        # This runs for every op, so it stays a few plain loops (no generators, no helpers).
        tensors = inputs
        for x in inputs:
            if x is not None and not isinstance(x, Tensor):
                tensors = _tensors_with_constants(inputs)
                break
        arrays = [None if t is None else t.data for t in tensors]
        if len(arrays) > 1:
            backend.get_array_module(*arrays)  # raises on a NumPy/CuPy mix
        ctx = cls()
        needs = [_grad_enabled and t is not None and t.requires_grad for t in tensors]
        record = True in needs
        ctx.needs_input_grad = tuple(needs)
        try:
            out = ctx.forward(*arrays, **params)
        except (ValueError, IndexError) as e:
            raise _name_the_op(e, cls.__name__.lower(), arrays) from e
        if not record:
            if type(out) is tuple:
                return tuple([Tensor._wrap(o, None, 0) for o in out])
            return Tensor._wrap(out, None, 0)
        ctx.parents = tensors
        if type(out) is tuple:
            ctx.n_outputs = len(out)
            ctx.output_meta = [(o.shape, o.dtype) for o in out]
            return tuple([Tensor._wrap(o, ctx, i) for i, o in enumerate(out)])
        return Tensor._wrap(out, ctx, 0)

    def forward(self, *arrays, **params):
        raise NotImplementedError(f"{type(self).__name__} has no forward")

    def backward(self, *grads):
        raise NotImplementedError(f"{type(self).__name__} has no backward")


def _name_the_op(error, op, arrays):
    """The same exception with the op's name and its input shapes added (NumPy's own messages
    name neither)."""
    shapes = ", ".join("None" if a is None else str(tuple(a.shape)) for a in arrays)
    message = str(error)
    if not message.startswith(op + ":"):
        message = f"{op}: {message}"
    message += f" (input shapes: {shapes})"
    try:
        return type(error)(message)
    except Exception:  # an exception type whose constructor wants more than a message
        return ValueError(message)


def _tensors_with_constants(inputs):
    """inputs with each Python number or raw array made a non-differentiable Tensor.

    Constants adopt the dtype of the first float tensor input, so that `x * 2` stays float32
    and a float64 gradient check stays float64.
    """
    like = None
    for x in inputs:
        if isinstance(x, Tensor) and x.data.dtype.kind == "f":
            like = x.data
            break
    out = []
    for x in inputs:
        if x is None or isinstance(x, Tensor):
            out.append(x)
        elif like is None:
            out.append(Tensor(x))
        elif isinstance(x, (int, float)):
            data = backend.get_array_module(like).asarray(x, dtype=like.dtype)
            out.append(Tensor._wrap(data, None, 0))
        else:
            # A raw NumPy array next to a CuPy tensor (or the reverse) is a TypeError, not a copy.
            data = backend.get_array_module(like, x).asarray(x)
            if data.dtype != like.dtype and data.dtype.kind in "fiub":
                data = data.astype(like.dtype)
            out.append(Tensor._wrap(data, None, 0))
    return tuple(out)


class Tensor:
    """An array (NumPy or CuPy) with what autodiff needs: `grad`, `requires_grad`, and the op
    (`_ctx`, output `_index`) that made it. A float32 NumPy or CuPy array is wrapped as it is,
    not copied, so in-place updates to `tensor.data` show in the array and the other way round.
    """
    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_index", "name", "__weakref__")
    # `numpy_array + tensor` must call Tensor.__radd__ rather than loop over the tensor as an object
    # array; and np.exp(tensor) is a TypeError rather than an object array (use micrograd_gen.ops).
    __array_ufunc__ = None

    def __init__(self, data, requires_grad=False, dtype=None, name=None):
        if isinstance(data, Tensor):
            data = data.data
        if backend._is_cupy_array(data) or isinstance(data, np.ndarray):
            xp = backend.get_array_module(data)
        else:
            xp = backend.default_module()
        if dtype is not None:
            data = xp.asarray(data, dtype=dtype)
        else:
            data = xp.asarray(data)
            if data.dtype.kind == "f" and data.dtype != np.float32:
                data = data.astype(np.float32)
        if requires_grad and data.dtype.kind not in "fc":
            raise TypeError(f"Tensor(requires_grad=True) needs a float dtype, got {data.dtype}")
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None
        self._index = 0
        self.name = name

    @classmethod
    def _wrap(cls, data, ctx, index):
        t = object.__new__(cls)
        t.data = data
        t.grad = None
        t.requires_grad = ctx is not None
        t._ctx = ctx
        t._index = index
        t.name = None
        return t

    # ---- plain properties -------------------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: int(self.data.size))
    is_leaf = property(lambda self: self._ctx is None)

    @property
    def xp(self):
        return backend.get_array_module(self.data)

    @property
    def device(self):
        return "cupy" if backend._is_cupy_array(self.data) else "numpy"

    def __len__(self):
        return len(self.data)

    def __bool__(self):
        # `if x > 0:` on a one-element tensor, as NumPy allows (more elements: NumPy's error)
        return bool(self.data)

    def __repr__(self):
        extra = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, {self.device}{extra})"

    __hash__ = object.__hash__  # comparisons return tensors, identity stays the hash

    def numpy(self):
        """The data as a NumPy array (copied from the GPU when needed)."""
        return backend.to_numpy(self.data)

    def item(self):
        return self.numpy().item()

    def __float__(self):
        return float(self.item())

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor._wrap(self.data, None, 0)

    def to(self, name):
        """This tensor's data on the named backend ("numpy" or "cupy"), as a new leaf that keeps
        requires_grad (the array is shared, not copied, when it is already there)."""
        t = Tensor._wrap(backend.to_module(self.data, name), None, 0)
        t.requires_grad = self.requires_grad
        return t

    def zero_grad(self):
        self.grad = None

    # ---- autodiff ---------------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's `.grad` that requires it.

        `grad` is the cotangent (defaults to 1 for a one-element tensor). The graph is freed
        afterwards unless `retain_graph=True`, so a long optimisation loop does not grow memory.
        """
        grad = _cotangent(self, grad)
        xp = self.xp
        leaves = _LeafGradients(shared=[grad])  # the cotangent stays the caller's
        if self._ctx is None:
            leaves.add(self, grad)
            leaves.hand_to_leaves()
            return
        # Topological order of the ops that made self: an iterative depth-first search (graphs
        # hundreds of thousands of ops deep would hit Python's recursion limit), each op listed
        # after every op it feeds once the list is reversed.
        order, seen = [], {self._ctx}
        stack = [(self._ctx, iter(self._ctx.parents))]
        while stack:
            ctx, parents = stack[-1]
            for p in parents:
                if p is not None and p.requires_grad and p._ctx is not None and p._ctx not in seen:
                    seen.add(p._ctx)
                    stack.append((p._ctx, iter(p._ctx.parents)))
                    break
            else:
                stack.pop()
                order.append(ctx)
        # The chain rule, from self back to the leaves: each op's backward runs once, on the sum
        # of the gradients that reached each of its outputs.
        # op -> the summed gradient of each output, as [array, whether this pass alone holds it]
        pending = {self._ctx: [None] * self._ctx.n_outputs}
        pending[self._ctx][self._index] = [grad, False]
        # op -> slices of its output held back until its other readers have made their sum, so
        # that each adds into that sum rather than starting one of zeros (ctx.backward_into)
        held = {}
        for ctx in reversed(order):
            for slice_op, slice_grads in held.pop(ctx, ()):       # ctx's readers are all done
                _chain_rule(slice_op, slice_grads, pending, leaves, retain_graph, xp)
            out_slots = pending.pop(ctx, None)
            if out_slots is None:  # every path from self to this op had a None gradient
                continue
            out_grads = [None if slot is None else slot[0] for slot in out_slots]
            leaves.share(*out_grads)
            if _waits_for_a_sum(ctx, pending):
                held.setdefault(ctx.parents[0]._ctx, []).append((ctx, out_grads))
                continue
            _chain_rule(ctx, out_grads, pending, leaves, retain_graph, xp)
        leaves.hand_to_leaves()

    # ---- operators ----------------------------------------------------------------------------
    # +, -, *, /, **, @, unary -, abs(), indexing, x.sum(), x.reshape(), x.T, ... are ops: the ops
    # attach them to Tensor (micrograd_gen/ops/__init__.py), so this module imports no op.
    def __pos__(self):
        return self

    # Comparisons give boolean tensors that carry no gradient.
    def _compare(self, other, fn):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._wrap(fn(self.data, other), None, 0)

    def __lt__(self, other): return self._compare(other, lambda a, b: a < b)
    def __le__(self, other): return self._compare(other, lambda a, b: a <= b)
    def __gt__(self, other): return self._compare(other, lambda a, b: a > b)
    def __ge__(self, other): return self._compare(other, lambda a, b: a >= b)
    def __eq__(self, other): return self._compare(other, lambda a, b: a == b)
    def __ne__(self, other): return self._compare(other, lambda a, b: a != b)


# ---- what backward() leans on -----------------------------------------------------------------

_FREED = ("backward() through a graph that was already freed by an earlier backward(); "
          "pass retain_graph=True to the first backward() to run it again")


def _cotangent(tensor, grad):
    """The gradient that starts backward() from `tensor`: 1 for a one-element tensor when none is
    given, else `grad` checked against the tensor's shape and cast to its dtype."""
    if not tensor.requires_grad:
        raise RuntimeError("backward() on a tensor that does not require grad "
                           "(no input had requires_grad=True, or it was made under no_grad())")
    xp = tensor.xp
    if grad is None:
        if tensor.data.size != 1:
            raise RuntimeError(
                f"backward() on a non-scalar tensor of shape {tensor.shape} needs an explicit "
                f"cotangent: y.backward(grad) with grad of shape {tensor.shape}")
        return xp.ones_like(tensor.data)
    grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad)
    if tuple(grad.shape) != tensor.shape:
        raise ValueError(f"backward(): cotangent shape {tuple(grad.shape)} does not match "
                         f"the tensor's shape {tensor.shape}")
    return grad.astype(tensor.dtype, copy=False)


def _input_gradients(ctx, out_grads, xp):
    """[(input, its gradient)] from `ctx.backward`, for each input that wants one: the Function
    contract checked (one gradient per input, each of its input's shape), each gradient cast to
    its input's dtype. An output that received no gradient gets zeros."""
    if ctx.freed:
        raise RuntimeError(_FREED)
    if ctx.n_outputs > 1:
        out_grads = [xp.zeros(s, d) if g is None else g
                     for g, (s, d) in zip(out_grads, ctx.output_meta)]
    in_grads = ctx.backward(*out_grads)
    if type(in_grads) is not tuple:
        in_grads = (in_grads,)
    if len(in_grads) != len(ctx.parents):
        raise RuntimeError(f"{type(ctx).__name__}.backward returned {len(in_grads)} "
                           f"gradients for {len(ctx.parents)} inputs")
    pairs = []
    for parent, g in zip(ctx.parents, in_grads):
        if g is None or parent is None or not parent.requires_grad:
            continue
        data = parent.data
        if g.shape != data.shape:
            raise RuntimeError(f"{type(ctx).__name__}.backward returned a gradient of shape "
                               f"{tuple(g.shape)} for an input of shape {tuple(data.shape)}")
        if g.dtype is not data.dtype and g.dtype != data.dtype:
            g = g.astype(data.dtype)  # mixed dtypes: each input gets its own dtype back
        pairs.append((parent, g))
    return pairs


def _chain_rule(ctx, out_grads, pending, leaves, retain_graph, xp):
    """One op's step of backward: its inputs' gradients from its outputs', added to what
    each input has received so far (in `pending`, or the leaves' sums)."""
    if _added_into_sum(ctx, out_grads, pending):
        in_grads = ()
    else:
        in_grads = _input_gradients(ctx, out_grads, xp)
    for parent, g in in_grads:
        if parent._ctx is None:
            leaves.add(parent, g)
            continue
        leaves.share(g)
        slots = pending.get(parent._ctx)
        if slots is None:
            slots = pending[parent._ctx] = [None] * parent._ctx.n_outputs
        i, fresh = parent._index, _fresh(g, in_grads, out_grads)
        slots[i] = [g, fresh] if slots[i] is None else _summed(slots[i], g, fresh)
    if not retain_graph:
        ctx.__dict__.clear()  # drop saved arrays and the links to inputs
        ctx.freed = True
        ctx.parents = ()


def _input_sum(ctx, pending):
    """For an op of one input that can add its gradient into that input's sum
    (ctx.backward_into): the input's slot in `pending`, [sum so far, whether this pass alone
    holds it], or None while no other reader has given one. False for any other op (a freed
    one has no inputs left)."""
    if getattr(ctx, "backward_into", None) is None or len(ctx.parents) != 1:
        return False
    parent = ctx.parents[0]
    if parent is None or not parent.requires_grad or parent._ctx is None:
        return False
    slots = pending.get(parent._ctx)
    return None if slots is None else slots[parent._index]


def _waits_for_a_sum(ctx, pending):
    """True for an op that could add its gradient into its input's sum but finds no sum of this
    pass's own there yet: other readers of the input may still make one. (Held until they
    have, it copies a sum that is not its own rather than start from zeros.)"""
    slot = _input_sum(ctx, pending)
    return slot is not False and (slot is None or not slot[1])


def _added_into_sum(ctx, out_grads, pending):
    """True when ctx, an op of one input, added its input's gradient straight into the sum that
    the input's other readers started, an array this pass alone holds (ctx.backward_into). A
    slice's gradient is zeros but for the slice: style transfer slices every style layer's
    features (60-180 MB at 400x600) per image, and adding just the slice skips making and adding
    an array as large as the features."""
    slot = _input_sum(ctx, pending) if out_grads[0] is not None else False
    if not slot:
        return False
    if not slot[1]:      # a sum others hold too (a view, a cotangent passed on): a copy of our own
        slot[0], slot[1] = slot[0].copy(), True
    return ctx.backward_into(out_grads[0], slot[0])


def _fresh(g, in_grads, out_grads):
    """True when g, a gradient an op's backward returned, can be summed into in place: a new
    array (not a view, not an incoming gradient passed on, not given to two inputs). The rule by
    which a leaf adopts its gradient (_LeafGradients)."""
    return (getattr(g, "base", 0) is None and not any(g is o for o in out_grads)
            and sum(g is other for _, other in in_grads) == 1)


def _summed(slot, g, g_fresh):
    """slot ([gradient so far, ours]) plus g: in place into whichever this pass alone holds.
    A layer's output read by several ops (an Inception block's input, a style layer's features
    sliced per image) gets each reader's gradient; adding out of place costs a new array per
    reader, as large as the layer's output."""
    total, ours = slot
    if ours:
        slot[0] = _add_into(total, g)
        return slot
    if g_fresh:
        return [_add_into(g, total), True]
    return [total + g, True]


def _add_into(total, g):
    """total += g, or the fast path's (large arrays: over the cores); returns total (a new
    object only for a NumPy scalar, which is immutable)."""
    fast = fastpath.lookup("add_into")
    if fast is None or fast(total, g) is NotImplemented:
        total += g
    return total


class _LeafGradients:
    """The gradient of each leaf, summed over one backward pass, then added into `leaf.grad`.

    A leaf owns its `.grad`: later passes add into it in place, so it must never be an array
    that someone else holds. Copying every gradient would be safe but costly (a 2048x2048
    GEMM's dW is 16 MB), so a leaf adopts its gradient without a copy when no one else can hold
    that array: a sum made here, or an array that an op's backward returned for this leaf alone
    (not a view, not an incoming gradient passed on, not also given to another op or leaf).
    """

    def __init__(self, shared=()):
        self.sums = {}                             # leaf -> [gradient, whether the sum is ours]
        self.shared = {id(a) for a in shared}      # arrays others hold too

    def share(self, *arrays):
        """`arrays` were handed to someone else (an op's backward): no leaf may adopt them."""
        for a in arrays:
            self.shared.add(id(a))

    def add(self, leaf, g):
        total = self.sums.get(leaf)
        if total is None:
            self.sums[leaf] = [g, False]
        else:
            total[0] = total[0] + g  # out of place: g may be someone else's
            total[1] = True

    def hand_to_leaves(self):
        given = {}
        for g, _ in self.sums.values():
            given[id(g)] = given.get(id(g), 0) + 1
        for leaf, (g, ours) in self.sums.items():
            if leaf.grad is not None:
                leaf.grad += g
            elif ours or (g.base is None and id(g) not in self.shared and given[id(g)] == 1):
                leaf.grad = g
            else:
                leaf.grad = g.copy()
