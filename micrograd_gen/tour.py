"""The tour: the whole chapter, on whatever this machine has, in about five minutes on 2 cores.

Always (no network, no GPU, no downloaded file needed):
- a character LSTM trained on the Python standard library's own source, sampled at four
  temperatures so the effect of temperature is visible;
- a denoising autoencoder trained on digits the tour draws itself with Pillow's font.
When the data is there (or downloadable):
- a short VAE on MNIST with its latent grid;
- a small DeepDream (InceptionV3) and a small style transfer (VGG19) with the pretrained weights.
Each part is timed; a part that cannot run says why and what would enable it, and the summary
table at the end lists them all.
"""
import time
import traceback
from pathlib import Path

import numpy as np

TEMPERATURES = (0.2, 0.5, 1.0, 1.2)


class Skip(Exception):
    """A part that cannot run here; the message says what would enable it."""


class Part:
    def __init__(self, name, run, budget, quick_budget):
        self.name, self.run, self.budget, self.quick_budget = name, run, budget, quick_budget
        self.status, self.seconds, self.output, self.note = "", 0.0, "", ""


# ---- the parts -----------------------------------------------------------------------------------
def char_lstm_part(out, seconds, quick, log):
    from .callbacks import HistoryWriter
    from .data.text import python_stdlib_corpus
    from .generative.char_lstm import generate_text, train_char_lstm

    text = python_stdlib_corpus(max_chars=200_000 if quick else 1_000_000).lower()
    log(f"char LSTM: {len(text):,} characters of the standard library's source, "
        f"training for {seconds:.0f} s")
    curves = HistoryWriter(out / "char_lstm")
    run = train_char_lstm(text, epochs=1000, max_seconds=seconds, log=log, progress=True,
                          callbacks=(curves,))
    losses = run.history.step_losses
    rng = np.random.default_rng(0)
    start = int(rng.integers(0, len(text) - 61))
    prompt = text[start:start + 60]
    length = 120 if quick else 300
    lines = [f"prompt: {prompt!r}", ""]
    for temperature in TEMPERATURES:
        sample = generate_text(run.model, run.vocab, prompt, length, temperature, rng)
        lines += [f"--- temperature {temperature} ---", prompt + sample, ""]
    report = "\n".join(lines)
    log(report)
    path = out / "char_lstm_samples.txt"
    _write_text(path, report)
    loss = f"loss {losses[-1]:.2f}; " if len(losses) else ""
    return path, f"{loss}loss curve {curves.folder / 'history.png'}"


