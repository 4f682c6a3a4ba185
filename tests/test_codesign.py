"""Co-design end to end on a tiny model (sensitivities -> ILP per hardware point -> store ->
QAT verification), resumption, and bad specs as one line each."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from accelsim.accuracy.budgets import Budget
from accelsim.cli import main
from accelsim.codesign import run as codesign_run
from accelsim.codesign.groups import REFERENCE, parse_format
from accelsim.codesign.spec import load_spec
from accelsim.errors import AccelsimError

CONFIGS = Path(__file__).resolve().parents[1] / "hw_configs"
TINY_BUDGET = Budget(fp_epochs=1, qat_epochs=1, batch_size=8, fp_lr=1e-3, qat_lr=1e-3)
SPEC = """\
version: 1
name: tiny
task: wordnet_supersenses
tiny: true
limit: 20
seed: 0
search: {{grouping: block, weight_bits: [4, 8], act_bits: [4, 8], sparsity: [dense, "2:4"]}}
hw: {hw}
grid: {{array.rows: [16, 32]}}
constraints: ["area_mm2 <= 5"]
accuracy_budget_pct: [1.0]
latency_ms_max: 10.0
solutions_per_point: 2
verify_points: 1
baselines: [w8a8, w4a4_sp24]
accuracy_model: calibration
"""


def write_spec(tmp_path: Path, text: str = SPEC) -> Path:
    body = text.format(hw=CONFIGS / "int4_sparse.yaml")
    path = tmp_path / "spec.yaml"
    path.write_text(body)
    return path


@pytest.mark.assets("wordnet-base")
def test_tiny_search_end_to_end_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELSIM_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    spec = load_spec(write_spec(tmp_path))
    store = tmp_path / "store.sqlite"
    stages: list[str] = []
    summary = codesign_run.run_codesign(spec, store, budget=TINY_BUDGET,
                                        progress=lambda stage, *_: stages.append(stage))
    assert summary.hardware_points == 2 and summary.skipped == 0
    assert summary.searched == 2 * (1 + 2)  # one budget and two baselines per point
    assert {"sensitivity", "search", "verify"} <= set(stages)
    frame = pd.DataFrame(summary.rows)
    assert list(frame.columns) == list(codesign_run.RESULT_COLUMNS)
    searched = frame[frame["kind"] == "searched"]
    assert len(searched) == 2 and len(frame[frame["kind"] == "uniform"]) == 4
    for config in searched["config"]:
        formats = [parse_format(item.split("=")[1], "config")
                   for item in config.split(" | ")[2].split()]
        assert len(formats) == 2  # bert_tiny: two blocks
    verified = frame[frame["accuracy_source"] == "qat_integer_reference"]
    assert len(verified) >= 1 and set(verified["kind"]) == {"searched"}
    assert verified["accuracy_pct"].between(0, 100).all()
    assert (frame["energy_uj"] > 0).all()
    # every searched point is priced at or below W8A8 on its hardware point
    for hw in ("array.rows=16", "array.rows=32"):
        on_point = frame[frame["config"].str.contains(hw)]
        w8a8 = on_point[on_point["config"].str.startswith("w8a8")]["energy_uj"].item()
        assert (on_point[on_point["kind"] == "searched"]["energy_uj"] <= w8a8).all()

    # Rerun: everything comes from the store; no sensitivity or QAT is measured again.
    def refuse(*_, **__):
        raise AssertionError("measured again")

    monkeypatch.setattr(codesign_run, "measure_sensitivity", refuse)
    monkeypatch.setattr("accelsim.codesign.verify.verify_assignment", refuse)
    again = codesign_run.run_codesign(spec, store, budget=TINY_BUDGET)
    assert again.searched == 0 and again.skipped == summary.searched
    assert again.rows == summary.rows


def test_reference_format_is_w8a8_dense():
    assert REFERENCE.name == "w8a8" and parse_format("w4a8_sp24", "x").sparse


@pytest.mark.parametrize(("text", "message"), [
    (SPEC.replace("grouping: block,", "grouping: block, bits: [4],"),
     r"search\.bits: unknown field.*; allowed: grouping, weight_bits, act_bits, sparsity"),
    (SPEC.replace("limit: 20", "limit: 20\nsearch_space: 1"),
     r"search_space: unknown field \(did you mean 'search'"),
    (SPEC.replace("task: wordnet_supersenses\n", "model: bert_tiny\n"),
     r"accuracy_budget_pct: needs a task .*; allowed tasks: "),
    (SPEC.replace("weight_bits: [4, 8]", "weight_bits: [2, 8]"),
     r"search\.weight_bits: \[2, 8\] must be a non-empty list of distinct values from 4, 8"),
    (SPEC.replace("grid: {{array.rows: [16, 32]}}", "grid: {{array.rowz: [16]}}"),
     r"grid\.array\.rowz: unknown hardware field \(did you mean 'array\.rows'"),
    (SPEC.replace("tiny: true\n", ""),
     r"checkpoint: missing; a real task needs its fine-tuned FP32 model"),
    (SPEC.replace("baselines: [w8a8,", "baselines: [fp32,"),
     r"baselines\[0\]: 'fp32' is not a quantized recipe; allowed: a recipe with integer "),
    (SPEC.replace("seed: 0", "seed: 0\nseed: 1"), r"spec\.yaml: duplicate field 'seed' \(line 7\)"),
    (SPEC.replace("seed: 0", "seed: 0\ncheckpoint: nothing.pt"),
     r"checkpoint: '.*nothing\.pt' does not exist; make the FP32 run with: python "
     r"experiments/accuracy/wordnet_supersenses\.py --recipes fp32"),
    (SPEC.replace("accuracy_model: calibration", "accuracy_model: hessian"),
     r"accuracy_model: 'hessian'; allowed: qat_anchored, calibration"),
])
def test_bad_specs_are_one_line(tmp_path, capsys, text, message):
    path = write_spec(tmp_path, text)
    with pytest.raises(AccelsimError, match=message):
        load_spec(path)
    assert main(["codesign", str(path), "--results", str(tmp_path / "r.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("accelsim: error: ") and "\n" not in err
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "results").exists()


def test_a_format_the_hardware_cannot_run_is_one_line(tmp_path):
    text = SPEC.replace("hw: {hw}", f"hw: {CONFIGS / 'fp16_dense.yaml'}")
    with pytest.raises(AccelsimError, match=r"hw: precision\.kind 'fp' cannot run the integer "
                       r"formats the search assigns \(w4a4, .*\); allowed: precision\.kind: int"):
        load_spec(write_spec(tmp_path, text))
    grid = SPEC.replace("grid: {{array.rows: [16, 32]}}", "grid: {{precision.kind: [int, fp]}}")
    with pytest.raises(AccelsimError, match=r"precision\.kind 'fp' cannot run"):
        load_spec(write_spec(tmp_path, grid))


@pytest.mark.assets("wordnet-base")
def test_missing_anchors_are_one_line_before_anything_is_measured(tmp_path, capsys,
                                                                  monkeypatch):
    from accelsim.accuracy import table

    monkeypatch.setattr(table, "RESULTS_CSV", tmp_path / "none.csv")
    monkeypatch.setattr(codesign_run, "measure_sensitivity", lambda *_, **__: 1 / 0)
    path = write_spec(tmp_path, SPEC.replace("accuracy_model: calibration\n", ""))
    assert load_spec(path).accuracy_model == "qat_anchored"  # the default
    assert main(["codesign", str(path), "--results", str(tmp_path / "r.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the templates' progress
    assert err.startswith("accelsim: error: ") and re.search(
        r"accuracy_model: qat_anchored needs the accuracy table's QAT rows of w8a8, w4a4, "
        r"w4a4_sp24 for task wordnet_supersenses, seed 0, .*make them with: python "
        r"experiments/accuracy/wordnet_supersenses\.py --recipes w8a8 w4a4 w4a4_sp24 --seeds 0 "
        r"\(or set accuracy_model: calibration\)", err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


def test_missing_checkpoint_names_the_command(tmp_path):
    from accelsim.codesign.accuracy import load_fp32
    from accelsim.tasks import get_task

    task = get_task("wordnet_supersenses", limit=20, tiny=True)
    with pytest.raises(AccelsimError, match=r"checkpoint: '.*nothing' does not exist; "
                       r"make the FP32 run with: python experiments/accuracy/"
                       r"wordnet_supersenses.py --recipes fp32 --seeds 0"):
        load_fp32(task, str(tmp_path / "nothing"), 0)


def test_cost_only_search_without_a_task(tmp_path):
    text = (SPEC.replace("task: wordnet_supersenses\ntiny: true\nlimit: 20\n",
                         "model: bert_tiny\ninput_shape: {{seq_len: 48}}\n")
            .replace("accuracy_budget_pct: [1.0]\n", "")
            .replace("verify_points: 1", "verify_points: 0"))
    spec = load_spec(write_spec(tmp_path, text))
    assert spec.task is None and spec.accuracy_budgets_pct == ()
    summary = codesign_run.run_codesign(spec, tmp_path / "store.sqlite")
    frame = pd.DataFrame(summary.rows)
    searched = frame[frame["kind"] == "searched"]
    assert len(searched) == 2 and searched["accuracy_pct"].isna().all()
    assert (searched["accuracy_source"] == "predicted").all()
    # with no accuracy budget the cheapest format everywhere is W4A4 + 2:4 on this 2:4 array
    for config in searched["config"]:
        assert {item.split("=")[1] for item in config.split(" | ")[2].split()} == {"w4a4_sp24"}
    # a narrower grid on the same store: its one point comes from the store, and the rows are
    # this spec's only
    narrow = load_spec(write_spec(tmp_path, text.replace("[16, 32]", "[16]")))
    again = codesign_run.run_codesign(narrow, tmp_path / "store.sqlite")
    assert again.searched == 0 and again.skipped == 3
    assert len(again.rows) == 3 and all("array.rows=16" in r["config"] for r in again.rows)


def test_uniform_rows_take_the_accuracy_table_s_qat_measurement(tmp_path, monkeypatch):
    from accelsim.accuracy import table
    from accelsim.accuracy.evaluate import chip_datapath
    from accelsim.accuracy.provenance import tensors_sha256
    from accelsim.hw import load_hw

    spec = load_spec(write_spec(tmp_path))
    fp_model = torch.nn.Linear(3, 2)
    parent = tensors_sha256(fp_model.state_dict())
    label = chip_datapath(load_hw(CONFIGS / "int4_sparse.yaml")).label
    base = {"task": "wordnet_supersenses", "seed": "0", "measured_by": "integer_reference",
            "parent_sha256": parent, "datapath": label, "init": "finetuned", "fp_epochs": "8",
            "qat_epochs": "3", "batch_size": "16", "lr": "5e-05"}
    rows = [
        {**base, "recipe": "w8a8", "accuracy_pct": "85.5"},
        {**base, "recipe": "w4a4", "accuracy_pct": "80.0", "parent_sha256": "other"},
        {**base, "recipe": "w4a4_sp24", "accuracy_pct": "79.0", "seed": "1"},
        {**base, "recipe": "w4a4_sp24_ln_a8", "accuracy_pct": "81.0", "datapath": "fp32"},
        {**base, "recipe": "fp32", "accuracy_pct": "86.0", "measured_by": "pytorch_fp32"},
        # Trained under another schedule than the task's budget now gives.
        {**base, "recipe": "w8a8_sp24", "accuracy_pct": "84.0", "lr": "1e-4"},
    ]
    csv_path = tmp_path / "results.csv"
    table.write_csv(csv_path, list(rows[0]), rows)
    monkeypatch.setattr(table, "RESULTS_CSV", csv_path)
    # Only the row trained from this FP32 model, of this seed, on this chip's datapath.
    assert codesign_run.table_accuracy(spec, fp_model) == {"w8a8": 85.5}
    monkeypatch.setattr(table, "RESULTS_CSV", tmp_path / "none.csv")
    assert codesign_run.table_accuracy(spec, fp_model) == {}
