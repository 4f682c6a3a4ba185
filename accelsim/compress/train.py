"""Quantization- and sparsity-aware fine-tuning: the two-stage loop, resumable and deterministic.

Stage ``fp`` fine-tunes the float model on the task (critical initialization, ``init:
finetuned``); stage ``compress`` applies the recipe to the result (2:4 masks from the fine-tuned
weights, percentile-calibrated clips) and fine-tunes the compressed model with scheduled dropout
and, optionally, gradual pruning or SR-STE mask learning, and knowledge distillation from the
float model it started from (logits: ``distill_weight``, also on unlabelled inputs:
``distill_unlabeled``; encoder block outputs: ``distill_hidden_weight``). A float recipe runs
one ``fp`` stage of ``fp_epochs + epochs``.

The loop never prints: progress goes to ``on_progress``. After every epoch, and every
``checkpoint_batches`` training batches within one, the whole state (model, optimizer, RNG,
history, the epoch's running sums) is written atomically to ``out_dir/checkpoint.pt``; calling
:func:`finetune` again with the same arguments resumes at the last checkpoint, without building
the batches before it when ``train_batches`` returns a sequence, and gives bit-identical weights
to an uninterrupted run. Training runs on PyTorch's deterministic kernels
(:func:`deterministic_algorithms`), so two processes given the same arguments agree bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from accelsim.compress.apply import (
    Batch,
    CompressionPlan,
    apply_recipe,
    calibrate,
    decay_pruned_weights,
    dropout_rates,
    encoder_blocks,
    enforce_masks,
    model_family,
    reselect_masks,
    set_dropout_factor,
    update_masks,
)
from accelsim.compress.quant import ActQuantizer, WeightQuantizer
from accelsim.compress.recipe import (
    Recipe,
    check_family,
    dropout_factor,
    lr_factor,
    pruned_fraction,
    recipe_to_dict,
    same_recipe,
)
from accelsim.errors import AccelsimError

Stage = Literal["fp", "compress"]
# (model, recipe.datapath) -> a context inside which the model's forwards take the values of the
# integer reference on that datapath (accelsim.ref.qat.emulate_datapath). The reference sits
# above compress, so the caller hands it in.
DatapathEmulation = Callable[[nn.Module, dict[str, Any]], contextlib.AbstractContextManager[Any]]
IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index: a label that carries no loss
CHECKPOINT = "checkpoint.pt"
TEACHER = "teacher.pt"
_FORMAT = 2  # 2: checkpoints within an epoch ("partial")


@dataclass(frozen=True)
class Progress:
    """One training step (``metric`` None) or the end of an epoch (``metric`` set)."""

    stage: Stage
    epoch: int  # 1-based, counted over both stages
    epochs_total: int
    step: int  # 1-based step within the epoch
    steps_per_epoch: int
    loss: float  # mean training loss of the epoch so far
    metric: float | None
    dropout_factor: float


@dataclass(frozen=True)
class EpochRecord:
    stage: Stage
    epoch: int
    train_loss: float
    metric: float
    dropout_factor: float
    pruned_fraction: float
    # SR-STE: mask entries changed by this epoch's re-selections, as a fraction of all entries
    # (summed over re-selections, so an entry that flips back counts twice).
    mask_changed_fraction: float = 0.0


@dataclass(frozen=True)
class FinetuneResult:
    model: nn.Module
    plan: CompressionPlan
    history: tuple[EpochRecord, ...]
    metric: float  # evaluation metric after the last epoch
    fp_metric: float | None  # metric of the task-fine-tuned float model (end of stage fp)
    resumed_from_epoch: int  # epochs already done when this call started (0 = fresh run)
    resumed_from_step: int = 0  # steps of the next epoch already done when this call started
    train_seconds: float = 0.0  # wall-clock training time, summed over the calls that made it


@dataclass(frozen=True)
class _EpochSoFar:
    """The running state of an epoch after ``steps`` steps: what a checkpoint within an epoch
    holds besides the model, optimizer and RNG."""

    steps: int = 0
    loss_sum: float = 0.0
    factor: float = 1.0
    fraction: float = 0.0
    mask_changed: float = 0.0


@dataclass(frozen=True)
class _Plan:
    fp_epochs: int
    compress_epochs: int

    @property
    def total(self) -> int:
        return self.fp_epochs + self.compress_epochs

    def stage(self, epoch: int) -> Stage:
        return "fp" if epoch < self.fp_epochs else "compress"


def _stages(recipe: Recipe) -> _Plan:
    if not recipe.quantized:
        return _Plan(fp_epochs=recipe.fp_epochs + recipe.epochs, compress_epochs=0)
    if recipe.init == "finetuned":
        return _Plan(fp_epochs=recipe.fp_epochs, compress_epochs=recipe.epochs)
    # Ablation: same number of steps, all of them compressed, from the pre-trained model.
    return _Plan(fp_epochs=0, compress_epochs=recipe.fp_epochs + recipe.epochs)


def _optimizer(model: nn.Module, recipe: Recipe, stage: Stage) -> torch.optim.AdamW:
    """AdamW; in stage compress the clips (and LSQ steps) form their own group with clip_lr."""
    clip_ids: set[int] = set()
    if stage == "compress":
        for module in model.modules():
            if isinstance(module, ActQuantizer | WeightQuantizer):
                clip_ids.update(id(p) for p in module.parameters(recurse=False))
    params = [p for p in model.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [
        {"params": [p for p in params if id(p) not in clip_ids], "lr": recipe.lr,
         "weight_decay": recipe.weight_decay, "base_lr": recipe.lr},
    ]
    if clip_ids:
        groups.append({"params": [p for p in params if id(p) in clip_ids], "lr": recipe.clip_lr,
                       "weight_decay": 0.0, "base_lr": recipe.clip_lr})
    return torch.optim.AdamW(groups)


@torch.no_grad()
def evaluate(model: nn.Module, eval_batches: Iterable[Batch],
             metric: Callable[[Tensor, Tensor], float]) -> float:
    """``metric`` over the concatenated logits/labels of all evaluation batches (eval mode)."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for batch in eval_batches:
        logits.append(model(**batch.inputs).logits.float())
        labels.append(batch.labels)
    model.train(was_training)
    if not logits:
        raise AccelsimError("finetune: eval_batches yielded no batch")
    return float(metric(torch.cat(logits), torch.cat(labels)))


