"""A NaN or inf never becomes a picture (issue 19, rule 2): DeepDream and style transfer stop at
the first non-finite loss or picture with NonFiniteError naming the step (and octave), before the
callback sees the picture; the command line exits 1, writes no result and keeps the pictures it
saved earlier. Values that can only give NaN (a NaN step or rate, NaN in a picture) are refused
before any work."""
import math

import numpy as np
import pytest
from PIL import Image

import micrograd_gen as mg
from micrograd_gen import Function, Tensor, ops
from micrograd_gen.cli import main
from micrograd_gen.generative import deepdream as D
from micrograd_gen.generative import style_transfer as S
from micrograd_gen.generative.nonfinite import NonFiniteError
from test_applications import INCEPTION_FILE, VGG_FILE, weight_dir  # noqa: F401

# numpy says "overflow encountered" on the way to the inf these tests provoke
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def picture(height=32, width=48, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (height, width, 3)).astype(np.float32)


def fresh_vgg19():
    """VGG19 with random weights (fresh: some tests poison it)."""
    return mg.applications.VGG19(weights=None)


# ---- DeepDream ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vgg_dreamer():
    return D.DeepDream(fresh_vgg19(), layer_weights={"block3_conv1": 1.0})


@pytest.mark.parametrize("step", [math.nan, math.inf, -math.inf])
def test_dream_refuses_a_non_finite_step_before_any_work(vgg_dreamer, step):
    seen = []
    with pytest.raises(ValueError, match=f"deep_dream: step must be a finite number, got {step}"):
        vgg_dreamer.run(picture(), octaves=1, iterations=2, step=step, callback=seen.append)
    assert seen == []


def test_dream_refuses_a_nan_in_the_picture(vgg_dreamer):
    bad = picture()
    bad[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="the picture holds 1 NaN or infinite values"):
        vgg_dreamer.run(bad, octaves=1, iterations=1)


def test_dream_stops_at_the_step_where_the_picture_overflows(vgg_dreamer):
    seen = []
    with pytest.raises(NonFiniteError, match=r"deep_dream: the loss became inf at octave 1/1 "
                                             r"\(32x48\), step 2; stopped there, no picture "
                                             r"written \(is the step, 1e\+38, far too large\?\)"):
        vgg_dreamer.run(picture(), octaves=1, iterations=4, step=1e38, max_loss=None,
                        callback=lambda s: seen.append((s.step, bool(np.isfinite(s.image).all()))))
    assert seen == [(1, True)]  # the callback never saw a non-finite picture


def test_dream_with_nan_weights_stops_at_its_first_step():
    model = fresh_vgg19()
    layer = model.get_layer("block2_conv1")
    kernel, bias = layer.get_weights()
    bias[5] = np.nan
    layer.set_weights([kernel, bias])
    seen = []
    dreamer = D.DeepDream(model, layer_weights={"block3_conv1": 1.0})
    with pytest.raises(NonFiniteError, match=r"loss became nan at octave 1/2 \(32x32\), step 1"):
        dreamer.run(picture(45, 45), octaves=2, iterations=3, callback=seen.append)
    assert seen == []


def test_the_error_is_the_training_loops_family():
    # the command line turns any Exception into one line and exit status 1
    from micrograd_gen.callbacks import NonFiniteLossError
    assert issubclass(NonFiniteError, NonFiniteLossError)
    assert issubclass(NonFiniteError, FloatingPointError)
    assert D.NonFiniteError is S.NonFiniteError is NonFiniteError


# ---- style transfer's loops, on a loss small enough to reason about ------------------------------

class NaNGradient(Function):
    """The identity, whose backward returns NaN: a finite loss with a NaN gradient."""

    def forward(self, a):
        return a

    def backward(self, g):
        return g * np.nan


