"""The QAT-length study's table: gaps paired by seed (the training itself is the pipeline's)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "accuracy"))
import qat_length  # noqa: E402


def _row(epochs: int, seed: int, accuracy: str, fp32: str) -> dict[str, str]:
    return {"task": "fortunes", "recipe": "w4a4_sp24", "qat_epochs": str(epochs),
            "seed": str(seed), "accuracy_pct": accuracy, "fp32_accuracy_pct": fp32}


def test_gap_is_paired_by_seed_and_grouped_by_length() -> None:
    md = qat_length.render([
        _row(3, 0, "69.00", "70.00"), _row(3, 1, "70.00", "72.00"), _row(1, 0, "65.50", "70.00"),
    ])
    assert "| fortunes | 1 | 1 | 65.50 | -4.50 ± 0.00 | 65.50 (s0) |" in md
    assert "| fortunes | 3 | 2 | 69.50 | -1.50 ± 0.71 | 69.00 (s0) / 70.00 (s1) |" in md
    assert md.index("| fortunes | 1 |") < md.index("| fortunes | 3 |")
