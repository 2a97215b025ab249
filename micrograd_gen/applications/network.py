"""The graph model behind VGG19 and InceptionV3, and feature extractors over it.

A `Network` is a fixed directed acyclic graph of layers, each named as in Keras and fed by the
layers it names as inputs. Its `layers` follow the order Keras 2 gave them (`keras_order`), which
is the order of `layer_names` in the keras-applications weight files, so those files load by order
as Keras loads them. Running the graph for a few named outputs evaluates only their ancestors, so a
feature extractor for mixed4..mixed7 never computes mixed8..mixed10.

The graph runs as written. Two rewrites, explicit and named, return another Network that computes
the same: `fold_batch_norm(model)`, in which each frozen convolution + batch norm (+ ReLU) is one
conv2d, and `group_branches(model)`, in which each Inception block is one `Branches` layer (whose
fast path runs the branches side by side).
"""
import difflib

from .. import fastpath, io, ops, weights as weight_files
from ..backend import get_array_module
from ..nn import (Activation, BatchNormalization, Concatenate, Conv2D, Input, Layer, Model,
                  activations)
from ..nn.base import run_graph
from ..ops.norm import fold_batch_norm_into_conv
from ..tensor import Tensor


class InputLayer(Layer):
    """The graph's entry (Keras's `input_1`): passes NHWC images through after checking them."""

    def __init__(self, min_size=1, channels=3, **kwargs):
        super().__init__(**kwargs)
        self.min_size, self.channels = min_size, channels

    def call(self, x):
        shape = tuple(x.shape)
        if len(shape) != 4 or shape[-1] != self.channels:
            raise ValueError(f"'{self.name}' expects NHWC images (batch, height, width, "
                             f"{self.channels}), got shape {shape}")
        if min(shape[1:3]) < self.min_size:
            raise ValueError(f"'{self.name}' needs images of at least {self.min_size}x"
                             f"{self.min_size} pixels, got {shape[1]}x{shape[2]}")
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


def check_arguments(model_name, include_top, input_shape, min_size):
    """Keras's constructor arguments that we take: include_top=False only, input_shape checked."""
    if include_top:
        raise ValueError(f"{model_name}(include_top=True): only the convolutional base is "
                         "available (include_top=False), which is what the chapter uses")
    if input_shape is not None:
        shape = tuple(input_shape)
        if len(shape) != 3 or shape[-1] != 3 or any(
                d is not None and d < min_size for d in shape[:2]):
            raise ValueError(f"{model_name}: input_shape must be (height, width, 3) with height "
                             f"and width at least {min_size} (or None), got {shape}")


def keras_order(parents, outputs):
    """The layer order of a Keras 2 functional model (`Network._init_graph_network`).

    `parents` maps each layer name to the names of its inputs, in call order. Keras walks the graph
    depth-first from the outputs, numbering layers as it first meets them; a layer's depth is the
    longest path from it to an output. Layers are listed by decreasing depth, ties by that number.
    """
    index, postorder, done = {}, [], set()
    for out in outputs:
        if out in done:
            continue
        index.setdefault(out, len(index))
        stack = [(out, iter(parents[out]))]
        while stack:
            name, inputs = stack[-1]
            for p in inputs:
                if p not in done:  # never on the stack: add() only takes existing inputs
                    index.setdefault(p, len(index))
                    stack.append((p, iter(parents[p])))
                    break
            else:
                stack.pop()
                done.add(name)
                postorder.append(name)
    depth = {}
    for name in reversed(postorder):  # each layer after every layer it feeds
        d = depth.setdefault(name, 0)
        for p in parents[name]:
            depth[p] = max(depth.get(p, 0), d + 1)
    return sorted(postorder, key=lambda n: (-depth[n], index[n]))


