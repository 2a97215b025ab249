"""micrograd_gen.viz.draw_graph: the graph behind a tensor as DOT text and as a picture."""
import re
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import micrograd_gen as mg
from micrograd_gen import nn, ops, viz


def mlp_loss(seed=0):
    """A two-layer MLP's loss on 8 samples: x (8, 4) -> Dense(16, relu) -> Dense(3) -> CE."""
    nn.clear_session()
    nn.set_seed(seed)
    model = nn.Sequential([nn.Dense(16, activation="relu", input_shape=(4,)), nn.Dense(3)])
    rng = np.random.default_rng(seed)
    x = mg.Tensor(rng.normal(size=(8, 4)))
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)]
    return ops.categorical_crossentropy(y, model(x), from_logits=True), model


def parse_dot(text):
    """{node id: [label lines]} and [(source label, target label)] from draw_graph's DOT."""
    labels = {m.group(1): m.group(2).split("\\n")
              for m in re.finditer(r'^\s+(n\d+) \[label="((?:[^"\\]|\\.)*)"', text, re.M)}
    edges = [(labels[a][0], labels[b][0])
             for a, b in re.findall(r"^\s+(n\d+) -> (n\d+);", text, re.M)]
    return labels, edges


def test_mlp_loss_dot_has_every_op_leaf_shape_and_edge():
    loss, _ = mlp_loss()
    labels, edges = parse_dot(viz.draw_graph(loss))
    by_title = {lines[0]: lines for lines in labels.values()}
    # The ops, with the layer that made each layer's output, and their output shapes.
    assert by_title["Affine"][1] == "(8, 16)"                 # x @ kernel + bias, one op
    assert by_title["Relu: dense"][1] == "(8, 16)"
    assert by_title["Affine: dense_1"][1] == "(8, 3)"
    assert by_title["SoftmaxCrossEntropy"][1] == "(8,)"
    assert by_title["Mean"][1] == "()"
    # The leaves: four weights with their names and shapes, and the two data inputs.
    assert by_title["dense/kernel"][1] == "(4, 16)"
    assert by_title["dense/bias"][1] == "(16,)"
    assert by_title["dense_1/kernel"][1] == "(16, 3)"
    assert by_title["dense_1/bias"][1] == "(3,)"
    titles = [lines[0] for lines in labels.values()]
    assert titles.count("input") == 2 and len(titles) == 11
    # Edges go the way data flows, ending at the loss.
    for edge in [("dense/kernel", "Affine"), ("dense/bias", "Affine"), ("input", "Affine"),
                 ("Affine", "Relu: dense"), ("Relu: dense", "Affine: dense_1"),
                 ("dense_1/bias", "Affine: dense_1"), ("Affine: dense_1", "SoftmaxCrossEntropy"),
                 ("SoftmaxCrossEntropy", "Mean")]:
        assert edge in edges
    assert len(edges) == 10
    assert not any(b in ("dense/kernel", "input") for _, b in edges)
    # No gradients yet: nothing says |grad|.
    assert "|grad|" not in viz.draw_graph(loss)


def test_gradient_norms_after_backward_with_retained_graph():
    loss, model = mlp_loss()
    loss.backward(retain_graph=True)
    labels, _ = parse_dot(viz.draw_graph(loss))
    by_title = {lines[0]: lines for lines in labels.values()}
    for name, weight in zip(model.weight_names, model.weights):
        expected = float(np.linalg.norm(weight.grad.astype(np.float64)))
        shown = by_title[weight.name][2]
        assert shown.startswith("|grad| ")
        assert float(shown.split()[1]) == pytest.approx(expected, rel=5e-3), name
    assert "|grad|" not in " ".join(by_title["input"])  # data carries no gradient


def test_a_freed_graph_is_a_clear_error():
    loss, _ = mlp_loss()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        viz.draw_graph(loss)


def test_a_leaf_alone_and_a_constant():
    x = mg.Tensor(np.ones((2, 3)), requires_grad=True, name="x")
    labels, edges = parse_dot(viz.draw_graph(x))
    assert list(labels.values()) == [["x", "(2, 3)"]] and edges == []
    labels, edges = parse_dot(viz.draw_graph(x * 2))
    assert sorted(lines[0] for lines in labels.values()) == ["2", "Multiply", "x"]
    assert sorted(edges) == [("2", "Multiply"), ("x", "Multiply")]


def test_collapse_merges_each_layer_into_one_node():
    loss, _ = mlp_loss()
    full, _ = parse_dot(viz.draw_graph(loss))
    labels, edges = parse_dot(viz.draw_graph(loss, collapse="dense"))
    by_title = {lines[0]: lines for lines in labels.values()}
    assert len(labels) == 6 < len(full)
    # dense: affine, relu and its 4*16 + 16 weights; dense_1: affine, 16*3 + 3 weights.
    assert by_title["dense"][1:] == ["2 ops, 80 weights", "(8, 16)"]
    assert by_title["dense_1"][1:] == ["1 op, 51 weights", "(8, 3)"]
    assert ("input", "dense") in edges and ("dense", "dense_1") in edges
    assert ("dense_1", "SoftmaxCrossEntropy") in edges
    # A function picks the blocks too; a wrong type is named.
    labels, _ = parse_dot(viz.draw_graph(loss, collapse=lambda name: name == "dense_1"))
    assert len(labels) == 11 - 3 + 1  # dense_1's affine and two weights become one
    with pytest.raises(TypeError, match="collapse"):
        viz.draw_graph(loss, collapse=3)


