"""Model surgery: which modules get quantized per family, attention function, calibration."""

from __future__ import annotations

import pytest
import torch
from compress_helpers import synthetic_batch, tiny_bert
from torch import nn

from accelsim import heap
from accelsim.compress.apply import (
    ATTN_QUANT,
    act_quantizers,
    apply_recipe,
    calibrate,
    decay_pruned_weights,
    dropout_rates,
    quant_linears,
    quantized_attention_forward,
    reformat_linear,
    reselect_masks,
    set_dropout_factor,
)
from accelsim.compress.precision import ATTENTION_ATTR, LINEAR_ATTR
from accelsim.compress.quant import QuantLinear, sawb_clip
from accelsim.compress.recipe import load_recipe, recipe_from_dict
from accelsim.compress.sites import BLOCK_SITES, site_of
from accelsim.compress.sparsity import mask_2_4
from accelsim.errors import AccelsimError


def test_bert_encoder_linears_and_attention_are_quantized_head_stays_float() -> None:
    model = tiny_bert()
    plan = apply_recipe(model, load_recipe("w4a4_sp24"))
    per_block = [n for n in plan.quantized_linears if ".layer.0." in n]
    assert sorted(n.rsplit("layer.0.", 1)[1] for n in per_block) == [
        "attention.output.dense", "attention.self.key", "attention.self.query",
        "attention.self.value", "intermediate.dense", "output.dense"]
    assert len(plan.quantized_linears) == 12 and len(plan.attention_modules) == 2
    assert set(plan.float_layers) == {"bert.pooler.dense", "classifier"}
    assert type(model.classifier) is nn.Linear
    assert isinstance(model.bert.encoder.layer[1].output.dense, QuantLinear)
    att = model.bert.encoder.layer[0].attention.self
    assert getattr(att, ATTENTION_ATTR).act_bits == 8
    assert getattr(model.bert.encoder.layer[0].attention.self.query, LINEAR_ATTR).sparsity == "2:4"
    assert model.config._attn_implementation == "accelsim_quant"


def test_compressing_twice_is_refused() -> None:
    from accelsim.errors import AccelsimError

    model = tiny_bert()
    apply_recipe(model, load_recipe("w4a4"))
    with pytest.raises(AccelsimError, match="already compressed with recipe 'w4a4'"):
        apply_recipe(model, load_recipe("w4a4"))


def test_quantize_extra_adds_the_head() -> None:
    recipe = recipe_from_dict({"name": "x", "quantize_extra": ["classifier"]})
    model = tiny_bert()
    plan = apply_recipe(model, recipe)
    assert "classifier" in plan.quantized_linears and isinstance(model.classifier, QuantLinear)


def test_layers_with_k_not_multiple_of_4_stay_dense_and_are_listed() -> None:
    model = tiny_bert(hidden=30)
    plan = apply_recipe(model, load_recipe("w4a4_sp24"))
    assert plan.dense_layers["bert.encoder.layer.0.attention.self.query"] == (
        "K=30 is not a multiple of 4")
    assert "bert.encoder.layer.0.output.dense" not in plan.dense_layers  # K = 60
    assert model.bert.encoder.layer[0].attention.self.query.weight_mask is None


def test_a_model_built_for_tracing_keeps_the_precisions_and_frees_the_weights() -> None:
    """apply_recipe(for_trace=True): every QuantLinear holds the precision the in-memory one
    computes from its codes, its tensors are on the meta device, and the RNG stream is left
    where it was; a training apply keeps drawing the default init (the stream training reads)."""
    recipe = load_recipe("w4a4_sp24")
    model, traced = tiny_bert(), tiny_bert()
    state = torch.get_rng_state()
    apply_recipe(traced, recipe, for_trace=True)
    assert torch.equal(torch.get_rng_state(), state)
    apply_recipe(model, recipe)
    assert not torch.equal(torch.get_rng_state(), state)
    layers = dict(quant_linears(traced))
    assert layers.keys() == dict(quant_linears(model)).keys()
    for name, layer in quant_linears(model):
        assert getattr(layers[name], LINEAR_ATTR) == getattr(layer, LINEAR_ATTR)
        assert all(t.is_meta for t in (*layers[name].parameters(), *layers[name].buffers()))
    assert getattr(layers[name], LINEAR_ATTR).sparsity == "2:4"


