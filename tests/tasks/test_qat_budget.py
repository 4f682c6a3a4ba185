"""The QAT-budget study: gaps paired by seed, one line per (recipe, epochs, lr), run names."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "accuracy"))
import qat_budget  # noqa: E402

from accelsim.accuracy import budgets  # noqa: E402


def _row(epochs: int, seed: int, accuracy: str, fp32: str, lr: str = "5e-05",
         val: str = "") -> dict[str, str]:  # fmt: skip
    return {"task": "fortunes", "recipe": "w4a4_sp24", "qat_epochs": str(epochs), "qat_lr": lr,
            "seed": str(seed), "val_accuracy_pct": val, "accuracy_pct": accuracy,
            "fp32_accuracy_pct": fp32}


def test_gap_is_paired_by_seed_and_grouped_by_setting() -> None:
    md = qat_budget.render([
        _row(3, 0, "69.00", "70.00"), _row(3, 1, "70.00", "72.00"), _row(1, 0, "65.50", "70.00"),
        _row(3, 0, "71.00", "70.00", lr="0.0001", val="72.00"),
    ])
    assert "| fortunes | w4a4_sp24 | 1 | 5e-05 | 1 | – | 65.50 | -4.50 | 65.50 (s0) |" in md
    assert ("| fortunes | w4a4_sp24 | 3 | 5e-05 | 2 | – | 69.50 | -1.50 ± 0.71 | "
            "69.00 (s0) / 70.00 (s1) |") in md
    assert "| fortunes | w4a4_sp24 | 3 | 0.0001 | 1 | 72.00 | 71.00 | +1.00 |" in md
    assert md.index("| 1 | 5e-05 |") < md.index("| 3 | 5e-05 |") < md.index("| 3 | 0.0001 |")


def test_run_name_is_the_pipelines_at_its_schedule_and_suffixed_otherwise() -> None:
    budget = dataclasses.replace(
        budgets.BUDGETS["fortunes"], qat_epochs=3, qat_lr=5e-5,
        qat_epochs_by_recipe=(("w4a4_sp24_kd", 6),),
    )  # fmt: skip
    assert budgets.run_name("w4a4_sp24", 3, 5e-5, budget) == "w4a4_sp24"
    assert budgets.run_name("w4a4_sp24", 6, 5e-5, budget) == "w4a4_sp24_qat6"
    assert budgets.run_name("w4a4_sp24", 6, 1e-4, budget) == "w4a4_sp24_qat6_lr0.0001"
    # A recipe the pipeline trains longer: its own name at that length, suffixed at the default.
    assert budgets.run_name("w4a4_sp24_kd", 6, 5e-5, budget) == "w4a4_sp24_kd"
    assert budgets.run_name("w4a4_sp24_kd", 3, 5e-5, budget) == "w4a4_sp24_kd_qat3"


def test_study_recipes_start_from_the_fp32_run() -> None:
    assert "w4a4_sp24" in qat_budget.STUDY_RECIPES and "w4a4_sp24_gradual" in (
        qat_budget.STUDY_RECIPES
    )
    assert "fp32" not in qat_budget.STUDY_RECIPES
    assert "w4a4_sp24_init_pretrained" not in qat_budget.STUDY_RECIPES
