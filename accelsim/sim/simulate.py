"""Graph x HwConfig -> SimResult: per-layer cycles, traffic and energy, totals, feasibility.

Three steps, closed forms only. (1) Per distinct GEMM shape: resolve bit widths (``None`` ->
the hardware's native precision), decide 2:4 skipping, map onto the array (``mapping.map_gemm``,
reduction halved when skipping) and find the candidate tilings (``memory``); per vector node its
cycles (``vector``). (2) One pass over the graph (``plan``) decides which activations stay in the
on-chip buffers, which spill, and what weight prefetch the vector ops allow. (3) Per node, with
its plan: DRAM traffic by tensor and stalls (``memory``), actions (``actions``), energy
(``energy``); cached per distinct (shape, plan). Vector nodes run on the vector unit, serialized
with the array.

A GEMM wider than the datapath (8-bit weights on 4-bit MACs) runs in
``ceil(weight_bits / native) x ceil(act_bits / native)`` passes (shift-and-add of partial
products); a narrower one runs at native width. The ``count`` instances of a node (attention
heads, conv groups) and their passes run back to back as one pipelined fold stream
(``map_gemm(..., count=count * passes)``); the memory plan times the layer as that one stream,
with the DRAM traffic of ``count`` instances (passes re-read on-chip data, not DRAM); in an
attention chain the plan runs head by head, each instance is its own stream, and in an FFN chain
run in hidden-column chunks each chunk of fc1's columns or fc2's reduction is (fc2's partial sums
then go to the output buffer and back once a chunk). A layer
whose smallest tile does not fit makes the whole result infeasible (``feasible=False`` and a
reason), which is a result, not an error.

A GEMM marked ``on_host`` (a layer the integer model keeps float32) is not the chip's work: the
simulator plans and prices ``graph.folds.chip_graph`` (the graph without it, its readers reading
a model input), and the GEMM keeps a row of its own (``LayerResult.on_host``, zero cycles and
energy, its MACs in ``Totals.host_macs`` rather than ``macs``) so nothing leaves the results
unsaid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from accelsim.errors import AccelsimError
from accelsim.formats import SPARSE_GROUP, VECTOR_FORMATS
from accelsim.graph.folds import chip_graph
from accelsim.graph.ir import GemmNode, Graph, VectorNode
from accelsim.graph.phases import KVCacheTensor
from accelsim.hw import HwConfig
from accelsim.sim import memory, sparse, vector
from accelsim.sim.actions import (
    ActionCounts,
    array_sram_bytes,
    executed_macs,
    gemm_actions,
    sram_port_cycles,
    vector_actions,
)
from accelsim.sim.energy import AreaBreakdown, EnergyBreakdown, EnergyTable, area
from accelsim.sim.mapping import map_gemm
from accelsim.sim.plan import (
    NodeMemory,
    ResidentState,
    plan_with_fusion,
    resolve_bits,
    spilled_bytes,
)

_PJ_PER_UJ = 1e6


@dataclass(frozen=True)
class DramBytes:
    """One layer's DRAM traffic by tensor: weight reads, model-input reads, model-output writes,
    and spills (activations written out for lack of room and every re-load of them)."""

    weights: int = 0
    inputs: int = 0
    outputs: int = 0
    spills: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.inputs + self.outputs + self.spills

    def to_dict(self) -> dict[str, int]:
        return {"weights": self.weights, "inputs": self.inputs, "outputs": self.outputs,
                "spills": self.spills}


@dataclass(frozen=True)
class LayerResult:
    """One node's cost. For vector nodes ``m`` = elements per instance, ``k`` = row length,
    ``n`` = 1 and ``macs`` = 0. ``stall_cycles`` wait for DRAM, ``sram_stall_cycles`` for the
    buffers' banks (the dataflow needs more bytes per cycle than they serve). ``on_host``: a
    GEMM the host runs in float32 (``weight_bits`` = ``act_bits`` = 32), which costs the chip
    nothing; its ``macs`` are the host's."""

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
    dram: DramBytes
    energy: EnergyBreakdown
    actions: ActionCounts
    skipping: bool = False
    sram_stall_cycles: int = 0
    on_host: bool = False

    @property
    def cycles(self) -> int:
        return self.compute_cycles + self.stall_cycles + self.sram_stall_cycles

    @property
    def dram_bytes(self) -> int:
        return self.dram.total

    def to_dict(self) -> dict:
        e = self.energy
        return {
            "name": self.name, "op": self.op, "m": self.m, "k": self.k, "n": self.n,
            "count": self.count, "weight_bits": self.weight_bits, "act_bits": self.act_bits,
            "sparsity": self.sparsity, "on_host": self.on_host,
            "compute_cycles": self.compute_cycles,
            "stall_cycles": self.stall_cycles, "sram_stall_cycles": self.sram_stall_cycles,
            "cycles": self.cycles, "macs": self.macs,
            "utilization": self.utilization, "dram_bytes": self.dram_bytes,
            "dram_bytes_by_tensor": self.dram.to_dict(),
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
    slots over PE-cycles (never above 1). ``macs`` are the chip's; ``host_macs`` those of the
    GEMMs the host runs in float32 (``LayerResult.on_host``), in none of the other figures."""

    cycles: int
    latency_ms: float
    energy_uj: float
    area_mm2: float
    macs: int
    utilization: float
    dram_bytes: int
    tops: float
    tops_per_w: float
    host_macs: int = 0

    def to_dict(self) -> dict:
        return {
            "cycles": self.cycles, "latency_ms": self.latency_ms, "energy_uj": self.energy_uj,
            "area_mm2": self.area_mm2, "macs": self.macs, "utilization": self.utilization,
            "dram_bytes": self.dram_bytes, "tops": self.tops, "tops_per_w": self.tops_per_w,
            "host_macs": self.host_macs,
        }


@dataclass(frozen=True)
class SimResult:
    """``kv_cache_placement``: where the plan put the KV cache of a decoder pass (``"sram"``:
    resident in the activation buffers across passes; ``"dram"``), ``None`` without one;
    ``kv_cache_bytes``: its size at its stored width."""

    model: str
    hw_name: str
    layers: tuple[LayerResult, ...]
    totals: Totals
    feasible: bool
    reason: str
    area: AreaBreakdown
    kv_cache_placement: str | None = None
    kv_cache_bytes: int = 0

    def to_dict(self) -> dict:
        data = {
            "model": self.model, "hw": self.hw_name, "feasible": self.feasible,
            "reason": self.reason, "totals": self.totals.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
        }
        if self.kv_cache_placement is not None:
            data.update(kv_cache_placement=self.kv_cache_placement,
                        kv_cache_bytes=self.kv_cache_bytes)
        return data


@dataclass(frozen=True)
class _GemmShape:
    """What a GEMM costs before the graph plan: widths, skipping, compute, candidate tilings."""

    weight_bits: int
    act_bits: int
    passes: int
    skipping: bool
    steps: int
    compute_cycles: int
    folds: int  # all instances and passes
    ops: memory.Operands
    candidates: tuple[memory.Tiling, ...]
    # Per candidate: (accumulator tiles, streamed A tiles) it holds in the activation buffers
    # (twice each when double buffered); the smallest of each is what the planner reserves.
    footprints: tuple[tuple[float, float], ...]
    reserve_bytes: tuple[float, float]

    def tilings_within(self, mem: NodeMemory) -> tuple[memory.Tiling, ...]:
        """The candidates whose working space fits what the plan left free (at least one)."""
        acc_min, a_min = self.reserve_bytes
        a_streams = not mem.operands_on_chip[0]
        fitting = tuple(t for t, (acc, a_tile) in zip(self.candidates, self.footprints,
                                                       strict=True)
                        if acc - acc_min + (a_tile - a_min) * a_streams
                        <= mem.free_bytes + 1e-9)
        if fitting:
            return fitting
        smallest = min(range(len(self.candidates)), key=lambda i: self.footprints[i])
        return (self.candidates[smallest],)


def _footprint(t: memory.Tiling, ops: memory.Operands, hw: HwConfig) -> tuple[float, float]:
    acc = t.tile_m * t.tile_n * ops.psum_bits / 8 * (1 + hw.sram.outputs.double_buffered)
    a_tile = t.tile_m * t.tile_k * ops.act_bits / 8 * (1 + hw.sram.inputs.double_buffered)
    return acc, a_tile


def _gemm_shape(node: GemmNode, hw: HwConfig, scalesim_compat: bool,
                one_repeat_at_a_time: bool = False, split_n: int = 1,
                split_k: int = 1) -> _GemmShape | str:
    p = hw.precision
    weight_bits, act_bits, passes = resolve_bits(node, hw)
    skipping = sparse.skips(node, hw)
    steps = sparse.reduction_steps(node.k, skipping)
    rows, cols = hw.array.rows, hw.array.cols
    # Every pass of every instance is the same GEMM shape on new operands, so the array runs
    # them as one fold stream (fill and drain paid once per layer; compat: once per instance).
    # In a fused chain the array runs another GEMM between two repeats (attention heads) or
    # chunks (FFN), so each is its own fold stream (fill and drain once per repeat or chunk).
    repeats = (node.count if one_repeat_at_a_time else 1) * split_n * split_k
    mapping = map_gemm(node.m, sparse.reduction_steps(node.k // split_k, skipping),
                       node.n // split_n, rows, cols, hw.array.dataflow,
                       count=node.count // (node.count if one_repeat_at_a_time else 1) * passes,
                       scalesim_compat=scalesim_compat, pipelined=hw.array.pipelined_folds)

    def operands(weight_bits_per_element: float) -> memory.Operands:
        return memory.Operands(node.m, node.k, node.n, act_bits, weight_bits_per_element,
                               p.accumulator_bits, act_bits,
                               SPARSE_GROUP if skipping else 1)

    ops = operands(sparse.weight_bits_per_element(weight_bits, skipping))
    gran = memory.granule(hw.array.dataflow, rows, cols)

    def tilings(tiled: memory.Operands) -> tuple[memory.Tiling, ...] | str:
        if split_n == split_k == 1:
            return memory.candidate_tilings(tiled, hw, gran)
        return memory.chunked_tilings(tiled, hw, gran, split_n, split_k)

    candidates = tilings(ops)
    if isinstance(candidates, str):
        return candidates
    if skipping:
        # The tilings a dense weight would get are valid for the smaller compressed one, and
        # under them every transfer shrinks: offering them keeps 2:4 never slower than dense.
        dense = tilings(operands(float(weight_bits)))
        if not isinstance(dense, str):
            candidates = tuple(dict.fromkeys(candidates + dense))
    # A reduction chunk's accumulators are the chain's partial sums, which the plan reserves.
    footprints = tuple((0.0, 0.0) if split_k > 1 else _footprint(t, ops, hw)
                       for t in candidates)
    return _GemmShape(weight_bits, act_bits, passes, skipping, steps,
                      mapping.compute_cycles * repeats,
                      mapping.row_folds * mapping.col_folds * node.count * passes * split_n
                      * split_k, ops,
                      candidates, footprints,
                      (min(f[0] for f in footprints), min(f[1] for f in footprints)))


@dataclass(frozen=True)
class _Traffic:
    """A GEMM layer's memory plan under its graph plan (independent of weight density)."""

    ops: memory.Operands  # with the output at the width its consumers read
    plan: memory.MemoryPlan
    dram: DramBytes
    sram_stall_cycles: int
    array_bytes: tuple[float, float, float]  # through the buffers under the plan's tiling


def _gemm_traffic(node: GemmNode, shape: _GemmShape, mem: NodeMemory, hw: HwConfig,
                  weights_resident: bool) -> _Traffic:
    ops, count = shape.ops, node.count
    a_in_dram = not mem.operands_on_chip[0]
    b_in_dram = not node.weight_is_activation or not mem.operands_on_chip[1]
    out_ops = memory.Operands(ops.m, ops.k, ops.n, ops.act_bits, ops.weight_bits, ops.psum_bits,
                              mem.output_bits, ops.k_granule)
    src = memory.Sources(a_in_dram=a_in_dram, b_in_dram=b_in_dram, c_to_dram=mem.output_to_dram,
                         b_fits_once=weights_resident and not node.weight_is_activation,
                         evicted_bytes=mem.evicted_bytes,
                         prefetched_b_bytes=mem.prefetched_weight_bytes)
    tilings = shape.tilings_within(mem)

    def array_bytes(plan: memory.MemoryPlan) -> tuple[float, float, float]:
        return array_sram_bytes(out_ops, hw, plan.tiling.tiles_k, count=count,
                                passes=shape.passes, reduction_steps=shape.steps)

    plan = memory.plan_memory(out_ops, hw, shape.compute_cycles, count, tilings, src)
    # The banks may not keep up with the dataflow: the array then runs longer than its compute
    # cycles, and the DRAM transfers overlap that longer run.
    demand = array_bytes(plan)
    sram_stall = 0 if hw.ideal_memory else max(
        0, math.ceil(sram_port_cycles(demand, hw) - shape.compute_cycles - 1e-6))
    if sram_stall:
        plan = memory.plan_memory(out_ops, hw, shape.compute_cycles + sram_stall, count,
                                  tilings, src)
        demand = array_bytes(plan)  # a new tiling may split the reduction differently
    a_bytes, b_bytes = plan.dram_read_a_bytes * count, plan.dram_read_b_bytes * count
    c_bytes = plan.dram_write_c_bytes * count
    from_input = mem.operand_from_model_input
    dram = DramBytes(
        weights=0 if node.weight_is_activation else b_bytes,
        inputs=a_bytes * from_input[0] + (b_bytes * from_input[1]
                                          if node.weight_is_activation else 0),
        outputs=0 if mem.output_is_spill else c_bytes,
        spills=(a_bytes * (not from_input[0])
                + (b_bytes * (not from_input[1]) if node.weight_is_activation else 0)
                + (c_bytes if mem.output_is_spill else 0) + math.ceil(mem.evicted_bytes - 1e-9)),
    )
    return _Traffic(out_ops, plan, dram, sram_stall, demand)


def _gemm_fields(node: GemmNode, shape: _GemmShape, traffic: _Traffic, mem: NodeMemory,
                 hw: HwConfig, energy: EnergyTable) -> tuple:
    """A GEMM's ``LayerResult`` fields after its name."""
    plan, count = traffic.plan, node.count
    issued_fraction, gated_fraction = sparse.executed_fraction(
        node, shape.skipping, hw.sparsity.zero_gating)
    actions = gemm_actions(traffic.ops, hw, plan, count=count, passes=shape.passes,
                           dense_macs=node.macs, issued_fraction=issued_fraction,
                           gated_fraction=gated_fraction, skipping=shape.skipping,
                           array_bytes=traffic.array_bytes, folds=shape.folds,
                           kept_on_chip=not mem.output_to_dram,
                           evicted_bytes=mem.evicted_bytes)
    sram_stall = traffic.sram_stall_cycles
    cycles = shape.compute_cycles + plan.stall_cycles + sram_stall
    issued = node.macs * issued_fraction * shape.passes
    return ("gemm", node.m, node.k, node.n, count, shape.weight_bits, shape.act_bits,
            node.sparsity, shape.compute_cycles, plan.stall_cycles, node.macs,
            issued / (cycles * hw.array.rows * hw.array.cols), traffic.dram,
            energy.price(actions, cycles), actions, shape.skipping, sram_stall)


def _vector_fields(node: VectorNode, mem: NodeMemory, hw: HwConfig,
                   energy: EnergyTable) -> tuple:
    """A vector op's ``LayerResult`` fields after its name. It streams its operands: spilled
    ones re-load from DRAM and a spilled output is written out while it computes; what the
    transfers take beyond its compute is a stall."""
    lane_cycles = vector.lane_cycles(node, hw)
    compute = vector.vector_cycles(node, hw)
    input_bytes = math.ceil(sum(mem.operand_from_model_input) * node.total_elements
                            * hw.vector_unit.element_bits / 8 - 1e-9)
    reload = math.ceil(mem.reload_bytes - 1e-9)
    evicted = math.ceil(mem.evicted_bytes - 1e-9)
    written = math.ceil(mem.output_bytes - 1e-9) if mem.output_to_dram else 0
    dram = DramBytes(inputs=input_bytes, outputs=0 if mem.output_is_spill else written,
                     spills=reload + evicted + (written if mem.output_is_spill else 0))
    transfer = dram.total / hw.dram_bytes_per_cycle
    stall = 0 if hw.ideal_memory else max(0, math.ceil(transfer - compute - 1e-6))
    actions = vector_actions(node.total_elements, vector.operand_count(node), lane_cycles, hw,
                             table_read_bytes=vector.table_read_bytes(node, hw),
                             dram_read_bytes=input_bytes + reload,
                             dram_write_bytes=dram.total - input_bytes - reload)
    return ("vector", node.elements, node.row_length, 1, node.count, None,
            hw.vector_unit.element_bits, "dense", compute, stall, 0, 0.0, dram,
            energy.price(actions, compute + stall), actions, False)


# One layer's contribution to the totals: (cycles, MACs, energy [pJ], issued MAC slots, DRAM
# bytes), computed once per distinct layer and summed per node in node order (the float sums
# then add the same values in the same order as summing the layers' own fields would).
_Summary = tuple[int, int, float, float, int]


def _summary(layer: LayerResult) -> _Summary:
    cycles = layer.cycles
    return (cycles, layer.macs, layer.energy.total_pj, layer.utilization * cycles,
            layer.dram_bytes)


def _totals(summaries: Sequence[_Summary], hw: HwConfig, area_mm2: float,
            host_macs: int) -> Totals:
    cycle_counts, mac_counts, energies, issued_slots, dram = (tuple(zip(*summaries, strict=True))
                                                              or ((),) * 5)
    cycles = sum(cycle_counts)
    macs = sum(mac_counts)
    energy_pj = sum(energies)
    issued = sum(issued_slots)
    seconds = cycles / (hw.array.clock_mhz * 1e6)
    ops = 2.0 * macs
    return Totals(
        cycles=cycles,
        latency_ms=seconds * 1e3,
        energy_uj=energy_pj / _PJ_PER_UJ,
        area_mm2=area_mm2,
        macs=macs,
        utilization=issued / cycles if cycles else 0.0,
        dram_bytes=sum(dram),
        tops=ops / seconds / 1e12 if cycles else 0.0,
        tops_per_w=ops / (energy_pj * 1e-12) / 1e12 if energy_pj else 0.0,
        host_macs=host_macs,
    )


_Result = TypeVar("_Result", LayerResult, ActionCounts)


def _replaced(value: _Result, **changes: object) -> _Result:
    """``dataclasses.replace`` for the frozen result dataclasses (no ``__post_init__``): a frozen
    dataclass keeps its fields in ``__dict__``, and copying that skips ``__init__``'s per-field
    ``object.__setattr__`` (4x faster; once per node)."""
    copy = object.__new__(type(value))
    copy.__dict__.update(value.__dict__, **changes)
    return copy


def _at_density(layer: LayerResult, node: GemmNode, shape: _GemmShape, hw: HwConfig,
                energy: EnergyTable) -> LayerResult:
    """``layer`` (a GEMM of ``node``'s shape under the same plan) at ``node``'s weight density,
    which only moves the gated share of its MACs and their energy: the rest is reused rather
    than counted and priced again (the compressed ViT-B/16 has 72 densities over 97 GEMMs)."""
    issued_fraction, gated_fraction = sparse.executed_fraction(
        node, shape.skipping, hw.sparsity.zero_gating)
    issued, gated = executed_macs(node.macs, issued_fraction, gated_fraction, shape.passes)
    actions = _replaced(layer.actions, mac_random=issued - gated, mac_gated=gated)
    priced = layer.energy
    return _replaced(layer, name=node.name, actions=actions, energy=EnergyBreakdown(
        energy.price_macs(actions), priced.sram_pj, priced.dram_pj, priced.vector_pj,
        priced.leakage_pj))


def _kv_state(graph: Graph, hw: HwConfig,
              kv_cache: Sequence[KVCacheTensor]) -> ResidentState | None:
    """The KV cache as state the plan places: its bytes at the stored width (the tensor's
    ``bits``, else its reader's B-operand width), read as the B operand of its attention GEMM
    and written by its ``written_by`` node (in DRAM, at the stored width)."""
    if not kv_cache:
        return None
    index = {node.name: i for i, node in enumerate(graph.nodes)}
    size = 0.0
    readers: set[tuple[int, int]] = set()
    writers: dict[int, int] = {}
    for tensor in kv_cache:
        for field_name in ("read_by", "written_by"):
            name = getattr(tensor, field_name)
            if name is not None and name not in index:
                raise AccelsimError(f"kv cache {tensor.name!r}: {field_name}={name!r} is not a "
                                    f"node of graph {graph.name!r}")
        reader = graph.nodes[index[tensor.read_by]]
        if not (isinstance(reader, GemmNode) and reader.weight_is_activation):
            raise AccelsimError(f"kv cache {tensor.name!r}: read_by={tensor.read_by!r} is not "
                                "an attention GEMM (both operands activations)")
        bits = tensor.bits or resolve_bits(reader, hw)[0]
        size += tensor.elements * bits / 8
        readers.add((index[tensor.read_by], 1))
        if tensor.written_by is not None:
            writers[index[tensor.written_by]] = bits
    return ResidentState(size, frozenset(readers), writers)


def simulate(graph: Graph, hw: HwConfig, *, scalesim_compat: bool = False,
             kv_cache: Sequence[KVCacheTensor] = ()) -> SimResult:
    """Simulate ``graph`` on ``hw``.

    ``kv_cache``: a decoder pass's KV cache (``PhaseGraph.kv_cache``). The plan keeps it in the
    activation buffers across passes when it fits there beside the pass's own activations
    (moving fewer DRAM bytes than reading it from DRAM would: its readers then read it on chip
    and its writers write the new positions into it), else in DRAM
    (``SimResult.kv_cache_placement``).

    ``scalesim_compat=True`` uses SCALE-Sim 3.0.0's compute-cycle formulas (combine it with
    ``ideal_memory: true`` to compare stall-free cycles). SCALE-Sim's array runs its folds back
    to back, so compat needs ``array.pipelined_folds: false`` (the CLI's ``--scalesim-compat``
    sets it); with ``true`` the area and energy would price registers the timing does not use.
    """
    if scalesim_compat and hw.array.pipelined_folds:
        raise AccelsimError(
            "scalesim compat: array.pipelined_folds=true, but SCALE-Sim 3.0.0 models an array "
            "whose folds run back to back (no shadow registers); set array.pipelined_folds=false "
            "(--scalesim-compat does unless --set array.pipelined_folds=true overrides it)")
    # Price what the chip executes: no host GEMM, and on an int vector unit the attention
    # scaling and mask folded into the softmax and element-wise ops on host tensors left to the
    # host (graph.folds).
    host = _host_rows(graph, hw.vector_unit.format)
    graph = chip_graph(graph, hw.vector_unit.format)
    area_breakdown = area(hw)
    area_mm2 = area_breakdown.total_mm2
    layout = _layout(graph)
    # Transformer blocks repeat the same shapes: each distinct one is costed once per call, in
    # the order of its first node (so an infeasible shape names the first node that has it).
    shapes: list[_GemmShape] = []
    for first in layout.gemm_firsts:
        shape = _gemm_shape(first, hw, scalesim_compat)
        if isinstance(shape, str):
            empty = Totals(0, 0.0, 0.0, area_mm2, 0, 0.0, 0, 0.0, 0.0)
            return SimResult(graph.name, hw.name, (), empty, False,
                             f"layer {first.name!r}: {shape}", area_breakdown)
        shapes.append(shape)
    cycles_of = [vector.vector_cycles(first, hw) for first in layout.vector_firsts]
    gemm_slot, vector_slot = layout.gemm_slot, layout.vector_slot
    node_shapes = [shapes[k] if k >= 0 else None for k in gemm_slot]
    reserves = [shape.reserve_bytes if shape is not None else (0.0, 0.0)
                for shape in node_shapes]
    vector_cycles = [cycles_of[k] if k >= 0 else 0 for k in vector_slot]
    weight_bytes = 0.0
    for k, count in layout.weight_gemms:
        weight_bytes += shapes[k].ops.b_bytes * count
    # SCALE-Sim runs every layer whole; compat keeps its layer boundaries (head-by-head
    # attention keeps them too: compat counts each head as its own layer either way).
    state = _kv_state(graph, hw, kv_cache)
    plans = plan_with_fusion(graph, hw, reserves, vector_cycles, chunk_ffn=not scalesim_compat,
                             state=state)
    placement = None
    if state is not None:
        placement = "dram"
        if state.size_bytes <= hw.sram.inputs.size_bytes + hw.sram.outputs.size_bytes:
            on_chip = plan_with_fusion(graph, hw, reserves, vector_cycles,
                                       chunk_ffn=not scalesim_compat,
                                       state=state._replace(on_chip=True))
            # Kept on chip only where that saves DRAM traffic: the activations it pushes out
            # must cost less than reading the cache from DRAM.
            if spilled_bytes(on_chip) < spilled_bytes(plans) + state.size_bytes:
                plans, placement = on_chip, "sram"
    # When every weight of the model fits the weight buffer, each is loaded once and stays.
    weights_resident = weight_bytes <= hw.sram.weights.size_bytes
    energy = EnergyTable.of(hw, area_mm2)
    # Blocks repeat their plans too: a layer per (shape, plan), re-gated per weight density.
    fused_shapes: dict[tuple[int, bool, int, int], _GemmShape] = {}
    vector_layers: dict[tuple[int, NodeMemory], tuple[LayerResult, _Summary]] = {}
    gemm_layers: dict[tuple[int, NodeMemory], dict[float, tuple[LayerResult, _Summary]]] = {}
    layers: list[LayerResult] = []
    summaries: list[_Summary] = []
    for i, (node, k, shape, mem) in enumerate(zip(graph.nodes, gemm_slot, node_shapes, plans,
                                                  strict=True)):
        if shape is None:
            assert isinstance(node, VectorNode)
            key = (vector_slot[i], mem)
            entry = vector_layers.get(key)
            if entry is None:
                layer = LayerResult(node.name, *_vector_fields(node, mem, hw, energy))
                entry = vector_layers[key] = layer, _summary(layer)
        else:
            assert isinstance(node, GemmNode)
            if mem.one_repeat_at_a_time or mem.split_n > 1 or mem.split_k > 1:
                fused_key = (k, mem.one_repeat_at_a_time, mem.split_n, mem.split_k)
                fused = fused_shapes.get(fused_key)
                if fused is None:
                    fused = _gemm_shape(node, hw, scalesim_compat, mem.one_repeat_at_a_time,
                                        mem.split_n, mem.split_k)
                    # A repeat or a chunk is no larger than the whole: its smallest tiles fit.
                    assert not isinstance(fused, str)
                    fused_shapes[fused_key] = fused
                shape = fused
            by_density = gemm_layers.get((id(shape), mem))
            if by_density is None:
                traffic = _gemm_traffic(node, shape, mem, hw, weights_resident)
                layer = LayerResult(node.name,
                                    *_gemm_fields(node, shape, traffic, mem, hw, energy))
                by_density = gemm_layers[(id(shape), mem)] = {
                    node.weight_density: (layer, _summary(layer))}
            entry = by_density.get(node.weight_density)
            if entry is None:
                layer = _at_density(next(iter(by_density.values()))[0], node, shape, hw,
                                    energy)
                entry = by_density[node.weight_density] = layer, _summary(layer)
        layer, summary = entry
        layers.append(layer if layer.name == node.name else _replaced(layer, name=node.name))
        summaries.append(summary)
    for position, row in reversed(host.rows):
        layers.insert(position, row)
    return SimResult(graph.name, hw.name, tuple(layers),
                     _totals(summaries, hw, area_mm2, host.macs), True, "", area_breakdown,
                     placement,
                     math.ceil(state.size_bytes - 1e-9) if state is not None else 0)


class _HostRows(NamedTuple):
    """The rows of a graph's host GEMMs, each with its position among the chip graph's rows
    (the results list them in graph order), and their MACs."""

    rows: tuple[tuple[int, LayerResult], ...]
    macs: int


_NO_ENERGY = EnergyBreakdown(0.0, 0.0, 0.0, 0.0, 0.0)
# The host runs its GEMMs in float32 (accelsim.ref.vector_mode).
_HOST_GEMM_BITS = VECTOR_FORMATS["fp32"].element_bits


def _host_rows(graph: Graph, vector_format: str) -> _HostRows:
    """``_HostRows`` of ``graph`` simulated with a ``vector_format`` vector unit (which decides
    the chip graph's rows); kept in ``graph.derived``."""
    key = ("sim.host_rows", vector_format == "int")
    found = graph.derived.get(key)
    if found is None:
        on_chip = {node.name for node in chip_graph(graph, vector_format).nodes}
        rows: list[tuple[int, LayerResult]] = []
        position = 0
        for node in graph.nodes:
            if isinstance(node, GemmNode) and node.on_host:
                rows.append((position, LayerResult(
                    node.name, "gemm", node.m, node.k, node.n, node.count, _HOST_GEMM_BITS,
                    _HOST_GEMM_BITS, node.sparsity, 0, 0, node.macs, 0.0, DramBytes(), _NO_ENERGY,
                    ActionCounts(), on_host=True)))
            elif node.name in on_chip:
                position += 1
        found = graph.derived[key] = _HostRows(tuple(rows),
                                               sum(row.macs for _, row in rows))
    assert isinstance(found, _HostRows)
    return found


class _Layout(NamedTuple):
    """What ``simulate`` reads of a graph's nodes at every design point, found once per graph
    (kept in ``Graph.derived``). ``gemm_firsts``: the first node of each distinct GEMM shape (the
    fields a GEMM's cost depends on, but its weight density), in node order; ``gemm_slot``: per
    node, its shape's index there (-1 for a vector op). ``vector_firsts`` / ``vector_slot``: the
    same for vector ops by (op, elements, count, row length), which fix their cost under a
    plan. ``weight_gemms``: per
    GEMM with a weight operand, in node order, (shape index, count)."""

    gemm_firsts: tuple[GemmNode, ...]
    gemm_slot: tuple[int, ...]
    vector_firsts: tuple[VectorNode, ...]
    vector_slot: tuple[int, ...]
    weight_gemms: tuple[tuple[int, int], ...]


def _layout(graph: Graph) -> _Layout:
    layout = graph.derived.get("sim.layout")
    if layout is None:
        gemm_index: dict[tuple, int] = {}
        vector_index: dict[tuple[str, int, int, int], int] = {}
        gemm_firsts: list[GemmNode] = []
        vector_firsts: list[VectorNode] = []
        gemm_slot: list[int] = []
        vector_slot: list[int] = []
        weight_gemms: list[tuple[int, int]] = []
        for node in graph.nodes:
            if isinstance(node, VectorNode):
                k = vector_index.setdefault(
                    (node.vector_op, node.elements, node.count, node.row_length),
                    len(vector_firsts))
                if k == len(vector_firsts):
                    vector_firsts.append(node)
                gemm_slot.append(-1)
                vector_slot.append(k)
                continue
            k = gemm_index.setdefault(
                (node.m, node.k, node.n, node.count, node.weight_bits, node.act_bits,
                 node.sparsity, node.weight_is_activation), len(gemm_firsts))
            if k == len(gemm_firsts):
                gemm_firsts.append(node)
            gemm_slot.append(k)
            vector_slot.append(-1)
            if not node.weight_is_activation:
                weight_gemms.append((k, node.count))
        layout = graph.derived["sim.layout"] = _Layout(
            tuple(gemm_firsts), tuple(gemm_slot), tuple(vector_firsts), tuple(vector_slot),
            tuple(weight_gemms))
    assert isinstance(layout, _Layout)
    return layout
