"""Integer model export: codes equal the fake-quant model, packed layouts, file round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from compress_helpers import synthetic_batch, tiny_bert

from accelsim.compress.apply import apply_recipe, calibrate
from accelsim.compress.export import (
    export_int_model,
    load_int_model,
    pack_fields,
    save_int_model,
    storage_codes,
    unpack_fields,
)
from accelsim.compress.quant import QuantLinear, quantize_codes
from accelsim.compress.recipe import load_recipe, recipe_from_dict
from accelsim.compress.report import compression_report, report_rows
from accelsim.compress.sparsity import decompress_2_4
from accelsim.errors import AccelsimError


def _compressed(recipe_name: str = "w4a4_sp24", hidden: int = 32, **overrides: object):
    recipe = load_recipe(recipe_name)
    if overrides:
        recipe = recipe_from_dict({**vars(recipe), **overrides})
    model = tiny_bert(hidden=hidden)
    apply_recipe(model, recipe)
    calibrate(model, (synthetic_batch(i) for i in range(4)), recipe)
    model.eval()
    return model


def test_pack_fields_hand_example() -> None:
    values = np.array([[1, -1, 7, -8, 3]])
    assert pack_fields(values, 4).tolist() == [[0xF1, 0x87, 0x03]]
    indices = np.array([[0, 1, 2, 3, 1, 3]])
    assert pack_fields(indices, 2).tolist() == [[0b11100100, 0b1101]]
    assert pack_fields(np.array([[-1, 5]]), 8).tolist() == [[255, 5]]
    for bits, signed in ((4, True), (2, False), (8, True)):
        v = values if bits != 2 else indices
        assert np.array_equal(unpack_fields(pack_fields(v, bits), bits, v.shape[1], signed), v)


@pytest.mark.parametrize("overrides", [
    {},
    {"weight_scale_method": "lsq", "weight_granularity": "per_tensor"},
    {"act_quantizer": "symmetric", "weight_bits": 8, "act_bits": 8},
    {"weight_grid": "twos_complement", "sparsity": "dense"},
    {"smoothing_sites": ["ffn_up"]},
])
def test_exported_codes_reproduce_the_fake_quant_layer_bit_for_bit(overrides: dict) -> None:
    model = _compressed(**overrides)
    int_model = export_int_model(model)
    layer = model.bert.encoder.layer[1].intermediate.dense
    exported = int_model.linear("bert.encoder.layer.1.intermediate.dense")
    assert isinstance(layer, QuantLinear)
    w_fake = layer.weight_quant(layer.masked_weight()).detach().numpy()
    assert np.array_equal(exported.dequantized_weight(), w_fake)
    assert exported.weight_codes.dtype == np.int8 and exported.weight_codes.shape == (64, 32)
    assert exported.sparsity == ("dense" if "sparsity" in overrides else "2:4")
    # Activation codes: the exported (smoothing, scale, zero point) through the shared
    # expression give the model's own fake-quantized input exactly.
    x = torch.randn(3, 5, 32) * 2  # intermediate.dense: K = 32
    a = exported.act
    assert (exported.input_smoothing is not None) == ("smoothing_sites" in overrides)
    smoothed = x if exported.input_smoothing is None else x / torch.from_numpy(
        exported.input_smoothing)
    codes = quantize_codes(smoothed, torch.tensor(a.scale, dtype=torch.float32),
                           float(a.zero_point), a.qmin, a.qmax)
    dequant = (codes - a.zero_point) * torch.tensor(a.scale, dtype=torch.float32)
    assert torch.equal(dequant, layer.act_quant(x))


def test_integer_gemm_from_the_file_matches_the_layer() -> None:
    model = _compressed()
    exported = export_int_model(model).linear("bert.encoder.layer.0.attention.self.query")
    layer = model.bert.encoder.layer[0].attention.self.query
    x = torch.randn(4, 32)
    a = exported.act
    qx = np.clip(np.rint(x.numpy() / np.float32(a.scale)) + a.zero_point, a.qmin, a.qmax)
    acc = (qx.astype(np.int64) - a.zero_point) @ exported.weight_codes.astype(np.int64).T
    acc += exported.bias_int32
    y = acc * (np.float64(a.scale) * exported.weight_scale.astype(np.float64))
    expected = layer(x).detach().numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert np.array_equal(exported.bias_int32, np.rint(
        exported.bias.astype(np.float64) / (np.float64(a.scale)
                                            * exported.weight_scale.astype(np.float64))))


def test_sparse_form_and_packing_decode_to_the_codes() -> None:
    for layer in export_int_model(_compressed()).linears:
        assert layer.sparse_values.shape == (layer.n, layer.k // 2)
        assert np.all(np.diff(layer.sparse_indices.reshape(layer.n, -1, 2), axis=-1) > 0)
        dense = decompress_2_4(torch.from_numpy(layer.sparse_values.astype(np.int64)),
                               torch.from_numpy(layer.sparse_indices.astype(np.int64)), layer.k)
        assert np.array_equal(dense.numpy(), layer.weight_codes)
        values = unpack_fields(layer.packed_values, 4, layer.k // 2, signed=True)
        indices = unpack_fields(layer.packed_indices, 2, layer.k // 2, signed=False)
        assert np.array_equal(values, layer.sparse_values)
        assert np.array_equal(indices, layer.sparse_indices)
        assert layer.packed_values.shape == (layer.n, layer.k // 4)
        assert layer.packed_indices.shape == (layer.n, layer.k // 8)


def test_no_zero_grid_exports_odd_codes_and_is_not_2_4() -> None:
    layer = export_int_model(_compressed("w4a4_sp24_no_zero_grid")).linears[0]
    assert np.all(layer.weight_codes % 2 == 1) and layer.sparsity == "dense"
    assert layer.weight_codes.min() >= -15 and layer.weight_codes.max() <= 15
    stored = unpack_fields(layer.packed_codes, 4, layer.k, signed=True)
    assert np.array_equal(stored, storage_codes(layer.weight_codes, "no_zero"))
    assert np.array_equal(2 * stored + 1, layer.weight_codes)


@pytest.mark.parametrize("overrides", [{}, {"smoothing_sites": ["qkv", "ffn_up"]}])
def test_save_load_round_trip(tmp_path: Path, overrides: dict) -> None:
    original = export_int_model(_compressed(**overrides))
    smoothed = [a.name for a in original.linears if a.input_smoothing is not None]
    assert len(smoothed) == (8 if overrides else 0)  # Q, K, V and FFN-up of 2 blocks
    path = save_int_model(original, tmp_path / "m.npz")
    loaded = load_int_model(path)
    assert (loaded.family, loaded.recipe) == ("bert", "w4a4_sp24")
    assert loaded.attentions == original.attentions
    assert loaded.hf_config["hidden_size"] == 32
    for a, b in zip(original.linears, loaded.linears, strict=True):
        assert (a.name, a.k, a.n, a.act, a.sparsity, a.density, a.grid) == (
            b.name, b.k, b.n, b.act, b.sparsity, b.density, b.grid)
        for key in ("weight_codes", "weight_scale", "bias", "bias_int32", "packed_codes",
                    "sparse_values", "sparse_indices", "packed_values", "packed_indices",
                    "input_smoothing"):
            x, y = getattr(a, key), getattr(b, key)
            if x is None and key == "input_smoothing" and a.name not in smoothed:
                assert y is None
                continue
            assert x.dtype == y.dtype and np.array_equal(x, y), key
    assert set(loaded.float_tensors) == set(original.float_tensors)
    assert loaded.float_layers == original.float_layers == ("bert.pooler.dense", "classifier")
    assert "bert.embeddings.word_embeddings.weight" in loaded.float_tensors
    assert not any(".attention.self.query." in k for k in loaded.float_tensors)
    with np.load(path, allow_pickle=False) as raw:  # plain numpy can read it
        assert "linear/bert.encoder.layer.0.attention.self.query/packed_indices" in raw.files


def test_export_errors(tmp_path: Path) -> None:
    with pytest.raises(AccelsimError, match="no quantized layer"):
        export_int_model(tiny_bert())
    model = tiny_bert()
    apply_recipe(model, load_recipe("w4a4"))
    with pytest.raises(AccelsimError, match="never calibrated"):
        export_int_model(model)
    with pytest.raises(AccelsimError, match="does not exist"):
        load_int_model(tmp_path / "missing.npz")


def test_report_exact_bytes_and_headline_ratios() -> None:
    report = compression_report(export_int_model(_compressed()))
    t = report.total
    # 2 blocks x (4 x 32x32 + 2 x 32x64) = 16384 weights.
    assert (t.fp32_bytes, t.fp16_bytes, t.int8_bytes, t.int4_bytes) == (65536, 32768, 16384, 8192)
    assert (t.int4_sp24_bytes, t.int4_sp24_index_bytes, t.exported_bytes) == (4096, 6144, 6144)
    assert report.ratio_to_fp32("int4_bytes") == 8.0
    assert report.ratio_to_fp32("int4_sp24_bytes") == 16.0
    assert report.ratio_to_fp32("int4_sp24_index_bytes") == pytest.approx(32 / 3)
    assert len(report_rows(report)) == 13 and report_rows(report)[-1]["name"] == "TOTAL"
    assert report.float_layers == ("bert.pooler.dense", "classifier")


def test_report_counts_k_not_multiple_of_4_as_dense() -> None:
    report = compression_report(export_int_model(_compressed(hidden=30)))
    by_name = {x.name: x for x in report.layers}
    q = by_name["bert.encoder.layer.0.attention.self.query"]  # 30 x 30, cannot be 2:4
    assert (q.int4_bytes, q.int4_sp24_bytes, q.int4_sp24_index_bytes) == (450, 450, 450)
    assert q.dense_reason == "K=30 is not a multiple of 4" and q.sparsity == "dense"
    assert q.exported_bytes == 30 * 15  # 30 rows of 15 bytes (packed 4-bit codes)
    o = by_name["bert.encoder.layer.0.output.dense"]  # K=60, N=30: 2:4
    assert (o.int4_bytes, o.int4_sp24_bytes, o.int4_sp24_index_bytes) == (900, 450, 675)
    assert o.exported_bytes == 30 * (60 // 4) + 30 * -(-30 // 4)  # values + padded index rows
    assert report.total.int4_sp24_bytes == 2 * (4 * 450 + 900 + 450)


def test_dense_sites_keep_those_linears_dense_in_the_file_the_report_and_the_trace() -> None:
    from accelsim.graph.trace import trace_module

    model = _compressed("w4a4_sp24_wanda", dense_sites=("qkv",))
    report = compression_report(export_int_model(model))
    block = {x.name.split(".layer.0.")[1]: (x.sparsity, x.dense_reason) for x in report.layers
             if ".layer.0." in x.name}
    dense = ("dense", "input site qkv is in the recipe's dense_sites")
    assert block == {"attention.self.query": dense, "attention.self.key": dense,
                     "attention.self.value": dense, "attention.output.dense": ("2:4", ""),
                     "intermediate.dense": ("2:4", ""), "output.dense": ("2:4", "")}
    graph = trace_module(model, synthetic_batch(0).inputs, name="tiny_bert")
    gemms = {g.name: g.sparsity for g in graph.gemms if ".layer." in g.name
             and not g.weight_is_activation}
    qkv = {s for n, s in gemms.items() if n.endswith(("query", "key", "value"))}
    assert qkv == {"dense"} and set(gemms.values()) == {"dense", "2:4"}
    assert sum(s == "2:4" for s in gemms.values()) == len(gemms) - 3 * 2  # 2 blocks
