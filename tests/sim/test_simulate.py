"""simulate(): hand-worked cases per dataflow, memory and stall arithmetic, sparsity, errors."""

from __future__ import annotations

import json

import pytest
from sim_hw import CONFIGS, tiny_hw

from accelsim.errors import AccelsimError
from accelsim.graph.ir import GemmNode, Graph, VectorNode
from accelsim.hw import load_hw, with_overrides
from accelsim.sim import simulate
from accelsim.sim.mapping import map_gemm


def one(node, hw, **kwargs):
    result = simulate(Graph("g", (node,)), hw, **kwargs)
    assert result.feasible, result.reason
    return result.layers[0]


# Hand-worked compute cycles on a 4x4 array, one fold, SCALE-Sim-compatible timing
# (docs/dataflows.md): folds x (T + rows + cols - 2) - 1 for OS with T = K, and
# folds x (T + 2 rows + cols - 2) - 1 for WS (T = M) and IS (T = N).
#   OS m=4, k=8, n=4: 8 + 4 + 4 - 2 - 1 = 13;  WS m=8, k=4, n=4: 8 + 8 + 4 - 2 - 1 = 17;
#   IS m=4, k=4, n=8: 17.
@pytest.mark.parametrize(("dataflow", "shape", "cycles"), [
    ("os", (4, 8, 4), 13), ("ws", (8, 4, 4), 17), ("is", (4, 4, 8), 17)])
def test_single_fold_compute_cycles_by_hand(dataflow, shape, cycles):
    m, k, n = shape
    layer = one(GemmNode("g", m=m, k=k, n=n),
                tiny_hw(array__dataflow=dataflow, array__pipelined_folds=False),
                scalesim_compat=True)
    assert (layer.compute_cycles, layer.stall_cycles, layer.cycles) == (cycles, 0, cycles)
    assert layer.utilization == pytest.approx(m * k * n / (16 * cycles))


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_instances_and_passes_run_as_one_fold_stream(dataflow):
    # 3 instances x 2 passes (8-bit weights on 4-bit MACs): six same-shape GEMMs back to back,
    # pipelined like folds by default; SCALE-Sim runs each as a layer of its own.
    hw = tiny_hw(array__dataflow=dataflow, precision__weight_bits=4, precision__act_bits=4)
    node = GemmNode("g", m=9, k=13, n=6, count=3, weight_bits=8)
    streamed = map_gemm(9, 13, 6, 4, 4, dataflow, count=6).compute_cycles
    per_instance = map_gemm(9, 13, 6, 4, 4, dataflow).compute_cycles
    assert one(node, hw).compute_cycles == streamed < 6 * per_instance
    compat = map_gemm(9, 13, 6, 4, 4, dataflow, scalesim_compat=True).compute_cycles
    unpipelined = with_overrides(hw, {"array.pipelined_folds": False})
    assert one(node, unpipelined, scalesim_compat=True).compute_cycles == 6 * compat
    # The array without shadow registers: the same serialized folds, without SCALE-Sim's - 1.
    assert one(node, unpipelined).compute_cycles == 6 * (compat + 1)


# SCALE-Sim 3.0.0 CALC-mode "Total Cycles" on a 4x4 array (run with SCALE-Sim 3.0.0 itself).
@pytest.mark.parametrize(("dataflow", "cycles"), [("os", 55), ("ws", 71), ("is", 71)])
def test_scalesim_compat_matches_published_tiny_case(dataflow, cycles):
    layer = one(GemmNode("g", m=8, k=8, n=8),
                tiny_hw(array__dataflow=dataflow, array__pipelined_folds=False),
                scalesim_compat=True)
    assert layer.compute_cycles == cycles


def test_scalesim_compat_refuses_a_pipelined_array():
    with pytest.raises(AccelsimError, match=r"array.pipelined_folds=true, but SCALE-Sim 3.0.0 "
                                            r"models an array whose folds run back to back"):
        one(GemmNode("g", m=8, k=8, n=8), tiny_hw(), scalesim_compat=True)


