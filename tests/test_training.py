"""Keras's training API (compile / fit / evaluate / predict / train_step) and the callbacks.

The book's VAE and GAN classes are written here as the book writes them (chapter 12 of the second
edition), with the engine's calls in place of tf.GradientTape: `gradients(loss, weights)` and
`optimizer.apply_gradients`. The chapter's train_* functions, now on fit, are held against frozen
copies of the hand-written loops they replaced (the code on main before the port).
"""
import csv
import math

import numpy as np
import pytest
from PIL import Image

import micrograd_gen as mg
from micrograd_gen import callbacks, losses, metrics, nn, ops, optim
from micrograd_gen.generative import char_lstm
from micrograd_gen.generative import denoise as D
from micrograd_gen.generative import vae as V
from micrograd_gen.nn.training import gradients
from micrograd_gen.tensor import Tensor, no_grad


def blobs(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] > 0).astype(np.int64)
    return x, y


def classifier(seed=0, dropout=False):
    nn.set_seed(seed)
    layers = [nn.Input(shape=(6,)), nn.Dense(12, activation="relu")]
    if dropout:
        layers.append(nn.Dropout(0.3))
    return nn.Sequential(layers + [nn.Dense(2, activation="softmax")])


# ---- fit on a Sequential -------------------------------------------------------------------------
def test_fit_equals_the_hand_written_loop():
    x, y = blobs()
    model = classifier()
    model.compile(optimizer=optim.SGD(learning_rate=0.1), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)

    reference = classifier()
    opt = optim.SGD(reference.parameters(), learning_rate=0.1)
    expected = []
    for _ in range(3):
        losses_ = []
        for start in range(0, len(x), 32):
            probs = reference(Tensor(x[start:start + 32]))
            loss = ops.sparse_categorical_crossentropy(y[start:start + 32], probs)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses_.append(float(loss))
        expected.append(np.mean(losses_))
    np.testing.assert_allclose(history.history["loss"], expected, rtol=1e-5)
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert history.epoch == [0, 1, 2] and model.history is history
    assert set(history.history) == {"loss", "accuracy"}
    assert history.history["accuracy"][-1] > 0.7


def test_compile_by_name_evaluate_predict_and_validation():
    x, y = blobs(128)
    model = classifier(1)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    assert isinstance(model.optimizer, optim.Adam) and model.optimizer.params
    history = model.fit(x, y, batch_size=16, epochs=4, validation_data=(x[:32], y[:32]),
                        verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 4 for v in history.history.values())
    assert history.history["loss"][-1] < history.history["loss"][0]
    loss, accuracy = model.evaluate(x, y, batch_size=64)
    probs = model.predict(x, batch_size=50)
    assert probs.shape == (128, 2)
    np.testing.assert_allclose(accuracy, np.mean(probs.argmax(-1) == y))
    p = np.clip(probs[np.arange(len(y)), y], 1e-7, 1)
    # evaluate's loss is the mean over its two batches of 64
    assert loss == pytest.approx(np.mean([-np.log(p[:64]).mean(), -np.log(p[64:]).mean()]),
                                 rel=1e-4)
    assert model.evaluate(x, y, return_dict=True).keys() == {"loss", "accuracy"}


def test_optimizers_made_without_parameters_as_in_keras():
    nn.set_seed(0)
    model = nn.Sequential([nn.Dense(3), nn.Dense(1)])   # not built until it sees data
    opt = optim.RMSprop(learning_rate=1e-2)
    model.compile(optimizer=opt, loss="mse")
    x = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    model.fit(x, x[:, :1], epochs=2, batch_size=5, verbose=0)
    assert len(opt.params) == 4 and opt.iterations == 8
    legacy = optim.Adam(model.parameters(), learning_rate=1e-3)   # the older form still works
    assert len(legacy.params) == 4


def test_the_first_editions_boolean_one_hot_arrays():
    rng = np.random.default_rng(0)
    x = np.zeros((32, 5, 7), dtype=bool)
    x[np.arange(32)[:, None], np.arange(5), rng.integers(0, 7, (32, 5))] = True
    y = np.zeros((32, 7), dtype=bool)
    y[np.arange(32), rng.integers(0, 7, 32)] = True
    nn.set_seed(0)
    model = nn.Sequential([nn.LSTM(8, input_shape=(5, 7)), nn.Dense(7, activation="softmax")])
    model.compile(optimizer=optim.RMSprop(learning_rate=0.01), loss="categorical_crossentropy")
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert all(math.isfinite(v) for v in history.history["loss"])
    assert model.predict(x[:3]).shape == (3, 7)


