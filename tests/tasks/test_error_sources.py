"""The error-sources study: every quantized linear has one input site, settings switch the
right quantizers, and the table is rendered per (task, seed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from accelsim.compress.apply import act_quantizers, apply_recipe, quant_linears
from accelsim.compress.recipe import load_recipe
from accelsim.tasks import get_task
from accelsim.zoo import build_model
from tests.tasks.test_data import HAS_FORTUNES

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "accuracy"))
import error_sources  # noqa: E402


@pytest.mark.parametrize("model", ["bert_tiny", "dinov2_tiny", "whisper_tiny_test"])
def test_every_quantized_linear_has_exactly_one_site(model: str) -> None:
    net = build_model(model, seed=0, num_labels=3)
    apply_recipe(net, load_recipe("w4a4"))
    sites = [error_sources.site_of(name) for name, _ in quant_linears(net)]
    layers = sites.count("FFN down projection (GELU output)")
    assert layers >= 1
    assert sorted(sites.count(site) for site in error_sources.SITES) == [
        layers, layers, layers, 3 * layers
    ]


def test_unknown_linear_name_is_one_line() -> None:
    with pytest.raises(SystemExit, match="linear 'head.proj' matches sites \\[\\]"):
        error_sources.site_of("head.proj")


@pytest.mark.skipif(not HAS_FORTUNES, reason="Debian package fortunes missing")
def test_a_setting_switches_on_only_its_quantizers() -> None:
    task = get_task("fortunes", limit=12, tiny=True)
    fp = task.build_model(0).eval()
    by_label = {s.label: s for s in error_sources.settings()}
    down = error_sources.prepared(
        task, fp, by_label["4-bit activations only at FFN down projection (GELU output)"]
    )
    inputs = {id(q.act_quant): error_sources.site_of(n) for n, q in quant_linears(down)}
    on = [q for q in act_quantizers(down) if q.quantizing]
    assert on and all(inputs.get(id(q)) == "FFN down projection (GELU output)" for q in on)
    everything = error_sources.prepared(task, fp, by_label["W4A4 + 2:4 (all quantizers, masks)"])
    assert all(q.quantizing for q in act_quantizers(everything))
    weights_only = error_sources.prepared(task, fp, by_label["4-bit weights only"])
    assert not any(q.quantizing for q in act_quantizers(weights_only))


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
