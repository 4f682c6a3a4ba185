"""Whole-graph memory planning: which activations stay on chip, which spill to DRAM, and when.

One pass over the graph in execution order (rewinding over a chain to try it fused), once per
design point (Stream's memory-manager idea, Symons et al., applied layer by layer; see
docs/hardware.md):

* **Tensors and widths.** Every node's output is one tensor, stored at the width its consumers
  read: a GEMM's A operand at its ``act_bits``, an attention GEMM's B operand at its weight bits,
  a vector op's operand at ``vector_unit.element_bits`` (so fc1's pre-GELU output is 16-bit and
  Q/K/V after their requantize are at the attention width). A tensor nobody reads is a model
  output, written to DRAM at the vector unit's width if a vector op made it, else at its
  producer's ``act_bits``.
* **Liveness.** A tensor is live from its producer to its last consumer (``GemmNode.inputs`` /
  ``VectorNode.inputs``; without edges each node reads the previous node's output).
* **Capacity.** Resident activations share the two activation buffers (``sram.inputs`` +
  ``sram.outputs``). While a GEMM runs, its accumulator tiles (and, when A streams from DRAM,
  its A tiles; doubled when double buffered) are reserved out of that pool. A vector op streams
  row by row, so an operand that dies at a vector op frees its space for the op's own output; a
  GEMM re-reads A for every column group, so A is freed only after it.
* **Spills.** When a new output does not fit, the resident tensors the current node does not
  read are evicted furthest-next-use first (Belady), each written to DRAM once (a *spill*); if
  even that leaves no room, the output itself goes to DRAM. Every later read of a spilled tensor
  is a re-load from DRAM (a GEMM re-loads it as often as its tiling re-reads A).
* **Head-by-head attention.** A chain GEMM -> vector ops -> GEMM whose two GEMMs are attention
  GEMMs (both operands activations) with the same ``count`` > 1, each link the only reader of the
  previous one's output and the chain's value the next GEMM's A, adjacent in execution order
  (QK^T -> scale -> softmax -> requantize -> PV), can run one repeat (head) at a time: QK^T of
  head h, its softmax, its PV, then head h+1. Its intermediates then occupy one repeat's bytes
  on chip (their DRAM bytes, if they spill, stay the whole tensor's), while the chain's other
  operands (Q, K, V) stay live until the chain's last GEMM.
* **FFN in hidden-column chunks.** A chain weight GEMM (fc1) -> element-wise vector ops (GELU,
  requantize) -> weight GEMM (fc2) reducing over fc1's columns, linked the same way, can run in
  equal chunks of the hidden dimension: fc1 computes a chunk of columns, the vector ops run on
  it, fc2 consumes it as a slice of its reduction and accumulates partial sums for its whole
  output, which stay in the output buffer (at ``accumulator_bits``) from fc1's first chunk to
  fc2's last. The intermediates occupy one chunk on chip; each weight is still read once. The
  chunk count is the fewest (at least two, each chunk whole array folds of fc1's columns and
  fc2's reduction and whole 2:4 groups) with which every node of the chain fits beside the live
  set at the chain's start, and the partial sums must fit the output buffer.
* **When to fuse.** Fusion costs array fill and drain per repeat or chunk (each is its own fold
  stream) and, for the FFN, a partial-sum round trip per chunk, so it is taken only where it
  saves DRAM traffic: each chain runs whole first; when that writes activations out (an eviction
  or a spilled output), the walk rewinds to the chain's first node and runs it fused, keeping
  the fused run when its nodes spill fewer bytes (``plan_with_fusion``). This is Stream's layer
  fusion (Symons et al.) cut along the two dimensions a transformer block allows without
  re-reading weights: attention heads and the FFN's hidden dimension.
* **Weight prefetch.** While the vector ops between two GEMMs run, the array and the weight
  buffer are idle: the DRAM bandwidth those ops leave free prefetches the next GEMM's first
  weight tile (up to the weight buffer's tile capacity), taking it off that GEMM's prologue.

Pure Python over the node list (no torch), a few microseconds per node.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import itemgetter
from typing import NamedTuple

from accelsim.formats import SPARSE_24, SPARSE_GROUP
from accelsim.graph.ir import GemmNode, Graph, Node, VectorNode
from accelsim.hw import HwConfig
from accelsim.sim.memory import granule


def resolve_bits(node: GemmNode, hw: HwConfig) -> tuple[int, int, int]:
    """(weight bits, act bits, passes): ``None`` -> native; wider than native -> more passes."""
    p = hw.precision
    act_bits = node.act_bits or p.act_bits
    weight_bits = node.weight_bits or (p.act_bits if node.weight_is_activation else p.weight_bits)
    passes = math.ceil(weight_bits / p.weight_bits) * math.ceil(act_bits / p.act_bits)
    return weight_bits, act_bits, passes


class NodeMemory(NamedTuple):
    """What the planner decided for one node (a named tuple: one per node per design point).

    ``operands_on_chip``: per activation operand (a GEMM's A, then B for attention), whether it
    is read from the on-chip pool (else from DRAM: a model input, or a spilled tensor).
    ``reload_bytes``: the spilled operands' stored bytes, which a vector op reads once (a GEMM
    re-reads as its tiling says).
    ``output_to_dram``: the output is written to DRAM (``output_is_spill`` says whether as a
    spill or as a model output). ``evicted_bytes``: other tensors written out to make room.
    ``prefetched_weight_bytes``: weight bytes already loaded during the vector ops before it.
    ``free_bytes``: activation-buffer space left beyond the GEMM's smallest working set, which
    larger tiles may use. ``one_repeat_at_a_time``: the node is in a fused attention chain, so
    its ``count`` repeats are interleaved with the chain's other nodes (a GEMM's repeats are
    then separate fold streams). ``split_n`` / ``split_k``: a GEMM of a fused FFN chain runs as
    that many equal chunks of its columns (fc1) or of its reduction (fc2, accumulating into
    partial sums that stay in the output buffer), each chunk its own fold stream.
    """

    operands_on_chip: tuple[bool, ...]
    operand_from_model_input: tuple[bool, ...]
    reload_bytes: float
    output_bits: int
    output_bytes: float
    output_to_dram: bool
    output_is_spill: bool
    evicted_bytes: float
    prefetched_weight_bytes: float
    free_bytes: float
    one_repeat_at_a_time: bool = False
    split_n: int = 1
    split_k: int = 1


class ResidentState(NamedTuple):
    """Model state a pass reads and extends, kept between passes (a decoder's KV cache).

    ``size_bytes``: all of it at its stored width. ``readers``: the (node index, operand index)
    pairs whose operand it is (in the graph, a model input). ``writers``: node index -> stored
    bits of each node whose output is written into it (this pass's new positions).
    ``on_chip``: it lives in the activation buffers across passes, its bytes taken from the
    pool for the whole pass: its readers read it there and its writers write into it, with no
    DRAM traffic; otherwise it lives in DRAM, read from there and written there.
    """

    size_bytes: float
    readers: frozenset[tuple[int, int]]
    writers: dict[int, int]
    on_chip: bool = False


def spilled_bytes(plans: Sequence[NodeMemory]) -> float:
    """Activation bytes the plan moves to and from DRAM for lack of room (spills, re-loads)."""
    return _spilled_bytes(plans)


def _output_elements(node: Node) -> int:
    if isinstance(node, GemmNode):
        return node.m * node.n * node.count
    return node.total_elements


def attention_chains(graph: Graph) -> tuple[tuple[int, int], ...]:
    """(first, last) node indices of every chain that can run one repeat at a time: an attention
    GEMM with ``count`` > 1, then vector ops, then an attention GEMM with the same ``count``,
    adjacent, each node read only by the next (as its A operand for the last GEMM)."""
    return _chains(graph.nodes, graph.edges.operands, graph.edges.readers)


def _chains(nodes: Sequence[Node], operands: Sequence[tuple[int, ...]],
            uses: Sequence[tuple[int, ...]]) -> tuple[tuple[int, int], ...]:
    chains = []
    for first, node in enumerate(nodes):
        if not (isinstance(node, GemmNode) and node.weight_is_activation and node.count > 1):
            continue
        last = first + 1
        while last < len(nodes) and isinstance(nodes[last], VectorNode) \
                and operands[last] == (last - 1,) and uses[last - 1] == (last,):
            last += 1
        end = nodes[last] if first + 1 < last < len(nodes) else None
        if isinstance(end, GemmNode) and end.weight_is_activation \
                and end.count == node.count and operands[last][0] == last - 1 \
                and uses[last - 1] == (last,):
            chains.append((first, last))
    return tuple(chains)


def ffn_chains(graph: Graph) -> tuple[tuple[int, int], ...]:
    """(first, last) node indices of every chain that can run in hidden-column chunks: a weight
    GEMM (fc1), then element-wise vector ops over its whole output, then a weight GEMM (fc2)
    reducing over that output's columns with the same rows and count, adjacent, each node read
    only by the next (as fc2's A)."""
    return _ffn_chains(graph.nodes, graph.edges.operands, graph.edges.readers)


def _ffn_chains(nodes: Sequence[Node], operands: Sequence[tuple[int, ...]],
                uses: Sequence[tuple[int, ...]]) -> tuple[tuple[int, int], ...]:
    chains = []
    for first, node in enumerate(nodes):
        if not isinstance(node, GemmNode) or node.weight_is_activation:
            continue
        elements = node.m * node.n * node.count
        last = first + 1
        while last < len(nodes) and isinstance(nodes[last], VectorNode) \
                and nodes[last].row_length == 1 and nodes[last].total_elements == elements \
                and operands[last] == (last - 1,) and uses[last - 1] == (last,):
            last += 1
        end = nodes[last] if first + 1 < last < len(nodes) else None
        if isinstance(end, GemmNode) and not end.weight_is_activation \
                and (end.m, end.k, end.count) == (node.m, node.n, node.count) \
                and operands[last] == (last - 1,) and uses[last - 1] == (last,):
            chains.append((first, last))
    return tuple(chains)


def _spilled_bytes(plans: Sequence[NodeMemory]) -> float:
    return sum(p.evicted_bytes + p.reload_bytes + p.output_bytes * p.output_is_spill
               for p in plans)


class PlanTensors(NamedTuple):
    """Per node: its operands' producer indices (-1: model input), which operands are model
    inputs, the nodes that read its output (ascending), the width its output is stored at and
    that output's bytes."""

    operands: Sequence[tuple[int, ...]]
    from_input: Sequence[tuple[bool, ...]]
    uses: Sequence[tuple[int, ...]]
    bits: Sequence[int]
    size: Sequence[float]


def _tensors(graph: Graph, hw: HwConfig, state: ResidentState | None = None) -> PlanTensors:
    # The widths depend on the graph and three hardware widths only, which a sweep over arrays
    # and memories leaves alone: computed once per graph and widths (``Graph.derived``).
    p = hw.precision
    key = ("plan.tensors", p.weight_bits, p.act_bits, hw.vector_unit.element_bits)
    tensors = graph.derived.get(key)
    if tensors is None:
        tensors = graph.derived[key] = _stored_tensors(graph, hw)
    assert isinstance(tensors, PlanTensors)
    if state is None or not state.writers:
        return tensors
    bits, size = list(tensors.bits), list(tensors.size)
    for i, stored_bits in state.writers.items():
        bits[i] = stored_bits
        size[i] = _output_elements(graph.nodes[i]) * stored_bits / 8
    return tensors._replace(bits=bits, size=size)


def _stored_tensors(graph: Graph, hw: HwConfig) -> PlanTensors:
    nodes = graph.nodes
    count = len(nodes)
    operands, from_input, uses = graph.edges
    element_bits = hw.vector_unit.element_bits
    read_bits = [(element_bits, element_bits) if isinstance(node, VectorNode)
                 else resolve_bits(node, hw)[1::-1] for node in nodes]  # (A, B) widths
    bits = [0] * count
    for i, node_operands in enumerate(operands):
        for operand, producer in enumerate(node_operands):
            if producer >= 0:
                bits[producer] = max(bits[producer], read_bits[i][min(operand, 1)])
    for i in range(count):
        if not uses[i]:
            bits[i] = read_bits[i][0]
    size = [_output_elements(node) * b / 8 for node, b in zip(nodes, bits, strict=True)]
    return PlanTensors(operands, from_input, uses, tuple(bits), tuple(size))


def fusable_chains(nodes: Sequence[Node], operands: Sequence[tuple[int, ...]],
                   uses: Sequence[tuple[int, ...]]) -> tuple[tuple[int, int], ...]:
    """Attention and FFN chains in execution order, none sharing a node with an earlier one."""
    chains: list[tuple[int, int]] = []
    for first, last in sorted(_chains(nodes, operands, uses) + _ffn_chains(nodes, operands, uses)):
        if not chains or first > chains[-1][1]:
            chains.append((first, last))
    return tuple(chains)


def _ffn_chunks(nodes: Sequence[Node], first: int, last: int, size: Sequence[float],
                uses: Sequence[tuple[int, ...]], room: float, fc1_reserve: float,
                hw: HwConfig) -> int:
    """How many equal hidden-column chunks an FFN chain runs in: the fewest (at least two) with
    which every node of the chain fits ``room`` (the pool less the live set and the partial
    sums), each chunk a whole number of array folds of fc1's columns and of fc2's reduction
    (and of 2:4 groups); 0 when none fits."""
    fc1, fc2 = nodes[first], nodes[last]
    assert isinstance(fc1, GemmNode) and isinstance(fc2, GemmNode)
    hidden = fc1.n
    fold = granule(hw.array.dataflow, hw.array.rows, hw.array.cols)
    unit = math.lcm(fold[2], fold[1], SPARSE_GROUP if fc2.sparsity == SPARSE_24 else 1)
    if hidden % unit:
        return 0
    per_column = [size[j] / hidden for j in range(first, last)]
    # fc1 holds its output chunk beside its working tiles; a vector op streams, so only its own
    # output chunk (its operand's is freed as it goes); fc2 the last chunk beside its output.
    needs = ([(per_column[0], fc1_reserve)] + [(c, 0.0) for c in per_column[1:]]
             + [(per_column[-1], size[last] if uses[last] else 0.0)])
    width = min((room - fixed) / per_col for per_col, fixed in needs)
    folds = hidden // unit
    for chunks in range(2, folds + 1):
        if folds % chunks == 0 and hidden // chunks <= width:
            return chunks
    return 0


def plan_with_fusion(graph: Graph, hw: HwConfig,
                     gemm_reserve_bytes: Sequence[tuple[float, float]],
                     node_cycles: Sequence[int], *, chunk_ffn: bool = True,
                     state: ResidentState | None = None) -> tuple[NodeMemory, ...]:
    """``plan_graph``, each attention and FFN chain fused only where that helps: the chain runs
    whole first; when that writes activations out (an eviction or a spilled output), it runs
    again fused from the same state, and the fused run is kept when its nodes spill fewer bytes
    (fusion costs array fill and drain per repeat or chunk, and FFN fusion partial-sum traffic,
    so it is not taken for nothing). ``chunk_ffn=False`` leaves FFN chains whole; ``state``:
    the model state the pass reads and extends, and where it lives."""
    tensors = _tensors(graph, hw, state)
    key = ("plan.chains", chunk_ffn)  # the graph's structure alone: found once per graph
    chains = graph.derived.get(key)
    if chains is None:
        chains = graph.derived[key] = (
            fusable_chains(graph.nodes, tensors.operands, tensors.uses) if chunk_ffn
            else _chains(graph.nodes, tensors.operands, tensors.uses))
    assert isinstance(chains, tuple)
    return plan_from_tensors(graph, tensors, hw, gemm_reserve_bytes, node_cycles, chains, state)


def plan_from_tensors(graph: Graph, tensors: PlanTensors, hw: HwConfig,
                      gemm_reserve_bytes: Sequence[tuple[float, float]],
                      node_cycles: Sequence[int], chains: Sequence[tuple[int, int]],
                      state: ResidentState | None = None) -> tuple[NodeMemory, ...]:
    """``plan_with_fusion`` from tensors and chains the caller computed: what re-plans one graph
    structure under many bit-width assignments (``accelsim.codesign``) reuses."""
    return _walk(graph, tensors, hw, gemm_reserve_bytes, node_cycles, chains, forced=False,
                 state=state)


def plan_graph(graph: Graph, hw: HwConfig, gemm_reserve_bytes: Sequence[tuple[float, float]],
               node_cycles: Sequence[int],
               fused_chains: Sequence[tuple[int, int]] = ()) -> tuple[NodeMemory, ...]:
    """Plan every node's activations. ``gemm_reserve_bytes[i]``: a GEMM's smallest working space
    in the activation buffers (accumulator tiles, streamed A tiles; (0, 0) for vector ops);
    ``node_cycles[i]``: a vector op's compute cycles (for prefetch; ignored for GEMMs);
    ``fused_chains``: (first, last) index pairs from ``attention_chains`` (run one repeat at a
    time) or ``ffn_chains`` (run in hidden-column chunks, where a chunk fits)."""
    return _walk(graph, _tensors(graph, hw), hw, gemm_reserve_bytes, node_cycles, fused_chains,
                 forced=True)


def _walk(graph: Graph, tensors: PlanTensors, hw: HwConfig,
          gemm_reserve_bytes: Sequence[tuple[float, float]], node_cycles: Sequence[int],
          chains: Sequence[tuple[int, int]], forced: bool,
          state: ResidentState | None = None) -> tuple[NodeMemory, ...]:
    """One pass in execution order. ``forced``: every chain is fused (where it can be); else each
    runs whole on trial first (see ``plan_with_fusion``), which rewinds the walk to the chain's
    first node to try it fused."""
    nodes = graph.nodes
    count = len(nodes)
    operands, operand_from_input, uses, bits, size = tensors
    element_bits = hw.vector_unit.element_bits
    pool = hw.sram.inputs.size_bytes + hw.sram.outputs.size_bytes
    state_readers: frozenset[tuple[int, int]] = frozenset()
    state_writers: frozenset[int] = frozenset()
    if state is not None and state.on_chip:
        pool -= state.size_bytes
        state_readers, state_writers = state.readers, frozenset(state.writers)
    bytes_per_cycle = hw.dram_bytes_per_cycle
    weight_tile_capacity = hw.sram.weights.tile_capacity_bytes
    accumulator_bytes = hw.precision.accumulator_bits / 8

    chain_at = {first: last for first, last in chains}
    # Set when a chain is fused. A rejected fused run leaves its entries behind, but they are
    # only read at the chain's own nodes and at its operands' releases, all behind the walk.
    chain_of: dict[int, tuple[int, int, bool]] = {}  # (first, last, one repeat at a time)
    chain_operands: dict[tuple[int, int], frozenset[int]] = {}
    # On chip, a fused chain's intermediates hold one repeat or chunk; every other tensor all
    # of it. A tensor is released after its last reader, or after the fused chain that reader
    # is in (each repeat or chunk of the chain reads it again).
    footprint = list(size)
    release = [u[-1] if u else -1 for u in uses]
    partial_sums = [0.0] * count  # a fused FFN chain's fc2 accumulators, held through the chain
    split: dict[int, tuple[int, int]] = {}  # fused FFN GEMMs: (column chunks, reduction chunks)

    def fuse(first: int, last: int, used: float, resident: dict[int, float]) -> bool:
        head = nodes[first]
        assert isinstance(head, GemmNode)
        if head.weight_is_activation:
            parts = head.count
        else:
            tail = nodes[last]
            assert isinstance(tail, GemmNode)
            sums = tail.m * tail.n * tail.count * accumulator_bytes
            acc, a_tile = gemm_reserve_bytes[first]
            fc1_reserve = acc + (a_tile if operands[first][0] not in resident else 0.0)
            parts = (_ffn_chunks(nodes, first, last, size, uses, pool - used - sums,
                                 fc1_reserve, hw)
                     if sums <= hw.sram.outputs.size_bytes else 0)
            if not parts:
                return False
            for j in range(first, last + 1):
                partial_sums[j] = sums
            split[first], split[last] = (parts, 1), (1, parts)
        for j in range(first, last):
            footprint[j] = size[j] / parts
        outside = {p for j in range(first, last + 1) for p in operands[j]
                   if p >= 0 and not first <= p < last}
        for p in outside:
            release[p] = max(release[p], last)
        chain_operands[(first, last)] = frozenset(outside | set(range(first, last)))
        for j in range(first, last + 1):
            chain_of[j] = (first, last, head.weight_is_activation)
        return True

    resident: dict[int, float] = {}
    used = 0.0
    idle_dram_bytes = 0.0  # DRAM bandwidth left free by the vector ops since the last GEMM
    plans: list[NodeMemory] = []
    # A chain on trial: (first, last, the state before its first node); then, while it runs
    # fused, (last, the state after its whole run, the index of its first plan).
    trial: tuple[int, int, tuple[dict[int, float], float, float, int]] | None = None
    rival: tuple[int, tuple[dict[int, float], float, float, list[NodeMemory]], int] | None = None
    tried: set[int] = set()

    def next_use(tensor: int, after: int) -> int:
        for use in uses[tensor]:
            if use > after:
                return use
        return count

    i = 0
    while i < count:
        if i in chain_at and i not in tried:
            tried.add(i)
            if forced:
                fuse(i, chain_at[i], used, resident)
            else:
                trial = (i, chain_at[i], (dict(resident), used, idle_dram_bytes, len(plans)))
        node = nodes[i]
        node_operands = operands[i]
        on_chip = tuple([p in resident for p in node_operands])
        from_input = operand_from_input[i]
        if state_readers:
            on_chip = tuple([chip or (i, k) in state_readers for k, chip in enumerate(on_chip)])
            from_input = tuple([f and not chip for f, chip in zip(from_input, on_chip,
                                                                   strict=True)])
        is_gemm = isinstance(node, GemmNode)
        acc_reserve, a_tile_reserve = gemm_reserve_bytes[i]
        split_n, split_k = split.get(i, (1, 1))
        if split_k > 1:  # its accumulators are the chain's partial sums, reserved throughout
            acc_reserve = 0.0
        reserve = (acc_reserve + (a_tile_reserve if is_gemm and not on_chip[0] else 0.0)
                   + partial_sums[i])
        chain = chain_of.get(i)
        protected = chain_operands[chain[:2]] if chain else node_operands
        dying = [p for p in resident if release[p] == i]
        if not is_gemm:  # a vector op streams: operands that die here make room for its output
            for p in dying:
                used -= resident.pop(p)
        evicted = 0.0
        out_needed = bool(uses[i])
        into_state = i in state_writers  # written into the state's own space
        want = footprint[i] if out_needed else 0.0
        if used + want + reserve > pool:
            # Belady: evict what is read furthest in the future, never the node's own operands,
            # and only tensors read later than this output will be.
            mine = next_use(i, i)
            # Each candidate's next use found once (a stable sort by it, latest first).
            later = [(use, t) for t in resident if t not in protected
                     and (use := next_use(t, i)) > mine]
            later.sort(key=itemgetter(0), reverse=True)
            for _, t in later:
                if used + want + reserve <= pool:
                    break
                evicted += size[t]
                used -= resident.pop(t)
        keep = out_needed and used + want + reserve <= pool
        if keep:
            resident[i] = footprint[i]
            used += footprint[i]
        free = pool - used - reserve
        if is_gemm:
            for p in dying:
                used -= resident.pop(p)
        reload = 0.0
        for p, chip in zip(node_operands, on_chip, strict=True):
            if p >= 0 and not chip:
                reload += size[p]
        prefetched = 0.0
        if is_gemm:
            if not node.weight_is_activation:
                prefetched = min(idle_dram_bytes, weight_tile_capacity)
            idle_dram_bytes = 0.0
        else:
            # (Most vector ops read no model input: 0.0 without the product.)
            read_input = (sum(from_input) * node.total_elements * element_bits / 8
                          if True in from_input else 0.0)
            moved = read_input + reload + evicted + (0.0 if keep or into_state else size[i])
            idle_dram_bytes += max(0.0, node_cycles[i] * bytes_per_cycle - moved)
        plans.append(NodeMemory(on_chip, from_input, reload, bits[i], size[i],
                                not keep and not into_state, out_needed and not keep, evicted,
                                prefetched,
                                max(0.0, free) if is_gemm else 0.0,
                                chain is not None and chain[2], split_n, split_k))
        if trial is not None and i == trial[1]:
            first, last, (before, used_before, idle_before, start) = trial
            trial = None
            whole = plans[start:]
            if any(p.evicted_bytes or p.output_is_spill for p in whole) \
                    and fuse(first, last, used_before, before):
                rival = (last, (resident, used, idle_dram_bytes, whole), start)
                resident, used, idle_dram_bytes = before, used_before, idle_before
                del plans[start:]
                i = first
                continue
        elif rival is not None and i == rival[0]:
            _, (whole_resident, whole_used, whole_idle, whole), start = rival
            rival = None
            if _spilled_bytes(plans[start:]) >= _spilled_bytes(whole):
                resident, used, idle_dram_bytes = whole_resident, whole_used, whole_idle
                plans[start:] = whole
        i += 1
    return tuple(plans)
