# %% [markdown]
# # Deep Learning with Python (2nd edition), chapter 12.4: Variational autoencoders
#
# The book's listings 12.24 to 12.29 in order, with micrograd_gen where the book has Keras and
# TensorFlow: `nn` for `keras.layers`, `ops` for `tf` arithmetic, `metrics.Mean` and
# `losses.binary_crossentropy` for Keras's, and `gradients(loss, weights)` for
# `tf.GradientTape`'s `tape.gradient`. The VAE class is the book's: a `Model` subclass with its
# own `train_step`, trained by `compile` and `fit`. The listing numbers count the companion
# notebook's listing titles in order through the chapter.
#
# `python examples/book/chapter12_part04_variational-autoencoders.py [--quick] [--out DIR]`:
# `--quick` trains one epoch on 2,048 digits and decodes a 10x10 grid. Needs `mnist/` from the
# shared data folder ($MICROGRAD_GEN_DATA).

# %%
import numpy as np

from common import setup, shared_data
from micrograd_gen import losses, metrics, nn, ops, optim
from micrograd_gen.data import load_mnist
from micrograd_gen.data.images import save_image
from micrograd_gen.nn.training import gradients
from micrograd_gen.tensor import Tensor

quick, out = setup("chapter12_part04_variational-autoencoders",
                   "The book's variational autoencoder, listing by listing")
nn.set_seed(0)

# %% [markdown]
# ## Listing 12.24: VAE encoder network

# %%
latent_dim = 2

encoder_inputs = nn.Input(shape=(28, 28, 1))
x = nn.Conv2D(32, 3, activation="relu", strides=2, padding="same")(encoder_inputs)
x = nn.Conv2D(64, 3, activation="relu", strides=2, padding="same")(x)
x = nn.Flatten()(x)
x = nn.Dense(16, activation="relu")(x)
z_mean = nn.Dense(latent_dim, name="z_mean")(x)
z_log_var = nn.Dense(latent_dim, name="z_log_var")(x)
encoder = nn.Model(encoder_inputs, [z_mean, z_log_var], name="encoder")

# %%
encoder.summary()

# %% [markdown]
# ## Listing 12.25: Latent-space-sampling layer
# `tf.random.normal` draws from TensorFlow's global state; here the layer keeps a seeded NumPy
# generator of its own.

# %%
class Sampler(nn.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = np.random.default_rng(1337)

    def call(self, z_mean, z_log_var):
        batch_size, z_size = z_mean.shape
        epsilon = Tensor(self.seed_generator.standard_normal((batch_size, z_size)),
                         dtype="float32")
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon

# %% [markdown]
# ## Listing 12.26: VAE decoder network, mapping latent space points to images

# %%
latent_inputs = nn.Input(shape=(latent_dim,))
x = nn.Dense(7 * 7 * 64, activation="relu")(latent_inputs)
x = nn.Reshape((7, 7, 64))(x)
x = nn.Conv2DTranspose(64, 3, activation="relu", strides=2, padding="same")(x)
x = nn.Conv2DTranspose(32, 3, activation="relu", strides=2, padding="same")(x)
decoder_outputs = nn.Conv2D(1, 3, activation="sigmoid", padding="same")(x)
decoder = nn.Model(latent_inputs, decoder_outputs, name="decoder")

# %%
decoder.summary()

# %% [markdown]
# ## Listing 12.27: VAE model with custom `train_step()`
# Inside `train_step`, what the book computes under `tf.GradientTape()` builds the engine's graph
# as it runs, and `gradients(total_loss, self.trainable_weights)` is `tape.gradient(...)`.

# %%
class VAE(nn.Model):
    def __init__(self, encoder, decoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.sampler = Sampler()
        self.total_loss_tracker = metrics.Mean(name="total_loss")
        self.reconstruction_loss_tracker = metrics.Mean(
            name="reconstruction_loss")
        self.kl_loss_tracker = metrics.Mean(name="kl_loss")

    @property
    def metrics(self):
        return [self.total_loss_tracker,
                self.reconstruction_loss_tracker,
                self.kl_loss_tracker]

    def train_step(self, data):
        z_mean, z_log_var = self.encoder(data)
        z = self.sampler(z_mean, z_log_var)
        reconstruction = decoder(z)
        reconstruction_loss = ops.mean(
            ops.sum(
                losses.binary_crossentropy(data, reconstruction),
                axis=(1, 2)
            )
        )
        kl_loss = -0.5 * (1 + z_log_var - z_mean * z_mean - ops.exp(z_log_var))
        total_loss = reconstruction_loss + ops.mean(kl_loss)
        grads = gradients(total_loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        self.total_loss_tracker.update_state(total_loss)
        self.reconstruction_loss_tracker.update_state(reconstruction_loss)
        self.kl_loss_tracker.update_state(kl_loss)
        return {
            "total_loss": self.total_loss_tracker.result(),
            "reconstruction_loss": self.reconstruction_loss_tracker.result(),
            "kl_loss": self.kl_loss_tracker.result(),
        }

# %% [markdown]
# ## Listing 12.28: Training the VAE
# `keras.datasets.mnist.load_data()` is `load_mnist()`, which reads the shared data folder's copy.

# %%
(x_train, _), (x_test, _) = load_mnist(shared_data("mnist", "the VAE's digits"), download=False)
mnist_digits = np.concatenate([x_train, x_test], axis=0)
mnist_digits = np.expand_dims(mnist_digits, -1).astype("float32") / 255
epochs = 30
if quick:
    mnist_digits, epochs = mnist_digits[:2048], 1

vae = VAE(encoder, decoder)
vae.compile(optimizer=optim.Adam())
history = vae.fit(mnist_digits, epochs=epochs, batch_size=128)
print({name: [round(v, 2) for v in values] for name, values in history.history.items()})

# %% [markdown]
# ## Listing 12.29: Sampling a grid of images from the 2D latent space
# The book draws the grid with matplotlib, tick labels and all; here it is saved as a picture.

# %%
n = 10 if quick else 30
digit_size = 28
figure = np.zeros((digit_size * n, digit_size * n))

grid_x = np.linspace(-1, 1, n)
grid_y = np.linspace(-1, 1, n)[::-1]

for i, yi in enumerate(grid_y):
    for j, xi in enumerate(grid_x):
        z_sample = np.array([[xi, yi]], dtype="float32")
        x_decoded = vae.decoder.predict(z_sample)
        digit = x_decoded[0].reshape(digit_size, digit_size)
        figure[
            i * digit_size : (i + 1) * digit_size,
            j * digit_size : (j + 1) * digit_size,
        ] = digit

save_image(out / "latent_grid.png", figure, value_range=(0, 1))
print("wrote", out / "latent_grid.png")
