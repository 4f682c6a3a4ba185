"""A tiny design point with round energy numbers, for hand-checkable simulator tests."""

from __future__ import annotations

from pathlib import Path

from accelsim.hw import HwConfig, load_hw, with_overrides

CONFIGS = Path(__file__).resolve().parents[2] / "hw_configs"

TINY: dict[str, object] = {
    "array.rows": 4, "array.cols": 4, "array.dataflow": "os", "array.clock_mhz": 1000,
    "precision.weight_bits": 8, "precision.act_bits": 8, "precision.accumulator_bits": 32,
    "sparsity.support": "none", "sparsity.zero_gating": False,
    "sram.weights.size_kib": 1, "sram.inputs.size_kib": 1, "sram.outputs.size_kib": 1,
    "sram.weights.word_bits": 8, "sram.inputs.word_bits": 8, "sram.outputs.word_bits": 8,
    "dram.bandwidth_gbps": 1.0, "dram.energy_pj_per_byte": 100.0,
    "vector_unit.lanes": 4, "ideal_memory": True,
    "energy.mult_pj": 1.0, "energy.mult_ref_bits": 8, "energy.add_pj": 0.5,
    "energy.add_ref_bits": 32, "energy.register_pj_per_byte": 0.0, "energy.mux_pj_per_bit": 0.0,
    "energy.sram_pj_per_byte": 1.0, "energy.sram_ref_kib": 1, "energy.leakage_mw_per_mm2": 0.0,
    "energy.vector_pj_per_lane_cycle.fp16": 2.0,
}


def tiny_hw(**overrides: object) -> HwConfig:
    """4x4 int8 array, 1 KiB buffers, 1 byte/cycle DRAM, ideal memory unless overridden.

    Keyword names use ``__`` for dots: ``tiny_hw(array__dataflow="ws")``.
    """
    changes = dict(TINY)
    changes.update({key.replace("__", "."): value for key, value in overrides.items()})
    return with_overrides(load_hw(CONFIGS / "int8_dense.yaml"), changes)
