"""The reference on a chip's datapath: vector formats, the oracle, verify --hw (tiny models)."""

import dataclasses
import json
import math
import re

import numpy as np
import pytest
import torch
from zoo_helpers import calibrated_w4a4_sp24, zoo_batches

from accelsim.cli import main
from accelsim.compress.apply import apply_recipe, calibrate
from accelsim.compress.export import export_int_model, load_int_model, save_int_model
from accelsim.compress.recipe import load_recipe
from accelsim.errors import AccelsimError
from accelsim.ref import chip, execute, int_mode, oracle, vector_ops
from accelsim.ref.datapath import Datapath


@pytest.fixture(scope="module")
def vit():
    model = calibrated_w4a4_sp24("vit_tiny")
    return model, export_int_model(model)


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_every_executed_op_equals_the_oracle(vit, fmt):
    model, int_model = vit
    datapath = Datapath(accumulator_bits=12, integer_requant=True, vector_format=fmt)
    run = execute.run_int_model(model, int_model, zoo_batches("vit_tiny"), datapath=datapath,
                                record_ops=True)
    kinds = {kind for kind, _, _ in run.counts.records}
    assert {"sparse_gemm", "bmm", "requantize", "layer_norm", "softmax", "gelu", "add",
            "mul"} <= kinds
    checks = [oracle.check_op(kind, out, inputs, max_rows=2)
              for kind, out, inputs in run.counts.records]
    assert sum(c.mismatches for c in checks) == 0 and sum(c.elements for c in checks) > 1000


def test_vector_ops_run_in_the_format_and_host_modules_in_float32(vit):
    model, int_model = vit
    executor = execute.build_int_executor(model, int_model,
                                          datapath=Datapath(vector_format="fp16"))
    seen = {}
    host = int_model.float_layers[0]
    executor.get_submodule(host).register_forward_hook(
        lambda m, i, o: seen.update(host_in=i[0], host_out=o))
    executor.get_submodule("layers.0.layernorm_before").register_forward_hook(
        lambda m, i, o: seen.update(ln_out=o))
    with torch.no_grad():
        executor(**zoo_batches("vit_tiny")[0].inputs)
    ln = seen["ln_out"].numpy()
    assert np.array_equal(vector_ops.round_to_format(ln, "fp16"), ln)  # fp16 values
    conv = executor.get_submodule(host)
    with torch.no_grad():  # the float32 host computation, outside the executor
        expected = conv._conv_forward(seen["host_in"], conv.weight, conv.bias)
    assert torch.equal(seen["host_out"], expected)
    assert not np.array_equal(vector_ops.round_to_format(expected.numpy(), "fp16"),
                              expected.numpy())


def test_int_format_runs_integer_kernels_between_gemms(vit):
    model, int_model = vit
    batches = zoo_batches("vit_tiny")
    datapath = Datapath(accumulator_bits=20, integer_requant=True, vector_format="int")
    run = execute.run_int_model(model, int_model, batches, datapath=datapath, record_ops=True)
    kinds = {kind for kind, _, _ in run.counts.records}
    assert {"int_layer_norm", "int_gelu", "int_add", "int_softmax", "requantize"} <= kinds
    assert not kinds & {"layer_norm", "gelu", "add", "softmax", "mul"}
    assert run.counts.float_fallbacks == {}
    checks = [oracle.check_op(kind, out, inputs, max_rows=2)
              for kind, out, inputs in run.counts.records]
    assert sum(c.mismatches for c in checks) == 0
    fp16 = chip.check_chip(model, int_model, batches, Datapath(
        accumulator_bits=20, integer_requant=True, vector_format="fp16"))
    report = chip.check_chip(model, int_model, batches, datapath)
    assert 15 < report.logit_sqnr_db < fp16.logit_sqnr_db
    # The attention scaling folds into the softmax's scale and the mask into its kept scores:
    # neither runs, and the graph the simulator prices for an int vector unit has neither.
    assert "elements_mul" not in report.executed and "elements_mul" not in report.graph
    assert report.graph_matches


