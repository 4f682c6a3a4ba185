"""The error-sources study: settings switch the right quantizers, and the table is rendered per
(task, seed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from accelsim.compress.apply import act_quantizers, quant_linears
from accelsim.compress.sites import site_of
from accelsim.tasks import get_task

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "accuracy"))
import error_sources  # noqa: E402


@pytest.mark.assets("fortunes")
def test_a_setting_switches_on_only_its_quantizers() -> None:
    task = get_task("fortunes", limit=12, tiny=True)
    fp = task.build_model(0).eval()
    by_label = {s.label: s for s in error_sources.settings()}
    down = error_sources.prepared(
        task, fp, by_label["4-bit activations only at FFN down projection (GELU output)"]
    )
    inputs = {id(q.act_quant): site_of(n) for n, q in quant_linears(down)}
    on = [q for q in act_quantizers(down) if q.quantizing]
    assert on and all(inputs.get(id(q)) == "ffn_down" for q in on)
    everything = error_sources.prepared(task, fp, by_label["W4A4 + 2:4 (all quantizers, masks)"])
    assert all(q.quantizing for q in act_quantizers(everything))
    weights_only = error_sources.prepared(task, fp, by_label["4-bit weights only"])
    assert not any(q.quantizing for q in act_quantizers(weights_only))
    ln_a8 = error_sources.prepared(
        task, fp, by_label["W4A4 + 2:4, 8-bit activations at LayerNorm outputs (all quantizers)"]
    )
    widths = {(site_of(n), q.act_quant.bits) for n, q in quant_linears(ln_a8)}
    assert widths == {("qkv", 8), ("attn_out", 4), ("ffn_up", 8), ("ffn_down", 4)}


def test_table_groups_by_task_and_seed() -> None:
    rows = [
        {"task": "t", "seed": "0", "split": "val", "setting": "a", "accuracy_pct": "80.00",
         "fp32_accuracy_pct": "82.50"},
        {"task": "t", "seed": "1", "split": "val", "setting": "a", "accuracy_pct": "83.00",
         "fp32_accuracy_pct": "82.00"},
    ]
    md = error_sources.render(rows)
    assert "## t (seed 0, FP32 82.50 %)" in md and "| a | 80.00 | -2.50 |" in md
    assert "## t (seed 1, FP32 82.00 %)" in md and "| a | 83.00 | +1.00 |" in md


def test_activation_only_settings_keep_weights_8_bit_dense() -> None:
    # "4-bit activations only" must not carry 4-bit weights or 2:4 masks in with them.
    only = [s for s in error_sources.settings() if "activations only" in s.label]
    assert len(only) == 7
    for setting in only:
        assert (setting.recipe.weight_bits, setting.recipe.sparsity) == (8, "dense"), setting.label
        assert not setting.attention, setting.label
    smoothed = [s for s in only if "smoothed" in s.label]
    assert [s.recipe.smoothing_sites for s in smoothed] == [("qkv", "ffn_up")]