def _teacher(model: nn.Module, recipe: Recipe, path: Path, *, resume: bool) -> nn.Module | None:
    """The distillation teacher (None if the recipe does not distil): a frozen copy of the float
    model the compressed stage starts from, saved once so that a resumed run distils from it."""
    if not recipe.distills:
        return None
    teacher = copy.deepcopy(model)
    if resume:
        teacher.load_state_dict(torch.load(path, weights_only=True))
    else:
        _save(path, teacher.state_dict())
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def _loss(logits: Tensor, labels: Tensor | None, teacher_logits: Tensor | None,
          recipe: Recipe) -> Tensor:
    """Cross-entropy, blended with ``distill_weight`` of the temperature-softened KL divergence to
    the teacher (scaled by T^2 so its gradient does not shrink with T, as in Hinton et al.);
    for an unlabelled batch (``labels`` None) the KL term alone. The KL term averages over the
    rows the cross-entropy scores: a sequence model's padding rows (label ``IGNORE_INDEX``)
    carry no target, so the student is not taught the teacher's guesses after the text ends."""
    if teacher_logits is None or recipe.distill_weight == 0:
        return F.cross_entropy(logits.float(), labels)
    if labels is not None:
        scored = labels != IGNORE_INDEX
        logits, teacher_logits = logits[scored], teacher_logits[scored]
    t = recipe.distill_temperature
    kd = F.kl_div(F.log_softmax(logits.float() / t, dim=-1),
                  F.log_softmax(teacher_logits.float() / t, dim=-1),
                  log_target=True, reduction="batchmean") * t * t
    if labels is None:
        return kd
    ce = F.cross_entropy(logits.float(), labels[scored])
    return (1 - recipe.distill_weight) * ce + recipe.distill_weight * kd


def _batches_from(batches: Iterable[Batch], start: int) -> Iterator[Batch]:
    """``batches`` from position ``start``: a sequence is indexed, so the batches before
    ``start`` are never built; another iterable is advanced past them."""
    if isinstance(batches, Sequence):
        return (batches[i] for i in range(start, len(batches)))
    return itertools.islice(batches, start, None)


def _interleaved(labeled: Iterable[Batch], unlabeled: Iterable[Batch],
                 per_labeled: int) -> Iterator[tuple[Batch, bool]]:
    """(batch, is labelled) in training order: each labelled batch, then ``per_labeled``
    unlabelled ones."""
    extra = iter(unlabeled)
    for batch in labeled:
        yield batch, True
        for _ in range(per_labeled):
            unlabeled_batch = next(extra, None)
            if unlabeled_batch is None:
                raise AccelsimError(f"distill_unlabeled: {per_labeled} unlabelled batches per "
                                    f"labelled one, but the unlabelled batches ran out")
            yield unlabeled_batch, False


