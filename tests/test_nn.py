"""Keras-style layers and models: names, building, weights in Keras's order and layout, modes,
the book's parameter counts, forward passes against NumPy references, training, saving."""
import numpy as np
import pytest

from micrograd_gen import Tensor, nn, ops, optim
from micrograd_gen.nn import initializers
from micrograd_gen.nn.base import to_snake_case


def needs(*names):
    missing = [n for n in names if not hasattr(ops, n)]
    return pytest.mark.skipif(bool(missing), reason=f"micrograd_gen.ops lacks {missing} "
                                                    "(written by another part of the project)")


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


# ---- names, building, initialisers -------------------------------------------------------------
def test_keras_snake_case_names():
    assert [to_snake_case(n) for n in ("Conv2D", "Conv2DTranspose", "MaxPooling2D", "LSTM",
                                       "LeakyReLU", "MultiHeadAttention", "UpSampling2D",
                                       "BatchNormalization", "GlobalAveragePooling2D")] == [
        "conv2d", "conv2d_transpose", "max_pooling2d", "lstm", "leaky_re_lu",
        "multi_head_attention", "up_sampling2d", "batch_normalization",
        "global_average_pooling2d"]


def test_automatic_unique_names_and_explicit_name():
    class Gizmo(nn.Layer):
        pass

    assert [Gizmo().name for _ in range(3)] == ["gizmo", "gizmo_1", "gizmo_2"]
    assert nn.Dense(2, name="head").name == "head"


def test_dense_builds_on_first_call_with_keras_initialisers():
    layer = nn.Dense(64, seed=0)
    assert not layer.built and layer.weights == []
    y = layer(np.ones((5, 300), np.float32))
    assert layer.built and y.shape == (5, 64)
    kernel, bias = layer.get_weights()
    assert kernel.shape == (300, 64) and bias.shape == (64,)
    limit = np.sqrt(6 / (300 + 64))  # glorot_uniform
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.9 * limit
    assert np.all(bias == 0)
    assert layer.weight_names == ["kernel", "bias"]
    assert kernel.dtype == np.float32


def test_initializer_fans_and_orthogonal():
    assert initializers.compute_fans((3, 3, 16, 32)) == (144, 288)
    assert initializers.compute_fans((256, 2, 64)) == (512, 16384)
    q = initializers.get("orthogonal")((32, 128), "float64", np.random.default_rng(0))
    np.testing.assert_allclose(q @ q.T, np.eye(32), atol=1e-10)
    he = initializers.HeNormal(seed=1)((400, 300))
    assert abs(he.std() - np.sqrt(2 / 400)) < 0.05 * np.sqrt(2 / 400)
    assert np.abs(he).max() <= 2 * np.sqrt(2 / 400) / 0.87962566103423978 + 1e-6
    assert initializers.get("GlorotUniform").__class__ is initializers.GlorotUniform
    with pytest.raises(ValueError, match="unknown initializer"):
        initializers.get("nope")


def test_lstm_weights_shapes_and_initialisers():
    lstm = nn.LSTM(8, seed=0)
    lstm.build((None, 5, 3))
    assert lstm.weight_names == ["kernel", "recurrent_kernel", "bias"]
    kernel, recurrent, bias = lstm.get_weights()
    assert kernel.shape == (3, 32) and recurrent.shape == (8, 32) and bias.shape == (32,)
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(8), atol=1e-5)  # orthogonal rows
    np.testing.assert_array_equal(bias, np.r_[np.zeros(8), np.ones(8), np.zeros(16)])


def test_embedding_and_batchnorm_initialisers():
    emb = nn.Embedding(1000, 16, seed=0)
    emb.build((None, 4))
    table, = emb.get_weights()
    assert table.shape == (1000, 16) and np.abs(table).max() <= 0.05 and table.std() > 0.02
    bn = nn.BatchNormalization()
    bn.build((None, 6))
    assert bn.weight_names == ["gamma", "beta", "moving_mean", "moving_variance"]
    gamma, beta, mean, var = bn.get_weights()
    assert np.all(gamma == 1) and np.all(beta == 0) and np.all(mean == 0) and np.all(var == 1)
    assert [t.shape for t in bn.trainable_weights] == [(6,), (6,)]
    assert [t.shape for t in bn.non_trainable_weights] == [(6,), (6,)]
    assert not bn.moving_mean.requires_grad and bn.gamma.requires_grad
    no_gamma = nn.BatchNormalization(scale=False)
    no_gamma.build((None, 4, 4, 3))
    assert no_gamma.weight_names == ["beta", "moving_mean", "moving_variance"]


