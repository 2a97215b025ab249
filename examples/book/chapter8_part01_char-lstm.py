# %% [markdown]
# # Deep Learning with Python (1st edition), section 8.1: Text generation with LSTM
#
# The first edition's listings 8.1 to 8.7 in order: a character-level LSTM learns Nietzsche and
# writes at four temperatures. micrograd_gen stands where the book has Keras: `nn.Sequential`,
# `nn.LSTM` and `nn.Dense` for `keras.layers`, `optim.RMSprop` for Keras's, and `compile`, `fit`
# and `predict` as the book calls them.
#
# `python examples/book/chapter8_part01_char-lstm.py [--quick] [--out DIR]`: `--quick` trains one
# epoch on the first 20,000 characters and writes 40 characters per temperature. Needs
# `text/nietzsche.txt` from the shared data folder ($MICROGRAD_GEN_DATA).

# %%
import random
import sys

import numpy as np

from common import setup, shared_data
from micrograd_gen import nn, optim

quick, out = setup("chapter8_part01_char-lstm",
                   "The first edition's character-level LSTM, listing by listing")
nn.set_seed(0)
random.seed(0)
np.random.seed(0)

# %% [markdown]
# ## Listing 8.1: Reweighting a probability distribution to a different temperature

# %%
def reweight_distribution(original_distribution, temperature=0.5):
    distribution = np.log(original_distribution) / temperature
    distribution = np.exp(distribution)
    return distribution / np.sum(distribution)


print(reweight_distribution(np.array([0.1, 0.2, 0.7]), temperature=0.5))

# %% [markdown]
# ## Listing 8.2: Downloading and parsing the initial text file
# `keras.utils.get_file` downloads Nietzsche; the shared data folder has the same file.

# %%
path = shared_data("text/nietzsche.txt", "the character LSTM's text")
text = open(path, encoding="utf-8").read().lower()
if quick:
    text = text[:20000]
print('Corpus length:', len(text))

# %% [markdown]
# ## Listing 8.3: Vectorizing sequences of characters

# %%
maxlen = 60
step = 3
sentences = []
next_chars = []

for i in range(0, len(text) - maxlen, step):
    sentences.append(text[i: i + maxlen])
    next_chars.append(text[i + maxlen])
print('Number of sequences:', len(sentences))

chars = sorted(list(set(text)))
print('Unique characters:', len(chars))
char_indices = dict((char, chars.index(char)) for char in chars)

print('Vectorization...')
x = np.zeros((len(sentences), maxlen, len(chars)), dtype=bool)
y = np.zeros((len(sentences), len(chars)), dtype=bool)
for i, sentence in enumerate(sentences):
    for t, char in enumerate(sentence):
        x[i, t, char_indices[char]] = 1
    y[i, char_indices[next_chars[i]]] = 1

# %% [markdown]
# ## Listing 8.4: Single-layer LSTM model for next-character prediction

# %%
model = nn.Sequential()
model.add(nn.LSTM(128, input_shape=(maxlen, len(chars))))
model.add(nn.Dense(len(chars), activation='softmax'))

# %% [markdown]
# ## Listing 8.5: Model compilation configuration

# %%
optimizer = optim.RMSprop(learning_rate=0.01)
model.compile(loss='categorical_crossentropy', optimizer=optimizer)

# %% [markdown]
# ## Listing 8.6: Function to sample the next character given the model's predictions

# %%
def sample(preds, temperature=1.0):
    preds = np.asarray(preds).astype('float64')
    preds = np.log(preds) / temperature
    exp_preds = np.exp(preds)
    preds = exp_preds / np.sum(exp_preds)
    probas = np.random.multinomial(1, preds, 1)
    return np.argmax(probas)

# %% [markdown]
# ## Listing 8.7: Text-generation loop
# As the book: one epoch of `fit`, then 400 characters at each temperature, each from `predict`
# on the last 60 characters. (The engine's `char_lstm.generate_text` does the same faster, carrying
# the LSTM's state from one character to the next instead of re-reading the window.)

# %%
last_epoch = 1 if quick else 59
generate_length = 40 if quick else 400
samples = open(out / "generated.txt", "w", encoding="utf-8")

for epoch in range(1, last_epoch + 1):
    print('epoch', epoch)
    model.fit(x, y,
              batch_size=128,
              epochs=1)

    start_index = random.randint(0, len(text) - maxlen - 1)
    generated_text = text[start_index: start_index + maxlen]
    print('--- Generating with seed: "' + generated_text + '"')
    samples.write(f'epoch {epoch}, seed "{generated_text}"\n')

    for temperature in [0.2, 0.5, 1.0, 1.2]:
        print('------ temperature:', temperature)
        sys.stdout.write(generated_text)
        written = ''
        for i in range(generate_length):
            sampled = np.zeros((1, maxlen, len(chars)))
            for t, char in enumerate(generated_text):
                sampled[0, t, char_indices[char]] = 1.

            preds = model.predict(sampled, verbose=0)[0]
            next_index = sample(preds, temperature)
            next_char = chars[next_index]

            generated_text += next_char
            generated_text = generated_text[1:]

            sys.stdout.write(next_char)
            sys.stdout.flush()
            written += next_char
        print()
        samples.write(f'temperature {temperature}: {written}\n')

samples.close()
