"""micrograd_gen.applications: VGG19 and InceptionV3 with Keras's names, order and numbers.

The real-weight tests load the two Keras-format files that ../shared/tools/make_weights_h5.py writes
(from $MICROGRAD_GEN_WEIGHTS when CI made them, else made once per session into a temporary
folder) and compare with what Keras 3 computed on the same weights (../shared/data/reference/):
every stored activation and the DeepDream loss gradient, within 1e-4 of each array's largest
value in float32; and the float64 engine against the float32 engine.

One ReLU in each reference sits on a kink. The input of activation_19 at (0, 11, 10, 2) is
+2.6e-7 in exact (float64) arithmetic, so the unit is active and its gradient flows; float32
rounding is ~1e-6 there, and Keras's float32 run got a value <= 0 and cut that path, which moves
its gradient by 5e-4 of the largest value in a patch of the image (every activation still agrees
to ~1e-6). Likewise block2_conv1's pre-activation at (2, 3, 3, 3) in the style-transfer batch is
+1.2e-4 (float32 rounding there is ~4e-4; Keras had it <= 0): 5.7e-3 on the style gradient. So the
comparisons with Keras's gradients put that unit where Keras had it, and a separate test shows
that our unshifted gradient is the exact derivative (a float64 finite difference).
"""
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest

import micrograd_gen as mg
from micrograd_gen import applications, io, ops
from micrograd_gen.applications import feature_extractor, inception_v3, vgg19
from micrograd_gen.applications.network import keras_order

VGG_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
INCEPTION_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
TOOL = Path(__file__).resolve().parents[1].parent / "shared" / "tools" / "make_weights_h5.py"
TOLERANCE = 1e-4  # of each array's largest absolute value
DREAM_LAYERS = {"mixed4": 1.0, "mixed5": 1.5, "mixed6": 2.0, "mixed7": 2.5}


# ---- fixtures: the real weights and Keras's outputs on them -----------------------------------------

@pytest.fixture(scope="session")
def weight_dir(tmp_path_factory):
    env = os.environ.get("MICROGRAD_GEN_WEIGHTS")
    if env and all((Path(env) / f).is_file() for f in (VGG_FILE, INCEPTION_FILE)):
        return Path(env)
    if not TOOL.is_file():
        pytest.skip("real weights not found: set MICROGRAD_GEN_WEIGHTS to a folder holding "
                    f"{VGG_FILE} and {INCEPTION_FILE}, or put ../shared (with "
                    "tools/make_weights_h5.py) beside the repository")
    out = tmp_path_factory.mktemp("weights")
    subprocess.run([sys.executable, str(TOOL), str(out)], check=True, capture_output=True)
    return out


def _reference(shared_data, name):
    path = shared_data / "reference" / name
    if not path.is_file():
        pytest.skip(f"Keras reference {path} not found")
    return dict(np.load(path, allow_pickle=False))


@pytest.fixture(scope="session")
def vgg_ref(shared_data):
    return _reference(shared_data, "keras_vgg19_tubingen.npz")


@pytest.fixture(scope="session")
def inception_ref(shared_data):
    return _reference(shared_data, "keras_inception_v3_chelsea.npz")


@pytest.fixture(scope="session")
def vgg(weight_dir):
    return applications.VGG19(weights=str(weight_dir / VGG_FILE))


@pytest.fixture(scope="session")
def inception(weight_dir):
    return applications.InceptionV3(weights=str(weight_dir / INCEPTION_FILE))


def rel_error(got, want):
    got = got.numpy() if isinstance(got, mg.Tensor) else np.asarray(got)
    return float(np.max(np.abs(got.astype(np.float64) - want)) / np.max(np.abs(want)))


KINK = ("activation_19", (0, 11, 10, 2))
VGG_KINK = ("block2_conv1", (2, 3, 3, 3))