@pytest.mark.parametrize(("dataflow", "shadow_bits"), [("os", 32), ("ws", 8), ("is", 8)])
def test_pipelined_folds_cost_a_shadow_register_per_pe(dataflow, shadow_bits):
    # int8 tiny point, 4x4: OS keeps a second 32-bit accumulator, WS a second weight, IS a
    # second activation; 16 PEs x bits x 0.447 um^2 per bit of area, one write per PE per fold.
    node = GemmNode("g", m=8, k=8, n=8)
    hw = tiny_hw(array__dataflow=dataflow, energy__register_pj_per_byte=1.0)
    plain = with_overrides(hw, {"array.pipelined_folds": False})
    fast, slow = simulate(Graph("g", (node,)), hw), simulate(Graph("g", (node,)), plain)
    assert fast.totals.cycles < slow.totals.cycles
    assert fast.totals.area_mm2 - slow.totals.area_mm2 == pytest.approx(
        16 * shadow_bits * hw.area.register_um2_per_bit / 1e6)
    folds = 4  # 8x8 outputs (OS) or an 8x8 stationary operand (WS, IS) in 4x4 folds
    assert (fast.layers[0].actions.register_bytes - slow.layers[0].actions.register_bytes
            == folds * 16 * shadow_bits / 8)


def test_energy_and_sram_counts_by_hand_os():
    # m=8, k=8, n=4 on 4x4 OS, int8, ideal memory. A = 64 B, B = 32 B, C = 32 B (int8 out).
    layer = one(GemmNode("g", m=8, k=8, n=4), tiny_hw())
    a = layer.actions
    assert layer.dram_bytes == 64 + 32 + 32
    assert a.sram_read_bytes_inputs == 64 * 1  # A re-read per column fold: ceil(4/4) = 1
    assert a.sram_read_bytes_weights == 32 * 2  # B re-read per row fold: ceil(8/4) = 2
    assert a.sram_write_bytes_outputs == 8 * 4 * 4  # 32-bit accumulators, one reduction tile
    assert a.sram_read_bytes_outputs == 8 * 4 * 4  # read out once towards DRAM
    # MAC = mult 1.0 (8x8 at ref 8) + add 0.5 (32 bits at ref 32); 256 MACs.
    assert layer.energy.mac_pj == pytest.approx(256 * 1.5)
    assert layer.energy.dram_pj == pytest.approx(128 * 100.0)
    sram_bytes = 64 + 64 + 32 + 64 + 128 + 128  # reads + fills + psum writes + read-out
    assert layer.energy.sram_pj == pytest.approx(sram_bytes * 1.0)
    assert layer.energy.leakage_pj == 0.0


@pytest.mark.parametrize(("dataflow", "inputs", "weights", "psum_writes"), [
    ("ws", 64, 32, 8 * 4 * 4 * 2), ("is", 64, 64, 8 * 4 * 4 * 2)])
def test_sram_reads_by_hand_stationary_dataflows(dataflow, inputs, weights, psum_writes):
    # m=8, k=8, n=4: WS holds B (read once), streams A per column fold; IS holds A, re-reads B
    # per column fold ceil(M/cols) = 2; both write partial sums once per reduction fold (2).
    layer = one(GemmNode("g", m=8, k=8, n=4), tiny_hw(array__dataflow=dataflow))
    assert layer.actions.sram_read_bytes_inputs == inputs
    assert layer.actions.sram_read_bytes_weights == weights
    assert layer.actions.sram_write_bytes_outputs == psum_writes


def test_stall_cycles_by_hand_double_buffered():
    # m=4, k=8, n=4 OS: DRAM 32 + 32 + 16 = 80 B at 1 B/cycle, all in one tile. The array starts
    # when the first tile's operands are in (32 A + 32 B bytes = 64 cycles) and the last tile's
    # 16 output bytes drain after it ends: nothing is left to overlap with compute.
    layer = one(GemmNode("g", m=4, k=8, n=4), tiny_hw(ideal_memory=False))
    assert layer.stall_cycles == 64 + 16


