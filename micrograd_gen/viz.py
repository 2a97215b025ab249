"""See the graph that made a tensor: micrograd's `draw_dot`, for tensors.

    dot_text = draw_graph(loss)                  # Graphviz DOT text
    draw_graph(loss, "graph.svg")                # a picture (Graphviz's `dot` if installed,
                                                 # else a small layered layout drawn here)
    draw_graph(dream_loss, "inception.svg", collapse="mixed")   # one box per Inception block

One node per op (its name, its output shape, and the layer that made it when a layer did) and one
per leaf (its name, shape and, once backward has run, the norm of its gradient); edges run the way
the data flows. The engine frees the graph as backward walks it, so draw before backward, or run
`backward(retain_graph=True)` to draw after it with the gradients.

Collapsing. A tensor made by a layer carries the layer's name. `collapse="mixed"` takes every
tensor named mixed, mixed0, mixed_1, ... as the output of a block, and the block as everything
between that output and the one tensor all of its input flows through (the previous block's
output, for InceptionV3's mixed blocks): those ops, and the weights only they read, become one
node. `collapse` may also be a function name -> bool.
"""
import heapq
import html
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np

from . import backend
from .tensor import Tensor

_FREED = ("draw_graph: the graph that made this tensor was freed by backward(); draw it before "
          "backward(), or run backward(retain_graph=True) to keep it (the leaves then show their "
          "gradient norms)")


# ---- the graph -----------------------------------------------------------------------------------
class _Node:
    """One box: its key (id of the op or leaf), kind ("op", "block", "parameter", "input", with
    " output" added for the tensor drawn) and its lines of text."""

    def __init__(self, key, kind, lines):
        self.key, self.kind, self.lines = key, kind, lines


def _walk(root):
    """(ops, leaves, edges, order, data) of the graph behind `root`.

    ops: {id(ctx): [type name, {output index: tensor}]}; leaves: {id(tensor): tensor};
    edges: [(source key, target key)] with a key an op's id(ctx) or a leaf's id(tensor);
    order: every key, each after the keys it reads; data: the leaves some op reads as its first
    input (ops take their data first and their weights after it: matmul(x, kernel)).
    The only contact with the engine's insides: `tensor._ctx` (the op that made a tensor, None
    for a leaf), `tensor._index` (which of the op's outputs), `ctx.parents` and `ctx.freed`.
    """
    ops, leaves, edges, order, data = {}, {}, [], [], set()
    if root._ctx is None:
        leaves[id(root)] = root
        return ops, leaves, edges, [id(root)], {id(root)}
    ops[id(root._ctx)] = [type(root._ctx).__name__, {root._index: root}]
    seen, stack = {id(root._ctx)}, [(root._ctx, iter(_parents(root._ctx)))]
    while stack:  # depth-first, without recursion (an Inception graph is hundreds of ops deep)
        ctx, parents = stack[-1]
        for p in parents:
            if p._ctx is None:
                if id(p) not in leaves:
                    leaves[id(p)] = p
                    order.append(id(p))
                continue
            ops.setdefault(id(p._ctx), [type(p._ctx).__name__, {}])[1][p._index] = p
            if id(p._ctx) not in seen:
                seen.add(id(p._ctx))
                stack.append((p._ctx, iter(_parents(p._ctx))))
                break
        else:
            stack.pop()
            order.append(id(ctx))
            parents = _parents(ctx)
            for p in parents:
                edges.append((id(p if p._ctx is None else p._ctx), id(ctx)))
            if parents and parents[0]._ctx is None:
                data.add(id(parents[0]))
    return ops, leaves, list(dict.fromkeys(edges)), order, data


def _parents(ctx):
    if getattr(ctx, "freed", False):
        raise RuntimeError(_FREED)
    return [p for p in getattr(ctx, "parents", ()) if p is not None]


def _shape(shape):
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _leaf_lines(t):
    if t.name:
        name = t.name
    elif t.size == 1 and not t.requires_grad:
        name = f"{t.item():.4g}"  # a constant such as the 2 in x * 2
    else:
        name = "input"
    lines = [name, _shape(t.shape)]
    if t.dtype != np.float32:
        lines[-1] += f" {t.dtype}"
    if t.grad is not None:
        norm = float(np.linalg.norm(backend.to_numpy(t.grad).astype(np.float64).ravel()))
        lines.append(f"|grad| {norm:.3g}")
    return lines


