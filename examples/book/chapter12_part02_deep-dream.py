# %% [markdown]
# # Deep Learning with Python (2nd edition), chapter 12.2: DeepDream
#
# The book's listings 12.9 to 12.15 in order, with micrograd_gen where the book has Keras and
# TensorFlow: `applications.InceptionV3` for `keras.applications.inception_v3.InceptionV3`,
# `applications.feature_extractor` for the multi-output `keras.Model`, `loss.backward()` and
# `image.grad` for `tf.GradientTape`. The listing numbers count the companion notebook's listing
# titles in order through the chapter.
#
# `python examples/book/chapter12_part02_deep-dream.py [--quick] [--out DIR]`: `--quick` dreams
# on a picture 220 pixels high (any lower, and the smallest octave's mixed7 map has nothing left
# inside its 2-pixel border) for 3 steps per octave. Needs `images/` from the shared data folder
# ($MICROGRAD_GEN_DATA); the InceptionV3 weights are used when the engine finds them locally.

# %%
import numpy as np

from common import pretrained, setup, shared_data
from micrograd_gen import applications, ops
from micrograd_gen.applications import inception_v3
from micrograd_gen.data.images import load_image, save_image
from micrograd_gen.generative.deepdream import l2_normalize, resize
from micrograd_gen.tensor import Tensor

quick, out = setup("chapter12_part02_deep-dream", "The book's DeepDream, listing by listing")

# %% [markdown]
# ## Listing 12.9: Fetching the test image
# The book downloads `coast.jpg`; the shared data folder has a photo of the Golden Gate Bridge.

# %%
base_image_path = shared_data("images/golden_gate.jpg", "DeepDream's test image")
print("test image:", base_image_path, load_image(base_image_path).shape)

# %% [markdown]
# ## Listing 12.10: Instantiating a pretrained InceptionV3 model

# %%
model = inception_v3.InceptionV3(weights=pretrained("inception_v3_notop", "InceptionV3"),
                                 include_top=False)

# %% [markdown]
# ## Listing 12.11: Configuring the contribution of each layer to the DeepDream loss

# %%
layer_settings = {
    "mixed4": 1.0,
    "mixed5": 1.5,
    "mixed6": 2.0,
    "mixed7": 2.5,
}
# keras.Model(inputs=model.inputs, outputs={name: layer.output}): a callable x -> {name: Tensor}
feature_extractor = applications.feature_extractor(model, layer_settings.keys())

# %% [markdown]
# ## Listing 12.12: The DeepDream loss

# %%
def compute_loss(input_image):
    features = feature_extractor(input_image)
    loss = 0.0
    for name in features.keys():
        coeff = layer_settings[name]
        activation = features[name]
        border_cut = activation[:, 2:-2, 2:-2, :]
        loss = loss + coeff * ops.mean(border_cut * border_cut)
    return loss

# %% [markdown]
# ## Listing 12.13: The DeepDream gradient ascent process
# `tf.GradientTape` becomes a Tensor that requires its gradient: `loss.backward()` fills
# `image.grad`.

# %%
def gradient_ascent_step(image, learning_rate):
    image = Tensor(image, requires_grad=True)
    loss = compute_loss(image)
    loss.backward()
    grads = l2_normalize(image.grad)
    return float(loss), image.data + learning_rate * grads


def gradient_ascent_loop(image, iterations, learning_rate, max_loss=None):
    for i in range(iterations):
        loss, image = gradient_ascent_step(image, learning_rate)
        if max_loss is not None and loss > max_loss:
            break
        print(f"... Loss value at step {i}: {loss:.2f}")
    return image


# %%
step = 20.
num_octave = 3
octave_scale = 1.4
iterations = 30
max_loss = 15.
if quick:
    iterations = 3

# %% [markdown]
# ## Listing 12.14: Image processing utilities

# %%
def preprocess_image(image_path):
    img = load_image(image_path, height=220) if quick else load_image(image_path)
    img = np.expand_dims(img, axis=0)
    img = inception_v3.preprocess_input(img)
    return img


def deprocess_image(img):
    # (img / 2 + 0.5) * 255, clipped to uint8, the batch axis dropped
    return inception_v3.deprocess_image(img)

# %% [markdown]
# ## Listing 12.15: Running gradient ascent over multiple successive "octaves"
# `tf.image.resize` is `deepdream.resize` (bilinear, half-pixel centres, as TensorFlow).

# %%
original_img = preprocess_image(base_image_path)
original_shape = original_img.shape[1:3]

successive_shapes = [original_shape]
for i in range(1, num_octave):
    shape = tuple([int(dim / (octave_scale ** i)) for dim in original_shape])
    successive_shapes.append(shape)
successive_shapes = successive_shapes[::-1]

shrunk_original_img = resize(original_img, successive_shapes[0])

img = original_img.copy()
for i, shape in enumerate(successive_shapes):
    print(f"Processing octave {i} with shape {shape}")
    img = resize(img, shape)
    img = gradient_ascent_loop(
        img, iterations=iterations, learning_rate=step, max_loss=max_loss
    )
    upscaled_shrunk_original_img = resize(shrunk_original_img, shape)
    same_size_original = resize(original_img, shape)
    lost_detail = same_size_original - upscaled_shrunk_original_img
    img += lost_detail
    shrunk_original_img = resize(original_img, shape)

save_image(out / "dream.png", deprocess_image(img))
print("wrote", out / "dream.png")
