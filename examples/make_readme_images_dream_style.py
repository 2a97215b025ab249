"""Make the README's DeepDream and style-transfer pictures in docs/images/ (JPEG, 512 to 600 px
wide, where a dream's or a brush stroke's detail reads), from the pictures in
../shared/data/images and the real weights:

    python examples/make_readme_images_dream_style.py --work /tmp/readme_dream_style   # all
    python examples/make_readme_images_dream_style.py --only dream --only style

dream              chelsea.png at 400 px (longer side), the book's settings (InceptionV3, mixed4..7
                   weighted 1, 1.5, 2, 2.5, 3 octaves of 1.4 x 30 steps of 20) but no max_loss:
                   with the shared weights (a fine-tuned InceptionV3, not ImageNet's) the loss
                   passes 15 within a few steps, so the book's early stop leaves a faint dream
                   -> docs/images/dream_chelsea.png
dream_book         golden_gate.jpg at 600 px with the book's settings exactly, max_loss 15
                   included -> docs/images/dream_golden_gate_book.png
dream_vgg19        coffee.png at 512 px, VGG19 block2_conv2 (a low layer: geometric patterns),
                   2 octaves x 20 steps
                   -> docs/images/dream_vgg19_coffee.png
style              tubingen.jpg in the manner of starry_night.jpg at height 384, L-BFGS,
                   --style-rounds rounds of 20 evaluations (the 1st edition does 20)
                   -> docs/images/style_tubingen_starry_night.png
fast_style         a transformation network trained for starry_night.jpg on random crops of
                   the shared pictures (--fast-steps at 128x128, the CPU default network), then
                   applied to tubingen.jpg in one pass -> docs/images/fast_style_tubingen.png;
                   the trained model stays in --work, and a rerun continues its training

Each result is written full size into --work (PNG) and, at most 640 px, as a JPEG (quality 90:
a photo-like picture is a few hundred KB as PNG, about 100 KB as JPEG) into docs/images; a
summary (settings, losses, seconds) goes to --work/summary_dream_style.json. Only outputs are
written into the repository, never the input pictures or the weights.

Data: $MICROGRAD_GEN_DATA, else ../shared/data beside the repository. Weights: the two Keras files
in $MICROGRAD_GEN_WEIGHTS, else made with ../shared/tools/make_weights_h5.py into --work.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from micrograd_gen.cli.dream import load_picture  # noqa: E402
from micrograd_gen.generative import deepdream, fast_style, style_transfer  # noqa: E402

IMAGES = ROOT / "docs" / "images"
SHARED = ROOT.parent / "shared"
VGG_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
INCEPTION_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
PARTS = ["dream", "dream_book", "dream_vgg19", "style", "fast_style"]


def log(line):
    print(line, flush=True)


def weight_dir(work):
    env = os.environ.get("MICROGRAD_GEN_WEIGHTS")
    if env and all((Path(env) / f).is_file() for f in (VGG_FILE, INCEPTION_FILE)):
        return Path(env)
    out = work / "weights"
    if not all((out / f).is_file() for f in (VGG_FILE, INCEPTION_FILE)):
        subprocess.run([sys.executable, str(SHARED / "tools" / "make_weights_h5.py"), str(out)],
                       check=True)
    return out


def publish(picture, name, work):
    """Save full size in work/ as PNG, and at most 640 px in docs/images/ as JPEG."""
    img = Image.fromarray(np.asarray(picture, np.uint8))
    img.save(work / name)
    img.thumbnail((640, 640), Image.LANCZOS)
    IMAGES.mkdir(parents=True, exist_ok=True)
    shown = IMAGES / (Path(name).stem + ".jpg")
    partial = shown.with_name(shown.name + ".partial")
    img.save(partial, format="JPEG", quality=90, optimize=True)
    os.replace(partial, shown)
    log(f"wrote {shown} ({img.size[0]}x{img.size[1]}, {shown.stat().st_size // 1024} KB) "
        f"and {work / name}")
    return {"file": f"docs/images/{shown.name}", "size": list(img.size)}


def make_dream(images, weights, work, source, size, max_loss, name):
    picture = load_picture(images / source, size)
    losses = []
    started = time.perf_counter()
    out = deepdream.deep_dream(picture, weights=str(weights / INCEPTION_FILE), max_loss=max_loss,
                               callback=lambda s: losses.append((s.octave, s.step, s.loss)))
    info = publish(out, name, work)
    last = {o: (s, round(loss, 3)) for o, s, loss in losses}
    return {**info, "input": f"{source} at {size} px",
            "seconds": round(time.perf_counter() - started, 1),
            "settings": "InceptionV3 mixed4..7 (1, 1.5, 2, 2.5), 3 octaves x 30 steps of 20, "
                        f"max_loss {max_loss}",
            "last_step_and_loss_per_octave": last}


def make_dream_vgg19(images, weights, work):
    picture = load_picture(images / "coffee.png", 512)
    started = time.perf_counter()
    out = deepdream.deep_dream(picture, model="vgg19", weights=str(weights / VGG_FILE),
                               layer_weights={"block2_conv2": 1.0}, octaves=2, iterations=20,
                               max_loss=None)
    info = publish(out, "dream_vgg19_coffee.png", work)
    return {**info, "input": "coffee.png at 512 px",
            "seconds": round(time.perf_counter() - started, 1),
            "settings": "VGG19 block2_conv2, 2 octaves x 20 steps of 20*127.5/4 (the default)"}


def make_style(images, weights, work, rounds):
    rows = []
    started = time.perf_counter()

    def on_round(s):
        rows.append({"round": s.iteration, "loss": round(s.loss, 1), "seconds": round(s.seconds, 1),
                     **{k: round(v, 1) for k, v in s.parts.items()}})
        log(f"style round {s.iteration}/{s.iterations}: loss {s.loss:.5g} {s.parts} "
            f"{s.seconds:.1f} s")

    out = style_transfer.style_transfer(images / "tubingen.jpg", images / "starry_night.jpg",
                                        height=384, optimizer="lbfgs", iterations=rounds,
                                        weights=str(weights / VGG_FILE), callback=on_round)
    info = publish(out, "style_tubingen_starry_night.png", work)
    return {**info, "seconds": round(time.perf_counter() - started, 1),
            "settings": f"height 384, L-BFGS {rounds} rounds of 20 evaluations, book's weights",
            "rounds": rows}


def make_fast_style(images, weights, work, steps):
    model = work / "fast_style_starry.h5"
    net = optimizer = None
    start = 0
    if model.is_file():
        net, payload, _ = fast_style.read_model(model)
        from micrograd_gen.optim import Adam
        optimizer = Adam(net.trainable_weights, learning_rate=1e-3)
        optimizer.set_state(payload["optimizers"]["adam"])
        start = int(payload["step"])
    rows = []
    started = time.perf_counter()

    def on_step(s):
        rows.append(s.loss)
        if s.step % 25 == 0 or s.step == s.steps:
            log(f"fast style step {s.step}/{s.steps}: loss {s.loss:.4g} {s.parts} {s.seconds:.1f} s")
            fast_style.save_model(model, s.net, s.optimizer, step=s.step)

    if start < steps:
        net, optimizer = fast_style.train_style(
            images / "starry_night.jpg", images, size=128, batch_size=2, steps=steps,
            weights=str(weights / VGG_FILE), callback=on_step, net=net, optimizer=optimizer,
            start_step=start)
    content = load_picture(images / "tubingen.jpg", 512)
    out = fast_style.stylize(net, content)
    info = publish(out, "fast_style_tubingen.png", work)
    return {**info, "seconds_this_run": round(time.perf_counter() - started, 1),
            "settings": f"CPU default network, {steps} steps of 2 random 128x128 crops of the "
                        "shared pictures; applied to tubingen.jpg at 512 px",
            "loss_first_and_last_25": [float(np.mean(rows[:25])) if rows else None,
                                       float(np.mean(rows[-25:])) if rows else None]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=PARTS)
    parser.add_argument("--work", default="/tmp/readme_dream_style")
    parser.add_argument("--data", help="the shared data folder (default: $MICROGRAD_GEN_DATA, "
                                       "else ../shared/data)")
    parser.add_argument("--style-rounds", type=int, default=5,
                        help="L-BFGS rounds of 20 evaluations (the README's picture: 5)")
    parser.add_argument("--fast-steps", type=int, default=300)
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = Path(args.data or os.environ.get("MICROGRAD_GEN_DATA") or SHARED / "data")
    images = data / "images"
    weights = weight_dir(work)
    summary_path = work / "summary_dream_style.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    makers = {"dream": lambda: make_dream(images, weights, work, "chelsea.png", 400, None,
                                          "dream_chelsea.png"),
              "dream_book": lambda: make_dream(images, weights, work, "golden_gate.jpg", 600, 15.0,
                                               "dream_golden_gate_book.png"),
              "dream_vgg19": lambda: make_dream_vgg19(images, weights, work),
              "style": lambda: make_style(images, weights, work, args.style_rounds),
              "fast_style": lambda: make_fast_style(images, weights, work, args.fast_steps)}
    for part in args.only or PARTS:
        log(f"--- {part}")
        summary[part] = makers[part]()
        summary_path.write_text(json.dumps(summary, indent=1))
    log(f"summary: {summary_path}")


if __name__ == "__main__":
    main()
