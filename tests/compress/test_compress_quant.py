"""Quantizers: the shared expression, grids, SAWB/LSQ steps, PACT clips, STE gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from accelsim.compress import quant
from accelsim.compress.quant import (
    ActQuantizer,
    QuantLinear,
    WeightQuantizer,
    fake_quantize,
    frozen_quantizers,
    percentile_pair,
    quantize_codes,
    round_ste,
    sawb_clip,
)
from accelsim.compress.sparsity import mask_2_4


def test_quantize_codes_rounds_half_to_even_with_true_division() -> None:
    scale = torch.tensor(0.5)
    x = torch.tensor([0.25, 0.75, 1.25, -0.25, -0.75, 100.0, -100.0])
    codes = quantize_codes(x, scale, 0.0, -7, 7)
    # x / 0.5 = 0.5, 1.5, 2.5, -0.5, -1.5 -> 0, 2, 2, -0, -2 (ties to even), then saturation.
    assert codes.tolist() == [0.0, 2.0, 2.0, 0.0, -2.0, 7.0, -7.0]


def test_quantize_codes_matches_numpy_mirror_on_near_ties() -> None:
    """The numpy mirror the integer reference uses: rint(float32(x) / float32(s))."""
    rng = np.random.default_rng(0)
    scales = rng.uniform(0.01, 2.0, 64).astype(np.float32)
    k = rng.integers(-7, 7, 64).astype(np.float32)
    ties = (k + np.float32(0.5)) * scales
    x = np.concatenate([ties, np.nextafter(ties, np.inf), np.nextafter(ties, -np.inf)])
    s = np.concatenate([scales] * 3)
    expected = np.clip(np.rint(x / s) + 3, 0, 15)
    got = quantize_codes(torch.from_numpy(x), torch.from_numpy(s), 3.0, 0, 15).numpy()
    np.testing.assert_array_equal(got, expected)


def test_round_ste_forward_is_bit_identical_to_round() -> None:
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -2.5, 0.49999997, 1e-30, 123456.5, -7.5])
    assert torch.equal(round_ste(x), torch.round(x))


def test_fake_quantize_ste_gradient_is_one_inside_zero_outside() -> None:
    x = torch.tensor([-10.0, -0.3, 0.0, 0.8, 3.49, 10.0], requires_grad=True)
    y = fake_quantize(x, torch.tensor(0.5), 0.0, -7, 7)
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    dq = quantize_codes(x.detach(), torch.tensor(0.5), 0.0, -7, 7) * 0.5
    assert torch.equal(y.detach(), dq)


def test_zero_preserving_grid_has_15_levels_and_keeps_zero() -> None:
    torch.manual_seed(0)
    w = torch.randn(8, 64)
    w[:, ::4] = 0.0
    q = WeightQuantizer(8, 4, "zero_preserving", "per_tensor")
    q.init_step(w)
    q.eval()
    out = q(w)
    assert torch.all(out[:, ::4] == 0.0)
    levels = torch.unique(out)
    assert len(levels) <= 15 and 0.0 in levels.tolist()
    codes, scale = q.export_codes(w)
    assert codes.min() >= -7 and codes.max() <= 7
    assert torch.equal(codes * scale.reshape(-1, 1), out)


def test_twos_complement_grid_reaches_minus_8() -> None:
    w = torch.tensor([[-1.0, -0.5, 0.0, 0.9]])
    q = WeightQuantizer(1, 4, "twos_complement", "per_tensor")
    q.step.fill_(1.0 / 7)
    codes, _ = q.export_codes(w * 1.2)
    assert codes.tolist() == [[-8.0, -4.0, 0.0, 7.0]]


def test_no_zero_grid_has_no_zero_level() -> None:
    w = torch.tensor([[0.0, 0.01, -0.01, 1.0, -1.0, 0.3]])
    q = WeightQuantizer(1, 4, "no_zero", "per_tensor")
    q.step.fill_(1.0 / 7.5)
    q.eval()
    out = q(w)
    assert not torch.any(out == 0.0)
    step = 1.0 / 7.5
    assert out[0, 0].item() == pytest.approx(step / 2)  # exact 0 becomes +s/2
    assert out[0, 3].item() == pytest.approx(7.5 * step) and out[0, 4].item() == pytest.approx(
        -7.5 * step)
    codes, scale = q.export_codes(w)
    assert torch.all(codes.remainder(2) == 1)  # odd codes 2i+1
    assert torch.equal(codes * scale, out)


def test_sawb_matches_formula_and_is_clamped() -> None:
    w = torch.tensor([[1.0, -2.0, 3.0, -4.0], [0.0, 0.0, 0.0, 5.0]])
    alpha = sawb_clip(w, 4, per_channel=True)
    row0 = 12.035 * (30 / 4) ** 0.5 - 12.03 * 2.5  # 2.885...
    assert alpha[0, 0].item() == pytest.approx(row0, rel=1e-6)
    # Row 1: 12.035*2.5 - 12.03*1.25 = 15.05 > max|w| = 5, clamped to 5.
    assert alpha[1, 0].item() == pytest.approx(5.0)
    assert sawb_clip(w, 4, per_channel=False).shape == (1, 1)


def test_sawb_step_follows_weights_in_training_only() -> None:
    w = torch.randn(4, 16)
    q = WeightQuantizer(4, 4)
    q.init_step(w)
    before = q.step.clone()
    q.eval()
    q(w * 3)
    assert torch.equal(q.step, before)
    q.train()
    q(w * 3)
    assert torch.allclose(q.step, before * 3)


def test_lsq_step_learns_with_scaled_gradient() -> None:
    torch.manual_seed(0)
    w = torch.randn(4, 16)
    q = WeightQuantizer(4, 4, method="lsq")
    q.init_step(w)
    assert isinstance(q.step, torch.nn.Parameter)
    q(w).pow(2).sum().backward()
    assert q.step.grad is not None and torch.all(q.step.grad != 0)
    grad_scaled = q.step.grad.clone()
    q.step.grad = None
    q._grad_hook.remove()
    q(w).pow(2).sum().backward()
    factor = 1.0 / (16 * 7) ** 0.5
    assert torch.allclose(grad_scaled, q.step.grad * factor)


def test_pact2_zero_is_exact_and_codes_unsigned() -> None:
    q = ActQuantizer(4, "pact2")
    q.start_calibration((0.0, 100.0))
    q(torch.tensor([-0.75, 0.0, 3.0]))
    q.finish_calibration()
    scale, zp = q.qparams()
    assert (q.lo.item(), q.hi.item()) == (-0.75, 3.0)
    assert (scale.item(), zp.item()) == (0.25, 3.0)
    x = torch.tensor([0.0, -5.0, 5.0])
    out = q(x)
    assert out[0].item() == 0.0
    assert out[1].item() == pytest.approx((0 - zp.item()) * scale.item())
    assert out[2].item() == pytest.approx((15 - zp.item()) * scale.item())


def test_pact2_clip_gradients_come_from_saturated_elements() -> None:
    q = ActQuantizer(4, "pact2")
    with torch.no_grad():
        q.lo.fill_(-1.0)
        q.hi.fill_(2.0)
    q.finish_calibration()
    q(torch.tensor([5.0, 6.0])).sum().backward()  # both saturate at the top
    assert q.hi.grad.item() == pytest.approx(2.0, abs=0.2)
    q.zero_grad()
    q(torch.tensor([-5.0])).sum().backward()  # saturates at the bottom
    assert q.lo.grad.item() == pytest.approx(1.0, abs=0.2)


def test_activation_percentile_calibration_averages_batches() -> None:
    q = ActQuantizer(8, "symmetric")
    q.start_calibration((1.0, 99.0))
    q(torch.linspace(-1, 1, 1001))
    q(torch.linspace(-3, 3, 1001))
    q.finish_calibration()
    assert q.clip.item() == pytest.approx((0.98 + 2.94) / 2, rel=1e-3)
    scale, zp = q.qparams()
    assert zp.item() == 0 and scale.item() == pytest.approx(q.clip.item() / 127)


def test_uncalibrated_activation_quantizer_passes_through() -> None:
    x = torch.randn(5)
    assert torch.equal(ActQuantizer(4)(x), x)


def test_calibrated_flag_survives_state_dict_round_trip() -> None:
    q = ActQuantizer(4)
    q.finish_calibration()
    fresh = ActQuantizer(4)
    fresh.load_state_dict(q.state_dict())
    assert fresh.is_calibrated


def test_bypassed_quantizer_passes_floats_until_its_state_is_loaded() -> None:
    q = ActQuantizer(4)
    q.start_calibration((0.0, 100.0))
    q(torch.linspace(-1, 1, 101))
    q.finish_calibration()
    x = torch.linspace(-1, 1, 7)
    assert not torch.equal(q(x), x)  # 16 levels cannot hold 7 evenly spaced values exactly
    state = q.state_dict()
    q.bypass()
    assert torch.equal(q(x), x) and not q.quantizing
    q.load_state_dict(state)
    assert q.quantizing


def test_quant_linear_precision_reflects_real_codes() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 8)
    q = QuantLinear.from_linear(lin, weight_bits=4, act_bits=8, sparse=False)
    p = q.accelsim_precision
    assert (p.weight_bits, p.act_bits, p.sparsity) == (4, 8, "dense")
    codes, _ = q.export_codes()
    assert p.weight_density == pytest.approx(float((codes != 0).float().mean()))


@pytest.mark.parametrize("grid", ["zero_preserving", "twos_complement", "no_zero"])
@pytest.mark.parametrize(("granularity", "method"), [("per_channel", "sawb"),
                                                     ("per_channel", "lsq"),
                                                     ("per_tensor", "lsq")])
@pytest.mark.parametrize("mask", ["none", "2:4", "sparse_unmasked", "sr_ste"])
@pytest.mark.parametrize("block_weights", [2**18, 64, 1])
def test_released_from_linear_holds_from_linears_precision_on_the_meta_device(
        grid, granularity, method, mask, block_weights, monkeypatch) -> None:
    """Whatever the block of rows its codes are summarized in (one block, 2 rows, 1 row)."""
    monkeypatch.setattr(quant, "SUMMARY_BLOCK_WEIGHTS", block_weights)
    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 12)
    kwargs = {"weight_bits": 4, "act_bits": 8, "grid": grid, "granularity": granularity,
              "scale_method": method, "sparse": mask != "none",
              "learn_pruned": mask == "sr_ste"}
    one_shot = mask in ("2:4", "sr_ste")
    built = QuantLinear.from_linear(lin, mask=mask_2_4(lin.weight) if one_shot else None,
                                    **kwargs)
    released = QuantLinear.released_from_linear(lin, magnitude_mask=one_shot, **kwargs)
    assert released.accelsim_precision == built.accelsim_precision
    assert all(t.is_meta for t in (*released.parameters(), *released.buffers()))
    assert [(n, t.shape) for n, t in released.state_dict().items()] == [
        (n, t.shape) for n, t in built.state_dict().items()]
    assert lin.weight.device.type == "cpu"  # the original is left as it was


def test_released_from_linear_mask_without_sparse_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs sparse=True"):
        QuantLinear.released_from_linear(torch.nn.Linear(8, 4), weight_bits=4, act_bits=4,
                                         magnitude_mask=True)


@pytest.mark.parametrize(("out_features", "in_features"), [(3072, 768), (1024, 4096), (7, 20),
                                                           (1, 64), (2049, 12)])
def test_blocked_code_summary_is_the_whole_codes_bit_for_bit(out_features, in_features,
                                                             monkeypatch) -> None:
    """Shapes of the zoo's layers and odd ones: the step rows, the density (a float32 mean
    against a count) and the 2:4 flag of the blocked summary equal those of the whole codes,
    at the default block and at 64 weights a block (several rows, one row, a partial last
    block)."""
    g = torch.Generator().manual_seed(out_features * in_features)
    weight = torch.randn(out_features, in_features, generator=g) * 0.02
    weight[:, :4] = 0.0  # a group of zeros and ties
    for magnitude_mask in (False, True):
        whole = quant.WeightQuantizer(out_features, 4)
        masked = weight * mask_2_4(weight) if magnitude_mask else weight
        whole.init_step(masked)
        codes, _ = whole.export_codes(masked)
        expected = (float((codes != 0).float().mean()), quant.is_2_4(codes))
        for block in (2**18, 64):
            monkeypatch.setattr(quant, "SUMMARY_BLOCK_WEIGHTS", block)
            blocked = quant.WeightQuantizer(out_features, 4)
            summary = blocked.init_step_and_summarize_codes(weight, magnitude_mask)
            assert summary == expected
            assert torch.equal(blocked.step, whole.step)


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 100_003])
@pytest.mark.parametrize("percents", [(0.1, 99.9), (1.0, 99.0), (0.0, 100.0), (50.0, 50.0)])
def test_percentile_pair_equals_torch_quantile_bit_for_bit(n, percents) -> None:
    g = torch.Generator().manual_seed(n)
    q = torch.tensor([percents[0] / 100.0, percents[1] / 100.0])
    for x in (torch.randn(n, generator=g) * 3.0, torch.randint(-3, 4, (n,), generator=g).float()):
        assert torch.equal(percentile_pair(x, *percents), torch.quantile(x, q))


def test_percentile_pair_propagates_nan_like_torch_quantile() -> None:
    x = torch.tensor([1.0, float("nan"), 3.0])
    assert percentile_pair(x, 0.1, 99.9).isnan().all()


@pytest.mark.parametrize("grid", ["zero_preserving", "no_zero"])
@pytest.mark.parametrize("mode", ["pact2", "symmetric"])
def test_frozen_quantizers_give_the_same_values_and_are_dropped_on_exit(grid, mode) -> None:
    torch.manual_seed(0)
    layer = QuantLinear.from_linear(torch.nn.Linear(16, 8), weight_bits=4, act_bits=4, grid=grid,
                                    act_mode=mode, sparse=True)
    x = torch.randn(4, 16)
    layer.act_quant.start_calibration((1.0, 99.0))
    layer.act_quant(x)
    layer.act_quant.finish_calibration()
    layer.eval()
    expected = layer(x).detach()  # gradients on: the float path, which tracing keeps
    with torch.no_grad(), frozen_quantizers(layer):
        assert layer._frozen_weight is not None and layer.act_quant._frozen is not None
        frozen = layer(x)
    assert torch.equal(frozen, expected)
    assert layer._frozen_weight is None and layer.act_quant._frozen is None


def test_frozen_quantizers_leave_training_modules_alone() -> None:
    layer = QuantLinear.from_linear(torch.nn.Linear(8, 4), weight_bits=4, act_bits=4)
    with frozen_quantizers(layer):
        assert layer._frozen_weight is None  # SAWB recomputes the step in a training forward


def _calibrated_layer(grid: str, mode: str, sparse: bool, x: torch.Tensor) -> QuantLinear:
    layer = QuantLinear.from_linear(torch.nn.Linear(x.shape[-1], 24), weight_bits=4, act_bits=4,
                                    grid=grid, act_mode=mode, sparse=sparse)
    layer.act_quant.start_calibration((1.0, 99.0))
    layer.act_quant(x)
    layer.act_quant.finish_calibration()
    return layer


@pytest.mark.parametrize("grid", ["zero_preserving", "twos_complement", "no_zero"])
@pytest.mark.parametrize("mode", ["pact2", "symmetric"])
def test_inference_forward_is_the_integer_path_bit_for_bit(grid, mode) -> None:
    torch.manual_seed(1)
    x = torch.randn(3, 5, 64) * 2.0
    layer = _calibrated_layer(grid, mode, grid != "no_zero", x).eval()
    with torch.no_grad():
        y = layer(x)
        float_path = torch.nn.functional.linear(
            layer.act_quant(x), layer.weight_quant(layer.masked_weight()), layer.bias)
    # The integer reference's arithmetic in numpy: int64 GEMM of codes, float32 rescale, bias.
    scale, zero_point = (float(v.detach()) for v in layer.act_quant.qparams())
    a = quantize_codes(x, torch.tensor(scale), zero_point, layer.act_quant.qmin,
                       layer.act_quant.qmax).numpy().astype(np.int64) - int(zero_point)
    codes, w_scale = (t.numpy() for t in layer.export_codes())
    acc = a @ codes.astype(np.int64).T
    expected = acc.astype(np.float32) * (np.float32(scale) * w_scale.astype(np.float32))
    expected += layer.bias.detach().numpy()
    assert np.array_equal(y.numpy(), expected)
    # Same values up to float32 rounding: only the order of the float operations changed.
    assert torch.allclose(y, float_path, rtol=0, atol=1e-4)


def test_training_forward_keeps_the_float_path_and_its_gradients() -> None:
    torch.manual_seed(2)
    x = torch.randn(6, 64)
    layer = _calibrated_layer("zero_preserving", "pact2", True, x)
    expected = torch.nn.functional.linear(
        layer.act_quant(x), layer.weight_quant(layer.masked_weight()), layer.bias)
    y = layer(x)
    assert torch.equal(y, expected)
    y.sum().backward()
    assert layer.weight.grad is not None and layer.act_quant.hi.grad is not None
    layer.eval()  # eval with gradients on (e.g. saliency) keeps the differentiable path too
    assert layer(x).requires_grad


def test_export_keeps_the_float_linear_for_the_tracer() -> None:
    torch.manual_seed(3)
    x = torch.randn(2, 64)
    layer = _calibrated_layer("zero_preserving", "pact2", True, x).eval()
    with torch.no_grad():
        exported = torch.export.export(layer, (x,), strict=False)
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert "aten.linear.default" in targets
    assert not any("matmul" in t or "mm" in t for t in targets - {"aten.linear.default"})


def test_smoothing_quantizer_works_in_the_smoothed_domain_on_every_path() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g) * torch.linspace(0.5, 20.0, 8)
    factors = torch.linspace(0.5, 4.0, 8)
    quantizer = ActQuantizer(4, channels=8)
    quantizer.smoothing.copy_(factors)
    quantizer.start_calibration((0.0, 100.0))
    assert torch.equal(quantizer(x), x / factors)  # observing passes the smoothed input
    quantizer.finish_calibration()
    smoothed = x / factors
    assert (quantizer.lo.item(), quantizer.hi.item()) == (smoothed.min().item(),
                                                           smoothed.max().item())
    quantizer.eval()
    with torch.no_grad():
        direct = quantizer(x)
        scale, zero_point = quantizer.qparams()
        assert torch.equal(direct, fake_quantize(smoothed, scale, zero_point, 0.0, 15.0))
        with frozen_quantizers(quantizer):
            assert torch.equal(quantizer(x), direct)  # the one-op path, factors included
    quantizer.bypass()
    assert torch.equal(quantizer(x), smoothed)