def test_set_seed_and_seed_argument_reproduce_weights():
    def make():
        return nn.Sequential([nn.Dense(4, input_shape=(3,)), nn.Dense(2)]).get_weights()

    nn.set_seed(123)
    a = make()
    nn.set_seed(123)
    b = make()
    nn.set_seed(124)
    c = make()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    d1 = nn.Dense(4, seed=7)
    d2 = nn.Dense(4, seed=7)
    d1.build((None, 3))
    d2.build((None, 3))
    np.testing.assert_array_equal(d1.get_weights()[0], d2.get_weights()[0])


# ---- get_weights / set_weights -------------------------------------------------------------------
def test_get_set_weights_round_trip_and_copies():
    model = nn.Sequential([nn.Dense(4, input_shape=(3,)), nn.Dense(2)])
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(3, 4), (4,), (4, 2), (2,)]
    weights[0][...] = 5.0  # a copy: the model does not change
    assert not np.any(model.get_weights()[0] == 5.0)
    new = [np.random.default_rng(i).standard_normal(w.shape) for i, w in enumerate(weights)]
    model.set_weights(new)
    for got, want in zip(model.get_weights(), new):
        np.testing.assert_allclose(got, want.astype(np.float32))
        assert got.dtype == np.float32
    layer = model.layers[1]
    layer.set_weights([np.ones((4, 2)), np.zeros(2)])
    np.testing.assert_array_equal(model.get_weights()[2], 1.0)


def test_set_weights_errors_name_layer_weight_and_shapes_and_assign_nothing():
    layer = nn.Dense(3, name="proj")
    layer.build((None, 2))
    before = layer.get_weights()
    with pytest.raises(ValueError, match=r"'proj'.*expects 2 weights.*kernel.*bias.*got 3"):
        layer.set_weights([np.zeros((2, 3)), np.zeros(3), np.zeros(1)])
    with pytest.raises(ValueError, match=r"'proj'.*'bias'.*\(3,\).*\(4,\)"):
        layer.set_weights([np.ones((2, 3)), np.zeros(4)])  # kernel fine, bias wrong
    for got, want in zip(layer.get_weights(), before):
        np.testing.assert_array_equal(got, want)  # the good kernel was not assigned either
    model = nn.Sequential([nn.Dense(2, input_shape=(2,), name="a"), nn.Dense(1, name="b")])
    with pytest.raises(ValueError, match=r"'b'.*'kernel'.*\(2, 1\).*\(3, 1\)"):
        model.set_weights([np.zeros((2, 2)), np.zeros(2), np.zeros((3, 1)), np.zeros(1)])
    unbuilt = nn.Dense(2, name="later")
    with pytest.raises(ValueError, match="not built"):
        unbuilt.set_weights([np.zeros((2, 2)), np.zeros(2)])


def test_trainable_false_freezes_weights():
    model = nn.Sequential([nn.Dense(4, input_shape=(3,)), nn.Dense(2)])
    model.layers[0].trainable = False
    assert len(model.parameters()) == 2 and len(model.non_trainable_weights) == 2
    assert not model.layers[0].kernel.requires_grad
    assert len(model.weights) == 4 and model.weights[0] is model.layers[0].kernel  # order stays
    model.trainable = False
    assert model.parameters() == [] and model.count_params() == 3 * 4 + 4 + 4 * 2 + 2
    model.trainable = True
    assert len(model.parameters()) == 4


# ---- modes -----------------------------------------------------------------------------------------
def test_dropout_follows_train_eval_and_training_argument():
    model = nn.Sequential([nn.Dropout(0.5, seed=0)])
    x = np.ones((64, 64), np.float32)
    np.testing.assert_array_equal(model(x).numpy(), x)          # inference by default, as Keras
    model.train()
    y = model(x).numpy()
    assert set(np.unique(y)) == {0.0, 2.0} and 0.4 < (y == 0).mean() < 0.6
    model.eval()
    np.testing.assert_array_equal(model(x).numpy(), x)
    y = model(x, training=True).numpy()                          # a call overrides the mode...
    assert (y == 0).any()
    model.train()
    np.testing.assert_array_equal(model(x, training=False).numpy(), x)  # ...both ways


