"""The graph the chip executes: host GEMMs removed in every format, and on an int vector unit the
attention scaling and mask folded into the softmax and element-wise ops on host tensors left to
the host (accelsim.graph.folds)."""

from __future__ import annotations

from pathlib import Path

from accelsim.graph.folds import chip_graph, integer_datapath_graph
from accelsim.graph.ir import GemmNode, Graph, VectorNode
from accelsim.hw import load_hw, with_overrides
from accelsim.sim import simulate

INT4_SPARSE = Path(__file__).resolve().parents[2] / "hw_configs" / "int4_sparse.yaml"


def _attention_block() -> Graph:
    """An embedding sum, a mask built from an input, one attention head and a residual add."""
    return Graph("block", (
        VectorNode("embed_add", vector_op="add", elements=64, inputs=("", "")),
        VectorNode("mask", vector_op="other", elements=16, inputs=("",)),
        VectorNode("ln", vector_op="layernorm", elements=64, row_length=16, inputs=("embed_add",)),
        GemmNode("q", 4, 16, 16, inputs=("ln",)),
        GemmNode("k", 4, 16, 16, inputs=("ln",)),
        GemmNode("scores", 4, 16, 4, kind="matmul", weight_is_activation=True,
                 inputs=("q", "k")),
        VectorNode("scale", vector_op="mul", elements=16, inputs=("scores",)),
        VectorNode("masked", vector_op="add", elements=16, inputs=("scale", "mask")),
        VectorNode("softmax", vector_op="softmax", elements=16, row_length=4, inputs=("masked",)),
        GemmNode("pv", 4, 4, 16, kind="matmul", weight_is_activation=True,
                 inputs=("softmax", "q")),
        VectorNode("residual", vector_op="add", elements=64, inputs=("pv", "ln")),
    ))


def test_scores_fold_into_the_softmax_and_host_ops_leave_the_chip():
    folded = integer_datapath_graph(_attention_block())
    assert [n.name for n in folded.nodes] == ["ln", "q", "k", "scores", "softmax", "pv",
                                              "residual"]
    inputs = {n.name: n.inputs for n in folded.nodes}
    assert inputs["ln"] == ("",)  # the host's embedding sum arrives as an input
    assert inputs["softmax"] == ("scores",)
    assert inputs["residual"] == ("pv", "ln")


def _front_end(on_host: bool) -> Graph:
    return Graph("front", (
        GemmNode("patch", 16, 48, 32, kind="conv", inputs=("",), on_host=on_host),
        VectorNode("pos_add", vector_op="add", elements=512, inputs=("patch", "")),
        VectorNode("gelu", vector_op="gelu", elements=512, inputs=("pos_add",)),
        VectorNode("after", vector_op="add", elements=512, inputs=("gelu", "")),
        GemmNode("fc", 16, 32, 32, inputs=("after",)),
    ))


def test_a_host_conv_output_stays_on_the_host_until_a_chip_op_reads_it():
    folded = integer_datapath_graph(_front_end(on_host=True))
    assert [n.name for n in folded.nodes] == ["gelu", "after", "fc"]
    assert folded.nodes[0].inputs == ("",)


def test_a_conv_on_the_chip_feeds_the_chip():
    # An analytic graph's conv runs on the array: its output is a chip tensor.
    assert integer_datapath_graph(_front_end(on_host=False)).nodes == _front_end(False).nodes


def test_float_formats_drop_only_the_host_gemms():
    on_chip = chip_graph(_front_end(on_host=True), "fp16")
    assert [n.name for n in on_chip.nodes] == ["pos_add", "gelu", "after", "fc"]
    assert on_chip.nodes[0].inputs == ("", "")  # the host's conv output arrives as an input
    graph = _front_end(on_host=False)
    assert chip_graph(graph, "fp16") is graph


def test_a_graph_with_nothing_to_fold_is_itself():
    graph = Graph("plain", (GemmNode("fc", 4, 8, 8, inputs=("",)),
                            VectorNode("act", vector_op="gelu", elements=32, inputs=("fc",))))
    assert integer_datapath_graph(graph) is graph


def test_the_int_vector_unit_prices_only_what_it_executes():
    hw = load_hw(INT4_SPARSE)
    graph = _attention_block()
    on_fp16 = simulate(graph, hw)
    on_int = simulate(graph, with_overrides(hw, {"vector_unit.format": "int"}))
    assert [layer.name for layer in on_fp16.layers] == [n.name for n in graph.nodes]
    assert [layer.name for layer in on_int.layers] == [
        n.name for n in chip_graph(graph, "int").nodes]
