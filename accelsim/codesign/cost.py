"""The cost of an assignment on one hardware point: per-layer costs from a cache, summed.

The simulator plans memory over the whole graph (``accelsim.sim.plan``): a layer's DRAM traffic,
stalls and tiling depend on the widths of the tensors live around it (what spills, how much
buffer is free for its tiles, whether every weight fits the weight buffer). A cache keyed by
(layer shape, format, hardware point) alone is therefore not exact. :class:`CostCache` keys each
layer's cost by what the plan couples into it instead:

* the layer's shape and format (bits, sparsity, measured weight density),
* the planner's decision for that node (``NodeMemory``: operands on chip or not, output width
  and destination, evictions, prefetched weight bytes, free buffer bytes, head-by-head fusion),
* whether the whole model's weights stay resident.

Per assignment it runs the planner (one pass over the node list, no costing) and sums cached
layer costs in node order, which is the simulator's own arithmetic in the simulator's order, so
the totals equal a fresh :func:`accelsim.sim.simulate.simulate` of the same graph bit for bit
(``tests/test_codesign_cost.py`` checks ``==``). The layer costs come from the simulator's own
per-layer functions (``_gemm_shape``, ``_gemm_traffic``, ``_gemm_fields``, ``_vector_fields``)
and the plan from ``plan.plan_from_tensors`` (``plan_with_fusion`` with the format-independent
parts computed once); the per-layer functions have no public entry point yet, so this module is
tied to those names and the exactness test guards them.

:meth:`CostCache.deltas` gives the additive surrogate the ILP optimizes (each group's cost
change from the reference assignment, the rest held there); every assignment the ILP proposes
is re-priced exactly here before it is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from accelsim.codesign.groups import Format, Groups, Templates
from accelsim.graph.folds import chip_graph
from accelsim.graph.ir import GemmNode, Graph, VectorNode
from accelsim.hw import HwConfig
from accelsim.sim import vector
from accelsim.sim.energy import EnergyTable, area
from accelsim.sim.plan import (
    NodeMemory,
    PlanTensors,
    fusable_chains,
    plan_from_tensors,
)
from accelsim.sim.simulate import (
    LayerResult,
    _gemm_fields,
    _gemm_shape,
    _gemm_traffic,
    _GemmShape,
    _vector_fields,
)

_PJ_PER_UJ = 1e6


@dataclass(frozen=True)
class Cost:
    """Totals of one assignment on one hardware point (``simulate``'s totals of its graph)."""

    feasible: bool
    reason: str
    cycles: int
    latency_ms: float
    energy_uj: float
    area_mm2: float


class CostCache:
    """Exact per-layer cost cache of one (model templates, groups, hardware point)."""

    def __init__(self, templates: Templates, groups: Groups, hw: HwConfig) -> None:
        self.templates, self.groups, self.hw = templates, groups, hw
        self.area_mm2 = area(hw).total_mm2
        self._energy = EnergyTable.of(hw, self.area_mm2)
        # The graph the simulator plans and prices (graph.folds.chip_graph: no host GEMM, and
        # an int vector unit's folds), its nodes mapped back to the templates' for the groups
        # (encoder linears, all on the chip) and the densities.
        base = self._chip = chip_graph(templates.base, hw.vector_unit.format)
        nodes = base.nodes
        template_index = {node.name: i for i, node in enumerate(templates.base.nodes)}
        self._template_of = [template_index[node.name] for node in nodes]
        chip_index = {t: i for i, t in enumerate(self._template_of)}
        self._vector_cycles = [vector.vector_cycles(n, hw) if isinstance(n, VectorNode) else 0
                               for n in nodes]
        self._group_of = [-1] * len(nodes)
        for g, indices in enumerate(groups.members):
            for i in indices:
                self._group_of[chip_index[i]] = g
        # What the planner reads that no format changes: the graph's edges, the fusable chains,
        # output elements, the widths vector ops read (plan._tensors recomputes the last three
        # per call).
        self._operands, self._from_input, self._uses = base.edges
        self._chains = fusable_chains(nodes, self._operands, self._uses)
        element_bits = hw.vector_unit.element_bits
        self._elements = [n.m * n.n * n.count if isinstance(n, GemmNode) else n.total_elements
                          for n in nodes]
        self._vector_read = [(element_bits, element_bits) if isinstance(n, VectorNode) else None
                             for n in nodes]
        # Per tensor: the widest read by a vector op (fixed), the GEMM reads (format-dependent:
        # (node, operand)), or None when nothing reads it (stored at its producer's A width).
        readers: list[list[tuple[int, int]]] = [[] for _ in nodes]
        for i, ops in enumerate(self._operands):
            for k, p in enumerate(ops):
                if p >= 0:
                    readers[p].append((i, min(k, 1)))
        self._tensor_reads: list[tuple[int, tuple[tuple[int, int], ...]] | None] = [
            (max((element_bits for i, _ in r if isinstance(nodes[i], VectorNode)), default=0),
             tuple((i, k) for i, k in r if isinstance(nodes[i], GemmNode))) if r else None
            for r in readers]
        self._entries: dict[tuple[int, Format | None], tuple[GemmNode, _GemmShape | str, int]] = {}
        self._shape_ids: dict[tuple, int] = {}
        self._fused: dict[tuple[int, bool, int, int], _GemmShape] = {}
        self._layers: dict[tuple, tuple[int, float]] = {}
        self.evaluations = 0

    def _entry(self, i: int, fmt: Format | None) -> tuple[GemmNode, _GemmShape | str, int]:
        """(node i at ``fmt``, its unfused shape, an id of its costing key); cached."""
        key = (i, fmt)
        entry = self._entries.get(key)
        if entry is None:
            base = self._chip.nodes[i]
            assert isinstance(base, GemmNode)
            node = base if fmt is None else GemmNode(
                base.name, base.m, base.k, base.n, base.count, fmt.weight_bits, fmt.act_bits,
                fmt.sparsity,
                self.templates.density[(fmt.weight_bits, fmt.sparse)][self._template_of[i]],
                base.kind, base.weight_is_activation, base.inputs)
            shape_key = (node.m, node.k, node.n, node.count, node.weight_bits, node.act_bits,
                         node.sparsity, node.weight_is_activation, node.weight_density)
            ids = self._shape_ids
            sid = ids.setdefault(shape_key, len(ids))
            shape = _gemm_shape(node, self.hw, False)
            entry = self._entries[key] = (node, shape, sid)
        return entry

    def graph(self, assignment: Sequence[Format]) -> Graph:
        """The graph whose ``simulate`` totals :meth:`evaluate` returns."""
        return self.templates.graph(self.groups, assignment)

    def _plan(self, reserves: list[tuple[float, float]],
              read_bits: list[tuple[int, int]]) -> tuple[NodeMemory, ...]:
        """``plan_with_fusion`` of the assignment's graph, from the fixed parts computed once:
        the same tensors (widths: the widest read; unread: the producer's own A width) and
        the same choice between the plain and the fused plan."""
        bits = []
        for t, reads in enumerate(self._tensor_reads):
            if reads is None:
                bits.append(read_bits[t][0])
                continue
            widest, gemm_reads = reads
            for i, k in gemm_reads:
                if read_bits[i][k] > widest:
                    widest = read_bits[i][k]
            bits.append(widest)
        size = [e * b / 8 for e, b in zip(self._elements, bits, strict=True)]
        tensors = PlanTensors(self._operands, self._from_input, self._uses, bits, size)
        return plan_from_tensors(self._chip, tensors, self.hw, reserves,
                                 self._vector_cycles, self._chains)

    def evaluate(self, assignment: Sequence[Format]) -> Cost:
        """Exact totals of ``assignment`` (one format per group) on this hardware point."""
        self.evaluations += 1
        hw = self.hw
        nodes = self._chip.nodes
        entries: list[tuple[GemmNode, _GemmShape, int] | None] = []
        reserves: list[tuple[float, float]] = []
        read_bits: list[tuple[int, int]] = []
        weight_bytes = 0.0
        for i in range(len(nodes)):
            vector_read = self._vector_read[i]
            if vector_read is not None:
                entries.append(None)
                reserves.append((0.0, 0.0))
                read_bits.append(vector_read)
                continue
            g = self._group_of[i]
            node, shape, sid = self._entry(i, assignment[g] if g >= 0 else None)
            if isinstance(shape, str):
                return Cost(False, f"layer {node.name!r}: {shape}", 0, 0.0, 0.0, self.area_mm2)
            entries.append((node, shape, sid))
            reserves.append(shape.reserve_bytes)
            read_bits.append((shape.act_bits, shape.weight_bits))
            if not node.weight_is_activation:
                weight_bytes += shape.ops.b_bytes * node.count
        plans = self._plan(reserves, read_bits)
        resident = weight_bytes <= hw.sram.weights.size_bytes
        cycles = 0
        energy_pj = 0.0
        layers = self._layers
        for i, (entry, mem) in enumerate(zip(entries, plans, strict=True)):
            key: tuple = (i, mem) if entry is None else (entry[2], resident, mem)
            cost = layers.get(key)
            if cost is None:
                cost = layers[key] = self._layer_cost(nodes[i], entry, mem, resident)
            cycles += cost[0]
            energy_pj += cost[1]
        latency_ms = cycles / (hw.array.clock_mhz * 1e6) * 1e3
        return Cost(True, "", cycles, latency_ms, energy_pj / _PJ_PER_UJ, self.area_mm2)

    def _layer_cost(self, template: GemmNode | VectorNode,
                    entry: tuple[GemmNode, _GemmShape, int] | None, mem: NodeMemory,
                    resident: bool) -> tuple[int, float]:
        """(cycles, energy [pJ]) of one node under its plan, by the simulator's functions."""
        hw = self.hw
        if entry is None:
            assert isinstance(template, VectorNode)
            layer = LayerResult(template.name, *_vector_fields(template, mem, hw, self._energy))
        else:
            node, shape, sid = entry
            if mem.one_repeat_at_a_time or mem.split_n > 1 or mem.split_k > 1:
                split = (sid, mem.one_repeat_at_a_time, mem.split_n, mem.split_k)
                fused = self._fused.get(split)
                if fused is None:
                    made = _gemm_shape(node, hw, False, mem.one_repeat_at_a_time, mem.split_n,
                                       mem.split_k)
                    assert not isinstance(made, str)  # a repeat or a chunk fits as the whole
                    fused = self._fused[split] = made
                shape = fused
            traffic = _gemm_traffic(node, shape, mem, hw, resident)
            layer = LayerResult(node.name, *_gemm_fields(node, shape, traffic, mem, hw,
                                                         self._energy))
        return layer.cycles, layer.energy.total_pj

    def deltas(self, reference: Sequence[Format],
               options: Sequence[Format]) -> tuple[Cost, np.ndarray, np.ndarray]:
        """(cost of ``reference``, energy change [uJ] and latency change [ms] per group x
        option when that group alone moves from its reference format to the option). An
        option that makes the point infeasible gets ``inf``."""
        ref = self.evaluate(reference)
        energy = np.zeros((len(reference), len(options)))
        latency = np.zeros_like(energy)
        for g in range(len(reference)):
            for o, fmt in enumerate(options):
                if fmt == reference[g]:
                    continue
                moved = list(reference)
                moved[g] = fmt
                cost = self.evaluate(moved)
                if not cost.feasible:
                    energy[g, o] = latency[g, o] = np.inf
                    continue
                energy[g, o] = cost.energy_uj - ref.energy_uj
                latency[g, o] = cost.latency_ms - ref.latency_ms
        return ref, energy, latency
