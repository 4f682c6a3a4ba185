"""The task metric of a model on a split (integer reference or PyTorch), or its fidelity.

* :func:`evaluate_accuracy`: the exported integer model executed by the bit-exact integer
  reference (``accelsim.ref.execute.run_int_model``) on a chip's datapath (accumulator width and
  overflow, integer requantization, vector-unit format: :func:`chip_datapath`) over a task's
  test split, scored by the task's metric. This is the number the results table (on
  :data:`TABLE_HW_CONFIG`'s datapath) and ``run --accuracy`` (on ``--hw``'s) report.
* :func:`evaluate_float`: the same split through a PyTorch model (FP32, or fake-quantized while
  training); used for the FP32 row and to cross-check the integer reference.
* :func:`fidelity`: for a model without a task (e.g. ``vit_b16`` with random weights) there is
  no label to score, so the compressed model is compared with its FP model on generated inputs:
  top-1 agreement of the two argmaxes and the SQNR of the compressed outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelsim.errors import AccelsimError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from accelsim.compress.recipe import Recipe
    from accelsim.hw import HwConfig
    from accelsim.ref.datapath import Datapath
    from accelsim.tasks.base import Split, Task

EVAL_BATCH = 64
# Training batches (of EVAL_BATCH, seed 0) that calibrate the residual adds' output scales of a
# datapath with ``residual_scale: calibrated`` when the integer model has none yet.
RESIDUAL_CALIBRATION_BATCHES = 4
FIDELITY_BATCH = 2
FIDELITY_CALIBRATION_BATCHES = 2
FIDELITY_EVAL_BATCHES = 4
FIDELITY_NUM_LABELS = 1000  # an ImageNet-sized random head: top-1 over 1000 classes
# The chip whose datapath measures the accuracy table's compressed rows: the design point the
# README and the sweeps centre on. A row records its datapath (``ChipDatapath.label``), and the
# table check refuses a row measured on another one.
TABLE_HW_CONFIG = Path(__file__).resolve().parents[2] / "hw_configs" / "int4_sparse.yaml"


@dataclass(frozen=True)
class ChipDatapath:
    """The datapath of one hardware config, and how a results row names it."""

    datapath: Datapath
    label: str  # e.g. "int4_sparse: 20-bit saturate accumulators, integer requant, fp16 vector"


def chip_datapath(hw: HwConfig, overrides: Mapping[str, Any] | None = None) -> ChipDatapath:
    """The datapath the integer reference executes for ``hw`` (``Datapath.of_hw``: an ``fp``
    MAC array has none, one error line), with a recipe's ``datapath`` fields, if any, in place
    of the chip's (a recipe trained for a variant of the chip is measured on that variant)."""
    import dataclasses

    from accelsim.ref.datapath import Datapath

    datapath = dataclasses.replace(Datapath.of_hw(hw), **(overrides or {}))
    requant = "integer" if datapath.integer_requant else "float32"
    label = (f"{hw.name}: {datapath.accumulator_bits}-bit {datapath.overflow} accumulators, "
             f"{requant} requant, {datapath.vector_format or 'float32 PyTorch'} vector")
    if datapath.gelu_table_segments:
        label += f", {datapath.gelu_table_segments}-segment GELU table"
    if datapath.residual_scale != "coarser":
        label += f", {datapath.residual_scale} residual scale"
    return ChipDatapath(datapath, label)


def table_datapath(recipe: Recipe | None = None) -> ChipDatapath:
    """The datapath of :data:`TABLE_HW_CONFIG` (what the accuracy table is measured on), with
    ``recipe``'s own ``datapath`` fields where it has them."""
    from accelsim.hw import load_hw

    return chip_datapath(load_hw(TABLE_HW_CONFIG), recipe.datapath if recipe else None)


@dataclass(frozen=True)
class Fidelity:
    """Compressed vs FP outputs on the same inputs (no labels needed).

    ``top1_agreement_pct``: share of examples (rows of the last output axis) whose argmax agrees.
    ``sqnr_db``: ``10 log10(sum fp^2 / sum (fp - compressed)^2)`` over all outputs; ``inf`` when
    they are identical.
    """

    top1_agreement_pct: float
    sqnr_db: float
    num_examples: int


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a model output (HF ``ModelOutput``, tuple or tensor)."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise AccelsimError(
        f"model output: {type(output).__name__} has no logits; "
        "allowed: a tensor, a tuple whose first item is one, or an object with .logits"
    )


def evaluate_float(task: Task, model: nn.Module, split: Split = "test") -> float:
    """The task metric of a PyTorch model on ``split`` (eval mode, no gradients)."""
    import torch

    was_training = model.training
    model.eval()
    logits, labels = [], []
    with torch.no_grad():
        for batch in task.batches(split, EVAL_BATCH, seed=0):
            logits.append(logits_of(model(**batch.inputs)).float())
            labels.append(batch.labels)
    model.train(was_training)
    return task.metric(torch.cat(logits), torch.cat(labels))


def evaluate_accuracy(task: Task, model: nn.Module, int_model: Any, split: Split = "test", *,
                      datapath: Datapath) -> float:
    """The task metric of ``int_model`` executed by the integer reference on ``split``, on
    ``datapath`` (a chip's: :func:`chip_datapath`).

    ``model`` is the compressed PyTorch model the integer model was exported from: the integer
    reference runs its host parts (embeddings, head) and executes everything between the first
    and the last on-chip op in the datapath's arithmetic. Its number of labels must match the
    task's.
    """
    return evaluate_on_chip(task, model, int_model, split, datapath=datapath).metric


