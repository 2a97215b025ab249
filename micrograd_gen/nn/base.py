"""Layer, Model, Sequential and Input: the Keras object model on top of the Tensor engine.

A layer builds its weights on its first call, from the shape of what it is called on, as Keras
layers do. It tracks the layers assigned to its attributes, in assignment order, so a subclass of
`Model` (or of `Layer`) lists its weights without registering them by hand.

Training mode. A layer starts in inference mode, as a Keras model called directly does (dropout off,
batch norm on its moving statistics): `model.train()` switches every layer inside it to training
behaviour and `model.eval()` back. A `training=` argument on a call overrides the mode for that call
and every layer called inside it, as in Keras.

Randomness. Each layer owns a numpy Generator, made from its `seed=` argument or, without one, from
the module-level generator that `set_seed(n)` resets; initial weights and dropout masks come from
it. `set_seed(0)` before building a model therefore gives the same weights on every run.

Names. Layers get Keras's automatic names (dense, dense_1, ...) unless given `name=`;
`clear_session()` restarts the counters, as `keras.backend.clear_session()` does.
"""
import inspect
import itertools
import re

import numpy as np

from .. import backend
from ..tensor import Tensor, no_grad
from . import initializers
from .training import Trainer

# ---- seeds and names ------------------------------------------------------------------------------
_global_rng = np.random.default_rng()


def set_seed(seed):
    """Reset the generator that layers without a `seed=` draw their weights and masks from."""
    global _global_rng
    _global_rng = np.random.default_rng(seed)


_name_counts = {}


def unique_name(prefix):
    n = _name_counts.get(prefix, 0)
    _name_counts[prefix] = n + 1
    return prefix if n == 0 else f"{prefix}_{n}"


def clear_session():
    """Restart the automatic layer names, so the next Dense is `dense` again."""
    _name_counts.clear()


def to_snake_case(name):
    # Keras's rule, so that Conv2DTranspose -> conv2d_transpose and LeakyReLU -> leaky_re_lu.
    name = re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


