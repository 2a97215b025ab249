"""DeepDream (micrograd_gen.generative.deepdream and `python -m micrograd_gen dream`).

The loss and its gradient are compared with Keras's on the shared real weights
(../shared/data/reference/keras_inception_v3_chelsea.npz) within 1e-4 of the largest value; the
schedule's arithmetic (octave shapes, L2-normalised steps, lost-detail re-injection) is checked on
its own; small end-to-end runs go through the API and the command line, error cases included.
"""
import numpy as np
import pytest
from PIL import Image

import micrograd_gen as mg
from micrograd_gen.cli import main
from micrograd_gen.generative import deepdream as D
from micrograd_gen.gradcheck import gradcheck
# weight_dir: the real weights' folder, a session fixture (tests that take it redefine its name,
# hence the F811 marks)
from test_applications import (INCEPTION_FILE, VGG_FILE, relu_input_shifted,  # noqa: F401
                               weight_dir)

TOLERANCE = 1e-4  # of each array's largest absolute value
# One ReLU of InceptionV3 sits on its kink at the reference input: activation_19's input at
# (0, 11, 10, 2) is +2.6e-7 exactly, and Keras's float32 run had it <= 0, which cuts that unit's
# path and moves Keras's gradient by 5e-4 of its largest value in one patch (test_applications.py
# shows ours is the exact derivative). The comparisons put that unit where Keras had it.
KINK = ("activation_19", (0, 11, 10, 2))