def test_instances_share_one_prologue_and_epilogue():
    # Three instances of m=4, k=8, n=4 OS: 3 x 80 B of DRAM traffic at 1 B/cycle streams under
    # one fold stream; the first tile's operands (64 cycles) and the last tile's outputs
    # (16 cycles) are exposed once per layer, the other 160 B stream under the compute.
    layer = one(GemmNode("g", m=4, k=8, n=4, count=3), tiny_hw(ideal_memory=False))
    compute = map_gemm(4, 8, 4, 4, 4, "os", count=3).compute_cycles
    assert layer.compute_cycles == compute < 160
    assert layer.dram_bytes == 3 * 80
    assert layer.cycles == 64 + 160 + 16


def test_stall_cycles_by_hand_single_buffered():
    hw = tiny_hw(ideal_memory=False, sram__weights__double_buffered=False,
                 sram__inputs__double_buffered=False, sram__outputs__double_buffered=False)
    layer = one(GemmNode("g", m=4, k=8, n=4), hw)
    assert layer.stall_cycles == 80  # every transfer serialized with compute


def test_refetch_when_weights_do_not_fit():
    # B = 64 x 64 int8 = 4 KiB, weight buffer 1 KiB (512 B per tile): tiles of 64 x 8 columns,
    # so A (64 x 64 = 4 KiB, larger than its 512 B half) is re-streamed once per weight tile.
    layer = one(GemmNode("g", m=64, k=64, n=64), tiny_hw(array__dataflow="ws"))
    a_bytes, b_bytes, c_bytes = 4096, 4096, 4096
    assert layer.dram_bytes > a_bytes + b_bytes + c_bytes
    roomy = one(GemmNode("g", m=64, k=64, n=64),
                tiny_hw(array__dataflow="ws", sram__weights__size_kib=16,
                        sram__inputs__size_kib=16, sram__outputs__size_kib=64))
    assert roomy.dram_bytes == a_bytes + b_bytes + c_bytes


def test_four_bit_operands_pack_two_per_byte():
    hw = tiny_hw(precision__weight_bits=4, precision__act_bits=4)
    layer = one(GemmNode("g", m=8, k=8, n=4), hw)
    assert layer.dram_bytes == (64 + 32 + 32) // 2


def test_two_four_weights_carry_their_index_bytes():
    hw = tiny_hw(precision__weight_bits=4, precision__act_bits=4, sparsity__support="2:4")
    dense = one(GemmNode("g", m=8, k=16, n=8), hw)
    sparse = one(GemmNode("g", m=8, k=16, n=8, sparsity="2:4", weight_density=0.5), hw)
    # B: 16 x 8 at 4 bits = 64 B dense; 2:4 keeps 8 x 8 values (32 B) + 2-bit indices (16 B).
    assert dense.dram_bytes - sparse.dram_bytes == 64 - 48
    assert sparse.skipping and not dense.skipping
    assert sparse.actions.mac_skipped == sparse.macs / 2
    assert sparse.actions.mux_select == sparse.macs / 2


def test_dense_hardware_runs_two_four_dense_but_gates_zeros():
    hw = tiny_hw(sparsity__zero_gating=True)
    dense = one(GemmNode("g", m=8, k=16, n=8), hw)
    sparse = one(GemmNode("g", m=8, k=16, n=8, sparsity="2:4", weight_density=0.5), hw)
    assert sparse.cycles == dense.cycles and sparse.dram_bytes == dense.dram_bytes
    assert sparse.actions.mac_gated == sparse.macs / 2
    assert sparse.energy.mac_pj < dense.energy.mac_pj


def test_attention_gemm_never_skips():
    hw = tiny_hw(sparsity__support="2:4")
    node = GemmNode("qk", m=8, k=8, n=8, count=3, kind="matmul", weight_is_activation=True)
    layer = one(node, hw)
    assert not layer.skipping
    assert layer.compute_cycles == one(GemmNode("x", m=8, k=8, n=8, count=3), hw).compute_cycles


