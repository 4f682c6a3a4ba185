"""Tiling by SRAM capacity, DRAM traffic with re-fetch, and stall cycles (closed forms).

A GEMM ``C[M, N] = A[M, K] @ B[K, N]`` is cut into tiles ``(tile_m, tile_k, tile_n)`` that are
whole multiples of the array's fold shape for the dataflow (the *granule*). A tile of A must fit
the input buffer, a tile of B the weight buffer and the tile's accumulators the output buffer;
a double-buffered buffer offers half its size to a tile (the other half is being filled).

DRAM traffic follows from the loop order. With the full reduction in one tile (``tiles_k == 1``)
the order ``n_outer`` holds each weight tile while all activation tiles stream past (A is
re-fetched ``tiles_n`` times), ``m_outer`` the reverse; with a split reduction every output
tile streams its A and B tiles (A x ``tiles_n``, B x ``tiles_m``) and partial sums stay in the
output buffer. An operand that fits its buffer whole is read once whatever the tiling. Which
operands cross DRAM at all, and whether the output does, is the graph plan's decision
(``Sources``, from ``sim.plan``): an activation kept on chip moves no DRAM bytes.

Timing is a pipeline over tile steps with uniform compute per step. A double-buffered buffer
fills one half while the array works from the other, and a held tile is prefetched during all the
steps of the tile before it, so summed over the steps ``max(compute, transfer)`` becomes
``max(C, T)`` for the hidden transfers; single-buffered buffers' transfers add serially (an
operand a single-buffered buffer holds whole overlaps: each tile has its own place). The array
starts once the first tile's DRAM operands are in (the *prologue*; weight bytes prefetched before
the layer excepted) and the last output tile drains after compute ends (the *epilogue*). Two
more bounds keep loads that bunch up honest: the steps from the one that needs the last loaded
tile on run only after every load is in (a weight tile held over the inner loop exposes the
whole last outer iteration's compute), and likewise after the first outer iteration's loads
when they carry all of an operand read once (the first column group needs all of A), together
with the output writes an output ring of few tiles forces into that iteration. More generally,
any step starts only once the tiles of the steps up to it are in and the writes the output ring
forces before it are out, and the compute from it on follows: the largest such bound, over
every step, is a best suffix over the loop nest's few tile sizes (edge tiles that load less than
they compute, late in the layer, leave the channel idle). And an operand that takes a new tile
every step into a ring of two slots fetches it while the step before computes: the steps are
summed as ``max(step compute, step loads)`` over the few tile sizes (full and edge tiles), which
exceeds ``max(C, T)`` where edge tiles make the loads uneven (a tile held over the inner loop
has the outer iteration before it to arrive, so it fills their slack instead). Closed forms
only: no loop over tiles or cycles; tests/sim/test_validation.py checks them against a
tile-by-tile timeline (docs/validation.md).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from accelsim.hw import Buffer, HwConfig


@dataclass(frozen=True)
class Operands:
    """One GEMM instance's operand sizes; bits are storage bits per element."""

    m: int
    k: int
    n: int
    act_bits: int
    weight_bits: float  # per dense (k, n) position; fractional for 2:4 values + index
    psum_bits: int
    out_bits: int
    k_granule: int = 1  # reduction tiles must keep whole groups (4 for 2:4 weights)

    @property
    def a_bytes(self) -> float:
        return self.m * self.k * self.act_bits / 8

    @property
    def b_bytes(self) -> float:
        return self.k * self.n * self.weight_bits / 8

    @property
    def c_bytes(self) -> float:
        return self.m * self.n * self.out_bits / 8


@dataclass(frozen=True)
class Tiling:
    tile_m: int
    tile_k: int
    tile_n: int
    tiles_m: int
    tiles_k: int
    tiles_n: int
    order: str  # "n_outer" (weight tile held) or "m_outer" (activation tile held)


@dataclass(frozen=True)
class MemoryPlan:
    """The chosen tiling of one GEMM layer (``count`` instances) and what it costs."""

    tiling: Tiling
    dram_read_a_bytes: int  # per instance
    dram_read_b_bytes: int
    dram_write_c_bytes: int
    stall_cycles: int  # whole layer

    @property
    def dram_bytes(self) -> int:
        return self.dram_read_a_bytes + self.dram_read_b_bytes + self.dram_write_c_bytes


