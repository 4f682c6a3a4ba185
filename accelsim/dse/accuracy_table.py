"""The accuracy axis of a sweep: one accuracy per (model, recipe) from the results CSV."""

from __future__ import annotations

import csv
from pathlib import Path

from accelsim.errors import AccelsimError


def read_accuracy_table(path: Path) -> list[tuple[str, str, float]]:
    """(model, recipe, accuracy_pct) from the accuracy results CSV; empty if it is absent.

    A recipe measured with several training seeds (one row each) gets the mean over its seeds,
    the figure results.md reports. A model measured on several tasks (``task`` column; e.g.
    minilm_l6 on two text tasks) contributes the rows of its default task
    (:func:`accelsim.tasks.task_for_model`), never an average across tasks.
    """
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        needed = {"model", "recipe", "accuracy_pct"}
        if not needed <= set(reader.fieldnames or ()):
            raise AccelsimError(
                f"{path}: accuracy results need columns model, recipe, accuracy_pct "
                f"(found {', '.join(reader.fieldnames or ())})"
            )
        by_run: dict[tuple[str, str, str], list[float]] = {}
        for line, row in enumerate(reader, start=2):
            if not row["accuracy_pct"]:  # a run not measured yet
                continue
            try:
                value = float(row["accuracy_pct"])
            except ValueError:
                raise AccelsimError(
                    f"{path}: line {line}: accuracy_pct {row['accuracy_pct']!r} is not a number"
                ) from None
            by_run.setdefault((row["model"], row.get("task", ""), row["recipe"]), []).append(value)
    tasks: dict[str, set[str]] = {}
    for model, task, _ in by_run:
        tasks.setdefault(model, set()).add(task)
    chosen = {model: _accuracy_task(model, found, path) for model, found in tasks.items()}
    return [(model, recipe, sum(v) / len(v)) for (model, task, recipe), v in by_run.items()
            if task == chosen[model]]


def _accuracy_task(model: str, tasks: set[str], path: Path) -> str:
    """The task whose rows stand for ``model``: its only one, else its default task."""
    if len(tasks) == 1:
        return next(iter(tasks))
    from accelsim.tasks import task_for_model

    default = task_for_model(model)
    if default not in tasks:
        raise AccelsimError(f"{path}: model {model!r} has rows for tasks "
                            f"{', '.join(sorted(tasks))} and none is its default task "
                            f"({default!r}); allowed: one task per model")
    return default