def test_wider_gemm_than_datapath_takes_passes():
    # Four passes of the same GEMM, streamed like four instances (fill and drain once).
    hw = tiny_hw(precision__weight_bits=4, precision__act_bits=4)
    narrow = one(GemmNode("g", m=8, k=8, n=8), hw)
    wide = one(GemmNode("g", m=8, k=8, n=8, weight_bits=8, act_bits=8), hw)
    assert wide.compute_cycles == one(GemmNode("g", m=8, k=8, n=8, count=4), hw).compute_cycles
    assert wide.compute_cycles < 4 * narrow.compute_cycles
    assert (wide.weight_bits, narrow.weight_bits) == (8, 4)  # None resolved to the default


def test_four_bit_mac_is_not_four_times_cheaper():
    hw4 = load_hw(CONFIGS / "int4_dense.yaml")
    hw8 = load_hw(CONFIGS / "int8_dense.yaml")
    node = GemmNode("g", m=64, k=64, n=64)
    ratio = one(node, hw8).actions.mac_random / one(node, hw4).actions.mac_random
    assert ratio == 1
    energy_ratio = one(node, hw8).energy.mac_pj / one(node, hw4).energy.mac_pj
    assert 1.5 < energy_ratio < 4


def test_vector_unit_cycles_and_energy():
    hw = tiny_hw()
    node = VectorNode("sm", vector_op="softmax", elements=10, count=2, row_length=5)
    layer = one(node, hw)
    # 20 elements x 4 cycles (softmax) / 4 lanes = 20 cycles; 2 pJ per lane-cycle. Alone in
    # its graph it reads the model input and writes the model output (20 x 16 bits each).
    assert layer.compute_cycles == 20 and layer.macs == 0
    assert (layer.dram.inputs, layer.dram.outputs, layer.dram_bytes) == (40, 40, 80)
    assert layer.energy.vector_pj == pytest.approx(80 * 2.0)
    assert (layer.op, layer.m, layer.k, layer.n, layer.count) == ("vector", 10, 5, 1, 2)


def test_infeasible_tile_is_a_result_not_an_error():
    hw = tiny_hw(sram__outputs__size_kib=0.01)  # 10 B: half holds 5 B < one 4x4 int32 fold
    result = simulate(Graph("g", (GemmNode("g", m=8, k=8, n=8),)), hw)
    assert not result.feasible
    assert "output tile 4x4 (64 B) exceeds" in result.reason and "'g'" in result.reason
    assert result.layers == () and result.totals.area_mm2 > 0


def test_identical_shapes_share_one_cost_and_totals_add_up():
    hw = load_hw(CONFIGS / "int4_sparse.yaml")
    nodes = (GemmNode("a", m=64, k=128, n=64, inputs=("",)),
             GemmNode("b", m=64, k=128, n=64, inputs=("",)),
             VectorNode("v", vector_op="gelu", elements=4096, inputs=("",)))
    result = simulate(Graph("g", nodes), hw)
    a, b, v = result.layers
    assert a.energy == b.energy and a.cycles == b.cycles and a.name != b.name
    assert result.totals.cycles == a.cycles + b.cycles + v.cycles
    assert result.totals.macs == 2 * 64 * 128 * 64
    assert result.totals.energy_uj == pytest.approx(
        sum(layer.energy.total_pj for layer in result.layers) / 1e6)
    assert result.totals.latency_ms == pytest.approx(result.totals.cycles / 1e9 * 1e3)


def test_to_dict_has_the_documented_field_names():
    hw = load_hw(CONFIGS / "int4_sparse.yaml")
    data = simulate(Graph("g", (GemmNode("a", m=8, k=8, n=8),)), hw).to_dict()
    json.dumps(data)
    assert {"model", "hw", "totals", "layers"} <= set(data)
    assert set(data["totals"]) == {"cycles", "latency_ms", "energy_uj", "area_mm2", "macs",
                                   "utilization", "dram_bytes", "tops", "tops_per_w",
                                   "host_macs"}
    layer = data["layers"][0]
    assert set(layer) == {"name", "op", "m", "k", "n", "count", "weight_bits", "act_bits",
                          "sparsity", "on_host", "compute_cycles", "stall_cycles",
                          "sram_stall_cycles", "cycles", "macs", "utilization", "dram_bytes",
                          "dram_bytes_by_tensor", "energy_uj"}
    assert set(layer["dram_bytes_by_tensor"]) == {"weights", "inputs", "outputs", "spills"}
    assert set(layer["energy_uj"]) == {"mac", "sram", "dram", "vector", "leakage", "total"}