@contextmanager
def relu_input_shifted(model, layer_name, index, shift=-1e-3):
    """Add `shift` to one element of a ReLU's input (here: put it below zero): the input of an
    Activation layer, or the pre-activation of a Conv2D with activation="relu". Replacing the
    layer's activation function also keeps it out of the fused conv2d(..., relu=True)."""
    layer = model.get_layer(layer_name)
    original = layer.activation

    def shifted(x):
        delta = np.zeros(x.shape, x.dtype)
        delta[index] = shift
        return original(x + delta)

    layer.activation = shifted
    try:
        yield
    finally:
        layer.activation = original


def deepdream_loss(model, image, dtype="float32"):
    """The book's loss: sum of coeff * mean(square(act[:, 2:-2, 2:-2, :])) over mixed4..mixed7,
    and its gradient with respect to the image."""
    x = mg.Tensor(image, requires_grad=True, dtype=dtype)
    acts = feature_extractor(model, DREAM_LAYERS)(x)
    terms = []
    for name, coeff in DREAM_LAYERS.items():
        inner = acts[name][:, 2:-2, 2:-2, :]
        terms.append(coeff * ops.mean(inner * inner))
    loss = terms[0] + terms[1] + terms[2] + terms[3]
    loss.backward()
    return loss, terms, x.grad


# ---- structure (no weights needed) ----------------------------------------------------------------

VGG_NAMES = ["input_1"] + [n for b, convs in enumerate([2, 2, 4, 4, 4], start=1)
                           for n in [f"block{b}_conv{c}" for c in range(1, convs + 1)]
                           + [f"block{b}_pool"]]


@pytest.fixture(scope="module")
def random_inception():
    return applications.InceptionV3(weights=None)


def test_vgg19_names_params_and_shapes():
    model = applications.VGG19(weights=None)
    assert model.layer_names == VGG_NAMES == [l.name for l in model.layers]
    assert model.count_params() == 20_024_384  # Keras's VGG19(include_top=False)
    assert model.get_layer("block3_conv2").kernel.shape == (3, 3, 256, 256)
    assert all(w.requires_grad for w in model.weights)  # random weights stay trainable


def test_inception_v3_names_and_params(random_inception):
    model = random_inception
    names = model.layer_names
    assert len(names) == 311 and names[0] == "input_1" and names[-1] == "mixed10"
    for k in range(1, 95):
        assert f"conv2d_{k}" in names and f"batch_normalization_{k}" in names
        assert f"activation_{k}" in names
    for n in [f"mixed{i}" for i in range(11)] + ["mixed9_0", "mixed9_1", "concatenate_1",
                                                 "concatenate_2", "max_pooling2d_4",
                                                 "average_pooling2d_9"]:
        assert n in names
    # the file order is topological, not numeric (../shared/KERAS.md)
    assert [n for n in names if n.startswith("conv2d_")][:9] == \
        ["conv2d_1", "conv2d_2", "conv2d_3", "conv2d_4", "conv2d_5", "conv2d_9", "conv2d_7",
         "conv2d_10", "conv2d_6"]
    assert model.count_params() == 21_802_784  # Keras: 21,768,352 trainable + 34,432 not
    assert sum(w.size for w in model.trainable_weights) == 21_768_352
    assert model.get_layer("conv2d_32").kernel.shape == (1, 1, 768, 128)  # mixed4's 7x7 branch
    assert model.get_layer("conv2d_33").kernel.shape == (1, 7, 128, 128)  # 1 high, 7 wide
    bn = model.get_layer("batch_normalization_1")
    assert bn.weight_names == ["beta", "moving_mean", "moving_variance"]  # scale=False


def test_keras_order_on_a_small_graph():
    # input -> a -> b -> c ; input -> d ; concat(c, d): the longer branch comes first, then ties by
    # the depth-first numbering from the output (c's branch is visited before d).
    parents = {"in": [], "a": ["in"], "b": ["a"], "c": ["b"], "d": ["in"], "e": ["d"],
               "cat": ["c", "e"]}
    assert keras_order(parents, ["cat"]) == ["in", "a", "b", "d", "c", "e", "cat"]


