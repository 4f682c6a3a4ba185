"""Graph x HwConfig -> SimResult: per-layer cycles, traffic and energy, totals, feasibility.

Steps per GEMM (closed forms only, cached per distinct shape within one call):
resolve bit widths (``None`` -> the hardware's native precision) -> decide 2:4 skipping ->
map onto the array (``mapping.map_gemm``, reduction halved when skipping) -> plan tiles and
DRAM traffic (``memory``) -> count actions (``actions``) -> price them (``energy``).
Vector nodes run on the vector unit, serialized with the array (see ``vector``).

A GEMM wider than the datapath (8-bit weights on 4-bit MACs) runs in
``ceil(weight_bits / native) x ceil(act_bits / native)`` passes (shift-and-add of partial
products); a narrower one runs at native width. The ``count`` instances of a node (attention
heads, conv groups) and their passes run back to back as one pipelined fold stream
(``map_gemm(..., count=count * passes)``); the memory plan times the layer as that one stream,
with the DRAM traffic of ``count`` instances (passes re-read on-chip data, not DRAM). A layer
whose smallest tile does not fit makes the whole result infeasible (``feasible=False`` and a
reason), which is a result, not an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from accelsim.formats import SPARSE_GROUP
from accelsim.graph.ir import GemmNode, Graph, VectorNode
from accelsim.hw import HwConfig
from accelsim.sim import memory, sparse, vector
from accelsim.sim.actions import ActionCounts, gemm_actions, vector_actions
from accelsim.sim.energy import AreaBreakdown, EnergyBreakdown, area, price
from accelsim.sim.mapping import map_gemm

_PJ_PER_UJ = 1e6


@dataclass(frozen=True)
class LayerResult:
    """One node's cost. For vector nodes ``m`` = elements per instance, ``k`` = row length,
    ``n`` = 1 and ``macs`` = 0."""

    name: str
    op: str  # "gemm" or "vector"
    m: int
    k: int
    n: int
    count: int
    weight_bits: int | None
    act_bits: int
    sparsity: str
    compute_cycles: int
    stall_cycles: int
    macs: int
    utilization: float
    dram_bytes: int
    energy: EnergyBreakdown
    actions: ActionCounts
    skipping: bool = False

    @property
    def cycles(self) -> int:
        return self.compute_cycles + self.stall_cycles

    def to_dict(self) -> dict:
        e = self.energy
        return {
            "name": self.name, "op": self.op, "m": self.m, "k": self.k, "n": self.n,
            "count": self.count, "weight_bits": self.weight_bits, "act_bits": self.act_bits,
            "sparsity": self.sparsity, "compute_cycles": self.compute_cycles,
            "stall_cycles": self.stall_cycles, "cycles": self.cycles, "macs": self.macs,
            "utilization": self.utilization, "dram_bytes": self.dram_bytes,
            "energy_uj": {
                "mac": e.mac_pj / _PJ_PER_UJ, "sram": e.sram_pj / _PJ_PER_UJ,
                "dram": e.dram_pj / _PJ_PER_UJ, "vector": e.vector_pj / _PJ_PER_UJ,
                "leakage": e.leakage_pj / _PJ_PER_UJ, "total": e.total_pj / _PJ_PER_UJ,
            },
        }


@dataclass(frozen=True)
class Totals:
    """Whole-run figures. ``tops`` and ``tops_per_w`` count dense-equivalent operations
    (2 per MAC of the dense GEMMs), so 2:4 skipping raises them; ``utilization`` is issued MAC
    slots over PE-cycles (never above 1)."""

    cycles: int
    latency_ms: float
    energy_uj: float
    area_mm2: float
    macs: int
    utilization: float
    dram_bytes: int
    tops: float
    tops_per_w: float

    def to_dict(self) -> dict:
        return {
            "cycles": self.cycles, "latency_ms": self.latency_ms, "energy_uj": self.energy_uj,
            "area_mm2": self.area_mm2, "macs": self.macs, "utilization": self.utilization,
            "dram_bytes": self.dram_bytes, "tops": self.tops, "tops_per_w": self.tops_per_w,
        }


@dataclass(frozen=True)
class SimResult:
    model: str
    hw_name: str
    layers: tuple[LayerResult, ...]
    totals: Totals
    feasible: bool
    reason: str
    area: AreaBreakdown

    def to_dict(self) -> dict:
        return {
            "model": self.model, "hw": self.hw_name, "feasible": self.feasible,
            "reason": self.reason, "totals": self.totals.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
        }


@dataclass(frozen=True)
class _GemmCost:
    weight_bits: int
    act_bits: int
    compute_cycles: int
    stall_cycles: int
    utilization: float
    dram_bytes: int
    energy: EnergyBreakdown
    actions: ActionCounts
    skipping: bool


def _resolve_bits(node: GemmNode, hw: HwConfig) -> tuple[int, int, int]:
    """(weight bits, act bits, passes): ``None`` -> native; wider than native -> more passes."""
    p = hw.precision
    act_bits = node.act_bits or p.act_bits
    weight_bits = node.weight_bits or (p.act_bits if node.weight_is_activation else p.weight_bits)
    passes = math.ceil(weight_bits / p.weight_bits) * math.ceil(act_bits / p.act_bits)
    return weight_bits, act_bits, passes


def _gemm_cost(node: GemmNode, hw: HwConfig, area_mm2: float,
               scalesim_compat: bool) -> _GemmCost | str:
    p = hw.precision
    weight_bits, act_bits, passes = _resolve_bits(node, hw)
    skipping = sparse.skips(node, hw)
    steps = sparse.reduction_steps(node.k, skipping)
    rows, cols = hw.array.rows, hw.array.cols
    # Every pass of every instance is the same GEMM shape on new operands, so the array runs
    # them as one fold stream (fill and drain paid once per layer; compat: once per instance).
    compute = map_gemm(node.m, steps, node.n, rows, cols, hw.array.dataflow,
                       count=node.count * passes, scalesim_compat=scalesim_compat).compute_cycles

    def operands(weight_bits_per_element: float) -> memory.Operands:
        return memory.Operands(node.m, node.k, node.n, act_bits, weight_bits_per_element,
                               p.accumulator_bits, act_bits,
                               SPARSE_GROUP if skipping else 1)

    ops = operands(sparse.weight_bits_per_element(weight_bits, skipping))
    gran = memory.granule(hw.array.dataflow, rows, cols)
    tiling = memory.plan_tiles(ops, hw, gran)
    if isinstance(tiling, str):
        return tiling
    candidates = (tiling,)
    if skipping:
        # The tiling a dense weight would get is valid for the smaller compressed one, and
        # under it every transfer shrinks: offering it keeps 2:4 never slower than dense.
        dense_tiling = memory.plan_tiles(operands(float(weight_bits)), hw, gran)
        if not isinstance(dense_tiling, str):
            candidates += (dense_tiling,)
    plan = memory.plan_memory(ops, hw, gran, compute, node.count, candidates)
    issued_fraction, gated_fraction = sparse.executed_fraction(
        node, skipping, hw.sparsity.zero_gating)
    actions = gemm_actions(ops, hw, plan, count=node.count, passes=passes,
                           dense_macs=node.macs, issued_fraction=issued_fraction,
                           gated_fraction=gated_fraction, skipping=skipping,
                           reduction_steps=steps)
    cycles = compute + plan.stall_cycles
    issued = node.macs * issued_fraction * passes
    return _GemmCost(
        weight_bits=weight_bits, act_bits=act_bits, compute_cycles=compute,
        stall_cycles=plan.stall_cycles, utilization=issued / (cycles * rows * cols),
        dram_bytes=plan.dram_bytes * node.count,
        energy=price(actions, hw, cycles, area_mm2), actions=actions, skipping=skipping,
    )


def _gemm_layer(node: GemmNode, cost: _GemmCost) -> LayerResult:
    return LayerResult(
        node.name, "gemm", node.m, node.k, node.n, node.count, cost.weight_bits, cost.act_bits,
        node.sparsity, cost.compute_cycles, cost.stall_cycles, node.macs, cost.utilization,
        cost.dram_bytes, cost.energy, cost.actions, cost.skipping,
    )


def _vector_cost(node: VectorNode, hw: HwConfig,
                 area_mm2: float) -> tuple[int, EnergyBreakdown, ActionCounts]:
    lane_cycles = vector.lane_cycles(node, hw)
    cycles = vector.vector_cycles(node, hw)
    actions = vector_actions(node.total_elements, vector.operand_count(node), lane_cycles, hw)
    return cycles, price(actions, hw, cycles, area_mm2), actions


def _vector_layer(node: VectorNode, hw: HwConfig,
                  cost: tuple[int, EnergyBreakdown, ActionCounts]) -> LayerResult:
    cycles, energy, actions = cost
    return LayerResult(
        node.name, "vector", node.elements, node.row_length, 1, node.count, None,
        hw.vector_unit.element_bits, "dense", cycles, 0, 0, 0.0, 0, energy, actions,
    )


def _totals(layers: tuple[LayerResult, ...], hw: HwConfig, area_mm2: float) -> Totals:
    cycles = sum(layer.cycles for layer in layers)
    macs = sum(layer.macs for layer in layers)
    energy_pj = sum(layer.energy.total_pj for layer in layers)
    issued = sum(layer.utilization * layer.cycles for layer in layers)
    seconds = cycles / (hw.array.clock_mhz * 1e6)
    ops = 2.0 * macs
    return Totals(
        cycles=cycles,
        latency_ms=seconds * 1e3,
        energy_uj=energy_pj / _PJ_PER_UJ,
        area_mm2=area_mm2,
        macs=macs,
        utilization=issued / cycles if cycles else 0.0,
        dram_bytes=sum(layer.dram_bytes for layer in layers),
        tops=ops / seconds / 1e12 if cycles else 0.0,
        tops_per_w=ops / (energy_pj * 1e-12) / 1e12 if energy_pj else 0.0,
    )


def simulate(graph: Graph, hw: HwConfig, *, scalesim_compat: bool = False) -> SimResult:
    """Simulate ``graph`` on ``hw``.

    ``scalesim_compat=True`` uses SCALE-Sim 3.0.0's compute-cycle formulas (combine it with
    ``ideal_memory: true`` to compare stall-free cycles).
    """
    area_breakdown = area(hw)
    area_mm2 = area_breakdown.total_mm2
    # Transformer blocks repeat the same shapes: price each distinct node once per call.
    cache: dict[tuple, _GemmCost | str] = {}
    vector_cache: dict[tuple, tuple[int, EnergyBreakdown, ActionCounts]] = {}
    layers: list[LayerResult] = []
    for node in graph.nodes:
        if isinstance(node, VectorNode):
            vkey = (node.vector_op, node.elements, node.count)
            vcost = vector_cache.get(vkey)
            if vcost is None:
                vcost = vector_cache[vkey] = _vector_cost(node, hw, area_mm2)
            layers.append(_vector_layer(node, hw, vcost))
            continue
        key = (node.m, node.k, node.n, node.count, node.weight_bits, node.act_bits,
               node.sparsity, node.weight_density, node.weight_is_activation)
        cost = cache.get(key)
        if cost is None:
            cost = cache[key] = _gemm_cost(node, hw, area_mm2, scalesim_compat)
        if isinstance(cost, str):
            empty = Totals(0, 0.0, 0.0, area_mm2, 0, 0.0, 0, 0.0, 0.0)
            return SimResult(graph.name, hw.name, (), empty, False,
                             f"layer {node.name!r}: {cost}", area_breakdown)
        layers.append(_gemm_layer(node, cost))
    frozen = tuple(layers)
    return SimResult(graph.name, hw.name, frozen, _totals(frozen, hw, area_mm2), True, "",
                     area_breakdown)