def test_exact_kernels_drop_their_ops_from_the_chip_and_raise_the_logits_sqnr(vit):
    """A study's knob: an exact kernel runs no integer kernel (nothing for the oracle, zero
    error against float) and, with all four exact, the logits are closer to the fake-quant
    model's than the approximate kernels give."""
    model, int_model = vit
    batches = zoo_batches("vit_tiny")
    int_only = Datapath(accumulator_bits=20, integer_requant=True, vector_format="int")
    gelu_exact = Datapath(accumulator_bits=20, integer_requant=True, vector_format="int",
                          exact_kernels=("gelu",))
    run = execute.run_int_model(model, int_model, batches, datapath=gelu_exact,
                                record_ops=True)
    kinds = {kind for kind, _, _ in run.counts.records}
    assert "int_gelu" not in kinds and {"int_layer_norm", "int_add", "int_softmax"} <= kinds
    assert run.counts.float_error["gelu"][0] == 0.0  # no error against float
    exact = dataclasses.replace(int_only, exact_kernels=("add", "gelu", "layer_norm", "softmax"))
    approximate = chip.check_chip(model, int_model, batches, int_only)
    exactly = chip.check_chip(model, int_model, batches, exact)
    assert exactly.logit_sqnr_db > approximate.logit_sqnr_db
    assert exactly.oracle_mismatches == 0 and exactly.oracle_ops_checked > 0


def test_gelu_table_runs_on_the_chip_and_beats_the_polynomial(vit):
    """The table GELU replaces I-BERT's polynomial op for op (the oracle agrees, the graph's
    GELU elements are the ones executed) and errs less against float."""
    model, int_model = vit
    batches = zoo_batches("vit_tiny")
    polynomial = Datapath(accumulator_bits=20, integer_requant=True, vector_format="int")
    table = dataclasses.replace(polynomial, gelu_table_segments=64)
    run = execute.run_int_model(model, int_model, batches, datapath=table, record_ops=True)
    kinds = {kind for kind, _, _ in run.counts.records}
    assert "int_gelu_table" in kinds and "int_gelu" not in kinds
    by_polynomial = execute.run_int_model(model, int_model, batches, datapath=polynomial)
    assert run.counts.vector_elements["gelu"] == by_polynomial.counts.vector_elements["gelu"]

    def gelu_sqnr(counts):
        squared_error, squared_signal = counts.float_error["gelu"][:2]
        return squared_signal / squared_error

    assert gelu_sqnr(run.counts) > 10 * gelu_sqnr(by_polynomial.counts)  # measured: 20x
    report = chip.check_chip(model, int_model, batches, table)
    assert report.oracle_mismatches == 0 and report.oracle_ops_checked > 0
    assert report.executed == chip.check_chip(model, int_model, batches, polynomial).executed


def test_residual_scale_rule():
    """``coarser`` takes the larger scale; ``fitted`` the finest whose full operand ranges fit
    the 24-bit residual, between the two scales."""
    assert int_mode.residual_out_scale("coarser", 1e-3, 16, 4e-2, 20) == 4e-2
    # A 16-bit LayerNorm output at 1e-3 plus a 20-bit accumulator at 4e-2: the sum's range,
    # 2^15 * 1e-3 + 2^19 * 4e-2 = 21,004, over 2^23 - 1 codes.
    fitted = int_mode.residual_out_scale("fitted", 1e-3, 16, 4e-2, 20)
    assert fitted == pytest.approx((2**15 * 1e-3 + 2**19 * 4e-2) / (2**23 - 1), rel=1e-12)
    assert int_mode.residual_out_scale("fitted", 1e-3, 24, 1e-3, 24) == 1e-3  # at most coarser
    assert int_mode.residual_out_scale("fitted", 1e-3, 2, 1e-3, 2) == 1e-3  # at least finer


def _runs_by_residual_rule(model, int_model, batches, *datapaths):
    return {datapath.residual_scale: execute.run_int_model(model, int_model, batches,
                                                           datapath=datapath, record_ops=True)
            for datapath in datapaths}


def _add_sqnr(run) -> float:
    """Signal over error power of the run's residual adds against float."""
    squared_error, squared_signal = run.counts.float_error["add"][:2]
    return squared_signal / squared_error


