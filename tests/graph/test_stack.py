"""accelsim.graph.stack: a layer stack traced at depths 1 and 2 and extended gives the graph a
full export gives, for every zoo encoder family, compressed or not."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from accelsim import zoo
from accelsim.graph import stack
from accelsim.graph import trace_cache as tc
from accelsim.graph.ir import GemmNode, Graph, VectorNode
from accelsim.graph.trace import export_module, graph_from_exported, module_precisions
from accelsim.graph.workload import workload_graph


def _full_and_stacked(name: str) -> tuple[Graph, Graph | None]:
    shape = zoo.resolve_input_shape(name)
    module = zoo.build_structure(name, image_size=shape.get("image_size"))
    inputs = {key: value.to("meta")
              for key, value in zoo.inputs_for_shape(zoo.get_spec(name), shape).items()}
    precisions = module_precisions(module)
    full = graph_from_exported(export_module(module, inputs, name=name), module, name=name,
                               input_shape=shape, precisions=precisions)
    stacked = stack.trace_stacked(module, inputs, name=name, input_shape=shape,
                                  precisions=precisions)
    return full, stacked


@pytest.mark.parametrize("name", ["vit_b16", "bert_base", "wav2vec2_base", "whisper_tiny_en",
                                  "dinov2_s"])
def test_a_stacked_trace_is_the_full_export_of_each_family(name):
    full, stacked = _full_and_stacked(name)
    assert stacked is not None  # every zoo encoder has a stack of identical layers
    assert stacked.to_json() == full.to_json()


def test_a_compressed_stack_keeps_each_layer_s_own_measured_density(tmp_path, monkeypatch):
    """whisper_tiny_en's 4 compressed layers: the graph equals the full export's, and the
    copied layers carry their own densities (read per layer, not copied from layer 1)."""
    graphs = {}
    for mode, tracer in (("full", lambda *args, **kwargs: None),
                         ("stacked", stack.trace_stacked)):
        monkeypatch.setenv("ACCELSIM_CACHE", str(tmp_path / mode))
        monkeypatch.setattr(tc, "trace_stacked", tracer)
        tc.clear_memory_cache()
        workload_graph.cache_clear()
        graphs[mode] = workload_graph("whisper_tiny_en", recipe="w4a4_sp24")
    workload_graph.cache_clear()
    assert graphs["stacked"].to_json() == graphs["full"].to_json()
    densities = {node.weight_density for node in graphs["stacked"].gemms
                 if node.name.endswith(".fc1")}
    assert len(densities) == 4  # one measured density per layer


def test_only_a_list_of_identical_layers_is_a_stack():
    same = nn.Module()
    same.blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(3))
    assert stack.layer_stack(same, {}) == ("blocks", 3)
    mixed = nn.Module()
    mixed.blocks = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 4)])
    assert stack.layer_stack(mixed, {}) is None
    short = nn.Module()
    short.blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(2))
    assert stack.layer_stack(short, {}) is None  # two cut exports would cost a full one


def test_a_stack_that_is_not_uniform_in_use_falls_back_to_a_full_export():
    """Identical layers used differently (the last one skips its activation) break the affine
    form: extend returns None, and the trace cache then exports the whole module."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for index, block in enumerate(self.blocks):
                x = block(x)
                x = torch.relu(x) if index % 2 == 0 else torch.tanh(x)
            return x

    net = Net()
    inputs = {"x": torch.zeros(2, 8, device="meta")}
    assert stack.trace_stacked(net.to("meta"), inputs, name="net", input_shape={},
                               precisions={}) is None


def test_names_move_on_by_their_step_torch_counters_included():
    assert stack._shifted("layers.0/add_4", "layers.1/add_7", 1) == "layers.2/add_10"
    assert stack._shifted("layers.0.attention/matmul", "layers.1.attention/matmul_2",
                          2) == "layers.3.attention/matmul_6"
    assert stack._shifted("layers.0.mlp.fc1", "layers.1.mlp.fc1", 5) == "layers.6.mlp.fc1"
    assert stack._shifted("a.0/sdpa.qk", "a.1/sdpa_1.qk", 1) == "a.2/sdpa_2.qk"
    assert stack._shifted("layers.0/add_4", "layers.1/mul_7", 1) is None  # not the same op


def test_extend_refuses_layers_that_differ_in_more_than_names():
    def graph(*nodes):
        return Graph(name="g", nodes=tuple(nodes))

    gemm = GemmNode(name="blocks.0", m=1, k=8, n=8, inputs=("",))
    act = VectorNode(name="blocks.0/relu", vector_op="relu", elements=8, inputs=("blocks.0",))
    one = graph(gemm, act)
    two = graph(gemm, act, dataclasses.replace(gemm, name="blocks.1", inputs=("blocks.0/relu",)),
                dataclasses.replace(act, name="blocks.1/relu_1", inputs=("blocks.1",)))
    three = stack.extend(one, two, "blocks", 3, {})
    assert [node.name for node in three.nodes][-2:] == ["blocks.2", "blocks.2/relu_2"]
    assert three.nodes[-2].inputs == ("blocks.1/relu_1",)
    wider = graph(gemm, act, dataclasses.replace(gemm, name="blocks.1", n=16,
                                                 inputs=("blocks.0/relu",)),
                  dataclasses.replace(act, name="blocks.1/relu_1", inputs=("blocks.1",)))
    assert stack.extend(one, wider, "blocks", 3, {}) is None
