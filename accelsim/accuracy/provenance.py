"""Where a result came from: hashes of weights, code and data, and the results-table check.

Every row of ``experiments/accuracy/results.csv`` carries

* ``code_commit``: the git commit the row was measured at (``+dirty`` when the package or the
  recipes differed from it; the table check rejects such rows),
* ``checkpoint_sha256``: :func:`tensors_sha256` of the trained weights the row measured (for a
  probe, of the fitted classifier),
* ``parent_sha256``: the same hash of the FP32 weights a compressed run started from (empty for
  FP32, for ``init: pretrained`` runs and for probes),
* ``split_sha256``: :func:`split_sha256`, the task's train/val/test contents.

The speech-recognition rows (``asr_wer.csv``) also carry :func:`platform_label`: a trained
checkpoint is bit-identical on one platform (CPU and torch build), not across platforms, whose
float kernels sum in other orders (docs/accuracy.md, "Reproducible where").

Each trained run also keeps a ``provenance.json`` beside its checkpoint (:class:`RunProvenance`):
the budgeted recipe, the parent hash and :func:`code_sha256` of the code that trains a model. A
run whose recipe, parent or code differs from the current ones is refused, never reused
(:func:`stale_reason`). :func:`check_table` is the check CI runs on the committed table.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import platform
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelsim.accuracy.budgets import (
    BASELINE,
    BUDGETS,
    PROBES,
    ROW_RECIPES,
    Budget,
    schedule_of,
)
from accelsim.accuracy.evaluate import table_datapath
from accelsim.compress.recipe import Recipe, load_recipe, recipe_to_dict, same_recipe
from accelsim.errors import AccelsimError
from accelsim.files import PACKAGE_ROOT, source_digest, write_text_atomic

if TYPE_CHECKING:
    import torch

    from accelsim.tasks.base import Task

REPO = PACKAGE_ROOT.parent
# The source that decides what a training run produces (fine-tuning and its fake quantization,
# the task data, the models, and the drivers that feed them: the pipeline's batch seeds, the
# recognizer's teacher-forced batches); a checkpoint made by other code is not reused.
TRAINING_CODE = ("compress", "tasks", "zoo", "accuracy/pipeline.py", "accuracy/asr.py")
PROVENANCE_FILE = "provenance.json"
PROVENANCE_COLUMNS = ("code_commit", "checkpoint_sha256", "parent_sha256", "split_sha256")
DIRTY = "+dirty"


def tensors_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's contents: every key, dtype, shape and the raw bytes, in key
    order (independent of how the file holding it was serialized)."""
    import torch

    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def array_sha256(*arrays: Any) -> str:
    """SHA-256 of numpy arrays' dtypes, shapes and bytes (a fitted probe's weights)."""
    import numpy as np

    digest = hashlib.sha256()
    for array in arrays:
        a = np.ascontiguousarray(array)
        digest.update(f"{a.dtype}|{a.shape}|".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def code_sha256() -> str:
    """SHA-256 of the source of :data:`TRAINING_CODE` (:func:`accelsim.files.source_digest`)."""
    return source_digest(*TRAINING_CODE)


def code_commit() -> str:
    """``git rev-parse HEAD`` of the working tree, ``+dirty`` when the package or the recipes
    have uncommitted changes; ``unknown`` outside a git checkout."""
    try:
        head = _git("rev-parse", "HEAD")
        changed = _git("status", "--porcelain", "--", "accelsim", "experiments/recipes")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (DIRTY if changed else "")


@functools.cache
def platform_label() -> str:
    """The CPU and torch build that ran this process, e.g. ``x86_64 GenuineIntel 6/143 AVX512
    AMX, torch 2.13.0+cpu``: the CPU's vendor, family and model (``/proc/cpuinfo``, where there
    is one), the vector extension torch's kernels dispatch to, and whether the CPU has AMX
    (matrix tiles that oneDNN may use)."""
    import torch

    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            fields.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    cpu = (f"{fields['vendor_id']} {fields['cpu family']}/{fields['model']}"
           if {"vendor_id", "cpu family", "model"} <= fields.keys()
           else platform.processor() or "unknown cpu")
    amx = " AMX" if "amx_tile" in fields.get("flags", "").split() else ""
    return (f"{platform.machine()} {cpu} {torch.backends.cpu.get_cpu_capability()}{amx}, "
            f"torch {torch.__version__}")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout.strip()


@functools.cache
def split_sha256(task: Task) -> str:
    """SHA-256 of the task's train, val and test splits: every batch's inputs and labels in
    the order the pipeline reads them (batches of 256; train in seed-0 order)."""
    digest = hashlib.sha256()
    for split in ("train", "val", "test"):
        for batch in task.batches(split, 256, seed=0):
            for key in sorted(batch.inputs):
                digest.update(key.encode())
                digest.update(tensors_sha256({key: batch.inputs[key]}).encode())
            digest.update(tensors_sha256({"labels": batch.labels}).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class RunProvenance:
    """What a run directory was trained from; ``checkpoint_sha256`` is set once it finished."""

    recipe: dict[str, Any]  # recipe_to_dict of the budgeted recipe
    parent_sha256: str  # tensors_sha256 of the initial weights, "" from the pre-trained model
    code_sha256: str
    code_commit: str
    checkpoint_sha256: str = ""

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        write_text_atomic(directory / PROVENANCE_FILE,
                          json.dumps(dataclasses.asdict(self), indent=1) + "\n")


def start_run(directory: Path, recipe: Recipe, parent_sha256: str, remake: str) -> None:
    """Before training a run in ``directory``: a checkpoint there must be this run's
    (:func:`stale_reason`; else one line with ``remake``, the command that re-makes it); a
    fresh run gets its provenance written."""
    from accelsim.compress.train import CHECKPOINT

    if (directory / CHECKPOINT).is_file():
        reason = stale_reason(read_provenance(directory), recipe, parent_sha256)
        if reason is not None:
            raise AccelsimError(f"run {directory}: refused, {reason}; re-make it with: "
                                f"rm -r {directory} && {remake}")
    else:
        RunProvenance(recipe_to_dict(recipe), parent_sha256, code_sha256(),
                      code_commit()).write(directory)


def finish_run(directory: Path, state: Mapping[str, torch.Tensor]) -> None:
    """After training: the provenance records the hash of the trained weights ``state`` (once;
    a reused run keeps its hash)."""
    saved = read_provenance(directory)
    if saved is not None and not saved.checkpoint_sha256:
        dataclasses.replace(saved, checkpoint_sha256=tensors_sha256(state)).write(directory)


def read_provenance(directory: Path) -> RunProvenance | None:
    """The run's provenance, None when it has none (a run made before it was recorded)."""
    path = directory / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        return RunProvenance(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise AccelsimError(f"{path}: not a run provenance file ({exc}); allowed: the JSON "
                            f"the accuracy pipeline writes") from None


def stale_reason(saved: RunProvenance | None, recipe: Recipe, parent_sha256: str) -> str | None:
    """Why a run made with ``saved`` provenance is not the run of ``recipe`` from the weights
    hashed ``parent_sha256`` under the current code; None when it is."""
    if saved is None:
        return "it has no provenance.json (made before provenance was recorded)"
    if not same_recipe(saved.recipe, recipe):
        changed = sorted(k for k, v in recipe_to_dict(recipe).items()
                         if k != "name" and saved.recipe.get(k) != v)
        return f"its recipe differs from the current {recipe.name!r} in {', '.join(changed)}"
    if saved.parent_sha256 != parent_sha256:
        what = "the pre-trained model" if not parent_sha256 else \
            f"FP32 weights {parent_sha256[:12]}"
        return (f"it started from weights {saved.parent_sha256[:12] or '(pre-trained)'}, the "
                f"current run starts from {what}")
    if saved.code_sha256 != code_sha256():
        return (f"it was trained by other code (commit {saved.code_commit}; accelsim/"
                f"{{{','.join(TRAINING_CODE)}}} changed since)")
    return None


# ---------------------------------------------------------------------------------------------
# The results-table check
# ---------------------------------------------------------------------------------------------

MEASURED_BY = {"trained_fp32": "pytorch_fp32", "compressed": "integer_reference",
               "probe": "logistic_regression"}


def check_table(rows: Sequence[Mapping[str, str]],
                budgets: Mapping[str, Budget] = BUDGETS) -> list[str]:
    """Every way the rows of a results table fail provenance; an empty list when none does.

    A row must carry every provenance column (its commit clean), a recipe of the table or a
    probe, the split hash of the other rows of its task, the schedule its recipe file and its
    task's budget imply, and, when compressed from the FP32 run, the checkpoint hash of the FP32
    row of the same task and seed as its parent; a compressed row, the ``datapath`` label of the
    chip the table is measured on (``evaluate.table_datapath`` of its recipe). A task with FP32
    rows must have probe rows, and the FP32 mean must be above every probe's mean.
    """
    problems: list[str] = []
    fp32 = {(r["task"], r["seed"]): r for r in rows if r["recipe"] == BASELINE}
    splits: dict[str, set[str]] = {}
    for line, row in enumerate(rows, start=2):
        where = f"line {line} ({row.get('task')}/{row.get('recipe')}/seed {row.get('seed')})"
        problems += [f"{where}: {p}" for p in _row_problems(row, fp32, budgets)]
        splits.setdefault(row.get("task", ""), set()).add(row.get("split_sha256", ""))
    problems += [f"task {task}: rows measured on {len(hashes)} different splits"
                 for task, hashes in splits.items() if len(hashes) > 1]
    return problems + _probe_problems(rows)


def _row_problems(row: Mapping[str, str], fp32: Mapping[tuple[str, str], Mapping[str, str]],
                  budgets: Mapping[str, Budget]) -> list[str]:
    missing = [c for c in PROVENANCE_COLUMNS if c not in row]
    if missing:
        return [f"no column {', '.join(missing)}"]
    problems = [f"{c} is empty" for c in PROVENANCE_COLUMNS if c != "parent_sha256" and not row[c]]
    if row["code_commit"].endswith(DIRTY):
        problems.append(f"code_commit {row['code_commit']} had uncommitted changes")
    name, task = row["recipe"], row["task"]
    if task not in budgets:
        return [*problems, f"task {task!r} has no budget; allowed: {', '.join(budgets)}"]
    if name in PROBES:
        kind, parent = "probe", ""
    elif name in ROW_RECIPES:
        recipe = load_recipe(name)
        kind = "compressed" if recipe.quantized else "trained_fp32"
        from_fp32 = recipe.quantized and recipe.init == "finetuned"
        base = fp32.get((task, row["seed"]))
        if from_fp32 and base is None:
            return [*problems, f"compressed from FP32 but the table has no fp32 row of seed "
                               f"{row['seed']}"]
        parent = base["checkpoint_sha256"] if from_fp32 and base is not None else ""
        problems += [f"{k} {row.get(k)!r} differs from the recipe file and budget ({v!r})"
                     for k, v in schedule_differences(row, name, budgets[task]).items()]
    else:
        return [*problems, f"unknown recipe {name!r}"]
    if row["parent_sha256"] != parent:
        problems.append(f"parent_sha256 {row['parent_sha256'][:12] or '(empty)'} is not "
                        f"{'the fp32 row of its seed ' + parent[:12] if parent else 'empty'}")
    if row.get("measured_by") != MEASURED_BY[kind]:
        problems.append(f"measured_by {row.get('measured_by')!r}; allowed: {MEASURED_BY[kind]}")
    wanted = table_datapath(load_recipe(name)).label if kind == "compressed" else ""
    if row.get("datapath", "") != wanted:
        problems.append(f"datapath {row.get('datapath', '')!r} is not the table's "
                        f"({wanted!r}); re-measure the row on it")
    return problems


def schedule_differences(row: Mapping[str, str], recipe: str, budget: Budget) -> dict[str, str]:
    """The schedule columns of ``row`` that differ from what ``recipe`` trains under ``budget``,
    with the expected values: empty when the row is that recipe's run under that budget."""
    expected = schedule_of(recipe, budget).columns()
    return {k: v for k, v in expected.items() if _differs(row.get(k, ""), v)}


def _differs(written: str, expected: str) -> bool:
    """A schedule column against its expected value (numbers compared as numbers)."""
    try:
        return float(written) != float(expected)
    except ValueError:
        return written != expected


def _probe_problems(rows: Sequence[Mapping[str, str]]) -> list[str]:
    problems = []
    by_task: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        if r["recipe"] in (BASELINE, *PROBES):
            by_task.setdefault(r["task"], {}).setdefault(r["recipe"], []).append(
                float(r["accuracy_pct"]))
    for task, means in by_task.items():
        if BASELINE not in means:
            continue
        fp = sum(means[BASELINE]) / len(means[BASELINE])
        if not set(PROBES) & set(means):
            problems.append(f"task {task}: FP32 rows but no probe row to compare them with")
        for probe in PROBES:
            if probe in means and fp <= sum(means[probe]) / len(means[probe]):
                problems.append(f"task {task}: FP32 mean {fp:.2f} % does not beat {probe} "
                                f"{sum(means[probe]) / len(means[probe]):.2f} %")
    return problems
