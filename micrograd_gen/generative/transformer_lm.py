"""The second edition's word-level Transformer language model (§12.1, layers from chapter 11).

    vectorizer = TextVectorization(max_tokens=15000, output_sequence_length=100); vectorizer.adapt(texts)
    model = build_transformer_lm()                       # 9,825,176 parameters
    loss = sparse_lm_loss(model, ids[:, :-1], ids[:, 1:])
    generate_text(model, vectorizer, "this movie", 50, temperature=0.7, rng=rng)

Architecture (../shared/BENCHMARKS.md §2): PositionalEmbedding (token embedding + learned position
embedding; mask = ids != 0), one TransformerDecoder called as (x, x) — causal self-attention,
LayerNorm(x + .); attention with query = that, key = value = x under the causal AND padding mask,
LayerNorm(. + .); Dense(2048, relu) -> Dense(256), LayerNorm(. + .) — then Dense(vocab, softmax).

## Generation with a key/value cache, and what equals the book
The book re-runs the whole model on the (padded) sequence for every new word and reads the
prediction at one position (`book_generate`). Under the causal mask position t depends on tokens
0..t only, so the keys and values of earlier positions never change: `generate_ids` keeps them
(`ops.multi_head_attention(..., cache=...)`, one cache per attention layer) and runs only the new
position through the block, a (1, 256) row instead of (1, 100, 256). The probabilities are the
re-run's up to float32 rounding, so for the same random state the words are the same. Both stop
seeing the start of the text once it outgrows `sequence_length` positions (the position embedding
has no more rows): from then on both use the last `sequence_length` tokens, and the cache is
rebuilt from them for every word (as costly as the re-run, and only past 100 tokens).

Which position is read: the prediction after the last token (`book_indexing=False`, the default).
The book's listing reads `predictions[0, i, :]` at step i, which is the last token only for a
one-word prompt; with "this movie" each word is predicted from all but the last token.
`book_indexing=True` reproduces that (in both generators).

Both generators work on token ids; the book's loop goes back to a string and re-vectorizes it each
time, which differs only when the padding id or "[UNK]" is sampled ("[UNK]" comes back as "unk").
"""
import numpy as np

from .. import backend, nn, ops
from ..tensor import Tensor, no_grad
from .text_sampling import sample_next
from .text_training import (TEMPERATURES, TextGenerator, TrainedText, register_text_model,
                            train_text_model)

VOCAB_SIZE, SEQUENCE_LENGTH, EMBED_DIM, DENSE_DIM, NUM_HEADS = 15000, 100, 256, 2048, 2


class PositionalEmbedding(nn.Layer):
    """Token embedding plus a learned embedding of each position 0..sequence_length-1."""

    def __init__(self, sequence_length, input_dim, output_dim, **kwargs):
        super().__init__(**kwargs)
        self.sequence_length, self.input_dim, self.output_dim = sequence_length, input_dim, output_dim
        self.token_embeddings = nn.Embedding(input_dim=input_dim, output_dim=output_dim)
        self.position_embeddings = nn.Embedding(input_dim=sequence_length, output_dim=output_dim)

    def call(self, inputs, start=0):
        """inputs: ids (N, T); `start` is the position of the first one (incremental decoding)."""
        length = inputs.shape[-1]
        if start + length > self.sequence_length:
            raise ValueError(f"PositionalEmbedding '{self.name}': positions {start}..{start + length - 1}"
                             f" do not fit sequence_length={self.sequence_length}")
        positions = np.arange(start, start + length)
        return self.token_embeddings(inputs) + self.position_embeddings(positions)

    def compute_mask(self, inputs):
        ids = inputs.data if isinstance(inputs, Tensor) else inputs
        return ids != 0

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)


