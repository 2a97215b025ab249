"""Make the README's VAE and DCGAN pictures: docs/images/vae_grid.png and docs/images/gan_faces.png.

    python examples/make_readme_images_vae_gan.py --work /tmp/readme_work            # both
    python examples/make_readme_images_vae_gan.py --only gan --gan-steps 3000

VAE: the book's model trained for --vae-epochs (5) on all 70,000 MNIST digits; a 30x30 grid of
decoded digits at their own 28 px each (840 px: a 256 px grid leaves 8 px per digit, too few to
tell a 3 from an 8). The book decodes [-1, 1]^2, where its codes lie after 30 epochs; after 5 they
are not centred there yet (the 1s sit near z[1] = -2.9), and [-1, 1]^2 shows mostly 0s, 2s and 6s.
So the grid spans the middle 90% of the test digits' codes on each axis (5th to 95th percentile);
the book's [-1, 1]^2 grid, with axis labels, is left in the work folder. Printed: the test
reconstruction loss, and how many grid cells look most like each digit class (the class of the
nearest test digit), for both windows.

DCGAN: the book's 64x64 architecture with a quarter of its filters (--gan-width 0.25, 1/16 of the
arithmetic) and the DCGAN paper's Adam (2e-4, beta_1 0.5), trained on the faces at batch 32 for
--gan-steps steps: a CPU cannot afford the book's full-width model for the thousands of steps faces
take (7.5 s a step here). The checkpoint in the work folder makes a rerun go on from where
the last one stopped, exactly. 16 faces from fixed latents, 4x4, each pixel drawn as 2x2 (512 px:
the faces' own 64 px each is small on screen); the work folder gets a
picture every --gan-every steps and a summary of the run: wall and CPU minutes, and the D and G
losses (mean of the first and the last tenth of the steps).

Data: MNIST and the faces are looked up in --data (default $MICROGRAD_GEN_DATA, else
../shared/data beside the repository).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from micrograd_gen.data import load_mnist, save_image_grid  # noqa: E402
from micrograd_gen.generative import dcgan, vae as V  # noqa: E402

IMAGES = ROOT / "docs" / "images"


def log(line):
    print(line, flush=True)


def make_vae(data, work, epochs):
    (x_train, _), (x_test, y_test) = load_mnist(data / "mnist", download=False)
    checkpoint = work / "vae.h5"
    started = time.perf_counter()
    vae, history = V.train_vae(np.concatenate([x_train, x_test]), epochs=epochs, seed=0,
                               checkpoint_path=checkpoint, resume=True, log=log)
    minutes = (time.perf_counter() - started) / 60
    scores = V.evaluate_vae(vae, x_test)
    scores_mean = V.evaluate_vae(vae, x_test, use_mean=True)
    log(f"vae: {epochs} epochs; test reconstruction loss {scores['reconstruction_loss']:.2f} "
        f"(z sampled, as the training loss), {scores_mean['reconstruction_loss']:.2f} (z = z_mean); "
        f"kl {scores['kl_loss']:.3f}; this run trained {minutes:.1f} min")
    book = V.save_latent_grid(vae.decoder, work / "vae_grid_book_window.png", n=30)
    book_images, _, _ = V.latent_grid(vae.decoder, n=30)
    codes = V.encode(vae.encoder, x_test)
    low, high = np.percentile(codes, [5, 95], axis=0)
    grid_x = np.linspace(low[0], high[0], 30)
    grid_y = np.linspace(low[1], high[1], 30)[::-1]   # z[1] decreasing down the rows, as the book
    images = V.decode(vae.decoder, [[x, y] for y in grid_y for x in grid_x])
    tiles = (images.reshape(30, 30, 28, 28).transpose(0, 2, 1, 3).reshape(840, 840) * 255)
    grid = Image.fromarray(np.clip(tiles, 0, 255).astype(np.uint8))
    IMAGES.mkdir(parents=True, exist_ok=True)
    grid.save(IMAGES / "vae_grid.png", optimize=True)
    variety = grid_classes(images, x_test, y_test)
    variety_book = grid_classes(book_images, x_test, y_test)
    window = {"z0": [round(float(low[0]), 2), round(float(high[0]), 2)],
              "z1": [round(float(low[1]), 2), round(float(high[1]), 2)]}
    summary = {"epochs": history, "test": scores, "test_z_mean": scores_mean,
               "grid_window": window, "grid_cells_per_class": variety,
               "book_window_cells_per_class": variety_book}
    (work / "vae_summary.json").write_text(json.dumps(summary, indent=1))
    log(f"vae: grid window {window}")
    log(f"vae: grid cells by the class of the nearest test digit: {variety}; over the book's "
        f"[-1, 1]^2: {variety_book}")
    log(f"vae: wrote {IMAGES / 'vae_grid.png'} (840 px, 28 px a digit) and {book} (the book's "
        f"window, labelled)")


def grid_classes(images, x_test, y_test):
    """How many grid cells look most like each digit class: the class of the nearest test digit
    (Euclidean, on [0, 1] pixels). A rough check that a grid shows the variety of digits the
    book's does."""
    digits = x_test.reshape(len(x_test), -1).astype(np.float32) / 255
    cells = images.reshape(len(images), -1).astype(np.float32)
    # |c - d|^2 = |c|^2 - 2 c.d + |d|^2; |c|^2 is the same for every d, so it is left out
    distance = (digits * digits).sum(axis=1)[None, :] - 2 * cells @ digits.T
    nearest = y_test[distance.argmin(axis=1)]
    return {str(c): int((nearest == c).sum()) for c in range(10)}