def test_training_argument_reaches_layers_inside_a_subclassed_model():
    class Net(nn.Model):
        def __init__(self):
            super().__init__()
            self.dense = nn.Dense(8)
            self.drop = nn.Dropout(0.5, seed=1)

        def call(self, x):  # does not pass training on: the call context does it
            return self.drop(self.dense(x))

    net = Net()
    x = np.ones((16, 4), np.float32)
    a = net(x).numpy()
    b = net(x, training=True).numpy()
    assert not (a == 0).any() and (b == 0).any()
    assert [l.name for l in net.layers] == [net.dense.name, net.drop.name]


def test_wrapping_one_instance_call_does_not_change_its_class():
    # A test (or a profiler) may replace layer.call on one instance with a (*args, **kwargs)
    # wrapper; other layers of the class must still get their training flag.
    wrapped = nn.Dropout(0.5)
    wrapped.call = (lambda original: lambda *a, **k: original(*a, **k))(wrapped.call)
    x = np.ones((32, 32), np.float32)
    assert (wrapped(x, training=True).numpy() == 0).any()
    del wrapped.call
    assert (nn.Dropout(0.5)(x, training=True).numpy() == 0).any()


def test_dropout_seeded_masks_repeat():
    x = np.ones((8, 8), np.float32)
    a = nn.Dropout(0.5, seed=3)(x, training=True).numpy()
    b = nn.Dropout(0.5, seed=3)(x, training=True).numpy()
    np.testing.assert_array_equal(a, b)


# ---- models ---------------------------------------------------------------------------------------
def test_sequential_summary_and_counts(capsys):
    model = nn.Sequential([nn.Dense(16, activation="relu", input_shape=(8,), name="d1"),
                           nn.Dropout(0.2), nn.Dense(3, activation="softmax", name="d2")],
                          name="clf")
    model.summary()
    out = capsys.readouterr().out
    assert 'Model: "clf"' in out and "(None, 16)" in out and "(None, 3)" in out
    assert "Total params: 195" in out and "Trainable params: 195" in out
    assert model.count_params() == 195
    assert model.get_layer("d2") is model.layers[2]
    with pytest.raises(ValueError, match="no layer named"):
        model.get_layer("nope")


def test_sequential_without_input_shape_builds_on_call(capsys):
    model = nn.Sequential([nn.Dense(4), nn.Dense(2)])
    model.summary()
    assert "?" in capsys.readouterr().out
    assert model.count_params() == 0
    model(np.ones((3, 5), np.float32))
    model.summary()
    out = capsys.readouterr().out
    assert "(None, 4)" in out and f"Total params: {5 * 4 + 4 + 4 * 2 + 2}" in out


def test_input_object_first_in_sequential():
    model = nn.Sequential([nn.Input(shape=(6,)), nn.Dense(2)])
    assert model.built and model.count_params() == 14 and model.output_shape == (None, 2)


def test_functional_model_and_nesting():
    inputs = nn.Input(shape=(4,))
    h = nn.Dense(8, activation="relu", name="hidden")(inputs)
    a = nn.Dense(2, name="a")(h)
    b = nn.Dense(3, name="b")(h)
    model = nn.Model(inputs, [a, b], name="two_heads")
    ya, yb = model(np.ones((5, 4), np.float32))
    assert ya.shape == (5, 2) and yb.shape == (5, 3)
    assert [l.name for l in model.layers] == ["hidden", "a", "b"]
    assert model.count_params() == 4 * 8 + 8 + 8 * 2 + 2 + 8 * 3 + 3
    with pytest.raises(ValueError, match="expects shape"):
        model(np.ones((5, 3), np.float32))

    outer_in = nn.Input(shape=(4,))
    pa, pb = model(outer_in)
    merged = nn.Concatenate(name="cat")([pa, pb])
    outer = nn.Model(outer_in, nn.Dense(1, name="out")(merged))
    assert [l.name for l in outer.layers] == ["hidden", "a", "b", "cat", "out"]
    assert outer.get_layer("two_heads") is model
    assert outer(np.ones((2, 4), np.float32)).shape == (2, 1)


