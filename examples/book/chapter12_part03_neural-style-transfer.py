# %% [markdown]
# # Deep Learning with Python (2nd edition), chapter 12.3: Neural style transfer
#
# The book's listings 12.16 to 12.23 in order, with micrograd_gen where the book has Keras and
# TensorFlow: `applications.VGG19` and `applications.feature_extractor` for the VGG19 feature
# extractor, `ops` for `tf` arithmetic, `loss.backward()` for `tf.GradientTape`, and the engine's
# `optim.SGD` with `optim.ExponentialDecay` for Keras's. The listing numbers count the companion
# notebook's listing titles in order through the chapter.
#
# `python examples/book/chapter12_part03_neural-style-transfer.py [--quick] [--out DIR]`:
# `--quick` works at 64 pixels high for 20 steps. Needs `images/` from the shared data folder
# ($MICROGRAD_GEN_DATA); the VGG19 weights are used when the engine finds them locally.

# %%
import numpy as np

from common import pretrained, setup, shared_data
from micrograd_gen import applications, ops, optim
from micrograd_gen.applications import vgg19
from micrograd_gen.data.images import load_image, save_image
from micrograd_gen.tensor import Tensor

quick, out = setup("chapter12_part03_neural-style-transfer",
                   "The book's neural style transfer, listing by listing")

# %% [markdown]
# ## Listing 12.16: Getting the style and content images
# The book downloads a view of San Francisco (`sf.jpg`); the shared data folder has Tübingen.

# %%
base_image_path = shared_data("images/tubingen.jpg", "style transfer's content image")
style_reference_image_path = shared_data("images/starry_night.jpg", "style transfer's style image")

original_height, original_width = load_image(base_image_path).shape[:2]
img_height = 64 if quick else 400
img_width = round(original_width * img_height / original_height)

# %% [markdown]
# ## Listing 12.17: Auxiliary functions

# %%
def preprocess_image(image_path):
    img = load_image(image_path, target_size=(img_height, img_width))
    img = np.expand_dims(img, axis=0)
    img = vgg19.preprocess_input(img)
    return img


def deprocess_image(img):
    # add the ImageNet mean pixel back, BGR -> RGB, clip to uint8
    return vgg19.deprocess_image(img.reshape((img_height, img_width, 3)))

# %% [markdown]
# ## Listing 12.18: Using a pretrained VGG19 model to create a feature extractor

# %%
model = vgg19.VGG19(weights=pretrained("vgg19_notop", "VGG19"), include_top=False)

# keras.Model(inputs=model.inputs, outputs={layer.name: layer.output for every layer})
feature_extractor = applications.feature_extractor(model, model.layer_names)

# %% [markdown]
# ## Listing 12.19: Content loss

# %%
def content_loss(base_img, combination_img):
    difference = combination_img - base_img
    return ops.sum(difference * difference)

# %% [markdown]
# ## Listing 12.20: Style loss

# %%
def gram_matrix(x):
    x = ops.transpose(x, (2, 0, 1))
    features = ops.reshape(x, (x.shape[0], -1))
    gram = ops.matmul(features, ops.transpose(features))
    return gram


def style_loss(style_img, combination_img):
    S = gram_matrix(style_img)
    C = gram_matrix(combination_img)
    channels = 3
    size = img_height * img_width
    difference = S - C
    return ops.sum(difference * difference) / (4.0 * (channels ** 2) * (size ** 2))

# %% [markdown]
# ## Listing 12.21: Total variation loss

# %%
def total_variation_loss(x):
    a = x[:, : img_height - 1, : img_width - 1, :] - x[:, 1:, : img_width - 1, :]
    b = x[:, : img_height - 1, : img_width - 1, :] - x[:, : img_height - 1, 1:, :]
    return ops.sum(ops.power(a * a + b * b, 1.25))

# %% [markdown]
# ## Listing 12.22: Defining the final loss that you'll minimize

# %%
style_layer_names = [
    "block1_conv1",
    "block2_conv1",
    "block3_conv1",
    "block4_conv1",
    "block5_conv1",
]
content_layer_name = "block5_conv2"
total_variation_weight = 1e-6
style_weight = 1e-6
content_weight = 2.5e-8


def compute_loss(combination_image, base_image, style_reference_image):
    input_tensor = ops.concatenate(
        [base_image, style_reference_image, combination_image], axis=0
    )
    features = feature_extractor(input_tensor)
    loss = 0.0
    layer_features = features[content_layer_name]
    base_image_features = layer_features[0, :, :, :]
    combination_features = layer_features[2, :, :, :]
    loss = loss + content_weight * content_loss(
        base_image_features, combination_features
    )
    for layer_name in style_layer_names:
        layer_features = features[layer_name]
        style_reference_features = layer_features[1, :, :, :]
        combination_features = layer_features[2, :, :, :]
        style_loss_value = style_loss(
          style_reference_features, combination_features)
        loss += (style_weight / len(style_layer_names)) * style_loss_value

    loss += total_variation_weight * total_variation_loss(combination_image)
    return loss

# %% [markdown]
# ## Listing 12.23: Setting up the gradient-descent process
# `tf.Variable` is a Tensor that requires its gradient; `tape.gradient` is `loss.backward()`
# followed by reading `.grad`.

# %%
def compute_loss_and_grads(combination_image, base_image, style_reference_image):
    combination_image.grad = None
    loss = compute_loss(combination_image, base_image, style_reference_image)
    loss.backward()
    return loss, combination_image.grad


# The book's rate of 100 is tuned for its 400-pixel-high picture: the style term's gradient per
# pixel goes as 1 / (height * width), so on a smaller picture the same rate diverges within a few
# steps. The quick run scales it with the pixel count (as `style_transfer.sgd_learning_rate` does).
initial_learning_rate = 100.0
if quick:
    initial_learning_rate *= img_height * img_width / (400 * 600)
optimizer = optim.SGD(
    optim.ExponentialDecay(
        initial_learning_rate=initial_learning_rate, decay_steps=100, decay_rate=0.96
    )
)

base_image = Tensor(preprocess_image(base_image_path))
style_reference_image = Tensor(preprocess_image(style_reference_image_path))
combination_image = Tensor(preprocess_image(base_image_path), requires_grad=True)

iterations = 20 if quick else 4000
save_every = 10 if quick else 100
for i in range(1, iterations + 1):
    loss, grads = compute_loss_and_grads(
        combination_image, base_image, style_reference_image
    )
    optimizer.apply_gradients([(grads, combination_image)])
    if i % save_every == 0:
        print(f"Iteration {i}: loss={float(loss):.2f}")
        img = deprocess_image(combination_image.numpy())
        fname = f"combination_image_at_iteration_{i}.png"
        save_image(out / fname, img)