def test_fit_takes_a_data_set_of_batches_and_steps_per_epoch():
    x, y = blobs(64)
    data = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    model = classifier()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    seen = []
    model.fit(data, epochs=2, steps_per_epoch=3, verbose=0,
              callbacks=[callbacks.LambdaCallback(
                  on_train_batch_begin=lambda batch, logs: seen.append(batch))])
    assert seen == [0, 1, 2, 0, 1, 2]
    assert model._train_counter == 6


def test_progress_line_csv_logger_and_history_picture(tmp_path):
    x, y = blobs(64)
    model = classifier()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    lines = []
    model.fit(x, y, epochs=2, batch_size=16, callbacks=[
        callbacks.ProgbarLogger(log=lines.append), callbacks.CSVLogger(tmp_path / "log.csv"),
        callbacks.HistoryWriter(tmp_path)])
    assert any("epoch 1/2" in line and "step 4/4" in line and "loss" in line and "s/step" in line
               for line in lines)
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1"] and "loss" in rows[0]
    import json
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["per_epoch"]["epoch"] == [1, 2] and len(saved["per_step"]["loss"]) == 8
    # per-step values recovered from the running means average back to the epoch's mean
    np.testing.assert_allclose(np.mean(saved["per_step"]["loss"][:4]),
                               saved["per_epoch"]["loss"][0], rtol=1e-9)
    with Image.open(tmp_path / "history.png") as im:
        assert im.size[0] >= 640 and im.size[1] >= 300


def test_a_custom_train_step_with_compiled_loss_and_metrics():
    """The book's chapter 7 pattern: compiled_loss and compiled_metrics inside train_step."""
    class CustomModel(nn.Sequential):
        def train_step(self, data):
            x, y = data
            y_pred = self(x, training=True)
            loss = self.compiled_loss(y, y_pred)
            grads = gradients(loss, self.trainable_weights)
            self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
            self.compiled_metrics.update_state(y, y_pred)
            return {m.name: m.result() for m in self.metrics}

    nn.set_seed(0)
    model = CustomModel([nn.Input(shape=(6,)), nn.Dense(2, activation="softmax")])
    model.compile(optimizer=optim.SGD(learning_rate=0.5), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x, y = blobs(64)
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0).history
    assert set(history) == {"loss", "accuracy"} and history["loss"][2] < history["loss"][0]
    assert model.evaluate(x, y, return_dict=True)["accuracy"] > 0.8


def test_train_vae_writes_history_files_beside_its_checkpoint(tmp_path):
    from tests.test_vae import synthetic_digits
    import json
    x, _ = synthetic_digits(32)
    V.train_vae(x, epochs=2, batch_size=16, checkpoint_path=tmp_path / "vae.h5",
                log=lambda line: None)
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["per_epoch"]["epoch"] == [1, 2] and len(saved["per_step"]["kl_loss"]) == 4
    with Image.open(tmp_path / "history.png") as im:
        assert im.size == (1280, 900)    # loss, reconstruction, kl: per epoch and per step
    V.train_vae(x, epochs=3, batch_size=16, checkpoint_path=tmp_path / "vae.h5", resume=True,
                log=lambda line: None)
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["per_epoch"]["epoch"] == [1, 2, 3] and len(saved["per_step"]["loss"]) == 6
    # the command line writes its own history.json over ours: the epochs come from the checkpoint
    (tmp_path / "history.json").write_text(json.dumps({"epochs": [], "test": {}}))
    V.train_vae(x, epochs=4, batch_size=16, checkpoint_path=tmp_path / "vae.h5", resume=True,
                log=lambda line: None)
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["per_epoch"]["epoch"] == [1, 2, 3, 4] and len(saved["per_step"]["loss"]) == 2