def test_subclassed_model_tracks_layers_and_lists_in_order():
    class Tower(nn.Model):
        def __init__(self):
            super().__init__(name="tower")
            self.blocks = [nn.Dense(4, name="b0"), nn.Dense(4, name="b1")]
            self.head = nn.Sequential([nn.Dense(1, name="h")])

        def call(self, x, training=None):
            for block in self.blocks:
                x = block(x)
            return self.head(x)

    tower = Tower()
    tower(np.ones((2, 3), np.float32))
    assert [l.name for l in tower.layers] == ["b0", "b1", "h"]
    assert tower.weight_names[:2] == ["b0/kernel", "b0/bias"]
    assert len(tower.parameters()) == 6


def test_subclassed_model_build_from_shape_then_summary(capsys):
    class Net(nn.Model):
        def __init__(self):
            super().__init__(name="net")
            self.hidden = nn.Dense(4, name="hidden")
            self.drop = nn.Dropout(0.5)
            self.out = nn.Dense(2, name="out")

        def call(self, x, training=None):
            return self.out(self.drop(self.hidden(x), training=training))

    net = Net()
    net.build((None, 3))
    net.summary()
    out = capsys.readouterr().out
    assert "(None, 4)" in out and "(None, 2)" in out and "Total params: 26" in out
    assert net.get_layer("hidden").built


