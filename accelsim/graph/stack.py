"""Trace a stack of identical layers once: export at depths 1 and 2, extend to the full depth.

An encoder is a prefix (embeddings), N layers of one structure and a suffix (final norm,
pooler). ``torch.export`` costs time linear in N (about 0.1 s of CPU a layer for ViT-B/16's
meta-device structure, more for a compressed one), while the graph it yields is affine in N:

* layer i's nodes are layer 1's with every number in their names moved on by i - 1 times its
  step from layer 0 to layer 1: the layer index (``layers.1`` -> ``layers.i``) and torch's node
  counters (``layers.1/add_7`` -> ``layers.2/add_10``; ``matmul`` counts as ``matmul_0``);
* a layer's edges to its own nodes and to the previous layer's move with it, edges to the
  prefix stay;
* the suffix's numbers move on by N - 2 times their change from depth 1 to depth 2.

:func:`trace_stacked` exports the module cut to 1 and 2 layers, checks that the two graphs have
exactly that form (the same prefix, the same layer-0 nodes, layers 0 and 1 alike but for names,
edges and precision, suffixes alike but for names and edges), builds the depth-N graph and gives
every GEMM the precision annotation of its own layer (read from the full module, as the tracer
reads it: the measured weight density differs per layer). Anything else returns ``None`` and the
caller exports the whole module. Layers whose forward depends on their index in a way their
structure does not show (e.g. every fourth layer attending globally) would escape the check;
the zoo's encoders have none, and the tests compare this graph with a full export for each
zoo family.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from accelsim.compress.precision import ATTENTION_ATTR, LINEAR_ATTR
from accelsim.graph.ir import GemmNode, Graph, Node
from accelsim.graph.trace import Precisions, export_module, graph_from_exported

if TYPE_CHECKING:
    import torch
    from torch import nn

# Below this depth the two cut exports cost about what one full export does.
MIN_DEPTH = 3
_DIGITS = re.compile(r"\d+")
# The last "/" segment of a node name: a torch node name (op, counter), then the tracer's own
# suffixes (an SDPA's three parts, a repeated name's "#k").
_TORCH_NAME = re.compile(
    r"^(?P<op>.*?)(?P<count>_\d+)?(?P<tail>(?:\.(?:qk|softmax|pv))?(?:#\d+)?)$")


def layer_stack(module: nn.Module, precisions: Precisions) -> tuple[str, int] | None:
    """``(path, depth)`` of ``module``'s repeated layers: its longest ``nn.ModuleList`` of at
    least :data:`MIN_DEPTH` children that share one structure (module types, parameter and
    buffer shapes, precision annotations but for the measured density), or None."""
    from torch import nn

    best: tuple[str, int] | None = None
    for path, sub in module.named_modules():
        if not isinstance(sub, nn.ModuleList) or len(sub) < MIN_DEPTH or not path:
            continue
        if best is not None and len(sub) <= best[1]:
            continue
        shapes = {_structure(child, f"{path}.{index}", precisions)
                  for index, child in enumerate(sub)}
        if len(shapes) == 1:
            best = (path, len(sub))
    return best


def _structure(layer: nn.Module, path: str, precisions: Precisions) -> tuple[Any, ...]:
    modules = tuple((name, type(sub).__qualname__) for name, sub in layer.named_modules())
    tensors = tuple((name, tuple(t.shape), str(t.dtype))
                    for name, t in [*layer.named_parameters(), *layer.named_buffers()])
    annotations = tuple(sorted(
        (where[len(path):], attr, dataclasses.replace(precision, weight_density=1.0))
        for (where, attr), precision in precisions.items()
        if where == path or where.startswith(f"{path}.")))
    return modules, tensors, annotations


@contextlib.contextmanager
def _cut(module: nn.Module, path: str, depth: int) -> Iterator[None]:
    """``module`` with the ModuleList at ``path`` holding its first ``depth`` layers."""
    from torch import nn

    parent_path, _, name = path.rpartition(".")
    parent = module.get_submodule(parent_path)
    full = getattr(parent, name)
    setattr(parent, name, nn.ModuleList(list(full)[:depth]))
    try:
        yield
    finally:
        setattr(parent, name, full)


def trace_stacked(module: nn.Module, inputs: dict[str, torch.Tensor], *, name: str,
                  input_shape: dict[str, int], precisions: Precisions) -> Graph | None:
    """The graph of ``module(**inputs)`` from exports at depths 1 and 2 (module docstring), or
    None when ``module`` has no layer stack or the two exports do not have the affine form."""
    found = layer_stack(module, precisions)
    if found is None:
        return None
    path, depth = found
    cut_graphs = []
    for cut_depth in (1, 2):
        with _cut(module, path, cut_depth):
            exported = export_module(module, inputs, name=name)
            cut_graphs.append(graph_from_exported(exported, module, name=name,
                                                  input_shape=input_shape,
                                                  precisions=precisions))
    return extend(cut_graphs[0], cut_graphs[1], path, depth, precisions)


def extend(one: Graph, two: Graph, path: str, depth: int,
           precisions: Precisions) -> Graph | None:
    """The depth-``depth`` graph from the graphs of the module cut to one and two layers of the
    stack at ``path``; None when they do not have the form the module docstring states."""
    only, first, second = (_layer_span(one, path, 0), _layer_span(two, path, 0),
                           _layer_span(two, path, 1))
    if only is None or first is None or second is None:
        return None
    (start, stop), (start0, stop0), (start1, stop1) = only, first, second
    prefix = two.nodes[:start0]
    layer0, layer1 = two.nodes[start0:stop0], two.nodes[start1:stop1]
    suffix_one, suffix_two = one.nodes[stop:], two.nodes[stop1:]
    if (one.nodes[:start] != prefix or one.nodes[start:stop] != layer0 or stop0 != start1
            or len(layer0) != len(layer1) or len(suffix_one) != len(suffix_two)):
        return None
    if not all(_alike(a, b) for a, b in zip(layer0, layer1, strict=True)):
        return None
    if any(_annotated(node, precisions) != node for node in (*layer0, *layer1)):
        return None  # the precision lookup below would not be the tracer's
    names = [[node.name for node in layer0], [node.name for node in layer1]]
    for index in range(2, depth):
        shifted = [_shifted(a.name, b.name, index - 1) for a, b in zip(layer0, layer1, strict=True)]
        if any(name is None for name in shifted):
            return None
        names.append([name for name in shifted if name is not None])
    kept = {node.name for node in prefix} | {""}
    nodes: list[Node] = [*prefix, *layer0, *layer1]
    for index in range(2, depth):
        renamed = {**dict(zip(names[1], names[index], strict=True)),
                   **dict(zip(names[0], names[index - 1], strict=True))}
        known = kept | set(renamed.values())
        for template, copy_name in zip(layer1, names[index], strict=True):
            copy = _moved(template, copy_name, renamed, known, precisions)
            if copy is None:
                return None
            nodes.append(copy)
    last = dict(zip(names[1], names[depth - 1], strict=True))
    known = kept | set(last.values())
    for a, b in zip(suffix_one, suffix_two, strict=True):
        suffix_name = _shifted(a.name, b.name, depth - 2)
        if suffix_name is None or dataclasses.replace(a, name=b.name, inputs=b.inputs) != b:
            return None
        last[b.name] = suffix_name
        known.add(suffix_name)
        moved = _moved(b, suffix_name, last, known, None)
        if moved is None:
            return None
        nodes.append(moved)
    return Graph(name=two.name, nodes=tuple(nodes), input_shape=dict(two.input_shape))


def _alike(a: Node, b: Node) -> bool:
    """Whether ``a`` is ``b`` but for its name, edges and (a GEMM's) precision."""
    if type(a) is not type(b):
        return False
    same = dataclasses.replace(a, name=b.name, inputs=b.inputs)
    if isinstance(b, GemmNode):
        same = dataclasses.replace(same, weight_bits=b.weight_bits, act_bits=b.act_bits,
                                   sparsity=b.sparsity, weight_density=b.weight_density)
    return same == b


def _layer_span(graph: Graph, path: str, index: int) -> tuple[int, int] | None:
    """``[start, stop)`` of the nodes of layer ``index``, when they are one non-empty run."""
    layer = f"{path}.{index}"
    inside = [k for k, node in enumerate(graph.nodes)
              if node.name == layer or node.name.startswith((f"{layer}.", f"{layer}/"))]
    if not inside or inside != list(range(inside[0], inside[-1] + 1)):
        return None
    return inside[0], inside[-1] + 1


def _moved(template: Node, name: str, renamed: dict[str, str], known: set[str],
           precisions: Precisions | None) -> Node | None:
    """``template`` as the node ``name``: its edges renamed (an edge that lands outside the
    ``known`` nodes breaks the form: None), its precision re-read when ``precisions`` is
    given."""
    inputs = None
    if template.inputs is not None:
        inputs = tuple(renamed.get(source, source) for source in template.inputs)
        if any(source not in known for source in inputs):
            return None
    moved = dataclasses.replace(template, name=name, inputs=inputs)
    return moved if precisions is None else _annotated(moved, precisions)


def _annotated(node: Node, precisions: Precisions) -> Node:
    """``node`` with the precision the tracer gives a GEMM of its name: the annotation of the
    innermost module on its path that has one (linear or attention, by kind)."""
    if not isinstance(node, GemmNode):
        return node
    where = node.name.partition("/")[0] if node.weight_is_activation else node.name
    where = where.partition("#")[0]
    attr = ATTENTION_ATTR if node.weight_is_activation else LINEAR_ATTR
    precision = None
    while precision is None:
        precision = precisions.get((where, attr))
        if not where:
            break
        where = where.rpartition(".")[0]
    return dataclasses.replace(
        node,
        weight_bits=precision.weight_bits if precision else None,
        act_bits=precision.act_bits if precision else None,
        sparsity=precision.sparsity if precision else "dense",
        weight_density=precision.weight_density if precision else 1.0,
    )


def _shifted(a: str, b: str, steps: int) -> str | None:
    """``b`` with each number moved on ``steps`` times its step from ``a`` (torch counters
    written out); None when the two names differ in more than numbers."""
    first, second = _counted(a), _counted(b)
    if _DIGITS.sub("0", first) != _DIGITS.sub("0", second):
        return None
    steps_of = [int(y) + steps * (int(y) - int(x))
                for x, y in zip(_DIGITS.findall(first), _DIGITS.findall(second), strict=True)]
    if any(value < 0 for value in steps_of):
        return None
    parts = _DIGITS.split(second)
    return _uncounted("".join(_interleave(parts, [str(v) for v in steps_of])))


def _interleave(parts: Sequence[str], numbers: Sequence[str]) -> Iterator[str]:
    for part, number in zip(parts, [*numbers, ""], strict=True):
        yield part
        yield number


def _counted(name: str) -> str:
    """``name`` with the counter of its torch node name written out (``matmul`` ->
    ``matmul_0``), so that every layer's copy has the same numbers."""
    head, slash, last = name.rpartition("/")
    if not slash:
        return name
    match = _TORCH_NAME.match(last)
    assert match is not None  # every string matches (all groups are optional)
    return f"{head}/{match['op']}{match['count'] or '_0'}{match['tail']}"


def _uncounted(name: str) -> str:
    """The inverse of :func:`_counted`: a counter of 0 is torch's first, unnumbered name."""
    head, slash, last = name.rpartition("/")
    if not slash:
        return name
    match = _TORCH_NAME.match(last)
    assert match is not None
    count = "" if match["count"] == "_0" else match["count"]
    return f"{head}/{match['op']}{count}{match['tail']}"
