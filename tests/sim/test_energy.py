"""Pricing and area: the scaling rules and the 2:4 datapath's costs."""

from __future__ import annotations

import pytest
from sim_hw import CONFIGS

from accelsim.graph.ir import Graph, VectorNode
from accelsim.hw import load_hw, with_overrides
from accelsim.sim import simulate
from accelsim.sim.actions import ActionCounts
from accelsim.sim.energy import area, mac_energy_pj, pe_area_um2, price, sram_energy_pj_per_byte


def test_int4_mac_is_about_2_7x_cheaper_than_int8_not_4x():
    int4 = mac_energy_pj(load_hw(CONFIGS / "int4_dense.yaml"))
    int8 = mac_energy_pj(load_hw(CONFIGS / "int8_dense.yaml"))
    assert int4 == pytest.approx(0.07 / 4 + 0.03 * 20 / 32)  # docs/energy_sources.md: 0.036 pJ
    assert int8 == pytest.approx(0.10)
    assert 2.5 < int8 / int4 < 3.0


def test_sparse_pe_pays_for_mux_and_registers():
    sparse, dense = load_hw(CONFIGS / "int4_sparse.yaml"), load_hw(CONFIGS / "int4_dense.yaml")
    extra = pe_area_um2(sparse) - pe_area_um2(dense)
    a = sparse.area
    assert extra == pytest.approx(a.mux_um2_per_bit * 4 + a.register_um2_per_bit * (3 * 4 + 2))
    assert area(sparse).total_mm2 > area(dense).total_mm2
    assert area(sparse).sram_mm2 == area(dense).sram_mm2


def test_sram_energy_grows_with_size_by_the_exponent():
    hw = load_hw(CONFIGS / "int4_dense.yaml")
    small = with_overrides(hw, {"sram.weights.size_kib": 32})
    big = with_overrides(hw, {"sram.weights.size_kib": 32 * 128})
    ratio = (sram_energy_pj_per_byte(big, big.sram.weights)
             / sram_energy_pj_per_byte(small, small.sram.weights))
    assert ratio == pytest.approx(128 ** 0.14)
    assert sram_energy_pj_per_byte(small, small.sram.weights) == pytest.approx(1.06)


def test_price_sums_actions_times_table():
    hw = load_hw(CONFIGS / "int4_sparse.yaml")
    actions = ActionCounts(mac_random=100, mac_gated=50, mux_select=100, register_bytes=10,
                           dram_read_bytes=3, dram_write_bytes=1, vector_lane_cycles=2)
    e = price(actions, hw, cycles=1000, area_mm2=1.0)
    mac = mac_energy_pj(hw)
    assert e.mac_pj == pytest.approx(100 * mac + 50 * mac * 0.036 + 100 * 0.00125 * 4
                                     + 10 * 0.028)
    assert e.dram_pj == pytest.approx(4 * 64)
    assert e.vector_pj == pytest.approx(2 * 0.5)
    assert e.leakage_pj == pytest.approx(20e-3 * 1.0 * 1e-6 * 1e12)  # 20 mW x 1 us
    assert e.sram_pj == 0
    assert e.total_pj == pytest.approx(e.mac_pj + e.dram_pj + e.vector_pj + e.leakage_pj)


def test_gelu_table_costs_a_lane_cycle_two_word_reads_and_its_flip_flops():
    """docs/energy_sources.md, the GELU table: N + 1 16-bit words of flip-flops per lane, read
    two words per element through (N + 1):1 multiplexers (N / 3 of the config's 4:1 mux per
    bit), and a third multiply per element."""
    base = with_overrides(load_hw(CONFIGS / "int4_sparse.yaml"), {"vector_unit.format": "int"})
    table = with_overrides(base, {"vector_unit.gelu_table_segments": 16})
    graph = Graph("g", (VectorNode("gelu", vector_op="gelu", elements=6400),
                        VectorNode("ln", vector_op="layernorm", elements=6400, row_length=64)))
    plain, tabled = simulate(graph, base), simulate(graph, table)
    (gelu_plain, ln_plain), (gelu_table, ln_table) = plain.layers, tabled.layers
    assert ln_table.actions == ln_plain.actions and ln_table.cycles == ln_plain.cycles
    assert gelu_table.actions.vector_lane_cycles == 6400 * 3  # polynomial: 2 per element
    assert gelu_plain.actions.vector_lane_cycles == 6400 * 2
    assert gelu_table.actions.vector_table_read_bytes == 6400 * 4
    assert gelu_plain.actions.vector_table_read_bytes == 0
    e, a = base.energy, base.area
    read_pj_per_byte = e.register_pj_per_byte + 8 * e.mux_pj_per_bit * 16 / 3
    assert gelu_table.energy.vector_pj - gelu_plain.energy.vector_pj == pytest.approx(
        6400 * e.vector_pj_per_lane_cycle.int + 6400 * 4 * read_pj_per_byte)
    table_um2 = 17 * 16 * a.register_um2_per_bit + 32 * a.mux_um2_per_bit * 16 / 3
    assert area(table).vector_mm2 - area(base).vector_mm2 == pytest.approx(64 * table_um2 / 1e6)
    assert area(table).vector_mm2 == pytest.approx(64 * (251 + table_um2) / 1e6)