def test_fitted_residual_scale_runs_on_the_chip_and_saturates_nothing(vit):
    """The fitted rule keeps the finer operand's low bits: its adds err less against float than
    the coarser rule's, no add saturates (the rule's bound), the oracle agrees, and the executed
    work is the same."""
    model, int_model = vit
    batches = zoo_batches("vit_tiny")
    coarser = Datapath(accumulator_bits=20, integer_requant=True, vector_format="int")
    fitted = dataclasses.replace(coarser, residual_scale="fitted")
    runs = _runs_by_residual_rule(model, int_model, batches, coarser, fitted)
    assert _add_sqnr(runs["fitted"]) > _add_sqnr(runs["coarser"])
    adds = [(out, inputs) for kind, out, inputs in runs["fitted"].counts.records
            if kind == "int_add"]
    limit = 2 ** (int_mode.RESIDUAL_BITS - 1)
    assert adds and all(np.abs(out[0]).max() < limit for out, _ in adds)
    assert any(out[1] < max(inputs["scale_a"], inputs["scale_b"]) for out, inputs in adds)
    report = chip.check_chip(model, int_model, batches, fitted)
    assert report.oracle_mismatches == 0 and report.oracle_ops_checked > 0
    assert report.executed == chip.check_chip(model, int_model, batches, coarser).executed


def test_calibrated_residual_scales_are_each_adds_own_and_travel_in_the_file(vit, tmp_path):
    """Calibrated on one batch, each add's scale is its largest sum on the residual width: finer
    than the fitted rule's, so the adds err less; the oracle agrees, the work is the same, and
    the scales survive the integer model file bit for bit."""
    model, int_model = vit
    batches = zoo_batches("vit_tiny")
    fitted = Datapath(accumulator_bits=20, integer_requant=True, vector_format="int",
                      residual_scale="fitted")
    calibrated = dataclasses.replace(fitted, residual_scale="calibrated")
    tuned = execute.calibrate_residual_adds(model, int_model, batches[:1], calibrated)
    layers = model.config.num_hidden_layers
    # Two residual adds in each layer's forward: after attention and after the FFN.
    assert sorted(tuned.residual_add_scales) == [f"layers.{i}:{k}" for i in range(layers)
                                                 for k in (0, 1)]
    runs = _runs_by_residual_rule(model, tuned, batches, fitted, calibrated)
    assert _add_sqnr(runs["calibrated"]) > _add_sqnr(runs["fitted"])
    adds = [out[1] for kind, out, _ in runs["calibrated"].counts.records if kind == "int_add"]
    assert set(adds) <= set(tuned.residual_add_scales.values())
    report = chip.check_chip(model, tuned, batches, calibrated)
    assert report.oracle_mismatches == 0 and report.oracle_ops_checked > 0
    assert report.executed == chip.check_chip(model, tuned, batches, fitted).executed
    loaded = load_int_model(save_int_model(tuned, tmp_path / "m.npz"))
    assert loaded.residual_add_scales == tuned.residual_add_scales


def test_calibrated_residual_scale_needs_calibrated_adds(vit):
    model, int_model = vit
    calibrated = Datapath(integer_requant=True, vector_format="int", residual_scale="calibrated")
    with pytest.raises(AccelsimError, match="the integer model has no calibrated residual adds"):
        execute.run_int_model(model, int_model, zoo_batches("vit_tiny"), datapath=calibrated)
    one_site = dataclasses.replace(int_model, residual_add_scales={"layers.0:0": 1.0})
    with pytest.raises(AccelsimError, match="no scale for the add at layers.0:1"):
        execute.run_int_model(model, one_site, zoo_batches("vit_tiny"), datapath=calibrated)
    with pytest.raises(AccelsimError, match="allowed: int"):
        execute.calibrate_residual_adds(model, int_model, zoo_batches("vit_tiny"),
                                        Datapath(vector_format="fp16"))


@pytest.mark.parametrize(("fields", "message"), [
    ({"vector_format": "fp16", "gelu_table_segments": 16},
     "gelu_table_segments 16 needs vector format int (the float formats evaluate erf), not fp16"),
    ({"vector_format": "int", "gelu_table_segments": 12},
     "gelu_table_segments 12 is not one of 0, 4, 8, 16, 32, 64, 128, 256"),
    ({"vector_format": "fp16", "exact_kernels": ("gelu",)},
     "exact kernels gelu need vector format int (the one with approximate kernels), not fp16"),
    ({"vector_format": "int", "exact_kernels": ("tanh",)},
     "exact kernel 'tanh' is not one of add, gelu, layer_norm, softmax"),
])
def test_exact_kernels_are_validated(fields, message):
    with pytest.raises(AccelsimError, match=re.escape(message)):
        Datapath(**fields)