def test_a_model_built_for_tracing_hands_freed_layers_back_every_twelve(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The trace build gives the released float layers' pages back to the OS (accelsim.heap)
    after every 12th layer, and a training apply never does; on this machine's glibc the call
    itself succeeds."""
    assert heap._malloc_trim() is not None
    calls: list[int] = []
    monkeypatch.setattr(heap, "_malloc_trim", lambda: calls.append)
    apply_recipe(tiny_bert(), load_recipe("w4a4_sp24"))
    assert calls == []
    apply_recipe(tiny_bert(), load_recipe("w4a4_sp24"), for_trace=True)
    assert calls == [0]  # 12 linears


def test_building_for_tracing_a_recipe_that_calibrates_weights_is_one_line() -> None:
    with pytest.raises(AccelsimError, match="for_trace=True: recipe 'w4a4_sp24_smooth' "
                                            "calibrates weights or masks"):
        apply_recipe(tiny_bert(), load_recipe("w4a4_sp24_smooth"), for_trace=True)


def test_float_recipe_leaves_model_untouched() -> None:
    model = tiny_bert()
    plan = apply_recipe(model, load_recipe("fp32"))
    assert plan.quantized_linears == () and not any(
        isinstance(m, QuantLinear) for m in model.modules())


def test_attention_function_without_quantizers_equals_eager() -> None:
    from transformers.models.bert.modeling_bert import eager_attention_forward

    torch.manual_seed(0)
    module = nn.Module()
    module.eval()
    q, k, v = (torch.randn(2, 2, 5, 4) for _ in range(3))
    mask = torch.zeros(2, 1, 5, 5)
    mask[0, ..., -2:] = torch.finfo(torch.float32).min
    ours = quantized_attention_forward(module, q, k, v, mask, scaling=0.5)
    ref = eager_attention_forward(module, q, k, v, mask, scaling=0.5)
    assert torch.allclose(ours[0], ref[0], atol=1e-6) and torch.allclose(ours[1], ref[1])


def test_calibration_sets_every_clip_and_padding_probs_stay_zero() -> None:
    model = tiny_bert()
    recipe = load_recipe("w4a4_sp24")
    apply_recipe(model, recipe)
    used = calibrate(model, (synthetic_batch(i) for i in range(50)), recipe)
    assert used == recipe.calibration_batches
    quantizers = act_quantizers(model)
    assert len(quantizers) == 12 + 2 * 4 and all(q.is_calibrated for q in quantizers)
    probs_q = getattr(model.bert.encoder.layer[0].attention.self, ATTN_QUANT)["probs"]
    scale, zp = probs_q.qparams()
    assert zp.item() == 0.0 and scale.item() > 0
    model.eval()
    batch = synthetic_batch(7)
    _, probs = quantized_attention_forward(
        model.bert.encoder.layer[0].attention.self, *(torch.randn(16, 2, 8, 16) for _ in range(3)),
        torch.where(batch.inputs["attention_mask"][:, None, None, :] == 1, 0.0,
                    torch.finfo(torch.float32).min))
    assert torch.all(probs[::2, ..., -2:] == 0.0)


def test_dropout_rates_scale_from_the_model_defaults() -> None:
    model = tiny_bert()
    base = dropout_rates(model)
    assert base and set(base.values()) == {0.1}
    set_dropout_factor(model, base, 0.5)
    assert model.bert.encoder.layer[0].attention.self.dropout.p == pytest.approx(0.05)
    set_dropout_factor(model, base, 0.0)
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, nn.Dropout))


def _vit() -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    return ViTForImageClassification(ViTConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        image_size=8, patch_size=4, num_channels=1, num_labels=3))


def _dinov2() -> nn.Module:
    from transformers import Dinov2Config, Dinov2ForImageClassification

    return Dinov2ForImageClassification(Dinov2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2,
        image_size=8, patch_size=4, num_channels=1, num_labels=3))


def _wav2vec2() -> nn.Module:
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    return Wav2Vec2ForSequenceClassification(Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8), conv_stride=(4, 2), conv_kernel=(8, 4), num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2, classifier_proj_size=8, num_labels=3,
        mask_time_prob=0.0))


def _whisper() -> nn.Module:
    from transformers import WhisperConfig, WhisperForAudioClassification

    return WhisperForAudioClassification(WhisperConfig(
        d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32, num_mel_bins=8,
        max_source_positions=8, classifier_proj_size=8, num_labels=3))


# Each tiny model of these families has one encoder block: 6 linears, 1 attention module.
_OTHER_FAMILIES = [
    (_vit, lambda: {"pixel_values": torch.randn(2, 1, 8, 8)}),
    (_dinov2, lambda: {"pixel_values": torch.randn(2, 1, 8, 8)}),
    (_wav2vec2, lambda: {"input_values": torch.randn(2, 200)}),
    (_whisper, lambda: {"input_features": torch.randn(2, 8, 16)}),
]


@pytest.mark.parametrize(("build", "inputs"), _OTHER_FAMILIES)
def test_other_families_compress_and_run(build, inputs) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    model = build()
    model.eval()
    recipe = load_recipe("w4a4_sp24")
    plan = apply_recipe(model, recipe)
    assert len(plan.quantized_linears) == 6 and len(plan.attention_modules) == 1
    batch = type("B", (), {"inputs": inputs(), "labels": None})()
    calibrate(model, [batch], recipe)
    logits = model(**batch.inputs).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    for name in plan.quantized_linears:
        assert getattr(model.get_submodule(name), LINEAR_ATTR).sparsity == "2:4"


@pytest.mark.parametrize(("build", "inputs"),
                         [(tiny_bert, lambda: synthetic_batch(0).inputs), *_OTHER_FAMILIES])
def test_every_encoder_linear_has_one_site_and_takes_its_site_width(build, inputs) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    model = build()
    recipe = load_recipe("w4a4_sp24_ln_a8")
    plan = apply_recipe(model, recipe)
    sites = {name: site_of(name) for name in plan.quantized_linears}
    blocks = list(sites.values()).count("ffn_down")
    assert blocks >= 1
    assert {site: list(sites.values()).count(site) for site in BLOCK_SITES} == {
        "qkv": 3 * blocks, "attn_out": blocks, "ffn_up": blocks, "ffn_down": blocks}
    batch = type("B", (), {"inputs": inputs(), "labels": None})()
    calibrate(model, [batch], recipe)
    for name, site in sites.items():
        precision = getattr(model.get_submodule(name), LINEAR_ATTR)
        assert precision.act_bits == (8 if site in ("qkv", "ffn_up") else 4), name
        assert precision.weight_bits == 4 and precision.sparsity == "2:4"


def test_a_linear_matching_no_site_is_one_line() -> None:
    with pytest.raises(AccelsimError, match=r"linear 'head.proj': input site matches none; an "
                                            r"encoder linear must match exactly one of qkv, "):
        site_of("head.proj")


def test_act_bits_by_site_leaves_extra_linears_at_act_bits() -> None:
    model = tiny_bert()
    recipe = recipe_from_dict({"name": "t", "act_bits_by_site": {"qkv": 8},
                               "quantize_extra": ["classifier"]})
    apply_recipe(model, recipe)
    assert model.classifier.act_quant.bits == 4
    assert model.bert.encoder.layer[0].attention.self.key.act_quant.bits == 8
    assert model.bert.encoder.layer[0].intermediate.dense.act_quant.bits == 4


def test_weight_bits_by_site_sets_that_sites_weight_width_only() -> None:
    model = tiny_bert()
    apply_recipe(model, recipe_from_dict({"name": "t", "weight_bits_by_site": {"qkv": 8},
                                          "quantize_extra": ["classifier"]}))
    block = model.bert.encoder.layer[0]
    assert block.attention.self.query.weight_quant.bits == 8
    assert block.attention.self.query.act_quant.bits == 4
    assert block.intermediate.dense.weight_quant.bits == 4
    assert model.classifier.weight_quant.bits == 4


class _OneLinear(nn.Module):
    """A single 2:4 QuantLinear, called like a model (keyword inputs)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            linear.weight.copy_(weight)
        self.linear = QuantLinear.from_linear(linear, weight_bits=8, act_bits=8, sparse=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def test_activation_weighted_masks_keep_small_weights_on_loud_channels() -> None:
    # One group of 4: |w| ranks channels 1 > 2 > 3 > 0; channel 0's input is 100x louder, so
    # |w| * ||x|| ranks 0 > 1 > 2 > 3 and the mask keeps channels 0 and 1 (magnitude: 1 and 2).
    weight = torch.tensor([[0.1, 0.5, 0.4, 0.3]])
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    x[:, 0] *= 100.0
    batch = type("B", (), {"inputs": {"x": x}, "labels": None})()
    for score, kept in (("magnitude", [0.0, 1.0, 1.0, 0.0]),
                        ("activation_weighted", [1.0, 1.0, 0.0, 0.0])):
        model = _OneLinear(weight)
        if score == "magnitude":
            model.linear.weight_mask.copy_(mask_2_4(weight))  # what apply_recipe does
        recipe = recipe_from_dict({"name": "t", "sparsity": "2:4", "mask_score": score,
                                   "calibration_batches": 1})
        calibrate(model, [batch], recipe)
        assert model.linear.weight_mask.tolist() == [kept], score
        assert model.linear.act_quant.is_calibrated


def test_activation_weighted_masks_are_set_by_calibration_and_stay_2_4() -> None:
    model = tiny_bert()
    recipe = load_recipe("w4a4_sp24_wanda")
    apply_recipe(model, recipe)
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert all(bool((m.weight_mask == 1).all()) for m in layers)  # no scores before calibration
    calibrate(model, [synthetic_batch(seed) for seed in range(2)], recipe)
    assert all(getattr(m, LINEAR_ATTR).sparsity == "2:4" for m in layers)
    assert any(not torch.equal(m.weight_mask, mask_2_4(m.weight)) for m in layers)


def _learning_layer(weight: torch.Tensor, learn_pruned: bool = True) -> QuantLinear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight)
    return QuantLinear.from_linear(linear, weight_bits=8, act_bits=8, sparse=True,
                                   learn_pruned=learn_pruned, mask=mask_2_4(weight))


def test_sr_ste_forward_is_masked_and_gradient_reaches_pruned_weights() -> None:
    weight = torch.tensor([[0.1, 0.5, -0.4, 0.3], [0.2, -0.1, 0.05, 0.6]])
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    gradients = {}
    for learn in (False, True):
        layer = _learning_layer(weight, learn_pruned=learn)
        assert torch.equal(layer.masked_weight(), weight * mask_2_4(weight))
        layer(x).sum().backward()
        gradients[learn] = layer.weight.grad
    pruned = mask_2_4(weight) == 0
    assert bool((gradients[False][pruned] == 0).all())  # the paper's hard mask
    assert bool((gradients[True][pruned] != 0).all())  # SR-STE: pruned weights learn
    assert torch.equal(gradients[True][~pruned], gradients[False][~pruned])


def test_sr_ste_decay_touches_pruned_weights_only() -> None:
    weight = torch.tensor([[0.1, 0.5, -0.4, 0.3]])
    layer = _learning_layer(weight)
    layer.weight.grad = torch.zeros_like(weight)
    decay_pruned_weights(layer, 0.5)
    assert torch.equal(layer.weight.grad, torch.tensor([[0.1, 0.0, 0.0, 0.3]]) * 0.5)


def test_reselect_masks_follows_the_shadows_and_the_input_norms() -> None:
    weight = torch.tensor([[0.1, 0.5, -0.4, 0.3]])  # mask keeps 1 and 2
    layer = _learning_layer(weight)
    with torch.no_grad():
        layer.weight[0, 3] = 0.45  # a pruned shadow grew past a kept weight
    assert reselect_masks(layer) == 0.5  # positions 2 and 3 swapped
    assert layer.weight_mask.tolist() == [[0.0, 1.0, 0.0, 1.0]]
    with torch.no_grad():
        layer.input_norm.copy_(torch.tensor([100.0, 1.0, 1.0, 1.0]))
    reselect_masks(layer)
    assert layer.weight_mask.tolist() == [[1.0, 1.0, 0.0, 0.0]]
    sawb_step = sawb_clip(weight * layer.weight_mask, 8, True) / 127.0
    assert torch.equal(layer.weight_quant.step, sawb_step)  # what eval reads follows the mask


def test_activation_weighted_sr_ste_keeps_the_calibration_norms() -> None:
    model = tiny_bert()
    recipe = recipe_from_dict({"name": "t", "sparsity": "2:4", "pruning": "sr_ste",
                               "mask_score": "activation_weighted", "calibration_batches": 2})
    apply_recipe(model, recipe)
    calibrate(model, [synthetic_batch(seed) for seed in range(2)], recipe)
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert all(m.learn_pruned and not bool((m.input_norm == 1).all()) for m in layers)
    masks = [m.weight_mask.clone() for m in layers]
    assert reselect_masks(model) == 0.0  # unchanged weights: the calibration's masks again
    assert all(torch.equal(a, m.weight_mask) for a, m in zip(masks, layers, strict=True))


def test_sparsegpt_masks_come_with_updated_weights_that_are_exactly_2_4() -> None:
    model = tiny_bert()
    dense = {n: m.weight.detach().clone() for n, m in model.named_modules()
             if isinstance(m, nn.Linear)}
    recipe = recipe_from_dict({"name": "t", "sparsity": "2:4", "mask_score": "sparsegpt",
                               "calibration_batches": 2})
    apply_recipe(model, recipe)
    calibrate(model, [synthetic_batch(seed) for seed in range(2)], recipe)
    for name, layer in quant_linears(model):
        assert torch.equal(layer.weight * (1 - layer.weight_mask), torch.zeros_like(layer.weight))
        assert getattr(layer, LINEAR_ATTR).sparsity == "2:4"
        kept = layer.weight_mask == 1
        assert not torch.equal(layer.weight[kept], dense[name][kept]), name  # reconstructed


def test_reformat_linear_keeps_the_grid_and_prunes_by_magnitude() -> None:
    model = tiny_bert()
    apply_recipe(model, load_recipe("w8a8"))
    name = "bert.encoder.layer.0.intermediate.dense"
    weight = model.get_submodule(name).weight.detach().clone()
    layer = reformat_linear(model, name, weight_bits=4, act_bits=8, sparse=True)
    assert model.get_submodule(name) is layer
    assert (layer.weight_quant.bits, layer.act_quant.bits) == (4, 8)
    assert layer.weight_quant.grid == "zero_preserving"
    assert torch.equal(layer.weight_mask, mask_2_4(weight))
    assert torch.equal(layer.weight, weight)  # the raw weights stay; the mask prunes them


def test_reformat_linear_refuses_what_it_cannot_rebuild() -> None:
    model = tiny_bert(hidden=30)
    apply_recipe(model, load_recipe("w8a8"))
    with pytest.raises(AccelsimError, match=r"query: K=30 is not a multiple of 4, so it "
                                            r"cannot be 2:4$"):
        reformat_linear(model, "bert.encoder.layer.0.attention.self.query", weight_bits=4,
                        act_bits=4, sparse=True)
    with pytest.raises(AccelsimError, match=r"classifier: is a Linear, not a compressed linear"):
        reformat_linear(model, "classifier", weight_bits=4, act_bits=4, sparse=False)
    smoothed = tiny_bert()
    apply_recipe(smoothed, _smoothing_recipe())
    with pytest.raises(AccelsimError, match="a smoothed linear cannot be reformatted"):
        reformat_linear(smoothed, "bert.encoder.layer.0.attention.self.query", weight_bits=4,
                        act_bits=4, sparse=False)


def _smoothing_recipe(**fields: object) -> object:
    return recipe_from_dict({"name": "t", "calibration_batches": 2, "sparsity": "2:4",
                             "smoothing_sites": ["qkv", "ffn_up"], "smoothing_alpha": 0.5,
                             **fields})


def test_smoothing_reparametrizes_the_named_sites_only() -> None:
    model = tiny_bert()
    dense = {n: m.weight.detach().clone() for n, m in model.named_modules()
             if isinstance(m, nn.Linear)}
    recipe = _smoothing_recipe()
    apply_recipe(model, recipe)
    calibrate(model, [synthetic_batch(seed) for seed in range(2)], recipe)
    for name, layer in quant_linears(model):
        factors = layer.act_quant.smoothing
        if site_of(name) not in ("qkv", "ffn_up"):
            assert factors is None and torch.equal(layer.weight, dense[name]), name
            continue
        assert bool(layer.act_quant.smoothing_set) and not torch.equal(factors, torch.ones_like(
            factors)), name
        # w * s / s is the float weight: the float model computes the same function.
        torch.testing.assert_close(layer.weight / factors, dense[name], rtol=1e-6, atol=0.0)
        # Magnitude masks are chosen on the smoothed weights the hardware stores.
        assert torch.equal(layer.weight_mask, mask_2_4(layer.weight)), name
        assert getattr(layer, LINEAR_ATTR).sparsity == "2:4"
    smoothed = [layer for name, layer in quant_linears(model)
                if layer.act_quant.smoothing is not None]
    assert any(not torch.equal(layer.weight_mask, mask_2_4(dense[name]))
               for name, layer in quant_linears(model) if layer in smoothed)


def test_smoothing_follows_the_rule_and_a_second_calibration_keeps_it() -> None:
    weight = torch.tensor([[0.1, 0.5, 0.4, 0.3], [0.2, -0.1, 0.8, 0.05]])
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    x[:, 0] *= 100.0
    batch = type("B", (), {"inputs": {"x": x}, "labels": None})()
    model = _OneLinear(weight)
    model.linear = QuantLinear.from_linear(nn.Linear(4, 2, bias=False), weight_bits=8,
                                           act_bits=8, sparse=True, smoothed=True)
    with torch.no_grad():
        model.linear.weight.copy_(weight)
    recipe = _smoothing_recipe(smoothing_alpha=0.75, calibration_batches=1)
    calibrate(model, [batch], recipe)
    expected = x.abs().amax(0) ** 0.75 / weight.abs().amax(0) ** 0.25
    torch.testing.assert_close(model.linear.act_quant.smoothing, expected)
    torch.testing.assert_close(model.linear.weight, weight * expected)
    before = model.linear.weight.clone()
    calibrate(model, [batch], recipe)
    assert torch.equal(model.linear.weight, before)
    torch.testing.assert_close(model.linear.act_quant.smoothing, expected)


def test_smoothing_shrinks_4bit_error_when_one_channel_is_an_outlier() -> None:
    # A LayerNorm-output-like input: one channel 30x louder than the other 63. Per-tensor 4-bit
    # codes spend their range on it; smoothed codes do not.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 64, generator=g)
    x[:, 3] *= 30.0
    weight = torch.randn(16, 64, generator=g) * 0.1
    batch = type("B", (), {"inputs": {"x": x}, "labels": None})()
    reference = x @ weight.T
    errors = {}
    for sites in ([], ["qkv"]):
        linear = nn.Linear(64, 16, bias=False)
        with torch.no_grad():
            linear.weight.copy_(weight)
        model = _OneLinear(weight)
        model.linear = QuantLinear.from_linear(linear, weight_bits=8, act_bits=4,
                                               smoothed=bool(sites))
        recipe = recipe_from_dict({"name": "t", "calibration_batches": 1,
                                   "smoothing_sites": sites, "smoothing_alpha": 0.5})
        calibrate(model, [batch], recipe)
        with torch.no_grad():
            out = model.eval()(x)
        errors[bool(sites)] = float((out - reference).norm() / reference.norm())
    assert errors[True] < 0.7 * errors[False], errors  # measured: 0.24 vs 0.38
