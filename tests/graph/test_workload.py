"""accelsim.graph.workload: zoo model -> recipe -> calibrated -> traced graph, and its caches."""

from __future__ import annotations

import pytest

from accelsim.compress.apply import clips_only_calibration
from accelsim.errors import AccelsimError
from accelsim.graph import workload
from accelsim.graph.workload import workload_graph

MODEL = "bert_tiny"


@pytest.fixture(autouse=True)
def fresh_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELSIM_CACHE", str(tmp_path))
    workload_graph.cache_clear()
    yield
    workload_graph.cache_clear()


def test_sparse_recipe_graph_carries_real_masks_and_bits():
    graph = workload_graph(MODEL, recipe="w4a4_sp24")
    linears = [g for g in graph.gemms if g.kind == "linear"]
    matmuls = [g for g in graph.gemms if g.kind == "matmul"]
    assert len(linears) == 12 and len(matmuls) == 4
    assert all(g.sparsity == "2:4" and (g.weight_bits, g.act_bits) == (4, 4) for g in linears)
    # measured from the codes: half the weights pruned, a few more rounded to zero
    assert all(0.3 < g.weight_density <= 0.5 for g in linears)
    assert all(g.sparsity == "dense" and g.act_bits == 8 for g in matmuls)
    assert any(v.vector_op == "requantize" for v in graph.vectors)  # calibrated quantizers


def test_no_recipe_and_float_recipe_trace_the_plain_model():
    plain = workload_graph(MODEL, recipe=None)
    assert all(g.weight_bits is None and g.sparsity == "dense" for g in plain.gemms)
    assert workload_graph(MODEL, recipe="fp32") == plain
    assert not any(v.vector_op == "requantize" for v in plain.vectors)


def test_disk_cache_serves_a_new_process(monkeypatch):
    first = workload_graph(MODEL, recipe="w4a4", seq_len=8)
    workload_graph.cache_clear()  # as if a new process started

    def no_build(*args, **kwargs):
        raise AssertionError("the cached graph should have been read from disk")

    monkeypatch.setattr(workload, "compressed_model", no_build)
    assert workload_graph(MODEL, recipe="w4a4", seq_len=8) == first
    with pytest.raises(AssertionError, match="read from disk"):
        workload_graph(MODEL, recipe="w4a4", seq_len=8, seed=1)  # another key: needs a build


def test_unknown_recipe_names_the_closest():
    with pytest.raises(AccelsimError, match=r"unknown name 'w8a4' \(did you mean 'w8a8', "):
        workload_graph(MODEL, recipe="w8a4")


def test_recipe_that_excludes_the_family_is_one_line(tmp_path):
    path = tmp_path / "vision_only.yaml"
    path.write_text("name: vision_only\nfamilies: [vit]\n")
    with pytest.raises(AccelsimError, match="model family 'bert' is not covered"):
        workload_graph(MODEL, recipe=str(path))


def test_bad_shape_is_one_line():
    with pytest.raises(AccelsimError, match="seq_len=1000 must be an integer in 1..64"):
        workload_graph(MODEL, recipe="w4a4", seq_len=1000)


@pytest.mark.parametrize("model", ["vit_tiny", "wav2vec2_tiny", "whisper_tiny_test"])
def test_every_family_compresses_its_encoder_linears(model):
    graph = workload_graph(model, recipe="w4a4_sp24")
    sparse = [g for g in graph.gemms if g.sparsity == "2:4"]
    assert len(sparse) == 12 and all(g.kind == "linear" and g.weight_bits == 4 for g in sparse)
    # front ends (patch embedding, conv feature encoders) stay float, run by the host
    assert all(g.weight_bits is None and g.on_host for g in graph.gemms if g.kind == "conv")
    assert all(g.on_host == (g.kind == "conv" or g.weight_bits is None) for g in graph.gemms
               if not g.weight_is_activation)


