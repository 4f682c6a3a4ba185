"""Whole-model integer execution vs the fake-quant PyTorch model (tiny BERT, seconds)."""

import dataclasses
import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from accelsim import zoo
from accelsim.cli import main
from accelsim.compress.apply import apply_recipe, calibrate
from accelsim.compress.export import export_int_model, load_int_model, save_int_model
from accelsim.compress.quant import QuantLinear
from accelsim.compress.recipe import recipe_from_dict
from accelsim.errors import AccelsimError
from accelsim.ref import compare, execute
from accelsim.ref.datapath import Datapath
from accelsim.tasks.base import Batch

RECIPES = {
    "w4a4_sp24": {"weight_bits": 4, "act_bits": 4, "attention_bits": 8, "sparsity": "2:4"},
    "w8a8_symmetric_per_tensor": {
        "weight_bits": 8, "act_bits": 8, "attention_bits": 8, "act_quantizer": "symmetric",
        "weight_granularity": "per_tensor", "weight_grid": "twos_complement",
    },
    "w4a4_no_zero_grid": {
        "weight_bits": 4, "act_bits": 4, "attention_bits": 4, "weight_grid": "no_zero",
    },
    "w4a4_sp24_wanda_ln_a8": {
        "weight_bits": 4, "act_bits": 4, "attention_bits": 8, "sparsity": "2:4",
        "mask_score": "activation_weighted", "act_bits_by_site": {"qkv": 8, "ffn_up": 8},
    },
    "w4a4_sp24_smoothed": {
        "weight_bits": 4, "act_bits": 4, "attention_bits": 8, "sparsity": "2:4",
        "smoothing_sites": ["qkv", "ffn_up"], "smoothing_alpha": 0.5,
    },
}


def _batches(count: int, size: int, seed: int, seq_len: int = 16) -> list[Batch]:
    return [
        Batch(
            inputs=zoo.example_inputs("bert_tiny", batch=size, seq_len=seq_len, seed=seed + i),
            labels=torch.zeros(size, dtype=torch.long),
        )
        for i in range(count)
    ]


def _compressed(fields: dict) -> tuple[torch.nn.Module, object]:
    torch.manual_seed(0)
    model = zoo.build_model("bert_tiny", num_labels=3, seed=0)
    with torch.no_grad():  # HF initialises biases to 0; trained models have real ones
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.normal_(0.0, 0.1)
    recipe = recipe_from_dict({"name": "test", "calibration_batches": 2, **fields})
    apply_recipe(model, recipe)
    calibrate(model, _batches(2, 8, seed=100), recipe)
    return model.eval(), export_int_model(model)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models: a second intra-op thread only adds synchronisation on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def sparse_model():
    return _compressed(RECIPES["w4a4_sp24"])


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_integer_accumulators_identical_to_fake_quant(recipe):
    model, int_model = _compressed(RECIPES[recipe])
    report = compare.compare_with_fake_quant(model, int_model, _batches(2, 16, seed=0))
    assert report.mismatches == 0 and report.passed and report.end_to_end_ok, report.verdict()
    assert report.logits_max_abs_diff == 0.0 and report.prediction_agreement_pct == 100.0
    assert all(layer.max_abs_out_err == 0.0 for layer in report.layers if layer.kind == "linear")
    assert report.first_code_flip is None
    kinds = [layer.kind for layer in report.layers]
    assert kinds.count("linear") == 12 and kinds.count("qk") == kinds.count("pv") == 2
    assert all(layer.accumulators > 0 for layer in report.layers)
    linear_sparsity = {layer.sparsity for layer in report.layers if layer.kind == "linear"}
    assert linear_sparsity == ({"2:4"} if "sp24" in recipe else {"dense"})


def test_logits_bit_identical_on_1000_inputs(sparse_model):
    model, int_model = sparse_model
    batches = _batches(4, 250, seed=1000, seq_len=8)
    result = execute.run_int_model(model, int_model, batches)
    with torch.no_grad():
        fq_logits = torch.cat([model(**b.inputs).logits for b in batches])
    assert result.logits.shape == fq_logits.shape == (1000, 3)
    assert torch.equal(result.logits, fq_logits)


