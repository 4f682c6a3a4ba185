"""Pricing (the Accelergy step 2): action counts x per-action energy, plus leakage x time; area.

Per-action energies derive from the config's ``energy`` table with the scaling rules of
docs/energy_sources.md (which gives every constant's source): a MAC is a multiplier (R1: energy
and area grow with ``weight_bits x act_bits``) plus an accumulator adder (R2: linear in
``accumulator_bits``), so a 4-bit MAC is ~2.7x, not 4x, cheaper than an 8-bit one. SRAM energy
per byte grows with buffer size as ``(size / ref)^exponent`` (R4); a partial word costs a whole
access.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from accelsim.formats import (
    GELU_TABLE_READ_WORDS,
    GELU_TABLE_WORD_BITS,
    INDEX_BITS,
    MUX_INPUTS,
    SPARSE_24,
)
from accelsim.hw import Buffer, HwConfig
from accelsim.sim.actions import BUFFERS, ActionCounts, shadow_register_bits


@dataclass(frozen=True)
class EnergyBreakdown:
    """Energy of one layer (or a whole run) by component, in picojoules."""

    mac_pj: float
    sram_pj: float
    dram_pj: float
    vector_pj: float
    leakage_pj: float

    @property
    def total_pj(self) -> float:
        return self.mac_pj + self.sram_pj + self.dram_pj + self.vector_pj + self.leakage_pj


@dataclass(frozen=True)
class AreaBreakdown:
    array_mm2: float
    sram_mm2: float
    vector_mm2: float

    @property
    def total_mm2(self) -> float:
        return self.array_mm2 + self.sram_mm2 + self.vector_mm2


def mac_energy_pj(hw: HwConfig) -> float:
    """One executed MAC at the datapath widths: multiplier (R1) + accumulator adder (R2)."""
    e, p = hw.energy, hw.precision
    mult = e.mult_pj * p.weight_bits * p.act_bits / e.mult_ref_bits**2
    return mult + e.add_pj * p.accumulator_bits / e.add_ref_bits


def mux_energy_pj(hw: HwConfig) -> float:
    """One 4:1 activation select on the 2:4 datapath (index register counted as register bytes)."""
    return hw.energy.mux_pj_per_bit * hw.precision.act_bits


def vector_lane_energy_pj(hw: HwConfig) -> float:
    """One vector lane busy for one cycle, in the vector unit's number format."""
    return hw.energy.vector_pj_per_lane_cycle.of(hw.vector_unit.format)


def vector_lane_area_um2(hw: HwConfig) -> float:
    """One vector lane (its format's multiplier, adder and operand registers, and its GELU
    table if it has one)."""
    return hw.area.vector_lane_um2.of(hw.vector_unit.format) + gelu_table_area_um2(hw)


# A GELU table of N segments is N + 1 words of flip-flops behind one (N + 1):1 multiplexer per
# bit of each of the two words a lane reads. An (N + 1):1 multiplexer is N mux2 cells, and the
# config prices a 4:1 multiplexer (3 mux2) per bit: so N / 3 of it per bit read.
def gelu_table_area_um2(hw: HwConfig) -> float:
    """One lane's GELU table (0 without one): its words' flip-flops (``register_um2_per_bit``)
    and the read multiplexers (``mux_um2_per_bit`` x N / 3 per bit read)."""
    segments = hw.vector_unit.gelu_table_segments
    if not segments:
        return 0.0
    a = hw.area
    read_bits = GELU_TABLE_READ_WORDS * GELU_TABLE_WORD_BITS
    return ((segments + 1) * GELU_TABLE_WORD_BITS * a.register_um2_per_bit
            + read_bits * a.mux_um2_per_bit * segments / 3)


def gelu_table_read_pj_per_byte(hw: HwConfig) -> float:
    """A byte read from a lane's GELU table: flip-flop bytes (``register_pj_per_byte``) through
    the (N + 1):1 multiplexer (``mux_pj_per_bit`` x N / 3 per bit)."""
    e = hw.energy
    return e.register_pj_per_byte + 8 * e.mux_pj_per_bit * hw.vector_unit.gelu_table_segments / 3


def sram_energy_pj_per_byte(hw: HwConfig, buffer: Buffer) -> float:
    e = hw.energy
    return e.sram_pj_per_byte * (buffer.size_kib / e.sram_ref_kib) ** e.sram_size_exponent


# Per buffer (``BUFFERS``): its name, the ``ActionCounts`` fields of the bytes read from and
# written to it, its word bytes and its energy per byte.
_SramRates = tuple[tuple[str, str, str, int, float], ...]


