"""The fast max and average pooling (reference: ops/pool.py, same numbers).

Forward: max and sum are separable, so the window reduction goes along the rows first and then
down the columns: kh + kw - 2 passes instead of kh * kw - 1, in bands of rows small enough
to stay in cache. Average pooling's backward is that forward's adjoint: at stride 1 the same
window sum over the padded share, otherwise its two steps in reverse.

Where max pooling's windows overlap (InceptionV3's 3x3 / 2) and the input needs a gradient, the
forward also keeps each window's first maximal cell, found by the same two separable passes, and
backward is one scatter-add of g into those cells. Otherwise backward walks the kh * kw taps as
the reference does, into preallocated masks, and where windows do not overlap it writes each cell
once instead of adding into zeros; where they tile the input (VGG's 2x2 / 2) it reads the input
as windows and takes whole bands at once.
It runs between convolutions that use both cores, so large ones are cut into bands of rows over
the worker threads.
"""
from collections import namedtuple

import numpy as np

from .. import fastpath
from ..backend import get_array_module
from .workers import chunk_pool, even_cuts, for_chunks

# Pooling (forward, and max pooling's backward) is cut into bands of output rows over the worker
# threads when the output is this large,
_PARALLEL_BYTES = 1 << 19
# and into bands of about this much output on any thread, so that a band's passes over what it
# reads and writes stay in the core's cache (a 3x3 window sum at 46x71x192: 0.89 ms in 2 bands,
# 0.51 ms in 4).
_BAND_BYTES = 1 << 19


