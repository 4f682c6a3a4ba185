"""The accuracy model's check: the sampler of extra assignments, the summary math, the
``--quality`` run end to end on the tiny spec (and its resumption), bad input as one line."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from accelsim.accuracy.budgets import BUDGETS
from accelsim.cli import main
from accelsim.codesign import run as codesign_run
from accelsim.codesign.accuracy import FACTORS, AccuracyModel, Sensitivity
from accelsim.codesign.groups import Format
from accelsim.codesign.quality import (
    PAIR_COLUMNS,
    candidate_pool,
    markdown,
    sample_assignments,
    summarize,
)
from accelsim.codesign.spec import SearchSpace
from accelsim.errors import AccelsimError
from tests.test_codesign import SPEC, TINY_BUDGET, write_spec

OPTIONS = SearchSpace("block", (4, 8), (4, 8), ("dense", "2:4")).options
W8A8, LOWEST = Format(8, 8, False), Format(4, 4, True)


def sensitivity(groups: int = 4) -> Sensitivity:
    """Drops of 1, 2, 4, ... points: every set of lowered (group, factor)s has its own loss."""
    drop = 2.0 ** np.arange(groups * len(FACTORS)).reshape(groups, len(FACTORS))
    return Sensitivity(tuple(f"block{i}" for i in range(groups)), 90.0, 90.0, drop / 1000,
                       np.zeros_like(drop), 100)


def predicted(sens: AccuracyModel, assignment: tuple[Format, ...]) -> float:
    return sens.predict(codesign_run.ALL_FORMATS, assignment)


def test_sampler_is_deterministic_spread_and_distinct():
    sens = sensitivity()
    picks = sample_assignments(sens, OPTIONS, 10, seed=0)
    assert picks == sample_assignments(sens, OPTIONS, 10, seed=0)
    assert picks != sample_assignments(sens, OPTIONS, 10, seed=1)
    assert len(set(picks)) == 10 and all(len(a) == 4 and set(a) <= set(OPTIONS) for a in picks)
    values = [predicted(sens, a) for a in picks]
    assert len(set(values)) == 10
    # from every group at the lowest format to every group at the reference
    assert min(values) == predicted(sens, (LOWEST,) * 4)
    assert max(values) == predicted(sens, (W8A8,) * 4) == 90.0
    # a prefix: asking for fewer gives the first of them
    assert sample_assignments(sens, OPTIONS, 4, seed=0) == picks[:4]


def test_sampler_skips_measured_and_fills_the_gap_between_them():
    sens = sensitivity()
    ends = [(W8A8,) * 4, (LOWEST,) * 4]
    picks = sample_assignments(sens, OPTIONS, 5, seed=0, measured=ends)
    assert not set(picks) & set(ends)
    first = predicted(sens, picks[0])
    low, high = predicted(sens, ends[1]), predicted(sens, ends[0])
    assert low + (high - low) / 3 < first < high - (high - low) / 3
    # a rerun that finds the first two picks measured picks the rest, in the same order
    assert sample_assignments(sens, OPTIONS, 3, seed=0, measured=ends + picks[:2]) == picks[2:]


def test_sampler_keeps_to_the_search_options_and_dedupes():
    dense_w4 = SearchSpace("block", (4,), (4, 8), ("dense",)).options
    pool = candidate_pool(2, dense_w4, seed=0)
    # two groups, two formats each: four distinct assignments however many draws
    assert sorted(pool) == sorted({(a, b) for a in dense_w4 for b in dense_w4})
    picks = sample_assignments(sensitivity(2), dense_w4, 10, seed=0)
    assert len(picks) == 4 == len(set(picks))


def test_summary_math_on_known_pairs():
    q = summarize("t", "m", [50, 60, 70, 80], [55, 58, 75, 90])
    assert q.n == 4 and q.spearman_rho == pytest.approx(1.0)
    assert q.mae_pct == pytest.approx((5 + 2 + 5 + 10) / 4)
    assert q.mean_signed_error_pct == pytest.approx((-5 + 2 - 5 - 10) / 4)
    # one swapped pair of neighbours: rho = 1 - 6 * 2 / (4 * 15)
    swapped = summarize("t", "m", [1, 2, 3, 4], [2, 1, 3, 4])
    assert swapped.spearman_rho == pytest.approx(0.8)
    assert summarize("t", "m", [4, 3, 2, 1], [1, 2, 3, 4]).spearman_rho == pytest.approx(-1.0)
    # too few pairs or a constant side: no rank correlation, the errors still
    few = summarize("t", "m", [1, 2], [2, 4])
    assert math.isnan(few.spearman_rho) and few.mae_pct == pytest.approx(1.5)
    assert math.isnan(summarize("t", "m", [1, 1, 1], [1, 2, 3]).spearman_rho)
    with pytest.raises(AccelsimError, match="as many predictions as measurements"):
        summarize("t", "m", [1, 2], [1])


def test_markdown_scores_both_models_on_held_out_pairs_only():
    rows = [{"task": t, "kind": k, "config": f"block0=w{w}a8", "anchor": anchor,
             "calibration_val_pct": p, "anchored_val_pct": q, "qat_val_pct": m,
             "qat_test_pct": m, "command": f"python -m accelsim codesign {t}"}
            for t, k, w, anchor, p, q, m in (
                ("a", "sampled", 4, False, 1.0, 2.5, 2.0),
                ("a", "sampled", 8, False, 2.0, 3.5, 3.0),
                ("a", "searched", 4, False, 3.0, 4.0, 5.0),
                ("a", "uniform", 8, True, 9.0, 7.0, 7.0),  # an anchor: in the list, not scored
                ("b", "sampled", 8, False, 4.0, math.nan, 4.0))]
    text = markdown(rows)
    assert text.startswith("# How good are the co-design accuracy models")
    assert "| a | calibration | 3 | 1.000 |" in text and "| a | qat_anchored | 3 | 1.000 |" in text
    # calibration on a: errors -1, -1, -2 -> MAE 1.33; anchored: 0.5, 0.5, -1 -> 0.67, mean 0
    assert "| 1.33 | -1.33 |" in text and "| 0.67 | 0.00 |" in text
    assert "| b | calibration | 1 | n/a | n/a | 0.00 | 0.00 |" in text
    assert "| b | qat_anchored |" not in text  # no anchors on b: that model is not scored
    assert "| uniform (anchor) | block0=w8a8 | 9.00 | 7.00 |" in text
    assert text.count("| sampled |") == 3 and "`python -m accelsim codesign b`" in text


def test_anchored_model_reproduces_its_anchors_and_shares_loss_by_kl():
    from accelsim.codesign.anchors import anchored_model

    groups = ("block0", "block1")
    drop = np.ones((2, 3))
    # block0 three times as sensitive as block1 to every factor
    kl = np.array([[0.3, 0.3, 0.6], [0.1, 0.1, 0.2]])
    sens = Sensitivity(groups, 90.0, 80.0, drop, kl, 100)
    model = anchored_model(sens, reference_pct=89.0, four_bit_pct=87.0, sparse_pct=83.0)
    assert model.reference_loss_pct == pytest.approx(1.0)
    w4a4, w4a4_sp24 = Format(4, 4, False), Format(4, 4, True)
    assert predicted(model, (W8A8, W8A8)) == pytest.approx(89.0)
    assert predicted(model, (w4a4, w4a4)) == pytest.approx(87.0)
    assert predicted(model, (w4a4_sp24, w4a4_sp24)) == pytest.approx(83.0)
    # 2:4 in block0 alone: 3/4 of the 4-point 2:4 loss; in block1 alone: 1/4
    assert predicted(model, (w4a4_sp24, w4a4)) == pytest.approx(84.0)
    assert predicted(model, (w4a4, w4a4_sp24)) == pytest.approx(86.0)
    # weights and activations share the 2-point 4-bit loss by their KLs: block0's weights 3/8
    assert predicted(model, (Format(4, 8, False), W8A8)) == pytest.approx(89.0 - 0.75)
    # a lowered anchor that scored higher costs nothing, never a gain
    flat = anchored_model(sens, reference_pct=91.0, four_bit_pct=92.0, sparse_pct=92.5)
    assert flat.reference_loss_pct == 0.0
    assert predicted(flat, (w4a4_sp24, w4a4_sp24)) == pytest.approx(90.0)
    # an untrained model's all-zero KLs: every measured (group, factor) alike
    even = anchored_model(Sensitivity(groups, 90.0, 80.0, drop, np.zeros((2, 3)), 100),
                          89.0, 87.0, 83.0)
    assert predicted(even, (w4a4_sp24, w4a4)) == pytest.approx(85.0)


@pytest.mark.assets("wordnet-base")
def test_quality_end_to_end_and_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ACCELSIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(BUDGETS, "wordnet_supersenses", TINY_BUDGET)
    torch.set_num_threads(1)
    spec = write_spec(tmp_path)
    out = tmp_path / "quality.csv"
    other = pd.DataFrame([{"task": "fashion_mnist", "kind": "sampled", "config": "x",
                           "anchor": False, "calibration_val_pct": 1.0,
                           "anchored_val_pct": 1.5, "qat_val_pct": 2.0, "qat_test_pct": 3.0,
                           "command": "c"}])
    other.to_csv(out, index=False)

    def argv(pairs: int) -> list[str]:
        return ["codesign", str(spec), "--out", str(tmp_path / "store.sqlite"), "--results",
                str(tmp_path / "results.csv"), "--quality", str(pairs), "--quality-out",
                str(out), "--no-progress"]

    assert main(argv(3)) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == list(PAIR_COLUMNS)
    mine = frame[frame["task"] == "wordnet_supersenses"]
    assert len(mine) == 3 and (frame["task"] == "fashion_mnist").sum() == 1  # others kept
    # the verified searched point and two sampled ones (no accuracy table rows for tiny models)
    assert sorted(mine["kind"]) == ["sampled", "sampled", "searched"]
    assert mine["config"].is_unique
    assert mine[["qat_val_pct", "qat_test_pct"]].stack().between(0, 100).all()
    text = (tmp_path / "quality.md").read_text()
    assert text.startswith("# How good are the co-design accuracy models")
    assert "| wordnet_supersenses | calibration | 3 |" in text
    assert "| wordnet_supersenses | qat_anchored |" not in text  # no table rows, no anchors
    assert text.count("| sampled |") == 3
    assert "wordnet_supersenses accuracy model calibration: 3 held-out pairs" in \
        capsys.readouterr().out

    # Rerun (and a smaller N): everything comes from the store, nothing is trained again.
    def refuse(*_, **__):
        raise AssertionError("measured again")

    monkeypatch.setattr(codesign_run, "measure_sensitivity", refuse)
    monkeypatch.setattr("accelsim.codesign.verify.verify_assignment", refuse)
    assert main(argv(3)) == 0
    assert pd.read_csv(out).equals(frame)
    assert main(argv(2)) == 0
    assert len(pd.read_csv(out)) == 4  # every measured pair is reported


COST_ONLY = (SPEC.replace("task: wordnet_supersenses\ntiny: true\nlimit: 20\n",
                          "model: bert_tiny\ninput_shape: {{seq_len: 48}}\n")
             .replace("accuracy_budget_pct: [1.0]\n", "")
             .replace("verify_points: 1", "verify_points: 0"))


@pytest.mark.parametrize(("extra", "spec_text", "message"), [
    (["--quality", "0"], SPEC, r"--quality 0: must be an integer >= 1"),
    (["--quality", "3", "--no-verify"], SPEC, r"--quality with --no-verify: .*drop one"),
    (["--quality", "3"], COST_ONLY, r"--quality: .*spec\.yaml has no task and "
                                    r"accuracy_budget_pct.*; allowed: a spec with both"),
    (["--quality", "3", "--quality-out", "{tmp}/q.txt"], SPEC,
     r"--quality-out .*q\.txt: the file name must end in \.csv"),
    (["--quality", "3", "--quality-out", "{tmp}/r.csv"], SPEC,
     r"--quality-out .*r\.csv: the same file as --results"),
    (["--quality", "3", "--quality-out", "{tmp}/nowhere/q.csv"], SPEC,
     r"--quality-out .*q\.csv: folder .*nowhere does not exist"),
])
def test_bad_quality_requests_are_one_line(tmp_path, capsys, extra, spec_text, message):
    spec = write_spec(tmp_path, spec_text)
    argv = ["codesign", str(spec), "--results", str(tmp_path / "r.csv"),
            *(a.format(tmp=tmp_path) for a in extra)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("accelsim: error: ") and "\n" not in err
    assert re.search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


def test_an_existing_quality_file_of_another_kind_is_one_line(tmp_path, capsys):
    spec = write_spec(tmp_path)
    (tmp_path / "q.csv").write_text("a,b\n1,2\n")
    argv = ["codesign", str(spec), "--results", str(tmp_path / "r.csv"), "--quality", "3",
            "--quality-out", str(tmp_path / "q.csv")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--quality-out" in err and "no column task" in err and "\n" not in err
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "results").exists()


def test_pairs_take_this_spec_s_measurements_and_only_plain_uniform_recipes(tmp_path,
                                                                            monkeypatch):
    from accelsim.accuracy import table
    from accelsim.accuracy.evaluate import chip_datapath
    from accelsim.accuracy.provenance import tensors_sha256
    from accelsim.codesign.groups import Groups
    from accelsim.codesign.quality import measured_pairs
    from accelsim.codesign.spec import load_spec
    from accelsim.hw import load_hw
    from accelsim.tasks import get_task
    from tests.test_codesign import CONFIGS

    spec = load_spec(write_spec(tmp_path))
    task = get_task("wordnet_supersenses", limit=20, tiny=True)
    fp_model = torch.nn.Linear(3, 2)
    groups = Groups("block", ("block0", "block1"), ((), ()))
    sens = sensitivity(2)
    budget = BUDGETS["wordnet_supersenses"]
    base = {"task": "wordnet_supersenses", "seed": "0", "measured_by": "integer_reference",
            "parent_sha256": tensors_sha256(fp_model.state_dict()),
            "datapath": chip_datapath(load_hw(CONFIGS / "int4_sparse.yaml")).label,
            "init": "finetuned", "qat_epochs": str(budget.qat_epochs),
            "batch_size": str(budget.batch_size), "lr": str(budget.qat_lr),
            "accuracy_pct": "80.0", "val_accuracy_pct": "81.0"}
    rows = [{**base, "recipe": recipe} for recipe in (
        "w8a8", "w4a4_sp24",  # plain: in
        "w4a4_sp24_smooth", "w4a4_sp24_wanda", "w8a8_kd_unlabeled",  # other training: out
        "w4a4_sp24_ln_a8",  # per-site activations under block grouping: out
    )] + [{**base, "recipe": "w4a4", "qat_epochs": str(budget.qat_epochs + 1)}]  # schedule
    csv_path = tmp_path / "results.csv"
    table.write_csv(csv_path, list(rows[0]), rows)
    monkeypatch.setattr(table, "RESULTS_CSV", csv_path)
    store = codesign_run._Store(tmp_path / "store.sqlite")
    qat_budget, datapath = codesign_run.qat_setup(spec, task, None)
    mine = "block0=w4a8 block1=w8a8_sp24"
    store.set_meta(f"qat:{codesign_run.qat_key(spec, task, qat_budget, datapath, mine)}",
                   {"config": mine, "test_pct": 70.0, "val_pct": 71.0, "kind": "sampled"})
    old = "block0=w4a4 block1=w4a4"  # stored before kinds were recorded: a searched point
    store.set_meta(f"qat:{codesign_run.qat_key(spec, task, qat_budget, datapath, old)}",
                   {"config": old, "test_pct": 60.0, "val_pct": 61.0})
    store.set_meta("qat:another-spec", {"config": mine, "test_pct": 1.0, "val_pct": 1.0})
    try:
        pairs = measured_pairs(spec, store, task, fp_model, groups, sens, None)
    finally:
        store.close()
    assert [(p.kind, p.config) for p in pairs] == [
        ("searched", old), ("uniform", "w4a4_sp24 | block0=w4a4_sp24 block1=w4a4_sp24"),
        ("uniform", "w8a8 | block0=w8a8 block1=w8a8"), ("sampled", mine)]
    assert [(p.qat_val_pct, p.qat_test_pct) for p in pairs] == [
        (61.0, 60.0), (81.0, 80.0), (81.0, 80.0), (71.0, 70.0)]
    assert pairs[2].calibration_val_pct == 90.0 == predicted(sens, pairs[2].assignment)
    assert pairs[1].calibration_val_pct == predicted(sens, (LOWEST, LOWEST)) < 90.0
    assert [p.anchor for p in pairs] == [False, True, True, False]
    # W4A4 was trained under another schedule: no anchor for 4 bits, no anchored prediction
    assert all(math.isnan(p.anchored_val_pct) for p in pairs)
