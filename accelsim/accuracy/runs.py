"""Trained runs of the accuracy pipeline: where they live, loading one, and ``run --accuracy``.

* :func:`run_dir`: the cache folder of one (task, recipe, seed) run.
* :func:`trained_model`: a finished run loaded (compressed structure + trained weights).
* :func:`accuracy_for`: what ``run --accuracy`` reports for a (zoo model, recipe) pair: the task
  metric of the run trained by ``experiments/accuracy/<task>.py`` (cached under
  :func:`run_dir`), or, for a model without a task, the fidelity of a calibrated (not trained)
  compressed copy on generated inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from accelsim.accuracy.budgets import BASELINE, BUDGETS, Budget, budgeted
from accelsim.accuracy.evaluate import (
    ChipDatapath,
    Fidelity,
    chip_datapath,
    evaluate_accuracy,
    evaluate_float,
    generated_fidelity,
    table_datapath,
)
from accelsim.accuracy.provenance import read_provenance, stale_reason
from accelsim.errors import AccelsimError

if TYPE_CHECKING:
    from torch import nn

    from accelsim.hw import HwConfig
    from accelsim.tasks.base import Task


@dataclass(frozen=True)
class AccuracyResult:
    """What ``run --accuracy`` reports for one (model, recipe).

    ``accuracy_pct`` is the task metric on the test split (None for a model without a task, with
    ``note`` saying why and ``fidelity`` set instead). ``measured_by``: ``integer_reference``
    (compressed recipes), ``pytorch_fp32`` (the fp32 recipe) or ``fidelity``. ``datapath``: the
    chip datapath the integer reference executed (``ChipDatapath.label``; empty for fp32).
    """

    model: str
    recipe: str
    task: str | None
    accuracy_pct: float | None
    measured_by: str
    fidelity: Fidelity | None = None
    note: str = ""
    datapath: str = ""


def run_dir(task_name: str, recipe_name: str, seed: int) -> Path:
    """Where ``experiments/accuracy`` trains (and caches) one (task, recipe, seed) run; not
    created here (training creates it, loading never does)."""
    from accelsim.tasks._data import cache_root

    return cache_root() / "runs" / task_name / f"{recipe_name}-seed{seed}"


def trained_model(task: Task, recipe_name: str, seed: int = 0,
                  budget: Budget | None = None) -> nn.Module:
    """The finished run of ``recipe_name`` on ``task``: compressed structure + trained weights.

    Refused (one line with the command that re-makes it) unless the run was made by the current
    recipe under ``budget`` (default: the task's, ``BUDGETS``), from the current FP32 run of the
    seed (compressed recipes with ``init: finetuned``), by the current training code.
    """
    import torch

    from accelsim.compress.apply import apply_recipe
    from accelsim.compress.recipe import load_recipe, recipe_from_dict
    from accelsim.compress.train import CHECKPOINT

    budget = budget if budget is not None else _budget_of(task.name)
    directory = run_dir(task.name, recipe_name, seed)
    path = directory / CHECKPOINT
    command = (f"python experiments/accuracy/{task.name}.py --recipes {recipe_name} "
               f"--seeds {seed}")
    if not path.is_file():
        raise AccelsimError(
            f"accuracy: no trained run of recipe {recipe_name!r} on task {task.name!r} at "
            f"{path}; create it with: {command}"
        )
    recipe = budgeted(load_recipe(recipe_name), budget)
    parent = ""
    if recipe.quantized and recipe.init == "finetuned":
        fp_dir = run_dir(task.name, BASELINE, seed)
        fp_saved = read_provenance(fp_dir)
        fp_reason = stale_reason(fp_saved, budgeted(load_recipe(BASELINE), budget), "")
        if fp_reason is None and fp_saved is not None and not fp_saved.checkpoint_sha256:
            fp_reason = "it has not finished"
        if fp_reason is not None:
            raise AccelsimError(f"accuracy: refused {directory}: its FP32 parent run {fp_dir} "
                                f"is not current ({fp_reason}); re-make both with: rm -r "
                                f"{fp_dir} {directory} && {command}")
        parent = fp_saved.checkpoint_sha256 if fp_saved is not None else ""
    reason = stale_reason(read_provenance(directory), recipe, parent)
    if reason is not None:
        raise AccelsimError(f"accuracy: refused {directory}: {reason}; re-make it with: "
                            f"rm -r {directory} && {command}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    saved_recipe = recipe_from_dict(ckpt["recipe"], where=str(path))
    if ckpt["optimizer"] is not None or \
            ckpt["epoch_done"] < saved_recipe.fp_epochs + saved_recipe.epochs:
        raise AccelsimError(
            f"accuracy: the run at {path} stopped after epoch {ckpt['epoch_done']}; "
            f"finish it with: {command}"
        )
    model = task.build_model(seed)
    apply_recipe(model, saved_recipe)  # float recipes leave the model as it is
    model.load_state_dict(ckpt["model"])
    return model.eval()


def _budget_of(task_name: str) -> Budget:
    if task_name not in BUDGETS:
        raise AccelsimError(f"accuracy: task {task_name!r} has no training budget; allowed: "
                            f"{', '.join(BUDGETS)}")
    return BUDGETS[task_name]


def _chip_of(hw: HwConfig | None) -> ChipDatapath:
    return table_datapath() if hw is None else chip_datapath(hw)


def accuracy_for(model_name: str, recipe_name: str, seed: int = 0,
                 hw: HwConfig | None = None) -> AccuracyResult:
    """Task accuracy of a trained (model, recipe) run, else fidelity when the model has no task,
    with the compressed model executed on ``hw``'s datapath (default: the table's,
    :func:`~accelsim.accuracy.evaluate.table_datapath`)."""
    from accelsim.compress.export import export_int_model
    from accelsim.compress.recipe import load_recipe
    from accelsim.tasks import get_task, task_for_model

    recipe = load_recipe(recipe_name)
    task_name = task_for_model(model_name)
    if task_name is None:
        note = (
            f"model {model_name!r} has no task with real data and pre-trained weights "
            "(accelsim.tasks covers minilm_l6, dinov2_s, whisper_tiny_en), so there is no "
            "accuracy to measure; reported instead: fidelity of the calibrated compressed model "
            "vs its FP32 self on generated inputs"
        )
        if not recipe.quantized:
            return AccuracyResult(model_name, recipe.name, None, None, "fidelity",
                                  Fidelity(100.0, math.inf, 0), note)  # fmt: skip
        chip = _chip_of(hw)
        return AccuracyResult(model_name, recipe.name, None, None, "fidelity",
                              generated_fidelity(model_name, recipe_name, chip.datapath, seed),
                              note, chip.label)  # fmt: skip
    task = get_task(task_name)
    model = trained_model(task, recipe.name, seed)
    if recipe.quantized:
        chip = _chip_of(hw)
        value = evaluate_accuracy(task, model, export_int_model(model), datapath=chip.datapath)
        return AccuracyResult(model_name, recipe.name, task_name, value, "integer_reference",
                              datapath=chip.label)
    return AccuracyResult(
        model_name, recipe.name, task_name, evaluate_float(task, model), "pytorch_fp32"
    )