class QuadraticLoss:
    """sum((x - 3)^2), shaped like StyleTransferLoss (call -> Tensors, loss_and_grad -> floats);
    from evaluation `nan_from` on the loss is NaN, from `nan_grad_from` on its gradient."""

    def __init__(self, nan_from=None, nan_grad_from=None):
        self.nan_from, self.nan_grad_from, self.calls = nan_from, nan_grad_from, 0

    def __call__(self, x):
        self.calls += 1
        d = x - 3.0
        if self.nan_grad_from and self.calls >= self.nan_grad_from:
            d = NaNGradient.apply(d)
        total = ops.sum(d * d)
        if self.nan_from and self.calls >= self.nan_from:
            total = total * float("nan")
        return total, {"content": total, "style": total * 0.0, "tv": total * 0.0}

    def loss_and_grad(self, array):
        x = Tensor(array, requires_grad=True, dtype=array.dtype)
        total, parts = self(x)
        total.backward()
        return float(total.item()), {k: float(v.item()) for k, v in parts.items()}, x.grad


START = np.zeros((1, 4, 5, 3), np.float32)


def test_the_quadratic_loss_is_minimised_by_both_optimizers():
    for optimizer in ("sgd", "lbfgs"):
        x = S.optimize(QuadraticLoss(), START, optimizer, 3, learning_rate=0.1)
        assert np.isfinite(x).all() and float(np.abs(x - 3).max()) < 3


def test_sgd_stops_at_the_first_nan_loss():
    seen = []
    with pytest.raises(NonFiniteError, match=r"style transfer: the loss became nan at SGD step 3; "
                                             r"stopped there, no picture written \(is the learning "
                                             r"rate, 0.1, far too large\?\)"):
        S.optimize(QuadraticLoss(nan_from=3), START, "sgd", 10,
                   lambda s: seen.append(s.iteration), learning_rate=0.1)
    assert seen == [1, 2]


def test_sgd_stops_when_the_gradient_makes_the_picture_nan():
    seen = []
    with pytest.raises(NonFiniteError, match=r"the picture became NaN or infinite \(60 values\) "
                                             r"at SGD step 2"):
        S.optimize(QuadraticLoss(nan_grad_from=2), START, "sgd", 10,
                   lambda s: seen.append(s.iteration), learning_rate=0.1)
    assert seen == [1]


def test_sgd_stops_where_a_huge_rate_overflows():
    with pytest.raises(NonFiniteError, match="at SGD step 2"):
        S.optimize(QuadraticLoss(), START, "sgd", 10, learning_rate=1e30)


def test_lbfgs_stops_at_the_first_nan_evaluation():
    first_round = QuadraticLoss()
    S.optimize(first_round, START + 1, "lbfgs", 1)
    assert first_round.calls >= 2
    with pytest.raises(NonFiniteError, match=r"the loss became nan at L-BFGS round 1, evaluation "
                                             r"2; stopped there"):
        S.optimize(QuadraticLoss(nan_from=2), START + 1, "lbfgs", 5)
    seen = []
    with pytest.raises(NonFiniteError, match=r"the loss became nan at L-BFGS round 2, evaluation "
                                             r"1; stopped there"):
        S.optimize(QuadraticLoss(nan_from=first_round.calls + 1), START + 1, "lbfgs", 5,
                   lambda s: seen.append(s.iteration))
    assert seen == [1]


def test_lbfgs_stops_when_a_nan_gradient_reaches_the_picture():
    with pytest.raises(NonFiniteError, match=r"picture became NaN or infinite .* L-BFGS round 1"):
        S.optimize(QuadraticLoss(nan_grad_from=1), START, "lbfgs", 2)


@pytest.mark.parametrize("rate", [math.nan, math.inf, 0.0, -1.0])
def test_sgd_refuses_a_rate_that_cannot_work(rate):
    with pytest.raises(ValueError, match=f"learning rate must be a finite number > 0, got {rate}"):
        S.optimize(QuadraticLoss(), START, "sgd", 1, learning_rate=rate)


def test_a_nan_starting_picture_is_refused():
    with pytest.raises(ValueError, match="initial picture holds 1 NaN"):
        S.optimize(QuadraticLoss(), np.where(np.arange(60).reshape(START.shape) == 7, np.nan,
                                             START).astype(np.float32), "lbfgs", 1)


