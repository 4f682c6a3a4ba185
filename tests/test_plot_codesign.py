"""``accelsim plot codesign``: a task's co-design front from the results CSV."""

from __future__ import annotations

import pandas as pd

from accelsim.cli import main
from accelsim.cli.plot import measured_front
from accelsim.codesign.run import RESULT_COLUMNS


def _row(config: str, energy: float, accuracy: float, source: str = "qat_integer_reference",
         task: str = "t") -> dict:
    return {"task": task, "model": "m", "kind": "searched" if config.startswith("s") else
            "uniform", "config": f"{config} | hw base | g=w4a4", "energy_uj": energy,
            "latency_ms": 1.0, "area_mm2": 1.0, "accuracy_pct": accuracy,
            "accuracy_source": source, "seed": 0}


ROWS = [_row("w8a8", 800.0, 92.0), _row("w4a4_sp24", 270.0, 90.0), _row("w4a4", 350.0, 89.0),
        _row("searched@8", 330.0, 90.7), _row("searched@4", 390.0, 81.6, "predicted"),
        _row("w8a8", 100.0, 99.0, task="other")]


def test_the_front_keeps_measured_points_no_other_beats() -> None:
    frame = pd.DataFrame(ROWS)
    on_front = measured_front(frame)
    front = frame[on_front & (frame["task"] == "t")].sort_values("energy_uj")
    # w4a4 is beaten by w4a4_sp24 (cheaper, more accurate); the predicted point is not measured.
    assert list(front["config"].str.split(" | ", regex=False).str[0]) == [
        "w4a4_sp24", "searched@8", "w8a8"]


def test_plot_codesign_writes_the_figure(tmp_path) -> None:
    csv = tmp_path / "results.csv"
    pd.DataFrame(ROWS, columns=list(RESULT_COLUMNS)).to_csv(csv, index=False)
    assert main(["plot", "codesign", str(csv), "--task", "t"]) == 0
    out = tmp_path / "t_front.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_codesign_bad_input_is_one_line(tmp_path, capsys) -> None:
    csv = tmp_path / "results.csv"
    pd.DataFrame(ROWS).to_csv(csv, index=False)
    assert main(["plot", "codesign", str(csv), "--task", "nope"]) == 2
    assert "--task nope: not in" in capsys.readouterr().err
    other = tmp_path / "sweep.csv"
    pd.DataFrame({"energy_uj": [1.0]}).to_csv(other, index=False)
    assert main(["plot", "codesign", str(other), "--task", "t"]) == 2
    assert "not co-design results" in capsys.readouterr().err
    assert not (tmp_path / "t_front.png").exists()
