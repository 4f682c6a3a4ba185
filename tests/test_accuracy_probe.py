"""Probes: logistic regression on frozen features, C chosen on validation, seconds on tiny tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from accelsim.accuracy import probe
from accelsim.accuracy.budgets import Budget
from accelsim.accuracy.probe import PROBE_CS, fit_probe, probe_row
from accelsim.accuracy.provenance import check_table
from accelsim.errors import AccelsimError
from accelsim.tasks import get_task


def _blobs(n: int, seed: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    centres = np.array([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]])
    return centres[labels] + spread * rng.standard_normal((n, 2)), labels


def test_c_is_chosen_on_validation_and_test_is_only_scored() -> None:
    train, val = _blobs(60, 0, 0.5), _blobs(30, 1, 0.5)
    fit = fit_probe(train, val, _blobs(30, 2, 0.5))
    # Separated blobs: every C classifies validation perfectly, so the strongest
    # regularization (smallest C) wins the tie.
    assert (fit.val_accuracy_pct, fit.c, fit.test_examples) == (100.0, PROBE_CS[0], 30)
    # A test split that disagrees with everything changes the score, never the choice.
    wrong = (_blobs(30, 2, 0.5)[0], (_blobs(30, 2, 0.5)[1] + 1) % 3)
    other = fit_probe(train, val, wrong)
    assert (other.c, other.weights_sha256) == (fit.c, fit.weights_sha256)
    assert other.accuracy_pct < 10.0


@pytest.mark.assets("fortunes")
def test_tiny_text_probes_make_rows_that_pass_the_table_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    monkeypatch.setattr(probe, "code_commit", lambda: "1" * 40)  # the suite may run on edits
    task = get_task("fortunes", limit=60, tiny=True)
    rows = [probe_row(task, name, "cmd") for name in ("linear_probe", "tfidf_probe")]
    for row in rows:
        assert 0.0 <= row.accuracy_pct <= 100.0 and row.test_examples == 60
        assert row.selection.startswith("C=") and row.parent_sha256 == ""
        assert row.measured_by == "logistic_regression"
    assert rows[0].checkpoint_sha256 != rows[1].checkpoint_sha256
    again = probe_row(task, "linear_probe", "cmd")  # deterministic: same C, same weights
    assert (again.accuracy_pct, again.checkpoint_sha256) == (rows[0].accuracy_pct,
                                                              rows[0].checkpoint_sha256)
    as_csv = [{k: "" if v is None else str(v) for k, v in vars(r).items()} for r in rows]
    budget = Budget(fp_epochs=1, qat_epochs=1, batch_size=8, fp_lr=1e-3, qat_lr=1e-3)
    assert check_table(as_csv, budgets={"fortunes": budget}) == []


@pytest.mark.assets("dataset-fashion-mnist")
def test_tfidf_probe_needs_text_and_unknown_probes_are_named() -> None:
    task = get_task("fashion_mnist", limit=20, tiny=True)
    with pytest.raises(AccelsimError, match="tfidf_probe: task 'fashion_mnist' has no texts"):
        probe_row(task, "tfidf_probe", "cmd")
    with pytest.raises(AccelsimError, match="probe: unknown name 'knn_probe'; allowed: "):
        probe_row(task, "knn_probe", "cmd")
