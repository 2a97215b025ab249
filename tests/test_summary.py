"""Model.summary(): nested models as rows (or expanded), and shapes a subclassed model's layers
have not shown yet (the VAE's sampler) found without running anything."""
import re

import numpy as np

from micrograd_gen import nn
from micrograd_gen.generative import vae as V


def table_lines(text):
    """The lines between the two rules of '=' in a summary."""
    lines = text.splitlines()
    rules = [i for i, line in enumerate(lines) if line and set(line) == {"="}]
    return lines[rules[0] + 1:rules[1]]


def rows(text):
    """{layer label (stripped): (indent, output shape, params)} from a summary's table."""
    table = table_lines(text)
    out = {}
    for line in table:
        label_end = line.index(")") + 1
        rest = line[label_end:].rsplit(None, 1)
        out[line[:label_end].strip()] = (len(line) - len(line.lstrip()), rest[0].strip(), rest[1])
    return out


def test_vae_summary_shows_nested_models_and_the_sampler_shape(capsys):
    nn.clear_session()
    vae = V.VAE(seed=3)
    vae.summary()
    table = rows(capsys.readouterr().out)
    assert table == {"encoder (Functional)": (0, "[(None, 2), (None, 2)]", "69,076"),
                     "decoder (Functional)": (0, "(None, 28, 28, 1)", "65,089"),
                     "sampler (Sampler)": (0, "(None, 2)", "0")}
    vae.summary(expand_nested=True)
    out = capsys.readouterr().out
    table = rows(out)
    assert table["z_mean (Dense)"] == (2, "(None, 2)", "34")
    assert table["conv2d_transpose_1 (Conv2DTranspose)"] == (2, "(None, 28, 28, 32)", "18,464")
    assert table["sampler (Sampler)"][:2] == (0, "(None, 2)")
    assert len(table) == 3 + 6 + 5 and "Total params: 134,165" in out
    # Every row's columns line up, the longest label included.
    shape_columns = {re.match(r".*?\)\s+", line).end() for line in table_lines(out)}
    assert len(shape_columns) == 1


def test_summary_draws_nothing_from_the_random_generators(capsys):
    nn.set_seed(0)
    a = V.VAE()                    # the sampler's generator comes from the global one, later
    a.summary()
    capsys.readouterr()
    first = a.sampler.rng.standard_normal(4)
    after = nn.Dense(2)
    after.build((None, 3))         # and so does the next layer's
    nn.set_seed(0)
    b = V.VAE()
    np.testing.assert_array_equal(b.sampler.rng.standard_normal(4), first)
    after_b = nn.Dense(2)
    after_b.build((None, 3))
    np.testing.assert_array_equal(after.get_weights()[0], after_b.get_weights()[0])


def test_a_model_that_cannot_be_traced_keeps_question_marks(capsys):
    class Doubler(nn.Model):
        def __init__(self):
            super().__init__(name="doubler")
            self.dense = nn.Dense(3, input_shape=(4,), name="hidden")

        def call(self, x):
            return self.dense(x.numpy() * 2)   # needs a real array

    model = Doubler()
    model.summary()
    assert rows(capsys.readouterr().out)["hidden (Dense)"][1:] == ("?", "0")
    assert not model.dense.built
