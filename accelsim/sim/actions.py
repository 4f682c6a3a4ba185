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

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _register_bits_per_mac(hw: HwConfig, skipping: bool) -> int:
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


def gemm_actions(ops: Operands, hw: HwConfig, plan: MemoryPlan, *, count: int, passes: int,
                 dense_macs: int, issued_fraction: float, gated_fraction: float,
                 skipping: bool, reduction_steps: int) -> ActionCounts:
    """Actions of one GEMM layer: ``count`` instances of ``ops`` run ``passes`` times each."""
    rows, cols = hw.array.rows, hw.array.cols
    issued = dense_macs * issued_fraction * passes
    gated = dense_macs * gated_fraction * passes
    acc_bytes = ops.m * ops.n * hw.precision.accumulator_bits / 8
    dataflow = hw.array.dataflow
    if dataflow == "os":
        input_reads = ops.a_bytes * math.ceil(ops.n / cols)
        weight_reads = ops.b_bytes * math.ceil(ops.m / rows)
        psum_updates = plan.tiling.tiles_k
    else:
        stream_folds = math.ceil((ops.n if dataflow == "ws" else ops.m) / cols)
        input_reads = ops.a_bytes * (stream_folds if dataflow == "ws" else 1)
        weight_reads = ops.b_bytes * (1 if dataflow == "ws" else stream_folds)
        psum_updates = math.ceil(reduction_steps / rows)
    # Partial sums: written once per reduction fold, read back for every fold after the first,
    # plus one final read-out towards DRAM.
    out_writes = acc_bytes * psum_updates
    out_reads = acc_bytes * psum_updates
    return ActionCounts(
        mac_random=issued - gated,
        mac_gated=gated,
        mac_skipped=dense_macs * passes - issued,
        mux_select=issued if skipping else 0.0,
        register_bytes=issued * _register_bits_per_mac(hw, skipping) / 8,
        sram_read_bytes_weights=weight_reads * passes * count,
        sram_write_bytes_weights=plan.dram_read_b_bytes * count,
        sram_read_bytes_inputs=input_reads * passes * count,
        sram_write_bytes_inputs=plan.dram_read_a_bytes * count,
        sram_read_bytes_outputs=out_reads * count,
        sram_write_bytes_outputs=out_writes * count,
        dram_read_bytes=(plan.dram_read_a_bytes + plan.dram_read_b_bytes) * count,
        dram_write_bytes=plan.dram_write_c_bytes * count,
    )


def vector_actions(total_elements: int, operands: int, lane_cycles: float,
                   hw: HwConfig) -> ActionCounts:
    """A vector op reads its operands from and writes its result to the output buffer."""
    element_bytes = total_elements * hw.vector_unit.element_bits / 8
    return ActionCounts(
        vector_lane_cycles=lane_cycles,
        sram_read_bytes_outputs=element_bytes * operands,
        sram_write_bytes_outputs=element_bytes,
    )
