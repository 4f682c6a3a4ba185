"""``accelsim run --int-model``: the simulated graph takes bits, 2:4 and densities from an
exported integer model, and charges the weight bytes the integer model actually stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from accelsim import zoo
from accelsim.cli import main
from accelsim.compress.apply import apply_recipe, calibrate
from accelsim.compress.export import IntModel, export_int_model, save_int_model
from accelsim.compress.recipe import load_recipe
from accelsim.graph.intmodel import graph_from_int_model
from accelsim.graph.trace_cache import trace_named_model
from accelsim.tasks.base import Batch

CONFIGS = Path(__file__).resolve().parents[2] / "hw_configs"
SPARSE_HW = str(CONFIGS / "int4_sparse.yaml")
MODEL = "bert_tiny"


def compressed_int_model(recipe_name: str, model: torch.nn.Module | None = None) -> IntModel:
    """Like ``accelsim compress`` minus training: the task model (backbone + head, so its paths
    carry the ``bert.`` prefix the zoo backbone lacks) compressed and calibrated, then exported."""
    torch.set_num_threads(1)
    recipe = load_recipe(recipe_name)
    net = model if model is not None else zoo.build_model(MODEL, seed=0, num_labels=2)
    apply_recipe(net, recipe)
    calibrate(net, [Batch(zoo.example_inputs(MODEL, batch=2, seed=0), torch.zeros(0))], recipe)
    return export_int_model(net)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, tuple[Path, IntModel]]:
    root = tmp_path_factory.mktemp("int_models")
    models = {}
    for name in ("w4a4_sp24", "w4a4"):
        int_model = compressed_int_model(name)
        models[name] = (save_int_model(int_model, root / name / "int_model.npz"), int_model)
    return models


def run_json(tmp_path: Path, *argv: str) -> dict:
    out = tmp_path / "result.json"
    assert main(["run", "--hw", SPARSE_HW, "--model", MODEL, *argv, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_graph_takes_bits_sparsity_and_measured_density(saved):
    _, int_model = saved["w4a4_sp24"]
    graph = graph_from_int_model(trace_named_model(MODEL, batch=1), int_model)
    linears = {node.name: node for node in graph.gemms if node.kind == "linear"}
    assert len(linears) == len(int_model.linears) == 12
    for layer in int_model.linears:
        node = linears[layer.name.removeprefix("bert.")]
        codes = layer.weight_codes
        assert (node.weight_bits, node.act_bits, node.sparsity) == (4, layer.act.bits, "2:4")
        assert node.weight_density == np.count_nonzero(codes) / codes.size <= 0.5
    # Eager attention traces QK^T then PV per layer: (act, weight) = (q, k) then (probs, v).
    matmuls = [(n.act_bits, n.weight_bits) for n in graph.gemms if n.kind == "matmul"]
    expected = [(op_a.bits, op_b.bits) for a in int_model.attentions
                for op_a, op_b in ((a.q, a.k), (a.probs, a.v))]
    assert matmuls == expected and len(expected) == 4


def test_graph_matches_the_recipe_compressed_trace(saved):
    # Same GEMM formats and the same requantize ops as tracing the model compressed in-process.
    from accelsim.graph.workload import workload_graph

    def summary(graph):
        gemms = {n.name: (n.weight_bits, n.act_bits, n.sparsity) for n in graph.gemms}
        requantize = {n.name: n.elements for n in graph.nodes
                      if getattr(n, "vector_op", None) == "requantize"}
        return gemms, requantize

    _, int_model = saved["w4a4_sp24"]
    ours = summary(graph_from_int_model(trace_named_model(MODEL, batch=1), int_model))
    assert ours == summary(workload_graph(MODEL, recipe="w4a4_sp24", batch=1))
    assert len(ours[1]) == 20  # per layer: 6 linear inputs + q, k, v, probs


@pytest.mark.parametrize(("recipe", "sparsity", "skipping"),
                         [("w4a4_sp24", "2:4", True), ("w4a4", "dense", False)])
def test_simulated_weight_bytes_equal_the_stored_packed_bytes(saved, tmp_path, recipe, sparsity,
                                                              skipping):
    path, int_model = saved[recipe]
    data = run_json(tmp_path, "--int-model", str(path.parent))
    assert data["recipe"] == recipe
    rows = data["int_model"]["layers"]
    assert len(rows) == len(int_model.linears)
    for row in rows:
        assert (row["sparsity"], row["weight_bits"], row["skipping"]) == (sparsity, 4, skipping)
        assert row["simulated_weight_bytes"] == row["stored_weight_bytes"] > 0
    # int4 2:4 stores 6 bits (4-bit value + 2-bit index) per kept half: 3/4 of the dense bytes.
    first = int_model.linears[0]
    row = next(row for row in rows if row["int_model_layer"] == first.name)
    assert row["stored_weight_bytes"] == first.k * first.n * (3 if sparsity == "2:4" else 4) // 8


def test_missing_int_model_is_one_line_exit_2(tmp_path, capsys):
    code = main(["run", "--hw", SPARSE_HW, "--model", MODEL, "--int-model", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "int_model.npz' does not exist" in err


def test_int_model_of_another_model_is_one_line_exit_2(saved, capsys):
    path, _ = saved["w4a4_sp24"]
    code = main(["run", "--hw", SPARSE_HW, "--model", "vit_tiny", "--int-model", str(path)])
    # Tracing vit_tiny on a cold cache logs progress lines first; the error itself is one line,
    # the last, and nothing else (no traceback) is printed.
    *progress, err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err.startswith("accelsim: error: ")
    assert all(line.startswith("accelsim: vit_tiny") for line in progress), progress
    assert "none of its 12 linears" in err and "'vit_tiny'" in err


def test_int_model_of_another_size_is_one_line_exit_2(tmp_path, capsys):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    wide = BertForSequenceClassification(BertConfig(
        vocab_size=128, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=128, max_position_embeddings=64, num_labels=2,
        attn_implementation="eager"))
    path = save_int_model(compressed_int_model("w4a4", wide), tmp_path / "wide.npz")
    code = main(["run", "--hw", SPARSE_HW, "--model", MODEL, "--int-model", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "'bert.encoder.layer.0.attention.self.query' is k=64 x n=64" in err


def test_recipe_and_int_model_together_is_one_line_exit_2(saved, capsys):
    path, _ = saved["w4a4"]
    code = main(["run", "--hw", SPARSE_HW, "--model", MODEL, "--recipe", "w4a4",
                 "--int-model", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "--recipe w4a4 and --int-model" in err
