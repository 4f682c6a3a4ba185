"""Word error rate of a Whisper ASR model (:mod:`accelsim.zoo.asr`) on the ``asr`` task
(:mod:`accelsim.tasks.asr`): FP32, or under a recipe applied to encoder *and* decoder, with
activation clips calibrated on training utterances, without QAT (:func:`compress_asr`) or after
QAT on the training voices (:func:`train_asr`).

A recipe covers the encoder blocks as for every Whisper model; :func:`asr_recipe` adds the
decoder blocks' linears (self-attention and cross-attention Q/K/V/out, FC1, FC2) and the output
projection (tied to the token embedding in FP32, quantized here as a separate copy, as the
decoder families' LM head) through the recipe's ``quantize_extra``. They get the recipe's
weight and activation widths, those of their input site where the recipe gives one
(``act_bits_by_site``, ``weight_bits_by_site``: the decoder's Q/K/V, FC1 and FC2 are sites as
the encoder's are; the output projection is none) and, under ``sparsity: "2:4"``, its 2:4
masks (none at the sites of ``dense_sites``). The encoder's
attention matmuls run at the recipe's ``attention_bits``; the decoder's QK^T and PV (self and
cross) stay float32 unless ``decoder_attention`` (:func:`quantize_decoder_attention`): then at
``attention_bits``, K and V at the KV cache's width. Evaluation is the fake-quant model, whose
inference path computes the integer reference's arithmetic for every quantized GEMM
(``QuantLinear``), or (decoder attention quantized) the integer reference itself on a chosen
datapath (:func:`transcribe`).

QAT (:func:`train_asr`) is the project's fine-tuning (:func:`accelsim.compress.train.finetune`)
on teacher-forced batches of training utterances: the decoder reads the prompt and the
reference tokens, and the loss is the cross-entropy of each next reference token (and the end
token), the prompt's own tokens and the padding left out (:data:`IGNORE`). The compressed
structure is :func:`compress_structure` (recipe on encoder and decoder linears, decoder
attention quantized, so the integer reference can run the result); the clips are calibrated
on the first training batches of the first epoch, as ``finetune`` calibrates every task.
A :class:`QatSchedule` names such a run and finds its cache (:func:`scheduled_run`); its FP32
run is the critical initialization of every compressed run of the schedule
(:func:`finetuned_start`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import re
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from accelsim.accuracy.provenance import finish_run, start_run, tensors_sha256
from accelsim.accuracy.runs import run_dir
from accelsim.compress.apply import (
    PLAN_ATTR,
    apply_recipe,
    calibrate,
    kv_cache_bits,
    quant_linears,
    quantize_attention_modules,
)
from accelsim.compress.export import export_int_model
from accelsim.compress.recipe import load_recipe
from accelsim.compress.train import IGNORE_INDEX, FinetuneResult, Progress, finetune
from accelsim.errors import AccelsimError
from accelsim.ref.decode import transcribe_int
from accelsim.ref.execute import build_int_executor
from accelsim.tasks import asr
from accelsim.tasks.base import Batch
from accelsim.zoo import get_spec
from accelsim.zoo.asr import (
    CROSS_ATTENTION,
    END_OF_TEXT,
    SELF_ATTENTION,
    asr_class,
    asr_spec,
    asr_tokenizer,
    build_asr_model,
    decoding_rules,
    greedy_transcribe,
)

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from accelsim.compress.apply import CompressionPlan
    from accelsim.compress.recipe import Recipe
    from accelsim.ref.datapath import Datapath
    from accelsim.tasks.base import Split

DECODER_LINEARS: tuple[str, ...] = (
    r"whisper\.model\.decoder\.layers\.\d+\.(self_attn|encoder_attn)\.(q|k|v|out)_proj",
    r"whisper\.model\.decoder\.layers\.\d+\.fc[12]",
)
OUTPUT_PROJECTION = r"whisper\.proj_out"
CALIBRATION_BATCH = 4  # utterances per calibration batch (the recipe says how many batches)
EVAL_BATCH = 8
IGNORE = IGNORE_INDEX  # a label position that carries no loss (cross-entropy's and distillation's)
# A QAT checkpoint within an epoch every this many batches: ~15 minutes of Whisper tiny.en on
# 2 cores, so an interrupted epoch over the whole corpus (hours) loses at most that.
CHECKPOINT_BATCHES = 250


def asr_recipe(recipe: Recipe, *, output_projection: bool = True) -> Recipe:
    """``recipe`` extended to the decoder's linears (and the output projection)."""
    extra = DECODER_LINEARS + ((OUTPUT_PROJECTION,) if output_projection else ())
    return dataclasses.replace(recipe, quantize_extra=recipe.quantize_extra + extra)


