"""Neural style transfer (micrograd_gen.generative.style_transfer and `python -m micrograd_gen style`).

The loss, its three parts, the five style terms and the gradients of the total and of each
weighted part are compared with Keras's on the shared real weights
(../shared/data/reference/keras_style_transfer_tubingen_starry.npz) within 1e-4 of the largest
value; the cached-target path against the book's batch of three; the losses on their own against
NumPy, with float64 gradient checks; small end-to-end runs through the API and the command line.

One ReLU sits on its kink at the reference picture: block2_conv1's pre-activation at (3, 3),
channel 3, is within 4e-4 of zero against a layer maximum of 2558 (1.6e-7 of it), and which side
it lands on is float32 rounding's choice (BLAS's kernels differ from one CPU to another): Keras's
run had it at or below zero, as do the fast path's Winograd (-8.0e-4) and, on an AMD EPYC, the
reference path (-6.7e-5); the fast path's shifted route had it at +3.6e-4, which opens that
unit's path and moves the gradient by up to 6e-3 of its largest value in the 9x9 patch of
pixels that unit sees. The gradient comparisons put that unit
where Keras had it (a -1e-3 shift of that one pre-activation); with it, every gradient agrees
within 1e-6 of the largest value.
"""
import numpy as np
import pytest
from PIL import Image

import micrograd_gen as mg
from micrograd_gen import applications
from micrograd_gen.applications import vgg19
from micrograd_gen.cli import main
from micrograd_gen.generative import style_transfer as S
from micrograd_gen.gradcheck import gradcheck
# weight_dir: the real weights' folder, a session fixture (tests that take it redefine its name,
# hence the F811 marks)
from test_applications import (INCEPTION_FILE, VGG_FILE, relu_input_shifted,  # noqa: F401
                               weight_dir)

TOLERANCE = 1e-4  # of each array's largest absolute value
KINK = ("block2_conv1", (3, 3, 3))  # (row, column, channel) of the combination picture's features


