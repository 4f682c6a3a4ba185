"""Where whisper_tiny_en_asr loses its accuracy to 4 bits and to 2:4: one group of linears at a
time, its weights or its input activations lowered from 8 to 4 bits, or its 8-bit weights
pruned 2:4 (magnitude masks), the rest W8A8; writes asr_sensitivity.csv and asr_sensitivity.md.

The model is the FP32 fine-tuned recognizer of ``asr_wer.py --qat``'s schedule (the same
flags find its cached run; it is trained first when it is not cached): the critical
initialization every compressed recipe's QAT starts from, so the table says what that QAT has
to recover, and where. Each setting is W8A8 on the encoder linears, the decoder linears and the
output projection and the decoder attention quantized (as QAT trains), with one group lowered
before its clips are calibrated (``--calibration-percentiles``, default min-max) on the
training batches ``compress_asr`` uses; no QAT. Scored teacher-forced on the first ``--limit``
validation utterances (:func:`accelsim.accuracy.asr.teacher_forced_scores`): NLL per
reference token, KL from the FP32 model per token, top-1 agreement with the reference. Groups
split the input sites (:mod:`accelsim.compress.sites`) by encoder, decoder self-attention and
decoder cross-attention, since the recipes' per-site widths reach both. Deterministic.

    python experiments/accuracy/asr_sensitivity.py --train-utterances 400 --epochs 2 \\
        --batch-size 8 --lr 1e-4 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import re
import sys
import time
from pathlib import Path

import torch

from accelsim.accuracy.asr import (
    QatSchedule,
    asr_recipe,
    calibration_batches,
    finetuned_start,
    quantize_decoder_attention,
    reference_batches,
    teacher_forced_scores,
)
from accelsim.accuracy.pipeline import progress_printer
from accelsim.accuracy.table import write_csv
from accelsim.compress.apply import apply_recipe, calibrate, quant_linears, reformat_linear
from accelsim.compress.quant import ActQuantizer, WeightQuantizer
from accelsim.compress.recipe import load_recipe
from accelsim.errors import AccelsimError
from accelsim.files import write_text_atomic
from accelsim.tasks import asr

MODEL = "whisper_tiny_en_asr"
HERE = Path(__file__).resolve().parent
LAYER = r"whisper\.model\.{part}\.layers\.\d+\."
# (label, module-path pattern) of each group, in model order.
GROUPS: tuple[tuple[str, str], ...] = (
    ("encoder Q/K/V", LAYER.format(part="encoder") + r"self_attn\.[qkv]_proj$"),
    ("encoder attention out", LAYER.format(part="encoder") + r"self_attn\.out_proj$"),
    ("encoder FC1", LAYER.format(part="encoder") + r"fc1$"),
    ("encoder FC2", LAYER.format(part="encoder") + r"fc2$"),
    ("decoder self-attention Q/K/V", LAYER.format(part="decoder") + r"self_attn\.[qkv]_proj$"),
    ("decoder self-attention out", LAYER.format(part="decoder") + r"self_attn\.out_proj$"),
    ("decoder cross-attention Q", LAYER.format(part="decoder") + r"encoder_attn\.q_proj$"),
    ("decoder cross-attention K/V", LAYER.format(part="decoder") + r"encoder_attn\.[kv]_proj$"),
    ("decoder cross-attention out", LAYER.format(part="decoder") + r"encoder_attn\.out_proj$"),
    ("decoder FC1", LAYER.format(part="decoder") + r"fc1$"),
    ("decoder FC2", LAYER.format(part="decoder") + r"fc2$"),
    ("output projection", r"whisper\.proj_out$"),
)
# How a group is lowered from W8A8: the label of its rows, then what changes.
LOWERINGS = ("4-bit weights", "4-bit activations", "2:4 weights")
FIELDS = ("lowered", "group", "linears", "nll_per_token", "kl_per_token", "top1_pct", "tokens")


def fp32_finetuned(args: argparse.Namespace, command: str) -> torch.nn.Module:
    """The FP32 run of ``asr_wer.py --qat`` with this schedule (trained now when not cached;
    ``command``, this script's, re-makes it)."""
    schedule = QatSchedule(args.train_utterances, args.val_utterances, args.epochs,
                           args.batch_size, args.lr, args.seed, args.window_seconds)
    return finetuned_start(MODEL, schedule, remake=command,
                           on_progress=progress_printer("asr/fp32", every=1)).eval()


def lowered(fp32: torch.nn.Module, args: argparse.Namespace, pattern: str | None,
            lowering: str) -> tuple[torch.nn.Module, int]:
    """W8A8 ``fp32`` with the linears matching ``pattern`` lowered (one of :data:`LOWERINGS`),
    calibrated; the model and how many linears were lowered."""
    recipe = asr_recipe(dataclasses.replace(
        load_recipe("w8a8"), calibration_percentiles=tuple(args.calibration_percentiles)))
    model = copy.deepcopy(fp32)
    apply_recipe(model, recipe)
    quantize_decoder_attention(model, recipe)
    count = 0
    for name, layer in list(quant_linears(model)):
        if pattern is None or not re.search(pattern, name):
            continue
        count += 1
        old = layer.weight_quant
        if lowering == "4-bit weights":
            layer.weight_quant = WeightQuantizer(layer.out_features, 4, old.grid,
                                                 old.granularity, old.method)
            layer.weight_quant.init_step(layer.masked_weight())
        elif lowering == "4-bit activations":
            layer.act_quant = ActQuantizer(4, layer.act_quant.mode)
        else:
            reformat_linear(model, name, weight_bits=old.bits, act_bits=layer.act_quant.bits,
                            sparse=True)
    calibrate(model, calibration_batches(MODEL, recipe.calibration_batches,
                                         args.window_seconds), recipe)
    return model.eval(), count


def markdown(rows: list[dict[str, str]], fp32_row: dict[str, str], command: str,
             args: argparse.Namespace) -> str:
    lines = [
        "# Whisper tiny.en: where 4 bits and 2:4 cost the accuracy",
        "",
        f"Generated by `{command}` (do not edit by hand). The FP32 fine-tuned recognizer of",
        f"`asr_wer.py --qat` ({args.epochs} epochs x {args.train_utterances} training utterances,",
        f"batch {args.batch_size}, lr {args.lr:g}, seed {args.seed}), W8A8 everywhere (encoder,",
        "decoder linears, output projection; decoder attention 8-bit) but the group named, whose",
        "weights or input activations are 4-bit, or whose 8-bit weights are 2:4 (magnitude",
        "masks); clips calibrated "
        "({:g}-{:g} percentiles), no QAT.".format(*args.calibration_percentiles),
        f"Teacher-forced on the first {args.limit} validation utterances "
        f"({fp32_row['tokens']} reference tokens): NLL and KL (from FP32) per token in nats,",
        "top-1 agreement with the reference.",
        "",
        "| lowered | group | linears | NLL / token | KL / token | top-1 % |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['lowered']} | {r['group']} | {r['linears']} | {r['nll_per_token']} | "
              f"{r['kl_per_token']} | {r['top1_pct']} |" for r in [fp32_row, *rows]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=32, help="validation utterances scored")
    parser.add_argument("--calibration-percentiles", type=float, nargs=2, default=(0.0, 100.0),
                        metavar=("LO", "HI"))
    parser.add_argument("--window-seconds", type=float, default=asr.WINDOW_SECONDS)
    parser.add_argument("--train-utterances", type=int, default=400)
    parser.add_argument("--val-utterances", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "asr_sensitivity.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    command = ("python experiments/accuracy/asr_sensitivity.py "
               f"--train-utterances {args.train_utterances} --epochs {args.epochs} "
               f"--batch-size {args.batch_size} --lr {args.lr:g} --threads {args.threads}")
    if args.limit != 32:
        command += f" --limit {args.limit}"
    if tuple(args.calibration_percentiles) != (0.0, 100.0):
        command += " --calibration-percentiles {:g} {:g}".format(*args.calibration_percentiles)
    try:
        if args.limit < 1:
            raise AccelsimError(f"--limit {args.limit}: allowed: at least 1 utterance")
        start = time.perf_counter()
        fp32 = fp32_finetuned(args, command)
        references = reference_batches(fp32, MODEL, asr.utterances("val", args.limit),
                                       args.window_seconds)

        def row(lowering: str, group: str, model: torch.nn.Module, count: int
                ) -> dict[str, str]:
            nll, kl, top1, tokens = teacher_forced_scores(model, references)
            print(f"{lowering:<17} {group:<30} NLL {nll:.3f}  top-1 {top1:.2f} %", flush=True)
            return {"lowered": lowering, "group": group, "linears": str(count),
                    "nll_per_token": f"{nll:.4f}", "kl_per_token": f"{kl:.4f}",
                    "top1_pct": f"{top1:.2f}", "tokens": str(tokens)}

        fp32_row = row("none (FP32)", "-", fp32, 0)
        rows = [row("none (W8A8)", "-", *lowered(fp32, args, None, LOWERINGS[0]))]
        for lowering in LOWERINGS:
            rows.append(row(lowering, "all", *lowered(fp32, args, ".", lowering)))
            rows += [row(lowering, label, *lowered(fp32, args, pattern, lowering))
                     for label, pattern in GROUPS]
    except AccelsimError as exc:
        print(f"asr_sensitivity: {exc}", file=sys.stderr)
        return 2
    write_csv(args.out, FIELDS, [fp32_row, *rows])
    write_text_atomic(args.out.with_suffix(".md"), markdown(rows, fp32_row, command, args))
    print(f"{time.perf_counter() - start:.0f} s; wrote {args.out} and its .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