def test_csv_logger_appends_for_a_resumed_run_and_lambda_hooks_are_checked(tmp_path):
    x, y = blobs(32)
    model = classifier()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0, callbacks=[callbacks.CSVLogger(tmp_path / "log.csv")])
    model.fit(x, y, epochs=3, initial_epoch=2, verbose=0,
              callbacks=[callbacks.CSVLogger(tmp_path / "log.csv", append=True)])
    with open(tmp_path / "log.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1", "2"]
    with pytest.raises(TypeError, match="unknown hook 'on_epoch_finish'"):
        callbacks.LambdaCallback(on_epoch_finish=print)


def test_early_stopping_restores_the_best_weights():
    x, y = blobs(32)
    model = classifier()
    model.compile(optimizer=optim.SGD(learning_rate=5.0), loss="sparse_categorical_crossentropy")
    kept = []

    class Keep(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            kept.append((logs["loss"], self.model.get_weights()))

    stop = callbacks.EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    model.fit(x, y, epochs=30, verbose=0, callbacks=[Keep(), stop])
    assert stop.stopped_epoch > 0
    best = min(kept[:stop.stopped_epoch + 1], key=lambda item: item[0])[1]
    for a, b in zip(model.get_weights(), best):
        np.testing.assert_array_equal(a, b)


def test_time_stopping_ends_the_epoch_after_the_step_that_passes():
    x, y = blobs(64)
    model = classifier()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=5, batch_size=8, verbose=0,
                        callbacks=[callbacks.TimeStopping(0)])
    assert model._train_counter == 1 and len(history.history["loss"]) == 1


def test_a_run_cut_by_its_time_limit_still_leaves_its_loss_curve(tmp_path):
    # The tour trains for a fixed number of seconds; its summary names the curves it leaves.
    x, y = blobs(64)
    model = classifier()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=5, batch_size=8, verbose=0,
              callbacks=[callbacks.TimeStopping(0), callbacks.HistoryWriter(tmp_path)])
    import json
    saved = json.loads((tmp_path / "history.json").read_text())
    assert len(saved["per_step"]["loss"]) == 1 and (tmp_path / "history.png").exists()


def test_early_stopping_stops_when_the_loss_stalls():
    x, y = blobs(32)
    model = classifier()
    model.compile(optimizer=optim.SGD(learning_rate=0.0), loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=10, verbose=0,
                        callbacks=[callbacks.EarlyStopping(monitor="loss", patience=2)])
    assert len(history.history["loss"]) == 3   # no improvement with a zero learning rate


# ---- the book's VAE, written as the book writes it -----------------------------------------------
class Sampler(nn.Layer):
    def call(self, z_mean, z_log_var):
        epsilon = self._rng_for_layer().standard_normal(z_mean.shape).astype(np.float32)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon


class BookVAE(nn.Model):
    def __init__(self, encoder, decoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.sampler = Sampler()
        self.total_loss_tracker = metrics.Mean(name="total_loss")
        self.reconstruction_loss_tracker = metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = metrics.Mean(name="kl_loss")

    @property
    def metrics(self):
        return [self.total_loss_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker]

    def train_step(self, data):
        z_mean, z_log_var = self.encoder(data)
        z = self.sampler(z_mean, z_log_var)
        reconstruction = self.decoder(z)
        reconstruction_loss = ops.mean(ops.sum(
            losses.binary_crossentropy(data, reconstruction), axis=(1, 2)))
        kl_loss = -0.5 * (1 + z_log_var - z_mean * z_mean - ops.exp(z_log_var))
        total_loss = reconstruction_loss + ops.mean(kl_loss)
        grads = gradients(total_loss, self.trainable_weights)          # tape.gradient
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        self.total_loss_tracker.update_state(total_loss)
        self.reconstruction_loss_tracker.update_state(reconstruction_loss)
        self.kl_loss_tracker.update_state(kl_loss)
        return {"total_loss": self.total_loss_tracker.result(),
                "reconstruction_loss": self.reconstruction_loss_tracker.result(),
                "kl_loss": self.kl_loss_tracker.result()}


def test_the_books_vae_class_trains_through_fit():
    from tests.test_vae import synthetic_digits
    images, _ = synthetic_digits(48)
    mnist_digits = images[..., None].astype("float32") / 255
    nn.set_seed(0)
    vae = BookVAE(V.build_encoder(2), V.build_decoder(2))
    vae.compile(optimizer=optim.Adam())
    epochs_seen = []
    history = vae.fit(mnist_digits, epochs=3, batch_size=16, verbose=0, callbacks=[
        callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epochs_seen.append(epoch))])
    assert epochs_seen == [0, 1, 2]
    h = history.history
    assert set(h) == {"total_loss", "reconstruction_loss", "kl_loss"}
    assert h["total_loss"][-1] < h["total_loss"][0]
    np.testing.assert_allclose(h["total_loss"], np.add(h["reconstruction_loss"], h["kl_loss"]),
                               rtol=1e-5)