def test_smoothing_folds_into_the_quantize_step():
    # Per-channel smoothing is part of the activation quantizer (one requantize on the vector
    # unit, its factors folded into the step): same vector ops and GEMMs as without it.
    plain = workload_graph(MODEL, recipe="w4a4_sp24", seq_len=8)
    smoothed = workload_graph(MODEL, recipe="w4a4_sp24_smooth", seq_len=8)
    assert [(v.vector_op, v.elements, v.count) for v in smoothed.vectors] == [
        (v.vector_op, v.elements, v.count) for v in plain.vectors]
    assert any(v.vector_op == "requantize" for v in smoothed.vectors)
    assert [(g.m, g.k, g.n, g.sparsity) for g in smoothed.gemms] == [
        (g.m, g.k, g.n, g.sparsity) for g in plain.gemms]


@pytest.mark.parametrize(("model", "recipe"), [
    ("vit_tiny", "w4a4_sp24"),
    ("wav2vec2_tiny", "w4a4_sp24"),
    ("bert_tiny", "w4a4_sp24_sparsegpt_smooth"),
])
def test_the_meta_device_export_gives_the_graph_of_the_real_module(model, recipe):
    """trace_named_model exports a compressed module after moving it to the meta device; the
    graph is the one an export of the real module (real weights, real inputs) gives."""
    from accelsim import zoo
    from accelsim.compress.apply import PLAN_ATTR
    from accelsim.graph.intmodel import with_host_layers
    from accelsim.graph.trace import export_module, graph_from_exported

    parsed = workload.load_workload_recipe(recipe)
    shape = zoo.resolve_input_shape(model)
    real = workload.compressed_model(model, parsed)
    exported = export_module(real, zoo.inputs_for_shape(zoo.get_spec(model), shape), name=model)
    # The float layers of its compression plan run on the host in both.
    expected = with_host_layers(graph_from_exported(exported, real, name=model, input_shape=shape),
                                getattr(real, PLAN_ATTR).float_layers)
    assert workload_graph(model, recipe=recipe) == expected


def test_a_cold_build_tells_each_stage_on_stderr_and_a_warm_run_is_silent(capsys):
    from accelsim.cli import main

    argv = ["run", "--hw", "hw_configs/int4_sparse.yaml", "--model", "vit_tiny",
            "--recipe", "w4a4"]
    assert main(argv) == 0
    cold = capsys.readouterr().err
    stages = ["no cached graph", "building the model", "compressing", "calibrating",
              "tracing with torch.export", "graph built in"]
    positions = [cold.find(f"vit_tiny w4a4: {stage}") if stage != "tracing with torch.export"
                 else cold.find(f"vit_tiny: {stage}") for stage in stages]
    assert -1 not in positions and positions == sorted(positions), cold
    workload_graph.cache_clear()  # as a new process: the graph now comes from the disk cache
    assert main(argv) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("model", "recipe"), [
    ("bert_tiny", "w4a4_sp24"),
    ("vit_tiny", "w4a4"),
    ("wav2vec2_tiny", "w4a4_sp24"),
    ("bert_tiny", "w4a4_sp24_ln_a8"),
    ("vit_tiny", "w4a4_sp24_sr_ste"),
])
def test_skipping_a_clips_only_calibration_gives_the_same_graph(model, recipe, tmp_path,
                                                                monkeypatch):
    """workload_graph activates the quantizers without the calibration forward where calibration
    sets only clips: the graph (densities from the real codes included) is the calibrated one's."""
    from accelsim.graph import trace_cache

    parsed = workload.load_workload_recipe(recipe)
    assert clips_only_calibration(parsed)
    graphs = []
    for clip_values in (True, False):
        monkeypatch.setenv("ACCELSIM_CACHE", str(tmp_path / str(clip_values)))
        trace_cache.clear_memory_cache()  # the trace key holds no clip values: trace both
        net = workload.compressed_model(model, parsed, clip_values=clip_values)
        graphs.append(trace_cache.trace_named_model(model, model=net))
    calibrated, skipped = graphs
    assert skipped == calibrated
    assert any(v.vector_op == "requantize" for v in skipped.vectors)


@pytest.mark.parametrize("recipe", ["w4a4_sp24_smooth", "w4a4_sp24_wanda", "w4a4_sp24_sparsegpt"])
def test_calibration_that_moves_weights_or_masks_is_never_skipped(recipe):
    parsed = workload.load_workload_recipe(recipe)
    assert not clips_only_calibration(parsed)
    with pytest.raises(AccelsimError, match="clip_values=False: recipe .* calibrates weights"):
        workload.compressed_model(MODEL, parsed, clip_values=False)
