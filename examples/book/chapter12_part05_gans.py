# %% [markdown]
# # Deep Learning with Python (2nd edition), chapter 12.5: Generative adversarial networks
#
# The book's listings 12.30 to 12.38 in order, with micrograd_gen where the book has Keras and
# TensorFlow: `nn` for `keras.layers`, `ops` for `tf` arithmetic, `metrics.Mean`,
# `losses.BinaryCrossentropy` and `callbacks.Callback` for Keras's, and
# `gradients(loss, weights)` for `tf.GradientTape`'s `tape.gradient`. The GAN class is the book's:
# a `Model` subclass with its own `compile` (two optimizers) and `train_step`, trained by `fit`
# with a callback. The listing numbers count the companion notebook's listing titles in order
# through the chapter.
#
# `python examples/book/chapter12_part05_gans.py [--quick] [--out DIR]`: `--quick` keeps the
# book's architecture with an eighth of its filters and trains 2 epochs of 2 steps. Needs
# `faces/faces64.tar` from the shared data folder ($MICROGRAD_GEN_DATA): 8,000 aligned faces at
# 64x64, standing in for CelebA.

# %%
import numpy as np
from PIL import Image

from common import setup, shared_data
from micrograd_gen import callbacks, losses, metrics, nn, ops, optim
from micrograd_gen.data.images import image_dataset_from_directory
from micrograd_gen.nn.training import gradients
from micrograd_gen.tensor import Tensor

quick, out = setup("chapter12_part05_gans", "The book's DCGAN, listing by listing")
nn.set_seed(0)
# The quick run divides every layer's filters by 8 (and the batch by 4): the book's generator
# alone takes seconds a step on a CPU.
width = 8 if quick else 1

# %% [markdown]
# ## Listing 12.30: Getting the CelebA data
# The book downloads CelebA (200,000 faces); the shared data folder has 8,000 faces in one tar.

# %%
faces = shared_data("faces/faces64.tar", "the GAN's faces")

# %% [markdown]
# ## Listing 12.31: Creating a dataset from a directory of images
# The engine reads a folder or an uncompressed tar of pictures.

# %%
dataset = image_dataset_from_directory(
    faces,
    label_mode=None,
    image_size=(64, 64),
    batch_size=8 if quick else 32,
    smart_resize=True)

# %% [markdown]
# ## Listing 12.32: Rescaling the images
# `dataset.map(lambda x: x / 255.)`: the engine's `image_dataset_from_directory` already yields
# float32 batches in [0, 1], the book's dataset after this map.

# %%
for x in dataset:
    print("batch", x.shape, x.dtype, "values from", x.min(), "to", x.max())
    break

# %% [markdown]
# ## Listing 12.33: Displaying the first image

# %%
for x in dataset:
    Image.fromarray((x * 255).astype("uint8")[0]).save(out / "first_image.png")
    break

# %% [markdown]
# ## Listing 12.34: The GAN discriminator network

