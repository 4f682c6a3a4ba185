"""GEMMs the host runs (``GemmNode.on_host``: the integer model's float layers) cost the chip
nothing; their output reaches the chip as a model input, and their MACs are reported apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from accelsim.errors import AccelsimError
from accelsim.graph.ir import GemmNode, Graph, VectorNode
from accelsim.graph.workload import workload_graph
from accelsim.hw import load_hw, with_overrides
from accelsim.report import tables
from accelsim.sim import simulate

INT4_SPARSE = Path(__file__).resolve().parents[2] / "hw_configs" / "int4_sparse.yaml"
PATCH = "embeddings.patch_embeddings.projection"


@pytest.mark.parametrize("fmt", ["fp16", "int"])
def test_the_patch_conv_of_a_compressed_vit_runs_on_the_host(fmt):
    hw = with_overrides(load_hw(INT4_SPARSE), {"vector_unit.format": fmt})
    compressed = workload_graph("vit_tiny", recipe="w4a4_sp24")
    analytic = workload_graph("vit_tiny", recipe=None)
    conv = next(g for g in compressed.gemms if g.name == PATCH)
    assert conv.on_host and conv.kind == "conv"
    assert not any(g.on_host for g in analytic.gemms)  # no int model, no plan: all on chip

    result, plain = simulate(compressed, hw), simulate(analytic, hw)
    row = next(layer for layer in result.layers if layer.name == PATCH)
    assert row.on_host and row.macs == conv.macs
    assert (row.cycles, row.energy.total_pj, row.dram_bytes) == (0, 0.0, 0)
    assert result.totals.host_macs == conv.macs
    # The same GEMMs in both graphs: the chip's MACs drop by exactly the conv's.
    assert plain.totals.host_macs == 0
    assert plain.totals.macs - result.totals.macs == conv.macs
    on_chip = next(layer for layer in plain.layers if layer.name == PATCH)
    assert not on_chip.on_host and on_chip.cycles > 0 and on_chip.dram.weights > 0
    # Every node keeps its place in the results; the host GEMM is named in the totals.
    assert [layer.name for layer in result.layers][0] == PATCH
    assert "1 GEMM, 0.000 GMACs in float32 (not priced on the chip)" in tables.format_totals(
        result)
    assert tables.layer_rows(result)[0]["on_host"] is True


def test_a_host_gemm_output_is_read_as_a_model_input():
    hw = load_hw(INT4_SPARSE)
    nodes = (GemmNode("front", 16, 64, 64, inputs=("",), on_host=True),
             VectorNode("norm", vector_op="layernorm", elements=1024, row_length=64,
                        inputs=("front",)))
    hosted = simulate(Graph("g", nodes), hw)
    from_input = simulate(Graph("g", (VectorNode("norm", vector_op="layernorm", elements=1024,
                                                 row_length=64, inputs=("",)),)), hw)
    assert [layer.name for layer in hosted.layers] == ["front", "norm"]
    assert hosted.layers[1] == from_input.layers[0]
    assert hosted.totals.cycles == from_input.totals.cycles
    assert hosted.totals.energy_uj == from_input.totals.energy_uj


def test_on_host_must_be_a_bool():
    with pytest.raises(AccelsimError, match=r"gemm 'g': on_host='yes' must be true or false"):
        GemmNode("g", 4, 4, 4, on_host="yes")  # type: ignore[arg-type]
    with pytest.raises(AccelsimError, match="on_host=1"):
        Graph.from_dict({"name": "g", "input_shape": {}, "nodes": [
            {"op": "gemm", "name": "g", "m": 4, "k": 4, "n": 4, "on_host": 1}]})