class TransformerDecoder(nn.Layer):
    """The book's decoder block, called as decoder(inputs, encoder_outputs, mask=padding mask)."""

    def __init__(self, embed_dim, dense_dim, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim, self.dense_dim, self.num_heads = embed_dim, dense_dim, num_heads
        self.attention_1 = nn.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.attention_2 = nn.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.dense_proj = nn.Sequential([nn.Dense(dense_dim, activation="relu"),
                                         nn.Dense(embed_dim)])
        self.layernorm_1 = nn.LayerNormalization()
        self.layernorm_2 = nn.LayerNormalization()
        self.layernorm_3 = nn.LayerNormalization()

    def call(self, inputs, encoder_outputs, mask=None):
        # mask: (N, S), True at real tokens of encoder_outputs. The book combines it with the
        # causal mask for the second attention (the embedding's mask propagates to it in Keras).
        attention_output_1 = self.attention_1(inputs, inputs, use_causal_mask=True)
        attention_output_1 = self.layernorm_1(inputs + attention_output_1)
        padding_mask = None
        if mask is not None:
            padding_mask = np.broadcast_to(np.asarray(backend.to_numpy(mask), bool)[:, None, :],
                                           (mask.shape[0], inputs.shape[1], mask.shape[1]))
        attention_output_2 = self.attention_2(attention_output_1, encoder_outputs,
                                              attention_mask=padding_mask, use_causal_mask=True)
        attention_output_2 = self.layernorm_2(attention_output_1 + attention_output_2)
        proj_output = self.dense_proj(attention_output_2)
        return self.layernorm_3(attention_output_2 + proj_output)

    def step(self, x, key_valid, caches):
        """Incremental form of call(x_all, x_all, mask) for the new positions x (N, Tn, d) only.

        key_valid: (N, T_so_far) bool, the padding mask of every position so far (new ones too);
        caches: [dict, dict] for attention_1 and attention_2, carried between calls.
        """
        a1 = ops.multi_head_attention(x, x, None, *_mha_weights(self.attention_1), causal=True,
                                      cache=caches[0])
        a1 = self.layernorm_1(x + a1)
        a2 = ops.multi_head_attention(a1, x, None, *_mha_weights(self.attention_2), causal=True,
                                      mask=key_valid[:, None, :], cache=caches[1])
        a2 = self.layernorm_2(a1 + a2)
        return self.layernorm_3(a2 + self.dense_proj(a2))

    def compute_output_shape(self, input_shape, *more):
        return tuple(input_shape)


def _mha_weights(mha):
    return (mha.query_kernel, mha.query_bias, mha.key_kernel, mha.key_bias, mha.value_kernel,
            mha.value_bias, mha.output_kernel, mha.output_bias)


class TransformerLM(nn.Model):
    """PositionalEmbedding -> TransformerDecoder(x, x) -> Dense(vocab, softmax). Calling it gives
    probabilities (N, T, vocab); `logits(ids)` the values before the softmax (for the fused loss)."""

    keras_functional = True   # the book builds it as keras.Model(inputs, outputs): weight files follow

    def __init__(self, vocab_size=VOCAB_SIZE, sequence_length=SEQUENCE_LENGTH, embed_dim=EMBED_DIM,
                 dense_dim=DENSE_DIM, num_heads=NUM_HEADS, **kwargs):
        super().__init__(**kwargs)
        self.config = {"kind": "transformer", "vocab_size": vocab_size,
                       "sequence_length": sequence_length, "embed_dim": embed_dim,
                       "dense_dim": dense_dim, "num_heads": num_heads}
        self.embedding = PositionalEmbedding(sequence_length, vocab_size, embed_dim)
        self.decoder = TransformerDecoder(embed_dim, dense_dim, num_heads)
        self.dense = nn.Dense(vocab_size, activation="softmax")

    def hidden(self, ids):
        x = self.embedding(ids)
        return self.decoder(x, x, mask=self.embedding.compute_mask(ids))

    def logits(self, ids):
        h = self.hidden(ids)
        if not self.dense.built:
            self.dense(h)
        return ops.affine(h, self.dense.kernel, self.dense.bias)   # the Dense before its softmax

    def call(self, ids):
        return self.dense(self.hidden(ids))

    def compute_output_shape(self, input_shape, *more):
        return tuple(input_shape) + (self.config["vocab_size"],)


def build_transformer_lm(vocab_size=VOCAB_SIZE, sequence_length=SEQUENCE_LENGTH,
                         embed_dim=EMBED_DIM, dense_dim=DENSE_DIM, num_heads=NUM_HEADS):
    """The book's model, built (one pass on a single token) so its weights exist at once."""
    model = TransformerLM(vocab_size, sequence_length, embed_dim, dense_dim, num_heads)
    with no_grad():
        model(np.ones((1, 1), np.int64))
    return model


# ---- generation ---------------------------------------------------------------------------------
class _Decoder:
    """Token-by-token decoding of one sequence with the attention layers' keys and values cached."""

    def __init__(self, model):
        self.model = model
        self.window = model.config["sequence_length"]
        self.dense_kernel = backend.to_numpy(model.dense.kernel.data)          # (d, vocab)
        self.dense_bias = backend.to_numpy(model.dense.bias.data)
        self.reset()

    def reset(self):
        self.caches = [{}, {}]
        self.valid = np.zeros((1, 0), bool)
        self.outputs = []                                   # the block's output at each position

    def feed(self, ids):
        """Run new tokens through the block; their outputs join self.outputs."""
        ids = np.asarray(ids, np.int64).reshape(1, -1)
        start = len(self.outputs)
        with no_grad():
            x = self.model.embedding(ids, start=start)                          # (1, Tn, d)
            self.valid = np.concatenate([self.valid, ids != 0], axis=1)
            out = self.model.decoder.step(x, self.valid, self.caches).numpy()[0]  # (Tn, d)
        self.outputs.extend(out)

    def probabilities(self, position):
        """softmax(Dense) at one position, float32 like the model's output."""
        logits = self.outputs[position] @ self.dense_kernel + self.dense_bias
        logits -= logits.max()
        e = np.exp(logits)
        return e / e.sum()


def _prompt_ids(vectorizer, prompt):
    """The prompt's token ids as TextVectorization gives them, without cutting or padding."""
    index = {token: i for i, token in enumerate(vectorizer.get_vocabulary())}
    ids = [index.get(token, 1) for token in vectorizer.tokenize(prompt)]
    if not ids:
        raise ValueError(f"generate_text: the prompt {prompt!r} has no tokens after vectorization")
    return ids


def _check_position(book_indexing, i, window):
    if book_indexing and i >= window:
        raise ValueError(f"generate: book_indexing reads position {i}, past sequence_length={window}")


def generate_ids(model, prompt_ids, length, temperature=1.0, rng=None, book_indexing=False):
    """`length` new token ids after `prompt_ids`, with the key/value cache (module notes)."""
    decoder = _Decoder(model)
    window = decoder.window
    tokens = list(prompt_ids)
    decoder.feed(tokens[-window:])
    out = []
    for i in range(length):
        _check_position(book_indexing, i, window)
        position = i if book_indexing else len(decoder.outputs) - 1
        token = sample_next(decoder.probabilities(position), temperature, rng)
        tokens.append(token)
        out.append(token)
        if i + 1 == length:
            break
        if len(decoder.outputs) < window:
            decoder.feed([token])
        else:                                            # positions shift: start again
            decoder.reset()
            decoder.feed(tokens[-window:])
    return out


def book_generate_ids(model, prompt_ids, length, temperature=1.0, rng=None, book_indexing=False):
    """The book's loop on token ids: for each word, run the model on the zero-padded sequence of
    `sequence_length` tokens and sample from the prediction at the last token (or at step i)."""
    window = model.config["sequence_length"]
    tokens, out = list(prompt_ids), []
    model.eval()
    with no_grad():
        for i in range(length):
            _check_position(book_indexing, i, window)
            seen = tokens[-window:]
            sequence = np.zeros((1, window), np.int64)
            sequence[0, :len(seen)] = seen
            predictions = model(sequence).numpy()
            position = i if book_indexing else len(seen) - 1
            token = sample_next(predictions[0, position, :], temperature, rng)
            tokens.append(token)
            out.append(token)
    return out


def decode(vectorizer, ids):
    vocabulary = vectorizer.get_vocabulary()
    return " ".join(vocabulary[i] for i in ids)


def generate_text(model, vectorizer, prompt, length=50, temperature=0.7, rng=None,
                  book_indexing=False):
    """The `length` words the model writes after `prompt`, joined by spaces (prompt excluded)."""
    ids = generate_ids(model, _prompt_ids(vectorizer, prompt), length, temperature, rng,
                       book_indexing)
    return decode(vectorizer, ids)


# ---- training -----------------------------------------------------------------------------------
def vectorize_corpus(texts, vocab_size=VOCAB_SIZE, sequence_length=SEQUENCE_LENGTH, vectorizer=None):
    """The book's TextVectorization (adapted on `texts` unless one is given) and the texts as
    int64 (N, sequence_length) token ids."""
    from ..data.text import TextVectorization
    texts = list(texts)
    if vectorizer is None:
        vectorizer = TextVectorization(max_tokens=vocab_size, output_sequence_length=sequence_length)
        vectorizer.adapt(texts)
    return vectorizer, vectorizer(texts)


def train_transformer_lm(texts, epochs=1, max_seconds=None, steps_per_epoch=None, batch_size=256,
                         learning_rate=1e-3, seed=0, vocab_size=VOCAB_SIZE,
                         sequence_length=SEQUENCE_LENGTH, prompt="this movie", sample_every=None,
                         sample_length=50, temperatures=None, log=print, progress=True, run=None,
                         callbacks=(), checkpoint=None, model_kwargs=None):
    """Train the book's Transformer LM on `texts` (strings, e.g. the IMDB reviews): inputs the
    first 99 tokens of each vectorized review, targets the same shifted by one. RMSprop(1e-3).

    `run` (a TrainedText) continues a run; its vectorizer is reused. With `sample_every=N` a
    TextGenerator prints samples from `prompt` every N epochs; with `checkpoint=PATH` the run is
    saved there after every epoch. model_kwargs overrides
    embed_dim / dense_dim / num_heads (small models for tests). Returns a TrainedText.
    """
    from ..data.text import lm_batches
    from ..optim import RMSprop
    vectorizer = run.vocab if run is not None else None
    vectorizer, ids = vectorize_corpus(texts, vocab_size, sequence_length, vectorizer)
    if run is None:
        nn.set_seed(seed)
        model = build_transformer_lm(vectorizer.vocabulary_size(), sequence_length,
                                     **(model_kwargs or {}))
        run = TrainedText(model, vectorizer, RMSprop(learning_rate=learning_rate),
                          config=dict(model.config, learning_rate=learning_rate))
    batches = lm_batches(ids, batch_size=batch_size, shuffle=True,
                         seed=seed + len(run.history.epoch_losses))
    generator = None
    if sample_every:
        generator = TextGenerator(
            lambda p, t, rng: generate_text(run.model, run.vocab, p, sample_length, t, rng),
            prompt, temperatures or TEMPERATURES, every=sample_every,
            rng=np.random.default_rng(seed), print_fn=log, separator=" ")
    return train_text_model(run, batches, epochs=epochs, steps_per_epoch=steps_per_epoch,
                            max_seconds=max_seconds, extra_callbacks=callbacks, progress=progress,
                            checkpoint=checkpoint, log=log, generator=generator)


def _rebuild(config, vocabulary):
    """For load_text_model: the model of a saved config, and its vectorizer."""
    from ..data.text import TextVectorization
    model = build_transformer_lm(**{k: config[k] for k in (
        "vocab_size", "sequence_length", "embed_dim", "dense_dim", "num_heads")})
    return model, TextVectorization(**vocabulary["vectorizer"], vocabulary=vocabulary["tokens"])


register_text_model("transformer", _rebuild)