def _op_lines(name, outputs):
    made_by = [t.name for t in outputs.values() if t.name]
    title = f"{name}: {made_by[0]}" if made_by else name
    shapes = [_shape(outputs[i].shape) for i in sorted(outputs)]
    return [title, " ".join(shapes)]


def _matcher(collapse):
    if collapse is None:
        return None
    if callable(collapse):
        return collapse
    if isinstance(collapse, str):
        pattern = re.compile(re.escape(collapse) + r"(_?\d+)?")
        return lambda name: pattern.fullmatch(name) is not None
    raise TypeError(f"draw_graph: collapse must be a layer name prefix (str) or a function "
                    f"name -> bool, got {type(collapse).__name__}")


def _blocks(ops, edges, order, matches):
    """{op key: block output's op key} for every op inside a collapsed block.

    A block ends at an op whose output is named as `matches` asks. It reaches back, latest op
    first, until all of its input flows through one layer's output (the block's entry, left out:
    for InceptionV3's mixed1 that is mixed0), or until nothing is left upstream. An op inside a
    layer (a Dense's matmul) has an unnamed output, so a chain of them is taken whole. Ops already
    in an earlier block are never taken.
    """
    position = {key: i for i, key in enumerate(order)}
    inputs = {}
    for src, dst in edges:
        if src in ops:
            inputs.setdefault(dst, []).append(src)

    def named(key):
        return any(t.name for t in ops[key][1].values())

    ends = [key for key in order if key in ops
            and any(t.name and matches(t.name) for t in ops[key][1].values())]
    block_of = {}
    for end in ends:
        block_of[end] = end
        frontier = set(inputs.get(end, ()))
        while frontier:
            if len(frontier) == 1:
                (only,) = frontier
                if named(only) or only in block_of:
                    break  # the entry
            latest = max(frontier, key=position.__getitem__)
            frontier.discard(latest)
            if latest in block_of:  # another block's op (its output, say): a wall, not ours
                continue
            block_of[latest] = end
            frontier.update(inputs.get(latest, ()))
    return block_of


def _build(root, collapse):
    """Nodes (in data-flow order) and edges to draw, with collapsed blocks merged."""
    ops, leaves, edges, order, data = _walk(root)
    matches = _matcher(collapse)
    block_of = _blocks(ops, edges, order, matches) if matches else {}
    # A block's weights go into it: the leaves that only it reads, other than data.
    readers = {}
    for src, dst in edges:
        readers.setdefault(src, set()).add(block_of.get(dst, dst))
    for key in leaves:
        if key not in data and len(readers.get(key, ())) == 1:
            (reader,) = readers[key]
            if reader in ops and block_of.get(reader) == reader:
                block_of[key] = reader
    nodes = {}
    members = {}
    for key, block in block_of.items():
        members.setdefault(block, []).append(key)
    for key in order:
        if key in block_of:
            block = block_of[key]
            if key != block:
                continue
            inside = members[block]
            n_ops = sum(1 for k in inside if k in ops)
            n_weights = sum(leaves[k].size for k in inside if k in leaves)
            name, outputs = ops[key]
            title = next(t.name for t in outputs.values() if t.name and matches(t.name))
            lines = [title, f"{n_ops} op{'s' * (n_ops != 1)}, {n_weights:,} weights",
                     " ".join(_shape(outputs[j].shape) for j in sorted(outputs))]
            nodes[key] = _Node(key, "block", lines)
        elif key in ops:
            nodes[key] = _Node(key, "op", _op_lines(*ops[key]))
        else:
            kind = "parameter" if leaves[key].requires_grad else "input"
            nodes[key] = _Node(key, kind, _leaf_lines(leaves[key]))
    root_key = id(root._ctx) if root._ctx is not None else id(root)
    nodes[block_of.get(root_key, root_key)].kind += " output"
    drawn = []
    for src, dst in edges:
        src, dst = block_of.get(src, src), block_of.get(dst, dst)
        if src != dst:
            drawn.append((src, dst))
    return list(nodes.values()), list(dict.fromkeys(drawn))


