import json
from pathlib import Path

import pytest

from accelsim.errors import AccelsimError
from accelsim.graph.ir import GemmNode, Graph, VectorNode
from accelsim.graph.scalesim_io import read_topology_csv, write_topology_csv
from accelsim.hw import load_hw, with_overrides
from accelsim.sim import simulate


def write(tmp_path, text, name="topo.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_scalesim_rows_with_and_without_trailing_comma(tmp_path):
    path = write(tmp_path, "Layer, M, N, K,\nqkv, 197, 2304, 768,\nfc1,197,3072,768,2:4\n\n"
                           "fc2, 197, 768, 3072, 1:1,\n")
    graph = read_topology_csv(path)
    assert graph.name == "topo"
    qkv, fc1, fc2 = graph.nodes
    assert (qkv.m, qkv.k, qkv.n, qkv.sparsity) == (197, 768, 2304, "dense")
    assert (fc1.m, fc1.k, fc1.n, fc1.sparsity) == (197, 768, 3072, "2:4")
    assert fc2.sparsity == "dense" and fc2.k == 3072


def test_header_is_optional(tmp_path):
    graph = read_topology_csv(write(tmp_path, "a, 4, 8, 16,\n"))
    assert graph.nodes == (GemmNode("a", m=4, k=16, n=8),)


@pytest.mark.parametrize(("row", "fragment"), [
    ("a, 4, x, 16,", "topo.csv: row 2, column N: 'x' is not an integer >= 1"),
    ("a, 0, 4, 16,", "topo.csv: row 2, column M: '0' is not an integer >= 1"),
    ("a, 4, 8,", "topo.csv: row 2: expected columns name, M, N, K[, sparsity], got 3 fields"),
    ("a, 4, 8, 16, 4:8,", "topo.csv: row 2, column sparsity: '4:8' is not one of"),
    ("a, 4, 8, 6, 2:4,", "topo.csv: row 2: gemm 'a': 2:4 sparsity needs"),
])
def test_bad_row_names_file_row_and_column(tmp_path, row, fragment):
    with pytest.raises(AccelsimError) as info:
        read_topology_csv(write(tmp_path, f"Layer, M, N, K,\n{row}\n"))
    assert str(info.value).startswith(fragment)


def test_duplicate_layer_name_is_rejected(tmp_path):
    with pytest.raises(AccelsimError, match="row 3, column name: duplicate layer name 'a'"):
        read_topology_csv(write(tmp_path, "Layer, M, N, K,\na, 1, 1, 1,\na, 2, 2, 2,\n"))


def test_empty_file_is_rejected(tmp_path):
    with pytest.raises(AccelsimError, match="no layers"):
        read_topology_csv(write(tmp_path, "Layer, M, N, K,\n"))


def test_round_trip_keeps_gemms(tmp_path):
    graph = Graph("topo", (GemmNode("qkv", m=197, k=768, n=2304),
                           GemmNode("fc1", m=197, k=768, n=3072, sparsity="2:4",
                                    weight_density=0.5),
                           VectorNode("gelu", vector_op="gelu", elements=10)))
    path = tmp_path / "topo.csv"
    write_topology_csv(graph, path)
    text = path.read_text()
    assert text.splitlines()[0] == "Layer, M, N, K, Sparsity,"
    assert all(line.endswith(",") for line in text.splitlines())  # SCALE-Sim's parser needs it
    back = read_topology_csv(path)
    assert back.nodes == graph.gemms


def test_count_expands_into_rows(tmp_path):
    graph = Graph("attn", (GemmNode("qk", m=8, k=4, n=8, count=3, kind="matmul",
                                    weight_is_activation=True),))
    path = tmp_path / "attn.csv"
    write_topology_csv(graph, path)
    back = read_topology_csv(path)
    assert [node.name for node in back.nodes] == ["qk#0", "qk#1", "qk#2"]
    assert back.macs == graph.macs
    assert "Sparsity" not in path.read_text()


def test_comma_in_name_cannot_be_written(tmp_path):
    graph = Graph("g", (GemmNode("a,b", m=1, k=1, n=1),))
    with pytest.raises(AccelsimError, match="contains a comma"):
        write_topology_csv(graph, tmp_path / "g.csv")
    assert not list(tmp_path.iterdir())


CONV_GOLDEN = json.loads((Path(__file__).parent / "scalesim_conv_golden.json").read_text())
HW_CONFIGS = Path(__file__).resolve().parents[2] / "hw_configs"


def conv_topology(entry: dict) -> str:
    """The topology text SCALE-Sim ran (benchmarks/scalesim_compare.py:conv_topology)."""
    ratio = f"{entry['sparsity']}," if entry["sparsity"] != "dense" else ""
    return ("Layer name,IFMAP Height,IFMAP Width,Filter Height,Filter Width,Channels,"
            "Num Filter,Strides,\n"
            f"{entry['name']},{entry['ifmap_h']},{entry['ifmap_w']},{entry['filter_h']},"
            f"{entry['filter_w']},{entry['channels']},{entry['filters']},{entry['stride']},"
            f"{ratio}\n")


@pytest.mark.parametrize("entry", CONV_GOLDEN["entries"],
                         ids=lambda e: f"{e['name']}-{e['dataflow']}")
def test_conv_topology_compat_cycles_equal_scalesim(tmp_path, entry):
    """SCALE-Sim 3.0.0's cycles for its own conv topology files (tests/graph/
    scalesim_conv_golden.json, written by benchmarks/scalesim_compare.py --write-conv-golden),
    reproduced by reading the same file and simulating it in compat mode."""
    graph = read_topology_csv(write(tmp_path, conv_topology(entry)))
    assert len(graph.gemms) == entry["scalesim_layers"]
    config = "int4_sparse" if entry["sparsity"] == "2:4" else "int8_dense"
    hw = with_overrides(load_hw(HW_CONFIGS / f"{config}.yaml"), {
        "array.rows": entry["rows"], "array.cols": entry["cols"],
        "array.dataflow": entry["dataflow"], "ideal_memory": True,
        "array.pipelined_folds": False})
    result = simulate(graph, hw, scalesim_compat=True)
    assert sum(layer.compute_cycles for layer in result.layers) == entry["compute_cycles"]


def test_conv_rows_lower_to_gemms_as_scalesim_does(tmp_path):
    text = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
            "Num Filter, Strides,\n"
            "conv1, 224, 224, 7, 7, 3, 64, 2,\n"          # ceil((224 - 7 + 2) / 2) = 110
            "patch, 224, 224, 16, 16, 3, 768, 16, 2:4,\n"  # ViT-B/16 patch embedding
            "DPsep, 10, 10, 3, 3, 4, 1, 1,\n")             # depth-wise: 4 one-channel layers
    graph = read_topology_csv(write(tmp_path, text))
    conv1, patch, *depthwise = graph.nodes
    assert (conv1.m, conv1.k, conv1.n, conv1.kind) == (110 * 110, 7 * 7 * 3, 64, "conv")
    assert (patch.m, patch.k, patch.n, patch.sparsity) == (196, 768, 768, "2:4")
    assert [(n.name, n.m, n.k, n.n) for n in depthwise] == [
        (f"DPsepChannel_{i}", 64, 9, 1) for i in range(4)]