def hidden_distillation_loss(student: list[Tensor], teacher: list[Tensor]) -> Tensor:
    """Mean over encoder blocks of ``||h_student - h_teacher||^2 / ||h_teacher||^2``: relative,
    so one ``distill_hidden_weight`` fits every family's hidden-state scale."""
    if len(student) != len(teacher) or not student:
        raise AccelsimError(f"distill_hidden_weight: student recorded {len(student)} encoder "
                            f"block outputs, teacher {len(teacher)}; need the same, >= 1")
    terms = [(s.float() - t.float()).square().sum() / t.float().square().sum().clamp_min(1e-12)
             for s, t in zip(student, teacher, strict=True)]
    return torch.stack(terms).mean()


@contextlib.contextmanager
def recorded_block_outputs(model: nn.Module) -> Iterator[list[Tensor]]:
    """Inside the block, every forward of ``model`` appends its encoder blocks' outputs (the
    hidden states, with their autograd graph) to the yielded list; the hooks go on exit."""
    outputs: list[Tensor] = []

    def record(module: nn.Module, args: tuple[Tensor, ...], output: Any) -> None:
        outputs.append(output[0] if isinstance(output, tuple) else output)

    hooks = [block.register_forward_hook(record) for block in encoder_blocks(model)]
    try:
        yield outputs
    finally:
        for hook in hooks:
            hook.remove()


def _step_loss(model: nn.Module, teacher: nn.Module | None, batch: Batch, recipe: Recipe, *,
               labeled: bool) -> Tensor:
    """The training loss of one batch: cross-entropy, plus distillation from ``teacher``
    (distillation alone for an unlabelled batch)."""
    labels = batch.labels if labeled else None
    if teacher is None:
        return _loss(model(**batch.inputs).logits, labels, None, recipe)
    hidden = recipe.distill_hidden_weight > 0
    with contextlib.ExitStack() as stack:
        student_states = stack.enter_context(recorded_block_outputs(model)) if hidden else []
        teacher_states = stack.enter_context(recorded_block_outputs(teacher)) if hidden else []
        with torch.no_grad():
            teacher_logits = teacher(**batch.inputs).logits
        loss = _loss(model(**batch.inputs).logits, labels, teacher_logits, recipe)
    if hidden:
        loss = loss + recipe.distill_hidden_weight * hidden_distillation_loss(student_states,
                                                                              teacher_states)
    return loss


def _on_datapath(model: nn.Module, recipe: Recipe,
                 emulate: DatapathEmulation | None) -> contextlib.AbstractContextManager[Any]:
    """The recipe's datapath emulation around one forward (none without ``emulate``)."""
    return contextlib.nullcontext() if emulate is None else emulate(model, recipe.datapath)


