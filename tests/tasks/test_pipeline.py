"""A tiny version of each task's accuracy pipeline: FP32 fine-tune -> QAT -> integer reference.

Tiny random-init models of each family (zoo ``bert_tiny``, ``dinov2_tiny``,
``whisper_tiny_test``) on a few examples per class, so the whole chain runs in seconds.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
from pathlib import Path

import pytest
import torch

from accelsim.accuracy import (
    budgets,
    evaluate_accuracy,
    evaluate_float,
    pipeline,
    table,
    trained_model,
)
from accelsim.accuracy.evaluate import (
    EVAL_BATCH,
    RESIDUAL_CALIBRATION_BATCHES,
    table_datapath,
)
from accelsim.accuracy.provenance import check_table, read_provenance
from accelsim.accuracy.runs import run_dir
from accelsim.compress.export import export_int_model
from accelsim.errors import AccelsimError
from accelsim.ref.execute import calibrate_residual_adds
from accelsim.tasks import get_task

BUDGET = budgets.Budget(fp_epochs=1, qat_epochs=1, batch_size=8, fp_lr=1e-3, qat_lr=1e-3)
DATA = {
    "fortunes": ("fortunes",),
    "wordnet_supersenses": ("wordnet-base",),
    "fashion_mnist": ("dataset-fashion-mnist",),
    "speech_commands": ("espeak-ng", "sox"),
}


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=pytest.mark.assets(*needs)) for name, needs in DATA.items()]
)
def test_tiny_pipeline_row(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCELSIM_CACHE", str(tmp_path / "cache"))
    # The rows' commit would carry "+dirty" whenever the suite runs on an edited tree.
    monkeypatch.setattr(pipeline, "code_commit", lambda: "1" * 40)
    torch.set_num_threads(1)
    # speech: one clip per word and split keeps synthesis (espeak-ng + sox) to 105 clips
    task = get_task(name, limit=35 if name == "speech_commands" else 40, tiny=True)
    fp_row, fp = pipeline.run_recipe(task, "fp32", BUDGET, None, 0, "cmd")
    assert fp_row.measured_by == "pytorch_fp32" and fp_row.model == task.backbone
    assert fp_row.accuracy_pct == pytest.approx(evaluate_float(task, fp.model), abs=1e-2)
    fp_state = fp.model.state_dict()
    row, result = pipeline.run_recipe(task, "w4a4_sp24", BUDGET, fp_state, 0, "cmd")
    assert row.measured_by == "integer_reference" and row.qat_epochs == 1
    # the integer reference and fake-quant agree on (almost) every prediction
    assert abs(row.accuracy_pct - row.fake_quant_accuracy_pct) <= 100 / row.test_examples
    int_model = export_int_model(result.model)
    assert all(layer.sparsity == "2:4" for layer in int_model.linears if layer.k % 4 == 0)
    chip = table_datapath()
    assert row.datapath == chip.label and chip.label.startswith("int4_sparse: 20-bit saturate")
    assert (
        round(evaluate_accuracy(task, result.model, int_model, datapath=chip.datapath), 2)
        == row.accuracy_pct
    )
    # the finished run reloads (structure + weights) with the same integer-reference accuracy
    reloaded = trained_model(task, "w4a4_sp24", budget=BUDGET)
    assert (
        round(evaluate_accuracy(task, reloaded, export_int_model(reloaded),
                                datapath=chip.datapath), 2)
        == row.accuracy_pct
    )
    # on calibrated residual scales, an integer model without them is calibrated first, on the
    # first training batches
    calibrated = dataclasses.replace(chip.datapath, vector_format="int",
                                     residual_scale="calibrated")
    first = itertools.islice(task.batches("train", EVAL_BATCH, seed=0),
                             RESIDUAL_CALIBRATION_BATCHES)
    tuned = calibrate_residual_adds(result.model, int_model, first, calibrated)
    assert tuned.residual_add_scales and not int_model.residual_add_scales
    assert evaluate_accuracy(task, result.model, int_model, datapath=calibrated) == (
        evaluate_accuracy(task, result.model, tuned, datapath=calibrated))
    # a finished run is reused from the cache, not trained again
    again, _ = pipeline.run_recipe(task, "w4a4_sp24", BUDGET, fp_state, 0, "cmd")
    assert again.accuracy_pct == row.accuracy_pct
    csv_path = tmp_path / "results.csv"
    table.write_rows([row, fp_row], csv_path)
    with csv_path.open() as f:
        written = list(csv.DictReader(f))
    assert [r["recipe"] for r in written] == ["fp32", "w4a4_sp24"]
    assert set(table.COLUMNS) == set(written[0])
    # Provenance: the compressed row descends from the FP32 row of its seed, on the same split.
    assert written[1]["parent_sha256"] == written[0]["checkpoint_sha256"] != ""
    assert written[0]["split_sha256"] == written[1]["split_sha256"] != ""
    assert check_table(written, budgets={name: BUDGET}) == [
        f"task {name}: FP32 rows but no probe row to compare them with"
    ]
    # A run from another FP32 parent, or a run without provenance, is refused, not reused.
    other_parent = {k: v + 1 if v.is_floating_point() else v for k, v in fp_state.items()}
    with pytest.raises(AccelsimError, match=r"refused, it started from weights .* re-make it "
                       r"with: rm -r .* && python experiments/accuracy/"):
        pipeline.run_recipe(task, "w4a4_sp24", BUDGET, other_parent, 0, "cmd")
    # run --accuracy's loader: an FP32 run re-made since (other weights) orphans the QAT run.
    fp_dir = run_dir(name, "fp32", 0)
    fp_saved = read_provenance(fp_dir)
    dataclasses.replace(fp_saved, checkpoint_sha256="0" * 64).write(fp_dir)
    with pytest.raises(AccelsimError, match="refused .* it started from weights"):
        trained_model(task, "w4a4_sp24", budget=BUDGET)
    fp_saved.write(fp_dir)
    with pytest.raises(AccelsimError, match=r"differs from the current 'w4a4_sp24' in epochs"):
        trained_model(task, "w4a4_sp24", budget=dataclasses.replace(BUDGET, qat_epochs=2))
    (run_dir(name, "w4a4_sp24", 0) / "provenance.json").unlink()
    with pytest.raises(AccelsimError, match="no provenance.json"):
        trained_model(task, "w4a4_sp24", budget=BUDGET)


def test_budget_sets_lengths_and_learning_rates() -> None:
    from accelsim.compress.recipe import load_recipe

    fp = budgets.budgeted(load_recipe("fp32"), BUDGET)
    assert (fp.fp_epochs, fp.epochs, fp.lr) == (0, 1, 1e-3)
    pre = budgets.budgeted(load_recipe("w4a4_sp24_init_pretrained"), BUDGET)
    assert pre.fp_epochs + pre.epochs == BUDGET.fp_epochs + BUDGET.qat_epochs
    tuned = budgets.budgeted(load_recipe("w4a4_sp24"), BUDGET)
    assert (tuned.fp_epochs, tuned.epochs) == (0, 1)
    longer = dataclasses.replace(BUDGET, qat_epochs_by_recipe=(("w4a4_sp24_kd", 4),))
    assert budgets.budgeted(load_recipe("w4a4_sp24_kd"), longer).epochs == 4
    assert budgets.budgeted(load_recipe("w4a4_sp24"), longer).epochs == 1


def test_every_longer_qat_names_a_row_recipe_that_trains_from_fp32() -> None:
    from accelsim.compress.recipe import load_recipe

    for task_name, budget in budgets.BUDGETS.items():
        for name, epochs in budget.qat_epochs_by_recipe:
            assert name in budgets.ROW_RECIPES and epochs >= 1, (task_name, name)
            assert load_recipe(name).init == "finetuned", (task_name, name)


def _row(recipe: str, seed: int, accuracy: float, minutes: float | None) -> table.RowResult:
    return table.RowResult(
        task="fortunes", model="minilm_l6", recipe=recipe, accuracy_pct=accuracy,
        measured_by="integer_reference", datapath="int4_sparse: 20-bit saturate accumulators",
        fake_quant_accuracy_pct=accuracy, val_accuracy_pct=50.0,
        test_examples=900, init="finetuned", fp_epochs=2, qat_epochs=3, batch_size=16, lr=5e-5,
        train_minutes=minutes, eval_minutes=0.5, seed=seed, command="cmd",
        code_commit="1" * 40, checkpoint_sha256="a" * 64, parent_sha256="", split_sha256="b" * 64,
    )  # fmt: skip


def test_seeds_are_rows_of_their_own_and_results_md_pairs_them(tmp_path: Path) -> None:
    csv_path = tmp_path / "results.csv"
    table.write_rows([_row("fp32", 0, 70.0, 2.0), _row("fp32", 1, 72.0, 2.1)], csv_path)
    md_path = tmp_path / "results.md"
    rows = table.write_rows(
        [_row("w4a4_sp24", 0, 69.0, 5.0), _row("w4a4_sp24", 1, 70.0, 5.2),
         _row("fp32", 0, 70.0, None)],  # a reused run keeps the training time it was made with
        csv_path, markdown=md_path,
    )  # fmt: skip
    assert [(r["recipe"], r["seed"]) for r in rows] == [
        ("fp32", "0"), ("fp32", "1"), ("w4a4_sp24", "0"), ("w4a4_sp24", "1")
    ]
    assert rows[0]["train_minutes"] == "2.0"
    md = table.render_markdown(rows)
    assert md_path.read_text() == md
    # mean 69.5; per-seed differences -1.0 and -2.0: mean -1.5, sample std 0.71
    assert "| w4a4_sp24 | 69.50 | -1.50 ± 0.71 | 69.00 (s0) / 70.00 (s1) |" in md
    assert "| fp32 | 71.00 |  | 70.00 (s0) / 72.00 (s1) |" in md


def test_a_reused_run_of_another_schedule_does_not_inherit_the_old_rows_time(
    tmp_path: Path,
) -> None:
    csv_path = tmp_path / "results.csv"
    table.write_rows([_row("w4a4_sp24", 0, 69.0, 5.0)], csv_path)
    longer = dataclasses.replace(_row("w4a4_sp24", 0, 70.0, None), qat_epochs=6)
    (row,) = table.write_rows([longer], csv_path)
    assert (row["qat_epochs"], row["accuracy_pct"], row["train_minutes"]) == ("6", "70.0", "")


def test_every_task_trains_the_recipes_that_distil_on_its_unlabelled_pool() -> None:
    from accelsim.compress.recipe import load_recipe

    needs_pool = {name for name in budgets.ROW_RECIPES if load_recipe(name).distill_unlabeled}
    assert "w4a4_sp24_kd_unlabeled" in needs_pool and "w4a4_sp24_kd" not in needs_pool
    for task_name, budget in budgets.BUDGETS.items():
        assert not needs_pool & set(dict(budget.skip)), task_name


def test_the_default_recipes_are_the_readme_tables_in_run_order() -> None:
    assert set(budgets.TABLE_RECIPES) <= set(budgets.RUN_ORDER)
    assert budgets.TABLE_RECIPES[0] == budgets.BASELINE == budgets.RUN_ORDER[0]
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    header = next(line for line in readme.splitlines() if line.startswith("| task (model) |"))
    # the generated table: task, linear probe, then one column per recipe in TABLE_RECIPES order
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[2:] == [table.README_HEADERS[name] for name in budgets.TABLE_RECIPES]