def test_collapse_takes_inception_blocks_between_their_outputs():
    from micrograd_gen import applications
    model = applications.InceptionV3(weights=None)
    x = mg.Tensor(np.random.default_rng(0).normal(size=(1, 75, 75, 3)), requires_grad=True)
    loss = applications.feature_extractor(model, ["mixed2"])(x)["mixed2"].mean()
    full, _ = parse_dot(viz.draw_graph(loss))
    labels, edges = parse_dot(viz.draw_graph(loss, collapse="mixed"))
    by_title = {lines[0]: lines for lines in labels.values()}
    assert len(labels) < len(full) // 3
    assert [by_title[f"mixed{i}"][2] for i in range(3)] == [
        "(1, 7, 7, 256)", "(1, 7, 7, 288)", "(1, 7, 7, 288)"]
    # Each block starts at the one tensor its branches share: the stem's last pooling for mixed0.
    assert ("MaxPool2D: max_pooling2d_2", "mixed0") in edges
    assert ("mixed0", "mixed1") in edges and ("mixed1", "mixed2") in edges
    assert ("mixed2", "Mean") in edges
    # The block's weights are inside it; what a conv layer inside mixed0 owns is not drawn.
    assert not any(t.startswith("conv2d_6/") for t in by_title)
    weights = sum(t.size for layer in model.layers if layer.name in model.ancestors(["mixed0"])
                  and layer.name not in model.ancestors(["max_pooling2d_2"])
                  for t in layer.weights if t.requires_grad)
    assert by_title["mixed0"][1].endswith(f" {weights:,} weights")


def svg_root(path):
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


def test_builtin_svg_is_well_formed_and_draws_every_node(tmp_path):
    loss, _ = mlp_loss()
    loss.backward(retain_graph=True)
    path = tmp_path / "graph.svg"
    text = viz.draw_graph(loss, path, renderer="builtin")
    labels, edges = parse_dot(text)
    root = svg_root(path)
    ns = "{http://www.w3.org/2000/svg}"
    boxes = root.findall(f"{ns}rect")[1:]  # the first is the white background
    assert len(boxes) == len(labels)
    assert len(root.findall(f"{ns}path")) == len(edges)
    words = [t.text for t in root.iter(f"{ns}text")]
    for lines in labels.values():
        for line in lines:
            assert line in words
    # No two boxes overlap, and every box lies inside the picture.
    width, height = float(root.get("width")), float(root.get("height"))
    rects = [tuple(float(b.get(k)) for k in ("x", "y", "width", "height")) for b in boxes]
    for i, (x, y, w, h) in enumerate(rects):
        assert x >= 0 and y >= 0 and x + w <= width + 0.5 and y + h <= height + 0.5
        for x2, y2, w2, h2 in rects[i + 1:]:
            assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y
    # The loss is the last row: each edge goes down the picture.
    assert sorted(rects, key=lambda r: r[1])[-1] == rects[-1]


def test_svg_without_graphviz_uses_the_builtin_layout(tmp_path, monkeypatch):
    loss, _ = mlp_loss()
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    viz.draw_graph(loss, tmp_path / "graph.svg")
    assert "micrograd_gen.viz" in (tmp_path / "graph.svg").read_text()
    with pytest.raises(RuntimeError, match="Graphviz.*\\.svg"):
        viz.draw_graph(loss, tmp_path / "graph.png")
    assert not (tmp_path / "graph.png").exists()
    viz.draw_graph(loss, tmp_path / "graph.dot")
    assert (tmp_path / "graph.dot").read_text() == viz.draw_graph(loss)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.dot", "graph.svg"]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_graphviz_renders_svg_and_png(tmp_path):
    loss, _ = mlp_loss()
    viz.draw_graph(loss, tmp_path / "graph.svg")
    root = svg_root(tmp_path / "graph.svg")
    assert "SoftmaxCrossEntropy" in [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    viz.draw_graph(loss, tmp_path / "graph.png")
    assert (tmp_path / "graph.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_are_named(tmp_path):
    loss, _ = mlp_loss()
    with pytest.raises(TypeError, match="Tensor"):
        viz.draw_graph(np.ones(3))
    with pytest.raises(ValueError, match="renderer"):
        viz.draw_graph(loss, tmp_path / "g.svg", renderer="cairo")
    with pytest.raises(ValueError, match="extension"):
        viz.draw_graph(loss, tmp_path / "graph")
    with pytest.raises(ValueError, match="svg only"):
        viz.draw_graph(loss, tmp_path / "g.png", renderer="builtin")
    assert list(tmp_path.iterdir()) == []


def test_an_op_outside_a_block_may_read_from_inside_it(tmp_path):
    x = mg.Tensor(np.ones((2, 3)), name="x")
    w = mg.Tensor(np.full((3, 4), 0.5), requires_grad=True, name="w")
    inner = x @ w                        # inside the block, unnamed
    side = inner * 2                     # outside the block, reading from inside it
    out = ops.relu(inner)
    out.name = "block0"
    loss = side.sum() + out.sum()
    labels, edges = parse_dot(viz.draw_graph(loss, tmp_path / "g.svg", collapse="block",
                                             renderer="builtin"))
    assert sorted(lines[0] for lines in labels.values()) == ["2", "Add", "Multiply", "Sum",
                                                             "Sum", "block0", "x"]
    assert ("block0", "Multiply") in edges and ("x", "block0") in edges
    svg_root(tmp_path / "g.svg")