def _sram_rates(hw: HwConfig) -> _SramRates:
    rates = []
    for name in BUFFERS:
        buffer: Buffer = getattr(hw.sram, name)
        rates.append((name, f"sram_read_bytes_{name}", f"sram_write_bytes_{name}",
                      buffer.word_bits // 8, sram_energy_pj_per_byte(hw, buffer)))
    return tuple(rates)


def _sram_by_buffer(actions: ActionCounts, rates: _SramRates) -> dict[str, float]:
    energy: dict[str, float] = {}
    for name, read_field, write_field, word_bytes, pj_per_byte in rates:
        moved = getattr(actions, read_field) + getattr(actions, write_field)
        accesses = math.ceil(moved / word_bytes - 1e-9)
        energy[name] = accesses * word_bytes * pj_per_byte
    return energy


def sram_energy_by_buffer_pj(actions: ActionCounts, hw: HwConfig) -> dict[str, float]:
    """SRAM energy of ``actions`` per buffer (``BUFFERS``): whole-word accesses x word bytes x
    the buffer's energy per byte."""
    return _sram_by_buffer(actions, _sram_rates(hw))


def leakage_pj(hw: HwConfig, cycles: float, area_mm2: float) -> float:
    seconds = cycles / (hw.array.clock_mhz * 1e6)
    return hw.energy.leakage_mw_per_mm2 * 1e-3 * area_mm2 * seconds * 1e12


@dataclass(frozen=True)
class EnergyTable:
    """One design point's energy per action (Accelergy's energy reference table), derived from
    its config once (``of``) and charged to every layer of a run (``price``); ``area_mm2``
    leaks for as long as a layer runs."""

    hw: HwConfig
    area_mm2: float
    mac_pj: float
    mux_pj: float
    vector_lane_pj: float
    table_read_pj_per_byte: float
    sram: _SramRates

    @classmethod
    def of(cls, hw: HwConfig, area_mm2: float) -> EnergyTable:
        return cls(hw, area_mm2, mac_energy_pj(hw), mux_energy_pj(hw), vector_lane_energy_pj(hw),
                   gelu_table_read_pj_per_byte(hw), _sram_rates(hw))

    def price_macs(self, actions: ActionCounts) -> float:
        """``price``'s ``mac_pj``: executed and gated MACs, 2:4 selects, pipeline registers."""
        e = self.hw.energy
        return (actions.mac_random * self.mac_pj
                + actions.mac_gated * self.mac_pj * e.gated_mac_fraction
                + actions.mux_select * self.mux_pj
                + actions.register_bytes * e.register_pj_per_byte)

    def price(self, actions: ActionCounts, cycles: float) -> EnergyBreakdown:
        """Energy of a layer's ``actions`` over its ``cycles``."""
        hw = self.hw
        return EnergyBreakdown(
            mac_pj=self.price_macs(actions),
            sram_pj=sum(_sram_by_buffer(actions, self.sram).values()),
            dram_pj=(actions.dram_read_bytes + actions.dram_write_bytes)
            * hw.dram.energy_pj_per_byte,
            vector_pj=(actions.vector_lane_cycles * self.vector_lane_pj
                       + actions.vector_table_read_bytes * self.table_read_pj_per_byte),
            leakage_pj=leakage_pj(hw, cycles, self.area_mm2),
        )


def price(actions: ActionCounts, hw: HwConfig, cycles: float, area_mm2: float) -> EnergyBreakdown:
    """``EnergyTable.price`` for one layer (a run builds the table once)."""
    return EnergyTable.of(hw, area_mm2).price(actions, cycles)


def pe_area_um2(hw: HwConfig) -> float:
    """One PE: multiplier + accumulator adder + operand/accumulator registers (+ 2:4 extras).

    The 2:4 PE adds a 4:1 activation mux, the 2-bit index register and three more activation
    registers (it holds the whole group of four it selects from). Pipelined folds add the shadow
    register (``actions.shadow_register_bits``).
    """
    a, p = hw.area, hw.precision
    mult = a.mult_um2 * p.weight_bits * p.act_bits / a.mult_ref_bits**2
    add = a.add_um2 * p.accumulator_bits / a.add_ref_bits
    register_bits = p.weight_bits + p.act_bits + p.accumulator_bits + shadow_register_bits(hw)
    mux = 0.0
    if hw.sparsity.support == SPARSE_24:
        register_bits += (MUX_INPUTS - 1) * p.act_bits + INDEX_BITS
        mux = a.mux_um2_per_bit * p.act_bits
    return mult + add + register_bits * a.register_um2_per_bit + mux


def area(hw: HwConfig) -> AreaBreakdown:
    sram_kib = hw.sram.weights.size_kib + hw.sram.inputs.size_kib + hw.sram.outputs.size_kib
    return AreaBreakdown(
        array_mm2=hw.array.rows * hw.array.cols * pe_area_um2(hw) / 1e6,
        sram_mm2=sram_kib / 1024 * hw.area.sram_mm2_per_mib,
        vector_mm2=hw.vector_unit.lanes * vector_lane_area_um2(hw) / 1e6,
    )