def test_check_chip_orders_formats_and_matches_the_graph(vit):
    model, int_model = vit
    batches = zoo_batches("vit_tiny")
    reports = {fmt: chip.check_chip(model, int_model, batches,
                                    Datapath(accumulator_bits=20, integer_requant=True,
                                             vector_format=fmt))
               for fmt in ("fp32", "fp16", "bf16")}
    assert reports["fp32"].logit_sqnr_db > reports["fp16"].logit_sqnr_db > 20
    assert reports["fp16"].logit_sqnr_db > reports["bf16"].logit_sqnr_db
    for report in reports.values():
        assert report.oracle_mismatches == 0 and report.oracle_ops_checked > 30
        assert report.graph_matches, (report.executed, report.graph)
        assert set(report.vector_error) == {"add", "gelu", "layernorm", "mul", "softmax"}
    assert reports["fp16"].vector_error["layernorm"]["max_abs_err"] > 0


def test_int_format_runs_wav2vec2_group_norm_on_the_chip_as_the_graph_prices_it():
    model = calibrated_w4a4_sp24("wav2vec2_tiny")
    int_model, batches = export_int_model(model), zoo_batches("wav2vec2_tiny")
    datapath = Datapath(accumulator_bits=32, vector_format="int")
    run = execute.run_int_model(model, int_model, batches, datapath=datapath, record_ops=True)
    norms = [(out, inputs) for kind, out, inputs in run.counts.records
             if kind == "int_group_norm"]
    assert norms and run.counts.float_fallbacks == {}
    assert all(oracle.check_op("int_group_norm", out, inputs, max_rows=1).mismatches == 0
               for out, inputs in norms)
    report = chip.check_chip(model, int_model, batches, datapath)
    assert report.oracle_mismatches == 0 and report.vector_error["layernorm"]["sqnr_db"] > 60
    assert report.graph_matches, (report.executed, report.graph)


def test_verify_hw_reports_saturations_by_accumulator_width(capsys, tmp_path):
    found = {}
    for bits in (10, 32):
        out = tmp_path / f"acc{bits}.json"
        code = main(["verify", "--model", "bert_tiny", "--recipe", "w4a4_sp24", "--batches", "1",
                     "--batch-size", "2", "--hw", "hw_configs/int4_sparse.yaml", "--set",
                     f"precision.accumulator_bits={bits}", "--json", str(out)])
        printed = capsys.readouterr().out
        assert code == 0, printed
        found[bits] = json.loads(out.read_text())
        assert "accumulator saturations:" in printed and "oracle: 0 mismatches" in printed
    assert found[10]["accumulator_saturations"] > 0 == found[32]["accumulator_saturations"]
    assert found[10]["oracle_mismatches"] == 0 and found[10]["datapath"]["vector_format"] == "fp16"
    assert found[32]["logit_sqnr_db"] > found[10]["logit_sqnr_db"]
    # The padding mask is added (zeros without padding), as the simulator graph prices it.
    assert found[10]["graph_matches"] and found[32]["graph_matches"]