def test_the_format_is_told_by_the_header_or_the_field_count(tmp_path):
    headerless_conv = read_topology_csv(write(tmp_path, "c, 8, 8, 3, 3, 2, 4, 1,\n"))
    assert (headerless_conv.nodes[0].m, headerless_conv.nodes[0].k) == (36, 18)
    gemm = read_topology_csv(write(tmp_path, "Layer, M, N, K,\nc, 8, 8, 3,\n", "g.csv"))
    assert (gemm.nodes[0].m, gemm.nodes[0].k, gemm.nodes[0].n) == (8, 3, 8)


@pytest.mark.parametrize(("row", "fragment"), [
    ("c, 8, 8, 3, 3, 2, 4,", "topo.csv: row 2: expected columns Layer name, IFMAP Height, "
                             "IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, "
                             "Strides[, sparsity] (SCALE-Sim's conv format), got 7 fields"),
    ("c, 8, 8, 9, 3, 2, 4, 1,", "topo.csv: row 2, column Filter Height: 9 is larger than "
                                "IFMAP Height 8"),
    ("c, 8, 8, 3, 3, 2, 4, 0,", "topo.csv: row 2, column Strides: '0' is not an integer >= 1"),
    ("c, 8, 8, 3, 3, 2, 4, 1, 4:8,", "topo.csv: row 2, column sparsity: '4:8' is not one of"),
    ("c, 8, 8, 3, 3, 3, 4, 1, 2:4,", "topo.csv: row 2: gemm 'c': 2:4 sparsity needs"),
])
def test_bad_conv_row_names_file_row_and_column(tmp_path, row, fragment):
    header = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
              "Num Filter, Strides,")
    with pytest.raises(AccelsimError) as info:
        read_topology_csv(write(tmp_path, f"{header}\n{row}\n"))
    assert str(info.value).startswith(fragment)
