"""The datapath study's variants and table: the kernel study asks, on validation, what each int
kernel's approximation costs; rows written before it render as they did."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "accuracy"))
import datapath_study  # noqa: E402

from accelsim.formats import INT_VECTOR_KERNELS  # noqa: E402


def test_kernel_variants_run_the_int_datapath_with_each_kernel_exact_on_validation():
    chip, *kernels = datapath_study.variants(("kernels",))
    assert (chip.vector_format, chip.exact_kernels, chip.split) == ("fp16", (), "val")
    assert [v.exact_kernels for v in kernels] == [
        (), *((k,) for k in INT_VECTOR_KERNELS), INT_VECTOR_KERNELS]
    assert {(v.vector_format, v.split) for v in kernels} == {("int", "val")}
    formats = datapath_study.variants(("formats",))
    assert {v.split for v in formats} == {"test"} and not any(v.exact_kernels for v in formats)
    tables = datapath_study.variants(("gelu_tables",))
    assert [(v.vector_format, v.split, v.gelu_table_segments) for v in tables] == [
        ("int", "val", n) for n in datapath_study.GELU_TABLE_SIZES]
    assert tables[0].overrides["vector_unit.gelu_table_segments"] == 4
    residual = datapath_study.variants(("residual",))
    assert [(v.vector_format, v.split, v.residual_scale) for v in residual] == [
        ("int", "val", "fitted"), ("int", "test", "fitted"), ("int", "val", "calibrated"),
        ("int", "test", "calibrated")]
    assert residual[0].overrides["vector_unit.residual_scale"] == "fitted"


def test_the_int_set_is_the_int_unit_on_both_splits_and_overlapping_sets_measure_once():
    alone = datapath_study.variants(("int",))
    assert [(v.vector_format, v.split, v.exact_kernels, v.residual_scale) for v in alone] == [
        ("int", "val", (), "coarser"), ("int", "test", (), "coarser")]
    every = datapath_study.variants()
    assert len(every) == len(set(every))
    # the int unit on test is a formats row, on validation the kernel study's reference row
    assert set(alone) <= set(datapath_study.variants(("formats", "kernels")))


def test_the_int_set_with_a_gelu_table_is_that_chip_on_both_splits():
    tabled = datapath_study.variants(("int",), gelu_table_segments=16)
    assert [(v.vector_format, v.split, v.gelu_table_segments) for v in tabled] == [
        ("int", "val", 16), ("int", "test", 16)]
    assert tabled[1].overrides["vector_unit.gelu_table_segments"] == 16
    # the table study's validation row of that size is measured once
    both = datapath_study.variants(("gelu_tables", "int"), gelu_table_segments=16)
    assert len(both) == len(datapath_study.GELU_TABLE_SIZES) + 1


@pytest.mark.parametrize(("argv", "message"), [
    (["--variants", "formats", "--gelu-table-segments", "16"], "add int"),
    (["--variants", "int", "--gelu-table-segments", "5"], "5 is not one of 0, 4, 8"),
])
def test_a_gelu_table_outside_the_int_set_or_of_a_size_the_chip_lacks_is_one_usage_error(
        argv, message, capsys):
    with pytest.raises(SystemExit):
        datapath_study.main(["--task", "fashion_mnist", "--recipes", "w4a4_sp24", *argv])
    err = capsys.readouterr().err
    assert message in err and "--gelu-table-segments" in err


def _row(**fields: str) -> dict[str, str]:
    base = {"task": "speech_commands", "model": "whisper_tiny_en", "recipe": "w4a4_sp24",
            "seed": "0", "split": "val", "vector_format": "int", "accumulator_bits": "20",
            "exact_kernels": "", "gelu_table_segments": "0", "residual_scale": "coarser",
            "datapath": "d",
            "accuracy_pct": "70.00",
            "saturated_pct": "0.0000", "latency_ms": "1", "energy_uj": "1", "area_mm2": "1",
            "vector_area_mm2": "1", "code_commit": "c", "checkpoint_sha256": "0" * 64,
            "priced_commit": "c"}
    return {**base, **fields}


def test_the_kernel_table_shows_each_exact_kernel_against_the_int_datapath():
    rows = [_row(vector_format="fp16", accuracy_pct="80.00"), _row(),
            _row(exact_kernels="gelu", accuracy_pct="75.50"),
            _row(gelu_table_segments="16", accuracy_pct="79.00", energy_uj="2"),
            _row(exact_kernels="add", accuracy_pct="72.00"),
            _row(residual_scale="fitted", accuracy_pct="71.50"),
            _row(split="test", vector_format="fp16", accuracy_pct="88.39"),
            _row(split="test", residual_scale="fitted", accuracy_pct="88.00")]
    text = datapath_study.render(rows)
    assert "| fp16 | exact erf | float | 20 | 88.39 |" in text
    assert "| int | I-BERT polynomial | fitted | 20 | 88.00 |" in text
    assert "| fp16 | exact erf | float | - | 80.00 | +10.00 | 1 | 1 |" in text
    assert "| int | I-BERT polynomial | coarser | - | 70.00 | +0.00 | 1 | 1 |" in text
    assert "| int | exact erf | coarser | gelu | 75.50 | +5.50 | 1 | 1 |" in text
    assert "| int | table, 16 segments | coarser | - | 79.00 | +9.00 | 2 | 1 |" in text
    assert "| int | I-BERT polynomial | exact | add | 72.00 | +2.00 | 1 | 1 |" in text
    assert "| int | I-BERT polynomial | fitted | - | 71.50 | +1.50 | 1 | 1 |" in text


def test_repricing_simulates_each_chip_once_and_keeps_the_accuracies(monkeypatch):
    """--reprice: the cost columns come from the simulator as it stands, one simulation per
    task, recipe and chip (an exact kernel is priced as its chip), the accuracy and its commit
    stay, and the table says where the costs were priced."""
    calls = []

    def simulated(backbone, recipe, shape, overrides):
        calls.append((backbone, recipe, overrides["vector_unit.format"]))
        return {"latency_ms": 0.5, "energy_uj": 250.0 + len(calls), "area_mm2": 0.9,
                "vector_area_mm2": 0.01}

    monkeypatch.setattr(datapath_study, "simulated", simulated)
    monkeypatch.setattr(datapath_study, "code_commit", lambda: "f" * 40)
    rows = [_row(), _row(exact_kernels="gelu", accuracy_pct="75.50"),
            _row(vector_format="fp16", accuracy_pct="80.00")]
    out = datapath_study.repriced(rows)
    assert calls == [("whisper_tiny_en", "w4a4_sp24", "int"),
                     ("whisper_tiny_en", "w4a4_sp24", "fp16")]
    assert [r["energy_uj"] for r in out] == ["251.000", "251.000", "252.000"]
    assert [r["accuracy_pct"] for r in out] == ["70.00", "75.50", "80.00"]
    assert {(r["code_commit"], r["priced_commit"]) for r in out} == {("c", "f" * 40)}
    assert "Commit `c`, checkpoint `0000000000000000`; costs re-priced at `fffffff`." in (
        datapath_study.render(out))


def test_reprice_with_a_task_or_without_anything_is_one_usage_error(capsys):
    """--reprice re-prices the whole CSV: with --task/--recipes, or with neither, the command
    stops before reading or writing anything, naming both ways."""
    for argv in (["--reprice", "--task", "fortunes", "--recipes", "w4a4_sp24"], [],
                 ["--render", "--reprice"], ["--render", "--task", "fortunes"]):
        with pytest.raises(SystemExit) as exit_info:
            datapath_study.main(argv)
        assert exit_info.value.code == 2
        assert "give --task and --recipes, or --reprice alone" in capsys.readouterr().err


def test_the_int_chip_summary_pairs_each_run_with_its_table_row_and_fp32_parent():
    chip = "int4_sparse: 20-bit saturate accumulators, integer requant, fp16 vector"
    results = [
        {"checkpoint_sha256": "fp-a", "parent_sha256": "", "accuracy_pct": "90.00",
         "datapath": ""},
        {"checkpoint_sha256": "fp-b", "parent_sha256": "", "accuracy_pct": "92.00",
         "datapath": ""},
        {"checkpoint_sha256": "q-a", "parent_sha256": "fp-a", "accuracy_pct": "89.00",
         "datapath": chip},
        {"checkpoint_sha256": "q-b", "parent_sha256": "fp-b", "accuracy_pct": "90.00",
         "datapath": chip},
        {"checkpoint_sha256": "own", "parent_sha256": "fp-a", "accuracy_pct": "80.00",
         "datapath": "a datapath of the recipe's own"},
    ]
    rows = [_row(split="test", checkpoint_sha256="q-a", accuracy_pct="88.50"),
            _row(split="test", checkpoint_sha256="q-b", seed="1", accuracy_pct="89.50"),
            # not the shipped int unit, no table row, a table row on another datapath
            _row(split="test", checkpoint_sha256="q-a", residual_scale="fitted"),
            _row(split="test", checkpoint_sha256="gone"),
            _row(split="test", checkpoint_sha256="own", recipe="w4a4_sp24_int_datapath")]
    lines = datapath_study.int_chip_summary(rows, results)
    table = [line for line in lines if line.startswith("| speech_commands")]
    # int - FP32: -1.50, -2.50; fp16 - FP32: -1.00, -2.00; int - fp16: -0.50, -0.50
    assert table == ["| speech_commands | w4a4_sp24 | I-BERT polynomial | 2 | 91.00 | 89.50 | "
                     "89.00 | -2.00 ± 0.71 | -1.50 ± 0.71 | -0.50 ± 0.00 |"]
    assert datapath_study.int_chip_summary(rows, []) == []


def test_a_seed_measured_at_two_commits_names_both():
    rows = [_row(split="test", code_commit="a" * 40, priced_commit="a" * 40),
            _row(split="test", gelu_table_segments="16", code_commit="b" * 40,
                 priced_commit="b" * 40)]
    text = datapath_study.render(rows)
    assert f"Commits `{'a' * 40}`, `{'b' * 40}`, checkpoint `0000000000000000`." in text


def test_the_int_chip_summary_gives_a_gelu_table_chip_its_own_line():
    chip = "int4_sparse: 20-bit saturate accumulators, integer requant, fp16 vector"
    results = [
        {"checkpoint_sha256": "fp", "parent_sha256": "", "accuracy_pct": "90.00", "datapath": ""},
        {"checkpoint_sha256": "q", "parent_sha256": "fp", "accuracy_pct": "89.00",
         "datapath": chip},
    ]
    rows = [_row(split="test", checkpoint_sha256="q", accuracy_pct="88.00"),
            _row(split="test", checkpoint_sha256="q", accuracy_pct="88.60",
                 gelu_table_segments="16")]
    table = [line for line in datapath_study.int_chip_summary(rows, results)
             if line.startswith("| speech_commands")]
    assert [line.split(" | ")[2] for line in table] == ["I-BERT polynomial", "table, 16 segments"]
    assert [line.split(" | ")[6] for line in table] == ["88.00", "88.60"]
