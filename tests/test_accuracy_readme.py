"""The README's accuracy table is generated from results.csv, never edited by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from accelsim.accuracy.table import (
    README_BEGIN,
    README_END,
    RESULTS_CSV,
    read_rows,
    readme_table,
    with_readme_table,
)
from accelsim.errors import AccelsimError

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_table_is_what_results_csv_generates() -> None:
    readme = README.read_text()
    block = readme[readme.index(README_BEGIN) + len(README_BEGIN): readme.index(README_END)]
    assert block.strip() == readme_table(read_rows(RESULTS_CSV)), (
        "README accuracy table is stale: run python experiments/accuracy/pipeline.py")


def _row(recipe: str, seed: int, accuracy: float) -> dict[str, str]:
    return {"task": "fashion_mnist", "model": "dinov2_s", "recipe": recipe, "seed": str(seed),
            "accuracy_pct": str(accuracy)}


def test_cells_are_seed_means_and_the_second_table_is_paired_by_seed() -> None:
    rows = [_row("linear_probe", 0, 80.0), _row("fp32", 0, 85.0), _row("fp32", 1, 86.0),
            _row("w4a4_sp24", 0, 84.0), _row("w4a4_sp24", 1, 84.0)]
    table = readme_table(rows)
    line = next(t for t in table.splitlines() if t.startswith("| fashion_mnist"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    # probe, FP32 (mean of 2 seeds), W8A8 (not measured), W4A4 (not measured), W4A4 + 2:4
    assert cells[1:6] == ["80.00", "85.50²", "", "", "84.00²"]
    assert "–" in cells  # constant dropout cannot apply to a backbone without dropout
    # the second table: each compressed recipe against the FP32 run of its seed
    paired = table.splitlines()[-1].strip("|").split("|")
    assert [c.strip() for c in paired[:5]] == ["fashion_mnist", "", "", "-1.50 ± 0.71", ""]


def test_a_compressed_run_without_an_fp32_run_of_its_seed_is_not_paired() -> None:
    rows = [_row("fp32", 0, 85.0), _row("w4a4_sp24", 0, 84.0), _row("w4a4_sp24", 2, 80.0),
            _row("w4a4", 2, 83.0)]
    paired = readme_table(rows).splitlines()[-1].strip("|").split("|")
    # W4A4's only run (seed 2) has no FP32 parent here; W4A4 + 2:4 pairs seed 0 alone
    assert [c.strip() for c in paired[:4]] == ["fashion_mnist", "", "", "-1.00"]


def test_a_readme_without_the_markers_is_one_line() -> None:
    with pytest.raises(AccelsimError, match="no <!-- accuracy-table:begin"):
        with_readme_table("# README\n", [])
    filled = with_readme_table(f"a\n{README_BEGIN}\nold\n{README_END}\nb\n", [])
    assert "old" not in filled and filled.startswith("a\n") and filled.endswith("b\n")


def test_the_budget_table_in_docs_is_the_code_s_budgets() -> None:
    from accelsim.accuracy.budgets import BUDGETS

    docs = (README.parent / "docs" / "accuracy.md").read_text()
    header = "| task | FP32 epochs | QAT epochs | batch | FP32 lr | QAT lr |"
    lines = docs[docs.index(header):].splitlines()[2:]
    rows = {}
    for line in lines:
        if not line.startswith("|"):
            break
        task, *cells = (c.strip() for c in line.strip("|").split("|"))
        rows[task] = (int(cells[0]), int(cells[1]), int(cells[2]), float(cells[3]),
                      float(cells[4]))
    assert set(rows) == set(BUDGETS)
    for task, budget in BUDGETS.items():
        assert rows[task] == (budget.fp_epochs, budget.qat_epochs, budget.batch_size,
                              budget.fp_lr, budget.qat_lr), task