def test_tpu_v1_large_gemm_approaches_peak():
    hw = with_overrides(load_hw(CONFIGS / "tpu_v1.yaml"), {"ideal_memory": True})
    result = simulate(Graph("g", (GemmNode("g", m=4096, k=4096, n=4096),)), hw)
    assert 0.9 * hw.peak_tops < result.totals.tops <= hw.peak_tops


def test_sram_banks_bound_the_bytes_per_cycle():
    # 4x4 OS, m=k=n=64 int8: 16 x 16 folds of 64 steps = 16,390 compute cycles; the array reads
    # A once per column fold, 64 x 64 x 16 = 65,536 B. One 8-bit bank serves 1 B per cycle, so
    # the input buffer needs 65,536 cycles; two banks 32,768; 8 banks of 64-byte words keep up.
    node = GemmNode("g", m=64, k=64, n=64)
    fast_dram = {"ideal_memory": False, "dram.bandwidth_gbps": 1e6}
    layers = {}
    for banks, word_bits in ((1, 8), (2, 8), (8, 512)):
        hw = with_overrides(tiny_hw(), {**fast_dram, "sram.inputs.banks": banks,
                                        "sram.inputs.word_bits": word_bits,
                                        "sram.weights.word_bits": 512,
                                        "sram.outputs.word_bits": 512})
        layers[banks] = one(node, hw)
    assert layers[8].compute_cycles == 16_390 and layers[8].sram_stall_cycles == 0
    assert layers[1].compute_cycles + layers[1].sram_stall_cycles == 65_536
    assert layers[2].compute_cycles + layers[2].sram_stall_cycles == 32_768
    assert layers[1].to_dict()["sram_stall_cycles"] == layers[1].sram_stall_cycles
    # Ideal memory never stalls, on DRAM or on the banks.
    ideal = with_overrides(tiny_hw(), {"sram.inputs.banks": 1})
    assert one(node, ideal).sram_stall_cycles == 0


def test_an_input_that_fits_its_buffer_is_read_once():
    # A = 64 x 8 int8 = 512 B fits the input buffer's 512 B half; the 1 KiB output buffer holds
    # 128 32-bit accumulators per tile, so the output tiles are small and many. A stays put.
    layer = one(GemmNode("g", m=64, k=8, n=64), tiny_hw(array__dataflow="os"))
    assert layer.dram.inputs == 64 * 8
    assert layer.dram.weights == 8 * 64


def test_vector_energy_area_and_traffic_follow_the_vector_format():
    base = load_hw(CONFIGS / "int4_sparse.yaml")
    node = VectorNode("ln", vector_op="layernorm", elements=4096, row_length=64)
    results = {fmt: simulate(Graph("g", (node,)), with_overrides(base, {"vector_unit.format": fmt}))
               for fmt in ("fp32", "fp16", "bf16", "int")}
    lane_cycles = 4096 * base.vector_unit.cycles_per_element.layernorm
    for fmt, result in results.items():
        layer = result.layers[0]
        assert layer.energy.vector_pj == pytest.approx(
            lane_cycles * base.energy.vector_pj_per_lane_cycle.of(fmt))
        assert result.totals.area_mm2 - results["fp16"].totals.area_mm2 == pytest.approx(
            base.vector_unit.lanes * (base.area.vector_lane_um2.of(fmt)
                                      - base.area.vector_lane_um2.fp16) / 1e6)
    # 32-bit elements move twice the bytes of 16-bit ones (SRAM, and DRAM for this lone op's
    # model input and output); the lanes' compute cycles do not change.
    fp32, fp16 = results["fp32"].layers[0], results["fp16"].layers[0]
    assert fp32.compute_cycles == fp16.compute_cycles
    assert fp32.dram_bytes == 2 * fp16.dram_bytes
    assert fp32.energy.sram_pj > fp16.energy.sram_pj == results["bf16"].layers[0].energy.sram_pj
