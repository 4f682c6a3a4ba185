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

from accelsim.accuracy.evaluate import (
    Fidelity,
    evaluate_accuracy,
    evaluate_float,
    generated_fidelity,
)
from accelsim.errors import AccelsimError

if TYPE_CHECKING:
    from torch import nn

    from accelsim.tasks.base import Task


@dataclass(frozen=True)
class AccuracyResult:
    """What ``run --accuracy`` reports for one (model, recipe).

    ``accuracy_pct`` is the task metric on the test split (None for a model without a task, with
    ``note`` saying why and ``fidelity`` set instead). ``measured_by``: ``integer_reference``
    (compressed recipes), ``pytorch_fp32`` (the fp32 recipe) or ``fidelity``.
    """

    model: str
    recipe: str
    task: str | None
    accuracy_pct: float | None
    measured_by: str
    fidelity: Fidelity | None = None
    note: str = ""


def run_dir(task_name: str, recipe_name: str, seed: int) -> Path:
    """Where ``experiments/accuracy`` trains (and caches) one (task, recipe, seed) run."""
    from accelsim.tasks._data import cache_dir

    return cache_dir("runs", task_name, f"{recipe_name}-seed{seed}")


def trained_model(task: Task, recipe_name: str, seed: int = 0) -> nn.Module:
    """The finished run of ``recipe_name`` on ``task``: compressed structure + trained weights."""
    import torch

    from accelsim.compress.apply import apply_recipe
    from accelsim.compress.recipe import recipe_from_dict
    from accelsim.compress.train import CHECKPOINT

    path = run_dir(task.name, recipe_name, seed) / CHECKPOINT
    command = f"python experiments/accuracy/{task.name}.py --recipes {recipe_name}"
    if not path.is_file():
        raise AccelsimError(
            f"accuracy: no trained run of recipe {recipe_name!r} on task {task.name!r} at "
            f"{path}; create it with: {command}"
        )
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    recipe = recipe_from_dict(ckpt["recipe"], where=str(path))
    if ckpt["optimizer"] is not None or ckpt["epoch_done"] < recipe.fp_epochs + recipe.epochs:
        raise AccelsimError(
            f"accuracy: the run at {path} stopped after epoch {ckpt['epoch_done']}; "
            f"finish it with: {command}"
        )
    model = task.build_model(seed)
    apply_recipe(model, recipe)  # float recipes leave the model as it is
    model.load_state_dict(ckpt["model"])
    return model.eval()


def accuracy_for(model_name: str, recipe_name: str, seed: int = 0) -> AccuracyResult:
    """Task accuracy of a trained (model, recipe) run, else fidelity when the model has no task."""
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
        return AccuracyResult(model_name, recipe.name, None, None, "fidelity",
                              generated_fidelity(model_name, recipe_name, seed), note)  # fmt: skip
    task = get_task(task_name)
    model = trained_model(task, recipe.name, seed)
    if recipe.quantized:
        value = evaluate_accuracy(task, model, export_int_model(model))
        return AccuracyResult(model_name, recipe.name, task_name, value, "integer_reference")
    return AccuracyResult(
        model_name, recipe.name, task_name, evaluate_float(task, model), "pytorch_fp32"
    )


