"""Per-layer action counts (the Accelergy step 1: count; ``energy.py`` prices them).

Names follow Accelergy/Timeloop's vocabulary: ``mac_random`` is an executed MAC, ``mac_gated`` a
clock-gated one (zero weight), ``mac_skipped`` a MAC the 2:4 datapath never issues (free).
Array-side counts use the hardware's datapath widths; storage counts use each operand's own
bits (4-bit values pack two per byte, 2:4 weights carry their 2-bit indices).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from accelsim.formats import INDEX_BITS
from accelsim.hw import HwConfig
from accelsim.sim.memory import MemoryPlan, Operands

BUFFERS: tuple[str, ...] = ("weights", "inputs", "outputs")


@dataclass(frozen=True)
class ActionCounts:
    """Counts for one layer, all instances included. Bytes are storage bytes."""

    mac_random: float = 0.0
    mac_gated: float = 0.0
    mac_skipped: float = 0.0
    mux_select: float = 0.0
    register_bytes: float = 0.0
    sram_read_bytes_weights: float = 0.0
    sram_write_bytes_weights: float = 0.0
    sram_read_bytes_inputs: float = 0.0
    sram_write_bytes_inputs: float = 0.0
    sram_read_bytes_outputs: float = 0.0
    sram_write_bytes_outputs: float = 0.0
    dram_read_bytes: float = 0.0
    dram_write_bytes: float = 0.0
    vector_lane_cycles: float = 0.0
    vector_table_read_bytes: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def register_bits_per_mac(hw: HwConfig, skipping: bool) -> int:
    """Pipeline-register bits toggled per issued MAC, by what moves in the dataflow.

    OS: activation and weight shift through, the accumulator register updates in place.
    WS: activation shifts right, the partial sum shifts down (the weight is held).
    IS: weight shifts, the partial sum shifts (the input is held).
    Skipping: each group of four activations feeds two MACs instead of four (twice the
    activation bits per MAC) and the 2-bit index rides with its weight.
    """
    p = hw.precision
    act = p.act_bits * (2 if skipping else 1)
    index = INDEX_BITS if skipping else 0
    if hw.array.dataflow == "os":
        return act + p.weight_bits + index + p.accumulator_bits
    if hw.array.dataflow == "ws":
        return act + index + p.accumulator_bits
    return p.weight_bits + index + p.accumulator_bits


def shadow_register_bits(hw: HwConfig) -> int:
    """Per-PE register bits that pipelined folds add: the next stationary operand (WS: a weight
    and, on the 2:4 datapath, its index; IS: an activation) or a second accumulator (OS: the
    finished sum drains while the next fold accumulates). None without ``pipelined_folds``."""
    if not hw.array.pipelined_folds:
        return 0
    p = hw.precision
    if hw.array.dataflow == "os":
        return p.accumulator_bits
    if hw.array.dataflow == "ws":
        return p.weight_bits + (INDEX_BITS if hw.sparsity.support == "2:4" else 0)
    return p.act_bits


def array_sram_bytes(ops: Operands, hw: HwConfig, tiles_k: int, *, count: int, passes: int,
                     reduction_steps: int) -> tuple[float, float, float]:
    """Bytes the array moves to and from the buffers in one layer: (weight reads, input reads,
    partial-sum reads + writes). OS re-reads A per column fold and B per row fold; WS streams A
    per column fold and reads B once; IS reads A once and streams B per column fold. Partial
    sums are written once per reduction fold and read back as often (the last read goes out)."""
    rows, cols = hw.array.rows, hw.array.cols
    dataflow = hw.array.dataflow
    if dataflow == "os":
        input_reads = ops.a_bytes * math.ceil(ops.n / cols)
        weight_reads = ops.b_bytes * math.ceil(ops.m / rows)
        psum_updates = tiles_k
    else:
        stream_folds = math.ceil((ops.n if dataflow == "ws" else ops.m) / cols)
        input_reads = ops.a_bytes * (stream_folds if dataflow == "ws" else 1)
        weight_reads = ops.b_bytes * (1 if dataflow == "ws" else stream_folds)
        psum_updates = math.ceil(reduction_steps / rows)
    acc_bytes = ops.m * ops.n * hw.precision.accumulator_bits / 8
    return (weight_reads * passes * count, input_reads * passes * count,
            2 * acc_bytes * psum_updates * count)


def executed_macs(dense_macs: int, issued_fraction: float, gated_fraction: float,
                  passes: int) -> tuple[float, float]:
    """(MACs issued to a PE, of which clock-gated) over all passes (``sparse.executed_fraction``
    gives the fractions of the dense MACs); the rest of the issued ones are ``mac_random``."""
    return dense_macs * issued_fraction * passes, dense_macs * gated_fraction * passes


def gemm_actions(ops: Operands, hw: HwConfig, plan: MemoryPlan, *, count: int, passes: int,
                 dense_macs: int, issued_fraction: float, gated_fraction: float,
                 skipping: bool, array_bytes: tuple[float, float, float], folds: int = 0,
                 kept_on_chip: bool = False, evicted_bytes: float = 0.0) -> ActionCounts:
    """Actions of one GEMM layer: ``count`` instances of ``ops`` run ``passes`` times each.

    ``array_bytes``: ``array_sram_bytes`` under ``plan``'s tiling (the SRAM port check has it).
    An output kept on chip is written into the activation buffers (at ``ops.out_bits``) for its
    consumers; tensors evicted to make room are read out of them and written to DRAM. With
    pipelined folds every PE's shadow register is written once per fold (``folds``: all folds of
    all instances and passes)."""
    rows, cols = hw.array.rows, hw.array.cols
    issued, gated = executed_macs(dense_macs, issued_fraction, gated_fraction, passes)
    weight_reads, input_reads, psum_bytes = array_bytes
    return ActionCounts(
        mac_random=issued - gated,
        mac_gated=gated,
        mac_skipped=dense_macs * passes - issued,
        mux_select=issued if skipping else 0.0,
        register_bytes=(issued * register_bits_per_mac(hw, skipping)
                        + folds * rows * cols * shadow_register_bits(hw)) / 8,
        sram_read_bytes_weights=weight_reads,
        sram_write_bytes_weights=plan.dram_read_b_bytes * count,
        sram_read_bytes_inputs=input_reads + evicted_bytes,
        sram_write_bytes_inputs=(plan.dram_read_a_bytes * count
                                 + (ops.c_bytes * count if kept_on_chip else 0.0)),
        sram_read_bytes_outputs=psum_bytes / 2,
        sram_write_bytes_outputs=psum_bytes / 2,
        dram_read_bytes=(plan.dram_read_a_bytes + plan.dram_read_b_bytes) * count,
        dram_write_bytes=plan.dram_write_c_bytes * count + evicted_bytes,
    )


def sram_port_cycles(demand: tuple[float, float, float], hw: HwConfig) -> float:
    """Cycles the busiest buffer needs to serve ``demand`` (``array_sram_bytes``'s weight, input
    and partial-sum bytes): its word accesses over its banks, one access per bank per cycle."""
    cycles = 0.0
    for buffer, moved in zip((hw.sram.weights, hw.sram.inputs, hw.sram.outputs), demand,
                             strict=True):
        accesses = math.ceil(moved / (buffer.word_bits // 8) - 1e-9)
        cycles = max(cycles, accesses / buffer.banks)
    return cycles


def vector_actions(total_elements: int, operands: int, lane_cycles: float, hw: HwConfig, *,
                   table_read_bytes: float = 0.0, dram_read_bytes: float = 0.0,
                   dram_write_bytes: float = 0.0) -> ActionCounts:
    """A vector op reads its operands from and writes its result to the activation buffers
    (counted on the output buffer); spilled operands and outputs also cross DRAM; a table
    GELU reads its lanes' tables."""
    element_bytes = total_elements * hw.vector_unit.element_bits / 8
    return ActionCounts(
        vector_lane_cycles=lane_cycles,
        vector_table_read_bytes=table_read_bytes,
        sram_read_bytes_outputs=element_bytes * operands,
        sram_write_bytes_outputs=element_bytes,
        dram_read_bytes=dram_read_bytes,
        dram_write_bytes=dram_write_bytes,
    )
