"""Verification of a searched point: QAT fine-tuning of its assignment, then the integer reference
on the test split.

The fine-tune is the accuracy pipeline's (``accelsim.compress.train.finetune``: calibrated clips,
scheduled dropout, a checkpoint per epoch, resumption, a seed) from the task's FP32 model, with
the QAT recipe's hyperparameters under the task's training budget. ``finetune`` compresses the
model with ``apply_recipe``, which knows one weight width and sparsity per model; a per-group
assignment is put in its place for the duration of the call (:func:`_compressing_with`). An
``apply`` argument on ``finetune`` would make that a plain call (an API change for
``accelsim.compress``, not made here).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from accelsim.codesign.accuracy import base_recipe, compress_assignment
from accelsim.codesign.groups import Format, Grouping

if TYPE_CHECKING:
    from torch import nn

    from accelsim.accuracy.budgets import Budget
    from accelsim.compress.recipe import Recipe
    from accelsim.ref.datapath import Datapath
    from accelsim.tasks.base import Task


@contextlib.contextmanager
def _compressing_with(grouping: Grouping, assignment: Mapping[str, Format]) -> Iterator[None]:
    from accelsim.compress import train

    original = train.apply_recipe

    def apply(model: nn.Module, recipe: Recipe):  # type: ignore[no-untyped-def]
        return compress_assignment(model, recipe, grouping, assignment)

    train.apply_recipe = apply
    try:
        yield
    finally:
        train.apply_recipe = original


def qat_recipe_for(recipe: Recipe, budget: Budget) -> Recipe:
    """The QAT recipe's hyperparameters under ``budget``, QAT only (the FP32 stage is done)."""
    from accelsim.accuracy.budgets import budgeted

    return dataclasses.replace(base_recipe(budgeted(recipe, budget)), fp_epochs=0,
                               init="finetuned")


def verify_assignment(task: Task, fp_model: nn.Module, recipe: Recipe, budget: Budget,
                      grouping: Grouping, assignment: Mapping[str, Format], seed: int,
                      out_dir: Path, datapath: Datapath) -> tuple[float, float]:
    """(test accuracy [%] by the integer reference on ``datapath``, validation metric after
    QAT) of ``assignment`` fine-tuned from ``fp_model``; the run lives in ``out_dir``
    (resumable)."""
    from accelsim.accuracy.evaluate import evaluate_accuracy
    from accelsim.compress.export import export_int_model
    from accelsim.compress.train import finetune

    qat = qat_recipe_for(recipe, budget)
    model = copy.deepcopy(fp_model).train()
    with _compressing_with(grouping, assignment):
        result = finetune(
            model,
            lambda epoch: task.batches("train", qat.batch_size, seed=seed * 1000 + epoch),
            lambda: task.batches("val", 64, seed=0),
            task.metric, qat, seed=seed, out_dir=out_dir)
    trained = result.model.eval()
    accuracy = evaluate_accuracy(task, trained, export_int_model(trained), "test",
                                 datapath=datapath)
    return accuracy, result.metric