def test_int32_bias_mode_is_bit_exact_too(sparse_model):
    model, int_model = sparse_model
    report = compare.compare_with_fake_quant(model, int_model, _batches(1, 8, seed=5),
                                             bias_mode="int32")
    assert report.passed, report.verdict()
    # The rounded int32 bias is not the float bias: logits only within the tolerance.
    assert report.logits_tolerance == compare.LOGITS_RTOL * report.logits_max_abs > 0
    assert report.end_to_end_ok, report.verdict()
    with pytest.raises(AccelsimError, match="bias_mode='fp16' is not one of float, int32"):
        execute.build_int_executor(model, int_model, bias_mode="fp16")


def test_float_bias_verdict_demands_bit_identical_logits():
    report = compare.VerifyReport((), 1e-7, 3.0, 100.0, 10)
    assert report.passed and not report.end_to_end_ok
    assert "OUTSIDE" in report.verdict() and "tolerance 0, bias float" in report.verdict()
    assert dataclasses.replace(report, bias_mode="int32").end_to_end_ok
    assert dataclasses.replace(report, logits_max_abs_diff=0.0).end_to_end_ok


def test_saved_int_model_runs_identically(sparse_model, tmp_path):
    model, int_model = sparse_model
    loaded = load_int_model(save_int_model(int_model, tmp_path / "int_model.npz"))
    batches = _batches(1, 8, seed=7)
    a = execute.run_int_model(model, int_model, batches).logits
    b = execute.run_int_model(model, loaded, batches).logits
    assert torch.equal(a, b)


def test_captured_accumulators_are_the_kernels_int32(sparse_model):
    model, int_model = sparse_model
    result = execute.run_int_model(model, int_model, _batches(2, 4, seed=3),
                                   capture_accumulators=True)
    assert set(result.accumulators) == {layer.name for layer in int_model.linears}
    for layer in int_model.linears:
        accs = result.accumulators[layer.name]
        assert len(accs) == 2 and all(a.dtype == np.int32 and a.shape == (64, layer.n)
                                      for a in accs)


def test_executor_copies_the_model(sparse_model):
    model, int_model = sparse_model
    executor = execute.build_int_executor(model, int_model)
    name = int_model.linears[0].name
    assert isinstance(model.get_submodule(name), QuantLinear)
    assert isinstance(executor.get_submodule(name), execute.IntLinearModule)


def test_corrupted_packed_weights_are_rejected(sparse_model):
    model, int_model = sparse_model
    layer = int_model.linears[0]
    bad_packed = layer.packed_values.copy()
    bad_packed[0, 0] ^= 0x01
    bad = dataclasses.replace(int_model, linears=(dataclasses.replace(
        layer, packed_values=bad_packed), *int_model.linears[1:]))
    with pytest.raises(AccelsimError, match="packed_values decodes to codes that differ") as info:
        execute.build_int_executor(model, bad)
    assert "\n" not in str(info.value)


def test_int_model_of_another_architecture_is_rejected(sparse_model):
    _, int_model = sparse_model
    other = zoo.build_model("bert_tiny", num_labels=3, seed=1)
    renamed = dataclasses.replace(int_model, linears=(dataclasses.replace(
        int_model.linears[0], name="bert.encoder.layer.9.output.dense"),))
    with pytest.raises(AccelsimError, match="is not a module of"):
        execute.build_int_executor(other, renamed)


