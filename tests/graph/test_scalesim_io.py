import pytest

from accelsim.errors import AccelsimError
from accelsim.graph.ir import GemmNode, Graph, VectorNode
from accelsim.graph.scalesim_io import read_topology_csv, write_topology_csv


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