def test_core_layers_forward():
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    dense = nn.Dense(5, activation="tanh")
    y = dense(x).numpy()
    kernel, bias = dense.get_weights()
    np.testing.assert_allclose(y, np.tanh(x @ kernel + bias), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(nn.Flatten()(x).numpy(), x.reshape(2, 12))
    np.testing.assert_array_equal(nn.Reshape((4, 3))(x).numpy(), x.reshape(2, 4, 3))
    np.testing.assert_array_equal(nn.Reshape((-1, 2))(x).numpy(), x.reshape(2, 6, 2))
    with pytest.raises(ValueError, match="cannot reshape"):
        nn.Reshape((5,))(x)
    np.testing.assert_allclose(nn.LeakyReLU()(x).numpy(), np.where(x > 0, x, 0.3 * x), rtol=1e-6)
    np.testing.assert_allclose(nn.LeakyReLU(alpha=0.2)(x).numpy(), np.where(x > 0, x, 0.2 * x),
                               rtol=1e-6)
    np.testing.assert_allclose(nn.Activation("softmax")(x).numpy().sum(-1), 1, rtol=1e-6)
    np.testing.assert_array_equal(nn.Activation("relu")(x).numpy(), np.maximum(x, 0))
    np.testing.assert_array_equal(nn.Concatenate()([x, x]).numpy(), np.concatenate([x, x], -1))
    np.testing.assert_array_equal(nn.Concatenate(axis=1)([x, x]).numpy(),
                                  np.concatenate([x, x], 1))
    np.testing.assert_array_equal(nn.Add()([x, x, x]).numpy(), 3 * x)
    ids = np.array([[0, 3, 1], [2, 0, 0]])
    emb = nn.Embedding(4, 2, mask_zero=True)
    out = emb(ids).numpy()
    np.testing.assert_array_equal(out, emb.get_weights()[0][ids])
    np.testing.assert_array_equal(emb.compute_mask(ids), ids != 0)


def test_activation_names():
    x = Tensor(np.linspace(-3, 3, 13).astype(np.float32))
    act = nn.activations
    for name in ("linear", "relu", "sigmoid", "tanh", "softmax", "softplus", "elu", "selu",
                 "swish", "silu", "relu6", "hard_sigmoid", "exponential", "softsign"):
        assert act.get(name)(x).shape == (13,)
    np.testing.assert_allclose(act.get("elu")(x).numpy(), np.where(x.numpy() > 0, x.numpy(),
                                                                    np.expm1(x.numpy())), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown activation"):
        act.get("nope")


# ---- the book's models -------------------------------------------------------------------------------
def char_lstm():
    return nn.Sequential([nn.LSTM(128, input_shape=(60, 57)), nn.Dense(57, activation="softmax")])


def vae_encoder(latent_dim=2):
    inputs = nn.Input(shape=(28, 28, 1))
    x = nn.Conv2D(32, 3, activation="relu", strides=2, padding="same")(inputs)
    x = nn.Conv2D(64, 3, activation="relu", strides=2, padding="same")(x)
    x = nn.Flatten()(x)
    x = nn.Dense(16, activation="relu")(x)
    z_mean = nn.Dense(latent_dim, name="z_mean")(x)
    z_log_var = nn.Dense(latent_dim, name="z_log_var")(x)
    return nn.Model(inputs, [z_mean, z_log_var], name="encoder")


def vae_decoder(latent_dim=2):
    inputs = nn.Input(shape=(latent_dim,))
    x = nn.Dense(7 * 7 * 64, activation="relu")(inputs)
    x = nn.Reshape((7, 7, 64))(x)
    x = nn.Conv2DTranspose(64, 3, activation="relu", strides=2, padding="same")(x)
    x = nn.Conv2DTranspose(32, 3, activation="relu", strides=2, padding="same")(x)
    outputs = nn.Conv2D(1, 3, activation="sigmoid", padding="same")(x)
    return nn.Model(inputs, outputs, name="decoder")


def dcgan_discriminator():
    return nn.Sequential([
        nn.Input(shape=(64, 64, 3)),
        nn.Conv2D(64, kernel_size=4, strides=2, padding="same"), nn.LeakyReLU(negative_slope=0.2),
        nn.Conv2D(128, kernel_size=4, strides=2, padding="same"), nn.LeakyReLU(negative_slope=0.2),
        nn.Conv2D(128, kernel_size=4, strides=2, padding="same"), nn.LeakyReLU(negative_slope=0.2),
        nn.Flatten(), nn.Dropout(0.2), nn.Dense(1, activation="sigmoid")], name="discriminator")


def dcgan_generator(latent_dim=128):
    return nn.Sequential([
        nn.Input(shape=(latent_dim,)), nn.Dense(8 * 8 * 128), nn.Reshape((8, 8, 128)),
        nn.Conv2DTranspose(128, kernel_size=4, strides=2, padding="same"), nn.LeakyReLU(alpha=0.2),
        nn.Conv2DTranspose(256, kernel_size=4, strides=2, padding="same"), nn.LeakyReLU(alpha=0.2),
        nn.Conv2DTranspose(512, kernel_size=4, strides=2, padding="same"), nn.LeakyReLU(alpha=0.2),
        nn.Conv2D(3, kernel_size=5, padding="same", activation="sigmoid")], name="generator")


@pytest.mark.parametrize("make,count,out_shape", [
    (char_lstm, 102_585, (None, 57)),
    (vae_encoder, 69_076, [(None, 2), (None, 2)]),
    (vae_decoder, 65_089, (None, 28, 28, 1)),
    (dcgan_discriminator, 404_801, (None, 1)),
    (dcgan_generator, 3_979_651, (None, 64, 64, 3)),
])
def test_book_models_report_book_parameter_counts(make, count, out_shape, capsys):
    model = make()
    assert model.count_params() == count
    assert model.output_shape == out_shape
    model.summary()
    assert f"Total params: {count:,}" in capsys.readouterr().out


@needs("conv2d", "conv2d_transpose")
def test_book_conv_models_run_forward():
    enc, dec = vae_encoder(), vae_decoder()
    z_mean, z_log_var = enc(np.random.default_rng(0).random((2, 28, 28, 1), np.float32))
    assert z_mean.shape == (2, 2) and z_log_var.shape == (2, 2)
    img = dec(z_mean)
    assert img.shape == (2, 28, 28, 1) and 0 <= img.numpy().min() and img.numpy().max() <= 1
    assert dcgan_discriminator()(np.zeros((1, 64, 64, 3), np.float32)).shape == (1, 1)


@needs("lstm")
def test_char_lstm_runs_and_matches_numpy():
    model = nn.Sequential([nn.LSTM(6, input_shape=(5, 4)), nn.Dense(4, activation="softmax")])
    x = np.random.default_rng(0).standard_normal((3, 5, 4)).astype(np.float32)
    k, r, b, dk, db = model.get_weights()
    h = c = np.zeros((3, 6))
    for t in range(5):
        z = x[:, t] @ k + h @ r + b
        i, f, g, o = np.split(z, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
    logits = h @ dk + db
    want = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(model(x).numpy(), want, rtol=1e-4, atol=1e-6)


@needs("lstm")
def test_lstm_return_sequences_and_state():
    lstm = nn.LSTM(3, return_sequences=True, return_state=True)
    out, h, c = lstm(np.ones((2, 4, 5), np.float32))
    assert out.shape == (2, 4, 3) and h.shape == (2, 3) and c.shape == (2, 3)
    np.testing.assert_allclose(out.numpy()[:, -1], h.numpy(), rtol=1e-6)
    assert lstm.compute_output_shape((None, 4, 5)) == [(None, 4, 3), (None, 3), (None, 3)]


@needs("conv2d")
def test_conv2d_layer_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
    conv = nn.Conv2D(4, (2, 3), activation="relu")
    y = conv(x).numpy()
    k, b = conv.get_weights()
    assert k.shape == (2, 3, 3, 4)
    want = np.zeros((2, 4, 4, 4))
    for i in range(4):
        for j in range(4):
            want[:, i, j] = np.einsum("nhwc,hwcf->nf", x[:, i:i + 2, j:j + 3], k) + b
    np.testing.assert_allclose(y, np.maximum(want, 0), rtol=1e-4, atol=1e-5)
    same = nn.Conv2D(2, 3, strides=2, padding="same")
    assert same(np.zeros((1, 8, 7, 3), np.float32)).shape == same.compute_output_shape(
        (1, 8, 7, 3)) == (1, 4, 4, 2)


@needs("conv2d_transpose")
def test_conv2d_transpose_layer_shapes():
    for padding, k, s, want in (("same", 3, 2, 10), ("same", 4, 2, 10), ("valid", 3, 2, 11),
                                ("valid", 2, 3, 15)):
        layer = nn.Conv2DTranspose(2, k, strides=s, padding=padding)
        y = layer(np.zeros((1, 5, 5, 3), np.float32))
        assert y.shape == (1, want, want, 2) == layer.compute_output_shape((1, 5, 5, 3))
        assert layer.get_weights()[0].shape == (k, k, 2, 3)


@needs("max_pool2d", "avg_pool2d", "global_avg_pool2d", "upsample2d")
def test_pooling_and_upsampling_layers():
    x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    np.testing.assert_array_equal(nn.MaxPooling2D()(x).numpy(),
                                  x.reshape(2, 2, 2, 2, 2, 3).max(axis=(2, 4)))
    np.testing.assert_allclose(nn.AveragePooling2D()(x).numpy(),
                               x.reshape(2, 2, 2, 2, 2, 3).mean(axis=(2, 4)))
    np.testing.assert_allclose(nn.GlobalAveragePooling2D()(x).numpy(), x.mean(axis=(1, 2)))
    np.testing.assert_array_equal(nn.UpSampling2D(2)(x).numpy(),
                                  x.repeat(2, axis=1).repeat(2, axis=2))
    pool = nn.MaxPooling2D(3, strides=2, padding="same")
    assert pool(np.zeros((1, 8, 7, 1), np.float32)).shape == pool.compute_output_shape(
        (1, 8, 7, 1)) == (1, 4, 4, 1)


@needs("batch_norm")
def test_batch_normalization_modes_and_moving_statistics():
    rng = np.random.default_rng(0)
    x = (3 + 2 * rng.standard_normal((32, 4, 4, 3))).astype(np.float32)
    bn = nn.BatchNormalization()
    y = bn(x).numpy()  # inference: moving stats are 0 and 1
    np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-3), rtol=1e-5)
    bn.train()
    y = bn(x).numpy()
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-3), rtol=1e-3, atol=1e-4)
    _, _, moving_mean, moving_var = bn.get_weights()
    np.testing.assert_allclose(moving_mean, 0.01 * mean, rtol=1e-4)
    np.testing.assert_allclose(moving_var, 0.99 + 0.01 * var, rtol=1e-4)
    bn.trainable = False  # a frozen BN runs in inference mode even when training
    before = bn.get_weights()
    bn(x, training=True)
    np.testing.assert_array_equal(bn.get_weights()[2], before[2])