def test_verify_cli_recipe_passes(capsys, tmp_path):
    out_json = tmp_path / "report.json"
    code = main(["verify", "--model", "bert_tiny", "--recipe", "w4a4_sp24", "--batches", "1",
                 "--batch-size", "4", "--json", str(out_json)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert printed.strip().splitlines()[-1].startswith("PASS: 0 of ")
    assert "encoder.layer.1.attention.self:pv" in printed and out_json.is_file()


def test_verify_logits_are_bit_identical_whatever_torch_threads_the_caller_runs(capsys):
    """The executor's float ops run on one torch thread; the fake-quant forward it is compared
    with must too: wav2vec2's weight-normed positional conv reduces over threads, and at 2
    threads the logits differed by 1e-6."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        code = main(["verify", "--model", "wav2vec2_tiny", "--recipe", "w4a4_sp24",
                     "--batches", "1", "--batch-size", "2"])
    finally:
        torch.set_num_threads(previous)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "logits max |diff| 0 " in printed.strip().splitlines()[-1]


def test_verify_cli_missing_checkpoint_is_one_line(capsys, tmp_path):
    code = main(["verify", "--model", "bert_tiny", "--ckpt", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == 2 and "run.json" in err and err.count("\n") == 1


@pytest.mark.parametrize(("run_json", "expected"), [
    ('{"model": "bert_tiny"', "run.json: not valid JSON (Expecting ',' delimiter, line 1)"),
    ('{"model": "bert_tiny"}', "run.json lacks the model, task, seed, recipe"),
])
def test_verify_cli_damaged_run_json_is_one_line(capsys, tmp_path, run_json, expected):
    for name in ("model.pt", "int_model.npz"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "run.json").write_text(run_json)
    code = main(["verify", "--model", "bert_tiny", "--ckpt", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and err.count("\n") == 1


@pytest.mark.assets("dataset-fashion-mnist")
def test_verify_cli_checkpoint_of_a_task_model(capsys, tmp_path):
    from accelsim.compress.recipe import load_recipe, recipe_to_dict
    from accelsim.tasks import get_task

    task = get_task("fashion_mnist", limit=16, tiny=True)
    model = task.build_model(0)
    recipe = dataclasses.replace(load_recipe("w4a4_sp24"), calibration_batches=1)
    apply_recipe(model, recipe)
    calibrate(model, task.batches("train", 8, 0), recipe)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    save_int_model(export_int_model(model.eval()), tmp_path / "int_model.npz")
    run = {"model": task.backbone, "task": task.name, "seed": 0, "limit": 16, "tiny": True,
           "recipe": recipe_to_dict(recipe)}
    (tmp_path / "run.json").write_text(json.dumps(run))
    code = main(["verify", "--model", task.backbone, "--ckpt", str(tmp_path), "--batches", "1",
                 "--batch-size", "4"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "PASS: 0 of " in printed and ":qk" in printed
    wrong = main(["verify", "--model", "bert_tiny", "--ckpt", str(tmp_path)])
    assert wrong == 2 and "was compressed from 'dinov2_tiny'" in capsys.readouterr().err


def test_a_wrong_weight_code_is_reported_as_mismatch():
    model, int_model = _compressed(RECIPES["w8a8_symmetric_per_tensor"])
    layer = int_model.linears[4]
    codes = layer.weight_codes.copy()
    codes[3, 5] = 1 if codes[3, 5] != 1 else 2  # one code of one output channel
    bad = dataclasses.replace(layer, weight_codes=codes, packed_codes=codes.view(np.uint8))
    linears = tuple(bad if x is layer else x for x in int_model.linears)
    report = compare.compare_with_fake_quant(
        model, dataclasses.replace(int_model, linears=linears), _batches(1, 4, seed=0))
    broken = {x.name: x for x in report.layers}[layer.name]
    assert not report.passed and report.mismatches == broken.mismatches > 0
    assert broken.max_abs_acc_diff > 0
    assert report.verdict().startswith(f"FAIL: {broken.mismatches} of ")


def test_padded_sequences_match(sparse_model):
    model, int_model = sparse_model
    batches = _batches(1, 8, seed=11)
    mask = batches[0].inputs["attention_mask"].clone()
    mask[:, 10:] = 0  # padding: the additive mask must reach the integer scores too
    padded = [Batch(inputs={**batches[0].inputs, "attention_mask": mask},
                    labels=batches[0].labels)]
    report = compare.compare_with_fake_quant(model, int_model, padded)
    assert report.passed and report.end_to_end_ok, report.verdict()
    unpadded = execute.run_int_model(model, int_model, batches).logits
    assert not torch.equal(execute.run_int_model(model, int_model, padded).logits, unpadded)


def test_accumulator_width_is_enforced_and_counted(sparse_model):
    model, int_model = sparse_model
    batches = _batches(1, 8, seed=3)
    wide = execute.run_int_model(model, int_model, batches,
                                 datapath=Datapath(accumulator_bits=32))
    exact = execute.run_int_model(model, int_model, batches)
    assert wide.counts.saturations == 0 and wide.counts.accumulators > 0
    assert torch.equal(wide.logits, exact.logits)
    for overflow in ("saturate", "wrap"):
        narrow = execute.run_int_model(model, int_model, batches, capture_accumulators=True,
                                       datapath=Datapath(accumulator_bits=10, overflow=overflow))
        assert narrow.counts.accumulators == wide.counts.accumulators
        assert 0 < narrow.counts.saturations < narrow.counts.accumulators
        assert all(int(acc.min()) >= -512 and int(acc.max()) <= 511
                   for accs in narrow.accumulators.values() for acc in accs)
        assert not torch.equal(narrow.logits, exact.logits)


def test_int_format_input_wider_than_int32_is_one_line_not_a_wrap(sparse_model):
    _, int_model = sparse_model
    layer = execute.IntLinearModule(int_model.linears[0])
    inside = np.full((2, layer.layer.k), 2**31 - 1, dtype=np.int64)
    assert layer.int_input_codes(inside, 1e-9).shape == inside.shape
    with pytest.raises(AccelsimError, match=r"int-format input spans \[.*2147483648\]; the "
                       "input requantizer takes int32"):
        layer.int_input_codes(inside + 1, 1e-9)


def test_operand_projections_requantize_with_the_int32_bias(sparse_model):
    model, int_model = sparse_model
    feeds = execute.operand_projections(int_model)
    assert {name.rsplit(".", 1)[1] for name in feeds} == {"query", "key", "value"}
    assert len(feeds) == 3 * len(int_model.attentions)
    executor = execute.build_int_executor(model, int_model,
                                          datapath=Datapath(integer_requant=True))
    name = "bert.encoder.layer.0.attention.self.key"
    layer = executor.get_submodule(name)
    assert layer.requant_to is feeds[name] and feeds[name] is int_model.attentions[0].k
    x = torch.randn(5, layer.layer.k)
    out = layer(x).numpy()
    # Independent: exact rationals, round half up, of (acc + bias_int32) * s_a * s_w / s_k.
    acc = layer.accumulate(x.numpy(), with_bias=True)
    k = feeds[name]
    ratio = [Fraction(float(np.float64(layer.layer.act.scale) * np.float64(s)
                            / np.float64(k.scale))) for s in layer.layer.weight_scale]
    codes = [[min(max(k.zero_point + math.floor(int(a) * ratio[j] + Fraction(1, 2)), k.qmin),
                  k.qmax) for j, a in enumerate(row)] for row in acc]
    recovered = np.rint(out / np.float32(k.scale)) + k.zero_point
    assert recovered.astype(int).tolist() == codes
    # Float path: dequantize, float bias, quantize again; the integer path is within one code.
    float_codes = execute.quantize_act(torch.from_numpy(layer.dequantize(
        layer.accumulate(x.numpy()))), k)
    assert np.abs(float_codes.astype(int) - np.array(codes)).max() <= 1


def test_whisper_scaled_query_is_not_requantized_directly():
    int_model = dataclasses.replace(_compressed(RECIPES["w4a4_sp24"])[1], family="whisper")
    names = {name.rsplit(".", 1)[1] for name in execute.operand_projections(int_model)}
    assert names == {"key", "value"}


def test_datapath_of_a_float_mac_array_is_one_line():
    from accelsim.hw import load_hw
    hw = load_hw("hw_configs/fp16_dense.yaml")
    with pytest.raises(AccelsimError, match=r"precision\.kind: 'fp'; the integer reference runs "
                                            r"integer MAC arrays only; allowed: int"):
        Datapath.of_hw(hw)
    chip = Datapath.of_hw(load_hw("hw_configs/int4_sparse.yaml"))
    assert chip == Datapath(accumulator_bits=20, overflow="saturate", integer_requant=True,
                            vector_format="fp16")


@pytest.mark.parametrize(("fields", "message"), [
    ({"overflow": "clip"}, "datapath: overflow 'clip' is not one of saturate, wrap"),
    ({"vector_format": "fp8"}, "datapath: vector format 'fp8' is not one of fp32, fp16, bf16, int"),
    ({"accumulator_bits": 1}, "datapath: accumulator_bits 1; allowed: 2..64"),
    ({"accumulator_bits": 65}, "datapath: accumulator_bits 65; allowed: 2..64"),
])
def test_a_bad_datapath_is_one_line(fields, message):
    with pytest.raises(AccelsimError, match=f"^{message}$"):
        Datapath(**fields)
