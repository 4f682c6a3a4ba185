"""The ZigZag comparison's input builder (benchmarks/zigzag_compare.py), without ZigZag: the
accelerator, mapping and workload it hands ZigZag carry accelsim's config and layers, and a
missing ZigZag virtualenv is one clear line."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from accelsim.errors import AccelsimError
from accelsim.graph.ir import GemmNode, Graph
from accelsim.hw import load_hw, with_overrides
from accelsim.sim.energy import mac_energy_pj, sram_energy_pj_per_byte

REPO = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("zigzag_compare",
                                              REPO / "benchmarks" / "zigzag_compare.py")
assert SPEC is not None and SPEC.loader is not None
zz = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = zz  # dataclasses look their module up there
SPEC.loader.exec_module(zz)
CONFIG = REPO / "hw_configs" / "int4_sparse.yaml"


@pytest.fixture(scope="module")
def hw():
    return zz.dense_hw(CONFIG)


def test_accelerator_carries_the_configs_array_buffers_and_energies(hw):
    acc = zz.zigzag_accelerator(hw)
    array = acc["operational_array"]
    assert array["sizes"] == [64, 64] and array["input_precision"] == [4, 4]
    # A MAC: multiplier + 20-bit adder + the OS registers it toggles (4 + 4 + 20 bits).
    assert array["unit_energy"] == pytest.approx(mac_energy_pj(hw) + 0.028 * 28 / 8)
    memories = acc["memories"]
    assert memories["reg_o"]["size"] == 20 and memories["reg_w"]["size"] == 4
    for name, size_kib, banks in (("weights", 1024, 16), ("inputs", 1024, 16),
                                  ("outputs", 512, 64)):
        sram = memories[f"sram_{name}"]
        assert sram["size"] == size_kib * 1024 * 8
        assert sram["force_double_buffering"] is True
        port = sram["ports"][0]
        assert (port["bandwidth_min"], port["bandwidth_max"]) == (64, 64 * banks)
        per_byte = sram_energy_pj_per_byte(hw, getattr(hw.sram, name))
        assert sram["r_cost"] == pytest.approx(per_byte * 8 * banks)
        # ZigZag prices ceil(bits / min) * (min / max) accesses of r_cost: whole 64-bit words
        # at accelsim's energy per byte, as accelsim's own SRAM pricing does.
        bits = 100
        zigzag_pj = math.ceil(bits / 64) * (64 / (64 * banks)) * sram["r_cost"]
        assert zigzag_pj == pytest.approx(2 * 8 * per_byte)
    dram = memories["dram"]["ports"][0]
    assert dram["bandwidth_max"] == 272  # 34 GB/s at 1 GHz = 34 bytes per cycle
    assert memories["dram"]["r_cost"] == pytest.approx(64 * 34)


def test_mapping_is_the_output_stationary_unrolling(hw):
    (mapping,) = zz.zigzag_mapping(hw)
    assert mapping["spatial_mapping"] == {"D1": ["D, 64"], "D2": ["K, 64"]}
    assert "temporal_ordering" not in mapping  # left to ZigZag's search


def test_accelerator_refuses_what_zigzag_cannot_model(hw):
    with pytest.raises(AccelsimError, match="sparsity.support='2:4'.*allowed: 'none'"):
        zz.zigzag_accelerator(load_hw(CONFIG))
    with pytest.raises(AccelsimError, match="array.dataflow='ws'.*allowed: 'os'"):
        zz.zigzag_accelerator(with_overrides(hw, {"array.dataflow": "ws"}))


def test_layers_are_the_distinct_weight_gemms_at_their_widths(hw):
    graph = Graph("toy", (
        GemmNode("embed.proj", 196, 768, 768),  # native width: 4 bits on this array
        GemmNode("layers.0.mlp.fc1", 197, 768, 3072, weight_bits=4, act_bits=4),
        GemmNode("layers.0.attention/matmul", 197, 64, 197, count=12, weight_bits=4,
                 act_bits=4, kind="matmul", weight_is_activation=True),
        GemmNode("layers.1.mlp.fc1", 197, 768, 3072, weight_bits=4, act_bits=4),
    ))
    layers = zz.comparison_layers("toy", graph, hw)
    assert [(layer.label, layer.m, layer.k, layer.n, layer.weight_bits, layer.act_bits,
             layer.instances) for layer in layers] == [
        ("proj", 196, 768, 768, 4, 4, 1), ("mlp.fc1", 197, 768, 3072, 4, 4, 2)]
    workload = zz.zigzag_layer(layers[1], hw)
    assert workload["equation"] == "O[d][k]+=I[d][c]*W[c][k]"
    assert dict(zip(workload["loop_dims"], workload["loop_sizes"], strict=True)) == {
        "D": 197, "C": 768, "K": 3072}
    assert workload["operand_precision"] == {"W": 4, "I": 4, "O": 20, "O_final": 4}


def test_a_layer_wider_than_the_array_is_refused(hw):
    graph = Graph("toy", (GemmNode("layers.0.fc", 8, 16, 8, weight_bits=8, act_bits=8),))
    with pytest.raises(AccelsimError, match="several passes"):
        zz.comparison_layers("toy", graph, hw)


def test_zigzag_row_converts_bits_and_picojoules():
    def level(bits: dict, energy: dict) -> dict:
        return {"bits": bits, "energy_pj": energy}

    zero = {"rd_out_to_high": 0, "wr_in_by_high": 0, "rd_out_to_low": 0, "wr_in_by_low": 0}
    result = {
        "mac_energy_pj": 2e6, "latency_cycles": 120.0, "ideal_temporal_cycles": 100.0,
        "onloading_cycles": 5.0, "stall_cycles": 10.0, "offloading_cycles": 3.0,
        "drain_cycles": 2.0,
        "temporal_mapping": {op: ["C4", "K2", ""] for op in ("O", "I", "W")},
        "operands": {
            "W": {"levels": [level(zero, zero),
                             level(zero | {"rd_out_to_low": 800, "wr_in_by_high": 160},
                                   zero | {"rd_out_to_low": 1e6}),
                             level(zero | {"rd_out_to_low": 160}, zero | {"rd_out_to_low": 3e6})]},
            "I": {"levels": [level(zero, zero), level(zero, zero),
                             level(zero | {"rd_out_to_low": 80}, zero)]},
            "O": {"levels": [level(zero, zero),
                             level(zero | {"wr_in_by_low": 40, "rd_out_to_high": 40}, zero),
                             level(zero | {"wr_in_by_low": 40}, zero)]},
        },
    }
    row = zz.zigzag_row(result)
    assert (row["dram_read_weights_bytes"], row["dram_read_inputs_bytes"],
            row["dram_write_outputs_bytes"], row["dram_bytes"]) == (20, 10, 5, 35)
    assert (row["sram_weights_bytes"], row["sram_outputs_bytes"]) == (120, 10)
    assert (row["array_uj"], row["sram_uj"], row["dram_uj"], row["energy_uj"]) == (2, 1, 3, 6)
    assert row["mapping"].startswith("O: reg [C4], SRAM [K2], DRAM []")


def test_a_missing_zigzag_venv_is_one_clear_line(tmp_path, capsys):
    missing = tmp_path / "no_venv" / "bin" / "python"
    with pytest.raises(AccelsimError, match=f"ZigZag not found at {missing}.*--zigzag-python"):
        zz.require_zigzag(missing)
    out_dir = tmp_path / "out"
    assert zz.main(["--zigzag-python", str(missing), "--out-dir", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install zigzag-dse==3.9.1" in err
    assert not out_dir.exists()


def test_summary_counts_equal_counts_and_ratio_ranges():
    keys = ("dram_bytes", "sram_weights_bytes", "sram_inputs_bytes", "sram_outputs_bytes",
            "energy_uj", "array_uj", "sram_uj", "dram_uj", "compute_cycles", "cycles")
    base = dict.fromkeys(keys, 100.0)
    rows = [base | {"source": "zigzag"}, base | {"source": "accelsim_layer", "energy_uj": 102.0},
            base | {"source": "accelsim_in_graph", "dram_bytes": 50.0},
            base | {"source": "zigzag"},
            base | {"source": "accelsim_layer", "sram_outputs_bytes": 500.0, "cycles": 90.0},
            base | {"source": "accelsim_in_graph"}]
    text = zz.summary(rows)
    assert "over 2 layers: DRAM bytes equal in 2," in text
    assert "output-buffer bytes in 1;" in text
    assert "energy ratio (accelsim / ZigZag) 1.000-1.020" in text
    assert "total cycles 0.900-1.000." in text