def mels(name: str) -> int:
    return int(get_spec(asr_spec(name).whisper).config_dict["num_mel_bins"])


def calibration_batches(name: str, count: int,
                        window_seconds: float = asr.WINDOW_SECONDS) -> list[Batch]:
    """``count`` teacher-forced batches of training utterances: features and the prompt plus
    the reference tokens (padded with the end token, which also ends every reference)."""
    import torch

    chosen = asr.utterances("train", count * CALIBRATION_BATCH)
    out = []
    for features, sentences in itertools.islice(
            asr.feature_batches(chosen, CALIBRATION_BATCH, mels(name), window_seconds), count):
        padded, _ = teacher_forced_ids(name, sentences)
        out.append(Batch({"input_features": features, "decoder_input_ids": padded},
                         torch.zeros(len(sentences), dtype=torch.long)))
    return out


def teacher_forced_ids(name: str, sentences: Sequence[str]) -> tuple[torch.Tensor, list[int]]:
    """``(ids, lengths)``: the prompt, each sentence's tokens and the end token, padded with
    the end token to ``(len(sentences), longest)``; ``lengths`` are the unpadded lengths."""
    return padded_ids(reference_ids(name, sentences))


def reference_ids(name: str, sentences: Sequence[str]) -> list[tuple[int, ...]]:
    """What the decoder should read for each sentence: the prompt, its tokens, the end token."""
    tokenizer = asr_tokenizer(name)
    prompt = decoding_rules(name).prompt
    # Whisper's text tokens carry the word's leading space, the first word's too.
    return [(*prompt, *tokenizer.encode(" " + s, add_special_tokens=False), END_OF_TEXT)
            for s in sentences]


def padded_ids(ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, list[int]]:
    """``ids`` padded with the end token to the longest, and their lengths."""
    import torch

    longest = max(len(i) for i in ids)
    return (torch.tensor([list(i) + [END_OF_TEXT] * (longest - len(i)) for i in ids]),
            [len(i) for i in ids])


def quantize_decoder_attention(model: nn.Module, recipe: Recipe) -> tuple[str, ...]:
    """Quantize the decoder's self- and cross-attention matmuls of a model ``apply_recipe``
    compressed: Q and the probabilities at ``attention_bits``, K and V at the KV cache's stored
    width (``kv_bits``, default ``attention_bits``), as a decoder-only LM's; they join the
    compression plan, so export and calibration cover them. Returns their names."""
    if recipe.attention_bits == 32:
        raise AccelsimError(f"recipe {recipe.name!r}: attention_bits: 32 keeps attention float; "
                            "decoder attention quantizes with attention_bits 4 or 8")
    names = tuple(n for n, _ in model.named_modules()
                  if re.fullmatch(f"{SELF_ATTENTION}|{CROSS_ATTENTION}", n))
    quantize_attention_modules(model, list(names), recipe, kv_cache_bits(recipe))
    plan = getattr(model, PLAN_ATTR)
    setattr(model, PLAN_ATTR, dataclasses.replace(
        plan, attention_modules=plan.attention_modules + names))
    return names