def rel_error(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


# ---- the schedule's arithmetic (no weights) -------------------------------------------------------

def test_octave_shapes_are_the_books():
    assert D.octave_shapes((400, 600)) == [(204, 306), (285, 428), (400, 600)]
    assert D.octave_shapes((400, 600), octaves=1) == [(400, 600)]
    assert D.octave_shapes((100, 101), octaves=2, octave_scale=2.0) == [(50, 50), (100, 101)]
    with pytest.raises(ValueError, match="octaves"):
        D.octave_shapes((400, 600), octaves=0)


def test_l2_normalize_is_tf_l2_normalize():
    g = np.random.default_rng(0).normal(size=(1, 5, 6, 3)).astype(np.float32)
    out = D.l2_normalize(g)
    np.testing.assert_allclose(out, g / np.sqrt(np.sum(g.astype(np.float64) ** 2)), rtol=1e-6)
    assert out.dtype == np.float32
    zero = D.l2_normalize(np.zeros((2, 2), np.float32))  # the 1e-12 floor: no division by zero
    assert np.all(zero == 0)


def test_dream_loss_against_numpy_and_its_gradient():
    rng = np.random.default_rng(1)
    feats = {"a": rng.normal(size=(1, 7, 8, 3)), "b": rng.normal(size=(2, 6, 9, 2))}
    weights = {"a": 1.0, "b": 2.5}
    total, terms = D.dream_loss({k: mg.Tensor(v, dtype=np.float64) for k, v in feats.items()},
                                weights)
    want = {k: weights[k] * np.mean(v[:, 2:-2, 2:-2, :] ** 2) for k, v in feats.items()}
    for k in feats:
        np.testing.assert_allclose(terms[k].item(), want[k], rtol=1e-12)
    np.testing.assert_allclose(total.item(), want["a"] + want["b"], rtol=1e-12)
    gradcheck(lambda a, b: D.dream_loss({"a": a, "b": b}, weights)[0], [feats["a"], feats["b"]])


def test_dream_loss_needs_something_inside_the_border():
    with pytest.raises(ValueError, match="'mixed4' gives a 4x9 feature map"):
        D.dream_loss({"mixed4": mg.Tensor(np.ones((1, 4, 9, 3)))}, {"mixed4": 1.0})


# ---- on the real InceptionV3 --------------------------------------------------------------------

@pytest.fixture(scope="module")
def dreamer(weight_dir):  # noqa: F811
    return D.DeepDream("inception_v3", weights=str(weight_dir / INCEPTION_FILE))


@pytest.fixture(scope="module")
def chelsea(shared_data):
    path = shared_data / "reference" / "keras_inception_v3_chelsea.npz"
    if not path.is_file():
        pytest.skip(f"Keras reference {path} not found")
    return dict(np.load(path))


def small_picture(chelsea, size=(168, 224)):
    """Chelsea (RGB 0..255) resized so that two octaves of 1.4 still leave mixed4..7 at least
    5x5 (the smallest octave is 120x160)."""
    img = Image.fromarray(chelsea["image_rgb"][0].astype(np.uint8))
    return np.asarray(img.resize(size[::-1], Image.BILINEAR), dtype=np.float32)


def test_loss_and_gradient_match_keras(dreamer, chelsea):
    x = chelsea["input"]
    # that unit where Keras's float32 run had it, in the graph that runs (the folded one)
    with relu_input_shifted(dreamer.features.model, *KINK, shift=-1e-4):
        loss, grad = dreamer.loss_and_grad(x)
        _, terms = D.dream_loss(dreamer.features(x), dreamer.layer_weights)
    assert rel_error(loss, chelsea["deepdream/loss"]) < TOLERANCE
    assert list(terms) == ["mixed4", "mixed5", "mixed6", "mixed7"]
    assert rel_error([t.item() for t in terms.values()], chelsea["deepdream/terms"]) < TOLERANCE
    assert rel_error(grad, chelsea["deepdream/grad"]) < TOLERANCE
    assert all(w.grad is None for w in dreamer.model.weights)  # frozen: no weight gradients


def test_one_step_is_the_books(dreamer, chelsea):
    x = chelsea["input"]
    with relu_input_shifted(dreamer.features.model, *KINK, shift=-1e-4):
        loss, moved = dreamer.gradient_ascent_step(x, 20.0)
    assert loss == pytest.approx(float(chelsea["deepdream/loss"]), rel=TOLERANCE)
    g = chelsea["deepdream/grad"].astype(np.float64)
    # image += 20 * grads / ||grads||: Keras's gradient, normalised, scaled by the step
    assert rel_error(moved - x, 20 * g / np.sqrt(np.sum(g ** 2))) < TOLERANCE
    assert dreamer.loss_and_grad(moved)[0] > loss  # ascent


def test_dream_end_to_end(dreamer, chelsea):
    picture = small_picture(chelsea)
    seen = []
    out = dreamer.run(picture, octaves=2, iterations=3, max_loss=None,
                      callback=lambda s: seen.append((s.octave, s.step, s.shape, s.loss)))
    assert out.shape == picture.shape and out.dtype == np.uint8
    assert [(o, s, shape) for o, s, shape, _ in seen] == [
        (1, 1, (120, 160)), (1, 2, (120, 160)), (1, 3, (120, 160)),
        (2, 1, (168, 224)), (2, 2, (168, 224)), (2, 3, (168, 224))]
    for octave in (1, 2):
        losses = [loss for o, _, _, loss in seen if o == octave]
        assert losses[0] < losses[1] < losses[2]
    assert np.abs(out.astype(np.float32) - picture).mean() > 2  # it dreamed


def test_max_loss_and_callback_stop_early(dreamer, chelsea):
    picture = small_picture(chelsea)
    steps = []
    dreamer.run(picture, octaves=2, iterations=5, max_loss=0.0,
                callback=lambda s: steps.append((s.octave, s.step)))
    assert steps == [(1, 1), (2, 1)]  # each octave ends after its first step
    steps = []
    dreamer.run(picture, octaves=2, iterations=5, callback=lambda s: steps.append(s.step) or True)
    assert steps == [1]


def test_without_steps_the_octaves_give_the_picture_back(dreamer, chelsea):
    # The lost-detail re-injection is exact: with a zero step the octave loop returns the original.
    picture = small_picture(chelsea)
    out = dreamer.run(picture, octaves=3, octave_scale=1.2, iterations=1, step=0.0)
    assert np.abs(out.astype(np.float32) - picture).max() <= 1.0


def test_layers_by_name_and_errors(dreamer):
    model = dreamer.model
    custom = D.DeepDream(model, layer_weights={"mixed3": 1.0, "activation_40": 0.5})
    assert custom.layer_weights == {"mixed3": 1.0, "activation_40": 0.5}
    with pytest.raises(ValueError, match="no layer named 'mixed44'.*did you mean"):
        D.DeepDream(model, layer_weights={"mixed44": 1.0})
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        D.DeepDream("resnet")
    with pytest.raises(ValueError, match="smallest octave is 53x71"):
        dreamer.run(np.zeros((104, 140, 3)), octaves=3)


def test_vgg19_dreams_too(weight_dir, chelsea):  # noqa: F811
    dreamer = D.DeepDream("vgg19", weights=str(weight_dir / VGG_FILE),
                          layer_weights={"block3_conv1": 1.0})
    picture = small_picture(chelsea, (64, 96))
    losses = []
    out = dreamer.run(picture, octaves=1, iterations=3, max_loss=None,
                      callback=lambda s: losses.append(s.loss))
    assert out.shape == picture.shape
    assert losses[0] < losses[1] < losses[2]


# ---- the command line -----------------------------------------------------------------------------

def write_picture(path, chelsea, mode="RGB", size=(168, 224)):
    img = Image.fromarray(small_picture(chelsea, size).astype(np.uint8)).convert(mode)
    img.save(path)
    return path


def test_cli_dream_writes_the_result_and_intermediates(tmp_path, weight_dir,  # noqa: F811
                                                       chelsea, capsys):
    src = write_picture(tmp_path / "cat.png", chelsea, mode="RGBA")  # RGBA is taken as RGB
    out = tmp_path / "out" / "dream.png"
    rc = main(["dream", str(src), "--out", str(out), "--weights", str(weight_dir / INCEPTION_FILE),
               "--octaves", "2", "--iterations", "2", "--save-every", "2"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "octave 1/2: 120x160" in text and "octave 2/2: 168x224" in text
    assert "step 2/2  loss" in text and "s/step" in text
    assert Image.open(out).size == (224, 168)
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "dream.png", "dream_o1s002.png", "dream_o2s002.png"]
    assert Image.open(out.parent / "dream_o1s002.png").size == (160, 120)


def test_cli_dream_max_size_shrinks(tmp_path, weight_dir, chelsea, capsys):  # noqa: F811
    src = write_picture(tmp_path / "cat.jpg", chelsea, mode="L", size=(240, 320))  # grayscale
    out = tmp_path / "d.png"
    assert main(["dream", str(src), "--out", str(out), "--max-size", "224", "--octaves", "1",
                 "--iterations", "1", "--weights", str(weight_dir / INCEPTION_FILE)]) == 0
    assert Image.open(out).size == (224, 168)


@pytest.mark.parametrize("case", ["missing", "not_an_image", "unknown_layer", "bad_layers",
                                  "wrong_weights", "bad_suffix"])
def test_cli_dream_errors_are_one_line_and_write_nothing(case, tmp_path,
                                                         weight_dir, chelsea, capsys):  # noqa: F811
    src = write_picture(tmp_path / "cat.png", chelsea)
    out = tmp_path / "dream.png"
    args = ["dream", str(src), "--weights", str(weight_dir / INCEPTION_FILE), "--octaves", "1",
            "--iterations", "1"]
    expected = {"missing": "no such file", "not_an_image": "not an image",
                "unknown_layer": "no layer named 'mixed44'", "bad_layers": "not NAME=NUMBER",
                "wrong_weights": "layers with weights", "bad_suffix": "not a picture format"}[case]
    if case == "missing":
        args[1] = str(tmp_path / "nothing.jpg")
    elif case == "not_an_image":
        (tmp_path / "notes.jpg").write_text("not a picture")
        args[1] = str(tmp_path / "notes.jpg")
    elif case == "unknown_layer":
        args += ["--layers", "mixed4=1,mixed44=2"]
    elif case == "bad_layers":
        args += ["--layers", "mixed4=lots"]
    elif case == "wrong_weights":
        args[3] = str(weight_dir / VGG_FILE)
    elif case == "bad_suffix":
        out = tmp_path / "dream.xyz"
    rc = main(args + ["--out", str(out)])
    err = capsys.readouterr().err
    assert rc == (2 if case == "bad_layers" else 1)   # a bad value stops at parsing: status 2
    assert "error: " in err and expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "notes.jpg") == ["cat.png"]


# ---- small pictures: layers with nothing inside the border (issue 16) ----------------------------

@pytest.fixture(scope="module")
def random_inception():
    """InceptionV3 with its random initial weights: the shapes are what matter here."""
    return mg.applications.InceptionV3(weights=None)


def test_feature_shapes_are_those_of_a_forward_pass(random_inception):
    names = ["mixed2", "mixed4", "mixed7"]
    extractor = mg.applications.feature_extractor(random_inception, names)
    for shape in [(91, 122), (75, 80)]:
        with mg.no_grad():
            feats = extractor(np.zeros((1, *shape, 3), np.float32))
        assert D.feature_shapes(random_inception, names, shape) == {
            n: tuple(feats[n].shape[1:3]) for n in names}


def test_a_small_picture_leaves_deep_layers_out_of_its_smallest_octave(random_inception):
    # `dream --max-size 240` on a 4:3 photo: octaves 91x122, 128x171, 180x240; mixed4..7 are 4x5
    # at the smallest, all border
    dreamer = D.DeepDream(random_inception)
    shapes = D.octave_shapes((180, 240), 3, 1.4)
    with pytest.warns(D.DreamWarning) as caught:
        plan = dreamer.octave_layers(shapes)
    assert [str(w.message) for w in caught] == [
        "deep_dream: octave 1/3 is 91x122: mixed4 (4x5), mixed5 (4x5), mixed6 (4x5), mixed7 (4x5) "
        "keep nothing inside the 2-pixel border and are left out there; its steps are skipped"]
    assert plan == [{}, dreamer.layer_weights, dreamer.layer_weights]

    mixed = D.DeepDream(random_inception, layer_weights={"mixed2": 1.0, "mixed7": 2.0})
    with pytest.warns(D.DreamWarning, match=r"octave 1/2 is 91x122: mixed7 \(4x5\) keep nothing "
                                            r".*; the other layers dream"):
        assert mixed.octave_layers([(91, 122), (128, 171)]) == [
            {"mixed2": 1.0}, {"mixed2": 1.0, "mixed7": 2.0}]


def test_no_layer_with_pixels_at_any_octave_is_an_error_naming_the_sizes(random_inception):
    dreamer = D.DeepDream(random_inception, layer_weights={"mixed10": 1.0, "mixed7": 1.0})
    with pytest.raises(ValueError, match=r"no layer keeps a pixel inside its 2-pixel border at "
                                         r"any octave: even at the largest, 100x133, mixed10 is "
                                         r"1x2, mixed7 is 4x6; use a larger picture"):
        dreamer.run(np.zeros((100, 133, 3)), octaves=2, octave_scale=1.2, iterations=1)


def test_a_small_picture_dreams_at_the_octaves_that_have_pixels(random_inception):
    dreamer = D.DeepDream(random_inception)
    picture = np.random.default_rng(0).uniform(0, 255, (180, 240, 3)).astype(np.float32)
    steps = []
    with pytest.warns(D.DreamWarning, match="octave 1/3 is 91x122"):
        out = dreamer.run(picture, octaves=3, iterations=1, max_loss=None,
                          callback=lambda s: steps.append((s.octave, s.shape)))
    assert steps == [(2, (128, 171)), (3, (180, 240))]
    assert out.shape == picture.shape and out.dtype == np.uint8


def test_cli_dream_on_a_small_picture(tmp_path, weight_dir, chelsea, capsys):  # noqa: F811
    src = write_picture(tmp_path / "cat.png", chelsea, size=(300, 400))
    out = tmp_path / "d.png"
    with pytest.warns(D.DreamWarning, match="octave 1/3 is 91x122"):
        rc = main(["dream", str(src), "--out", str(out), "--max-size", "240", "--iterations", "1",
                   "--weights", str(weight_dir / INCEPTION_FILE)])
    assert rc == 0 and Image.open(out).size == (240, 180)
    assert "octave 2/3: 128x171" in capsys.readouterr().out
