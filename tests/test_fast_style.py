"""Fast style transfer (micrograd_gen.generative.fast_style, `train-style` and `stylize`).

The transformation network's pieces against NumPy (instance normalisation with a float64
gradient check, shapes, Johnson et al.'s parameter count); the perceptual loss against Keras's
style-transfer reference (the same loss as the book's, batched); tiny training runs through the
API and the command line, saving, resuming and applying a model, and the error cases.
"""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import micrograd_gen as mg
from micrograd_gen import nn
from micrograd_gen.applications import vgg19
from micrograd_gen.cli import main
from micrograd_gen.generative import fast_style as F
from micrograd_gen.gradcheck import gradcheck
from test_applications import VGG_FILE, weight_dir  # noqa: F401  (weight_dir: a fixture)

TINY = {"filters": (4, 8, 8), "residual_blocks": 1}


def rel_error(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


# ---- the network's pieces (no weights) ------------------------------------------------------------

def test_instance_normalization_against_numpy_and_its_gradient():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 4, 3)) * 3 + 1
    layer = F.InstanceNormalization(dtype="float64")
    y = layer(mg.Tensor(x, dtype=np.float64))
    mean, var = x.mean(axis=(1, 2), keepdims=True), x.var(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(y.numpy(), (x - mean) / np.sqrt(var + 1e-3), rtol=1e-10)
    layer.gamma.data[:] = [0.5, 2.0, -1.0]
    layer.beta.data[:] = [0.1, 0.0, 3.0]
    gradcheck(lambda t: layer(t), [x])


def test_transformer_net_keeps_the_size_and_the_range():
    nn.set_seed(0)
    net = F.TransformerNet(**TINY)
    for shape in [(2, 36, 44, 3), (1, 30, 41, 3)]:  # a multiple of 4, and not
        x = np.random.default_rng(1).uniform(0, 255, size=shape).astype(np.float32)
        y = net(mg.Tensor(x)).numpy()
        assert y.shape == shape and y.min() >= 0 and y.max() <= 255


def test_johnson_sized_network_has_the_papers_parameters():
    net = F.TransformerNet(filters=(32, 64, 128), residual_blocks=5)
    net(mg.Tensor(np.zeros((1, 16, 16, 3), np.float32)))
    conv = lambda k, i, o: k * k * i * o  # noqa: E731
    norms = 2 * (32 + 64 + 128 + 5 * 2 * 128 + 64 + 32)  # gamma and beta of each
    want = (conv(9, 3, 32) + conv(3, 32, 64) + conv(3, 64, 128) + 5 * 2 * conv(3, 128, 128)
            + conv(3, 128, 64) + conv(3, 64, 32) + conv(9, 32, 3) + 3 + norms)
    assert net.count_params() == want == 1_677_635


def test_batch_gram_and_differentiable_preprocessing():
    f = np.random.default_rng(2).normal(size=(2, 3, 4, 5))
    np.testing.assert_allclose(F.batch_gram(mg.Tensor(f, dtype=np.float64)).numpy(),
                               np.einsum("bhwc,bhwd->bcd", f, f), rtol=1e-12)
    rgb = np.random.default_rng(3).uniform(0, 255, size=(1, 4, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(F.vgg_preprocess(mg.Tensor(rgb)).numpy(),
                               vgg19.preprocess_input(rgb), rtol=1e-6)
    gradcheck(lambda t: F.vgg_preprocess(t) * F.vgg_preprocess(t), [rgb.astype(np.float64)])


# ---- the perceptual loss on the real VGG19 ----------------------------------------------------------

@pytest.fixture(scope="module")
def vgg(weight_dir):  # noqa: F811
    from micrograd_gen import applications
    return applications.VGG19(weights=str(weight_dir / VGG_FILE))


def test_perceptual_loss_is_the_books_loss(vgg, shared_data):
    path = shared_data / "reference" / "keras_style_transfer_tubingen_starry.npz"
    if not path.is_file():
        pytest.skip(f"Keras reference {path} not found")
    ref = np.load(path)
    rgb = lambda x: (x + vgg19.MEAN_BGR.astype(np.float32))[..., ::-1]  # noqa: E731  (unclipped)
    loss_fn = F.PerceptualLoss(rgb(ref["style"])[0], model=vgg, content_layer="block5_conv2",
                               content_weight=2.5e-8, style_weight=1e-6, tv_weight=1e-6)
    loss, parts = loss_fn(mg.Tensor(rgb(ref["comb"])), rgb(ref["base"]))
    assert rel_error(loss.item(), ref["loss"]) < 1e-4
    assert rel_error(parts["content"].item(), 2.5e-8 * ref["content_loss"]) < 1e-4
    assert rel_error(parts["tv"].item(), 1e-6 * ref["tv_loss"]) < 1e-4


# ---- training, saving, applying ---------------------------------------------------------------------

def picture_folder(folder, shared_data, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    names = ["tubingen.jpg", "golden_gate.jpg", "chelsea.png", "coffee.png"][:n]
    for name in names:
        img = Image.open(shared_data / "images" / name).convert("RGB")
        img.resize((64, 48)).save(folder / f"{Path(name).stem}.png")
    return folder


def test_train_save_resume_and_stylize(tmp_path, shared_data, vgg):
    data = picture_folder(tmp_path / "data", shared_data)
    style = shared_data / "images" / "starry_night.jpg"
    seen = []
    net, opt = F.train_style(style, data, size=32, batch_size=2, steps=8, learning_rate=1e-2,
                             model=vgg, callback=seen.append, **TINY)
    assert [s.step for s in seen] == list(range(1, 9))
    assert all(np.isfinite(s.loss) for s in seen)
    assert np.mean([s.loss for s in seen[-3:]]) < np.mean([s.loss for s in seen[:3]])
    path = F.save_model(tmp_path / "m.h5", net, opt, step=8)
    loaded, payload, info = F.read_model(path)
    assert payload["step"] == 8 and info["config"] == {"filters": [4, 8, 8], "residual_blocks": 1}
    picture = np.random.default_rng(0).uniform(0, 255, size=(37, 50, 3))
    out = F.stylize(loaded, picture)
    assert out.shape == (37, 50, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, F.stylize(net, picture))
    # resuming continues the step count with the saved Adam state
    opt2 = mg.optim.Adam(loaded.trainable_weights, learning_rate=1e-2)
    opt2.set_state(payload["optimizers"]["adam"])
    assert opt2.iterations == 8
    more = []
    F.train_style(style, data, size=32, batch_size=2, steps=10, model=vgg, net=loaded,
                  optimizer=opt2, start_step=8, callback=more.append)
    assert [s.step for s in more] == [9, 10] and opt2.iterations == 10


def test_model_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model file"):
        F.load_model(tmp_path / "none.h5")
    (tmp_path / "bad.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="not a fast-style model written by train-style"):
        F.load_model(tmp_path / "bad.h5")
    with pytest.raises(ValueError, match="size must be a multiple of 4"):
        F.train_style("x.jpg", tmp_path, size=30)


# ---- the command line -----------------------------------------------------------------------------

def test_cli_train_resume_and_stylize(tmp_path, shared_data, weight_dir, capsys):  # noqa: F811
    data = picture_folder(tmp_path / "data", shared_data, n=2)
    style = shared_data / "images" / "starry_night.jpg"
    sample = shared_data / "images" / "chelsea.png"
    model = tmp_path / "out" / "starry.h5"
    common = ["train-style", str(style), "--data", str(data), "--size", "32", "--filters", "4,8,8",
              "--residual-blocks", "1", "--weights", str(weight_dir / VGG_FILE), "--out", str(model)]
    assert main(common + ["--steps", "2", "--save-every", "1", "--sample", str(sample)]) == 0
    text = capsys.readouterr().out
    assert "step 2/2  loss" in text and "style" in text and "s/step" in text
    assert sorted(p.name for p in model.parent.iterdir()) == [
        "starry.h5", "starry_00001.png", "starry_00002.png"]
    assert main(common + ["--steps", "3", "--resume"]) == 0
    assert "steps 3..3" in capsys.readouterr().out
    assert F.read_model(model)[1]["step"] == 3

    src = tmp_path / "gray.png"
    Image.open(sample).convert("L").resize((50, 37)).save(src)  # grayscale in, RGB out
    out = tmp_path / "styled.png"
    assert main(["stylize", "--model", str(model), str(src), "--out", str(out)]) == 0
    assert Image.open(out).size == (50, 37) and Image.open(out).mode == "RGB"


@pytest.mark.parametrize("case", ["not_a_model", "missing_picture", "missing_data", "bad_filters"])
def test_cli_errors_are_one_line_and_write_nothing(case, tmp_path, shared_data, capsys):
    picture = shared_data / "images" / "chelsea.png"
    out = tmp_path / "out.png"
    (tmp_path / "bad.h5").write_text("not hdf5")
    args, expected = {
        "not_a_model": (["stylize", "--model", str(tmp_path / "bad.h5"), str(picture)],
                        "not a fast-style model"),
        "missing_picture": (["stylize", "--model", str(tmp_path / "bad.h5"),
                             str(tmp_path / "none.jpg")], "not a fast-style model"),
        "missing_data": (["train-style", str(picture), "--data", str(tmp_path / "none")],
                         "no such folder"),
        "bad_filters": (["train-style", str(picture), "--data", str(tmp_path), "--filters", "8,8"],
                        "argument --filters: must be three"),
    }[case]
    if case in ("missing_data", "bad_filters"):
        out = tmp_path / "model.h5"
    rc = main(args + ["--out", str(out)])
    err = capsys.readouterr().err
    assert rc == (2 if case == "bad_filters" else 1)  # a bad value stops at parsing: status 2
    assert "error: " in err and expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
