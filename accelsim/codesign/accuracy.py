"""The accuracy model: per-group sensitivities measured by the integer reference, summed.

Calibration only, no training. From the FP32 model, the reference point compresses every group
to 8-bit weights and activations, dense (W8A8), calibrates the activation clips on training
batches and runs the exported integer model through the integer reference
(``accelsim.ref.execute.run_int_model``) on the task's validation split. Then, one group and one
factor at a time (4-bit weights, 4-bit activations, 2:4 weights), the same is done with only
that group lowered: the accuracy drop and the KL divergence of its logits from the reference
point's are that (group, factor)'s sensitivity.

A whole assignment's predicted loss (accuracy points below FP32 on validation) is additive, as
HAWQ-V3's objective is: the reference point's own loss plus, per group, the drops of the factors
its format lowers. A drop below zero (a lowered group that scored higher on this split) counts
as zero, so the search never buys accuracy by lowering a layer. Interactions between groups and
between factors are what this ignores; QAT verification of the chosen points measures how much
that matters. This is the ``calibration`` model; ``qat_anchored`` (``anchors.AnchoredModel``,
the default) keeps its per-group shares and rescales them to what QAT leaves of each factor's
loss. The search takes either through :class:`AccuracyModel`.

:func:`compress_assignment` is how a per-group assignment reaches a PyTorch model: the
compression recipes give one weight width and one sparsity to every layer (``Recipe`` has only
``act_bits_by_site`` per site), so the model is compressed with the recipe at 8-bit dense and
each layer is then rebuilt as a :class:`QuantLinear` of its group's format.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from accelsim.codesign.groups import REFERENCE, Format, Grouping, group_of
from accelsim.errors import AccelsimError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from accelsim.compress.apply import CompressionPlan
    from accelsim.compress.recipe import Recipe
    from accelsim.tasks.base import Batch, Task

FACTORS: tuple[str, ...] = ("weight_bits", "act_bits", "sparse")


def lowered_factors(fmt: Format) -> tuple[str, ...]:
    """The factors on which ``fmt`` is below the reference point (W8A8 dense)."""
    return tuple(f for f, low in zip(FACTORS, (fmt.weight_bits < REFERENCE.weight_bits,
                                               fmt.act_bits < REFERENCE.act_bits, fmt.sparse),
                                     strict=True) if low)


def _lower(fmt: Format, factor: str) -> Format:
    if factor == "sparse":
        return dataclasses.replace(fmt, sparse=True)
    return dataclasses.replace(fmt, **{factor: 4})


def base_recipe(recipe: Recipe) -> Recipe:
    """``recipe``'s training hyperparameters at the reference format with magnitude masks
    (per-layer masks are set by :func:`compress_assignment`, not by calibration)."""
    return dataclasses.replace(
        recipe, name=f"{recipe.name}_codesign", weight_bits=8, act_bits=8, act_bits_by_site={},
        weight_bits_by_site={}, sparsity="dense", dense_sites=(), pruning="one_shot",
        mask_score="magnitude", smoothing_sites=())


def compress_assignment(model: nn.Module, recipe: Recipe, grouping: Grouping,
                        assignment: Mapping[str, Format]) -> CompressionPlan:
    """Compress ``model`` in place: ``recipe`` (see :func:`base_recipe`) everywhere, then each
    encoder linear of a group in ``assignment`` rebuilt at that group's format (magnitude 2:4
    masks from its current weights when sparse and K is a multiple of 4)."""
    from accelsim.compress.apply import apply_recipe, quant_linears, reformat_linear
    from accelsim.compress.sparsity import supports_2_4

    plan = apply_recipe(model, recipe)
    for name, layer in list(quant_linears(model)):
        group = group_of(name, grouping)
        fmt = assignment.get(group) if group is not None else None
        if fmt is not None:
            reformat_linear(model, name, weight_bits=fmt.weight_bits, act_bits=fmt.act_bits,
                            sparse=fmt.sparse and supports_2_4(layer.in_features))
    return plan


@dataclass(frozen=True)
class Sensitivity:
    """Measured on the validation split: FP32 accuracy, the reference point's, and per group
    (rows, in group order) and factor (columns, :data:`FACTORS`) the accuracy drop [points]
    and logit KL [nats] of lowering that group alone; NaN where the search never lowers it."""

    groups: tuple[str, ...]
    fp32_pct: float
    reference_pct: float
    drop_pct: np.ndarray
    kl: np.ndarray
    examples: int

    def predicted_loss(self, options: Sequence[Format]) -> np.ndarray:
        """Predicted loss below FP32 [points] contributed per group x option (the reference
        point's own loss not included: see :attr:`reference_loss_pct`)."""
        return loss_table(np.maximum(self.drop_pct, 0.0), options)

    @property
    def reference_loss_pct(self) -> float:
        return max(self.fp32_pct - self.reference_pct, 0.0)

    def predict(self, options: Sequence[Format], assignment: Sequence[Format]) -> float:
        """Predicted validation accuracy [%] of ``assignment``."""
        return predict_pct(self, options, assignment)

    def rows(self) -> list[dict[str, object]]:
        """One row per (group, factor) measured, for the sensitivity table."""
        return [{"group": g, "factor": f, "drop_pct": float(self.drop_pct[i, j]),
                 "kl": float(self.kl[i, j])}
                for (i, g), (j, f) in itertools.product(enumerate(self.groups),
                                                        enumerate(FACTORS))
                if not np.isnan(self.drop_pct[i, j])]


class AccuracyModel(Protocol):
    """What the search needs of an accuracy model: FP32's validation accuracy, the reference
    point's (W8A8 dense everywhere) loss below it, and per group x option the further loss
    [points]; a whole assignment's loss is the sum (:func:`predict_pct`)."""

    groups: tuple[str, ...]
    fp32_pct: float

    @property
    def reference_loss_pct(self) -> float: ...

    def predicted_loss(self, options: Sequence[Format]) -> np.ndarray: ...

    def predict(self, options: Sequence[Format], assignment: Sequence[Format]) -> float: ...


def loss_table(per_factor: np.ndarray, options: Sequence[Format]) -> np.ndarray:
    """Per group x option, the sum of ``per_factor`` (groups x :data:`FACTORS`) over the
    factors the option lowers."""
    out = np.zeros((per_factor.shape[0], len(options)))
    for o, fmt in enumerate(options):
        for factor in lowered_factors(fmt):
            out[:, o] += per_factor[:, FACTORS.index(factor)]
    return out


def predict_pct(model: AccuracyModel, options: Sequence[Format],
                assignment: Sequence[Format]) -> float:
    """Predicted validation accuracy [%] of ``assignment`` under ``model``."""
    table = model.predicted_loss(options)
    loss = sum(table[g, options.index(fmt)] for g, fmt in enumerate(assignment))
    return model.fp32_pct - model.reference_loss_pct - float(loss)


def _logits(model: nn.Module, batches: Sequence[Batch]) -> torch.Tensor:
    from accelsim.compress.export import export_int_model
    from accelsim.ref.execute import run_int_model

    return run_int_model(model, export_int_model(model), batches).logits


def _kl(reference: torch.Tensor, logits: torch.Tensor) -> float:
    import torch

    p = torch.log_softmax(reference.double(), -1)
    q = torch.log_softmax(logits.double(), -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def measure_sensitivity(task: Task, fp_model: nn.Module, recipe: Recipe, grouping: Grouping,
                        groups: Sequence[str], options: Sequence[Format],
                        calibration: Sequence[Batch], seed: int,
                        progress: Iterable[None] | None = None) -> Sensitivity:
    """Measure every (group, factor) the ``options`` lower, one group at a time, from the
    reference point (see the module docstring). ``calibration``: the training batches every
    compressed model's activation clips are calibrated on; ``progress`` is advanced once per
    compressed model."""
    import torch

    from accelsim.accuracy.evaluate import EVAL_BATCH, evaluate_float
    from accelsim.compress.apply import calibrate

    torch.manual_seed(seed)
    calib = list(calibration)
    if not calib:
        raise AccelsimError("sensitivity: no calibration batches; allowed: at least one")
    base = dataclasses.replace(base_recipe(recipe), calibration_batches=len(calib))
    val = list(task.batches("val", EVAL_BATCH, seed=0))
    labels = torch.cat([b.labels for b in val])
    ticks = iter(progress) if progress is not None else None

    def run(assignment: Mapping[str, Format]) -> torch.Tensor:
        model = copy.deepcopy(fp_model)
        compress_assignment(model, base, grouping, assignment)
        calibrate(model, calib, base)
        model.eval()
        if ticks is not None:
            next(ticks, None)
        return _logits(model, val)

    reference = {g: REFERENCE for g in groups}
    ref_logits = run(reference)
    ref_pct = task.metric(ref_logits, labels)
    lowered = {f for fmt in options for f in lowered_factors(fmt)}
    drop = np.full((len(groups), len(FACTORS)), np.nan)
    kl = np.full_like(drop, np.nan)
    for (i, group), (j, factor) in itertools.product(enumerate(groups), enumerate(FACTORS)):
        if factor not in lowered:
            continue
        logits = run({**reference, group: _lower(REFERENCE, factor)})
        drop[i, j] = ref_pct - task.metric(logits, labels)
        kl[i, j] = _kl(ref_logits, logits)
    return Sensitivity(tuple(groups), evaluate_float(task, fp_model, "val"), ref_pct, drop, kl,
                       int(labels.numel()))


def sensitivity_runs(groups: Sequence[str], options: Sequence[Format]) -> int:
    """How many compressed models :func:`measure_sensitivity` runs."""
    lowered = {f for fmt in options for f in lowered_factors(fmt)}
    return 1 + len(groups) * len(lowered)


def load_fp32(task: Task, checkpoint: str | None, seed: int) -> nn.Module:
    """The task's fine-tuned FP32 model: ``run:fp32`` (the accuracy pipeline's run of
    ``seed``), a checkpoint file or run folder (``checkpoint.pt`` with a ``model`` state dict),
    or, with ``None``, the task's freshly built model (tiny tests: untrained)."""
    import torch

    from accelsim.accuracy.runs import trained_model
    from accelsim.compress.train import CHECKPOINT

    if checkpoint is None:
        return task.build_model(seed).eval()
    if checkpoint == "run:fp32":
        return trained_model(task, "fp32", seed)
    path = Path(checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise AccelsimError(f"checkpoint: {str(path)!r} does not exist; make the FP32 run with: "
                            f"python experiments/accuracy/{task.name}.py --recipes fp32 "
                            f"--seeds {seed} (then checkpoint: run:fp32)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    model = task.build_model(seed)
    model.load_state_dict(state["model"] if isinstance(state, dict) and "model" in state
                          else state)
    return model.eval()