def synthetic_digits(n, seed=0):
    """Digits 0-9 drawn with Pillow's own font, jittered in size, position, angle and stroke:
    MNIST-like pictures that every machine can make, (n, 28, 28) uint8, with their labels."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    fonts = {size: ImageFont.load_default(size=size) for size in range(32, 45, 3)}
    images = np.empty((n, 28, 28), np.uint8)
    labels = rng.integers(0, 10, n)
    for i in range(n):
        canvas = Image.new("L", (56, 56), 0)
        draw = ImageDraw.Draw(canvas)
        font = fonts[int(rng.choice(list(fonts)))]
        text = str(labels[i])
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x = 28 - (left + right) / 2 + rng.normal(0, 1.5)
        y = 28 - (top + bottom) / 2 + rng.normal(0, 1.5)
        draw.text((x, y), text, fill=255, font=font, stroke_width=int(rng.integers(1, 3)),
                  stroke_fill=255)
        canvas = canvas.rotate(rng.normal(0, 10), resample=Image.BILINEAR)
        images[i] = np.asarray(canvas.resize((28, 28), Image.BILINEAR))
    return images, labels


def denoise_part(out, seconds, quick, log):
    from .generative.denoise import evaluate_denoiser, save_denoise_grid, train_denoiser

    digits, _ = synthetic_digits(2000 if quick else 6000)
    train, test = digits[:-16], digits[-16:]
    log(f"denoising autoencoder: {len(train):,} drawn digits, training for {seconds:.0f} s")
    model, _ = train_denoiser(train, epochs=100, max_seconds=seconds, log=log,
                              history_dir=out / "denoise")
    scores = evaluate_denoiser(model, test)
    path = save_denoise_grid(model, test, out / "denoise.png")
    return path, (f"BCE/pixel noisy {scores['noisy_bce']:.3f} -> denoised "
                  f"{scores['denoised_bce']:.3f}; loss curves {out / 'denoise' / 'history.png'}")


def vae_part(out, seconds, quick, log):
    from .data.mnist import load_mnist
    from .download import DownloadError
    from .generative.vae import evaluate_vae, save_latent_grid, train_vae

    try:
        (x_train, _), (x_test, _) = load_mnist()
    except (DownloadError, FileNotFoundError, OSError) as e:
        log(f"VAE: {_first_line(e)}")
        raise Skip("no MNIST here: set MICROGRAD_GEN_DATA to a folder with mnist/, or run "
                   "once with a network (it downloads mnist.npz, 11 MB)") from None
    log(f"VAE: {len(x_train):,} MNIST digits, training for {seconds:.0f} s")
    (out / "vae").mkdir(exist_ok=True)
    vae, history = train_vae(x_train, epochs=100, max_seconds=seconds, log=log,
                             checkpoint_path=out / "vae" / "vae.h5")
    recon = evaluate_vae(vae, x_test[:2000])["reconstruction_loss"]
    path = save_latent_grid(vae.decoder, out / "vae_grid.png", n=15 if quick else 30)
    return path, (f"{len(history)} epoch(s), test reconstruction {recon:.1f} (BCE over 784 "
                  f"pixels); loss curves {out / 'vae' / 'history.png'}")


def _pretrained(name, log):
    """A path for the named weights: cache, local copies, 8-bit archive, or a download."""
    from . import weights
    from .download import DownloadError

    try:
        return weights.resolve(name, "imagenet", log=log)
    except DownloadError as e:
        log(f"{name}: {_first_line(e)}")
        raise Skip(f"no {name} weights: `python -m micrograd_gen weights fetch {name}` with a "
                   "network, or set MICROGRAD_GEN_WEIGHTS (or MICROGRAD_GEN_DATA) to a folder "
                   "that has them") from None


def _picture(name, size, seed):
    """A picture from $MICROGRAD_GEN_DATA/images, or, with none, a colourful one made here."""
    from .data.images import load_image
    from .download import shared_data_dir

    data = shared_data_dir()
    if data is not None and (data / "images" / name).is_file():
        return load_image(data / "images" / name, target_size=size), name
    h, w = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    waves = [np.sin(2 * np.pi * (f * xx + g * yy) + p)
             for f, g, p in rng.uniform([1, 1, 0], [6, 6, 6], (3, 3))]
    return (127.5 + 120 * np.stack(waves, -1)).astype(np.float32), "made-up waves"


def dream_part(out, seconds, quick, log):
    from .data.images import save_image
    from .generative.deepdream import deep_dream

    path = _pretrained("inception_v3_notop", log)
    size = (180, 270) if quick else (240, 360)
    image, source = _picture("coffee.png", size, seed=1)
    octaves, iterations = (2, 4) if quick else (3, 20)
    log(f"DeepDream on {source} at {size[0]}x{size[1]}: {octaves} octaves x {iterations} steps")
    dream = deep_dream(image, weights=str(path), octaves=octaves, iterations=iterations,
                       callback=_dream_progress(log))
    target = out / "dream.png"
    save_image(target, dream)
    return target, f"{source}, {octaves}x{iterations} steps"


def _dream_progress(log):
    def callback(s):  # a DreamStep
        log(f"  dream octave {s.octave}/{s.octaves} {s.shape[0]}x{s.shape[1]}  step "
            f"{s.step}/{s.iterations}  loss {s.loss:.3f}  {s.seconds:.2f} s/step")
    return callback


def style_part(out, seconds, quick, log):
    from .data.images import save_image
    from .generative.style_transfer import style_transfer

    path = _pretrained("vgg19_notop", log)
    height = 64 if quick else 128
    content, content_name = _picture("tubingen.jpg", (height, height * 3 // 2), seed=2)
    style, style_name = _picture("starry_night.jpg", (height, height * 3 // 2), seed=3)
    rounds = 1 if quick else 3
    log(f"style transfer: {content_name} in the style of {style_name}, {height} px high, "
        f"{rounds} L-BFGS rounds of 20 evaluations")
    result = style_transfer(
        content, style, height=height, optimizer="lbfgs", iterations=rounds, weights=str(path),
        callback=lambda s: log(f"  style round {s.iteration}/{s.iterations}  loss {s.loss:.4g}  "
                               f"{s.seconds:.2f} s"))
    target = out / "style.png"
    save_image(target, result)
    return target, f"{content_name} + {style_name}, {rounds} L-BFGS rounds"


# ---- running and reporting ---------------------------------------------------------------------
PARTS = [
    # name, function, seconds of training (normal, --quick)
    ("char LSTM on the stdlib", char_lstm_part, 120, 12),
    ("denoising autoencoder", denoise_part, 60, 6),
    ("VAE on MNIST", vae_part, 45, 6),
    ("DeepDream (InceptionV3)", dream_part, 0, 0),
    ("style transfer (VGG19)", style_part, 0, 0),
]


def run_tour(out="out/tour", quick=False, log=print):
    from . import fastpath
    if fastpath.enabled():   # a whole run, as the command line's: reuse freed arrays' pages
        from . import accel
        accel.keep_freed_memory()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts = [Part(*p) for p in PARTS]
    started = time.perf_counter()
    for part in parts:
        log(f"\n=== {part.name} ===")
        t0 = time.perf_counter()
        try:
            output, note = part.run(out, part.quick_budget if quick else part.budget, quick, log)
            part.status, part.output, part.note = "ran", str(output), note
        except Skip as e:
            part.status, part.note = "skipped", str(e)
        except KeyboardInterrupt:
            part.status, part.note = "stopped", "interrupted (Ctrl-C)"
            part.seconds = time.perf_counter() - t0
            log(_table(parts, time.perf_counter() - started))
            raise
        except Exception as e:  # noqa: BLE001  one broken part must not hide the others
            part.status, part.note = "failed", f"{type(e).__name__}: {_first_line(e)}"
            log(traceback.format_exc())
        part.seconds = time.perf_counter() - t0
        log(f"{part.name}: {part.status} in {part.seconds:.0f} s  {part.note}")
    table = _table(parts, time.perf_counter() - started)
    log("\n" + table)
    _write_text(out / "summary.txt", table + "\n")
    return parts


def _table(parts, total):
    rows = [("part", "status", "time", "output", "notes / how to enable")]
    for p in parts:
        rows.append((p.name, p.status or "not run", f"{p.seconds:.0f} s", p.output or "-", p.note))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    lines.insert(1, "-" * min(120, max(len(line) for line in lines)))
    lines.append(f"total {total:.0f} s")
    return "\n".join(lines)


def _first_line(e):
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _write_text(path, text):
    from .download import atomic_write
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
