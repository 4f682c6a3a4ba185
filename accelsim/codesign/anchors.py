"""The accuracy table's QAT runs that a per-group assignment reproduces, and the ``qat_anchored``
accuracy model they anchor.

A row of ``experiments/accuracy/results.csv`` stands for an assignment when it was trained as
the search's verification trains one: from the spec's FP32 model (same task, seed and parent
checkpoint), measured by the integer reference on the spec's base chip datapath, by a recipe
that is the spec's ``qat_recipe`` but for the widths and 2:4 an assignment sets, at the same
QAT schedule. Those rows are the uniform pairs of the quality check (``quality.py``), the
uniform points' measured accuracy in ``results.csv`` (``run.py``), and, for W8A8, W4A4 and
W4A4 + 2:4, the anchors of :class:`AnchoredModel`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from accelsim.codesign.accuracy import (
    FACTORS,
    Sensitivity,
    loss_table,
    lowered_factors,
    predict_pct,
)
from accelsim.codesign.groups import Format, Groups
from accelsim.errors import AccelsimError

if TYPE_CHECKING:
    from accelsim.codesign.spec import CodesignSpec
    from accelsim.compress.recipe import Recipe

# The recipe fields an assignment sets; a table recipe that differs from the verification's QAT
# recipe in anything else (smoothing, Wanda/SparseGPT masks, distillation, another weight grid,
# gradual pruning, ...) trained a model no assignment trains.
ASSIGNED_FIELDS = {"weight_bits": 8, "act_bits": 8, "act_bits_by_site": {},
                   "weight_bits_by_site": {}, "sparsity": "dense"}
# Set by the task's training budget, compared through the table row's schedule columns.
SCHEDULE_FIELDS = {"fp_epochs": 0, "epochs": 1, "batch_size": 1, "lr": 1.0}
# The uniform recipes the qat_anchored model is anchored on: the reference point, 4-bit
# weights and activations, and 4-bit with 2:4.
ANCHORS = {"reference": "w8a8", "four_bit": "w4a4", "sparse": "w4a4_sp24"}


@dataclass(frozen=True)
class TableRun:
    """One accuracy-table row that stands for a uniform assignment."""

    recipe: str
    assignment: tuple[Format, ...]
    val_pct: float  # the fine-tune's validation metric after QAT
    test_pct: float  # the integer reference on the test split


@dataclass(frozen=True)
class AnchoredModel:
    """The ``qat_anchored`` accuracy model: what QAT leaves of each factor's loss, measured on
    whole models, shared out over the groups by their calibration sensitivity.

    Three uniform QAT runs of the accuracy table anchor it (validation accuracy after QAT, the
    same FP32 parent, seed, QAT schedule and chip datapath as the search's verification):
    W8A8 (the reference point: its loss below FP32 is :attr:`reference_loss_pct`), W4A4 (4-bit
    weights and activations everywhere cost ``W8A8 - W4A4`` points more) and W4A4 + 2:4 (2:4
    everywhere costs ``W4A4 - W4A4+2:4`` more). A group's share of a factor's loss is its
    calibration KL for that factor over the sum across groups (weights and activations share
    the 4-bit loss, in proportion to their KLs); KL rather than accuracy drop because it is
    continuous where a drop moves in steps of one example. So the anchors are predicted
    exactly, the prediction is on the scale QAT ends at, and the calibration only decides
    which groups the loss is charged to. A negative anchor difference (a lowered recipe that
    scored higher on validation) counts as zero."""

    groups: tuple[str, ...]
    fp32_pct: float
    reference_loss_pct: float
    factor_loss_pct: np.ndarray  # per factor (FACTORS): what lowering it everywhere costs
    shares: np.ndarray  # groups x FACTORS: weight + activation columns sum to 1, 2:4's to 1

    def predicted_loss(self, options: Sequence[Format]) -> np.ndarray:
        return loss_table(self.shares * self.factor_loss_pct[None, :], options)

    def predict(self, options: Sequence[Format], assignment: Sequence[Format]) -> float:
        return predict_pct(self, options, assignment)

    def describe(self) -> dict[str, float]:
        """The anchor losses [points], for the store's keys and the reports."""
        return {"reference_loss_pct": self.reference_loss_pct,
                **{f"{f}_loss_pct": float(v)
                   for f, v in zip(FACTORS, self.factor_loss_pct, strict=True)}}


def anchored_model(sens: Sensitivity, reference_pct: float, four_bit_pct: float | None,
                   sparse_pct: float | None) -> AnchoredModel:
    """:class:`AnchoredModel` from the calibration ``sens`` and the anchors' validation
    accuracies after QAT [%]: W8A8, W4A4 and W4A4 + 2:4 (None where the search lowers no
    factor that needs it)."""
    kl = np.nan_to_num(np.maximum(sens.kl, 0.0))
    four_bit = [FACTORS.index("weight_bits"), FACTORS.index("act_bits")]
    sparse = FACTORS.index("sparse")
    shares = np.zeros_like(kl)
    for columns in (four_bit, [sparse]):
        block = kl[:, columns]
        measured = ~np.isnan(sens.drop_pct[:, columns])
        total = block.sum()
        # All-zero KL (an untrained tiny model): every measured (group, factor) alike.
        shares[:, columns] = block / total if total > 0 else measured / max(measured.sum(), 1)
    loss = np.zeros(len(FACTORS))
    if four_bit_pct is not None:
        loss[four_bit] = max(reference_pct - four_bit_pct, 0.0)
    if sparse_pct is not None and four_bit_pct is not None:
        loss[sparse] = max(four_bit_pct - sparse_pct, 0.0)
    return AnchoredModel(sens.groups, sens.fp32_pct, max(sens.fp32_pct - reference_pct, 0.0),
                         loss, shares)


def recipe_assignment(recipe_name: str, groups: Groups) -> tuple[Format, ...] | None:
    """A quantized uniform recipe as a per-group assignment, or None when the grouping cannot
    express it (per-site widths or dense sites under ``block`` grouping)."""
    from accelsim.compress.recipe import load_recipe

    recipe = load_recipe(recipe_name)
    out = []
    for name in groups.names:
        site = name.rsplit(".", 1)[-1] if groups.grouping != "block" else None
        if (recipe.act_bits_by_site or recipe.weight_bits_by_site
                or recipe.dense_sites) and site is None:
            return None
        out.append(Format(*recipe.widths_at(site), recipe.sparse_at(site)))
    return tuple(out)


def table_rows(spec: CodesignSpec, fp_model: Any) -> list[dict[str, str]]:
    """The rows of the accuracy table (``experiments/accuracy/results.csv``) of recipes that
    QAT-trained from this spec's FP32 model (same task, seed and parent checkpoint) and were
    measured by the integer reference on the spec's base chip datapath."""
    from accelsim.accuracy.evaluate import chip_datapath
    from accelsim.accuracy.provenance import tensors_sha256
    from accelsim.accuracy.table import RESULTS_CSV, read_rows
    from accelsim.hw import load_hw

    if not RESULTS_CSV.is_file():
        return []
    parent = tensors_sha256(fp_model.state_dict())
    label = chip_datapath(load_hw(spec.hw_path)).label
    return [row for row in read_rows(RESULTS_CSV)
            if row["task"] == spec.task and row["seed"] == str(spec.seed)
            and row["measured_by"] == "integer_reference" and row["parent_sha256"] == parent
            and row["datapath"] == label]


def trains_like_assignment(recipe: Recipe, row: Mapping[str, str], qat: Recipe,
                           qat_base: Recipe) -> bool:
    """Whether the table's run of ``recipe`` (schedule columns in ``row``) trained what
    QAT-verifying its assignment trains: ``qat_base`` (the spec's QAT recipe at the reference
    format) but for the fields an assignment sets, under ``qat``'s schedule."""
    def plain(r: Recipe) -> Recipe:
        return dataclasses.replace(r, name="", **ASSIGNED_FIELDS, **SCHEDULE_FIELDS)

    return (plain(recipe) == plain(qat_base) and row["init"] == qat.init
            and int(row["qat_epochs"]) == qat.epochs and int(row["batch_size"]) == qat.batch_size
            and math.isclose(float(row["lr"]), qat.lr, rel_tol=1e-9))


def table_runs(spec: CodesignSpec, task: Any, fp_model: Any, groups: Groups,
               budget: Any) -> list[TableRun]:
    """The accuracy table's rows that stand for uniform assignments of ``groups`` (see the
    module docstring), in table order; ``budget``: the QAT training budget (default the
    task's)."""
    from accelsim.codesign.accuracy import base_recipe
    from accelsim.codesign.run import qat_setup
    from accelsim.codesign.verify import qat_recipe_for
    from accelsim.compress.recipe import available_recipes, load_recipe

    qat_budget, _ = qat_setup(spec, task, budget)
    qat_source = load_recipe(spec.qat_recipe)
    qat = qat_recipe_for(qat_source, qat_budget)
    qat_base = base_recipe(qat_source)
    recipes = set(available_recipes())
    out = []
    for row in table_rows(spec, fp_model):
        if row["recipe"] not in recipes or not row["val_accuracy_pct"]:
            continue
        if not trains_like_assignment(load_recipe(row["recipe"]), row, qat, qat_base):
            continue
        assignment = recipe_assignment(row["recipe"], groups)
        if assignment is not None:
            out.append(TableRun(row["recipe"], assignment, float(row["val_accuracy_pct"]),
                                float(row["accuracy_pct"])))
    return out


def anchor_accuracies(spec: CodesignSpec, runs: list[TableRun]) -> dict[str, float]:
    """Validation accuracy after QAT [%] of each anchor ``spec``'s search needs (keys of
    :data:`ANCHORS`), from the table's ``runs``; one line naming the missing ones, with the
    command that makes them."""
    lowered = {f for fmt in spec.search.options for f in lowered_factors(fmt)}
    # The 2:4 anchor is a difference from the 4-bit one, so lowering anything needs W4A4.
    needed = ["reference", *(["four_bit"] if lowered else []),
              *(["sparse"] if "sparse" in lowered else [])]
    val = {run.recipe: run.val_pct for run in runs}
    missing = [ANCHORS[n] for n in needed if ANCHORS[n] not in val]
    if missing:
        raise AccelsimError(
            f"{spec.path}: accuracy_model: qat_anchored needs the accuracy table's QAT rows of "
            f"{', '.join(missing)} for task {spec.task}, seed {spec.seed}, from the same FP32 "
            f"model, schedule and chip datapath; make them with: python experiments/accuracy/"
            f"{spec.task}.py --recipes {' '.join(missing)} --seeds {spec.seed} (or set "
            f"accuracy_model: calibration)")
    return {name: val[ANCHORS[name]] for name in needed}


def qat_anchored(sens: Sensitivity, anchors: Mapping[str, float]) -> AnchoredModel:
    """The ``qat_anchored`` model from calibration sensitivities and
    :func:`anchor_accuracies`."""
    return anchored_model(sens, anchors["reference"], anchors.get("four_bit"),
                          anchors.get("sparse"))
