"""QAT on a chip datapath (accelsim.ref.qat, recipe field ``datapath``): the emulated fake-quant
model computes the integer reference's logits, trains through them, and a recipe selects it."""

import dataclasses

import pytest
import torch
from compress_helpers import accuracy_pct, synthetic_batch, tiny_bert
from zoo_helpers import calibrated_w4a4_sp24, zoo_batches

from accelsim.compress.export import export_int_model
from accelsim.compress.recipe import load_recipe, recipe_from_dict
from accelsim.compress.train import finetune
from accelsim.errors import AccelsimError
from accelsim.ref import chip, execute, qat
from accelsim.ref.datapath import Datapath
from accelsim.tasks.base import Batch

INT_CHIP = Datapath(accumulator_bits=20, integer_requant=True, vector_format="int")


@pytest.fixture(scope="module", params=["bert_tiny", "vit_tiny"])
def compressed(request):
    return request.param, calibrated_w4a4_sp24(request.param)


FLOAT_CHIP = Datapath(accumulator_bits=20, integer_requant=True, vector_format="bf16")


@pytest.mark.parametrize("datapath", [
    INT_CHIP, Datapath(accumulator_bits=12, vector_format="int"), FLOAT_CHIP])
def test_emulated_forward_is_the_integer_reference(compressed, datapath):
    name, model = compressed
    batch = zoo_batches(name, 1, 2, seed=60)
    reference = execute.run_int_model(model, export_int_model(model), batch,
                                      datapath=datapath).logits
    with torch.no_grad():
        plain = execute.output_logits(model(**batch[0].inputs))
        with qat.datapath_emulation(model, datapath) as emulation:
            emulated = execute.output_logits(model(**batch[0].inputs))
    assert torch.equal(emulated, reference)
    assert math_finite(chip.sqnr_db(reference, plain))  # the plain model differs from the chip
    assert emulation.counts.accumulators > 0
    assert (emulation.counts.saturations > 0) == (datapath.accumulator_bits == 12)
    # Outside the block the model is the plain fake-quant model again.
    with torch.no_grad():
        assert torch.equal(execute.output_logits(model(**batch[0].inputs)), plain)


def test_qat_on_calibrated_residual_scales_is_one_line(compressed):
    _, model = compressed
    calibrated = dataclasses.replace(INT_CHIP, residual_scale="calibrated")
    with (pytest.raises(AccelsimError, match=r"^datapath: QAT on residual_scale calibrated: .*"
                                             r"allowed in training: coarser, fitted$"),
          qat.datapath_emulation(model, calibrated)):
        pass


def math_finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")


def test_training_forward_takes_the_chip_values_and_fake_quant_gradients(compressed):
    name, model = compressed
    batch = zoo_batches(name, 1, 2, seed=70)
    reference = execute.run_int_model(model, export_int_model(model), batch,
                                      datapath=INT_CHIP).logits
    model.train()  # no dropout: the zoo's tiny models have none in their attention and blocks
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    try:
        with qat.datapath_emulation(model, INT_CHIP):
            logits = execute.output_logits(model(**batch[0].inputs))
            logits.float().square().mean().backward()
    finally:
        model.eval()
    assert torch.equal(logits.detach(), reference)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert any("weight" in n and g.abs().sum() > 0 for n, g in grads.items())
    assert any(n.endswith((".lo", ".hi")) and g.abs().sum() > 0 for n, g in grads.items())
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize(("datapath", "message"), [
    ({"vector_format": "fp8"}, "datapath: vector format 'fp8' is not one of fp32, fp16, bf16, int"),
    ({"accumulator_bits": 1}, "datapath: accumulator_bits 1; allowed: 2..64"),
    ({"overflow": "clip"}, "datapath: overflow 'clip' is not one of saturate, wrap"),
    ({"width": 3}, "datapath: unknown field 'width'; allowed: accumulator_bits, overflow, "
                   "integer_requant, vector_format, gelu_table_segments, residual_scale"),
    ({"vector_format": "fp16", "residual_scale": "fitted"},
     "datapath: residual_scale fitted needs vector format int \\(the float formats add in "
     "floating point\\), not fp16; allowed with fp16: coarser"),
    ({"vector_format": "bf16", "gelu_table_segments": 64},
     "datapath: gelu_table_segments 64 needs vector format int \\(the float formats evaluate "
     "erf\\), not bf16; allowed with bf16: 0"),
    ([1], "datapath: expected a mapping, got \\[1\\]"),
])
def test_a_bad_datapath_field_is_one_line(datapath, message):
    with pytest.raises(AccelsimError, match=f"^recipe: {message}$"):
        recipe_from_dict({"name": "x", "datapath": datapath})


def test_the_int_datapath_recipe_loads():
    recipe = load_recipe("w4a4_sp24_int_datapath")
    assert Datapath(**recipe.datapath) == Datapath(accumulator_bits=20, overflow="saturate",
                                                   integer_requant=True, vector_format="int")
    assert dataclasses.replace(recipe, datapath={}) == dataclasses.replace(
        load_recipe("w4a4_sp24"), name=recipe.name)


def _train(epoch: int) -> list[Batch]:
    return [synthetic_batch(100 * epoch + i) for i in range(2)]


def _eval() -> list[Batch]:
    return [synthetic_batch(10_000)]


def test_finetune_trains_on_the_recipes_datapath(tmp_path):
    recipe = dataclasses.replace(load_recipe("w4a4_sp24_int_datapath"), fp_epochs=1, epochs=1,
                                 batch_size=16, calibration_batches=2)
    with pytest.raises(AccelsimError, match="emulate_datapath=None"):
        finetune(tiny_bert(seed=0), _train, _eval, accuracy_pct, recipe, seed=1,
                 out_dir=tmp_path / "none")
    result = finetune(tiny_bert(seed=0), _train, _eval, accuracy_pct, recipe, seed=1,
                      out_dir=tmp_path / "int", emulate_datapath=qat.emulate_datapath)
    # The last evaluation ran on the chip: the reference's metric on the same batches.
    model = result.model
    reference = execute.run_int_model(model, export_int_model(model), _eval(),
                                      datapath=Datapath(**recipe.datapath)).logits
    labels = torch.cat([b.labels for b in _eval()])
    assert result.metric == accuracy_pct(reference, labels)
    assert [h.stage for h in result.history] == ["fp", "compress"]
