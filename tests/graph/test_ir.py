import json

import pytest

from accelsim.errors import AccelsimError
from accelsim.graph.ir import GemmNode, Graph, VectorNode


def test_graph_roundtrips_through_json_dict():
    graph = Graph(
        name="toy",
        nodes=(
            GemmNode("fc1", m=8, k=16, n=4, weight_bits=4, act_bits=4, sparsity="2:4"),
            VectorNode("ln", vector_op="layernorm", elements=32, row_length=16),
            GemmNode("qk", m=8, k=4, n=8, count=2, kind="matmul", weight_is_activation=True),
        ),
        input_shape={"batch": 1, "seq_len": 8},
    )
    assert Graph.from_dict(graph.to_dict()) == graph
    assert graph.macs == 8 * 16 * 4 + 8 * 4 * 8 * 2


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"m": 0}, "m=0"),
        ({"sparsity": "4:8"}, "sparsity='4:8'"),
        ({"k": 6, "sparsity": "2:4"}, "k divisible by 4"),
        ({"weight_bits": 0}, "weight_bits=0"),
    ],
)
def test_bad_gemm_fields_name_the_field(kwargs, fragment):
    base = {"name": "g", "m": 4, "k": 8, "n": 4}
    with pytest.raises(AccelsimError, match=fragment.replace("(", r"\(")):
        GemmNode(**{**base, **kwargs})


def test_inputs_must_name_earlier_nodes():
    first = GemmNode("a", m=2, k=2, n=2, inputs=("",))
    Graph("g", (first, VectorNode("v", vector_op="gelu", elements=4, inputs=("a",))))
    with pytest.raises(AccelsimError, match=r"node 'v': input 'b' is not an earlier node"):
        Graph("g", (first, VectorNode("v", vector_op="gelu", elements=4, inputs=("b",))))


def test_inputs_survive_json():
    graph = Graph("g", (GemmNode("a", m=2, k=2, n=2, inputs=("",)),
                        VectorNode("v", vector_op="gelu", elements=4, inputs=("a",)),
                        VectorNode("w", vector_op="gelu", elements=4)))
    again = Graph.from_dict(json.loads(graph.to_json()))
    assert again == graph and again.nodes[2].inputs is None