def compress_structure(model: nn.Module, recipe: Recipe) -> CompressionPlan:
    """``apply_recipe`` of ``recipe`` (already :func:`asr_recipe`) plus the decoder attention
    (:func:`quantize_decoder_attention`): the structure QAT trains and the integer reference
    runs; ``finetune``'s ``compress``. Returns the model's plan."""
    apply_recipe(model, recipe)
    quantize_decoder_attention(model, recipe)
    return getattr(model, PLAN_ATTR)


def compress_asr(model: nn.Module, name: str, recipe: Recipe, *,
                 output_projection: bool = True, decoder_attention: bool = False,
                 window_seconds: float = asr.WINDOW_SECONDS) -> int:
    """Apply ``recipe`` to encoder and decoder (:func:`asr_recipe`; with ``decoder_attention``
    also the decoder's attention matmuls, :func:`quantize_decoder_attention`) in place and
    calibrate its clips on ``recipe.calibration_batches`` training batches; returns the batches
    used."""
    full = asr_recipe(recipe, output_projection=output_projection)
    apply_recipe(model, full)
    if decoder_attention:
        quantize_decoder_attention(model, full)
    used = calibrate(model, calibration_batches(name, full.calibration_batches, window_seconds),
                     full)
    model.eval()
    return used


@contextlib.contextmanager
def fixed_weight_codes(model: nn.Module) -> Iterator[None]:
    """Inside the block, every ``QuantLinear`` reuses its weight codes computed on entry.

    The eval forward re-quantizes the weights at every call (they may change in training); a
    greedy decode calls the 51864 x 384 output projection once per token. The codes are the same
    function of unchanged weights, so the outputs are the same, bit for bit (a test checks)."""
    layers = [layer for _, layer in quant_linears(model)]
    for layer in layers:
        codes = layer.export_codes()
        layer.export_codes = lambda codes=codes: codes  # instance attribute over the method
    try:
        yield
    finally:
        for layer in layers:
            del layer.export_codes


def transcribe(model: nn.Module, name: str, chosen: Sequence[asr.Utterance],
               window_seconds: float = asr.WINDOW_SECONDS,
               datapath: Datapath | None = None) -> list[str]:
    """Greedy transcripts of ``chosen``, in order: the fake-quant model's, or with ``datapath``
    the integer reference's on it (:func:`accelsim.ref.decode.transcribe_int`; the decoder
    attention must be quantized, ``compress_asr(..., decoder_attention=True)``)."""
    tokenizer = asr_tokenizer(name)
    rules = decoding_rules(name)
    batches = asr.feature_batches(chosen, EVAL_BATCH, mels(name), window_seconds)
    texts: list[str] = []
    if datapath is not None:
        int_model = export_int_model(model)
        executor = build_int_executor(model, int_model, datapath=datapath)
        for features, _ in batches:
            result = transcribe_int(executor, int_model, features, rules)
            texts += [tokenizer.decode(ids) for ids in result.tokens]
        return texts
    with fixed_weight_codes(model):
        for features, _ in batches:
            texts += [tokenizer.decode(ids) for ids in greedy_transcribe(model, features, rules)]
    return texts


def split_wer(model: nn.Module, name: str, split: Split, limit: int | None,
              window_seconds: float = asr.WINDOW_SECONDS,
              datapath: Datapath | None = None) -> tuple[float, list[str], list[str]]:
    """``(WER %, references, hypotheses)`` over the first ``limit`` utterances of ``split``
    (``datapath``: :func:`transcribe`)."""
    chosen = asr.utterances(split, limit)
    hypotheses = transcribe(model, name, chosen, window_seconds, datapath)
    references = [u.sentence for u in chosen]
    return asr.wer_pct(references, hypotheses), references, hypotheses


