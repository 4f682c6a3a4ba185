"""Per-group formats: which GEMMs a search assigns together, and the graph an assignment makes.

A *format* is one linear GEMM's operand precision: weight bits, activation bits, and whether its
weight is 2:4 sparse. A *group* is a set of encoder linears that always share a format, by
encoder block (``block``: the six linears of block i), by input site (``site``: the Q/K/V, the
attention output, FFN-up or FFN-down projections of every block; accelsim.compress.sites), or by
both (``block_site``). An *assignment* gives each group one format.

Attention's QK^T / PV matmuls and linears outside the encoder blocks keep the widths the traced
template gives them: the search does not choose them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from accelsim.compress.sites import BLOCK_SITES, site_of
from accelsim.errors import AccelsimError
from accelsim.graph.ir import GemmNode, Graph

Grouping = Literal["block", "site", "block_site"]
GROUPINGS: tuple[str, ...] = ("block", "site", "block_site")
_BLOCK = re.compile(r"(?:^|\.)(?:layer|layers)\.(\d+)\.")


@dataclass(frozen=True, order=True)
class Format:
    """One GEMM's precision choice; ``name`` is the recipe-style label (``w4a8_sp24``)."""

    weight_bits: int
    act_bits: int
    sparse: bool

    @property
    def name(self) -> str:
        return f"w{self.weight_bits}a{self.act_bits}" + ("_sp24" if self.sparse else "")

    @property
    def sparsity(self) -> Literal["dense", "2:4"]:
        return "2:4" if self.sparse else "dense"


REFERENCE = Format(8, 8, False)
"""The point the sensitivities are measured from: every group at 8-bit weights and activations,
dense (the W8A8 recipe)."""


def parse_format(text: str, where: str) -> Format:
    """``w4a8_sp24`` -> Format; one line otherwise."""
    match = re.fullmatch(r"w(4|8)a(4|8)(_sp24)?", text) if isinstance(text, str) else None
    if match is None:
        raise AccelsimError(f"{where}: {text!r} is not a format; allowed: w4a4, w4a8, w8a4, "
                            "w8a8, each optionally with _sp24 (2:4 weights)")
    return Format(int(match[1]), int(match[2]), bool(match[3]))


def group_of(name: str, grouping: Grouping) -> str | None:
    """The group of the GEMM called ``name`` (None: not an encoder linear)."""
    block = _BLOCK.search(name)
    if block is None:
        return None
    try:
        site = site_of(name)
    except AccelsimError:
        return None
    if grouping == "block":
        return f"block{block[1]}"
    if grouping == "site":
        return site
    return f"block{block[1]}.{site}"


@dataclass(frozen=True)
class Groups:
    """The groups of a graph: names in model order and, per group, its GEMM node indices."""

    grouping: Grouping
    names: tuple[str, ...]
    members: tuple[tuple[int, ...], ...]

    def layer_groups(self, graph: Graph) -> dict[str, str]:
        """GEMM name -> its group."""
        return {graph.nodes[i].name: group
                for group, indices in zip(self.names, self.members, strict=True)
                for i in indices}


def find_groups(graph: Graph, grouping: Grouping) -> Groups:
    """Group the encoder linears of ``graph``; one line when it has none."""
    found: dict[str, list[int]] = {}
    for i, node in enumerate(graph.nodes):
        if isinstance(node, GemmNode) and not node.weight_is_activation and node.kind == "linear":
            group = group_of(node.name, grouping)
            if group is not None:
                found.setdefault(group, []).append(i)
    if not found:
        raise AccelsimError(f"model {graph.name!r}: no encoder linears (sites "
                            f"{', '.join(BLOCK_SITES)}) to assign formats to")
    # Sites in data-flow order; blocks (and block sites) in model order.
    names = [s for s in BLOCK_SITES if s in found] if grouping == "site" else list(found)
    return Groups(grouping, tuple(names), tuple(tuple(found[n]) for n in names))


@dataclass(frozen=True)
class Templates:
    """The model traced under the four uniform recipes (w4a4, w8a8, w4a4_sp24, w8a8_sp24).

    Activation widths, sparsity flags and bits of a GEMM come from its assigned format; only
    the measured weight density (4-bit codes round more weights to zero, a 2:4 mask prunes half)
    is read from the trace with the same weight bits and sparsity, so an assignment's graph
    prices the real masks and codes of the layers it takes them from.
    """

    base: Graph
    density: Mapping[tuple[int, bool], tuple[float, ...]]  # (weight bits, sparse) -> per node

    def graph(self, groups: Groups, assignment: Sequence[Format]) -> Graph:
        """The compressed graph of ``assignment`` (one format per group, in group order)."""
        nodes = list(self.base.nodes)
        for fmt, indices in zip(assignment, groups.members, strict=True):
            densities = self.density[(fmt.weight_bits, fmt.sparse)]
            for i in indices:
                node = nodes[i]
                assert isinstance(node, GemmNode)
                nodes[i] = dataclasses.replace(
                    node, weight_bits=fmt.weight_bits, act_bits=fmt.act_bits,
                    sparsity=fmt.sparsity, weight_density=densities[i])
        return Graph(self.base.name, tuple(nodes), dict(self.base.input_shape))


UNIFORM_RECIPES: dict[tuple[int, bool], str] = {
    (4, False): "w4a4", (8, False): "w8a8", (4, True): "w4a4_sp24", (8, True): "w8a8_sp24",
}


def templates(model: str, shape: Mapping[str, int | float]) -> Templates:
    """Trace ``model`` at ``shape`` under the four uniform recipes (disk-cached by
    ``workload_graph``); the graphs must agree node for node."""
    from accelsim.graph.workload import workload_graph

    graphs = {key: workload_graph(model, recipe=recipe, **shape)
              for key, recipe in UNIFORM_RECIPES.items()}
    base = graphs[(8, False)]
    names = [n.name for n in base.nodes]
    for key, graph in graphs.items():
        if [n.name for n in graph.nodes] != names:
            raise AccelsimError(f"model {model}: the {UNIFORM_RECIPES[key]} trace has other "
                                "nodes than the w8a8 one; cannot mix their formats per layer")
    density = {key: tuple(n.weight_density if isinstance(n, GemmNode) else 1.0
                          for n in graph.nodes)
               for key, graph in graphs.items()}
    return Templates(base, density)
