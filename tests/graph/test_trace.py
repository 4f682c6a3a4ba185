"""Tracing: GEMM shapes and MACs against hooks and analytic counts, precision, cache, errors."""

import json

import pytest
import torch
from torch import nn

from accelsim import zoo
from accelsim.compress.precision import ATTENTION_ATTR, LINEAR_ATTR, GemmPrecision
from accelsim.errors import AccelsimError
from accelsim.graph import trace, trace_cache
from accelsim.graph.ir import GemmNode, Graph, VectorNode
from accelsim.graph.verify import verify_graph

TINY = ("bert_tiny", "vit_tiny", "dinov2_tiny", "wav2vec2_tiny", "whisper_tiny_test")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ACCELSIM_CACHE", str(tmp_path_factory.getbasetemp() / "accelsim-cache"))


@pytest.mark.parametrize("name", TINY)
def test_traced_macs_match_the_analytic_count(name):
    graph = trace_cache.trace_named_model(name, batch=2)  # traced from the meta-device structure
    verify_graph(graph)
    real = zoo.build_model(name)
    assert trace.trace_module(real, zoo.example_inputs(name, batch=2)).nodes == graph.nodes
    analytic = zoo.analytic_macs(name, graph.input_shape)
    assert abs(graph.macs / analytic - 1) <= 0.005, (graph.macs, analytic)
    # Every encoder layer contributes exactly two attention matmuls, repeated heads x batch.
    spec = zoo.get_spec(name).config_dict
    layers = spec.get("num_hidden_layers", spec.get("encoder_layers"))
    heads = spec.get("num_attention_heads", spec.get("encoder_attention_heads"))
    matmuls = [g for g in graph.gemms if g.kind == "matmul"]
    assert len(matmuls) == 2 * layers
    assert {g.count for g in matmuls} == {2 * heads}