# %%
discriminator = nn.Sequential(
    [
        nn.Input(shape=(64, 64, 3)),
        nn.Conv2D(64 // width, kernel_size=4, strides=2, padding="same"),
        nn.LeakyReLU(alpha=0.2),
        nn.Conv2D(128 // width, kernel_size=4, strides=2, padding="same"),
        nn.LeakyReLU(alpha=0.2),
        nn.Conv2D(128 // width, kernel_size=4, strides=2, padding="same"),
        nn.LeakyReLU(alpha=0.2),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Dense(1, activation="sigmoid"),
    ],
    name="discriminator",
)

# %%
discriminator.summary()

# %% [markdown]
# ## Listing 12.35: GAN generator network

# %%
latent_dim = 128

generator = nn.Sequential(
    [
        nn.Input(shape=(latent_dim,)),
        nn.Dense(8 * 8 * (128 // width)),
        nn.Reshape((8, 8, 128 // width)),
        nn.Conv2DTranspose(128 // width, kernel_size=4, strides=2, padding="same"),
        nn.LeakyReLU(alpha=0.2),
        nn.Conv2DTranspose(256 // width, kernel_size=4, strides=2, padding="same"),
        nn.LeakyReLU(alpha=0.2),
        nn.Conv2DTranspose(512 // width, kernel_size=4, strides=2, padding="same"),
        nn.LeakyReLU(alpha=0.2),
        nn.Conv2D(3, kernel_size=5, padding="same", activation="sigmoid"),
    ],
    name="generator",
)

# %%
generator.summary()

# %% [markdown]
# ## Listing 12.36: The GAN `Model`
# `tf.random.normal` and `tf.random.uniform` draw from a seeded NumPy generator that the model
# keeps; what the book computes under `tf.GradientTape()` builds the engine's graph as it runs.

# %%
class GAN(nn.Model):
    def __init__(self, discriminator, generator, latent_dim):
        super().__init__()
        self.discriminator = discriminator
        self.generator = generator
        self.latent_dim = latent_dim
        self.seed_generator = np.random.default_rng(1337)
        self.d_loss_metric = metrics.Mean(name="d_loss")
        self.g_loss_metric = metrics.Mean(name="g_loss")

    def compile(self, d_optimizer, g_optimizer, loss_fn):
        super(GAN, self).compile()
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.loss_fn = loss_fn

    @property
    def metrics(self):
        return [self.d_loss_metric, self.g_loss_metric]

    def normal(self, shape):
        return Tensor(self.seed_generator.standard_normal(shape), dtype="float32")

    def train_step(self, real_images):
        batch_size = real_images.shape[0]
        random_latent_vectors = self.normal((batch_size, self.latent_dim))
        generated_images = self.generator(random_latent_vectors)
        combined_images = ops.concatenate([generated_images, real_images], axis=0)
        labels = np.concatenate(
            [np.ones((batch_size, 1)), np.zeros((batch_size, 1))],
            axis=0
        )
        labels += 0.05 * self.seed_generator.uniform(size=labels.shape)
        labels = Tensor(labels, dtype="float32")

        predictions = self.discriminator(combined_images)
        d_loss = self.loss_fn(labels, predictions)
        grads = gradients(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(
            zip(grads, self.discriminator.trainable_weights)
        )

        random_latent_vectors = self.normal((batch_size, self.latent_dim))
        misleading_labels = Tensor(np.zeros((batch_size, 1)), dtype="float32")
        predictions = self.discriminator(
            self.generator(random_latent_vectors))
        g_loss = self.loss_fn(misleading_labels, predictions)
        grads = gradients(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(
            zip(grads, self.generator.trainable_weights))

        self.d_loss_metric.update_state(d_loss)
        self.g_loss_metric.update_state(g_loss)
        return {"d_loss": self.d_loss_metric.result(),
                "g_loss": self.g_loss_metric.result()}

# %% [markdown]
# ## Listing 12.37: A callback that samples generated images during training

# %%
class GANMonitor(callbacks.Callback):
    def __init__(self, num_img=3, latent_dim=128):
        self.num_img = num_img
        self.latent_dim = latent_dim
        self.seed_generator = np.random.default_rng(42)

    def on_epoch_end(self, epoch, logs=None):
        random_latent_vectors = Tensor(
            self.seed_generator.standard_normal((self.num_img, self.latent_dim)),
            dtype="float32")
        generated_images = self.model.generator(random_latent_vectors)
        generated_images *= 255
        generated_images = generated_images.numpy()
        for i in range(self.num_img):
            img = Image.fromarray(np.clip(generated_images[i], 0, 255).astype("uint8"))
            img.save(out / f"generated_img_{epoch:03d}_{i}.png")

# %% [markdown]
# ## Listing 12.38: Compiling and training the GAN

# %%
epochs = 2 if quick else 100

gan = GAN(discriminator=discriminator, generator=generator, latent_dim=latent_dim)
gan.compile(
    d_optimizer=optim.Adam(learning_rate=0.0001),
    g_optimizer=optim.Adam(learning_rate=0.0001),
    loss_fn=losses.BinaryCrossentropy(),
)

history = gan.fit(
    dataset, epochs=epochs, callbacks=[GANMonitor(num_img=10, latent_dim=latent_dim)],
    steps_per_epoch=2 if quick else None,
)
print({name: [round(v, 3) for v in values] for name, values in history.history.items()})