# ---- the book's GAN, written as the book writes it -----------------------------------------------
class BookGAN(nn.Model):
    def __init__(self, discriminator, generator, latent_dim):
        super().__init__()
        self.discriminator = discriminator
        self.generator = generator
        self.latent_dim = latent_dim
        self.seed_generator = np.random.default_rng(1337)
        self.d_loss_metric = metrics.Mean(name="d_loss")
        self.g_loss_metric = metrics.Mean(name="g_loss")

    def compile(self, d_optimizer, g_optimizer, loss_fn):
        super().compile()
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.loss_fn = loss_fn

    @property
    def metrics(self):
        return [self.d_loss_metric, self.g_loss_metric]

    def normal(self, shape):
        return Tensor(self.seed_generator.standard_normal(shape).astype(np.float32))

    def train_step(self, real_images):
        batch_size = real_images.shape[0]
        random_latent_vectors = self.normal((batch_size, self.latent_dim))
        generated_images = self.generator(random_latent_vectors)
        combined_images = ops.concatenate([generated_images, real_images], axis=0)
        labels = np.concatenate([np.ones((batch_size, 1)), np.zeros((batch_size, 1))])
        labels = Tensor(labels + 0.05 * self.seed_generator.random(labels.shape))

        predictions = self.discriminator(combined_images)
        d_loss = self.loss_fn(labels, predictions)
        grads = gradients(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))

        random_latent_vectors = self.normal((batch_size, self.latent_dim))
        misleading_labels = Tensor(np.zeros((batch_size, 1), np.float32))
        predictions = self.discriminator(self.generator(random_latent_vectors))
        g_loss = self.loss_fn(misleading_labels, predictions)
        grads = gradients(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))

        self.d_loss_metric.update_state(d_loss)
        self.g_loss_metric.update_state(g_loss)
        return {"d_loss": self.d_loss_metric.result(), "g_loss": self.g_loss_metric.result()}


class GANMonitor(callbacks.Callback):
    def __init__(self, folder, num_img=3, latent_dim=8):
        super().__init__()
        self.folder, self.num_img, self.latent_dim = folder, num_img, latent_dim

    def on_epoch_end(self, epoch, logs=None):
        random_latent_vectors = np.random.default_rng(epoch).standard_normal(
            (self.num_img, self.latent_dim)).astype(np.float32)
        generated_images = self.model.generator(Tensor(random_latent_vectors)).numpy()
        generated_images *= 255
        for i in range(self.num_img):
            img = Image.fromarray(generated_images[i].astype(np.uint8))
            img.save(self.folder / f"generated_img_{epoch:03d}_{i}.png")


def test_the_books_gan_class_trains_through_fit(tmp_path):
    latent_dim = 8
    nn.set_seed(0)
    discriminator = nn.Sequential([nn.Input(shape=(8, 8, 3)),
                                   nn.Conv2D(4, 3, strides=2, padding="same"),
                                   nn.LeakyReLU(negative_slope=0.2), nn.Flatten(),
                                   nn.Dense(1, activation="sigmoid")], name="discriminator")
    generator = nn.Sequential([nn.Input(shape=(latent_dim,)), nn.Dense(4 * 4 * 4),
                               nn.Reshape((4, 4, 4)),
                               nn.Conv2DTranspose(4, 3, strides=2, padding="same"),
                               nn.LeakyReLU(negative_slope=0.2),
                               nn.Conv2D(3, 3, padding="same", activation="sigmoid")],
                              name="generator")
    gan = BookGAN(discriminator=discriminator, generator=generator, latent_dim=latent_dim)
    gan.compile(d_optimizer=optim.Adam(learning_rate=1e-3),
                g_optimizer=optim.Adam(learning_rate=1e-3), loss_fn=losses.BinaryCrossentropy())
    d_before, g_before = discriminator.get_weights(), generator.get_weights()
    dataset = np.random.default_rng(0).random((12, 8, 8, 3)).astype(np.float32)
    history = gan.fit(dataset, epochs=2, batch_size=4, verbose=0,
                      callbacks=[GANMonitor(tmp_path, num_img=2, latent_dim=latent_dim)])
    assert set(history.history) == {"d_loss", "g_loss"} and len(history.history["d_loss"]) == 2
    assert all(math.isfinite(v) for v in history.history["d_loss"] + history.history["g_loss"])
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "generated_img_000_0.png", "generated_img_000_1.png", "generated_img_001_0.png",
        "generated_img_001_1.png"]
    assert gan.d_optimizer.iterations == gan.g_optimizer.iterations == 6
    assert all(not np.array_equal(a, b) for a, b in zip(d_before, discriminator.get_weights()))
    assert all(not np.array_equal(a, b) for a, b in zip(g_before, generator.get_weights()))