@dataclasses.dataclass(frozen=True, eq=False)
class Example:
    """One utterance's speech (float32 samples at 16 kHz, as :func:`asr.audio` reads it) and its
    :func:`reference_ids`. Its log-mel features are computed with the batch that reads it:
    a 10 s window's features take about twice the memory of the few seconds of speech."""

    speech: np.ndarray
    ids: tuple[int, ...]


def examples(name: str, split: Split, limit: int,
             window_seconds: float = asr.WINDOW_SECONDS) -> list[Example]:
    """The first ``limit`` utterances of ``split`` as speech and token ids (the speech
    synthesised on first use, cached on disk); refused at once if one does not fit the
    window."""
    chosen = asr.utterances(split, limit)
    speech = asr.audio(chosen)
    asr.require_fit(speech, window_seconds)
    return [Example(x, ids) for x, ids in zip(
        speech, reference_ids(name, [u.sentence for u in chosen]), strict=True)]


class BuiltOnRead(Sequence[Batch]):
    """``count`` batches, batch ``i`` built by ``build(i)`` each time it is read: an epoch's
    batches without holding them all (``finetune`` indexes past those a resumed epoch has
    done)."""

    def __init__(self, count: int, build: Callable[[int], Batch]) -> None:
        self._count, self._build = count, build

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> Batch:  # type: ignore[override]
        if not 0 <= index < self._count:
            raise IndexError(f"batch {index} of {self._count}")
        return self._build(index)