@needs("layer_norm")
def test_layer_normalization_matches_numpy():
    x = np.random.default_rng(0).standard_normal((2, 3, 8)).astype(np.float32)
    ln = nn.LayerNormalization()
    y = ln(x).numpy()
    assert ln.weight_names == ["gamma", "beta"]
    want = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-3)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)


def _mha_reference(q_in, v_in, weights, num_heads, key_dim, causal):
    wq, bq, wk, bk, wv, bv, wo, bo = weights
    q = np.einsum("btd,dnk->bntk", q_in, wq) + bq[None, :, None]
    k = np.einsum("bsd,dnk->bnsk", v_in, wk) + bk[None, :, None]
    v = np.einsum("bsd,dnk->bnsk", v_in, wv) + bv[None, :, None]
    scores = np.einsum("bntk,bnsk->bnts", q / np.sqrt(key_dim), k)
    if causal:
        t, s = scores.shape[-2:]
        scores = np.where(np.tril(np.ones((t, s), bool)), scores, -1e9)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ctx = np.einsum("bnts,bnsk->bntk", p, v)
    return np.einsum("bntk,nkd->btd", ctx, wo) + bo, p


@pytest.mark.parametrize("causal,self_attention", [(False, False), (True, True),
                                                    (True, False), (False, True)])