def _bands(geom, nbytes, xp):
    """[(first, stop)] output rows of each band. A band of r rows writes kh - sh input rows into
    the next one's, so that max pooling's backward can run every other band at once, bands are
    at least (kh - sh) / sh rows."""
    rows = geom.OH
    if xp is not np:
        return [(0, rows)]
    count = nbytes // _BAND_BYTES
    if nbytes >= _PARALLEL_BYTES and rows >= 4:
        count = max(count, 2 * chunk_pool()[1])
    shortest = max(1, -(-(geom.kh - geom.sh) // geom.sh))
    return even_cuts(rows, max(1, min(count, rows // shortest)))


def _column_taps(geom, xpad):
    """Views of xpad (N, Hp, OW, C), one per window column offset b."""
    for b in range(geom.kw):
        yield xpad[:, :, b:b + (geom.OW - 1) * geom.sw + 1:geom.sw]


def _row_taps(geom, rows):
    """Views of rows (N, Hp, OW, C) with the output's shape, one per window row offset a."""
    for a in range(geom.kh):
        yield rows[:, a:a + (geom.OH - 1) * geom.sh + 1:geom.sh]


def _separable(geom, xpad, combine):
    """The window reduction (combine = maximum or add) along rows, then down columns; large
    inputs in bands of output rows over the worker threads (it runs between convolutions that
    use both cores)."""
    xp = get_array_module(xpad)
    N, _, _, C = geom.padded
    out = xp.empty((N, geom.OH, geom.OW, C), xpad.dtype)

    def band(rows, slot):
        i0, i1 = rows
        xrows = xpad[:, i0 * geom.sh:(i1 - 1) * geom.sh + geom.kh]     # the rows it reads
        # the first two views combine straight into the result: no pass to copy the first
        columns = list(_column_taps(geom, xrows))
        along = columns[0] if len(columns) == 1 else combine(columns[0], columns[1])
        for view in columns[2:]:
            combine(along, view, out=along)
        rows = [along[:, a:a + (i1 - i0 - 1) * geom.sh + 1:geom.sh] for a in range(geom.kh)]
        target = out[:, i0:i1]
        if len(rows) == 1:
            target[...] = rows[0]
        else:
            combine(rows[0], rows[1], out=target)
        for view in rows[2:]:
            combine(target, view, out=target)
    for_chunks(_bands(geom, out.nbytes, xp), band, xp)
    return out


def max_pool2d_forward(xpad, geom, keep_route=False):
    """(y, route): route is where each window's first maximal cell is, kept only when asked for
    (the input needs a gradient) and windows overlap; otherwise None."""
    xp = get_array_module(xpad)
    overlap = geom.sh < geom.kh or geom.sw < geom.kw
    if keep_route and overlap and xp is np and max(geom.kh, geom.kw) < 256:   # uint8 offsets
        return _routed_max(geom, xpad)
    return _separable(geom, xpad, xp.maximum), None


def _routed_max(geom, xpad):
    """The separable max, keeping each window's first maximal cell (row-major, the reference's
    rule) as its index in xpad.reshape(-1), so that backward is one scatter-add of g.

    Why. Overlapping windows (InceptionV3's 3x3 / 2 pools) leave backward no cheaper way in NumPy
    than walking the nine taps, four or five whole-array passes each (13 ms at DeepDream's
    197x297x64; PyTorch's indexed kernel takes about 2). The reduction along the rows finds the
    first column holding each row's maximum, the one down the columns the first row holding the
    window's maximum: together its first maximal cell, for a few passes beside the max itself."""
    N, Hp, Wp, C = geom.padded
    y = np.empty((N, geom.OH, geom.OW, C), xpad.dtype)
    # int32 indices when they fit: half the bytes to write, and np.add.at takes them as they are
    index_type = np.int32 if N * Hp * Wp * C < 2 ** 31 else np.intp
    route = np.empty(y.shape, index_type)
    # where each window starts, but for its row: image n, column j * sw, channel c
    window_columns = np.add.outer(np.arange(geom.OW, dtype=index_type) * (geom.sw * C),
                                  np.arange(C, dtype=index_type))
    image_starts = np.arange(N, dtype=index_type)[:, None] * (Hp * Wp * C)

    def band(rows, slot):
        i0, i1 = rows
        xrows = xpad[:, i0 * geom.sh:(i1 - 1) * geom.sh + geom.kh]     # the rows it reads
        along, column, _ = _max_and_first(list(_column_taps(geom, xrows)))
        # down the columns, carrying each row's first maximal column along with it
        picked = slice(0, (i1 - i0 - 1) * geom.sh + 1, geom.sh)
        _, row, chosen_column = _max_and_first(
            [along[:, a:][:, picked] for a in range(geom.kh)], out=y[:, i0:i1],
            carried=[column[:, a:][:, picked] for a in range(geom.kh)])
        index = route[:, i0:i1]
        np.add((image_starts + np.arange(i0, i1, dtype=index_type) * (geom.sh * Wp * C))
               [:, :, None, None], window_columns, out=index)
        index += np.multiply(row, Wp * C, dtype=index_type)
        index += np.multiply(chosen_column, C, dtype=index_type)
    for_chunks(_bands(geom, y.nbytes, np), band, np)
    return y, route


def _max_and_first(views, out=None, carried=None):
    """(the maximum over views (into out, when given), the index of the first view holding it
    as uint8, and carried[that index] for uint8 arrays `carried` shaped like the views, or
    None)."""
    which = np.zeros(views[0].shape, np.uint8)
    pick = None if carried is None else carried[0].copy()
    if len(views) == 1:
        best = views[0].copy() if out is None else out
        best[...] = views[0]
        return best, which, pick
    later = which.view(bool)
    np.greater(views[1], views[0], out=later)               # strictly: a tie keeps the earlier
    best = np.maximum(views[0], views[1], out=out)
    if pick is not None:
        pick += later * (carried[1] - pick)                  # uint8 wraps: exact
    later = np.empty(best.shape, bool)
    for k in range(2, len(views)):
        np.greater(views[k], best, out=later)
        np.maximum(best, views[k], out=best)
        np.maximum(which, later * np.uint8(k), out=which)   # k only grows: max is "set to k"
        if pick is not None:
            pick += later * (carried[k] - pick)
    return best, which, pick


def avg_pool2d_forward(xpad, geom):
    return _separable(geom, xpad, get_array_module(xpad).add)


def max_pool2d_backward(g, xpad, y, geom, route=None):
    """The reference's first-maximal-cell rule. With the forward's route (overlapping windows),
    one scatter-add; else tap by tap, without a temporary per tap: large inputs are cut into bands
    of output rows over the worker threads; where windows overlap, a band writes k - s rows of
    the next band's cells too, so every other band runs first and the rest after."""
    xp = get_array_module(g)
    # A NaN window gets nothing, and a NaN or infinite g reaches every cell of its window (times
    # 0): the taps say so, the scatter would not. Either makes a sum NaN or infinite; so do an
    # infinite maximum and an overflow of finite sums, which then take the taps too: slower, not
    # wrong.
    if route is not None and np.isfinite(y.sum() + g.sum()):
        dxpad = np.zeros(geom.padded, g.dtype)
        # Where windows share a cell, the reference adds the later window's term first (its tap
        # comes earlier in row-major order), so the scatter runs backwards: the same sums, added
        # in the same order, to the last bit.
        np.add.at(dxpad.reshape(-1), route.reshape(-1)[::-1], g.reshape(-1)[::-1])
        return geom.crop(dxpad)
    if (geom.sh, geom.sw) == (geom.kh, geom.kw) and xp is np:
        return _tiled_max_pool2d_backward(g, xpad, y, geom)
    dxpad = xp.zeros(geom.padded, g.dtype)                       # (N, Hp, Wp, C)
    # Windows that do not overlap (stride >= pool) write their cells instead of adding into them.
    overlap = geom.sh < geom.kh or geom.sw < geom.kw

    def work(band, slot):
        i0, i1 = band
        rows = slice(i0 * geom.sh, (i1 - 1) * geom.sh + geom.kh)  # the input rows it reads
        y_band, g_band = y[:, i0:i1], g[:, i0:i1]
        taken = xp.zeros(y_band.shape, bool)                     # (N, rows, OW, C)
        hit = xp.empty(y_band.shape, bool)
        for view, dview in zip(_band_taps(geom, xpad[:, rows], i1 - i0),
                               _band_taps(geom, dxpad[:, rows], i1 - i0)):
            xp.equal(view, y_band, out=hit)
            xp.greater(hit, taken, out=hit)                       # hit and not taken
            taken |= hit
            if overlap:
                dview += g_band * hit
            else:
                xp.multiply(g_band, hit, out=dview)
    bands = _bands(geom, g.nbytes, xp)
    if geom.kh > geom.sh:                    # neighbouring bands share input rows
        for_chunks(bands[0::2], work, xp)
        for_chunks(bands[1::2], work, xp)
    else:
        for_chunks(bands, work, xp)
    return geom.crop(dxpad)


def _tiled_max_pool2d_backward(g, xpad, y, geom):
    """max_pool2d_backward where the windows tile the input (stride = pool, VGG's 2x2 / 2).

    The input, read as (N, OH, kh, OW, kw, C), holds every window along axes 2 and 4, so each
    band of rows takes three whole-band passes (compare with y, multiply by g, both broadcast
    over the window; the first-maximal rule in between on one-byte masks) instead of four per
    tap, and dX, every cell written, starts empty rather than zeroed: half the time of the taps
    for VGG19's pools at the style transfer's batch of 3 (bench/README.md)."""
    N, _, _, C = geom.padded
    kh, kw, OH, OW = geom.kh, geom.kw, geom.OH, geom.OW
    dxpad = np.empty(geom.padded, g.dtype)
    dxpad[:, OH * kh:] = 0                          # the rows and columns no window reaches
    dxpad[:, :OH * kh, OW * kw:] = 0
    # splitting an axis in two is always a view: writes through dx_windows land in dxpad
    x_windows = xpad[:, :OH * kh, :OW * kw].reshape(N, OH, kh, OW, kw, C)
    dx_windows = dxpad[:, :OH * kh, :OW * kw].reshape(N, OH, kh, OW, kw, C)

    def work(band, slot):
        i0, i1 = band
        hit = np.equal(x_windows[:, i0:i1], y[:, i0:i1, None, :, None, :])
        taken = hit[:, :, 0, :, 0].copy()
        for a in range(kh):
            for b in range(kw):
                if a or b:                            # the first maximal cell in row-major order
                    later = hit[:, :, a, :, b]
                    np.greater(later, taken, out=later)
                    taken |= later
        np.multiply(g[:, i0:i1, None, :, None, :], hit, out=dx_windows[:, i0:i1])
    for_chunks(_bands(geom, g.nbytes, np), work, np)
    return geom.crop(dxpad)


def _band_taps(geom, xrows, rows):
    """geom.taps for a band of `rows` output rows, on the input rows it reads."""
    for a in range(geom.kh):
        for b in range(geom.kw):
            yield xrows[:, a:a + (rows - 1) * geom.sh + 1:geom.sh,
                        b:b + (geom.OW - 1) * geom.sw + 1:geom.sw]


def avg_pool2d_backward(share, geom):
    """Spread each window's share over the cells it covers: the forward's adjoint.

    At stride 1 that adjoint is itself a window sum, of the share padded by k - 1 - (the
    forward's padding) on each side, so it runs as the forward does (separable, in bands of rows
    over the threads, no zeroed array to add into: InceptionV3's 3x3 'same' pools, 4x less CPU
    time, bench/README.md). Other strides spread the share over the row offsets (into an
    (N, Hp, OW, C) array), then over the column offsets: the separable forward's steps in
    reverse."""
    xp = get_array_module(share)
    if geom.sh == geom.sw == 1:
        N, H, W, C = geom.shape
        top, left = geom.kh - 1 - geom.pt, geom.kw - 1 - geom.pl
        spread = _Window(geom.kh, geom.kw, 1, 1, H, W, (N, H + geom.kh - 1, W + geom.kw - 1, C))
        padded = xp.zeros(spread.padded, share.dtype)
        padded[:, top:top + geom.OH, left:left + geom.OW] = share
        return _separable(spread, padded, xp.add)
    rows = xp.zeros(geom.padded[:2] + (geom.OW, geom.padded[3]), share.dtype)
    for view in _row_taps(geom, rows):
        view += share
    dx = xp.zeros(geom.padded, share.dtype)
    for view in _column_taps(geom, dx):
        view += rows
    return geom.crop(dx)


# The window sum that stride 1's backward runs: _separable reads only these of a geometry.
_Window = namedtuple("_Window", "kh kw sh sw OH OW padded")


fastpath.register("max_pool2d_forward", max_pool2d_forward)
fastpath.register("max_pool2d_backward", max_pool2d_backward)
fastpath.register("avg_pool2d_forward", avg_pool2d_forward)
fastpath.register("avg_pool2d_backward", avg_pool2d_backward)
