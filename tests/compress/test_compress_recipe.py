"""Recipes: shipped files load, bad input gives one line each, schedules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from accelsim.compress.apply import apply_recipe
from accelsim.compress.recipe import (
    available_recipes,
    dropout_factor,
    load_recipe,
    lr_factor,
    pruned_fraction,
    recipe_from_dict,
    recipe_to_dict,
    same_recipe,
)
from accelsim.compress.sites import stack_of
from accelsim.errors import AccelsimError

EXPECTED = {"fp32", "w8a8", "w4a4", "w4a4_sp24", "w4a4_sp24_no_zero_grid",
            "w4a4_sp24_const_dropout", "w4a4_sp24_init_pretrained"}


# The recognizer's recipes (docs/asr.md, "Where 4 bits cost").
WHISPER_QKV_W8_A4 = {"weight_bits_by_site": {"qkv": 8}, "mask_score": "activation_weighted",
                     "calibration_percentiles": (0.0, 100.0), "families": ("whisper",)}
WHISPER_QKV_W8 = {**WHISPER_QKV_W8_A4, "act_bits": 8}


def test_shipped_recipes_load_and_differ_only_where_the_ablation_says() -> None:
    assert set(available_recipes()) >= EXPECTED
    base = load_recipe("w4a4_sp24")
    assert (base.weight_bits, base.act_bits, base.sparsity) == (4, 4, "2:4")
    assert base.weight_grid == "zero_preserving" and base.init == "finetuned"
    assert base.dropout_schedule == "ramp"
    diffs = {
        "w4a4_sp24_no_zero_grid": {"weight_grid": "no_zero"},
        "w4a4_sp24_const_dropout": {"dropout_schedule": "constant"},
        "w4a4_sp24_init_pretrained": {"init": "pretrained"},
        "w4a4": {"sparsity": "dense"},
        "w4a4_sp24_kd": {"distill_weight": 0.5},
        "w4a4_sp24_wanda": {"mask_score": "activation_weighted"},
        "w4a4_sp24_ln_a8": {"act_bits_by_site": {"qkv": 8, "ffn_up": 8}},
        "w4a4_sp24_wanda_ln_a8": {"mask_score": "activation_weighted",
                                  "act_bits_by_site": {"qkv": 8, "ffn_up": 8}},
        "w4a8_sp24": {"act_bits": 8},
        "w4a8_sp24_wanda_qkv_w8": WHISPER_QKV_W8,
        "w4a8_sp24_wanda_qkv_w8_kd": {**WHISPER_QKV_W8, "distill_weight": 0.5},
        "w4a8_sp24_wanda_qkv_w8_dense": {**WHISPER_QKV_W8, "dense_sites": ("qkv",)},
        "w4a8_sp24_wanda_qkv_w8_attn_dense": {**WHISPER_QKV_W8,
                                              "dense_sites": ("qkv", "attn_out")},
        "w4a8_sp24_wanda_qkv_w8_attn_dense_head_w8": {
            **WHISPER_QKV_W8, "weight_bits_by_site": {"qkv": 8, "lm_head": 8},
            "dense_sites": ("qkv", "attn_out", "lm_head")},
        "w4a8_sp24_wanda_qkv_w8_attn_dense_head_dense": {
            **WHISPER_QKV_W8, "dense_sites": ("qkv", "attn_out", "lm_head")},
        "w4a8_sp24_sparsegpt_qkv_w8_attn_dense_head_dense": {
            **WHISPER_QKV_W8, "mask_score": "sparsegpt",
            "dense_sites": ("qkv", "attn_out", "lm_head")},
        "w4a8_sp24_sparsegpt_qkv_w8_attn_dense_head_dense_enc_dense": {
            **WHISPER_QKV_W8, "mask_score": "sparsegpt", "dense_sites": (
                "qkv", "attn_out", "lm_head", "encoder.ffn_up", "encoder.ffn_down")},
        "w4a8_sp24_sparsegpt_qkv_w8_attn_dense_head_dense_dec_dense": {
            **WHISPER_QKV_W8, "mask_score": "sparsegpt", "dense_sites": (
                "qkv", "attn_out", "lm_head", "decoder.ffn_up", "decoder.ffn_down")},
        "w4a8_sp24_sparsegpt_qkv_w8_attn_dense_head_dense_dec_dense_kd": {
            **WHISPER_QKV_W8, "mask_score": "sparsegpt", "distill_weight": 0.5, "dense_sites": (
                "qkv", "attn_out", "lm_head", "decoder.ffn_up", "decoder.ffn_down")},
        "w4a8_sp24_sparsegpt_qkv_w8_attn_dense_head_dense_kd": {
            **WHISPER_QKV_W8, "mask_score": "sparsegpt", "distill_weight": 0.5,
            "dense_sites": ("qkv", "attn_out", "lm_head")},
        "w4a8_sp24_wanda_qkv_w8_attn_dense_head_dense_sr_ste": {
            **WHISPER_QKV_W8, "pruning": "sr_ste", "mask_update_steps": 1,
            "dense_sites": ("qkv", "attn_out", "lm_head")},
        "w4a8_sp24_sparsegpt_qkv_w8_attn_dense": {
            **WHISPER_QKV_W8, "mask_score": "sparsegpt", "dense_sites": ("qkv", "attn_out")},
        "w4a8_qkv_w8": {"weight_bits_by_site": {"qkv": 8}, "act_bits": 8, "sparsity": "dense",
                        "calibration_percentiles": (0.0, 100.0), "families": ("whisper",)},
        "w4a4_sp24_wanda_qkv_w8a8_down_a8": {**WHISPER_QKV_W8_A4,
                                             "act_bits_by_site": {"qkv": 8, "ffn_down": 8}},
        "w8a8_kd_unlabeled": {"weight_bits": 8, "act_bits": 8, "sparsity": "dense",
                              "distill_weight": 0.5, "distill_unlabeled": 2},
        "w4a4_sp24_sr_ste": {"pruning": "sr_ste", "mask_update_steps": 1},
        "w4a4_sp24_sparsegpt": {"mask_score": "sparsegpt"},
        "w4a4_sp24_hidden_kd": {"distill_hidden_weight": 1.0},
        "w4a4_sp24_kd_unlabeled": {"distill_weight": 0.5, "distill_unlabeled": 2},
        "w4a4_sp24_wanda_kd_unlabeled": {"distill_weight": 0.5, "distill_unlabeled": 2,
                                         "mask_score": "activation_weighted"},
        "w4a4_sp24_wanda_ln_a8_kd_unlabeled": {"distill_weight": 0.5, "distill_unlabeled": 2,
                                               "mask_score": "activation_weighted",
                                               "act_bits_by_site": {"qkv": 8, "ffn_up": 8}},
        "w4a4_sp24_wanda_ln_a8_hidden_kd": {"distill_hidden_weight": 1.0,
                                            "mask_score": "activation_weighted",
                                            "act_bits_by_site": {"qkv": 8, "ffn_up": 8}},
        "w4a4_sp24_sparsegpt_ln_a8": {"mask_score": "sparsegpt",
                                      "act_bits_by_site": {"qkv": 8, "ffn_up": 8}},
        "w4a4_sp24_wanda_ln_a8_sr_ste": {"pruning": "sr_ste", "mask_update_steps": 1,
                                         "mask_score": "activation_weighted",
                                         "act_bits_by_site": {"qkv": 8, "ffn_up": 8}},
    }
    smooth = {"smoothing_sites": ("qkv", "ffn_up"), "smoothing_alpha": 0.7}
    diffs |= {
        "w4a4_sp24_smooth": smooth,
        "w4a4_sp24_wanda_smooth": {**smooth, "mask_score": "activation_weighted"},
        "w4a4_sp24_sparsegpt_smooth": {**smooth, "mask_score": "sparsegpt"},
        "w4a4_sp24_sparsegpt_smooth_kd_unlabeled": {**smooth, "mask_score": "sparsegpt",
                                                    "distill_weight": 0.5,
                                                    "distill_unlabeled": 2},
    }
    for name, fields in diffs.items():
        other = load_recipe(name)
        changed = {k: v for k, v in vars(other).items() if k != "name" and vars(base)[k] != v}
        assert changed == fields, name
    assert load_recipe("w8a8").weight_bits == 8 and not load_recipe("fp32").quantized


def _one_line(exc: pytest.ExceptionInfo[AccelsimError]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_unknown_field_is_one_line() -> None:
    with pytest.raises(AccelsimError) as exc:
        recipe_from_dict({"name": "x", "weight_bitz": 4}, "r.yaml")
    assert "r.yaml: unknown field 'weight_bitz'" in _one_line(exc)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"distill_weight": 1.5}, "distill_weight: 1.5 must be in [0, 1] (0 = no distillation)"),
        ({"distill_weight": 0.5, "distill_temperature": 0.0}, "distill_temperature: 0.0 must be"),
        ({"distill_weight": 0.5, "init": "pretrained"}, "needs a quantized recipe with init: "),
        ({"distill_weight": 0.5, "weight_bits": 32, "act_bits": 32}, "needs a quantized recipe"),
        ({"distill_hidden_weight": -1.0}, "distill_hidden_weight: -1.0 must be >= 0 (0 = off)"),
        ({"distill_unlabeled": -1}, "distill_unlabeled: -1 must be >= 0 (0 = off)"),
        ({"distill_unlabeled": 2}, "distill_unlabeled > 0 needs distill_weight > 0"),
        ({"distill_hidden_weight": 1.0, "init": "pretrained"},
         "distill_weight or distill_hidden_weight > 0 needs a quantized recipe with init: "),
    ],
)
def test_bad_distillation_is_one_line(fields: dict, message: str) -> None:
    with pytest.raises(AccelsimError) as exc:
        recipe_from_dict({"name": "x", **fields}, "r.yaml")
    assert message in _one_line(exc)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"act_bits_by_site": {"qkvo": 8}},
         "act_bits_by_site: site 'qkvo' is not one of qkv, attn_out, ffn_up, ffn_down, lm_head"),
        ({"act_bits_by_site": {"qkv": 6}}, "act_bits_by_site: qkv: 6 is not one of 4, 8"),
        ({"act_bits_by_site": {"qkv": "8"}}, "act_bits_by_site: expected an integer, got '8'"),
        ({"act_bits_by_site": [8]}, "act_bits_by_site: expected a mapping, got [8]"),
        ({"act_bits_by_site": {"qkv": 8}, "weight_bits": 32, "act_bits": 32},
         "act_bits_by_site needs quantized activations"),
        ({"weight_bits_by_site": {"ffn": 8}},
         "weight_bits_by_site: site 'ffn' is not one of qkv, attn_out, ffn_up, ffn_down"),
        ({"weight_bits_by_site": {"qkv": 2}}, "weight_bits_by_site: qkv: 2 is not one of 4, 8"),
        ({"weight_bits_by_site": {"qkv": 8}, "weight_bits": 32, "act_bits": 32},
         "weight_bits_by_site needs quantized weights (weight_bits 4 or 8), got 32"),
        ({"sparsity": "2:4", "mask_score": "activation_weighted", "pruning": "gradual"},
         "mask_score: 'activation_weighted' needs pruning: one_shot or sr_ste"),
        ({"sr_ste_decay": -1e-4}, "sr_ste_decay: -0.0001 must be >= 0"),
        ({"pruning": "sr-ste"}, "pruning: 'sr-ste' is not one of one_shot, gradual, sr_ste"),
        ({"mask_score": "hessian"},
         "mask_score: 'hessian' is not one of magnitude, activation_weighted, sparsegpt"),
        ({"sparsity": "2:4", "mask_score": "sparsegpt", "pruning": "sr_ste"},
         "mask_score: 'sparsegpt' needs pruning: one_shot"),
        ({"smoothing_sites": ["ln"]},
         "smoothing_sites: site 'ln' is not one of qkv, attn_out, ffn_up, ffn_down"),
        ({"smoothing_sites": "qkv"}, "smoothing_sites: expected a list, got 'qkv'"),
        ({"smoothing_sites": ["qkv"], "weight_bits": 32, "act_bits": 32},
         "smoothing_sites needs quantized activations"),
        ({"smoothing_alpha": 1.5}, "smoothing_alpha: 1.5 must be in [0, 1]"),
        ({"sparsity": "2:4", "dense_sites": ["attn"]},
         "dense_sites: 'attn' is not a site (qkv, attn_out, ffn_up, ffn_down, lm_head) or a "
         "site in one stack (encoder.<site> or decoder.<site>)"),
        ({"sparsity": "2:4", "dense_sites": ["middle.ffn_up"]},
         "dense_sites: 'middle.ffn_up' is not a site"),
        ({"sparsity": "2:4", "dense_sites": ["decoder.fc1"]},
         "dense_sites: 'decoder.fc1' is not a site"),
        ({"dense_sites": ["qkv"]}, "dense_sites needs sparsity: '2:4'"),
    ],
)
def test_bad_mixed_precision_or_mask_score_is_one_line(fields: dict, message: str) -> None:
    with pytest.raises(AccelsimError) as exc:
        recipe_from_dict({"name": "x", **fields}, "r.yaml")
    assert message in _one_line(exc)


def test_mixed_precision_recipe_round_trips_through_a_checkpoint() -> None:
    recipe = load_recipe("w4a4_sp24_ln_a8")
    saved = recipe_to_dict(recipe)
    assert saved["act_bits_by_site"] == {"qkv": 8, "ffn_up": 8}
    assert recipe_from_dict(saved) == recipe and same_recipe(saved, recipe)
    assert not same_recipe(saved, dataclasses.replace(recipe, act_bits_by_site={"qkv": 8}))
    assert hash(recipe) == hash(load_recipe("w4a4_sp24_ln_a8"))


def test_checkpoint_recipe_written_before_a_field_existed_still_matches() -> None:
    kd = load_recipe("w4a4_sp24_kd")
    base = load_recipe("w4a4_sp24")
    older = {k: v for k, v in recipe_to_dict(base).items() if not k.startswith("distill_")}
    assert same_recipe(recipe_to_dict(base), base) and same_recipe(older, base)
    assert not same_recipe(older, kd)  # the absent field stood for its default, not 0.5
    assert not same_recipe({**recipe_to_dict(base), "retired_field": 1}, base)
    assert not same_recipe({**older, "lr": 1.0}, base)


def test_checkpoint_recipe_matches_by_training_fields_not_by_name() -> None:
    base = load_recipe("w4a4_sp24")
    renamed = recipe_to_dict(dataclasses.replace(base, name="w4a4_sp24_qat3"))
    assert same_recipe(renamed, base)
    assert not same_recipe({**renamed, "epochs": 6}, base)


def test_unsupported_bit_width_is_one_line() -> None:
    with pytest.raises(AccelsimError) as exc:
        recipe_from_dict({"name": "x", "weight_bits": 3}, "r.yaml")
    assert "weight_bits: 3 is not a supported bit width; allowed: 4, 8, 32" in _one_line(exc)


def test_family_the_recipe_cannot_apply_to_is_one_line() -> None:
    from transformers import T5Config, T5Model

    with pytest.raises(AccelsimError) as exc:
        apply_recipe(T5Model(T5Config(num_layers=1, d_model=8, d_kv=4, d_ff=8, num_heads=2,
                                      vocab_size=16)), load_recipe("w4a4"))
    assert ("'t5' is not supported; allowed: bert, dinov2, vit, wav2vec2, whisper, gpt2, opt, "
            "llama") in _one_line(exc)


def test_family_excluded_by_recipe_is_one_line() -> None:
    from compress_helpers import tiny_bert

    recipe = recipe_from_dict({"name": "vit_only", "families": ["vit"]})
    with pytest.raises(AccelsimError) as exc:
        apply_recipe(tiny_bert(), recipe)
    assert "model family 'bert' is not covered; this recipe applies to vit" in _one_line(exc)


def test_bad_choice_and_type_and_duplicate_key(tmp_path: Path) -> None:
    with pytest.raises(AccelsimError, match="weight_grid: 'nf4' is not one of"):
        recipe_from_dict({"name": "x", "weight_grid": "nf4"})
    with pytest.raises(AccelsimError, match="epochs: expected an integer"):
        recipe_from_dict({"name": "x", "epochs": "three"})
    with pytest.raises(AccelsimError, match="both must be 32"):
        recipe_from_dict({"name": "x", "weight_bits": 4, "act_bits": 32})
    path = tmp_path / "dup.yaml"
    path.write_text("name: x\nweight_bits: 4\nweight_bits: 8\n")
    with pytest.raises(AccelsimError, match="duplicate field 'weight_bits'"):
        load_recipe(path)
    with pytest.raises(AccelsimError, match="unknown name 'w4a3'"):
        load_recipe("w4a3")


def test_dropout_schedules() -> None:
    ramp = load_recipe("w4a4_sp24")
    assert dropout_factor(ramp, 0.0) == 0.0
    assert dropout_factor(ramp, 0.25) == pytest.approx(0.5)
    assert dropout_factor(ramp, 0.5) == 1.0 and dropout_factor(ramp, 1.0) == 1.0
    const = load_recipe("w4a4_sp24_const_dropout")
    assert {dropout_factor(const, t) for t in (0.0, 0.3, 1.0)} == {1.0}


def test_pruned_fraction_one_shot_vs_gradual() -> None:
    assert pruned_fraction(load_recipe("w4a4_sp24"), 0.0) == 1.0
    gradual = recipe_from_dict({"name": "g", "sparsity": "2:4", "pruning": "gradual",
                                "prune_ramp_fraction": 0.5})
    assert pruned_fraction(gradual, 0.0) == 0.0 and pruned_fraction(gradual, 0.5) == 1.0


def test_lr_factor_warmup_then_linear_decay() -> None:
    assert [lr_factor(s, 10, 0.2) for s in range(10)] == pytest.approx(
        [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])


def test_dense_sites_may_name_a_site_in_one_stack() -> None:
    recipe = recipe_from_dict({"name": "x", "sparsity": "2:4",
                               "dense_sites": ["qkv", "decoder.ffn_up"]}, "r.yaml")
    assert recipe.dense_sites == ("qkv", "decoder.ffn_up")
    assert stack_of("whisper.model.decoder.layers.0.fc1") == "decoder"
    assert stack_of("transformer.h.0.mlp.c_fc") is None
    assert not recipe.sparse_at("ffn_up", "decoder")
    assert recipe.sparse_at("ffn_up", "encoder")
    assert not recipe.sparse_at("qkv", "encoder")
    assert recipe.sparse_at("ffn_up")