def test_multi_head_attention_keras_weights_and_numpy_reference(causal, self_attention):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 6)).astype(np.float32)
    mem = rng.standard_normal((2, 4, 6)).astype(np.float32)  # fewer keys than queries
    mha = nn.MultiHeadAttention(num_heads=2, key_dim=3)
    value = x if self_attention else mem
    out, scores = mha(x, value, use_causal_mask=causal, return_attention_scores=True)
    assert mha.weight_names == ["query/kernel", "query/bias", "key/kernel", "key/bias",
                                "value/kernel", "value/bias", "attention_output/kernel",
                                "attention_output/bias"]
    assert [w.shape for w in mha.get_weights()] == [(6, 2, 3), (2, 3)] * 3 + [(2, 3, 6), (6,)]
    weights = [w + 0.1 * rng.standard_normal(w.shape).astype(np.float32)
               for w in mha.get_weights()]  # non-zero biases
    mha.set_weights(weights)
    out, scores = mha(x, value, use_causal_mask=causal, return_attention_scores=True)
    want, want_p = _mha_reference(x, value, weights, 2, 3, causal)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(scores.numpy(), want_p, rtol=1e-4, atol=1e-6)


def test_multi_head_attention_mask_and_gradients():
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((1, 3, 4)).astype(np.float32), requires_grad=True)
    mha = nn.MultiHeadAttention(num_heads=1, key_dim=2, value_dim=3, output_shape=5)
    mask = np.array([[[1, 0, 0], [1, 1, 0], [0, 0, 0]]], bool)
    out, p = mha(x, x, attention_mask=mask, return_attention_scores=True)
    assert out.shape == (1, 3, 5)
    np.testing.assert_allclose(p.numpy()[0, 0, 0], [1, 0, 0], atol=1e-6)
    np.testing.assert_array_equal(p.numpy()[0, 0, 2], 0)  # a fully masked row gives zeros
    out.sum().backward()
    assert x.grad is not None and all(w.grad is not None for w in mha.trainable_weights)


def test_multi_head_attention_dropout_in_training_only():
    rng = np.random.default_rng(2)
    x = Tensor(rng.standard_normal((2, 6, 4)).astype(np.float32), requires_grad=True)
    mha = nn.MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.5, seed=0)
    plain = mha(x, x).numpy()
    np.testing.assert_allclose(mha(x, x, training=False).numpy(), plain)
    out, probs = mha(x, x, training=True, return_attention_scores=True)
    assert not np.allclose(out.numpy(), plain)
    np.testing.assert_allclose(probs.numpy().sum(-1), 1, rtol=1e-5)  # scores before dropout
    out.sum().backward()
    assert x.grad is not None and all(w.grad is not None for w in mha.trainable_weights)


def test_multi_head_attention_cache_decodes_like_the_full_causal_pass():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 5, 8)).astype(np.float32)
    mha = nn.MultiHeadAttention(num_heads=2, key_dim=4)
    full = mha(x, x, use_causal_mask=True).numpy()
    cache = {}
    steps = [mha(x[:, t:t + 1], x[:, t:t + 1], use_causal_mask=True, cache=cache).numpy()
             for t in range(5)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.Dense(3, activation="tanh", dtype="float64"), (2, 4, 5)),
    (lambda: nn.LSTM(3, return_sequences=True, dtype="float64"), (2, 4, 3)),
    (lambda: nn.Conv2D(2, 3, strides=2, padding="same", dtype="float64"), (1, 5, 4, 2)),
    (lambda: nn.Conv2DTranspose(2, 3, strides=2, padding="same", dtype="float64"), (1, 3, 2, 2)),
    (lambda: nn.LayerNormalization(dtype="float64"), (2, 3, 4)),
    (lambda: nn.BatchNormalization(dtype="float64").train(), (6, 3)),
    (lambda: nn.MultiHeadAttention(2, 2, dtype="float64"), (1, 3, 4)),
])
def test_layer_input_gradients_float64(make, shape):
    from micrograd_gen.gradcheck import gradcheck
    layer = make()
    x = np.random.default_rng(0).standard_normal(shape)
    layer.build(shape)
    assert all(w.dtype == np.float64 for w in layer.weights)
    if isinstance(layer, nn.MultiHeadAttention):
        fn = lambda t: layer(t, t, use_causal_mask=True)  # noqa: E731
    elif isinstance(layer, nn.BatchNormalization):
        layer.momentum = 1.0  # keep the moving statistics still while the check re-evaluates
        fn = layer
    else:
        fn = layer
    assert gradcheck(fn, [x])


