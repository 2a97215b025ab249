"""argparse types that check what a user typed, so that a bad value stops the command before any
work with one line naming the flag and the accepted range:

    python -m micrograd_gen textgen: error: argument --epochs: must be a whole number from 1 to
    1000000, got '0'

0 and negative numbers never mean "use the default"; NaN and infinity are refused everywhere.
Every type raises argparse.ArgumentTypeError, which argparse prefixes with the flag's name.
"""
import argparse
import math


def _range_text(low, high, low_open=False):
    def fmt(x):
        return str(x) if isinstance(x, int) else f"{x:g}"
    if high is None:
        return f"> {fmt(low)}" if low_open else f">= {fmt(low)}"
    return f"in ({fmt(low)}, {fmt(high)}]" if low_open else f"from {fmt(low)} to {fmt(high)}"


def whole(low, high=None):
    """A whole number in [low, high] (high None: no upper bound)."""
    def convert(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"must be a whole number {_range_text(low, high)}, got {text!r}")
        return value
    convert.__name__ = f"whole number {_range_text(low, high)}"
    return convert


def number(low=None, high=None, low_open=False):
    """A finite number in [low, high], or (low, high] with low_open; low None: any finite."""
    def convert(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        above = low is None or value > low or (value == low and not low_open)
        ok = math.isfinite(value) and above and (high is None or value <= high)
        if not ok:
            where = "" if low is None and high is None else " " + _range_text(low, high, low_open)
            raise argparse.ArgumentTypeError(f"must be a finite number{where}, got {text!r}")
        return value
    convert.__name__ = "number"
    return convert


def auto_or(kind):
    """"auto" (None: the command picks, e.g. per model) or a value of the type `kind`."""
    def convert(text):
        if text == "auto":
            return None
        try:
            return kind(text)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{e} (or 'auto')") from None
    convert.__name__ = f"{kind.__name__} or 'auto'"
    return convert


def number_list(low=None, high=None, low_open=False):
    """Comma-separated numbers, each checked as `number(low, high, low_open)`; at least one."""
    one = number(low, high, low_open)

    def convert(text):
        items = [item.strip() for item in str(text).split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"give at least one number, got {text!r}")
        try:
            return [one(item) for item in items]
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"each item {e} (in {text!r})") from None
    convert.__name__ = "numbers"
    return convert


# The usual ones, with bounds that a run could take; beyond them a value is a typo or an attack.
FLOAT32_MAX = 3.4028234663852886e38            # the arrays are float32: larger is inf there
positive_int = whole(1, 10**6)
count = whole(0, 10**6)                          # 0 means "none" / "never", as each help says
seed = whole(0, 2**32 - 1)                       # what numpy.random.seed accepts
positive = number(0, None, low_open=True)        # > 0, finite
nonnegative = number(0)                          # >= 0, finite
learning_rate = number(0, 10, low_open=True)
seconds = number(0, None, low_open=True)
positive_float32 = number(0, FLOAT32_MAX, low_open=True)   # for steps and rates the run guards