def test_gradients_clears_what_an_earlier_backward_left():
    w = Tensor(np.ones(3, np.float32), requires_grad=True)
    (w * 5).sum().backward()                       # leaves 5s in w.grad
    (grad,) = gradients((w * 2).sum(), [w])
    np.testing.assert_array_equal(grad, [2, 2, 2])


# ---- checkpoints, resuming, NaN ------------------------------------------------------------------
def test_resuming_from_model_checkpoint_continues_the_loss_curve_exactly(tmp_path):
    x, y = blobs(80)
    path = tmp_path / "run.h5"

    def fresh():
        model = classifier(3, dropout=True)   # dropout: the layer's generator must be restored
        model.compile(optimizer=optim.Adam(learning_rate=1e-2),
                      loss="sparse_categorical_crossentropy")
        return model

    straight = fresh()
    whole = straight.fit(x, y, batch_size=16, epochs=4, verbose=0).history["loss"]

    first = fresh()
    first.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[callbacks.ModelCheckpoint(path, monitor="loss")])
    nn.set_seed(99)                          # a different process would draw other weights
    resumed = classifier(7, dropout=True)
    resumed.compile(optimizer=optim.Adam(learning_rate=1e-2),
                    loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"optimizers \['optimizer'\] that model"):
        callbacks.restore_training_checkpoint(path, classifier(7, dropout=True))  # not compiled
    state = callbacks.restore_training_checkpoint(path, resumed)
    assert state["epoch"] == 2 and state["history"]["loss"] == pytest.approx(whole[:2], rel=1e-6)
    rest = resumed.fit(x, y, batch_size=16, epochs=4, initial_epoch=state["epoch"],
                       verbose=0).history["loss"]
    np.testing.assert_allclose(rest, whole[2:], rtol=1e-6)
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_save_best_only_and_weights_only(tmp_path):
    x, y = blobs(32)
    model = classifier()
    model.compile(optimizer=optim.SGD(learning_rate=0.5), loss="sparse_categorical_crossentropy")
    best = callbacks.ModelCheckpoint(tmp_path / "best.h5", monitor="loss", save_best_only=True,
                                     save_weights_only=True)
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[best])
    assert best.last_saved[1] == 1 + int(np.argmin(history.history["loss"]))
    copy = classifier(5)
    copy.load_weights(tmp_path / "best.h5")


def test_nan_loss_stops_with_the_last_good_checkpoint_intact(tmp_path):
    x, y = blobs(64)
    x[40] = np.nan                          # the third batch of every epoch
    model = classifier()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    path = tmp_path / "run.h5"
    clean = x[:32], y[:32]
    model.fit(*clean, batch_size=16, epochs=1, verbose=0,
              callbacks=[callbacks.ModelCheckpoint(path, monitor="loss")])
    before = path.read_bytes()
    checkpoint = callbacks.ModelCheckpoint(path, monitor="loss", save_freq=1)
    with pytest.raises(callbacks.NonFiniteLossError, match=r"loss is nan at epoch 1, batch 3 "
                                                           r"\(step 5 of the run\)"):
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0,
                  callbacks=[checkpoint, callbacks.TerminateOnNaN()])
    assert checkpoint.last_saved[2] == 4     # saved after the two good steps, not after the bad one
    saved = mg.generative.checkpoint.read_checkpoint(path)
    assert saved["step"] == 4 and path.read_bytes() != before
    assert all(np.isfinite(w).all() for w in saved["models"]["model"])