# ---- training --------------------------------------------------------------------------------------
def test_dense_network_learns_a_toy_problem():
    nn.set_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 2)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)  # XOR-like quadrants: needs the hidden layer
    model = nn.Sequential([nn.Dense(32, activation="relu", input_shape=(2,)),
                           nn.Dense(2, activation="softmax")])
    opt = optim.Adam(model.parameters(), learning_rate=0.02)
    losses = []
    for _ in range(150):
        probs = model(x)
        loss = ops.sparse_categorical_crossentropy(y, probs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    accuracy = (model(x).numpy().argmax(-1) == y).mean()
    assert losses[-1] < 0.5 * losses[0] and accuracy > 0.9


@needs("conv2d", "max_pool2d")
def test_small_conv_net_trains():
    nn.set_seed(1)
    rng = np.random.default_rng(1)
    # Bright blob top-left (class 0) or bottom-right (class 1) on noise.
    y = rng.integers(0, 2, 64)
    x = 0.1 * rng.standard_normal((64, 8, 8, 1)).astype(np.float32)
    for n, label in enumerate(y):
        r = slice(0, 4) if label == 0 else slice(4, 8)
        x[n, r, r, 0] += 1.0
    model = nn.Sequential([nn.Conv2D(4, 3, activation="relu", padding="same",
                                     input_shape=(8, 8, 1)),
                           nn.MaxPooling2D(2), nn.Flatten(), nn.Dense(2, activation="softmax")])
    model.train()
    opt = optim.RMSprop(model.parameters(), learning_rate=0.01)
    losses = []
    for _ in range(30):
        loss = ops.sparse_categorical_crossentropy(y, model(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    assert losses[-1] < 0.5 * losses[0]


# ---- saving ----------------------------------------------------------------------------------------
def _io_available():
    try:
        from micrograd_gen import io  # noqa: F401
        return hasattr(io, "save_weights") and hasattr(io, "load_weights")
    except ImportError:
        return False


@pytest.mark.skipif(not _io_available(), reason="micrograd_gen.io (save/load) not written yet")
def test_save_load_weights_round_trip(tmp_path):
    def make():
        return nn.Sequential([nn.Dense(4, input_shape=(3,), name="first"),
                              nn.BatchNormalization(name="bn"), nn.Dense(2, name="second")])

    model = make()
    model.train()
    model(np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32))  # move BN stats
    path = tmp_path / "w.h5"
    model.save_weights(path)
    other = make()
    other.load_weights(path)
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    third = make()
    third.load_weights(path, by_name=True)
    for a, b in zip(model.get_weights(), third.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not _io_available(), reason="micrograd_gen.io (save/load) not written yet")
def test_save_load_with_optimizer_state_resumes(tmp_path):
    def make():
        nn.set_seed(5)
        return nn.Sequential([nn.Dense(3, input_shape=(2,), name="d")])

    x = np.random.default_rng(0).standard_normal((4, 2)).astype(np.float32)

    def train(model, opt, steps):
        for _ in range(steps):
            loss = (model(x) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    reference = make()
    ref_opt = optim.Adam(reference.parameters(), learning_rate=0.1)
    train(reference, ref_opt, 4)

    model = make()
    opt = optim.Adam(model.parameters(), learning_rate=0.1)
    train(model, opt, 2)
    model.save_weights(tmp_path / "ckpt.h5", optimizer=opt)
    resumed = make()
    resumed_opt = optim.Adam(resumed.parameters(), learning_rate=0.1)
    resumed.load_weights(tmp_path / "ckpt.h5", optimizer=resumed_opt)
    assert resumed_opt.iterations == 2
    train(resumed, resumed_opt, 2)
    for a, b in zip(reference.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
