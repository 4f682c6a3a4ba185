"""A graph priced from an integer model is the compressed trace: same nodes, same edges, same
cost (the requantize nodes it adds read their operand's producer and feed the GEMM)."""

import torch

from accelsim import zoo
from accelsim.compress.apply import apply_recipe, calibrate
from accelsim.compress.export import export_int_model
from accelsim.compress.recipe import load_recipe
from accelsim.graph.intmodel import graph_from_int_model
from accelsim.graph.trace_cache import trace_named_model
from accelsim.graph.workload import workload_graph
from accelsim.hw import load_hw
from accelsim.sim.simulate import simulate
from accelsim.tasks.base import Batch


def test_int_model_graph_costs_what_the_compressed_trace_costs(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELSIM_CACHE", str(tmp_path))
    recipe = load_recipe("w4a4_sp24")
    model = zoo.build_model("vit_tiny", seed=0)
    apply_recipe(model, recipe)
    calibrate(model, [Batch(zoo.example_inputs("vit_tiny", batch=2, seed=i), torch.zeros(2))
                      for i in range(2)], recipe)
    graph = graph_from_int_model(trace_named_model("vit_tiny"), export_int_model(model.eval()))
    requantizes = [n for n in graph.nodes if getattr(n, "vector_op", "") == "requantize"]
    assert requantizes and all(n.inputs for n in requantizes)
    hw = load_hw("hw_configs/int4_sparse.yaml")
    from_int, traced = simulate(graph, hw), simulate(workload_graph("vit_tiny",
                                                                    recipe="w4a4_sp24"), hw)
    # no requantized operand is mistaken for a model output written to DRAM
    assert all(layer.dram_bytes == 0 for layer in from_int.layers
               if layer.name.endswith("/requantize"))
    assert from_int.totals.dram_bytes == traced.totals.dram_bytes
    assert from_int.totals.cycles == traced.totals.cycles
