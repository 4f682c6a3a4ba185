"""accelsim.accuracy: fidelity arithmetic, float evaluation, and the integer-reference path."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from accelsim.accuracy import Fidelity, evaluate_float, fidelity, logits_of
from accelsim.errors import AccelsimError


class Affine(nn.Module):
    """logits = x * gain + shift (lets a test choose the error exactly)."""

    def __init__(self, gain: float = 1.0, shift: float = 0.0) -> None:
        super().__init__()
        self.gain, self.shift = gain, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain + self.shift


def _inputs(n_batches: int = 3) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [{"x": torch.randn(4, 10, generator=gen)} for _ in range(n_batches)]


def test_identical_models_agree_fully_with_infinite_sqnr() -> None:
    result = fidelity(Affine(), Affine(), _inputs())
    assert result == Fidelity(100.0, math.inf, 12)


def test_sqnr_matches_its_definition() -> None:
    inputs = _inputs()
    result = fidelity(Affine(), Affine(gain=1.1), inputs)
    signal = sum(float((b["x"].double() ** 2).sum()) for b in inputs)
    noise = sum(float(((0.1 * b["x"].double()) ** 2).sum()) for b in inputs)
    assert result.sqnr_db == pytest.approx(10 * math.log10(signal / noise))
    assert result.sqnr_db == pytest.approx(20.0)  # error is exactly 10 % of the signal
    assert result.top1_agreement_pct == 100.0  # a positive gain never changes the argmax


def test_top1_agreement_counts_changed_argmaxes() -> None:
    batch = {"x": torch.tensor([[0.0, 1.0], [0.0, 3.0]])}
    # shifting by -2 on every logit keeps the argmax; negating flips both rows
    assert fidelity(Affine(), Affine(gain=-1.0), [batch]).top1_agreement_pct == 0.0
    assert fidelity(Affine(), Affine(shift=-2.0), [batch]).top1_agreement_pct == 100.0


def test_fidelity_restores_training_mode() -> None:
    fp, q = Affine().train(), Affine().eval()
    fidelity(fp, q, _inputs(1))
    assert fp.training and not q.training


def test_fidelity_rejects_shape_mismatch() -> None:
    with pytest.raises(AccelsimError, match=r"shape \(4, 5\) differs"):
        fidelity(Affine(), lambda x: x[:, :5], _inputs(1))


def test_fidelity_rejects_no_inputs() -> None:
    with pytest.raises(AccelsimError, match="no inputs"):
        fidelity(Affine(), Affine(), [])


def test_logits_of_rejects_outputs_without_logits() -> None:
    with pytest.raises(AccelsimError, match="dict has no logits"):
        logits_of({"a": 1})


def test_evaluate_float_on_a_constant_model() -> None:
    class Task:
        name, num_labels = "toy", 2

        def batches(self, split, batch_size, seed):  # noqa: ANN001, ANN202
            from accelsim.tasks.base import Batch

            yield Batch({"x": torch.ones(3, 2)}, torch.tensor([0, 1, 1]))

        def metric(self, logits, labels):  # noqa: ANN001, ANN202
            return float((logits.argmax(-1) == labels).double().mean() * 100)

    always_one = Affine(gain=0.0, shift=0.0)  # logits [0, 0] ... plus a bias toward label 1
    always_one.shift = torch.tensor([0.0, 1.0])
    assert evaluate_float(Task(), always_one) == pytest.approx(200 / 3)


def test_model_without_task_reports_fidelity_through_the_integer_reference() -> None:
    from accelsim.accuracy import accuracy_for

    torch.set_num_threads(1)
    result = accuracy_for("vit_tiny", "w4a4_sp24")
    assert result.task is None and result.accuracy_pct is None
    assert result.measured_by == "fidelity" and "no task" in result.note
    fid = result.fidelity
    assert fid is not None and fid.num_examples == 8
    assert 0.0 <= fid.top1_agreement_pct <= 100.0
    assert 3.0 < fid.sqnr_db < 60.0  # 4-bit + 2:4 is lossy but far from noise
    assert accuracy_for("vit_tiny", "fp32").fidelity == Fidelity(100.0, math.inf, 0)


def test_missing_trained_run_names_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from accelsim.accuracy import trained_model
    from accelsim.tasks import get_task

    monkeypatch.setenv("ACCELSIM_CACHE", str(tmp_path))
    with pytest.raises(
        AccelsimError, match="python experiments/accuracy/fortunes.py --recipes w4a4"
    ):
        trained_model(get_task("fortunes", tiny=True), "w4a4")
    assert list(tmp_path.iterdir()) == []  # nothing to load: no run folder left behind