# ---- bad input -----------------------------------------------------------------------------------
def test_bad_input_gives_named_errors():
    x, y = blobs(32)
    model = classifier()
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(x, y)
    with pytest.raises(ValueError, match="unknown loss 'crossentropy'"):
        model.compile(optimizer="adam", loss="crossentropy")
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'"):
        model.compile(optimizer="adamw", loss="mse")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="x has 32 samples but y has 30"):
        model.fit(x, y[:30], verbose=0)
    with pytest.raises(ValueError, match=r"expects input of shape \(None, 6\) \(rank 2\), x has "
                                         r"shape \(32, 6, 1\)"):
        model.fit(x[..., None], y, verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(x, y, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="y must be None when x is a data set"):
        model.fit([(x, y)], y, verbose=0)
    assert model._train_counter == 0         # every check came before any step


def test_a_raising_callback_is_named_with_its_hook():
    x, y = blobs(32)
    model = classifier()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")

    class Broken(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyError("val_accuracy")

    with pytest.raises(callbacks.CallbackError,
                       match=r"callback Broken raised in on_epoch_end: KeyError: 'val_accuracy'"):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[Broken()])
    with pytest.raises(TypeError, match="has none of the callback hooks"):
        model.fit(x, y, verbose=0, callbacks=[object()])


# ---- the chapter's loops, now on fit, against the loops they replaced ----------------------------
def old_vae_loop(x, epochs, batch_size, seed):
    """train_vae as it was on main (without checkpoints, logging and the time budget)."""
    nn.set_seed(seed)
    vae = V.VAE(seed=seed)
    optimizer = optim.Adam(vae.parameters(), learning_rate=1e-3)
    n, steps, out = len(x), -(-len(x) // batch_size), []
    vae.train()
    for epoch in range(1, epochs + 1):
        order = np.random.default_rng([seed, epoch]).permutation(n)
        sums = np.zeros(3)
        for step in range(steps):
            batch = V.as_digit_batch(x[order[step * batch_size:(step + 1) * batch_size]])
            z_mean, z_log_var, reconstruction = vae(batch)
            total, recon, kl = V.vae_loss(batch, z_mean, z_log_var, reconstruction)
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            sums += (float(total), float(recon), float(kl))
        out.append(sums / steps)
    return np.array(out)


def test_train_vae_on_fit_equals_the_old_loop():
    from tests.test_vae import synthetic_digits
    x, _ = synthetic_digits(40)
    _, history = V.train_vae(x, epochs=2, batch_size=16, seed=0, log=lambda line: None)
    got = np.array([[h["loss"], h["reconstruction_loss"], h["kl_loss"]] for h in history])
    np.testing.assert_allclose(got, old_vae_loop(x, 2, 16, 0), rtol=1e-6)


def old_denoiser_loop(x, epochs, batch_size, seed):
    nn.set_seed(seed)
    model = D.build_denoiser()
    optimizer = optim.Adam(model.parameters(), learning_rate=1e-3)
    rng = np.random.default_rng(seed)
    n, steps, out = len(x), -(-len(x) // batch_size), []
    for _ in range(epochs):
        order = rng.permutation(n)
        total = 0.0
        for step in range(steps):
            clean = D.digits_float(x[order[step * batch_size:(step + 1) * batch_size]])
            noisy = D.add_noise(clean, rng)
            loss = ops.mean(ops.binary_crossentropy(Tensor(clean), model(Tensor(noisy)),
                                                    reduction="none"))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss)
        out.append(total / steps)
    return out


def test_train_denoiser_on_fit_equals_the_old_loop():
    from tests.test_vae import synthetic_digits
    x, _ = synthetic_digits(24)
    _, history = D.train_denoiser(x, epochs=2, batch_size=8, seed=0, log=lambda line: None)
    np.testing.assert_allclose([h["loss"] for h in history], old_denoiser_loop(x, 2, 8, 0),
                               rtol=1e-6)


TEXT = "the cat sat on the mat. the dog sat on the log. " * 6


def old_char_lstm_loop(text, epochs, batch_size, maxlen, units, seed):
    """text_training.fit + train_char_lstm as they were on main."""
    from micrograd_gen.data.text import CharVocabulary, char_batches
    from micrograd_gen.generative.text_training import sparse_lm_loss
    vocab = CharVocabulary.from_text(text)
    nn.set_seed(seed)
    model = char_lstm.build_char_lstm(len(vocab), maxlen, units)
    optimizer = optim.RMSprop(model.parameters(), learning_rate=0.01)
    batches = char_batches(text, vocab, maxlen=maxlen, step=3, batch_size=batch_size,
                           shuffle=True, seed=seed)
    model.train()
    out = []
    for _ in range(epochs):
        values = []
        for x, y in batches:
            loss = sparse_lm_loss(model, x, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            values.append(float(loss.item()))
        out.append(np.mean(values))
    return out


def test_train_char_lstm_on_fit_equals_the_old_loop():
    run = char_lstm.train_char_lstm(TEXT, epochs=2, batch_size=32, maxlen=10, units=16, seed=0,
                                    progress=False, log=lambda line: None)
    np.testing.assert_allclose(run.history.epoch_losses,
                               old_char_lstm_loop(TEXT, 2, 32, 10, 16, 0), rtol=1e-6)


def old_gan_loop(gan, data, epochs, batch_size, steps, seed):
    """train_gan's loop as it was on main, without checkpoints, limits and the monitor."""
    import itertools
    from micrograd_gen.generative import dcgan
    out = {"d_loss": [], "g_loss": []}
    for epoch in range(epochs):
        for batch in itertools.islice(dcgan._epoch_batches(data, epoch, batch_size, seed), steps):
            out["d_loss"].append(gan.discriminator_step(batch))
            out["g_loss"].append(gan.generator_step(len(batch)))
            gan.step += 1
    return out


def test_train_gan_on_fit_equals_the_old_loop(tmp_path):
    from micrograd_gen.generative import dcgan
    from tests.test_dcgan import faces, mini_gan
    data = faces(6)
    history = dcgan.train_gan(mini_gan(seed=0), data, epochs=2, batch_size=2, seed=3,
                              checkpoint_path=tmp_path / "gan.h5", log=lambda line: None)
    old = old_gan_loop(mini_gan(seed=0), data, 2, 2, 3, 3)
    np.testing.assert_allclose(history["d_loss"], old["d_loss"], rtol=1e-6)
    np.testing.assert_allclose(history["g_loss"], old["g_loss"], rtol=1e-6)
    assert history["epoch"] == [1, 1, 1, 2, 2, 2]
    assert (tmp_path / "history.png").is_file()


def old_style_loop(style, folder, vgg, steps):
    """fast_style.train_style's loop as it was on main."""
    from micrograd_gen.generative import fast_style as F
    batches = F._batches(folder, 32, 2, 0)
    loss_fn = F.PerceptualLoss(F.load_style_picture(style, 32), model=vgg)
    nn.set_seed(0)
    net = F.TransformerNet((4, 8, 8), 1, name="transformer_net")
    optimizer, out = None, []
    for _ in range(steps):
        content = next(batches)
        generated = net(Tensor(content))
        if optimizer is None:
            optimizer = optim.Adam(net.trainable_weights, learning_rate=1e-2)
        loss, _ = loss_fn(generated, content)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        out.append(float(loss.item()))
    return out


def test_train_style_on_fit_equals_the_old_loop(tmp_path):
    from micrograd_gen import applications
    from micrograd_gen.generative import fast_style as F
    rng = np.random.default_rng(0)
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    style = rng.uniform(0, 255, (40, 40, 3)).astype(np.float32)
    nn.set_seed(5)
    vgg = applications.VGG19(weights=None, include_top=False)   # random weights will do
    seen = []
    F.train_style(style, folder, size=32, batch_size=2, steps=2, learning_rate=1e-2, model=vgg,
                  filters=(4, 8, 8), residual_blocks=1, callback=seen.append,
                  history_dir=tmp_path)
    assert [s.step for s in seen] == [1, 2]
    np.testing.assert_allclose([s.loss for s in seen], old_style_loop(style, folder, vgg, 2),
                               rtol=1e-5)
    assert (tmp_path / "history.png").is_file()
