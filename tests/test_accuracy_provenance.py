"""Provenance of accuracy rows: hashes, stale runs, and the check CI runs on results.csv."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from accelsim.accuracy import provenance
from accelsim.accuracy.budgets import BUDGETS, budgeted, schedule_of
from accelsim.accuracy.evaluate import table_datapath
from accelsim.accuracy.provenance import RunProvenance, check_table, stale_reason, tensors_sha256
from accelsim.accuracy.table import RESULTS_CSV, RESULTS_LEGACY_CSV, read_rows
from accelsim.compress.recipe import load_recipe, recipe_to_dict

FP32_HASH, W4_HASH, SPLIT = "a" * 64, "b" * 64, "c" * 64


def test_the_committed_results_table_passes_the_provenance_check() -> None:
    rows = read_rows(RESULTS_CSV)
    assert check_table(rows) == []


def _row(recipe: str, seed: int = 0, accuracy: float = 70.0, parent: str = "",
         checkpoint: str = W4_HASH, **changes: str) -> dict[str, str]:
    schedule = {} if recipe.endswith("_probe") else schedule_of(recipe, BUDGETS["fortunes"])
    measured_by = {"fp32": "pytorch_fp32", "linear_probe": "logistic_regression"}.get(
        recipe, "integer_reference")
    datapath = table_datapath().label if measured_by == "integer_reference" else ""
    row = {"task": "fortunes", "model": "minilm_l6", "recipe": recipe, "seed": str(seed),
           "accuracy_pct": str(accuracy), "measured_by": measured_by, "datapath": datapath,
           **(schedule.columns() if schedule else {}), "code_commit": "1" * 40,
           "checkpoint_sha256": checkpoint, "parent_sha256": parent, "split_sha256": SPLIT}
    return {**row, **changes}


def _good_table() -> list[dict[str, str]]:
    return [
        _row("linear_probe", accuracy=68.0, checkpoint="d" * 64),
        _row("fp32", accuracy=71.0, checkpoint=FP32_HASH),
        _row("w4a4_sp24", accuracy=69.0, parent=FP32_HASH),
        _row("w4a4_sp24_init_pretrained", accuracy=65.0, checkpoint="e" * 64),
    ]


def test_a_table_whose_rows_descend_from_their_fp32_rows_passes() -> None:
    assert check_table(_good_table()) == []


@pytest.mark.parametrize(("index", "change", "message"), [
    (2, {"parent_sha256": "f" * 64}, "is not the fp32 row of its seed"),
    (2, {"seed": "1"}, "the table has no fp32 row of seed 1"),
    (2, {"qat_epochs": "6"}, "qat_epochs '6' differs from the recipe file and budget ('3')"),
    (2, {"lr": "0.0001"}, "lr '0.0001' differs"),
    (1, {"parent_sha256": W4_HASH}, "is not empty"),
    (3, {"parent_sha256": FP32_HASH}, "is not empty"),
    (2, {"code_commit": "1" * 40 + "+dirty"}, "had uncommitted changes"),
    (2, {"checkpoint_sha256": ""}, "checkpoint_sha256 is empty"),
    (2, {"split_sha256": "9" * 64}, "rows measured on 2 different splits"),
    (2, {"recipe": "w4a4_sp25"}, "unknown recipe 'w4a4_sp25'"),
    (2, {"measured_by": "pytorch_fp32"}, "allowed: integer_reference"),
    (2, {"datapath": "int4_sparse: 32-bit saturate accumulators, float32 requant, fp32 vector"},
     "is not the table's ('int4_sparse: 20-bit saturate accumulators, integer requant, fp16"),
    (1, {"datapath": "int4_sparse"}, "datapath 'int4_sparse' is not the table's ('')"),
    (0, {"accuracy_pct": "72.0"}, "FP32 mean 71.00 % does not beat linear_probe 72.00 %"),
    (0, {"task": "fashion_mnist"}, "task fortunes: FP32 rows but no probe row"),
])  # fmt: skip
def test_each_broken_row_is_named(index: int, change: dict[str, str], message: str) -> None:
    rows = _good_table()
    rows[index] = {**rows[index], **change}
    problems = check_table(rows)
    assert any(message in p for p in problems), problems


def test_a_table_without_provenance_columns_is_rejected() -> None:
    legacy = [{k: v for k, v in _row("fp32").items() if k != "split_sha256"}]
    assert check_table(legacy)[0] == "line 2 (fortunes/fp32/seed 0): no column split_sha256"
    # Which is why the rows made before provenance live apart, in results_legacy.csv.
    problems = check_table(read_rows(RESULTS_LEGACY_CSV))
    assert "no column code_commit, checkpoint_sha256, parent_sha256, split_sha256" in problems[0]


def test_tensor_hash_covers_values_names_and_dtypes() -> None:
    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.zeros(3)}
    same = {"b": torch.zeros(3), "w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    assert tensors_sha256(state) == tensors_sha256(same)
    assert tensors_sha256(state) != tensors_sha256({**state, "w": state["w"] + 1e-7})
    assert tensors_sha256(state) != tensors_sha256({"v": state["w"], "b": state["b"]})
    assert tensors_sha256(state) != tensors_sha256({**state, "b": torch.zeros(3).double()})


def test_stale_reason_names_recipe_parent_and_code(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = budgeted(load_recipe("w4a4_sp24"), BUDGETS["fortunes"])
    saved = RunProvenance(recipe_to_dict(recipe), FP32_HASH, provenance.code_sha256(), "c0ffee")
    assert stale_reason(saved, recipe, FP32_HASH) is None
    assert "no provenance.json" in stale_reason(None, recipe, FP32_HASH)
    longer = dataclasses.replace(recipe, epochs=6)
    assert "differs from the current 'w4a4_sp24' in epochs" in stale_reason(saved, longer,
                                                                              FP32_HASH)
    assert "started from weights aaaaaaaaaaaa" in stale_reason(saved, recipe, W4_HASH)
    monkeypatch.setattr(provenance, "code_sha256", lambda: "0" * 64)
    assert "trained by other code (commit c0ffee" in stale_reason(saved, recipe, FP32_HASH)


def test_code_commit_is_a_commit_with_a_dirty_flag() -> None:
    commit = provenance.code_commit()
    assert len(commit.removesuffix("+dirty")) == 40


def test_a_recipe_trained_for_a_chip_variant_is_measured_on_that_variant() -> None:
    budget = {"fortunes": BUDGETS["fortunes"]}
    label = table_datapath(load_recipe("w4a4_sp24_int_datapath")).label
    assert label == "int4_sparse: 20-bit saturate accumulators, integer requant, int vector"
    rows = [*_good_table(), _row("w4a4_sp24_int_datapath", parent=FP32_HASH, datapath=label)]
    assert check_table(rows, budgets=budget) == []
    rows[-1] = {**rows[-1], "datapath": table_datapath().label}
    assert any("is not the table's ('int4_sparse: 20-bit saturate accumulators, integer requant, "
               "int vector')" in p for p in check_table(rows, budgets=budget))


def test_platform_label_names_the_cpu_and_the_torch_build():
    import torch

    from accelsim.accuracy.provenance import platform_label

    label = platform_label()
    assert label.endswith(f", torch {torch.__version__}")
    assert torch.backends.cpu.get_cpu_capability() in label
    assert "\n" not in label and label == platform_label()
