"""The fast max and average pooling (reference: ops/pool.py, same numbers).

Forward: max and sum are separable, so the window reduction goes along the rows first and then
down the columns: kh + kw - 2 whole-array passes instead of kh * kw - 1. Average pooling's
backward is that forward's adjoint, its two steps in reverse.

Max pooling's backward walks the kh * kw taps as the reference does, into preallocated masks,
and where windows do not overlap it writes each cell once instead of adding into zeros.
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
    """The reference's first-maximal-cell rule, tap by tap, without a temporary per tap."""
    xp = get_array_module(g)
    dxpad = xp.zeros(geom.padded, g.dtype)                       # (N, Hp, Wp, C)
    taken = xp.zeros(y.shape, bool)                              # (N, OH, OW, C)
    hit = xp.empty(y.shape, bool)
    # Windows that do not overlap (stride >= pool: VGG's 2x2 / 2) write their cells instead of
    # adding into them.
    overlap = geom.sh < geom.kh or geom.sw < geom.kw
    for view, dview in zip(geom.taps(xpad), geom.taps(dxpad)):
        xp.equal(view, y, out=hit)
        xp.greater(hit, taken, out=hit)                           # hit and not taken
        taken |= hit
        if overlap:
            dview += g * hit
        else:
            xp.multiply(g, hit, out=dview)
    return geom.crop(dxpad)


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
