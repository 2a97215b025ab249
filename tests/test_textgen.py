"""Text generation (issue 8): sampling, the char LSTM, the Transformer LM, checkpoints, the CLI."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from micrograd_gen.generative.text_sampling import entropy, reweight_distribution, sample_next


# ---- sampling -------------------------------------------------------------------------------

def _distributions(min_size=1, max_size=30):
    # Weights with some exact zeros, normalised: what a float32 softmax can produce.
    weights = hnp.arrays(np.float64, st.integers(min_size, max_size),
                         elements=st.one_of(st.just(0.0), st.floats(1e-30, 1.0)))
    return weights.filter(lambda w: w.sum() > 0).map(lambda w: w / w.sum())


temperatures = st.floats(0.01, 10.0)


def book_sample(preds, temperature, rng):
    """The first edition's `sample()` verbatim (with rng for np.random)."""
    preds = np.asarray(preds).astype("float64")
    preds = np.log(preds) / temperature
    exp_preds = np.exp(preds)
    preds = exp_preds / np.sum(exp_preds)
    probas = rng.multinomial(1, preds, 1)
    return np.argmax(probas)


@settings(max_examples=200, deadline=None)
@given(_distributions(), temperatures)
def test_reweight_is_a_distribution(p, t):
    q = reweight_distribution(p, t)
    assert q.shape == p.shape and np.all(np.isfinite(q)) and np.all(q >= 0)
    assert abs(q.sum() - 1) < 1e-12
    assert np.all(q[p == 0] == 0)         # impossible tokens stay impossible at any temperature


@settings(max_examples=200, deadline=None)
@given(_distributions(), temperatures, temperatures)
def test_lower_temperature_never_raises_entropy(p, t1, t2):
    low, high = sorted((t1, t2))
    assert entropy(reweight_distribution(p, low)) <= entropy(reweight_distribution(p, high)) + 1e-9


@settings(max_examples=100, deadline=None)
@given(_distributions())
def test_temperature_one_returns_p(p):
    np.testing.assert_allclose(reweight_distribution(p, 1.0), p, rtol=1e-12, atol=1e-300)


@settings(max_examples=100, deadline=None)
@given(_distributions(min_size=2), st.integers(0, 2**32 - 1))
def test_greedy_is_the_limit(p, seed):
    greedy = reweight_distribution(p, 0)
    assert greedy[np.argmax(p)] == 1 and greedy.sum() == 1
    assert sample_next(p, 0, np.random.default_rng(seed)) == int(np.argmax(p))
    top = np.sort(p)[-2:]
    if top[1] > top[0] * 1.01:  # a clear winner: T = 0.01 raises the ratio to at least 1.01**100
        assert reweight_distribution(p, 0.01)[np.argmax(p)] > 0.5


@settings(max_examples=100, deadline=None)
@given(_distributions(min_size=2).filter(lambda p: p.min() > 1e-6), st.sampled_from([0.2, 0.5, 1.0, 1.5]),
       st.integers(0, 2**32 - 1))
def test_sample_next_draws_as_the_book(p, t, seed):
    # Same RandomState, same draw as the listing (the max shift changes rounding only).
    ours = sample_next(p, t, np.random.RandomState(seed))
    assert ours == book_sample(p, t, np.random.RandomState(seed))


def test_sample_next_frequencies():
    p = np.array([0.5, 0.3, 0.2, 0.0])
    rng = np.random.default_rng(0)
    counts = np.bincount([sample_next(p, 1.0, rng) for _ in range(4000)], minlength=4)
    np.testing.assert_allclose(counts / 4000, p, atol=0.03)
    assert counts[3] == 0


def test_sampling_rejects_bad_input():
    with pytest.raises(ValueError, match="temperature"):
        reweight_distribution([0.5, 0.5], -1)
    with pytest.raises(ValueError, match="distribution"):
        reweight_distribution([0.0, 0.0], 1.0)
    with pytest.raises(ValueError, match="1-D"):
        sample_next(np.ones((2, 2)) / 4)
