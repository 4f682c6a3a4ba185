"""Pricing and area: the scaling rules and the 2:4 datapath's costs."""

from __future__ import annotations

import pytest
from sim_hw import CONFIGS

from accelsim.hw import load_hw, with_overrides
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
