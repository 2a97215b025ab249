"""Loss curves as a picture, drawn with Pillow (no plotting library needed).

    save_history_plot("history.png", {"epoch": [1, 2, 3], "loss": [..], "val_loss": [..]},
                      steps={"loss": [one value per step]})

One row per logged series: on the left its value at each epoch's end (val_<name> drawn in the same
panel as <name>), on the right, when the run has more steps than epochs, its value at every step
with the mean over a sliding window drawn over it. Ticks fall on round numbers (1, 2, 5 x 10^k).
"""
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .download import atomic_write

PANEL_W, PANEL_H = 640, 300
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 80, 20, 36, 50
COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
GRID, INK, FAINT = (225, 225, 225), (30, 30, 30), (170, 190, 220)


def nice_ticks(low, high, count=5, integer=False):
    """About `count` round values covering [low, high] (whole numbers only with integer=True)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0]
    if high <= low:
        high = low + (abs(low) * 0.1 or 1.0)
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1, round(step))
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 0.5:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _label(value, step):
    if step >= 1 and float(value).is_integer():
        return f"{int(value):,}"
    digits = max(0, -int(math.floor(math.log10(step))))
    return f"{value:.{digits}f}"


def _panel(draw, font, small, box, title, series, xlabel):
    """Draw `series` [(name, xs, ys, color, width)] in box (left, top, right, bottom)."""
    left, top, right, bottom = box
    x0, y0 = left + MARGIN_L, top + MARGIN_T
    x1, y1 = right - MARGIN_R, bottom - MARGIN_B
    finite = [(x, y) for _, xs, ys, _, _ in series for x, y in zip(xs, ys) if math.isfinite(y)]
    draw.text((left + MARGIN_L, top + 8), title, fill=INK, font=font)
    if not finite:
        draw.text((x0 + 10, (y0 + y1) // 2), "no finite values", fill=INK, font=small)
        return
    xs_all, ys_all = [p[0] for p in finite], [p[1] for p in finite]
    x_ticks = nice_ticks(min(xs_all), max(xs_all), integer=True)
    y_ticks = nice_ticks(min(ys_all), max(ys_all))
    x_lo, x_hi = min(x_ticks[0], min(xs_all)), max(x_ticks[-1], max(xs_all))
    y_lo, y_hi = min(y_ticks[0], min(ys_all)), max(y_ticks[-1], max(ys_all))
    x_hi = x_hi if x_hi > x_lo else x_lo + 1
    y_hi = y_hi if y_hi > y_lo else y_lo + 1

    def px(x):
        return x0 + (x - x_lo) / (x_hi - x_lo) * (x1 - x0)

    def py(y):
        return y1 - (y - y_lo) / (y_hi - y_lo) * (y1 - y0)

    x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 1
    y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1
    for t in y_ticks:
        y = py(t)
        draw.line([(x0, y), (x1, y)], fill=GRID)
        text = _label(t, y_step)
        w = draw.textlength(text, font=small)
        draw.text((x0 - 8 - w, y - 8), text, fill=INK, font=small)
    for t in x_ticks:
        x = px(t)
        draw.line([(x, y0), (x, y1)], fill=GRID)
        text = _label(t, x_step)
        w = draw.textlength(text, font=small)
        draw.text((x - w / 2, y1 + 6), text, fill=INK, font=small)
    draw.rectangle([x0, y0, x1, y1], outline=INK)
    w = draw.textlength(xlabel, font=small)
    draw.text(((x0 + x1) / 2 - w / 2, y1 + 26), xlabel, fill=INK, font=small)
    legend_x = x1
    for name, xs, ys, color, width in reversed(series):
        points = [(px(x), py(y)) for x, y in zip(xs, ys) if math.isfinite(y)]
        if len(points) > 1:
            draw.line(points, fill=color, width=width, joint="curve")
        if len(points) <= 30:
            for x, y in points:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        w = draw.textlength(name, font=small)
        legend_x -= w + 26
        draw.line([(legend_x, top + 18), (legend_x + 16, top + 18)], fill=color, width=3)
        draw.text((legend_x + 20, top + 10), name, fill=INK, font=small)


def _moving_mean(values, window):
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def history_figure(epochs, steps=None):
    """The figure as a PIL image. epochs: {"epoch": [...], name: [one value per epoch]};
    steps: {name: [one value per step]} or None."""
    steps = {k: v for k, v in (steps or {}).items() if v}
    epoch_numbers = list(epochs.get("epoch") or range(1, 1 + max(
        (len(v) for k, v in epochs.items() if k != "epoch"), default=0)))
    names = [k for k in epochs if k != "epoch" and not k.startswith("val_")]
    names += [k[4:] for k in epochs if k.startswith("val_") and k[4:] not in names]
    names += [k for k in steps if k not in names]
    show_steps = any(len(v) > len(epoch_numbers) for v in steps.values())
    columns = 2 if show_steps else 1
    rows = max(1, len(names))
    image = Image.new("RGB", (PANEL_W * columns, PANEL_H * rows), "white")
    draw = ImageDraw.Draw(image)
    font, small = ImageFont.load_default(size=18), ImageFont.load_default(size=15)
    for row, name in enumerate(names):
        top = row * PANEL_H
        series = []
        for k, color in ((name, COLORS[0]), (f"val_{name}", COLORS[1])):
            if k in epochs:
                values = [float(v) for v in epochs[k]]
                series.append((k, epoch_numbers[-len(values):], values, color, 3))
        _panel(draw, font, small, (0, top, PANEL_W, top + PANEL_H), f"{name} per epoch",
               series, "epoch")
        if show_steps and name in steps:
            values = [float(v) for v in steps[name]]
            xs = list(range(1, len(values) + 1))
            window = max(1, len(values) // 50)
            smoothed = window > 1   # the raw values faint under their sliding mean
            series = [(name, xs, values, FAINT if smoothed else COLORS[0], 1 if smoothed else 2)]
            if smoothed:
                series.append((f"mean of {window}", xs, _moving_mean(values, window), COLORS[0],
                               2))
            _panel(draw, font, small, (PANEL_W, top, 2 * PANEL_W, top + PANEL_H),
                   f"{name} per step", series, "step")
    return image


def save_history_plot(path, epochs, steps=None):
    """Write history_figure(...) as a PNG, through a temporary file renamed into place."""
    image = history_figure(epochs, steps)
    return atomic_write(Path(path), lambda tmp: image.save(tmp))