class Network(Model):
    """Layers wired by name: `add(layer, *input_names)`, then `finish(output_name, input_shape)`.

    finish() calls every layer on placeholders (keras.Input), which makes the network a
    functional `Model(inputs, outputs)`: the graph that runs is exactly the one that was written,
    through the executor every graph model uses (micrograd_gen.nn.base.run_graph). For a faster
    inference graph, call `fold_batch_norm(model)`, which returns another Network.
    """

    def __init__(self, name, input_layer, dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self._by_name = {input_layer.name: input_layer}   # in the order they were added
        self._parents = {input_layer.name: []}
        self._input_name = self._output_name = input_layer.name
        self._order = [input_layer.name]
        self._symbols = {}                                 # layer name -> its output placeholder
        self._input_shape = None
        self.folded_into = {}                              # see fold_batch_norm
        self.inside_blocks = {}                            # see group_branches
        self.weights_path = None

    def add(self, layer, *inputs):
        if layer.name in self._by_name:
            raise ValueError(f"{self.name}: a layer named '{layer.name}' already exists")
        for p in inputs:
            if p not in self._by_name:
                raise ValueError(f"{self.name}: '{layer.name}' takes unknown input '{p}'")
        self._by_name[layer.name] = layer
        self._parents[layer.name] = list(inputs)
        return layer.name

    def finish(self, output, input_shape):
        """Fix the output, call every layer on placeholders (building each weight from shapes)
        and put the layers in Keras's order."""
        self._output_name = output
        self._order = keras_order(self._parents, [output])
        self._input_shape = tuple(input_shape)
        placeholder = Input(batch_shape=self._input_shape, dtype=self.dtype,
                            name=self._input_name)
        for name in self._order:   # Keras's order is a topological one: it is the run order
            parents = [self._symbols[p] for p in self._parents[name]]
            self._symbols[name] = self._by_name[name](placeholder if not parents else parents[0]
                                                      if len(parents) == 1 else parents)
        self._init_graph(placeholder, self._symbols[output])
        self.graph_layers = [self._by_name[n] for n in self._order]  # tracked: `layers` order
        return self

    # ---- inspection -----------------------------------------------------------------------------
    @property
    def layer_names(self):
        return list(self._order)

    def get_layer(self, name=None, index=None):
        if index is not None:
            return self.layers[index]
        if name in self._by_name:
            return self._by_name[name]
        if name in self.inside_blocks:
            return self.inside_blocks[name]
        if name in self.folded_into:
            raise ValueError(f"{self.name} has no layer {name!r}: fold_batch_norm folded it into "
                             f"{self.folded_into[name]!r}; ask the unfolded model for it")
        close = difflib.get_close_matches(str(name), self._order, n=4)
        hint = f"did you mean {close}?" if close else f"its layers: {self._order[:6]}..."
        raise ValueError(f"{self.name} has no layer named {name!r}; {hint}")

    def ancestors(self, names):
        """The names that must run to produce `names`, in run order."""
        needed, stack = set(), list(names)
        while stack:
            n = stack.pop()
            if n not in needed:
                needed.add(n)
                stack.extend(self._parents[n])
        return [n for n in self._order if n in needed]

    # ---- running --------------------------------------------------------------------------------
    def run(self, x, names, training=None):
        """{name: output} for the named layers, running only what they depend on."""
        for n in names:
            self.get_layer(n)
        if not isinstance(x, Tensor):
            x = Tensor(get_array_module(x).asarray(x), dtype=self.dtype)
        placeholder = self._graph[0]
        outputs = run_graph({id(placeholder): x}, [self._symbols[n] for n in names],
                            training=training)
        return dict(zip(names, outputs))

    def call(self, x, training=None):
        return self.run(x, [self._output_name], training=training)[self._output_name]

    def load(self, weights, manifest_name):
        """Load `weights` (None, "imagenet" or a path) and freeze the model when pretrained."""
        path = weight_files.resolve(manifest_name, weights)
        if path is None:
            return self
        io.load_weights(self, path, by_name="auto")
        self.trainable = False  # pretrained: no weight gradients, so conv backward skips dW
        self.weights_path = path
        return self


# ---- batch-norm folding: an explicit step that returns another graph ------------------------------

def fold_batch_norm(model, keep=()):
    """An inference Network that computes what `model` computes, with every frozen Conv2D ->
    BatchNormalization pair folded into ONE Conv2D (kernel K * scale, bias shift: see
    micrograd_gen.ops.norm.fold_batch_norm_into_conv), and the ReLU after the pair, when there is
    one, made that convolution's activation (conv2d fuses it: see nn.Conv2D).

    InceptionV3 has 94 conv / batch norm / ReLU triples: folded, each is one op instead of three,
    with no pass of its own over the activations, forward or backward (DeepDream, whose weights
    are frozen). A pair folds only when both layers are frozen (no weight requires a gradient, so
    the batch norm runs on its moving statistics), the convolution has no bias and no activation,
    and each layer's output is read by the next layer alone. Everything else is kept as it is
    (the same layer objects; VGG19 has nothing to fold).

    The folded convolution takes the name of the last layer it replaces (activation_k, or
    batch_normalization_k), so that those outputs keep their names; `folded.folded_into` maps the
    names that are gone to it. Name in `keep` the layers whose own outputs you will ask for
    (DeepDream's layers): those are not folded away. The kernels are computed now:
    change the weights of `model` (load_weights) and fold again.
    """
    if not isinstance(model, Network):
        raise TypeError(f"fold_batch_norm: expects a Network from micrograd_gen.applications "
                        f"(VGG19, InceptionV3), got {type(model).__name__}")
    readers = {}
    for n in model._order:
        for p in model._parents[n]:
            readers.setdefault(p, []).append(n)

    def only_reader(n):
        return model._by_name[readers[n][0]] if len(readers.get(n, ())) == 1 else None

    def frozen(*layers):
        return not any(w.requires_grad for layer in layers for w in layer.weights)

    folded = Network(model.name, model._by_name[model._input_name], dtype=model.dtype)
    folded.weights_path = model.weights_path
    keep = set(keep)
    for n in keep:
        model.get_layer(n)                                  # a clear error for an unknown name
    needed, gone = set(model._order), set()
    for name, layer in model._by_name.items():
        if name == model._input_name or name not in needed or name in gone:
            continue
        bn = only_reader(name)
        if not (isinstance(layer, Conv2D) and isinstance(bn, BatchNormalization)
                and name not in keep and not layer.use_bias
                and layer.activation is activations.linear
                and bn.axis in (-1, 3) and frozen(layer, bn)):
            folded.add(layer, *model._parents[name])
            continue
        relu = only_reader(bn.name)
        if not (isinstance(relu, Activation) and relu.activation is activations.relu
                and bn.name not in keep):
            relu = None
        last = relu or bn
        kernel, bias = fold_batch_norm_into_conv(layer.kernel, bn.gamma, bn.beta, bn.moving_mean,
                                                 bn.moving_variance, bn.epsilon)
        conv = Conv2D(layer.filters, layer.kernel_size, strides=layer.strides,
                      padding=layer.padding, dilation_rate=layer.dilation_rate,
                      activation="relu" if relu else None, kernel_initializer="zeros",
                      name=last.name, dtype=layer.dtype, trainable=False,
                      seed=0)   # zeros and a seed: building draws nothing from the global generator
        conv.build((None, None, None, layer.kernel.shape[2]))
        conv.kernel.data, conv.bias.data = kernel, bias
        folded.add(conv, *model._parents[name])
        gone |= {name, bn.name, last.name}
        folded.folded_into.update({n: last.name for n in (name, bn.name) if n != last.name})
    return folded.finish(model._output_name, model._input_shape)


# ---- Inception blocks as one layer: an explicit step that returns another graph ------------------

class Branches(Layer):
    """Chains of layers that all read one input, their outputs concatenated on the last axis:
    an Inception block as one layer. It computes what the block's layers compute, the chains one
    after the other; its fast path (accel/branches.py) runs them side by side instead, one per
    core."""

    def __init__(self, chains, **kwargs):
        super().__init__(**kwargs)
        self.chains = [list(chain) for chain in chains]
        self.chain_layers = [layer for chain in self.chains for layer in chain]   # tracked
        self.built = True

    def call(self, x, training=None):
        fast = fastpath.lookup("concatenated_branches")
        y = NotImplemented if fast is None else fast(self.chains, x, training)
        if y is not NotImplemented:
            return y
        outputs = []
        for chain in self.chains:
            out = x
            for layer in chain:
                out = layer(out, training=training)
            outputs.append(out)
        return ops.concatenate(outputs, axis=-1)

    def compute_output_shape(self, input_shape):
        shapes = []
        for chain in self.chains:
            shape = tuple(input_shape)
            for layer in chain:
                shape = layer.compute_output_shape(shape)
            shapes.append(shape)
        channels = [s[-1] for s in shapes]
        return shapes[0][:-1] + (None if None in channels else sum(channels),)


def group_branches(model, keep=()):
    """A Network that computes what `model` computes, with every block of branches (an
    Inception block: a Concatenate on the channel axis, each of whose inputs is a chain of
    single-input layers from one common input) made one `Branches` layer under the
    concatenation's name. On the fast path a block then runs its branches side by side instead
    of handing every small convolution to the cores in turn.

    A chain's layers each have one input and one reader. Name in `keep` the layers whose own
    outputs you will ask for (a block's own output keeps its name; a block with a kept layer
    inside stays as it is); `get_layer` still finds the layers inside a block. Blocks of other
    shapes (mixed9's outer concatenation, whose inputs come from different layers) stay as they
    are. The layers are the same objects as `model`'s.
    """
    if not isinstance(model, Network):
        raise TypeError(f"group_branches: expects a Network from micrograd_gen.applications, "
                        f"got {type(model).__name__}")
    keep = set(keep)
    for n in keep:
        model.get_layer(n)
    readers = {}
    for n in model._order:
        for p in model._parents[n]:
            readers.setdefault(p, []).append(n)

    def chain_to_source(name):
        """(source, [layer names from the source's reader to `name`]): back through layers
        that have one input and one reader."""
        chain = []
        while (name != model._input_name and len(readers.get(name, ())) == 1
               and len(model._parents[name]) == 1 and name not in keep):
            chain.append(name)
            name = model._parents[name][0]
        return name, chain[::-1]

    blocks = {}                                             # concatenation -> (source, chains)
    for name in model._order:
        layer = model._by_name[name]
        if not isinstance(layer, Concatenate) or layer.axis not in (-1, 3):
            continue
        found = [chain_to_source(p) for p in model._parents[name]]
        sources = {source for source, _ in found}
        if len(found) > 1 and len(sources) == 1 and any(chain for _, chain in found):
            blocks[name] = (sources.pop(), [chain for _, chain in found])
    inside = {n for _, chains in blocks.values() for chain in chains for n in chain}
    grouped = Network(model.name, model._by_name[model._input_name], dtype=model.dtype)
    grouped.weights_path, grouped.folded_into = model.weights_path, dict(model.folded_into)
    for name in model._order[1:]:
        if name in inside:
            continue
        if name in blocks:
            source, chains = blocks[name]
            grouped.add(Branches([[model._by_name[n] for n in chain] for chain in chains],
                                 name=name, dtype=model.dtype), source)
        else:
            grouped.add(model._by_name[name], *model._parents[name])
    grouped.inside_blocks = {n: model._by_name[n] for n in inside}
    return grouped.finish(model._output_name, model._input_shape)


class FeatureExtractor:
    """`extractor(x)` -> {layer name: Tensor}; runs the network only as far as those layers."""

    def __init__(self, model, names):
        names = [names] if isinstance(names, str) else list(names)
        if not names:
            raise ValueError("feature_extractor: name at least one layer")
        for n in names:
            model.get_layer(n)
        self.model, self.names = model, names
        self.layers_run = model.ancestors(names)

    def __call__(self, x, training=None):
        return self.model.run(x, self.names, training=training)

    def __repr__(self):
        return (f"FeatureExtractor({self.model.name}, {self.names}: runs "
                f"{len(self.layers_run)} of {len(self.model.layer_names)} layers)")


def feature_extractor(model, names):
    """A callable x -> {name: Tensor} for the named layers of `model` (an iterable of names, or a
    dict whose keys are names, such as DeepDream's layer weights), computing nothing beyond them:
    Keras's `keras.Model(model.inputs, {name: model.get_layer(name).output ...})`."""
    return FeatureExtractor(model, names)
