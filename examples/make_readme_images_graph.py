"""Make the README's drawing of a graph: docs/images/graph_mlp.svg.

    python examples/make_readme_images_graph.py

A two-layer MLP (4 -> Dense(16, relu) -> Dense(3)) on 8 samples, its softmax cross-entropy loss,
one backward pass that keeps the graph (`retain_graph=True`), then `viz.draw_graph` with the
built-in layout (what a reader without Graphviz gets): each op with its output shape and the layer
that made it, each weight with its shape and the norm of its gradient.
"""
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import micrograd_gen as mg  # noqa: E402
from micrograd_gen import nn, ops, viz  # noqa: E402


def main():
    nn.clear_session()
    nn.set_seed(0)
    model = nn.Sequential([nn.Dense(16, activation="relu", input_shape=(4,)), nn.Dense(3)])
    rng = np.random.default_rng(0)
    x = mg.Tensor(rng.normal(size=(8, 4)))
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)]
    loss = ops.categorical_crossentropy(y, model(x), from_logits=True)
    loss.backward(retain_graph=True)
    path = ROOT / "docs" / "images" / "graph_mlp.svg"
    path.parent.mkdir(parents=True, exist_ok=True)
    viz.draw_graph(loss, path, renderer="builtin")
    print(f"wrote {path} (loss {float(loss):.4f})")


if __name__ == "__main__":
    main()