# ---- DOT -----------------------------------------------------------------------------------------
_FILL = {"op": "#fff7d6", "block": "#dcefd9", "parameter": "#d6e6f5", "input": "#eeeeee"}


def _dot(nodes, edges):
    ids = {n.key: f"n{i}" for i, n in enumerate(nodes)}
    out = ["digraph graph_of_tensor {", "  rankdir=TB;",
           '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
           '  edge [color="#555555", arrowsize=0.6];']
    for n in nodes:
        label = "\\n".join(line.replace("\\", "\\\\").replace('"', '\\"') for line in n.lines)
        kind = n.kind.split()[0]
        extra = ", penwidth=2" if n.kind.endswith("output") else ""
        extra += ", shape=box3d" if kind == "block" else ""
        extra += ", shape=ellipse" if kind in ("parameter", "input") else ""
        out.append(f'  {ids[n.key]} [label="{label}", fillcolor="{_FILL[kind]}"{extra}];')
    for src, dst in edges:
        out.append(f"  {ids[src]} -> {ids[dst]};")
    out.append("}")
    return "\n".join(out) + "\n"


# ---- a small layered layout, for when Graphviz is not installed ----------------------------------
_FONT, _CHAR_W, _LINE_H, _PAD, _GAP_X, _GAP_Y = 11, 6.4, 14, 8, 18, 36


