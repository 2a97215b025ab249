"""Choosing the next token from a model's predicted distribution, as the book does.

Both editions reweight the distribution by a temperature T before one multinomial draw:
p_T(i) = exp(log p(i) / T) / sum_j exp(log p(j) / T). Low T sharpens the distribution towards
the most likely token (T -> 0 is greedy decoding), T = 1 leaves it unchanged, high T flattens it
towards uniform over the tokens the model thinks possible.

We follow the listings step for step (float64, log, divide by T, exp, normalise,
`rng.multinomial(1, p, 1)`, argmax), so that the same random state gives the same token as the
book, bit for bit: NumPy's multinomial draws one binomial per category and branches on p <= 0.5,
so even a one-ulp difference in p can change a draw. The listings break down in one place: with a
small T and a flat distribution, log(p) / T is so negative that every exp underflows (0 / 0).
Only then do we shift the log-probabilities by their maximum first, which changes nothing
mathematically. p = 0 entries give log 0 = -inf and stay exactly 0 at every temperature. log p <= 0,
so exp never overflows, even at T = 10.
"""
import numpy as np

# Below this the largest exp(log(p) / T) is subnormal or zero and normalising loses precision.
_SMALLEST_SAFE = 1e-250


def _as_distribution(p):
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"sampling: expected a 1-D distribution, got shape {p.shape}")
    total = p.sum()  # nan or inf anywhere makes the sum nan or inf
    if not (0 < total < np.inf) or p.min() < 0:
        raise ValueError("sampling: the distribution must be finite, non-negative and not all zero")
    return p


def reweight_distribution(original_distribution, temperature=0.5):
    """The book's `reweight_distribution`: p ** (1 / T), renormalised, in float64.

    temperature 0 (or None) gives the greedy limit: all mass on the most likely entry (the first
    one on a tie, as argmax picks).
    """
    p = _as_distribution(original_distribution)
    if temperature is None or temperature == 0:
        out = np.zeros_like(p)
        out[np.argmax(p)] = 1.0
        return out
    if not temperature > 0:
        raise ValueError(f"reweight_distribution: temperature must be >= 0, got {temperature}")
    if p.min() > 0:
        logits = np.log(p)
    else:
        logits = np.full_like(p, -np.inf)
        np.log(p, out=logits, where=p > 0)                 # log 0 = -inf, without a warning
    logits /= temperature
    distribution = np.exp(logits)
    if not distribution.max() > _SMALLEST_SAFE:
        # The book's formula underflows (or nearly, into subnormals): shift, so that the largest
        # entry becomes exp(0) = 1.
        distribution = np.exp(logits - logits.max())
    return distribution / np.sum(distribution)


def sample_next(predictions, temperature=1.0, rng=None):
    """One token id drawn from `predictions` reweighted by `temperature` (the book's `sample()`).

    rng: a numpy Generator or RandomState (default: the global `np.random`, as in the book). The
    same rng state gives the same draw as the book's listing. temperature 0 is greedy: argmax,
    no draw taken from rng.
    """
    if temperature is None or temperature == 0:
        return int(np.argmax(_as_distribution(predictions)))
    p = reweight_distribution(predictions, temperature)
    rng = np.random if rng is None else rng
    probas = rng.multinomial(1, p, 1)
    return int(np.argmax(probas))


def entropy(p):
    """Shannon entropy in nats (0 log 0 = 0), for tests and reports."""
    p = np.asarray(p, dtype=np.float64)
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())