def teacher_forced_labels(ids: torch.Tensor, lengths: Sequence[int],
                          prompt_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(decoder input, labels)`` of :func:`padded_ids`' ``ids``: the input is
    ``ids`` less its last position, label ``j`` the token at ``j + 1``; labels of prompt tokens
    and of padding are :data:`IGNORE`, so the loss covers the sentence and its end token."""
    import torch

    labels = ids[:, 1:].clone()
    target = torch.arange(1, ids.shape[1])[None]  # the position label j predicts
    scored = (target >= prompt_length) & (target < torch.tensor(list(lengths))[:, None])
    labels[~scored] = IGNORE
    return ids[:, :-1], labels


def teacher_forced_batches(name: str, chosen: Sequence[Example], batch_size: int,
                           seed: int | None,
                           window_seconds: float = asr.WINDOW_SECONDS) -> BuiltOnRead:
    """Training batches of ``chosen``, built when read: log-mel features and decoder input,
    labels flattened to ``(batch x tokens,)`` as :func:`training_class`'s logits; shuffled by
    ``seed`` (a fixed order with None)."""
    import torch

    order = (list(range(len(chosen))) if seed is None else
             torch.randperm(len(chosen), generator=torch.Generator().manual_seed(seed)).tolist())
    prompt_length = len(decoding_rules(name).prompt)
    mel_bins = mels(name)

    def build(index: int) -> Batch:
        part = [chosen[i] for i in order[index * batch_size:(index + 1) * batch_size]]
        ids, lengths = padded_ids([e.ids for e in part])
        decoder_input, labels = teacher_forced_labels(ids, lengths, prompt_length)
        features = asr.log_mel([e.speech for e in part], mel_bins, window_seconds)
        return Batch({"input_features": features, "decoder_input_ids": decoder_input},
                     labels.flatten())

    return BuiltOnRead(-(-len(order) // batch_size), build)


def reference_batches(fp32: nn.Module, name: str, chosen: Sequence[asr.Utterance],
                      window_seconds: float) -> list[tuple[torch.Tensor, ...]]:
    """Per feature batch of ``chosen``: the features, the teacher-forced ids, the targets
    (position t predicts token t + 1), which targets are scored (the reference tokens after the
    prompt, the end token included) and the FP32 model's log-probabilities, computed once for
    every model :func:`teacher_forced_scores` scores."""
    import torch

    prompt = len(decoding_rules(name).prompt)
    out = []
    with torch.no_grad():
        for features, sentences in asr.feature_batches(chosen, EVAL_BATCH, mels(name),
                                                       window_seconds):
            ids, lengths = teacher_forced_ids(name, sentences)
            scored = torch.zeros(ids[:, 1:].shape, dtype=torch.bool)
            for row, length in enumerate(lengths):
                scored[row, prompt - 1:length - 1] = True
            reference = torch.log_softmax(fp32(features, ids)[:, :-1].float(), -1)
            out.append((features, ids, ids[:, 1:], scored, reference))
    return out


def teacher_forced_scores(model: nn.Module, references: Sequence[tuple[torch.Tensor, ...]]
                          ) -> tuple[float, float, float, int]:
    """``(NLL per token, KL(FP32 || model) per token, top-1 %, tokens)`` over the scored
    targets of :func:`reference_batches`."""
    import torch

    nll = kl = 0.0
    hits = tokens = 0
    with torch.no_grad(), fixed_weight_codes(model):
        for features, ids, target, scored, reference in references:
            logits = model(input_features=features, decoder_input_ids=ids)
            logp = torch.log_softmax(logits[:, :-1].float(), -1)
            nll += float(-logp.gather(-1, target[..., None])[..., 0][scored].sum())
            kl += float((reference.exp() * (reference - logp)).sum(-1)[scored].sum())
            hits += int((logp.argmax(-1) == target)[scored].sum())
            tokens += int(scored.sum())
    return nll / tokens, kl / tokens, 100.0 * hits / tokens, tokens


def token_accuracy_pct(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Teacher-forced top-1 accuracy over the scored labels (not :data:`IGNORE`), percent."""
    scored = labels != IGNORE
    return float(100.0 * (logits[scored].argmax(-1) == labels[scored]).float().mean())


@functools.cache
def training_class() -> type:
    """``TeacherForcedAsr``: ``WhisperAsr`` whose forward returns what ``finetune`` reads, an
    object with ``.logits`` of ``(batch x tokens, vocab)``, row for row the flattened labels of
    :func:`teacher_forced_batches`. Same module tree, so the same recipe paths."""

    class TeacherForcedAsr(asr_class()):
        def forward(self, input_features: torch.Tensor,  # type: ignore[override]
                    decoder_input_ids: torch.Tensor) -> types.SimpleNamespace:
            logits = super().forward(input_features, decoder_input_ids)
            return types.SimpleNamespace(logits=logits.flatten(0, 1))

    return TeacherForcedAsr


def qat_recipe(recipe: Recipe, epochs: int, batch_size: int, lr: float) -> Recipe:
    """``recipe`` as :func:`train_asr` trains it: ``epochs`` from the FP32 model (no float
    stage: the FP32 model is the critical initialization), ``batch_size`` and ``lr``; a
    compressed recipe extended to the decoder (:func:`asr_recipe`)."""
    budgeted = dataclasses.replace(recipe, fp_epochs=0, epochs=epochs, batch_size=batch_size,
                                   lr=lr)
    return asr_recipe(budgeted) if recipe.quantized else budgeted


def train_asr(model: nn.Module, name: str, recipe: Recipe, train: Sequence[Example],
              val: Sequence[Example], *, seed: int, out_dir: Path, remake: str,
              window_seconds: float = asr.WINDOW_SECONDS,
              on_progress: Callable[[Progress], None] | None = None) -> FinetuneResult:
    """QAT (or, for a float recipe, fine-tuning) of the FP32 ``WhisperAsr`` ``model`` under
    ``recipe`` (:func:`qat_recipe`'s) on ``train``, teacher-forced, features of
    ``window_seconds`` windows; ``val``'s token accuracy after each epoch is the history's
    metric. Checkpoint (every :data:`CHECKPOINT_BATCHES` batches and epoch) and provenance (the
    recipe, the FP32 weights' hash, the training code) live in ``out_dir``: a finished run is
    reused, an interrupted one resumes, another's is refused with ``remake``. The result's
    model is a ``WhisperAsr`` in eval mode (compressed, decoder attention quantized), ready
    for :func:`transcribe`."""
    parent = tensors_sha256(model.state_dict())
    start_run(out_dir, recipe, parent, remake)
    student = training_class()(model.whisper)
    result = finetune(
        student,
        lambda epoch: teacher_forced_batches(name, train, recipe.batch_size, seed * 1000 + epoch,
                                             window_seconds),
        lambda: teacher_forced_batches(name, val, EVAL_BATCH, None, window_seconds),
        token_accuracy_pct, recipe, seed=seed, out_dir=out_dir, on_progress=on_progress,
        compress=compress_structure, checkpoint_batches=CHECKPOINT_BATCHES)
    finish_run(out_dir, student.state_dict())
    trained = asr_class()(student.whisper).eval()
    setattr(trained, PLAN_ATTR, result.plan)
    return dataclasses.replace(result, model=trained)


@dataclasses.dataclass(frozen=True)
class QatSchedule:
    """One teacher-forced training schedule on the asr task: the first ``train_utterances``
    training utterances for ``epochs`` at ``lr`` in batches of ``batch_size``, token accuracy on
    the first ``val_utterances`` validation utterances after each epoch."""

    train_utterances: int
    val_utterances: int
    epochs: int
    batch_size: int
    lr: float
    seed: int = 0
    window_seconds: float = asr.WINDOW_SECONDS

    def run_name(self, recipe_name: str, suffix: str = "") -> str:
        """The cached run's folder name (``suffix``: what else the run depends on)."""
        window = ("" if self.window_seconds == asr.WINDOW_SECONDS
                  else f"-w{self.window_seconds:g}")
        return (f"{recipe_name}-train{self.train_utterances}-val{self.val_utterances}"
                f"-e{self.epochs}-b{self.batch_size}-lr{self.lr:g}{window}{suffix}")


def scheduled_run(model: nn.Module, name: str, schedule: QatSchedule, recipe_name: str,
                  recipe: Recipe, *, remake: str, run_suffix: str = "",
                  on_progress: Callable[[Progress], None] | None = None) -> FinetuneResult:
    """:func:`train_asr` of ``model`` under ``recipe`` on ``schedule``'s utterances, cached
    under ``runs/asr/<schedule.run_name(recipe_name, run_suffix)>-seed<N>``."""
    directory = run_dir("asr", schedule.run_name(recipe_name, run_suffix), schedule.seed)
    train = examples(name, "train", schedule.train_utterances, schedule.window_seconds)
    val = examples(name, "val", schedule.val_utterances, schedule.window_seconds)
    budgeted = qat_recipe(recipe, schedule.epochs, schedule.batch_size, schedule.lr)
    return train_asr(model, name, budgeted, train, val, seed=schedule.seed, out_dir=directory,
                     remake=remake, window_seconds=schedule.window_seconds,
                     on_progress=on_progress)


def finetuned_start(name: str, schedule: QatSchedule, *, remake: str,
                    on_progress: Callable[[Progress], None] | None = None) -> nn.Module:
    """The FP32 run of ``schedule`` from the pre-trained recognizer (trained now when it is not
    cached), as an uncompressed recognizer: the critical initialization of a compressed QAT."""
    result = scheduled_run(build_asr_model(name, pretrained=True, seed=0), name, schedule,
                           "fp32", load_recipe("fp32"), remake=remake, on_progress=on_progress)
    return fresh_start(name, result.model)


def fresh_start(name: str, trained: nn.Module) -> nn.Module:
    """A new uncompressed recognizer holding the float ``trained`` run's weights: what a QAT
    starts from, without the attributes a finished run carries (its plan, eval mode)."""
    start = build_asr_model(name, pretrained=True, seed=0)
    start.load_state_dict(trained.state_dict())
    return start