# ---- style transfer on VGG19 ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def style_pair():
    base = S.vgg19.preprocess_input(picture()[None].copy())
    ref = S.vgg19.preprocess_input(picture(seed=1)[None].copy())
    return base, ref


@pytest.mark.parametrize("name", ["content_weight", "style_weight", "tv_weight"])
def test_style_loss_weights_must_be_finite(style_pair, name):
    with pytest.raises(ValueError, match=f"{name} must be a finite number, got nan"):
        S.StyleTransferLoss(*style_pair, model=fresh_vgg19(), **{name: math.nan})


def test_style_sgd_with_a_rate_of_1e30_stops_with_no_picture(style_pair):
    loss = S.StyleTransferLoss(*style_pair, model=fresh_vgg19())
    seen = []
    with pytest.raises(NonFiniteError, match=r"became inf at SGD step 2"):
        S.optimize(loss, style_pair[0].copy(), "sgd", 5, lambda s: seen.append(s.picture()),
                   learning_rate=1e30)
    assert len(seen) == 1 and seen[0].dtype == np.uint8


# ---- the command line: exit 1, no result, earlier pictures kept ------------------------------------

def write_source(path, size=(48, 64)):
    Image.fromarray(picture(*size).astype(np.uint8)).save(path)
    return path


def test_cli_dream_step_nan_exits_1_and_writes_nothing(tmp_path, weight_dir, capsys):  # noqa: F811
    src = write_source(tmp_path / "in.png")
    rc = main(["dream", str(src), "--model", "vgg19", "--weights", str(weight_dir / VGG_FILE),
               "--step", "nan", "--octaves", "1", "--iterations", "2", "--save-every", "1",
               "--out", str(tmp_path / "dream.png")])
    err = capsys.readouterr().err
    # refused by the run (1) or, where the command line checks its flags, at parsing (2)
    assert rc in (1, 2) and "nan" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_cli_dream_overflow_keeps_the_earlier_pictures(tmp_path, weight_dir, capsys):  # noqa: F811
    src = write_source(tmp_path / "in.png")
    rc = main(["dream", str(src), "--model", "vgg19", "--weights", str(weight_dir / VGG_FILE),
               "--layers", "block3_conv1=1", "--step", "1e38", "--octaves", "1",
               "--iterations", "4", "--save-every", "1", "--out", str(tmp_path / "dream.png")])
    err = capsys.readouterr().err
    assert rc == 1 and "octave 1/1 (48x64), step 2" in err and len(err.strip().splitlines()) == 1
    # step 1's picture was saved before the overflow and stays; no result, nothing black
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dream_o1s001.png", "in.png"]


def test_cli_style_sgd_rate_1e30_exits_1_and_writes_no_picture(tmp_path, weight_dir,  # noqa: F811
                                                               capsys):
    content, style = write_source(tmp_path / "c.png"), write_source(tmp_path / "s.png")
    rc = main(["style", str(content), str(style), "--weights", str(weight_dir / VGG_FILE),
               "--height", "32", "--optimizer", "sgd", "--learning-rate", "1e30",
               "--iterations", "5", "--save-every", "1", "--out", str(tmp_path / "styled.png")])
    err = capsys.readouterr().err
    assert rc == 1 and "SGD step 2" in err and "far too large" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "s.png", "styled_0001.png"]


def test_non_finite_values_are_counted_on_the_gpu_too():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed: GPU check skipped")
    from micrograd_gen.generative.nonfinite import check_step, count_non_finite
    picture_on_gpu = cupy.asarray(np.array([[1.0, np.nan], [np.inf, 2.0]], np.float32))
    assert count_non_finite(picture_on_gpu) == 2
    with pytest.raises(NonFiniteError, match=r"\(2 values\) at step 7"):
        check_step("test", "step 7", "hint", loss=1.0, picture=picture_on_gpu)