@contextlib.contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """PyTorch's deterministic kernels while it runs, the caller's setting restored after.

    Without them one training step is not a function of its inputs on CPU: the backward of an
    indexed read (``weight[position_ids]``, Whisper's learned decoder positions) accumulates
    with ``index_put_`` in thread order, and two processes made the same run 1 ulp apart (the
    same WER, another weight hash). The deterministic ``index_put_`` sorts the indices first.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def _count_steps(train_batches: Callable[[int], Iterable[Batch]]) -> int:
    batches = train_batches(0)
    count = len(batches) if hasattr(batches, "__len__") else sum(1 for _ in batches)
    if count == 0:
        raise AccelsimError("finetune: train_batches(0) yielded no batch")
    return count


def _save(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: an interruption never leaves half a checkpoint


@deterministic_algorithms()
def finetune(
    model: nn.Module,
    train_batches: Callable[[int], Iterable[Batch]],
    eval_batches: Callable[[], Iterable[Batch]],
    metric: Callable[[Tensor, Tensor], float],
    recipe: Recipe,
    *,
    seed: int,
    out_dir: Path | str,
    on_progress: Callable[[Progress], None] | None = None,
    unlabeled_batches: Callable[[int], Iterable[Batch]] | None = None,
    emulate_datapath: DatapathEmulation | None = None,
    compress: Callable[[nn.Module, Recipe], CompressionPlan] = apply_recipe,
    checkpoint_batches: int | None = None,
) -> FinetuneResult:
    """Fine-tune ``model`` (pre-trained backbone + head) under ``recipe``; see the module doc.

    ``train_batches(epoch)`` must be deterministic for a given epoch (the task shuffles with its
    own seed); ``epoch`` counts over both stages from 0. ``unlabeled_batches(epoch)`` (needed
    when the recipe sets ``distill_unlabeled``) supplies the unlabelled inputs of an epoch the
    same way. The model is modified in place and returned in the result, compressed per recipe.
    A recipe with a ``datapath`` trains and evaluates its compressed stage inside
    ``emulate_datapath(model, recipe.datapath)`` (needed then; ignored otherwise).
    ``compress(model, recipe)`` builds the compressed structure when stage ``compress`` starts
    or resumes (default :func:`apply_recipe`; a speech recognizer also quantizes its decoder
    attention, :func:`accelsim.accuracy.asr.compress_structure`). ``checkpoint_batches``: also
    checkpoint after every that many labelled batches of an epoch (with their unlabelled ones),
    so that an interruption loses at most those; None checkpoints at epoch ends only.
    """
    if checkpoint_batches is not None and checkpoint_batches < 1:
        raise AccelsimError(f"finetune: checkpoint_batches {checkpoint_batches}; allowed: an "
                            "integer >= 1, or None (at epoch ends only)")
    check_family(recipe, model_family(model))  # fail before stage 1, not after it
    if recipe.distill_unlabeled > 0 and unlabeled_batches is None:
        raise AccelsimError(f"recipe {recipe.name!r}: distill_unlabeled: "
                            f"{recipe.distill_unlabeled} needs unlabelled batches; the caller "
                            f"passed none (unlabeled_batches=None)")
    if recipe.datapath and emulate_datapath is None:
        raise AccelsimError(f"recipe {recipe.name!r}: datapath: training on a chip datapath needs "
                            "its emulation; the caller passed none (emulate_datapath=None; "
                            "allowed: accelsim.ref.qat.emulate_datapath)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    stages = _stages(recipe)
    base_dropout = dropout_rates(model)
    history: list[EpochRecord] = []
    fp_metric: float | None = None
    # A float recipe's plan only lists the float layers; a quantized one is made at stage 2.
    plan: CompressionPlan | None = None if recipe.quantized else apply_recipe(model, recipe)
    optimizer: torch.optim.AdamW | None = None
    teacher: nn.Module | None = None
    start_epoch = 0
    so_far = _EpochSoFar()
    seconds_before = 0.0  # training time of the calls before this one
    call_start = time.perf_counter()
    torch.manual_seed(seed)

    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, weights_only=False)
        if ckpt.get("format") != _FORMAT:
            raise AccelsimError(f"{ckpt_path}: checkpoint format {ckpt.get('format')}, from "
                                f"another accelsim version (allowed: {_FORMAT}); use another "
                                "--out or delete it")
        if not same_recipe(ckpt["recipe"], recipe) or ckpt["seed"] != seed:
            raise AccelsimError(f"{ckpt_path}: checkpoint is from another recipe or seed "
                                f"(recipe {ckpt['recipe'].get('name')!r}, seed {ckpt['seed']}); "
                                f"use another --out or delete it")
        start_epoch = int(ckpt["epoch_done"])
        steps_per_epoch = int(ckpt["steps_per_epoch"])
        history = [EpochRecord(**h) for h in ckpt["history"]]
        fp_metric = ckpt["fp_metric"]
        seconds_before = float(ckpt["train_seconds"])
        if ckpt["partial"] is not None:
            so_far = _EpochSoFar(**ckpt["partial"])
        # Stage compress has begun: its structure (weights from the checkpoint) and teacher.
        if start_epoch > stages.fp_epochs or (so_far.steps and start_epoch == stages.fp_epochs):
            teacher = _teacher(model, recipe, out / TEACHER, resume=True)
            plan = compress(model, recipe)
        model.load_state_dict(ckpt["model"])
        if ckpt["optimizer"] is not None:  # saved mid-stage
            optimizer = _optimizer(model, recipe, stages.stage(start_epoch))
            optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"])
    else:
        steps_per_epoch = _count_steps(train_batches)
    resumed_from = (start_epoch, so_far.steps)

    def save(epoch_done: int, partial: _EpochSoFar | None) -> None:
        _save(ckpt_path, {
            "format": _FORMAT, "recipe": recipe_to_dict(recipe), "seed": seed,
            "epoch_done": epoch_done, "steps_per_epoch": steps_per_epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "rng": torch.get_rng_state(), "history": [asdict(h) for h in history],
            "fp_metric": fp_metric, "partial": None if partial is None else asdict(partial),
            "train_seconds": seconds_before + time.perf_counter() - call_start,
        })

    model.train()
    for epoch in range(start_epoch, stages.total):
        stage = stages.stage(epoch)
        if optimizer is None:  # a stage starts
            if stage == "compress":
                teacher = _teacher(model, recipe, out / TEACHER, resume=False)
                plan = compress(model, recipe)
                calibrate(model, train_batches(epoch), recipe)
            optimizer = _optimizer(model, recipe, stage)
        first_epoch_of_stage = 0 if stage == "fp" else stages.fp_epochs
        unlabeled_per_batch = recipe.distill_unlabeled if stage == "compress" else 0
        epoch_steps = steps_per_epoch * (1 + unlabeled_per_batch)
        stage_steps = epoch_steps * (stages.fp_epochs if stage == "fp"
                                     else stages.compress_epochs)
        sparse = stage == "compress" and recipe.sparsity == "2:4"
        if not so_far.steps:
            so_far = _EpochSoFar(fraction=pruned_fraction(recipe, 0.0) if sparse else 0.0)
        loss_sum, steps, factor = so_far.loss_sum, so_far.steps, so_far.factor
        fraction, mask_changed = so_far.fraction, so_far.mask_changed
        # Checkpoints within an epoch fall after a labelled batch's unlabelled ones.
        labeled_done = steps // (1 + unlabeled_per_batch)
        unlabeled = (_batches_from(unlabeled_batches(epoch), steps - labeled_done)
                     if unlabeled_per_batch else ())
        emulate = emulate_datapath if stage == "compress" and recipe.datapath else None
        for batch, labeled in _interleaved(_batches_from(train_batches(epoch), labeled_done),
                                           unlabeled, unlabeled_per_batch):
            step_in_stage = (epoch - first_epoch_of_stage) * epoch_steps + steps
            if stage == "compress":
                progress = step_in_stage / stage_steps
                factor = dropout_factor(recipe, progress)
                set_dropout_factor(model, base_dropout, factor)
                if sparse and step_in_stage % recipe.mask_update_steps == 0:
                    if recipe.pruning == "gradual":
                        fraction = pruned_fraction(recipe, progress)
                        update_masks(model, fraction)
                    elif recipe.pruning == "sr_ste":
                        mask_changed += reselect_masks(model)
            scale = lr_factor(step_in_stage, stage_steps, recipe.warmup_fraction)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * scale
            # A teacher only in stage compress.
            with _on_datapath(model, recipe, emulate):
                loss = _step_loss(model, teacher, batch, recipe, labeled=labeled)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
            if sparse and recipe.pruning == "sr_ste":
                decay_pruned_weights(model, recipe.sr_ste_decay)
            optimizer.step()
            enforce_masks(model)
            loss_sum += loss.item()
            steps += 1
            labeled_done, unlabeled_left = divmod(steps, 1 + unlabeled_per_batch)
            if (checkpoint_batches and not unlabeled_left and steps < epoch_steps
                    and labeled_done % checkpoint_batches == 0):
                save(epoch, _EpochSoFar(steps, loss_sum, factor, fraction, mask_changed))
            if on_progress is not None:
                on_progress(Progress(stage, epoch + 1, stages.total, steps, epoch_steps,
                                     loss_sum / steps, None, factor))
        so_far = _EpochSoFar()
        last_of_stage = epoch + 1 == stages.total or stages.stage(epoch + 1) != stage
        if sparse and last_of_stage:
            fraction = pruned_fraction(recipe, 1.0)
            if recipe.pruning == "sr_ste":
                mask_changed += reselect_masks(model)
            else:
                update_masks(model, fraction)
            enforce_masks(model, final=True)
        set_dropout_factor(model, base_dropout, 1.0)
        with _on_datapath(model, recipe, emulate):
            value = evaluate(model, eval_batches(), metric)
        if stage == "fp" and last_of_stage and stages.compress_epochs > 0:
            fp_metric = value
        record = EpochRecord(stage, epoch + 1, loss_sum / max(steps, 1), value, factor, fraction,
                             mask_changed)
        history.append(record)
        if on_progress is not None:
            on_progress(Progress(stage, epoch + 1, stages.total, steps, epoch_steps,
                                 record.train_loss, value, factor))
        if last_of_stage:
            optimizer = None
        save(epoch + 1, None)

    assert plan is not None  # set above (float recipe) or when stage 2 started or resumed
    model.eval()
    return FinetuneResult(model, plan, tuple(history), history[-1].metric, fp_metric,
                          *resumed_from, seconds_before + time.perf_counter() - call_start)