# ---- symbolic inputs (keras.Input) --------------------------------------------------------------
class KerasTensor:
    """A placeholder with a shape (batch axis None) and a dtype, made by `Input(...)` or by calling a
    layer on placeholders; `Model(inputs, outputs)` replays the layer calls that led to `outputs`."""

    def __init__(self, shape, dtype="float32", node=None, index=0, name=None):
        self.shape = tuple(None if d is None else int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.node, self.index, self.name = node, index, name

    ndim = property(lambda self: len(self.shape))

    def __repr__(self):
        return f"KerasTensor(shape={self.shape}, dtype={self.dtype.name}, name={self.name!r})"


def Input(shape=None, batch_size=None, dtype="float32", name=None, batch_shape=None):
    """keras.Input: `shape` excludes the batch axis."""
    if batch_shape is None:
        if shape is None:
            raise ValueError("Input: give shape= (without the batch axis) or batch_shape=")
        batch_shape = (batch_size,) + tuple(shape)
    return KerasTensor(batch_shape, dtype, name=name or unique_name("input_layer"))


_node_ids = itertools.count()


class _Node:
    """One call of a layer on placeholders: its arguments (placeholders inside) and its outputs."""

    def __init__(self, layer, args, kwargs):
        self.id = next(_node_ids)
        self.layer, self.args, self.kwargs = layer, args, kwargs
        self.outputs = []


def _flatten(structure):
    if isinstance(structure, (list, tuple)):
        return [x for item in structure for x in _flatten(item)]
    if isinstance(structure, dict):
        return [x for item in structure.values() for x in _flatten(item)]
    return [structure]


def _map(fn, structure):
    if isinstance(structure, list):
        return [_map(fn, x) for x in structure]
    if isinstance(structure, tuple):
        return tuple(_map(fn, x) for x in structure)
    if isinstance(structure, dict):
        return {k: _map(fn, v) for k, v in structure.items()}
    return fn(structure)


def _is_shape(s):
    return isinstance(s, tuple) and all(d is None or isinstance(d, (int, np.integer)) for d in s)


def _shape_of(x):
    """The shape of a tensor, array or placeholder; a list of shapes for a list of them."""
    if isinstance(x, (list, tuple)):
        return [_shape_of(t) for t in x]
    return tuple(x.shape)


def _name_outputs(out, layer_name):
    # The layer that made a tensor, for micrograd_gen.viz's drawings; an inner layer's name stays
    # (a model's output keeps its last layer's name), and a leaf passed through is not renamed.
    for t in [out] if isinstance(out, Tensor) else _flatten(out):
        if isinstance(t, Tensor) and t.name is None and t._ctx is not None:
            t.name = layer_name


def _as_tensor(x):
    # Raw arrays become Tensors (float64 NumPy data becomes float32, the engine's default).
    if isinstance(x, np.ndarray) or backend._is_cupy_array(x):
        return Tensor(x)
    return x


def _as_layer_tensor(x, dtype):
    """A raw float array becomes a Tensor of the layer's dtype (Keras casts float inputs to the
    layer's compute dtype: a float64 layer computes in float64); other arrays as _as_tensor."""
    if (isinstance(x, np.ndarray) or backend._is_cupy_array(x)) and x.dtype.kind == "f":
        return Tensor(x, dtype=dtype if dtype.kind == "f" else None)
    return _as_tensor(x)


def _as_tensors_in_place(value, dtype):
    """Arrays, and arrays inside lists and tuples, become Tensors. A dict is left as it is: a
    keyword argument such as MultiHeadAttention's `cache=` is state the layer fills in."""
    if isinstance(value, (list, tuple)):
        return type(value)(_as_tensors_in_place(v, dtype) for v in value)
    return _as_layer_tensor(value, dtype)


def _name_the_layer(error, layer):
    """Put the layer in front of an error raised inside its call (an op's error names the op and
    the shapes, not the layer), unless the message already names it. Nested layers each add
    theirs, so the message reads as the path: "Sequential 'model': Dense 'dense': matmul: ..."."""
    if len(error.args) == 1 and isinstance(error.args[0], str) and (
            f"'{layer.name}'" not in error.args[0]):
        error.args = (f"{type(layer).__name__} '{layer.name}': {error.args[0]}",)


class Variable(Tensor):
    """A layer's weight: a Tensor that `assign` overwrites in place, as a Keras variable
    (`layer.kernel.assign(new_kernel)`). The array stays the same object, so an optimiser that
    holds the weight sees the new values."""
    __slots__ = ()

    def assign(self, value):
        """Overwrite with `value` (an array, a Tensor or nested lists) of the same shape; integer
        values go into a float weight, but nothing of another kind (float into int, complex,
        text), and never a NaN or an infinity. Checked before anything is written."""
        array = value.data if isinstance(value, Tensor) else value
        array = backend.to_module(array, self.device)
        if tuple(array.shape) != self.shape:
            raise ValueError(f"weight '{self.name}' has shape {self.shape}; assign() got a value "
                             f"of shape {tuple(array.shape)}")
        if array.dtype.kind not in "biuf" or not np.can_cast(array.dtype, self.dtype, "same_kind"):
            raise TypeError(f"weight '{self.name}' has dtype {self.dtype}; assign() got a value "
                            f"of dtype {array.dtype}")
        if array.dtype.kind == "f" and not bool(self.xp.isfinite(array).all()):
            raise ValueError(f"weight '{self.name}': assign() got a value with NaN or infinity")
        self.data[...] = array
        return self

    def assign_add(self, value):
        return self.assign(self.data + (value.data if isinstance(value, Tensor) else value))

    def assign_sub(self, value):
        return self.assign(self.data - (value.data if isinstance(value, Tensor) else value))


# The training flag of the enclosing call, passed to every layer called inside it (None outside).
_call_training = None


class Layer:
    """Base of every layer. Subclasses define `build(input_shape)` (add weights with `add_weight`)
    and `call(inputs, ...)`; a `training` parameter on `call` receives the resolved mode."""

    _accepts_training = {}

    def __init__(self, name=None, trainable=True, dtype=None, seed=None, input_shape=None,
                 batch_input_shape=None, batch_size=None, input_dim=None):
        object.__setattr__(self, "_tracked", {})
        self.name = name or unique_name(to_snake_case(type(self).__name__))
        self.built = False
        self._trainable = bool(trainable)
        self.dtype = np.dtype(dtype or "float32")
        self.seed = seed
        self._rng = None
        self._weight_records = []  # (short name, Tensor, created trainable), in creation order
        self.training = False
        self._output_shape = None
        if input_dim is not None and input_shape is None:
            input_shape = (input_dim,)
        if batch_input_shape is None and input_shape is not None:
            batch_input_shape = (batch_size,) + tuple(input_shape)
        self._batch_input_shape = None if batch_input_shape is None else tuple(batch_input_shape)

    # ---- attribute tracking ---------------------------------------------------------------------
    def __setattr__(self, key, value):
        tracked = self.__dict__.get("_tracked")
        if tracked is not None and not key.startswith("_"):
            if isinstance(value, Layer) or (isinstance(value, (list, tuple)) and value
                                            and all(isinstance(v, Layer) for v in value)):
                tracked[key] = value
            else:
                tracked.pop(key, None)
        object.__setattr__(self, key, value)

    @property
    def _sublayers(self):
        """Direct sublayers, in assignment order, each once."""
        seen, out = set(), []
        for value in self._tracked.values():
            for layer in (value if isinstance(value, (list, tuple)) else [value]):
                if id(layer) not in seen and layer is not self:
                    seen.add(id(layer))
                    out.append(layer)
        return out

    def _rng_for_layer(self):
        if self._rng is None:
            seed = self.seed if self.seed is not None else int(_global_rng.integers(2**63))
            self._rng = np.random.default_rng(seed)
        return self._rng

    # ---- weights --------------------------------------------------------------------------------
    def add_weight(self, name, shape, initializer="zeros", trainable=True, dtype=None):
        """Create a weight Tensor (on the current default backend) and record it under `name`."""
        dtype = np.dtype(dtype or self.dtype)
        init = initializers.get(initializer)
        if isinstance(init, initializers.Initializer):
            value = init(shape, dtype, self._rng_for_layer())
        else:  # a Keras-style callable init(shape, dtype)
            value = init(shape, dtype=dtype)
            value = np.asarray(backend.to_numpy(value.data if isinstance(value, Tensor) else value),
                               dtype=dtype)
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"layer '{self.name}': initializer for '{name}' returned shape "
                             f"{tuple(value.shape)}, expected {tuple(shape)}")
        data = backend.to_module(value, backend.default_name())
        tensor = Variable(data, requires_grad=trainable and self.trainable, dtype=dtype,
                          name=f"{self.name}/{name}")
        self._weight_records.append((name, tensor, bool(trainable)))
        return tensor

    def _own(self, trainable):
        return [t for _, t, tr in self._weight_records if tr == trainable]

    @property
    def weights(self):
        """Keras 3's order: this layer's trainable then non-trainable weights, then each sublayer's."""
        return [t for _, _, _, t in self._weight_entries()]

    @property
    def weight_names(self):
        """Keras's short names, same length and order as `weights` ("kernel", "bias", ...);
        a sublayer's weights are prefixed with its name ("dense/kernel")."""
        return [n for _, _, n, _ in self._weight_entries()]

    def _weight_entries(self):
        """(owning layer, its short name, name relative to self, Tensor) for every weight."""
        own = ([(self, n, n, t) for n, t, tr in self._weight_records if tr]
               + [(self, n, n, t) for n, t, tr in self._weight_records if not tr])
        seen = {id(t) for *_, t in own}
        for layer in self._sublayers:
            for owner, short, n, t in layer._weight_entries():
                if id(t) not in seen:
                    seen.add(id(t))
                    own.append((owner, short, f"{layer.name}/{n}", t))
        return own

    @property
    def trainable_weights(self):
        if not self.trainable:
            return []
        out = self._own(True)
        for layer in self._sublayers:
            out += [t for t in layer.trainable_weights if all(t is not u for u in out)]
        return out

    @property
    def non_trainable_weights(self):
        if not self.trainable:
            return self.weights
        trainable = {id(t) for t in self.trainable_weights}
        return [t for t in self.weights if id(t) not in trainable]

    def parameters(self):
        """The trainable weights: what an optimiser updates."""
        return self.trainable_weights

    def count_params(self):
        return sum(t.size for t in self.weights)

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        """Freezing a layer freezes its sublayers; its weights stop requiring gradients."""
        self._trainable = bool(value)
        for _, t, created_trainable in self._weight_records:
            t.requires_grad = created_trainable and self._trainable
        for layer in self._sublayers:
            layer.trainable = value

    def get_weights(self):
        """Copies of the weights as NumPy arrays, in `weights` order (Keras's layout)."""
        return [np.array(backend.to_numpy(t.data)) for t in self.weights]

    def set_weights(self, arrays):
        """Assign arrays in `weights` order. Count and shapes are all checked before anything is
        assigned, so a failed call leaves the layer as it was."""
        entries = self._weight_entries()
        arrays = list(arrays)
        if len(arrays) != len(entries):
            raise ValueError(
                f"layer '{self.name}' ({type(self).__name__}) expects {len(entries)} weights "
                f"{[n for _, _, n, _ in entries]}, got {len(arrays)} arrays"
                + ("" if self.built or entries else " (the layer is not built yet: call it once "
                   "or give it an input shape first)"))
        arrays = [backend.to_numpy(a.data if isinstance(a, Tensor) else a) for a in arrays]
        for (owner, short, _, t), a in zip(entries, arrays):
            if tuple(np.shape(a)) != t.shape:
                where = "" if owner is self else f" in '{self.name}'"
                raise ValueError(f"layer '{owner.name}' ({type(owner).__name__}){where}: weight "
                                 f"'{short}' has shape {t.shape}, the array given for it has "
                                 f"shape {tuple(np.shape(a))}")
        for (*_, t), a in zip(entries, arrays):
            t.data[...] = t.xp.asarray(np.asarray(a, dtype=t.dtype))

    def to(self, backend_name):
        """Move every weight to "numpy" or "cupy", in place (the Tensors stay the same objects,
        so an optimiser made earlier still holds them; their gradients are dropped)."""
        for t in self.weights:
            t.data = backend.to_module(t.data, backend_name)
            t.grad = None
        return self

    # ---- modes ----------------------------------------------------------------------------------
    def train(self, mode=True):
        """Training behaviour (dropout on, batch norm on batch statistics) for this layer and
        everything inside it."""
        self.training = bool(mode)
        for layer in self._sublayers:
            layer.train(mode)
        return self

    def eval(self):
        return self.train(False)

    # ---- building and calling -------------------------------------------------------------------
    def build(self, input_shape):
        """Create the weights for inputs of `input_shape` (batch axis included, maybe None)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "build" in cls.__dict__:
            original = cls.__dict__["build"]

            def build(self, *args, **kw):
                original(self, *args, **kw)
                self.built = True

            build.__doc__, build.__name__ = original.__doc__, "build"
            build._original = original
            cls.build = build

    def _build_from_call(self, args, kwargs):
        """Build from the shapes of the call's arguments; layers with several named inputs
        (MultiHeadAttention) override this."""
        self.build(_shape_of(args[0]))

    def call(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} defines no call()")

    def _call_accepts_training(self):
        def accepts(fn):
            params = inspect.signature(fn).parameters.values()
            return any(p.name == "training" or p.kind is p.VAR_KEYWORD for p in params)

        if "call" in self.__dict__:  # replaced on this instance (a wrapper): ask it, not the class
            return accepts(self.call)
        cls = type(self)
        if cls not in Layer._accepts_training:
            Layer._accepts_training[cls] = accepts(self.call)
        return Layer._accepts_training[cls]

    def _first_call_parameter(self):
        params = [p for p in inspect.signature(self.call).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        return params[0].name if params else None

    def __call__(self, *args, training=None, **kwargs):
        global _call_training
        if not args:
            # Keras's keyword for the first input is `inputs=`; the call's own name for it
            # (Dense's `x`, MultiHeadAttention's `query`) works as well.
            for key in ("inputs", self._first_call_parameter()):
                if key in kwargs:
                    args = (kwargs.pop(key),)
                    break
            else:
                raise TypeError(f"{type(self).__name__} '{self.name}' was called without an "
                                f"input (keyword arguments: {sorted(kwargs)})")
        if len(args) == 1 and not kwargs and isinstance(args[0], (Tensor, np.ndarray)):
            # The common call: one tensor or array, no keywords (each layer of a Sequential, each
            # of a generator's calls). Nothing nested to convert or to search for placeholders;
            # the walks below cost a few us a layer, as much as a small layer's arithmetic.
            if not isinstance(args[0], Tensor):
                args = (_as_layer_tensor(args[0], self.dtype),)
        else:
            args = tuple(_map(lambda x: _as_layer_tensor(x, self.dtype), a) for a in args)
            kwargs = {k: _as_tensors_in_place(v, self.dtype) for k, v in kwargs.items()}
            if any(isinstance(x, KerasTensor) for x in _flatten((args, kwargs))):
                return self._call_symbolic(args, kwargs)
        if training is None:
            training = _call_training
        effective = self.training if training is None else bool(training)
        outer, _call_training = _call_training, training
        try:
            if not self.built:
                self._build_from_call(args, kwargs)
                self.built = True
            if self._call_accepts_training():
                out = self.call(*args, training=effective, **kwargs)
            else:
                out = self.call(*args, **kwargs)
        except (ValueError, TypeError, IndexError) as error:
            _name_the_layer(error, self)
            raise
        finally:
            _call_training = outer
        self._output_shape = out.shape if isinstance(out, Tensor) else _map(
            lambda t: tuple(t.shape), out)
        _name_outputs(out, self.name)
        return out

    def _call_symbolic(self, args, kwargs):
        if not self.built:
            self._build_from_call(args, kwargs)
            self.built = True
        out_shape = self.compute_output_shape(*[_shape_of(a) for a in args])
        node = _Node(self, args, kwargs)
        out = _map_shapes(lambda s: KerasTensor(s, self.dtype, node, 0, self.name), out_shape)
        node.outputs = _flatten(out)
        for i, kt in enumerate(node.outputs):
            kt.index = i
        self._output_shape = out_shape
        return out

    def compute_output_shape(self, input_shape, *more):
        """Output shape for an input shape (batch axis included). This fallback runs the layer
        once on zeros (unknown axes taken as 1), so a custom layer needs nothing extra."""
        def dummy(shape):
            return Tensor(np.zeros([1 if d is None else d for d in shape], self.dtype))

        def placeholder_input(shape):
            return [dummy(s) for s in shape] if not _is_shape(shape) else dummy(shape)

        with no_grad():
            out = self.call(*[placeholder_input(s) for s in (input_shape,) + more])
        batch_unknown = _is_shape(input_shape) and input_shape and input_shape[0] is None
        return _map(lambda t: ((None,) + tuple(t.shape)[1:]) if batch_unknown else tuple(t.shape),
                    out)

    @property
    def output_shape(self):
        """The output shape of the last call (or of the shape pass that built the model)."""
        return self._output_shape

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


def _map_shapes(fn, shape):
    if _is_shape(shape):
        return fn(shape)
    return [_map_shapes(fn, s) for s in shape]


# ---- the graph executor --------------------------------------------------------------------------
def _nodes_leading_to(outputs):
    """The layer calls (nodes) that the placeholders `outputs` depend on, in the order they were
    made: nodes are numbered as they are made, so that order is a topological one."""
    nodes, stack = {}, [kt.node for kt in outputs if kt.node is not None]
    while stack:
        node = stack.pop()
        if node.id in nodes:
            continue
        nodes[node.id] = node
        for kt in _flatten((node.args, node.kwargs)):
            if isinstance(kt, KerasTensor) and kt.node is not None:
                stack.append(kt.node)
    return [nodes[i] for i in sorted(nodes)]


def run_graph(feeds, outputs, training=None):
    """Run the layer calls recorded on placeholders: the one executor of every graph model
    (`Model(inputs, outputs)`, and the applications' Network, whose feature extractors ask for a
    few inner outputs).

    feeds: {id(input placeholder): Tensor}; outputs: the placeholders wanted. Only the calls that
    the outputs depend on run, in the order they were recorded; each value is dropped once no
    later call reads it (backward keeps what it needs). Returns the outputs' values, in order.
    """
    order = _nodes_leading_to(outputs)
    wanted = {id(kt) for kt in outputs}
    last_read = {}
    for i, node in enumerate(order):
        for kt in _flatten((node.args, node.kwargs)):
            if isinstance(kt, KerasTensor):
                last_read[id(kt)] = i
    values = dict(feeds)

    def value_of(x):
        return values[id(x)] if isinstance(x, KerasTensor) else x

    for i, node in enumerate(order):
        out = node.layer(*_map(value_of, node.args), training=training,
                         **_map(value_of, node.kwargs))
        for kt, value in zip(node.outputs, _flatten(out)):
            values[id(kt)] = value
        for kt in _flatten((node.args, node.kwargs)):
            if isinstance(kt, KerasTensor) and last_read[id(kt)] == i and id(kt) not in wanted:
                values.pop(id(kt), None)
    return [values[id(kt)] for kt in outputs]


# ---- models ---------------------------------------------------------------------------------------
class Model(Trainer, Layer):
    """keras.Model, two ways:

    - subclass it, assign layers to attributes in `__init__`, define `call(self, x, training=None)`;
    - or `Model(inputs, outputs)` over `Input(...)` placeholders (the functional API).

    Trainer (nn/training.py) gives it compile / fit / evaluate / predict and train_step.
    """

    def __init__(self, inputs=None, outputs=None, name=None, **kwargs):
        if inputs is not None or outputs is not None:
            name = name or unique_name("functional")
        super().__init__(name=name, **kwargs)
        self._graph = None
        if inputs is not None or outputs is not None:
            self._init_graph(inputs, outputs)

    # ---- the functional form --------------------------------------------------------------------
    def _init_graph(self, inputs, outputs):
        flat_in, flat_out = _flatten(inputs), _flatten(outputs)
        for kt in flat_in + flat_out:
            if not isinstance(kt, KerasTensor):
                raise TypeError(f"Model '{self.name}': inputs and outputs must come from Input() "
                                f"and layer calls on it, got {type(kt).__name__}")
        order = _nodes_leading_to(flat_out)
        input_ids = {id(kt) for kt in flat_in}
        for node in order:
            for kt in _flatten((node.args, node.kwargs)):
                if isinstance(kt, KerasTensor) and kt.node is None and id(kt) not in input_ids:
                    raise ValueError(f"Model '{self.name}': output depends on input {kt.name!r}, "
                                     f"which is not among the model's inputs")
        self._graph = (inputs, outputs, order)
        graph_layers = []
        for node in order:
            if all(node.layer is not layer for layer in graph_layers):
                graph_layers.append(node.layer)
        self.graph_layers = graph_layers  # tracked, so layers and weights follow the node order
        self.built = True
        self._output_shape = _map(lambda kt: kt.shape, outputs)

    def _run_graph(self, inputs):
        """The graph's outputs for `inputs` (the functional model's call), inputs checked first."""
        graph_inputs, graph_outputs, _ = self._graph
        flat_in, given = _flatten(graph_inputs), _flatten(inputs)
        if len(given) != len(flat_in):
            raise ValueError(f"Model '{self.name}' expects {len(flat_in)} inputs, got {len(given)}")
        feeds = {}
        for kt, value in zip(flat_in, given):
            value = _as_tensor(value)
            expected = kt.shape[1:]
            got = tuple(value.shape)[1:]
            if len(got) != len(expected) or any(e is not None and e != g
                                                for e, g in zip(expected, got)):
                raise ValueError(f"Model '{self.name}': input {kt.name!r} expects shape "
                                 f"{kt.shape}, got {tuple(value.shape)}")
            feeds[id(kt)] = value
        flat_out = _flatten(graph_outputs)
        values = dict(zip(map(id, flat_out), run_graph(feeds, flat_out)))
        return _map(lambda kt: values[id(kt)], graph_outputs)

    def call(self, inputs, training=None):
        if self._graph is None:
            raise NotImplementedError(f"{type(self).__name__} defines no call(): subclass Model "
                                      "and define call(self, x, training=None), or build it as "
                                      "Model(inputs, outputs)")
        return self._run_graph(inputs)

    def compute_output_shape(self, input_shape, *more):
        if self._graph is not None:
            return _map(lambda kt: kt.shape, self._graph[1])
        return super().compute_output_shape(input_shape, *more)

    def build(self, input_shape):
        """For a subclassed model: one pass on zeros of `input_shape` (unknown axes taken as 1),
        in inference mode, so every layer builds and records its output shape (Keras's
        `model.build(shape)`, after which summary() and load_weights() work)."""
        if self._graph is not None:
            return

        def zeros(shape):
            if _is_shape(tuple(shape)):
                return Tensor(np.zeros([1 if d is None else d for d in shape], self.dtype))
            return [zeros(s) for s in shape]

        with no_grad():
            self.__call__(zeros(input_shape), training=False)

    def _build_from_call(self, args, kwargs):
        # A model's layers build themselves as the data reaches them.
        pass

    # ---- inspection -----------------------------------------------------------------------------
    @property
    def layers(self):
        """Every layer inside, in order, with nested models opened up into their layers."""
        out = []
        for layer in self._sublayers:
            items = layer.layers if isinstance(layer, Model) else [layer]
            for item in items:
                if all(item is not o for o in out):
                    out.append(item)
        return out

    def get_layer(self, name=None, index=None):
        if index is not None:
            return self.layers[index]
        candidates = list(self.layers)
        stack = list(self._sublayers)
        while stack:
            layer = stack.pop()
            if isinstance(layer, Model):
                candidates.append(layer)
                stack.extend(layer._sublayers)
        for layer in candidates:
            if layer.name == name:
                return layer
        raise ValueError(f"Model '{self.name}' has no layer named {name!r}; its layers: "
                         f"{[l.name for l in self.layers]}")

    def summary(self, print_fn=print, line_length=80, expand_nested=False):
        """Each layer's output shape and parameter count, then the totals (Keras's table).

        A nested model (the VAE's encoder and decoder) is one row, as in Keras; with
        `expand_nested=True` its layers follow it, indented. A subclassed model whose layers have
        not all run yet is traced on a placeholder of its first sublayer's input shape, so each
        layer shows its shape rather than "?" (random generators are put back afterwards).
        """
        _trace_output_shapes(self)
        rows = []

        def add(layers, depth):
            for layer in layers:
                kind = ("Functional" if type(layer) is Model and layer._graph is not None
                        else type(layer).__name__)
                rows.append(("  " * depth + f"{layer.name} ({kind})",
                             _format_shape(layer._output_shape), f"{layer.count_params():,}"))
                if expand_nested and isinstance(layer, Model):
                    add(layer._sublayers, depth + 1)

        add(self._sublayers, 0)
        label_width = max([int(line_length * 0.45)] + [len(r[0]) + 1 for r in rows])
        shape_width = max([int(line_length * 0.33)] + [len(r[1]) + 1 for r in rows])
        line_length = max(line_length, label_width + shape_width + len("Param #"))
        lines = [f'Model: "{self.name}"', "_" * line_length,
                 f"{'Layer (type)':<{label_width}}{'Output Shape':<{shape_width}}Param #",
                 "=" * line_length]
        lines += [f"{label:<{label_width}}{shape:<{shape_width}}{count}"
                  for label, shape, count in rows]
        trainable = sum(t.size for t in self.trainable_weights)
        total = self.count_params()
        lines += ["=" * line_length, f"Total params: {total:,}", f"Trainable params: {trainable:,}",
                  f"Non-trainable params: {total - trainable:,}", "_" * line_length]
        print_fn("\n".join(lines))

    # ---- weight files ---------------------------------------------------------------------------
    def save_weights(self, path, optimizer=None):
        """Keras legacy HDF5 layout, or Keras 3's for a name ending in .weights.h5 (see
        micrograd_gen.io); written to a temporary file and renamed."""
        from .. import io
        return io.save_weights(self, path, optimizer=optimizer)

    def load_weights(self, path, by_name=False, **kwargs):
        from .. import io
        return io.load_weights(self, path, by_name=by_name, **kwargs)


def _trace_output_shapes(model):
    """For summary(): when some layer of a subclassed model has never run, call the model once on
    a placeholder (Keras's symbolic call: each layer reports the shape it would give, nothing is
    computed) of the input shape its first sublayer knows. Layers that draw random numbers to
    find their shape (the VAE's sampler) get their generators back as they were, so a summary
    never changes what a seeded run draws (unless the trace had to build a layer's weights, as
    `model.build()` would). Code that cannot run on placeholders leaves "?"."""
    global _global_rng
    every = [model]
    for layer in every:
        every.extend(layer._sublayers)
    if model._graph is not None or all(l._output_shape is not None for l in every[1:]):
        return
    first = model._sublayers[0] if model._sublayers else None
    shape = model._batch_input_shape
    if shape is None and isinstance(first, Sequential):
        shape = first._input_batch_shape
    elif shape is None and isinstance(first, Model) and first._graph is not None:
        inputs = _flatten(first._graph[0])
        shape = inputs[0].shape if len(inputs) == 1 else None
    elif shape is None and first is not None:
        shape = first._batch_input_shape
    if shape is None:
        return
    global_state = _global_rng.bit_generator.state
    layer_states = [(l, l.built, None if l._rng is None else l._rng.bit_generator.state)
                    for l in every]
    try:
        model.call(KerasTensor(shape, model.dtype, name="summary_input"))
    except Exception:  # a call that needs real arrays: its unknown shapes stay "?"
        pass
    if any(not built and l._weight_records for l, built, _ in layer_states):
        return  # the trace built weights, as model.build() would: their draws stay drawn
    _global_rng.bit_generator.state = global_state
    for layer, _, state in layer_states:
        if state is None:
            layer._rng = None
        else:
            layer._rng.bit_generator.state = state


def _format_shape(shape):
    if shape is None:
        return "?"
    if _is_shape(shape):
        return str((None,) + tuple(shape[1:])) if shape else "()"
    return "[" + ", ".join(_format_shape(s) for s in shape) + "]"


class Sequential(Model):
    """A stack of single-input layers. With an input shape (an `Input(...)` first, or
    `input_shape=` on the first layer) it is built at once, so summary() and load_weights() work
    before any data goes through it."""

    def __init__(self, layers=None, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.stack = []
        self._input_batch_shape = None
        for layer in layers or []:
            self.add(layer)

    def add(self, layer):
        if isinstance(layer, KerasTensor):
            if self.stack:
                raise ValueError(f"Sequential '{self.name}': Input(...) must come first")
            self._input_batch_shape = layer.shape
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential '{self.name}': add() takes a layer, got "
                            f"{type(layer).__name__}")
        if not self.stack and self._input_batch_shape is None:
            self._input_batch_shape = layer._batch_input_shape
        self.stack = self.stack + [layer]
        if self._input_batch_shape is not None:
            self.build(self._input_batch_shape)

    def build(self, input_shape):
        """Build every layer from the input shape, recording each output shape on the way."""
        shape = tuple(input_shape)
        for layer in self.stack:
            if not layer.built:
                layer.build(shape)
                layer.built = True
            shape = layer.compute_output_shape(shape)
            layer._output_shape = shape
        self._input_batch_shape = tuple(input_shape)
        self._output_shape = shape

    def call(self, x, training=None):
        for layer in self.stack:
            x = layer(x)
        return x

    def compute_output_shape(self, input_shape, *more):
        shape = tuple(input_shape)
        for layer in self.stack:
            shape = layer.compute_output_shape(shape)
        return shape

    def pop(self):
        layer = self.stack[-1]
        self.stack = self.stack[:-1]
        return layer