def granule(dataflow: str, rows: int, cols: int) -> tuple[int, int, int]:
    """Fold shape (m, k, n) one array pass covers: OS maps M x N, WS K x N, IS K x M."""
    if dataflow == "os":
        return rows, 1, cols
    if dataflow == "ws":
        return 1, rows, cols
    return cols, rows, 1


def _fit(limit_elems: float, granule_size: int, dim: int) -> int:
    """Largest multiple of ``granule_size`` (or all of ``dim``) within ``limit_elems``."""
    if limit_elems >= dim:
        return dim
    return int(limit_elems // granule_size) * granule_size


def _fold(ops: Operands, gran: tuple[int, int, int]) -> tuple[int, int, int]:
    """The granule clamped to the GEMM, its k extent rounded down to whole 2:4 groups (never
    above a dense weight's, so a compressed weight fits wherever a dense one does)."""
    gk = min(gran[1], ops.k)
    gk = max(ops.k_granule, gk - gk % ops.k_granule)
    return min(gran[0], ops.m), gk, min(gran[2], ops.n)


def plan_tiles(ops: Operands, hw: HwConfig, gran: tuple[int, int, int]) -> Tiling | str:
    """Largest tiles that fit the three buffers, or the reason none fits."""
    cap_a = hw.sram.inputs.tile_capacity_bytes * 8  # bits
    cap_b = hw.sram.weights.tile_capacity_bytes * 8
    cap_c = hw.sram.outputs.tile_capacity_bytes * 8
    gm, gk, gn = _fold(ops, gran)
    if gm * gk * ops.act_bits > cap_a:
        return (f"input tile {gm}x{gk} ({gm * gk * ops.act_bits / 8:.0f} B) exceeds the input "
                f"buffer's tile capacity ({cap_a // 8} B)")
    if gk * gn * ops.weight_bits > cap_b:
        return (f"weight tile {gk}x{gn} ({gk * gn * ops.weight_bits / 8:.0f} B) exceeds the "
                f"weight buffer's tile capacity ({cap_b // 8} B)")
    if gm * gn * ops.psum_bits > cap_c:
        return (f"output tile {gm}x{gn} ({gm * gn * ops.psum_bits / 8:.0f} B) exceeds the "
                f"output buffer's tile capacity ({cap_c // 8} B)")
    tile_k = _fit(min(cap_a / (gm * ops.act_bits), cap_b / (gn * ops.weight_bits)), gk, ops.k)
    tile_m = _fit(cap_a / (tile_k * ops.act_bits), gm, ops.m)
    tile_n = _fit(cap_b / (tile_k * ops.weight_bits), gn, ops.n)
    if tile_m * tile_n * ops.psum_bits > cap_c:
        tile_m = max(gm, _fit(cap_c / (tile_n * ops.psum_bits), gm, ops.m))
        if tile_m * tile_n * ops.psum_bits > cap_c:
            tile_n = _fit(cap_c / (tile_m * ops.psum_bits), gn, ops.n)
    return Tiling(tile_m, tile_k, tile_n, -(-ops.m // tile_m), -(-ops.k // tile_k),
                  -(-ops.n // tile_n), "n_outer")


def candidate_tilings(ops: Operands, hw: HwConfig,
                      gran: tuple[int, int, int]) -> tuple[Tiling, ...] | str:
    """The largest tiles that fit, and the same cut to one fold of N or of M: a narrow first tile
    starts the array sooner, which wins when the operand it re-streams is on chip."""
    tiling = plan_tiles(ops, hw, gran)
    if isinstance(tiling, str):
        return tiling
    gm, _, gn = _fold(ops, gran)
    t = tiling
    narrow_n = Tiling(t.tile_m, t.tile_k, gn, t.tiles_m, t.tiles_k, -(-ops.n // gn), t.order)
    narrow_m = Tiling(gm, t.tile_k, t.tile_n, -(-ops.m // gm), t.tiles_k, t.tiles_n, t.order)
    return tuple(dict.fromkeys((tiling, narrow_n, narrow_m)))


def chunked_tilings(ops: Operands, hw: HwConfig, gran: tuple[int, int, int], split_n: int,
                    split_k: int) -> tuple[Tiling, ...] | str:
    """Tilings of a GEMM of a fused FFN chain, which runs as ``split_n`` equal column chunks
    (fc1) or ``split_k`` equal reduction chunks (fc2) with the chain's other nodes between them.

    A column chunk is tiled like a GEMM of its own, its tiles counted ``split_n`` times. A
    reduction chunk accumulates into partial sums for the whole output, which the plan holds in
    the output buffer: the output is one tile, and each weight tile, as large as the weight
    buffer takes, meets every row of A once (so weights are read once and A stays on chip).
    """
    chunk = dataclasses.replace(ops, n=ops.n // split_n, k=ops.k // split_k)
    if split_k == 1:
        tilings = candidate_tilings(chunk, hw, gran)
        if isinstance(tilings, str):
            return tilings
        return tuple(dataclasses.replace(t, tiles_n=t.tiles_n * split_n) for t in tilings)
    _, gk, gn = _fold(chunk, gran)
    cap_b = hw.sram.weights.tile_capacity_bytes * 8
    if gk * gn * ops.weight_bits > cap_b:
        return (f"weight tile {gk}x{gn} ({gk * gn * ops.weight_bits / 8:.0f} B) exceeds the "
                f"weight buffer's tile capacity ({cap_b // 8} B)")
    tile_k = _fit(cap_b / (gn * ops.weight_bits), gk, chunk.k)
    tile_n = _fit(cap_b / (tile_k * ops.weight_bits), gn, ops.n)
    return (Tiling(ops.m, tile_k, tile_n, 1, -(-chunk.k // tile_k) * split_k, -(-ops.n // tile_n),
                   "n_outer"),)


def refetch_counts(t: Tiling, a_fits: bool = False, b_fits: bool = False) -> tuple[int, int]:
    """How many times A and B are read from DRAM under the tiling's loop order. An operand that
    fits its buffer whole (``a_fits``, ``b_fits``) stays there once loaded: read once."""
    if t.tiles_k > 1:  # every output tile streams its A and B tiles through the reduction
        reads_a, reads_b = t.tiles_n, t.tiles_m
    elif t.order == "n_outer":  # weight tile held; A re-streams per weight tile unless resident
        reads_a, reads_b = (1 if t.tiles_m == 1 else t.tiles_n), 1
    else:
        reads_a, reads_b = 1, (1 if t.tiles_n == 1 else t.tiles_m)
    return (1 if a_fits else reads_a), (1 if b_fits else reads_b)


@dataclass(frozen=True)
class Sources:
    """Where a GEMM layer's operands come from and where its output goes (from the graph plan).

    ``a_in_dram`` / ``b_in_dram``: the operand streams from DRAM (a model input, a spilled
    activation, or a weight); otherwise the array reads it from the on-chip pool.
    ``c_to_dram``: the output is written to DRAM. ``b_fits_once``: B is loaded once whatever the
    tiling (the whole model's weights stay resident). ``evicted_bytes``: other tensors written
    out during this layer; ``prefetched_b_bytes``: weight bytes loaded before it started.
    """

    a_in_dram: bool = True
    b_in_dram: bool = True
    c_to_dram: bool = True
    b_fits_once: bool = False
    evicted_bytes: float = 0.0
    prefetched_b_bytes: float = 0.0


def _last_load_step(t: Tiling, a_loads: bool, b_loads: bool, reads_a: int,
                    reads_b: int) -> int:
    """The step (of one instance's ``tiles_m x tiles_k x tiles_n`` in loop order) that first
    needs the last tile loaded from DRAM (-1: nothing is). A tile held over the inner loop (the
    outer operand's) is needed from the start of the last outer iteration; an operand read once
    whole is loaded by the end of the first outer iteration (or of its first inner run)."""
    steps = t.tiles_m * t.tiles_k * t.tiles_n
    if t.order == "n_outer":
        outer_loads, inner_loads = b_loads, a_loads
        outer_reads, inner_reads = reads_b, reads_a
        inner = t.tiles_m
    else:
        outer_loads, inner_loads = a_loads, b_loads
        outer_reads, inner_reads = reads_a, reads_b
        inner = t.tiles_n
    outer = steps // (inner * t.tiles_k)
    last = -1
    if inner_loads:  # re-streamed: every step; read once: during the first outer iteration
        last = steps - 1 if inner_reads > 1 else inner * t.tiles_k - 1
    if outer_loads:
        if t.tiles_k == 1:  # held over the inner loop
            last = max(last, (outer - 1) * inner)
        else:  # a new tile each reduction step, or read once during its first inner run
            last = max(last, steps - 1 if outer_reads > 1
                       else (outer - 1) * inner * t.tiles_k + t.tiles_k - 1)
    return last


def _sizes(tile: int, tiles: int, total: int) -> tuple[tuple[int, int], ...]:
    """(extent, how many) of a dimension's tiles: the full ones and the last."""
    last = total - (tiles - 1) * tile
    return ((tile, tiles - 1), (last, 1)) if tiles > 1 else ((last, 1),)


def _early_cycles(ops: Operands, t: Tiling, src: Sources, a_bytes_per_elem: float,
                  b_bytes_per_elem: float, compute_cycles: float, steps: int,
                  bpc: float) -> float:
    """The second step, and the last of the first reduction run, start only once the tiles
    they need are in (past the prologue's), and the rest of the compute follows: an operand
    read once loads its tiles there one a step, with no earlier steps to hide them behind.
    ``*_bytes_per_elem``: DRAM bytes per element of A and B that overlap compute (0 for an
    operand on chip, or single-buffered: those add serially)."""
    per_step = compute_cycles / steps
    b_prefetched = max(0.0, src.prefetched_b_bytes - t.tile_k * t.tile_n * ops.weight_bits / 8)
    if t.tiles_k > 1:
        per_depth = t.tile_m * a_bytes_per_elem, t.tile_n * b_bytes_per_elem
        bounds = []
        runs = ((min(t.tile_k, ops.k - t.tile_k), 1), (ops.k - t.tile_k, t.tiles_k - 1))
        for depth, done in runs:
            moved = per_depth[0] * depth + max(0.0, per_depth[1] * depth - b_prefetched)
            bounds.append(moved / bpc + compute_cycles - done * per_step)
        return max(bounds)
    if steps == 1:
        return 0.0
    m_next = t.order == "n_outer" and t.tiles_m > 1 or t.order == "m_outer" and t.tiles_n == 1
    if m_next:
        moved = min(t.tile_m, ops.m - t.tile_m) * t.tile_k * a_bytes_per_elem
    else:
        moved = max(0.0, t.tile_k * min(t.tile_n, ops.n - t.tile_n) * b_bytes_per_elem
                    - b_prefetched)
    return moved / bpc + compute_cycles - per_step


def _paced_operands(ops: Operands, hw: HwConfig, t: Tiling, a_streams: bool, b_streams: bool,
                    c_streams: bool) -> tuple[bool, bool, bool]:
    """Which of A, B and C move a tile every step through a double-buffered ring of two slots
    (``*_streams``: the operand crosses DRAM and is not held whole). A held tile (the outer
    operand's with the full reduction in one tile) has the whole inner loop to arrive."""
    per_step_a = t.tiles_k > 1 or t.order == "n_outer" and t.tiles_m > 1
    per_step_b = t.tiles_k > 1 or t.order == "m_outer" and t.tiles_n > 1
    sram = hw.sram
    return (a_streams and per_step_a and _ring_of_two(sram.inputs, t.tile_m * t.tile_k
                                                      * ops.act_bits / 8),
            b_streams and per_step_b and _ring_of_two(sram.weights, t.tile_k * t.tile_n
                                                      * ops.weight_bits / 8),
            c_streams and _ring_of_two(sram.outputs, t.tile_m * t.tile_n * ops.psum_bits / 8))


def _c_slots(hw: HwConfig, t: Tiling, ops: Operands) -> int:
    """Output tiles the output buffer holds while earlier ones are written out."""
    return max(2, int(hw.sram.outputs.size_bytes // (t.tile_m * t.tile_n * ops.psum_bits / 8)))


def _ring_of_two(buffer: Buffer, tile_bytes: float) -> bool:
    return buffer.double_buffered and buffer.size_bytes // tile_bytes < 3


def _paced_cycles(ops: Operands, bpc: float, t: Tiling, streamed: tuple[bool, bool, bool],
                  hidden_bytes: float, compute_cycles: float, count: int) -> float:
    """Cycles of the steps when each step's tile loads must arrive during the step before.

    An operand that takes a new tile every step into a ring of two slots can fetch it only while
    the step before computes, so a step waits for ``max(compute, its loads)``; summed over the
    steps this is more than ``max(compute, transfers)`` when tiles differ (edge tiles) and
    compute and transfers are close. An output ring of two tiles writes each tile out during the
    next tile's steps, into whatever slack they leave. ``streamed``: A, B and C paced that way;
    the rest of ``hidden_bytes`` spreads evenly over the steps. Summed over the few tile sizes
    (full and edge tiles of each dimension), not over the steps.
    """
    if not any(streamed):
        return 0.0
    # In cycles of the DRAM channel per element moved.
    a_cyc, b_cyc, c_cyc = (ops.act_bits / 8 / bpc * streamed[0],
                           ops.weight_bits / 8 / bpc * streamed[1],
                           ops.out_bits / 8 / bpc * streamed[2])
    steps = t.tiles_m * t.tiles_k * t.tiles_n * count
    per_step = compute_cycles / steps
    first_loads = t.tile_k * (t.tile_m * a_cyc + t.tile_n * b_cyc)
    streamed_cycles = count * (a_cyc * ops.m * ops.k * t.tiles_n + b_cyc * ops.k * ops.n
                               * t.tiles_m + c_cyc * ops.m * ops.n) - first_loads
    spread = max(0.0, hidden_bytes / bpc - streamed_cycles) / steps
    if (first_loads + spread) * t.tiles_k + t.tile_m * t.tile_n * c_cyc <= per_step * t.tiles_k:
        return 0.0  # every tile's loads and write fit its steps (the first is the largest)
    depths = _sizes(t.tile_k, t.tiles_k, ops.k)
    total = 0.0
    first: tuple[float, float] | None = None
    for rows, n_m in _sizes(t.tile_m, t.tiles_m, ops.m):
        for cols, n_n in _sizes(t.tile_n, t.tiles_n, ops.n):
            # An output tile is written while the next tile's steps run, into their slack.
            paced = moved = 0.0
            for depth, n_k in depths:
                load = depth * (rows * a_cyc + cols * b_cyc) + spread
                paced += (load if load > per_step else per_step) * n_k
                moved += load * n_k
            moved += rows * cols * c_cyc
            total += (paced if paced > moved else moved) * n_m * n_n * count
            if first is None:
                first = paced, moved
    assert first is not None
    # The first step's loads are the prologue, and the first tile writes nothing out: a tile is
    # written during the next one's steps, the last one after them all (the epilogue).
    paced, moved = first
    return total - max(paced, moved) + max(
        paced + max(per_step, spread) - max(per_step, first_loads + spread),
        moved - first_loads - t.tile_m * t.tile_n * c_cyc)


# A run of steps as (sum, best suffix, best suffix not starting at the run's first step) of
# each step's compute less the transfers released at it; suffixes may be empty (0).
_Run = tuple[float, float, float]


def _then(first: _Run, second: _Run) -> _Run:
    return (first[0] + second[0], max(second[1], second[0] + first[1]),
            max(second[1], second[0] + first[2]))


def _repeat(run: _Run, times: int) -> _Run:
    if times == 1:
        return run
    if times < 1:
        return 0.0, 0.0, 0.0
    total, best, proper = run
    rest = total * (times - 1)
    return (rest + total, best + rest if rest > 0.0 else best,
            max(best + rest - total if rest > total else best, rest + proper))


def _suffix_cycles(ops: Operands, t: Tiling, reads: tuple[int, int],
                   cyc: tuple[float, float, float], per_step: float, count: int) -> float:
    """The most that the steps from some step on compute beyond the transfers released after
    it, over every step but the first.

    Step ``j`` starts only once the tiles of the steps up to it are in (and the output writes
    the output ring forces before it); the steps from ``j`` on then compute, so the layer takes
    at least the transfers in all, less those released after ``j``, plus that compute. Each
    output tile's write is released here at its own first step (the caller takes the writes of
    the last ring's worth of tiles off the total). Built up the loop nest from the few tile
    sizes of each dimension, not over the steps. ``cyc``: channel cycles per element of A and B
    loaded and of C written (0 for transfers that do not overlap compute).
    """
    a_cyc, b_cyc, c_cyc = cyc
    if t.order == "n_outer":
        outer_sizes = _sizes(t.tile_n, t.tiles_n, ops.n)
        inner_sizes = _sizes(t.tile_m, t.tiles_m, ops.m)
        inner_reads, outer_reads, inner_cyc, outer_cyc = reads[0], reads[1], a_cyc, b_cyc
    else:
        outer_sizes = _sizes(t.tile_m, t.tiles_m, ops.m)
        inner_sizes = _sizes(t.tile_n, t.tiles_n, ops.n)
        inner_reads, outer_reads, inner_cyc, outer_cyc = reads[1], reads[0], b_cyc, a_cyc
    edge_k = ops.k - (t.tiles_k - 1) * t.tile_k

    def tile(outer_extent: int, inner_extent: int, inner_loads: bool,
             outer_loads: bool) -> _Run:
        # The first step releases the write, then full reduction steps, then the edge one.
        per_depth = inner_extent * inner_cyc * inner_loads + outer_extent * outer_cyc * outer_loads
        write = outer_extent * inner_extent * c_cyc
        if t.tiles_k == 1:
            spare = per_step - ops.k * per_depth - write
            return spare, max(0.0, spare), 0.0
        full = per_step - t.tile_k * per_depth
        after = per_step - edge_k * per_depth + max(0.0, full * (t.tiles_k - 2))
        total = full * (t.tiles_k - 1) - write + per_step - edge_k * per_depth
        return total, max(0.0, after, total), max(0.0, after)

    def outer_iteration(extent: int, first: bool) -> _Run:
        # The inner operand loads every step if re-streamed, else in the first outer iteration;
        # the outer operand every step if re-streamed, else in the first inner run (its tile
        # held over the inner loop with the full reduction in one tile).
        inner_loads = inner_reads > 1 or first
        every = t.tiles_k > 1 and outer_reads > 1
        run = (0.0, 0.0, 0.0)
        for index, (inner_extent, times) in enumerate(inner_sizes):
            if index == 0 and not every:
                run = tile(extent, inner_extent, inner_loads, True)
                if times > 1:
                    run = _then(run, _repeat(tile(extent, inner_extent, inner_loads, False),
                                             times - 1))
            else:
                run = _then(run, _repeat(tile(extent, inner_extent, inner_loads, every), times))
        return run

    (extent, times), *rest = outer_sizes
    instance = outer_iteration(extent, True)
    if times > 1:
        # A re-streamed inner operand loads in every outer iteration, the first included.
        later = instance if inner_reads > 1 else outer_iteration(extent, False)
        instance = _then(instance, _repeat(later, times - 1))
    for extent, times in rest:
        instance = _then(instance, _repeat(outer_iteration(extent, False), times))
    return per_step + _repeat(instance, count)[2]


def _total_cycles(a_bytes: float, b_bytes: float, c_bytes: float, ops: Operands, hw: HwConfig,
                  tiling: Tiling, src: Sources, compute_cycles: float,
                  reads: tuple[int, int], count: int, a_fits: bool, b_fits: bool,
                  bpc: float, prune_above: float = math.inf) -> float:
    """Prologue + max(compute, hidden transfers) + serialized transfers + epilogue (cycles).

    Layer totals in bytes. The array starts once the first tile's operands are in (those already
    prefetched excepted) and ends when the last output tile is out; the transfers between
    overlap compute in double-buffered buffers and serialize in single-buffered ones.
    ``bpc``: DRAM bytes per cycle. ``prune_above``: when the bounds short of the best suffix and
    the paced sum already exceed it, that lower bound is returned without those two (the caller
    then has no use for the exact cycles).
    """
    # An operand held whole loads each tile into its own place: it overlaps compute as if the
    # buffer were double buffered.
    db_a = hw.sram.inputs.double_buffered or reads[0] == 1 and a_fits
    db_b = hw.sram.weights.double_buffered or reads[1] == 1 and b_fits
    db_c = hw.sram.outputs.double_buffered
    # Prefetched weight bytes are the first tile's (and beyond): neither prologue nor stream.
    first_b = max(0.0, min(b_bytes, tiling.tile_k * tiling.tile_n * ops.weight_bits / 8)
                  - src.prefetched_b_bytes) * db_b
    b_bytes = max(0.0, b_bytes - src.prefetched_b_bytes)
    first_a = min(a_bytes, tiling.tile_m * tiling.tile_k * ops.act_bits / 8) * db_a
    last_c = min(c_bytes, tiling.tile_m * tiling.tile_n * ops.out_bits / 8) * db_c
    hidden_loads = a_bytes * db_a + b_bytes * db_b - first_a - first_b
    hidden = hidden_loads + (c_bytes + src.evicted_bytes) * db_c - last_c
    serial = (a_bytes * (not db_a) + b_bytes * (not db_b)
              + (c_bytes + src.evicted_bytes) * (not db_c))
    # The steps from the one that needs the last loaded tile on cannot start before every
    # load is in: their compute is exposed after the loads. Likewise after the first outer
    # iteration's loads, which hold all of an inner operand that is read once.
    steps = tiling.tiles_m * tiling.tiles_k * tiling.tiles_n
    last = _last_load_step(tiling, a_bytes > 0, b_bytes > 0, *reads)
    tail = (compute_cycles * (steps - last) / (steps * count)) if last >= 0 else 0.0
    if tiling.order == "n_outer":
        inner_bytes, inner_db, inner_reads, outer_bytes, outer_db = a_bytes, db_a, reads[0], \
            b_bytes, db_b
        inner, outer = tiling.tiles_m, tiling.tiles_n
    else:
        inner_bytes, inner_db, inner_reads, outer_bytes, outer_db = b_bytes, db_b, reads[1], \
            a_bytes, db_a
        inner, outer = tiling.tiles_n, tiling.tiles_m
    first_pass = 0.0
    c_slots = _c_slots(hw, tiling, ops)
    c_write = tiling.tile_m * tiling.tile_n * ops.out_bits / 8 * db_c * (c_bytes > 0)
    if inner_reads == 1 and outer > 1:
        first_loads = ((inner_bytes * inner_db + outer_bytes * outer_db / outer) / count
                       - first_a - first_b)
        # Output tile j + slots starts only once tile j is written: in a ring of few slots the
        # first outer iteration's writes share the channel with its loads. And the second outer
        # iteration starts only once its first outer tile is in.
        next_outer = outer_bytes * outer_db / (outer * tiling.tiles_k * count)
        first_steps = inner * tiling.tiles_k
        first_pass = max(
            (first_loads + max(0, inner - c_slots) * c_write) / bpc
            + compute_cycles * (steps - first_steps + 1) / (steps * count),
            (first_loads + next_outer + max(0, inner + 1 - c_slots) * c_write) / bpc
            + compute_cycles * (steps - first_steps) / (steps * count))
    early = _early_cycles(ops, tiling, src, ops.act_bits / 8 * db_a * (a_bytes > 0),
                          ops.weight_bits / 8 * db_b * (b_bytes > 0), compute_cycles,
                          steps * count, bpc)
    # The return's sum over the cheaper bounds (the best suffix and the paced sum are the
    # costly ones): never above the exact cycles.
    exposed = (first_a + first_b + serial + last_c) / bpc
    cheap = max(compute_cycles, hidden / bpc, hidden_loads / bpc + tail, first_pass, early)
    if exposed + cheap > prune_above:
        return exposed + cheap
    # The last ring's worth of writes need not precede any step.
    unforced = min(c_bytes * db_c, c_slots * c_write)
    forced = (hidden_loads + c_bytes * db_c - unforced) / bpc + _suffix_cycles(
        ops, tiling, reads, (ops.act_bits / 8 / bpc * db_a * (a_bytes > 0),
                            ops.weight_bits / 8 / bpc * db_b * (b_bytes > 0),
                            ops.out_bits / 8 / bpc * db_c * (c_bytes > 0)),
        compute_cycles / (steps * count), count)
    # A tile held over the inner loop has the whole outer iteration before it to arrive: it
    # fills the paced steps' slack (the edge tiles') rather than spreading over every step.
    held = (outer_bytes * outer_db - (first_b if tiling.order == "n_outer" else first_a)
            if tiling.tiles_k == 1 else 0.0)
    paced = _paced_cycles(ops, bpc, tiling, _paced_operands(
        ops, hw, tiling, not a_fits and a_bytes > 0, not b_fits and b_bytes > 0, c_bytes > 0),
        hidden - held, compute_cycles, count)
    return exposed + max(
        compute_cycles, hidden / bpc, hidden_loads / bpc + tail, first_pass, paced, early, forced)


# Cycles within this fraction of the fastest tiling's are a tie, broken by DRAM traffic: below
# the closed forms' validated accuracy (within 2% of a tile timeline, tests/sim/test_validation.py)
# the difference is not resolved, and a tiling that streams its weights several times over for
# it costs DRAM energy that an architect would not pay.
CYCLES_TIE = 0.02


def plan_memory(ops: Operands, hw: HwConfig, compute_cycles: int, count: int,
                candidates: tuple[Tiling, ...], src: Sources = Sources()) -> MemoryPlan:
    """Pick the least-traffic tiling, in either loop order, of those within ``CYCLES_TIE`` of
    the fastest candidate's cycles (the fastest of those if traffic ties)."""
    a_fits = ops.a_bytes <= hw.sram.inputs.tile_capacity_bytes
    b_fits = src.b_fits_once or ops.b_bytes <= hw.sram.weights.tile_capacity_bytes
    c_bytes = ops.c_bytes if src.c_to_dram else 0.0
    a_once, b_once = ops.a_bytes, ops.b_bytes
    bpc = hw.dram_bytes_per_cycle
    options: list[tuple[float, float, float, float, Tiling]] = []
    # A tiling whose cycles exceed the tie threshold of one already seen can be neither the
    # fastest nor tied with it: a lower bound above that threshold stands in for its cycles.
    prune_above = math.inf
    for tiling in candidates:
        for order in ("n_outer", "m_outer"):
            t = Tiling(tiling.tile_m, tiling.tile_k, tiling.tile_n, tiling.tiles_m,
                       tiling.tiles_k, tiling.tiles_n, order)
            reads_a, reads_b = refetch_counts(t, a_fits, b_fits)
            a_bytes = a_once * reads_a * src.a_in_dram
            b_bytes = b_once * reads_b * src.b_in_dram
            cycles = (0.0 if hw.ideal_memory else _total_cycles(
                a_bytes * count, b_bytes * count, c_bytes * count, ops, hw, t, src,
                compute_cycles, (reads_a, reads_b), count, a_fits, b_fits, bpc, prune_above))
            prune_above = min(prune_above, cycles * (1 + CYCLES_TIE))
            options.append((a_bytes + b_bytes, cycles, a_bytes, b_bytes, t))
    assert options, "plan_memory needs at least one candidate tiling"
    tie = min(option[1] for option in options) * (1 + CYCLES_TIE)
    _, cycles, a_bytes, b_bytes, tiling = min((o for o in options if o[1] <= tie),
                                              key=lambda o: o[:2])
    stall = 0 if hw.ideal_memory else max(0, math.ceil(cycles - compute_cycles - 1e-6))
    return MemoryPlan(tiling, math.ceil(a_bytes - 1e-9), math.ceil(b_bytes - 1e-9),
                      math.ceil(c_bytes - 1e-9), stall)