@dataclass(frozen=True)
class ChipEvaluation:
    """The task metric of one integer-reference pass and what the datapath did during it."""

    metric: float
    accumulators: int  # GEMM outputs produced
    saturations: int  # of those, sums outside the accumulator's range (clamped or wrapped)


def evaluate_on_chip(task: Task, model: nn.Module, int_model: Any, split: Split = "test", *,
                     datapath: Datapath) -> ChipEvaluation:
    """:func:`evaluate_accuracy` with the datapath's accumulator and saturation counts. On a
    datapath whose residual adds take calibrated scales, an integer model without them is
    calibrated first on the first :data:`RESIDUAL_CALIBRATION_BATCHES` training batches."""
    import itertools

    import torch

    from accelsim.ref.execute import run_int_model, with_residual_add_scales

    labels_out = _num_labels(model)
    if labels_out is not None and labels_out != task.num_labels:
        raise AccelsimError(
            f"evaluate_accuracy: model has {labels_out} output labels, task {task.name} has "
            f"{task.num_labels}; allowed: a model fine-tuned for {task.name}"
        )
    calibration = itertools.islice(task.batches("train", EVAL_BATCH, seed=0),
                                   RESIDUAL_CALIBRATION_BATCHES)
    int_model = with_residual_add_scales(model, int_model, calibration, datapath)
    batches = list(task.batches(split, EVAL_BATCH, seed=0))
    result = run_int_model(model, int_model, batches, datapath=datapath)
    labels = torch.cat([b.labels for b in batches])
    return ChipEvaluation(task.metric(result.logits, labels), result.counts.accumulators,
                          result.counts.saturations)


def _num_labels(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "num_labels", None)


def fidelity(
    fp_model: Callable[..., Any],
    compressed_model: Callable[..., Any],
    inputs: Iterable[Mapping[str, torch.Tensor]],
) -> Fidelity:
    """Top-1 agreement and output SQNR of ``compressed_model`` vs ``fp_model``.

    Both are called as ``model(**batch)`` on every batch of ``inputs``; modules are put in
    eval mode for the comparison (dropout would make it random) and restored afterwards.
    """
    import torch

    fp_sq = err_sq = 0.0
    agree = total = 0
    modes = [
        (m, m.training) for m in (fp_model, compressed_model) if isinstance(m, torch.nn.Module)
    ]
    for m, _ in modes:
        m.eval()
    try:
        with torch.no_grad():
            for batch in inputs:
                ref = logits_of(fp_model(**batch)).double()
                out = torch.as_tensor(logits_of(compressed_model(**batch))).double()
                if ref.shape != out.shape:
                    raise AccelsimError(
                        f"fidelity: compressed output shape {tuple(out.shape)} differs from the "
                        f"FP output shape {tuple(ref.shape)}; allowed: identical shapes"
                    )
                fp_sq += float((ref**2).sum())
                err_sq += float(((ref - out) ** 2).sum())
                agree += int((ref.argmax(-1) == out.argmax(-1)).sum())
                total += ref.argmax(-1).numel()
    finally:
        for m, mode in modes:
            m.train(mode)
    if total == 0:
        raise AccelsimError("fidelity: no inputs given; allowed: at least one batch")
    sqnr_db = math.inf if err_sq == 0.0 else 10.0 * math.log10(fp_sq / err_sq)
    return Fidelity(100.0 * agree / total, sqnr_db, total)


def generated_fidelity(model_name: str, recipe_name: str, datapath: Datapath,
                       seed: int = 0) -> Fidelity:
    """Fidelity of ``model_name`` compressed by ``recipe_name`` (clips calibrated, no training)
    vs the same FP32 model, on seeded random inputs from the zoo, through the integer reference
    on ``datapath``.
    """
    import copy

    import torch

    from accelsim.compress.apply import apply_recipe, calibrate
    from accelsim.compress.export import export_int_model
    from accelsim.compress.recipe import load_recipe
    from accelsim.ref.execute import build_int_executor, with_residual_add_scales
    from accelsim.tasks.base import Batch
    from accelsim.zoo import build_model, example_inputs

    recipe = load_recipe(recipe_name)
    fp_model = build_model(model_name, seed=seed, num_labels=FIDELITY_NUM_LABELS).eval()
    compressed = copy.deepcopy(fp_model)
    apply_recipe(compressed, recipe)

    def inputs(first_seed: int, count: int) -> list[dict[str, torch.Tensor]]:
        return [
            example_inputs(model_name, batch=FIDELITY_BATCH, seed=first_seed + i)
            for i in range(count)
        ]

    calibration = inputs(seed * 1000, FIDELITY_CALIBRATION_BATCHES)
    # calibrate() wants batches with labels; generated inputs have none (labels are unused).
    calibrate(compressed, [Batch(x, torch.zeros(0)) for x in calibration], recipe)
    int_model = with_residual_add_scales(compressed, export_int_model(compressed), calibration,
                                         datapath)
    executor = build_int_executor(compressed, int_model, datapath=datapath)
    held_out = inputs(seed * 1000 + FIDELITY_CALIBRATION_BATCHES, FIDELITY_EVAL_BATCHES)
    return fidelity(fp_model, executor, held_out)
