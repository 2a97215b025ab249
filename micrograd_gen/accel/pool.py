"""The fast max and average pooling (reference: ops/pool.py, same numbers).

Forward: max and sum are separable, so the window reduction goes along the rows first and then
down the columns: kh + kw - 2 whole-array passes instead of kh * kw - 1. Average pooling's
backward is that forward's adjoint, its two steps in reverse.

Max pooling's backward walks the kh * kw taps as the reference does, but a strided tap view
skips cells, and NumPy walks such views one pixel's channels at a time. Split into stride phases
(xpad[:, p::sh, q::sw], copied once), every tap is a block of whole rows of one phase instead.
"""
from .. import fastpath
from ..backend import get_array_module


def _column_taps(geom, xpad):
    """Views of xpad (N, Hp, OW, C), one per window column offset b."""
    for b in range(geom.kw):
        yield xpad[:, :, b:b + (geom.OW - 1) * geom.sw + 1:geom.sw]


def _row_taps(geom, rows):
    """Views of rows (N, Hp, OW, C) with the output's shape, one per window row offset a."""
    for a in range(geom.kh):
        yield rows[:, a:a + (geom.OH - 1) * geom.sh + 1:geom.sh]


def _separable(geom, xpad, combine):
    """The window reduction (combine = maximum or add) along rows, then down columns."""
    rows = None
    for view in _column_taps(geom, xpad):
        rows = view.copy() if rows is None else combine(rows, view, out=rows)
    out = None
    for view in _row_taps(geom, rows):
        out = view.copy() if out is None else combine(out, view, out=out)
    return out


def max_pool2d_forward(xpad, geom):
    return _separable(geom, xpad, get_array_module(xpad).maximum)


def avg_pool2d_forward(xpad, geom):
    return _separable(geom, xpad, get_array_module(xpad).add)


def max_pool2d_backward(g, xpad, y, geom):
    """The reference's first-maximal-cell rule, tap by tap, on the stride phases of xpad."""
    xp = get_array_module(g)
    sh, sw = geom.sh, geom.sw
    # Phases p >= kh (stride > pool) hold cells no window reads: their gradient stays 0.
    keys = [(p, q) for p in range(min(sh, geom.kh)) for q in range(min(sw, geom.kw))]
    if (sh, sw) == (1, 1):
        phases, dphases = {(0, 0): xpad}, {(0, 0): xp.zeros(geom.padded, g.dtype)}
    else:
        phases = {(p, q): xp.ascontiguousarray(xpad[:, p::sh, q::sw]) for p, q in keys}
        dphases = {k: xp.zeros_like(phase) for k, phase in phases.items()}
    taken = xp.zeros(y.shape, bool)
    hit = xp.empty(y.shape, bool)
    # Windows that do not overlap (stride >= pool) can write their cells instead of adding.
    overlap = sh < geom.kh or sw < geom.kw
    for a in range(geom.kh):
        for b in range(geom.kw):
            key, r, c = (a % sh, b % sw), a // sh, b // sw
            x_view = phases[key][:, r:r + geom.OH, c:c + geom.OW]
            dx_view = dphases[key][:, r:r + geom.OH, c:c + geom.OW]
            xp.equal(x_view, y, out=hit)
            xp.greater(hit, taken, out=hit)                   # hit and not taken
            taken |= hit
            if overlap:
                dx_view += g * hit
            else:
                xp.multiply(g, hit, out=dx_view)
    if (sh, sw) == (1, 1):
        return geom.crop(dphases[0, 0])
    dx = (xp.empty if len(keys) == sh * sw else xp.zeros)(geom.padded, g.dtype)
    for (p, q), dphase in dphases.items():
        dx[:, p::sh, q::sw] = dphase
    return geom.crop(dx)


def avg_pool2d_backward(share, geom):
    """Spread each window's share over its row offsets (into an (N, Hp, OW, C) array), then
    over its column offsets: the separable forward's steps in reverse."""
    xp = get_array_module(share)
    rows = xp.zeros(geom.padded[:2] + (geom.OW, geom.padded[3]), share.dtype)
    for view in _row_taps(geom, rows):
        view += share
    dx = xp.zeros(geom.padded, share.dtype)
    for view in _column_taps(geom, dx):
        view += rows
    return geom.crop(dx)


fastpath.register("max_pool2d_forward", max_pool2d_forward)
fastpath.register("max_pool2d_backward", max_pool2d_backward)
fastpath.register("avg_pool2d_forward", avg_pool2d_forward)
fastpath.register("avg_pool2d_backward", avg_pool2d_backward)