def _topological(nodes, edges):
    """The node keys, each after every node with an edge into it (Kahn's algorithm; ties in the
    order the nodes came). A block drawn as one node can be read before all of its ops have run
    (an op outside reads a tensor from inside it), so the data-flow order of the ops is not
    always one of the drawing."""
    waiting = {n.key: 0 for n in nodes}
    after = {}
    for src, dst in edges:
        waiting[dst] += 1
        after.setdefault(src, []).append(dst)
    position = {n.key: i for i, n in enumerate(nodes)}
    ready = [(position[k], k) for k, w in waiting.items() if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, key = heapq.heappop(ready)
        order.append(key)
        for dst in after.get(key, ()):
            waiting[dst] -= 1
            if waiting[dst] == 0:
                heapq.heappush(ready, (position[dst], dst))
    if len(order) != len(nodes):
        raise RuntimeError("draw_graph: the drawing has a cycle (a collapsed block both feeds and "
                           "reads another node); draw it without collapse")
    return order


def _layout(nodes, edges):
    """Positions for a top-to-bottom drawing (the Sugiyama scheme, kept small): a node's rank is
    its longest path from a source; edges that skip ranks pass through invisible points; nodes
    within a rank are ordered by the mean position of their neighbours, a few sweeps down and up,
    to cut crossings. Returns ({key: (x, y, w, h)}, [(source key, target key, [(x, y), ...])])."""
    preds = {n.key: [] for n in nodes}
    for src, dst in edges:
        preds[dst].append(src)
    rank = {}
    for key in _topological(nodes, edges):
        rank[key] = 1 + max((rank[p] for p in preds[key]), default=-1)
    readers = {}
    for src, dst in edges:
        readers.setdefault(src, []).append(rank[dst])
    for n in nodes:  # a leaf sits just above its first reader, not all leaves on the top row
        if not preds[n.key] and n.key in readers:
            rank[n.key] = min(readers[n.key]) - 1
    size = {n.key: (max(len(line) for line in n.lines) * _CHAR_W + 2 * _PAD,
                    len(n.lines) * _LINE_H + 2 * _PAD) for n in nodes}
    # Chains of invisible points for edges that skip ranks.
    chains, up, down = [], {}, {}
    for src, dst in edges:
        chain = [src] + [("via", src, dst, r) for r in range(rank[src] + 1, rank[dst])] + [dst]
        for a, b in zip(chain, chain[1:]):
            down.setdefault(a, []).append(b)
            up.setdefault(b, []).append(a)
        for point in chain[1:-1]:
            rank[point], size[point] = point[3], (0, 0)
        chains.append((src, dst, chain))
    layers = {}
    for key in rank:  # data-flow order, then the points in edge order
        layers.setdefault(rank[key], []).append(key)
    layers = [layers[r] for r in sorted(layers)]
    for sweep in range(8):
        downward = sweep % 2 == 0
        for layer in (layers[1:] if downward else layers[-2::-1]):
            neighbours = up if downward else down
            place = {k: i for row in layers for i, k in enumerate(row)}
            mean = {k: (sum(place[m] for m in neighbours.get(k, ())) / len(neighbours[k])
                        if neighbours.get(k) else place[k]) for k in layer}
            layer.sort(key=mean.__getitem__)
    # x: each node as close as it can get to its neighbours' mean, keeping the order and the gaps.
    x = {}
    for row in layers:
        left = 0.0
        for k in row:
            x[k] = left + size[k][0] / 2
            left += size[k][0] + _GAP_X
    sources = {n.key for n in nodes if not preds[n.key]}

    def pulls(k, neighbours):
        # An op follows the ops it reads rather than its weights, which come to it on the way up
        # (otherwise each weight beside a chain drags the chain sideways, rank after rank).
        near = neighbours.get(k, ())
        return [m for m in near if m not in sources] or near

    for sweep in range(6):
        for row in (layers if sweep % 2 == 0 else layers[::-1]):
            neighbours = up if sweep % 2 == 0 else down
            want = {}
            for k in row:
                near = pulls(k, neighbours)
                want[k] = sum(x[m] for m in near) / len(near) if near else x[k]
            _place_row(row, want, x, size, sources)
    y, top = {}, _GAP_Y / 2
    for row in layers:
        height = max(size[k][1] for k in row)
        for k in row:
            y[k] = top + height / 2
        top += height + _GAP_Y
    left = min(x[k] - size[k][0] / 2 for k in x) - _GAP_X / 2
    boxes = {n.key: (x[n.key] - left, y[n.key], *size[n.key]) for n in nodes}
    paths = []
    for src, dst, chain in chains:
        points = [(x[src] - left, y[src] + size[src][1] / 2)]
        points += [(x[p] - left, y[p]) for p in chain[1:-1]]
        points.append((x[dst] - left, y[dst] - size[dst][1] / 2))
        paths.append((src, dst, points))
    return boxes, paths


def _place_row(row, want, x, size, sources):
    """Set x for one rank: ops (and edge points) in their order, each as near its wish as the
    gaps allow; then each leaf at the free place nearest its wish, so a weight beside a chain of
    ops never pushes the chain aside."""
    chain = [k for k in row if k not in sources]
    for i, k in enumerate(chain):
        x[k] = want[k]
        if i:
            prev = chain[i - 1]
            x[k] = max(x[k], x[prev] + (size[prev][0] + size[k][0]) / 2 + _GAP_X)
    if chain:  # the pass above only pushes right: give the mean drift back
        drift = sum(x[k] - want[k] for k in chain) / len(chain)
        for k in chain:
            x[k] -= drift
    taken = [(x[k] - size[k][0] / 2, x[k] + size[k][0] / 2) for k in chain]
    for k in sorted((k for k in row if k in sources), key=want.__getitem__):
        reach = size[k][0] / 2 + _GAP_X  # from its centre to the nearest neighbour it may touch
        candidates = [want[k]] + [b + reach for _, b in taken] + [a - reach for a, _ in taken]
        free = [c for c in candidates
                if all(c + reach <= a + 1e-6 or c - reach >= b - 1e-6 for a, b in taken)]
        x[k] = min(free, key=lambda c: abs(c - want[k]))
        taken.append((x[k] - size[k][0] / 2, x[k] + size[k][0] / 2))


def _svg(nodes, edges):
    boxes, paths = _layout(nodes, edges)
    width = max(x + w / 2 for x, _, w, _ in boxes.values()) + _GAP_X / 2
    height = max(y + h / 2 for _, y, _, h in boxes.values()) + _GAP_Y / 2
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="Helvetica, Arial, sans-serif" '
           f'font-size="{_FONT}">',
           "<title>graph of a tensor (micrograd_gen.viz)</title>",
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555555"/>'
           "</marker></defs>",
           '<rect width="100%" height="100%" fill="white"/>']
    for _, _, points in paths:
        d = f"M{points[0][0]:.1f},{points[0][1]:.1f}"
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            mid = (y0 + y1) / 2  # vertical tangents at both ends: smooth bends through the ranks
            d += f" C{x0:.1f},{mid:.1f} {x1:.1f},{mid:.1f} {x1:.1f},{y1:.1f}"
        out.append(f'<path d="{d}" fill="none" stroke="#555555" marker-end="url(#arrow)"/>')
    for n in nodes:
        x, y, w, h = boxes[n.key]
        kind = n.kind.split()[0]
        radius = h / 2 if kind in ("parameter", "input") else 5
        stroke = 2 if n.kind.endswith("output") else 1
        out.append(f'<rect x="{x - w / 2:.1f}" y="{y - h / 2:.1f}" width="{w:.1f}" '
                   f'height="{h:.1f}" rx="{radius:.1f}" fill="{_FILL[kind]}" stroke="#333333" '
                   f'stroke-width="{stroke}"/>')
        first = y - h / 2 + _PAD + _LINE_H * 0.75
        for i, line in enumerate(n.lines):
            weight = ' font-weight="bold"' if i == 0 else ""
            out.append(f'<text x="{x:.1f}" y="{first + i * _LINE_H:.1f}" '
                       f'text-anchor="middle"{weight}>{html.escape(line)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ---- the public function -------------------------------------------------------------------------
def draw_graph(tensor, path=None, collapse=None, renderer="auto"):
    """The graph that made `tensor` as Graphviz DOT text; with `path`, also a picture there.

    path:      `.dot` (the text), `.svg` (Graphviz's `dot` when it is on PATH, else drawn here),
               or any other format `dot -T` knows (`.png`, `.pdf`; these need Graphviz).
    collapse:  a layer name prefix ("mixed": mixed0, mixed1, ...) or a function name -> bool;
               each block ending at a tensor of such a name is drawn as one node.
    renderer:  "auto", "dot" (Graphviz, required) or "builtin" (the layout here, `.svg` only).
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"draw_graph: expected a Tensor, got {type(tensor).__name__}")
    if renderer not in ("auto", "dot", "builtin"):
        raise ValueError(f"draw_graph: renderer must be 'auto', 'dot' or 'builtin', "
                         f"got {renderer!r}")
    nodes, edges = _build(tensor, collapse)
    dot_text = _dot(nodes, edges)
    if path is None:
        return dot_text
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if not fmt:
        raise ValueError(f"draw_graph: cannot tell the picture format of {str(path)!r}: give it "
                         f"an extension (.svg, .dot, .png, ...)")
    dot = shutil.which("dot")
    if fmt == "dot":
        picture = dot_text.encode()
    elif renderer == "builtin" or (renderer == "auto" and fmt == "svg" and dot is None):
        if fmt != "svg":
            raise ValueError(f"draw_graph: the built-in layout writes .svg only, not "
                             f"{str(path)!r}")
        picture = _svg(nodes, edges).encode()
    elif dot is None:
        raise RuntimeError(f"draw_graph: writing {str(path)!r} needs Graphviz's `dot` program, "
                           f"which is not on PATH; install Graphviz, or write a .svg (drawn "
                           f"without Graphviz) or .dot file instead")
    else:
        done = subprocess.run([dot, f"-T{fmt}"], input=dot_text.encode(), capture_output=True,
                              timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"draw_graph: `dot -T{fmt}` failed for {str(path)!r}: "
                               f"{done.stderr.decode(errors='replace').strip()}")
        picture = done.stdout
    # Temporary file + rename: an interrupted run never leaves half a picture under the name.
    # (open(..., "xb") rather than mkstemp, whose files only their owner may read.)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with open(partial, "xb") as f:
            f.write(picture)
        os.replace(partial, path)
    except BaseException:
        if partial.exists():
            partial.unlink()
        raise
    return dot_text
