"""Accuracy of compressed models on real tasks, and the pipeline that makes the results table.

* ``evaluate``: a task's metric on a split, through the integer reference or PyTorch, and the
  fidelity of a compressed model without a task.
* ``runs``: trained runs (where they live, loading one) and what ``run --accuracy`` reports.
* ``budgets``: the table's recipes and each task's CPU-sized training budget.
* ``table``: the results CSV rows and results.md.
* ``pipeline``: FP32 fine-tune -> QAT per recipe -> integer reference, one row per recipe.
"""

from accelsim.accuracy.evaluate import (
    Fidelity,
    evaluate_accuracy,
    evaluate_float,
    fidelity,
    generated_fidelity,
    logits_of,
)
from accelsim.accuracy.runs import AccuracyResult, accuracy_for, run_dir, trained_model

__all__ = [
    "AccuracyResult", "Fidelity", "accuracy_for", "evaluate_accuracy", "evaluate_float",
    "fidelity", "generated_fidelity", "logits_of", "run_dir", "trained_model",
]
