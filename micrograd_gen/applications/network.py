"""The graph model behind VGG19 and InceptionV3, and feature extractors over it.

A `Network` is a fixed directed acyclic graph of layers, each named as in Keras and fed by the
layers it names as inputs. Its `layers` follow the order Keras 2 gave them (`keras_order`), which
is the order of `layer_names` in the keras-applications weight files, so those files load by order
as Keras loads them. Running the graph for a few named outputs evaluates only their ancestors, so a
feature extractor for mixed4..mixed7 never computes mixed8..mixed10.
"""
import difflib

from .. import io, ops, weights as weight_files
from ..backend import get_array_module
from ..nn import Activation, BatchNormalization, Conv2D, Layer, Model, activations
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
    """Layers wired by name: `add(layer, *input_names)`, then `finish(output_name)`."""

    def __init__(self, name, input_layer, dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self._by_name = {input_layer.name: input_layer}
        self._parents = {input_layer.name: []}
        self._input_name = self._output_name = input_layer.name
        self._order = [input_layer.name]
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
        """Fix the output, put the layers in Keras's order and build every weight from shapes."""
        self._output_name = output
        self._order = keras_order(self._parents, [output])
        self.graph_layers = [self._by_name[n] for n in self._order]  # tracked: `layers` order
        shapes = {}
        for name in self._order:
            layer, parents = self._by_name[name], self._parents[name]
            shape = (tuple(input_shape) if not parents else shapes[parents[0]]
                     if len(parents) == 1 else [shapes[p] for p in parents])
            if not layer.built:
                layer.build(shape)
                layer.built = True
            shapes[name] = layer._output_shape = layer.compute_output_shape(shape)
        self._output_shape = shapes[output]
        self.built = True
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
        keep = set(names)
        plan = self._plan(self.ancestors(names), keep)
        last_use = {}
        for i, (n, parents, _) in enumerate(plan):
            for p in parents:
                last_use[p] = i
        values = {}
        for i, (n, parents, run_layer) in enumerate(plan):
            inputs = (x if not parents else values[parents[0]] if len(parents) == 1
                      else [values[p] for p in parents])
            values[n] = run_layer(inputs, training=training)
            for p in parents:  # drop what no later layer reads (backward keeps what it needs)
                if last_use[p] == i and p not in keep:
                    del values[p]
        return {n: values[n] for n in names}

    def _plan(self, order, keep):
        """[(name, input names, callable)] to run `order`, with every frozen batch normalisation
        folded into the bias-free convolution before it, and the ReLU after them fused in too.

        Inference-mode batch norm is a per-channel y*s + t; after conv2d(x, K) that is
        conv2d(x, K*s) + t, and conv2d adds a bias, and takes max(., 0), while each chunk of
        its output is still in cache. InceptionV3 has 94 such conv / batch norm / ReLU triples:
        fusing them saves three passes over every activation forward and two backward
        (DeepDream, frozen). Only when the layers are frozen (no weight gradients are wanted, and
        a frozen BatchNormalization always runs in inference mode) and nothing else reads the
        convolution (or the batch norm, for the ReLU), which is then never materialised."""
        readers = {}
        for n in order:
            for p in self._parents[n]:
                readers.setdefault(p, []).append(n)

        def only_reader(n):
            return self._by_name[readers[n][0]] if len(readers.get(n, ())) == 1 else None

        plan, pending = [], {}        # name -> the _ConvBatchNorm that will compute it
        for n in order:
            layer, parents = self._by_name[n], self._parents[n]
            step = pending.pop(parents[0], None) if parents else None
            if step is not None:      # the batch norm, or the ReLU, of a folded convolution
                if step.bn is None:
                    step.bn = layer
                    relu = only_reader(n)
                    if (n not in keep and isinstance(relu, Activation)
                            and relu.activation is activations.relu):
                        pending[n] = step                 # the ReLU joins the same op
                        continue
                else:
                    step.relu = True
                plan.append((n, step.inputs, step))
                continue
            bn = only_reader(n)
            if (isinstance(layer, Conv2D) and isinstance(bn, BatchNormalization)
                    and n not in keep and not layer.use_bias
                    and layer.activation is activations.linear and bn.axis in (-1, 3)
                    and not any(w.requires_grad for w in layer.weights + bn.weights)):
                pending[n] = _ConvBatchNorm(layer, parents)   # run by a later entry
                continue
            plan.append((n, parents, layer))
        return plan

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


class _ConvBatchNorm:
    """A frozen Conv2D (no bias), the inference-mode BatchNormalization after it and, when
    `relu`, the ReLU after that, as ONE conv2d with kernel K*s and bias t, where
    s = gamma / sqrt(moving_variance + epsilon) and t = beta - moving_mean * s
    (see Network._plan)."""

    def __init__(self, conv, inputs):
        self.conv, self.inputs, self.bn, self.relu = conv, inputs, None, False

    def __call__(self, x, training=None):
        conv, bn = self.conv, self.bn
        kernel = conv.kernel.data
        xp = get_array_module(kernel)
        scale = 1 / xp.sqrt(bn.moving_variance.data + kernel.dtype.type(bn.epsilon))
        if bn.gamma is not None:
            scale = scale * bn.gamma.data
        shift = -bn.moving_mean.data * scale
        if bn.beta is not None:
            shift = shift + bn.beta.data
        return ops.conv2d(x, Tensor(kernel * scale.astype(kernel.dtype)),
                          Tensor(shift.astype(kernel.dtype)), strides=conv.strides,
                          padding=conv.padding, dilation_rate=conv.dilation_rate,
                          relu=self.relu)


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