def test_layer_order_is_the_files(weight_dir, random_inception):
    for model, name in [(applications.VGG19(weights=None), VGG_FILE),
                        (random_inception, INCEPTION_FILE)]:
        with h5py.File(weight_dir / name, "r") as f:
            file_names = [n.decode() for n in f.attrs["layer_names"]]
        assert model.layer_names == file_names


def test_arguments_and_errors(random_inception):
    with pytest.raises(ValueError, match="include_top=True.*convolutional base"):
        applications.VGG19(include_top=True, weights=None)
    with pytest.raises(ValueError, match="at least 75"):
        applications.InceptionV3(weights=None, input_shape=(64, 64, 3))
    with pytest.raises(FileNotFoundError, match="no such file"):
        applications.VGG19(weights="/nonexistent/vgg.h5")
    with pytest.raises(ValueError, match=r"did you mean \['mixed7'"):
        random_inception.get_layer("mixed77")
    with pytest.raises(ValueError, match="did you mean"):
        feature_extractor(random_inception, ["mixed4", "mixd5"])
    with pytest.raises(ValueError, match="at least 75x75"):
        random_inception(np.zeros((1, 60, 80, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(batch, height, width, 3\)"):
        random_inception(np.zeros((1, 80, 80, 4), np.float32))


def test_feature_extractor_runs_only_what_it_needs(random_inception):
    model = random_inception
    dream = feature_extractor(model, DREAM_LAYERS)  # a dict's keys are the names
    assert dream.names == list(DREAM_LAYERS)
    assert "mixed7" in dream.layers_run and "mixed3" in dream.layers_run
    assert not any(n in dream.layers_run for n in ["mixed8", "conv2d_71", "mixed10"])
    calls = []
    for name in model.layer_names:  # record every layer that actually runs
        layer = model.get_layer(name)
        layer.call = (lambda original, n: lambda x: (calls.append(n), original(x))[1])(
            layer.call, name)
    try:
        out = dream(np.random.default_rng(0).uniform(-1, 1, (1, 75, 75, 3)).astype(np.float32))
    finally:
        for name in model.layer_names:
            del model.get_layer(name).call
    assert set(out) == set(DREAM_LAYERS) and out["mixed7"].shape == (1, 3, 3, 768)
    assert calls == dream.layers_run

    style = feature_extractor(applications.VGG19(weights=None),
                              [f"block{i}_conv1" for i in range(1, 6)] + ["block5_conv2"])
    assert style.layers_run[-1] == "block5_conv2" and "block5_conv3" not in style.layers_run


def _inception_with_real_statistics(seed=0, dtype="float32"):
    """A random InceptionV3 whose batch norms have statistics far from the initial 0 / 1, so that
    folding them shows."""
    model = applications.InceptionV3(weights=None, dtype=dtype)
    rng = np.random.default_rng(seed)
    for name in model.layer_names:
        layer = model.get_layer(name)
        if isinstance(layer, mg.nn.BatchNormalization):
            c = layer.beta.shape[0]
            layer.set_weights([rng.normal(size=c), rng.normal(size=c), rng.uniform(0.5, 2, c)])
    return model


def _outputs_and_input_gradient(model, x, names):
    image = mg.Tensor(x, requires_grad=True, dtype=model.dtype)
    out = model.run(image, names)
    loss = ops.mean(out[names[0]] * out[names[0]])
    for n in names[1:]:
        loss = loss + ops.mean(out[n])
    loss.backward()
    return {n: t.numpy() for n, t in out.items()}, image.grad


def test_fold_batch_norm_gives_the_same_outputs_and_input_gradient():
    # float64: folding rounds differently (conv(x, K * s) against conv(x, K) * s), and in float32
    # that can put a ReLU input that is ~1e-7 from zero on the other side of the kink, which moves
    # the gradient of a whole patch (tests/test_applications.py's module notes)
    model = _inception_with_real_statistics(dtype="float64")
    model.trainable = False
    x = np.random.default_rng(1).uniform(-1, 1, (1, 75, 75, 3))
    names = ["mixed1", "activation_5", "mixed0"]
    plain, plain_grad = _outputs_and_input_gradient(model, x, names)
    folded_model = applications.fold_batch_norm(model)
    folded, folded_grad = _outputs_and_input_gradient(folded_model, x, names)
    for n in names:
        np.testing.assert_allclose(folded[n], plain[n], rtol=0,
                                   atol=1e-10 * np.abs(plain[n]).max())
    np.testing.assert_allclose(folded_grad, plain_grad, rtol=0,
                               atol=1e-10 * np.abs(plain_grad).max())
    assert folded_model.get_layer("activation_1").kernel.dtype == np.float64
    # the graph that runs is the one the folded model lists: 94 convs, no batch norm, no ReLU layer
    kinds = [type(layer).__name__ for layer in folded_model.layers]
    assert "BatchNormalization" not in kinds and "Activation" not in kinds
    assert kinds.count("Conv2D") == 94 and len(kinds) == len(model.layers) - 2 * 94
    fused = folded_model.get_layer("activation_1")
    assert isinstance(fused, mg.nn.Conv2D) and fused.activation is mg.nn.activations.relu
    assert fused.use_bias and not fused.kernel.requires_grad
    with pytest.raises(ValueError, match="'conv2d_1'.*folded it into 'activation_1'"):
        folded_model.get_layer("conv2d_1")
    assert folded_model.name == model.name and folded_model.layer_names[-1] == "mixed10"
    assert model.get_layer("conv2d_1").kernel.shape == (3, 3, 3, 32)   # the model is unchanged
    assert isinstance(model.get_layer("batch_normalization_1"), mg.nn.BatchNormalization)
    # layers named in keep keep their own outputs
    kept = applications.fold_batch_norm(model, keep=["conv2d_5", "batch_normalization_6"])
    assert isinstance(kept.get_layer("conv2d_5"), mg.nn.Conv2D)
    assert isinstance(kept.get_layer("batch_normalization_5"), mg.nn.BatchNormalization)
    bn6 = kept.get_layer("batch_normalization_6")   # conv2d_6 folded into it, the ReLU apart
    assert isinstance(bn6, mg.nn.Conv2D) and bn6.activation is mg.nn.activations.linear
    assert isinstance(kept.get_layer("activation_6"), mg.nn.Activation)
    names = ["conv2d_5", "batch_normalization_6", "mixed0"]
    got, got_grad = _outputs_and_input_gradient(kept, x, names)
    want, want_grad = _outputs_and_input_gradient(model, x, names)
    for n in names:
        np.testing.assert_allclose(got[n], want[n], rtol=0, atol=1e-5 * np.abs(want[n]).max())
    np.testing.assert_allclose(got_grad, want_grad, rtol=0, atol=1e-5 * np.abs(want_grad).max())
    with pytest.raises(ValueError, match="no layer named 'conv2d_500'"):
        applications.fold_batch_norm(model, keep=["conv2d_500"])


def test_without_fold_batch_norm_the_written_graph_runs(monkeypatch):
    """A frozen model runs its batch norms and ReLUs as the layers inception_v3.py writes: no
    silent folding."""
    model = _inception_with_real_statistics()
    model.trainable = False
    calls = []
    original = ops.batch_norm
    monkeypatch.setattr(mg.nn.normalization.ops, "batch_norm",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    x = np.random.default_rng(2).uniform(-1, 1, (1, 75, 75, 3)).astype(np.float32)
    model.run(x, ["mixed0"])
    ran = model.ancestors(["mixed0"])
    assert len(calls) == sum(n.startswith("batch_normalization_") for n in ran)
    calls.clear()
    applications.fold_batch_norm(model).run(x, ["mixed0"])
    assert calls == []


def test_fold_batch_norm_leaves_trainable_pairs_and_unfoldable_models_alone():
    model = applications.InceptionV3(weights=None)           # trainable: nothing folds
    folded = applications.fold_batch_norm(model)
    assert [l.name for l in folded.layers] == [l.name for l in model.layers]
    assert all(a is b for a, b in zip(folded.layers, model.layers))
    vgg = applications.VGG19(weights=None)
    vgg.trainable = False
    assert [l.name for l in applications.fold_batch_norm(vgg).layers] == vgg.layer_names
    with pytest.raises(TypeError, match="fold_batch_norm: expects a Network"):
        applications.fold_batch_norm(mg.nn.Sequential([mg.nn.Dense(2)]))


def test_full_model_output_shapes(random_inception):
    x = np.zeros((1, 75, 75, 3), np.float32)
    with mg.no_grad():
        assert random_inception(x).shape == (1, 1, 1, 2048)
        assert applications.VGG19(weights=None)(np.zeros((2, 32, 48, 3), np.float32)).shape == \
            (2, 1, 1, 512)


# ---- preprocessing ---------------------------------------------------------------------------------

def test_preprocess_input_as_keras():
    rgb = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3)).astype(np.uint8)
    keep = rgb.copy()
    v = vgg19.preprocess_input(rgb)
    assert v.dtype == np.float32
    np.testing.assert_allclose(v, rgb[..., ::-1].astype(np.float64) - [103.939, 116.779, 123.68],
                               rtol=0, atol=1e-4)
    i = inception_v3.preprocess_input(rgb)
    np.testing.assert_allclose(i, rgb / 127.5 - 1, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(rgb, keep)
    x64 = rgb.astype(np.float64)
    assert vgg19.preprocess_input(x64).dtype == np.float64
    vgg19.preprocess_input(x64)
    inception_v3.preprocess_input(x64)
    np.testing.assert_array_equal(x64, keep)  # a float input is not modified in place (Keras does)
    t = vgg19.preprocess_input(mg.Tensor(rgb.astype(np.float32)))
    assert isinstance(t, mg.Tensor) and t.shape == rgb.shape


def test_deprocess_inverts_preprocess():
    rgb = np.random.default_rng(1).integers(0, 256, (1, 6, 7, 3)).astype(np.uint8)
    for module in (vgg19, inception_v3):
        x = module.preprocess_input(rgb)
        keep = x.copy()
        img = module.deprocess_image(x)
        assert img.dtype == np.uint8 and img.shape == (6, 7, 3)  # the batch axis of 1 dropped
        assert np.max(np.abs(img.astype(int) - rgb[0])) <= 1
        np.testing.assert_array_equal(x, keep)
    assert inception_v3.deprocess_image(np.full((2, 2, 3), 5.0)).max() == 255  # clipped


def test_preprocess_matches_keras_references(vgg_ref, inception_ref):
    np.testing.assert_allclose(vgg19.preprocess_input(vgg_ref["image_rgb"]), vgg_ref["input"],
                               rtol=0, atol=1e-4)
    np.testing.assert_allclose(inception_v3.preprocess_input(inception_ref["image_rgb"]),
                               inception_ref["input"], rtol=0, atol=1e-6)


# ---- real weights against Keras -------------------------------------------------------------------

def test_pretrained_weights_are_frozen_and_loaded(vgg, inception, weight_dir):
    assert not any(w.requires_grad for w in vgg.weights + inception.weights)
    stored = io.read_weights(weight_dir / INCEPTION_FILE)
    np.testing.assert_array_equal(inception.get_layer("conv2d_77").kernel.numpy(),
                                  stored["conv2d_77"][0][1])
    np.testing.assert_array_equal(inception.get_layer("batch_normalization_94").get_weights()[2],
                                  stored["batch_normalization_94"][2][1])


def test_by_order_and_by_name_load_the_same(weight_dir, inception):
    by_order = applications.InceptionV3(weights=None)
    io.load_weights(by_order, weight_dir / INCEPTION_FILE, by_name=False)
    for a, b in zip(by_order.weights, inception.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_another_models_file_is_refused(weight_dir):
    with pytest.raises(io.WeightFileError, match=r"16 layers with weights, the model has 188"):
        applications.InceptionV3(weights=str(weight_dir / VGG_FILE))


def test_imagenet_finds_local_copies(weight_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("MICROGRAD_GEN_HOME", str(tmp_path))  # an empty download cache
    monkeypatch.setenv("MICROGRAD_GEN_WEIGHTS", str(weight_dir))
    model = applications.VGG19(weights="imagenet")
    assert model.weights_path == weight_dir / VGG_FILE


def test_vgg19_matches_keras(vgg, vgg_ref):
    names = [k.split("/", 1)[1] for k in vgg_ref if k.startswith("act/")]
    assert len(names) == 8
    with mg.no_grad():
        out = feature_extractor(vgg, names)(vgg_ref["input"])
    for name in names:
        err = rel_error(out[name], vgg_ref[f"act/{name}"])
        assert err < TOLERANCE, f"{name}: {err:.2e}"


def test_vgg19_gradients_match_keras(vgg, shared_data):
    """The book's content and style losses at 64x96 (batch base, style, combination): the
    gradients with respect to the combination image, a check of VGG19's backward pass."""
    ref = _reference(shared_data, "keras_style_transfer_tubingen_starry.npz")
    style_layers = [f"block{i}_conv1" for i in range(1, 6)]
    extractor = feature_extractor(vgg, style_layers + ["block5_conv2"])
    height, width = ref["comb"].shape[1:3]

    def gradient(part):
        comb = mg.Tensor(ref["comb"], requires_grad=True)
        feats = extractor(ops.concatenate([mg.Tensor(ref["base"]), mg.Tensor(ref["style"]), comb]))
        if part == "content":
            d = feats["block5_conv2"][2] - feats["block5_conv2"][0]
            loss = 2.5e-8 * ops.sum(d * d)
        else:
            loss = 0.0
            for name in style_layers:
                f = feats[name]
                s, c = (ops.reshape(f[i], (-1, f.shape[-1])) for i in (1, 2))
                d = ops.matmul(ops.transpose(s), s) - ops.matmul(ops.transpose(c), c)
                loss = loss + 1e-6 / 5 * ops.sum(d * d) / (4.0 * 9 * (height * width) ** 2)
        loss.backward()
        return comb.grad

    with relu_input_shifted(vgg, *VGG_KINK):  # where Keras's float32 run had it (module doc)
        for part in ("content", "style"):
            err = rel_error(gradient(part), ref[f"grad_{part}"])
            assert err < TOLERANCE, f"{part} gradient: {err:.2e}"


@pytest.fixture(scope="session")
def folded_inception(inception):
    return applications.fold_batch_norm(inception)


@pytest.fixture(scope="session")
def grouped_inception(folded_inception):
    """Folded, then each Inception block one layer whose fast path runs its branches side by
    side (as DeepDream runs it)."""
    return applications.group_branches(folded_inception)


def _inception_as(form, request):
    return request.getfixturevalue({"as_written": "inception", "folded": "folded_inception",
                                    "grouped": "grouped_inception"}[form])


@pytest.mark.parametrize("form", ["as_written", "folded", "grouped"])
def test_inception_v3_matches_keras(inception_ref, form, request):
    model = _inception_as(form, request)
    names = [f"mixed{i}" for i in range(11)]
    with mg.no_grad():
        out = feature_extractor(model, names)(inception_ref["input"])
    for name in names:
        err = rel_error(out[name], inception_ref[f"act/{name}"])
        assert err < TOLERANCE, f"{name}: {err:.2e}"


@pytest.mark.parametrize("form", ["as_written", "folded", "grouped"])
def test_deepdream_gradient_matches_keras(inception_ref, form, request):
    model = _inception_as(form, request)
    with relu_input_shifted(model, *KINK):  # where Keras's float32 run had it (module doc)
        loss, terms, grad = deepdream_loss(model, inception_ref["input"])
    assert rel_error(loss, inception_ref["deepdream/loss"]) < TOLERANCE
    assert rel_error(np.array([t.item() for t in terms]), inception_ref["deepdream/terms"]) < TOLERANCE
    err = rel_error(grad, inception_ref["deepdream/grad"])
    assert err < TOLERANCE, f"gradient: {err:.2e}"
    assert all(w.grad is None for w in model.weights)  # frozen: no weight gradients


def test_deepdream_gradient_is_the_exact_derivative(weight_dir, inception_ref):
    """Unshifted, our gradient differs from Keras's near the kink; a float64 central difference
    along that difference says ours is the derivative of the loss at this input."""
    model = applications.InceptionV3(weights=str(weight_dir / INCEPTION_FILE), dtype="float64")
    image = inception_ref["input"].astype(np.float64)
    _, _, grad = deepdream_loss(model, image, dtype="float64")
    keras = inception_ref["deepdream/grad"].astype(np.float64)
    d = np.sign(grad - keras) * (np.abs(grad - keras) > 2e-5 * np.abs(keras).max())
    assert d.any()
    extractor = feature_extractor(model, DREAM_LAYERS)

    def loss_at(x):
        with mg.no_grad():
            acts = extractor(mg.Tensor(x, dtype="float64"))
        return sum(c * np.mean(acts[n].numpy()[:, 2:-2, 2:-2, :] ** 2)
                   for n, c in DREAM_LAYERS.items())
    h = 1e-9  # smaller than the distance to the kink along d; float64 keeps ~7 digits here
    numeric = (loss_at(image + h * d) - loss_at(image - h * d)) / (2 * h)
    ours, theirs = np.sum(grad * d), np.sum(keras * d)
    assert abs(numeric - ours) < 1e-5 * abs(ours) < abs(numeric - theirs)


def test_float64_engine_agrees_with_float32(weight_dir, vgg, inception, vgg_ref, inception_ref):
    vgg64 = applications.VGG19(weights=str(weight_dir / VGG_FILE), dtype="float64")
    assert vgg64.weights[0].dtype == np.float64
    x = vgg_ref["input"]
    with mg.no_grad():
        a = feature_extractor(vgg, ["block5_conv2"])(x)["block5_conv2"]
        b = feature_extractor(vgg64, ["block5_conv2"])(x.astype(np.float64))["block5_conv2"]
    assert b.dtype == np.float64 and rel_error(a, b.numpy()) < TOLERANCE

    inc64 = applications.InceptionV3(weights=str(weight_dir / INCEPTION_FILE), dtype="float64")
    image = inception_ref["input"].astype(np.float64)
    # Both on the same side of the kink (module doc), which float32 rounding alone may not keep.
    with relu_input_shifted(inception, *KINK), relu_input_shifted(inc64, *KINK):
        loss32, _, grad32 = deepdream_loss(inception, image.astype(np.float32))
        loss64, _, grad64 = deepdream_loss(inc64, image, dtype="float64")
    assert grad64.dtype == np.float64
    assert rel_error(loss32, loss64.numpy()) < TOLERANCE
    assert rel_error(grad32, grad64) < TOLERANCE


def test_fold_batch_norm_draws_nothing_from_the_global_generator():
    model = _inception_with_real_statistics()
    model.trainable = False

    def next_dense_weights(fold):
        mg.nn.set_seed(5)
        if fold:
            applications.fold_batch_norm(model)
        dense = mg.nn.Dense(3)
        dense.build((None, 4))
        return dense.kernel.numpy()

    np.testing.assert_array_equal(next_dense_weights(True), next_dense_weights(False))