def make_gan(data, work, steps, minutes, every, config):
    """Train to `steps` steps in chunks of `every`, from the checkpoint if one is there, with a
    picture of the fixed faces after each chunk (work/progress/step_NNNN.png)."""
    checkpoint = work / "gan.h5"
    clock_file = work / "gan_clock.json"
    clock = json.loads(clock_file.read_text()) if clock_file.exists() else {"wall_s": 0, "cpu_s": 0}
    if checkpoint.exists():
        config = dcgan.checkpoint_config(checkpoint)
    gan = dcgan.GAN(seed=0, **config)
    z = dcgan.fixed_latents(16, gan.latent_dim)
    started = time.perf_counter()
    target = 0
    while True:
        target += every
        if target > steps or (minutes and time.perf_counter() - started > minutes * 60):
            break
        if checkpoint.exists() and dcgan.read_checkpoint_step(checkpoint) >= target:
            continue
        wall, cpu = time.perf_counter(), time.process_time()
        history = dcgan.train_gan(gan, data / "faces" / "faces64.tar", epochs=1000, batch_size=32,
                                  checkpoint_path=checkpoint, max_steps=target, seed=0, log=log)
        clock["wall_s"] += time.perf_counter() - wall
        clock["cpu_s"] += time.process_time() - cpu
        clock_file.write_text(json.dumps(clock))
        dcgan.save_sample_grid(gan, work / "progress" / f"step_{gan.step:04d}.png", z)
    history = dcgan.read_history(checkpoint)
    d, g = np.array(history["d_loss"]), np.array(history["g_loss"])
    tenth = max(1, len(d) // 10)
    summary = {"steps": len(d), "batch_size": 32, "images_seen": len(d) * 32, **config,
               "train_wall_minutes": round(clock["wall_s"] / 60, 1),
               "train_cpu_minutes": round(clock["cpu_s"] / 60, 1),
               "threads": os.environ.get("OPENBLAS_NUM_THREADS", str(os.cpu_count())),
               "d_loss_first_tenth": float(d[:tenth].mean()),
               "g_loss_first_tenth": float(g[:tenth].mean()),
               "d_loss_last_tenth": float(d[-tenth:].mean()),
               "g_loss_last_tenth": float(g[-tenth:].mean()),
               "d_loss_last_tenth_min": float(d[-tenth:].min()),
               "g_loss_last_tenth_min": float(g[-tenth:].min())}
    (work / "gan_summary.json").write_text(json.dumps(summary, indent=1))
    (work / "gan_history.json").write_text(json.dumps(history))
    gan = dcgan.load_gan(checkpoint)
    IMAGES.mkdir(parents=True, exist_ok=True)
    # Each 64x64 face drawn at twice its size (every pixel as 2x2), so the grid shows at 512 px.
    save_image_grid(IMAGES / "gan_faces.png", gan.generate(z), ncols=4, value_range=(0, 1),
                    scale=2)
    log(f"gan: {json.dumps(summary)}")
    log(f"gan: wrote {IMAGES / 'gan_faces.png'} (16 faces from fixed latents, 512 px)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["vae", "gan"])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "MICROGRAD_GEN_DATA", ROOT.parent / "shared" / "data")))
    parser.add_argument("--work", type=Path, default=Path("out/readme_images"),
                        help="checkpoints and full-size pictures")
    parser.add_argument("--vae-epochs", type=int, default=5)
    parser.add_argument("--gan-steps", type=int, default=3000,
                        help="DCGAN steps at batch 32 in all (a rerun goes on from the checkpoint)")
    parser.add_argument("--gan-minutes", type=float,
                        help="also stop this run after about this many minutes")
    parser.add_argument("--gan-every", type=int, default=100,
                        help="steps between checkpoints and progress pictures")
    parser.add_argument("--gan-width", type=float, default=0.25,
                        help="scale of every layer's filters; 1 is the book's GAN, 16x the work")
    parser.add_argument("--gan-learning-rate", type=float, default=2e-4)
    parser.add_argument("--gan-beta-1", type=float, default=0.5)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "vae"):
        make_vae(args.data, args.work, args.vae_epochs)
    if args.only in (None, "gan"):
        config = {"width": args.gan_width, "learning_rate": args.gan_learning_rate,
                  "beta_1": args.gan_beta_1}
        make_gan(args.data, args.work, args.gan_steps, args.gan_minutes, args.gan_every, config)


if __name__ == "__main__":
    main()