@pytest.mark.parametrize(("name", "image_size"), [("vit_tiny", 64), ("dinov2_tiny", 42)])
def test_non_native_image_size_traces_its_token_count(name, image_size):
    graph = trace_cache.trace_named_model(name, batch=2, image_size=image_size)
    assert graph.input_shape == {"batch": 2, "image_size": image_size}
    assert graph.macs == zoo.analytic_macs(name, graph.input_shape)
    patch = zoo.get_spec(name).config_dict["patch_size"]
    tokens = (image_size // patch) ** 2 + 1  # the grid plus CLS
    qk = next(g for g in graph.gemms if g.kind == "matmul")
    assert (qk.m, qk.n) == (tokens, tokens)
    real = zoo.build_model(name, image_size=image_size)
    inputs = zoo.example_inputs(name, batch=2, image_size=image_size)
    assert trace.trace_module(real, inputs).nodes == graph.nodes
    # A different shape is a different cache entry, not the native trace read back.
    assert trace_cache.trace_named_model(name, batch=2) != graph


def test_linear_gemms_match_forward_hooks():
    """Independent of torch.export: record every nn.Linear/conv call's shapes in eager mode."""
    model = zoo.build_model("wav2vec2_tiny")
    inputs = zoo.example_inputs("wav2vec2_tiny")
    seen: dict[str, tuple[int, int, int, int]] = {}

    def hook(name):
        def record(module, args, output):
            x = args[0]
            if isinstance(module, nn.Linear):
                seen[name] = (x.numel() // x.shape[-1], x.shape[-1], module.out_features, 1)
            else:
                groups = module.groups
                k = module.in_channels // groups * module.kernel_size[0]
                n = module.out_channels // groups
                seen[name] = (output.shape[-1], k, n, groups * x.shape[0])

        return record

    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            module.register_forward_hook(hook(name))
    with torch.no_grad():
        model(**inputs)
    graph = trace.trace_module(model, inputs, name="wav2vec2_tiny")
    traced = {g.name: (g.m, g.k, g.n, g.count) for g in graph.gemms if g.kind != "matmul"}
    assert traced == seen
    assert {g.kind for g in graph.gemms if g.name.endswith("conv")} == {"conv"}


@pytest.mark.parametrize("name", ["bert_tiny", "wav2vec2_tiny"])
def test_exported_program_reproduces_the_eager_forward(name):
    model = zoo.build_model(name)
    inputs = zoo.example_inputs(name, batch=2)
    exported = trace.export_module(model, inputs, name=name)
    with torch.no_grad():
        eager = model(**inputs).last_hidden_state
        graph_out = exported.module()(**inputs).last_hidden_state
    assert torch.equal(eager, graph_out)
    graph = trace.graph_from_exported(exported, model, name=name, input_shape={"batch": 2})
    assert len(graph.gemms) == len(trace.trace_module(model, inputs).gemms)


@pytest.mark.parametrize("name", ["whisper_tiny_test", "wav2vec2_tiny"])
def test_classifier_models_trace_with_their_head(name):
    graph = trace.trace_module(zoo.build_model(name, num_labels=3), zoo.example_inputs(name))
    head = graph.gemms[-1]
    assert (head.name, head.m, head.n) == ("classifier", 1, 3)


def test_vector_ops_have_element_counts():
    graph = trace_cache.trace_named_model("bert_tiny")  # 16 tokens, hidden 32, 4 heads, 2 layers
    by_op: dict[str, list[VectorNode]] = {}
    for node in graph.vectors:
        by_op.setdefault(node.vector_op, []).append(node)
    assert [(v.elements, v.row_length) for v in by_op["softmax"]] == [(4 * 16 * 16, 16)] * 2
    assert all((v.elements, v.row_length) == (16 * 32, 32) for v in by_op["layernorm"])
    assert [v.elements for v in by_op["gelu"]] == [16 * 64] * 2
    assert len(by_op["layernorm"]) == 1 + 2 * 2  # embeddings + two per layer


class _Block(nn.Module):
    """Attention-shaped toy: q/k projections, QK^T, softmax, and an unannotated output."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(16, 16), nn.GELU())
        self.key = nn.Linear(16, 16)
        self.out = nn.Linear(5, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.proj(x).view(x.shape[0], x.shape[1], 2, 8).transpose(1, 2)
        k = self.key(x).view(x.shape[0], x.shape[1], 2, 8).transpose(1, 2)
        scores = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        return self.out(scores.sum(dim=1))


def test_precision_comes_from_the_innermost_annotated_module():
    block = _Block()
    # Set on the Sequential, not on the Linear inside it: the walk outward must find it.
    setattr(block.proj, LINEAR_ATTR, GemmPrecision(4, 4, "2:4", 0.5))
    setattr(block.key, LINEAR_ATTR, GemmPrecision(4, 8, "dense", 0.9))
    setattr(block, ATTENTION_ATTR, GemmPrecision(8, 8))
    graph = trace.trace_module(block, {"x": torch.randn(3, 5, 16)})
    gemms = {g.name: g for g in graph.gemms}
    proj = gemms["proj.0"]
    assert (proj.weight_bits, proj.act_bits, proj.sparsity, proj.weight_density) == (
        4,
        4,
        "2:4",
        0.5,
    )
    assert (gemms["key"].act_bits, gemms["key"].weight_density) == (8, 0.9)
    qk = next(g for g in graph.gemms if g.kind == "matmul")
    assert (qk.m, qk.k, qk.n, qk.count) == (5, 8, 5, 3 * 2)
    assert (qk.weight_bits, qk.act_bits, qk.sparsity) == (8, 8, "dense")
    out = gemms["out"]  # outside every annotated module: hardware default, dense
    assert (out.weight_bits, out.act_bits, out.sparsity) == (None, None, "dense")
    assert (out.m, out.k, out.n) == (3 * 5, 5, 8)


class _FusedAttention(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return nn.functional.scaled_dot_product_attention(q, k, v)


def test_fused_attention_becomes_two_matmuls_and_a_softmax():
    module = _FusedAttention()
    setattr(module, ATTENTION_ATTR, GemmPrecision(8, 8))
    q = torch.randn(2, 3, 5, 8)  # batch 2, 3 heads, 5 queries, head dim 8
    kv = torch.randn(2, 3, 7, 8)  # 7 keys/values
    graph = trace.trace_module(module, {"q": q, "k": kv, "v": kv})
    qk, pv = graph.gemms
    assert (qk.m, qk.k, qk.n, qk.count, qk.act_bits) == (5, 8, 7, 6, 8)
    assert (pv.m, pv.k, pv.n, pv.count) == (5, 7, 8, 6)
    (softmax,) = graph.vectors
    assert (softmax.vector_op, softmax.elements, softmax.row_length) == ("softmax", 6 * 35, 7)
    # Edges: QK^T reads two model inputs, the softmax reads QK^T, PV reads the softmax and v.
    assert (qk.inputs, softmax.inputs, pv.inputs) == (("", ""), (qk.name,), (softmax.name, ""))


class _FakeQuant(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 0.1
        return torch.clamp(torch.round(x / scale), -8, 7) * scale


def test_a_rounding_module_becomes_one_requantize_node():
    model = nn.Sequential(_FakeQuant(), nn.Linear(16, 4))
    graph = trace.trace_module(model, {"input": torch.randn(2, 16)})
    assert [n.vector_op for n in graph.vectors] == ["requantize"]
    assert graph.vectors[0].elements == 32
    # The quantizer's element-wise ops are one node reading the model input; the GEMM reads it.
    assert graph.vectors[0].inputs == ("",)
    assert graph.gemms[0].inputs == (graph.vectors[0].name,)


def test_edges_follow_the_residual_stream():
    graph = trace_cache.trace_named_model("vit_tiny")
    by_name = {node.name: node for node in graph.nodes}
    adds = [n for n in graph.vectors if n.vector_op == "add" and len(n.inputs or ()) == 2]
    assert adds, "every block adds its residual"
    for add in adds:  # a residual add reads the block's GEMM output and an earlier add/embedding
        kinds = {by_name[source].op for source in add.inputs}
        assert kinds == {"gemm", "vector"}
    qk = next(g for g in graph.gemms if g.weight_is_activation)
    assert [by_name[s].name.rsplit(".", 1)[-1] for s in qk.inputs] == ["q_proj", "k_proj"]


class _UnknownOp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumprod(x, dim=0)


def test_unknown_op_names_the_op_and_node():
    with pytest.raises(AccelsimError, match=r"unknown op aten\.cumprod\.default at node 'cumprod'"):
        trace.trace_module(_UnknownOp(), {"x": torch.randn(4)})


class _DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # branch on a value: export cannot decide it from shapes
            return x * 2
        return x


def test_export_failure_is_one_line():
    with pytest.raises(AccelsimError, match="torch.export failed") as info:
        trace.trace_module(_DataDependent(), {"x": torch.randn(4)}, name="toy")
    assert "\n" not in str(info.value)


def test_parameter_only_work_is_folded_away():
    # wav2vec2's positional conv computes weight-norm from parameters: no node for it.
    graph = trace_cache.trace_named_model("wav2vec2_tiny")
    assert not any("weight_norm" in n.name or "parametrizations" in n.name for n in graph.nodes)


def test_trace_cache_hits_in_process_and_on_disk():
    trace_cache.clear_memory_cache()
    first = trace_cache.trace_named_model("vit_tiny", batch=3)
    assert trace_cache.trace_named_model("vit_tiny", batch=3) is first
    files = list((zoo.cache_dir() / "traces").glob("vit_tiny-batch3-*.json"))
    assert len(files) == 1
    assert Graph.from_dict(json.loads(files[0].read_text())) == first
    trace_cache.clear_memory_cache()
    assert trace_cache.trace_named_model("vit_tiny", batch=3) == first  # read back from disk


def test_cache_key_changes_with_precision_annotations():
    model = zoo.build_model("vit_tiny")
    plain = trace_cache.trace_named_model("vit_tiny", model=model)
    setattr(model.layers[0].mlp.fc1, LINEAR_ATTR, GemmPrecision(4, 4, "2:4", 0.5))
    annotated = trace_cache.trace_named_model("vit_tiny", model=model)
    fc1 = next(g for g in annotated.gemms if g.name == "layers.0.mlp.fc1")
    assert fc1.sparsity == "2:4"
    assert all(g.sparsity == "dense" for g in plain.gemms)


def test_cache_key_changes_with_the_tracer_version(monkeypatch):
    key = trace_cache.trace_cache_key("vit_tiny", {"batch": 1}, "fingerprint")
    monkeypatch.setattr(trace_cache, "TRACER_VERSION", trace.TRACER_VERSION + 1)
    assert trace_cache.trace_cache_key("vit_tiny", {"batch": 1}, "fingerprint") != key


def test_trace_module_needs_inputs():
    with pytest.raises(AccelsimError, match="example_inputs is empty"):
        trace.trace_module(nn.Linear(2, 2), {})


@pytest.mark.parametrize(
    ("node", "fragment"),
    [
        (GemmNode("qk", m=4, k=4, n=4, kind="matmul"), "weight_is_activation=False"),
        (
            GemmNode("pv", m=4, k=4, n=4, count=3, kind="matmul", weight_is_activation=True),
            "count=3 is not a multiple of the batch",
        ),
        (GemmNode("fc", m=4, k=4, n=4, weight_bits=4), "set both or neither"),
        (GemmNode("fc", m=4, k=4, n=4, sparsity="2:4", weight_density=0.75), "density=0.75"),
        (VectorNode("ln", vector_op="layernorm", elements=10, row_length=4), "does not divide"),
    ],
)
def test_verify_graph_rejects_broken_invariants(node, fragment):
    nodes = (node,) if isinstance(node, GemmNode) else (GemmNode("fc", m=1, k=1, n=1), node)
    with pytest.raises(AccelsimError, match=fragment):
        verify_graph(Graph("bad", nodes, {"batch": 2}))


def test_verify_graph_needs_a_gemm():
    with pytest.raises(AccelsimError, match="no GEMM nodes"):
        verify_graph(Graph("empty", (VectorNode("x", vector_op="add", elements=4),)))


@pytest.mark.parametrize("name", ["bert_tiny", "vit_tiny"])
def test_frozen_quantizers_leave_the_compressed_graph_unchanged(name):
    # export_module freezes the quantizers; a plain torch.export records every fake-quant op.
    from accelsim.graph.workload import compressed_model, load_workload_recipe

    model = compressed_model(name, load_workload_recipe("w4a4_sp24"))
    inputs = zoo.example_inputs(name)
    with torch.no_grad():
        unfrozen = torch.export.export(model, (), kwargs=inputs, strict=False)
    frozen = trace.export_module(model, inputs, name=name)
    assert len(frozen.graph.nodes) < len(unfrozen.graph.nodes)

    def walked(exported):
        graph = trace.graph_from_exported(exported, model, name=name, input_shape={})
        # Vector-op names carry torch.fx's per-op counters, which count the dropped
        # parameter-only ops; everything the simulator reads must match (edges by position).
        position = {node.name: i for i, node in enumerate(graph.nodes)}
        return [
            {**{key: value for key, value in node.__dict__.items() if key != "name"},
             "inputs": [position.get(source, source) for source in node.inputs or ()]}
            if isinstance(node, VectorNode) else node
            for node in graph.nodes
        ]

    assert walked(frozen) == walked(unfrozen)
    assert any(g.sparsity == "2:4" and g.weight_bits == 4 for g in trace.graph_from_exported(
        frozen, model, name=name, input_shape={}).gemms)


def test_an_all_zero_literal_mask_add_is_folded_but_an_input_mask_stays():
    vit = zoo.build_model("vit_tiny").eval()
    graph = trace.trace_module(vit, zoo.example_inputs("vit_tiny", batch=1), name="vit")
    adds = [n.name for n in graph.nodes if isinstance(n, VectorNode) and n.vector_op == "add"]
    # ViT builds its mask from arange: all zeros, no add; the embedding and 2 residual adds stay.
    assert not [name for name in adds if "attention" in name]
    assert len(adds) == 1 + 2 * vit.config.num_hidden_layers
    bert = zoo.build_model("bert_tiny").eval()
    graph = trace.trace_module(bert, zoo.example_inputs("bert_tiny", batch=1), name="bert")
    masks = [n for n in graph.nodes if isinstance(n, VectorNode) and n.vector_op == "add"
             and n.name.split("/")[0].endswith("attention.self")]
    assert len(masks) == bert.config.num_hidden_layers  # read from attention_mask: kept