def rel_error(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


# ---- the three losses against NumPy (no weights) --------------------------------------------------

def test_losses_against_numpy_and_their_gradients():
    rng = np.random.default_rng(0)
    style, comb, base = (rng.normal(size=(5, 6, 4)) for _ in range(3))
    T = lambda a: mg.Tensor(a, dtype=np.float64)  # noqa: E731
    gram = lambda f: np.einsum("hwc,hwd->cd", f, f)  # noqa: E731
    np.testing.assert_allclose(S.gram_matrix(T(comb)).numpy(), gram(comb), rtol=1e-12)
    np.testing.assert_allclose(S.content_loss(T(base), T(comb)).item(), np.sum((comb - base) ** 2))
    size = 11 * 17  # the picture's pixels, not the feature map's: the book's constant
    want = np.sum((gram(style) - gram(comb)) ** 2) / (4 * 9 * size ** 2)
    np.testing.assert_allclose(S.style_loss(T(style), T(comb), size).item(), want, rtol=1e-12)

    x = rng.normal(size=(1, 5, 7, 3)) * 10
    a = (x[:, :-1, :-1] - x[:, 1:, :-1]) ** 2
    b = (x[:, :-1, :-1] - x[:, :-1, 1:]) ** 2
    np.testing.assert_allclose(S.total_variation_loss(T(x)).item(), np.sum((a + b) ** 1.25),
                               rtol=1e-12)

    gradcheck(lambda s, c: S.style_loss(s, c, size), [style, comb])
    gradcheck(S.content_loss, [base, comb])
    gradcheck(S.total_variation_loss, [x])


def test_output_size_keeps_the_aspect():
    assert S.output_size((768, 1024)) == (400, 533)
    assert S.output_size((400, 600, 3), 200) == (200, 300)


# ---- the loss on the real VGG19 against Keras -----------------------------------------------------

@pytest.fixture(scope="module")
def vgg(weight_dir):  # noqa: F811
    return applications.VGG19(weights=str(weight_dir / VGG_FILE))


@pytest.fixture(scope="module")
def ref(shared_data):
    path = shared_data / "reference" / "keras_style_transfer_tubingen_starry.npz"
    if not path.is_file():
        pytest.skip(f"Keras reference {path} not found")
    return dict(np.load(path))


def test_loss_and_its_parts_match_keras(vgg, ref):
    loss = S.StyleTransferLoss(ref["base"], ref["style"], model=vgg)
    value, parts, _ = loss.loss_and_grad(ref["comb"])
    assert rel_error(value, ref["loss"]) < TOLERANCE
    assert rel_error(parts["content"] / S.CONTENT_WEIGHT, ref["content_loss"]) < TOLERANCE
    assert rel_error(parts["tv"] / S.TV_WEIGHT, ref["tv_loss"]) < TOLERANCE
    feats = loss.features(np.concatenate([ref["style"], ref["comb"]]))
    size = 64 * 96
    terms = [S.style_loss(feats[n][0], feats[n][1], size).item() for n in S.STYLE_LAYERS]
    assert rel_error(terms, ref["style_losses"]) < TOLERANCE
    assert rel_error(parts["style"], S.STYLE_WEIGHT / 5 * ref["style_losses"].sum()) < TOLERANCE


@pytest.mark.parametrize("part", ["grad", "grad_content", "grad_style", "grad_tv"])
def test_gradients_match_keras(part, vgg, ref):
    weights = {"grad": (S.CONTENT_WEIGHT, S.STYLE_WEIGHT, S.TV_WEIGHT),
               "grad_content": (S.CONTENT_WEIGHT, 0, 0), "grad_style": (0, S.STYLE_WEIGHT, 0),
               "grad_tv": (0, 0, S.TV_WEIGHT)}[part]
    loss = S.StyleTransferLoss(ref["base"], ref["style"], vgg, None, *weights)
    layer, (i, j, c) = KINK
    with relu_input_shifted(vgg, layer, (0, i, j, c)):  # that unit where Keras had it
        _, _, grad = loss.loss_and_grad(ref["comb"])
    assert rel_error(grad, ref[part]) < TOLERANCE
    assert all(w.grad is None for w in vgg.weights)  # frozen: no weight gradients


def test_the_gradient_differs_from_keras_only_around_the_kink(vgg, ref):
    """Unshifted, the gradient agrees with Keras's everywhere but, where the kink unit lands on
    the other side of zero, in the pixels that unit sees."""
    _, _, grad = S.StyleTransferLoss(ref["base"], ref["style"], vgg).loss_and_grad(ref["comb"])
    off = np.abs(grad - ref["grad"])[0].max(axis=-1) > TOLERANCE * np.abs(ref["grad"]).max()
    rows, cols = np.nonzero(off)
    # block2_conv1 at (3, 3) sees input pixels 2..11 (two 3x3 convs, a 2x2 pool, a 3x3 conv)
    assert not off.any() or (rows.max() <= 11 and cols.max() <= 12)
    assert rel_error(grad[:, 13:, 13:], ref["grad"][:, 13:, 13:]) < 1e-5


def test_cached_targets_give_the_books_batch_of_three(vgg, ref):
    cached = S.StyleTransferLoss(ref["base"], ref["style"], vgg)
    book = S.StyleTransferLoss(ref["base"], ref["style"], vgg, batch3=True)
    v1, p1, g1 = cached.loss_and_grad(ref["comb"])
    v2, p2, g2 = book.loss_and_grad(ref["comb"])
    assert v1 == pytest.approx(v2, rel=1e-5)
    for k in p1:
        assert p1[k] == pytest.approx(p2[k], rel=1e-5)
    assert rel_error(g1, g2) < 1e-5


# ---- pictures in, optimisation, pictures out ------------------------------------------------------

def write_pictures(folder, shared_data, content_mode="RGB", style_mode="RGB"):
    images = shared_data / "images"
    content = Image.open(images / "tubingen.jpg").convert("RGB").resize((96, 72))
    style = Image.open(images / "starry_night.jpg").convert("RGB").resize((50, 40))  # another size
    c = folder / ("content.png" if content_mode != "RGB" else "content.jpg")
    s = folder / ("style.png" if style_mode != "RGB" else "style.jpg")
    content.convert(content_mode).save(c)
    style.convert(style_mode).save(s)
    return c, s


@pytest.mark.parametrize("content_mode, style_mode", [("L", "P"), ("RGBA", "L")])
def test_prepare_converts_to_rgb_and_resizes_the_style(tmp_path, shared_data, content_mode,
                                                       style_mode):
    c, s = write_pictures(tmp_path, shared_data, content_mode, style_mode)
    base, style = S.prepare(c, s, height=48)
    assert base.shape == style.shape == (1, 48, 64, 3)
    if content_mode == "L":  # grey stays grey: the three channels are equal before the mean
        rgb = vgg19.deprocess_image(base).astype(int)
        assert np.abs(rgb[..., 0] - rgb[..., 1]).max() <= 1


def test_optimizers_lower_the_loss(vgg, ref):
    loss = S.StyleTransferLoss(ref["base"], ref["style"], vgg)
    start = loss.loss_and_grad(ref["base"])[0]
    seen = []
    x = S.optimize(loss, ref["base"].copy(), "sgd", 3, callback=seen.append)
    assert [s.iteration for s in seen] == [1, 2, 3] and seen[0].loss == pytest.approx(start)
    assert seen[2].loss < seen[0].loss and set(seen[0].parts) == {"content", "style", "tv"}
    assert loss.loss_and_grad(x)[0] < seen[2].loss
    rounds = []
    x = S.optimize(loss, ref["base"].copy(), "lbfgs", 2, callback=rounds.append, evaluations=4)
    # scipy checks maxfun between iterations, so a round's last line search may go a little over
    assert all(4 <= r.evaluations <= 8 for r in rounds)
    assert rounds[1].loss < rounds[0].loss < start
    assert rounds[1].picture().shape == (64, 96, 3)
    with pytest.raises(ValueError, match="optimizer must be"):
        S.optimize(loss, ref["base"], "adam")


def test_noise_init(ref):
    noise = S.initial_image(ref["base"], "noise", seed=3)
    assert noise.shape == ref["base"].shape and not np.allclose(noise, ref["base"])
    np.testing.assert_array_equal(noise, S.initial_image(ref["base"], "noise", seed=3))
    with pytest.raises(ValueError, match="init must be"):
        S.initial_image(ref["base"], "zeros")


def test_style_transfer_api_end_to_end(tmp_path, shared_data, weight_dir):  # noqa: F811
    c, s = write_pictures(tmp_path, shared_data)
    out = S.style_transfer(c, s, height=48, optimizer="sgd", iterations=2,
                           weights=str(weight_dir / VGG_FILE))
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8


# ---- the command line -----------------------------------------------------------------------------

def test_cli_style_writes_the_result_and_intermediates(tmp_path, shared_data,
                                                       weight_dir, capsys):  # noqa: F811
    c, s = write_pictures(tmp_path, shared_data, "L", "P")
    out = tmp_path / "out" / "styled.png"
    rc = main(["style", str(c), str(s), "--out", str(out), "--height", "48", "--optimizer", "sgd",
               "--iterations", "2", "--save-every", "1", "--weights", str(weight_dir / VGG_FILE)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "step 2/2  loss" in text and "content" in text and "tv" in text and "s/step" in text
    assert Image.open(out).size == (64, 48)
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "styled.png", "styled_0001.png", "styled_0002.png"]


def test_cli_style_lbfgs_round(tmp_path, shared_data, weight_dir, capsys):  # noqa: F811
    c, s = write_pictures(tmp_path, shared_data)
    out = tmp_path / "styled.jpg"
    rc = main(["style", str(c), str(s), "--out", str(out), "--height", "40", "--iterations", "1",
               "--init", "noise", "--weights", str(weight_dir / VGG_FILE)])
    assert rc == 0
    assert "round 1/1" in capsys.readouterr().out
    assert Image.open(out).size == (53, 40)


@pytest.mark.parametrize("case", ["missing", "not_an_image", "wrong_weights", "bad_suffix",
                                  "tiny_height"])
def test_cli_style_errors_are_one_line_and_write_nothing(case, tmp_path, shared_data,
                                                         weight_dir, capsys):  # noqa: F811
    c, s = write_pictures(tmp_path, shared_data)
    out = tmp_path / "styled.png"
    args = ["style", str(c), str(s), "--weights", str(weight_dir / VGG_FILE), "--height", "40",
            "--optimizer", "sgd", "--iterations", "1"]
    expected = {"missing": "no such file", "not_an_image": "not an image",
                "wrong_weights": "layers with weights", "bad_suffix": "not a picture format",
                "tiny_height": "argument --height: must be a whole number from 32"}[case]
    if case == "missing":
        args[1] = str(tmp_path / "nothing.jpg")
    elif case == "not_an_image":
        (tmp_path / "notes.png").write_bytes(b"\x89PNG but not really")
        args[2] = str(tmp_path / "notes.png")
    elif case == "wrong_weights":
        args[4] = str(weight_dir / INCEPTION_FILE)
    elif case == "bad_suffix":
        out = tmp_path / "styled.h5"
    elif case == "tiny_height":
        args[6] = "16"
    rc = main(args + ["--out", str(out)])
    err = capsys.readouterr().err
    assert rc == (2 if case == "tiny_height" else 1)   # a bad value stops at parsing: status 2
    assert "error: " in err and expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