def test_verify_hw_calibrates_the_residual_adds_it_runs_on(capsys, tmp_path):
    out = tmp_path / "calibrated.json"
    code = main(["verify", "--model", "vit_tiny", "--recipe", "w4a4_sp24", "--batches", "1",
                 "--batch-size", "2", "--hw", "hw_configs/int4_sparse.yaml", "--set",
                 "vector_unit.format=int", "--set", "vector_unit.residual_scale=calibrated",
                 "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "residual adds: output scales calibrated on the verified batches" in printed
    found = json.loads(out.read_text())
    assert found["datapath"]["residual_scale"] == "calibrated"
    assert found["oracle_mismatches"] == 0 and found["graph_matches"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--set", "precision.accumulator_bits=16"], "--set: needs --hw"),
    (["--hw", "hw_configs/fp16_dense.yaml"], "precision.kind: 'fp'; the integer reference runs"),
    (["--hw", "hw_configs/int4_sparse.yaml", "--set", "vector_unit.format=fp8"],
     "vector_unit.format: 'fp8' is not one of fp32, fp16, bf16, int"),
    (["--hw", "hw_configs/int4_sparse.yaml", "--set", "precision.accumulator_bits=6"],
     "precision.accumulator_bits: 6 is narrower than one 4-bit x 4-bit product"),
])
def test_verify_hw_bad_datapath_is_one_line(capsys, argv, message):
    code = main(["verify", "--model", "bert_tiny", "--recipe", "w4a4_sp24", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_int_mode_keeps_scales_through_layout_and_counts_float_fallbacks():
    from accelsim.ref.datapath import DatapathCounts
    from accelsim.ref.int_mode import IntFormatMode, IntTensors

    counts, tensors = DatapathCounts(), IntTensors()
    x = tensors.tensor(np.arange(-6, 6).reshape(3, 4), 0.25, 8)
    with IntFormatMode(counts, tensors):
        moved = x.transpose(0, 1).reshape(2, 6)
        doubled = moved * 2.0  # fixed-point multiply, same scale
        squashed = torch.tanh(doubled)  # no integer kernel
    assert tensors.scale(moved) == 0.25 and tensors.scale(doubled) == 0.25
    # Stored widths: layout keeps it, a product by 2 takes one bit more, a fallback is a host
    # tensor (HOST_BITS).
    assert (tensors.bits(moved), tensors.bits(doubled), tensors.bits(squashed)) == (8, 9, 24)
    assert torch.equal(doubled, x.transpose(0, 1).reshape(2, 6) * 2)
    assert counts.float_fallbacks == {"tanh": 12} and tensors.scale(squashed) is not None
    assert torch.allclose(squashed, torch.tanh(doubled), atol=1e-6)


@pytest.mark.parametrize("fmt", ["fp32", "fp16", "bf16"])
def test_in_place_adds_and_muls_compute_and_record_as_their_out_of_place_twins(fmt):
    from accelsim.ref.datapath import DatapathCounts
    from accelsim.ref.vector_mode import VectorFormatMode

    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 8, generator=generator), torch.randn(3, 8, generator=generator)
    counts = DatapathCounts(records=[])
    added, multiplied = a.clone(), a.clone()
    with VectorFormatMode(fmt, counts):
        added += b
        multiplied.mul_(b)
        expected = (a + b, a * b)
    assert torch.equal(added, expected[0]) and torch.equal(multiplied, expected[1])
    checks = [oracle.check_op(kind, out, inputs) for kind, out, inputs in counts.records]
    assert [c.kind for c in checks] == ["add", "mul", "add", "mul"]
    assert sum(c.elements for c in checks) == 4 * 24
    assert sum(c.mismatches for c in checks) == 0  # the in-place target recorded as it was read


def test_int_format_product_with_a_constant_is_checked_by_the_oracle():
    from accelsim.ref.datapath import DatapathCounts
    from accelsim.ref.int_mode import IntFormatMode, IntTensors

    counts, tensors = DatapathCounts(records=[]), IntTensors()
    x = tensors.tensor(np.arange(-600, 600, 7).reshape(4, -1), 0.125, 12)
    with IntFormatMode(counts, tensors):
        scaled = x * 0.3535
    [(kind, product, inputs)] = counts.records
    assert kind == "multiply_by_real" and tensors.scale(scaled) == 0.125
    check = oracle.check_op(kind, product, inputs)
    assert check.elements == x.numel() and check.mismatches == 0
    wrong = product.copy()
    wrong[0, 0] += 1
    assert oracle.check_op(kind, wrong, inputs).mismatches == 1


def test_sqnr_of_noise_on_a_zero_signal_is_minus_infinity_not_a_domain_error():
    zeros = torch.zeros(4)
    assert chip.sqnr_db(zeros, zeros) == math.inf
    assert chip.sqnr_db(zeros, torch.ones(4)) == -math.inf
    assert chip.sqnr_db(torch.full((4,), 10.0), torch.full((4,), 11.0)) == pytest.approx(20.0)


def test_int_format_runs_a_classifier_whose_head_concatenates_on_chip_tensors():
    # DINOv2's head reads cat(CLS token, mean patch token): a torch.cat of on-chip tensors.
    from accelsim.tasks._data import build_task_model

    recipe = load_recipe("w4a4_sp24")
    model = build_task_model("dinov2_tiny", False, 0, 10)
    apply_recipe(model, recipe)
    calibrate(model, zoo_batches("dinov2_tiny", 2, 4), recipe)
    model.eval()
    datapath = Datapath(accumulator_bits=20, integer_requant=True, vector_format="int")
    run = execute.run_int_model(model, export_int_model(model), zoo_batches("dinov2_tiny"),
                                datapath=datapath, record_ops=True)
    assert run.logits.dtype == torch.float32 and run.logits.shape == (2, 10)
    assert torch.isfinite(run.logits).all()
    checks = [oracle.check_op(kind, out, inputs, max_rows=2)
              for kind, out, inputs in run.counts.records]
    assert sum(c.mismatches for c in checks) == 0
    # the concatenated operands carry different scales: requantized once, and counted
    assert run.counts.float_fallbacks.get("cat", 0) > 0
