# %% [markdown]
# # Deep Learning with Python (2nd edition), chapter 12.1: Text generation
#
# The book's listings 12.1 to 12.8 in order, with micrograd_gen where the book has Keras and
# TensorFlow: `data.TextVectorization` and `data.text_files_dataset` for Keras's text utilities,
# the engine's Transformer language model for the book's, `callbacks.Callback` for Keras's, and
# `compile` / `fit` as the book calls them. The listing numbers count the companion notebook's
# listing titles in order through the chapter. At the end, the graph of the model's loss drawn
# with `viz.draw_graph`.
#
# `python examples/book/chapter12_part01_text-generation.py [--quick] [--out DIR]`: `--quick`
# learns from 512 reviews with a tiny model for 2 epochs. Needs `imdb/aclImdb_train.tar.gz` from
# the shared data folder ($MICROGRAD_GEN_DATA).

# %%
import numpy as np

from common import setup, shared_data
from micrograd_gen import callbacks, nn, ops, viz
from micrograd_gen.data import TextVectorization, text_files_dataset
from micrograd_gen.generative.transformer_lm import TransformerLM
from micrograd_gen.tensor import no_grad

quick, out = setup("chapter12_part01_text-generation",
                   "The book's Transformer language model on IMDB reviews, listing by listing")
nn.set_seed(0)
np.random.seed(0)  # the book's sampling draws from NumPy's global generator

# %% [markdown]
# ## Listing 12.1: Reweighting a probability distribution to a different temperature

# %%
def reweight_distribution(original_distribution, temperature=0.5):
    distribution = np.log(original_distribution) / temperature
    distribution = np.exp(distribution)
    return distribution / np.sum(distribution)


print(reweight_distribution(np.array([0.1, 0.2, 0.7]), temperature=0.5))

# %% [markdown]
# ## Listing 12.2: Downloading and uncompressing the IMDB movie reviews dataset
# The shared data folder keeps the training half of the archive; the engine reads it as it is.

# %%
imdb_archive = shared_data("imdb/aclImdb_train.tar.gz", "the IMDB reviews")

# %% [markdown]
# ## Listing 12.3: Creating a dataset from text files (one file = one sample)
# `text_files_dataset` yields one string per review, with the book's `"<br />"` -> `" "` already
# applied; the batches of 256 are made below.

# %%
dataset = list(text_files_dataset(imdb_archive, limit=512 if quick else None))
print(len(dataset), "reviews; the first begins:", dataset[0][:80])

# %% [markdown]
# ## Listing 12.4: Preparing a `TextVectorization` layer

# %%
sequence_length = 100
vocab_size = 15000
if quick:
    sequence_length, vocab_size = 32, 2000
text_vectorization = TextVectorization(
    max_tokens=vocab_size,
    output_sequence_length=sequence_length,
)
text_vectorization.adapt(dataset)

# %% [markdown]
# ## Listing 12.5: Setting up a language modeling dataset

# %%
def prepare_lm_dataset(text_batch):
    vectorized_sequences = text_vectorization(text_batch)
    x = vectorized_sequences[:, :-1]
    y = vectorized_sequences[:, 1:]
    return x, y


batch_size = 64 if quick else 256
lm_dataset = [prepare_lm_dataset(dataset[i:i + batch_size])
              for i in range(0, len(dataset), batch_size)]

# %% [markdown]
# ## Listing 12.6: A simple Transformer-based language model
# The book builds it with the functional API from chapter 11's `PositionalEmbedding` and
# `TransformerDecoder`:
#
#     inputs = keras.Input(shape=(None,), dtype="int64")
#     x = PositionalEmbedding(sequence_length, vocab_size, embed_dim)(inputs)
#     x = TransformerDecoder(embed_dim, latent_dim, num_heads)(x, x)
#     outputs = layers.Dense(vocab_size, activation="softmax")(x)
#
# `TransformerLM` is those three layers (micrograd_gen/generative/transformer_lm.py), and it hands
# the embedding's padding mask to the decoder, as Keras's mask propagation does.

# %%
embed_dim = 256
latent_dim = 2048
num_heads = 2
if quick:
    embed_dim, latent_dim = 32, 64

model = TransformerLM(vocab_size, sequence_length, embed_dim, latent_dim, num_heads)
model.compile(loss="sparse_categorical_crossentropy", optimizer="rmsprop")

# %% [markdown]
# ## Listing 12.7: The text-generation callback

# %%
tokens_index = dict(enumerate(text_vectorization.get_vocabulary()))


def sample_next(predictions, temperature=1.0):
    predictions = np.asarray(predictions).astype("float64")
    predictions = np.log(predictions) / temperature
    exp_preds = np.exp(predictions)
    predictions = exp_preds / np.sum(exp_preds)
    probas = np.random.multinomial(1, predictions, 1)
    return np.argmax(probas)


class TextGenerator(callbacks.Callback):
    def __init__(self,
                 prompt,
                 generate_length,
                 model_input_length,
                 temperatures=(1.,),
                 print_freq=1):
        self.prompt = prompt
        self.generate_length = generate_length
        self.model_input_length = model_input_length
        self.temperatures = temperatures
        self.print_freq = print_freq
        vectorized_prompt = text_vectorization([prompt])[0]
        self.prompt_length = np.nonzero(vectorized_prompt == 0)[0][0]

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.print_freq != 0:
            return
        for temperature in self.temperatures:
            print("== Generating with temperature", temperature)
            sentence = self.prompt
            for i in range(self.generate_length):
                tokenized_sentence = text_vectorization([sentence])
                with no_grad():
                    predictions = self.model(tokenized_sentence).numpy()
                next_token = sample_next(
                    predictions[0, self.prompt_length - 1 + i, :]
                )
                sampled_token = tokens_index[next_token]
                sentence += " " + sampled_token
            print(sentence)
            with open(out / "generated.txt", "a") as f:   # kept, beside the book's print
                f.write(f"epoch {epoch + 1} temperature {temperature}: {sentence}\n")


prompt = "This movie"
text_gen_callback = TextGenerator(
    prompt,
    generate_length=10 if quick else 50,
    model_input_length=sequence_length,
    temperatures=(0.2, 0.5, 0.7, 1., 1.5))

# %% [markdown]
# ## Listing 12.8: Fitting the language model

# %%
history = model.fit(lm_dataset, epochs=2 if quick else 200, callbacks=[text_gen_callback])
print("loss per epoch:", [round(v, 3) for v in history.history["loss"]])

# %% [markdown]
# ## The graph behind one loss
# `viz.draw_graph` draws what the engine recorded for the loss of two reviews: every op with its
# output shape and the layer that made it, every weight with its shape and, since the backward
# pass keeps the graph (`retain_graph=True`), the norm of this loss's gradient.

# %%
x, y = prepare_lm_dataset(dataset[:2])
loss = ops.sparse_categorical_crossentropy(y, model(x))
for weight in model.trainable_weights:
    weight.grad = None  # fit's last step left its gradients here
loss.backward(retain_graph=True)
viz.draw_graph(loss, out / "lm_loss_graph.svg")
print("wrote", out / "lm_loss_graph.svg")
