"""Pinned ``accelsim run`` totals: any change in the simulator's numbers shows up here.

Each row of ``run_totals.csv`` is one (workload, hardware config, dataflow) run through the CLI
(``--set array.dataflow=...``, recipe ``auto`` for zoo models). On a mismatch the failure lists
the pinned and the new line; after reviewing why the numbers moved, regenerate the whole file with

    python tests/golden/test_golden_totals.py > tests/golden/run_totals.csv

and commit it with the change that moved them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parents[1] / "hw_configs"
GOLDEN = HERE / "run_totals.csv"
HW_CONFIGS = ("int4_sparse", "int4_dense", "int8_dense", "fp16_dense", "tpu_v1")
DATAFLOWS = ("os", "ws", "is")
# Topology CSVs (shapes with partial folds, a 2:4 column) and tiny zoo models compressed by the
# hardware's native recipe: bert_tiny on every config, vit_tiny on the 2:4 one.
WORKLOADS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("vit_block.csv", HW_CONFIGS),
    ("partial_folds.csv", HW_CONFIGS),
    ("bert_tiny", HW_CONFIGS),
    ("vit_tiny", ("int4_sparse",)),
)
COLUMNS = ("workload", "hw", "dataflow", "cycles", "energy_uj", "dram_bytes", "area_mm2")
FLOAT_RTOL = 1e-9


def _model_argument(workload: str) -> str:
    return str(HERE / workload) if workload.endswith(".csv") else workload


def cases() -> list[tuple[str, str, str]]:
    return [(workload, hw, dataflow) for workload, configs in WORKLOADS for hw in configs
            for dataflow in DATAFLOWS]


def measure(workload: str, hw: str, dataflow: str) -> dict[str, str]:
    """One CLI run; the totals formatted as the CSV stores them."""
    from accelsim.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        with redirect_stdout(io.StringIO()):
            code = main(["run", "--hw", str(CONFIGS / f"{hw}.yaml"), "--model",
                         _model_argument(workload), "--set", f"array.dataflow={dataflow}",
                         "--json", str(out)])
        assert code == 0, (workload, hw, dataflow, code)
        totals = json.loads(out.read_text())["totals"]
    return {"workload": workload, "hw": hw, "dataflow": dataflow,
            "cycles": str(totals["cycles"]), "energy_uj": f"{totals['energy_uj']:.12g}",
            "dram_bytes": str(totals["dram_bytes"]), "area_mm2": f"{totals['area_mm2']:.12g}"}


def _line(row: dict[str, str]) -> str:
    return ",".join(row[column] for column in COLUMNS)


def _same(pinned: dict[str, str], new: dict[str, str]) -> bool:
    for column in COLUMNS:
        if column in ("energy_uj", "area_mm2"):
            if not math.isclose(float(pinned[column]), float(new[column]), rel_tol=FLOAT_RTOL):
                return False
        elif pinned[column] != new[column]:
            return False
    return True


def read_golden() -> dict[tuple[str, str, str], dict[str, str]]:
    with GOLDEN.open(newline="") as fh:
        return {(r["workload"], r["hw"], r["dataflow"]): r for r in csv.DictReader(fh)}


def test_golden_file_covers_every_case():
    assert sorted(read_golden()) == sorted(cases())


def test_totals_match_the_pinned_values(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELSIM_CACHE", str(tmp_path))
    pinned = read_golden()
    moved = []
    for case in cases():
        new = measure(*case)
        if case not in pinned or not _same(pinned[case], new):
            old = _line(pinned[case]) if case in pinned else "(none)"
            moved.append(f"  pinned: {old}\n  new:    {_line(new)}")
    assert not moved, ("run totals moved; review, then regenerate tests/golden/run_totals.csv "
                       "(see this file's docstring):\n" + "\n".join(moved))


if __name__ == "__main__":
    os.environ.setdefault("ACCELSIM_CACHE", tempfile.mkdtemp(prefix="accelsim_golden_"))
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(COLUMNS)
    for case in cases():
        row = measure(*case)
        writer.writerow([row[column] for column in COLUMNS])
