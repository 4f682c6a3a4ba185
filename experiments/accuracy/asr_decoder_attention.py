"""Where the WER of 8-bit decoder attention goes (whisper_tiny_en_asr, W8A8, min-max clips):
the decoder's attention quantizers switched off one group at a time, and the suspected causes
tested, on the first ``--limit`` validation utterances; writes asr_decoder_attention.md.

Each setting is the W8A8 recognizer (encoder, linears and output projection quantized, clips
calibrated teacher-forced on the float model as ``compress_asr`` does) with the decoder's
attention quantized except the operands it names (those pass floats), or with that attention's
clips set another way. Measured per setting:

* teacher-forced on the references (prompt, sentence tokens, end token): mean negative
  log-likelihood per reference token, mean KL divergence from the FP32 model's next-token
  distribution, and top-1 agreement with the reference, in percent. These score every token
  with the same history, so they are free of greedy decoding's compounding.
* ``--wer``: greedy WER (``accelsim.accuracy.asr.transcribe``), as ``asr_wer.py`` measures it.

For the fully quantized setting the script also records, during greedy decoding, the share of
each decoder attention operand outside its calibrated clip and the probability mass per
attention row that the probabilities' 8-bit codes round to 0.

    python experiments/accuracy/asr_decoder_attention.py --limit 16
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from accelsim.accuracy.asr import (
    calibration_batches,
    compress_asr,
    reference_batches,
    teacher_forced_scores,
    transcribe,
)
from accelsim.compress.apply import ATTN_QUANT
from accelsim.compress.quant import ActQuantizer
from accelsim.compress.recipe import load_recipe
from accelsim.errors import AccelsimError
from accelsim.files import write_text_atomic
from accelsim.tasks import asr
from accelsim.zoo.asr import build_asr_model, decoding_rules, greedy_transcribe

MODEL = "whisper_tiny_en_asr"
HERE = Path(__file__).resolve().parent
CROSS_PROBS = r"encoder_attn\.probs$"


@dataclasses.dataclass(frozen=True)
class Setting:
    label: str
    floats: str = r"^$"  # decoder attention quantizers (``<module>.<q|k|v|probs>``) left float
    cross_probs_hi: float = 1.0  # factor on the cross-attention probabilities' upper clip
    recalibrate: str = ""  # "", "quantized_rest" or "autoregressive"


SETTINGS = (
    Setting("decoder attention float", floats=r"."),
    Setting("decoder attention int8 (as asr_wer.py)"),
    Setting("self-attention int8, cross-attention float", floats=r"encoder_attn"),
    Setting("cross-attention int8, self-attention float", floats=r"self_attn"),
    Setting("all int8 but Q", floats=r"\.q$"),
    Setting("all int8 but K", floats=r"\.k$"),
    Setting("all int8 but V", floats=r"\.v$"),
    Setting("all int8 but self-attention probabilities", floats=r"self_attn\.probs$"),
    Setting("all int8 but cross-attention probabilities", floats=CROSS_PROBS),
    Setting("clips recalibrated with encoder and linears quantized", recalibrate="quantized_rest"),
    Setting("clips recalibrated on greedy decoding", recalibrate="autoregressive"),
    Setting("cross-attention probability clip x 0.5", cross_probs_hi=0.5),
    Setting("cross-attention probability clip x 0.25", cross_probs_hi=0.25),
)


def decoder_attention_quantizers(model: torch.nn.Module) -> dict[str, ActQuantizer]:
    return {f"{name}.{op}": quantizer for name, module in model.named_modules()
            if hasattr(module, ATTN_QUANT) and ".decoder." in name
            for op, quantizer in module.get_submodule(ATTN_QUANT).items()}


def recalibrate(model: torch.nn.Module, run: Callable[[], object]) -> None:
    """Min-max clips of the decoder's attention quantizers observed while ``run`` runs the model
    with every other quantizer active (``calibrate`` observes them all at once, on floats).
    Without autograd: a forward that keeps its graph holds every batch's activations."""
    quantizers = decoder_attention_quantizers(model).values()
    for quantizer in quantizers:
        quantizer.start_calibration((0.0, 100.0))
    with torch.no_grad():
        run()
    for quantizer in quantizers:
        quantizer.finish_calibration()


def prepared(base: torch.nn.Module, setting: Setting, window_seconds: float) -> torch.nn.Module:
    model = copy.deepcopy(base)
    if setting.recalibrate:
        batches = calibration_batches(MODEL, load_recipe("w8a8").calibration_batches,
                                      window_seconds)
        if setting.recalibrate == "quantized_rest":
            def run() -> None:
                for batch in batches:
                    model(**batch.inputs)
        else:  # greedy decoding of the calibration batches' utterances
            def run() -> None:
                for batch in batches:
                    greedy_transcribe(model, batch.inputs["input_features"], decoding_rules(MODEL))
        recalibrate(model, run)
    for name, quantizer in decoder_attention_quantizers(model).items():
        if re.search(setting.floats, name):
            quantizer.bypass()
        elif re.search(CROSS_PROBS, name):
            with torch.no_grad():
                quantizer.hi.mul_(setting.cross_probs_hi)
    return model.eval()


def decode_ranges(model: torch.nn.Module, chosen: list[asr.Utterance],
                  window_seconds: float) -> list[str]:
    """Markdown rows: per decoder attention operand, during greedy decoding, the share of values
    outside the calibrated clip and (probabilities) the mass per row rounded to code 0."""
    stats: dict[str, list[float]] = {}

    def observer(name: str) -> Callable[[ActQuantizer, tuple[torch.Tensor, ...]], None]:
        def record(quantizer: ActQuantizer, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().float()
            lo, hi = float(quantizer.lo), float(quantizer.hi)
            total = stats.setdefault(name, [0.0, 0.0, 0.0, 0.0])
            total[0] += x.numel()
            total[1] += int(((x < lo) | (x > hi)).sum())
            if name.endswith("probs"):
                scale, _ = quantizer.qparams()
                total[2] += float(x[x < float(scale) / 2].sum())
                total[3] += x[..., 0].numel()
        return record

    hooks = [q.register_forward_pre_hook(observer(n))
             for n, q in decoder_attention_quantizers(model).items()]
    try:
        transcribe(model, MODEL, chosen, window_seconds)
    finally:
        for hook in hooks:
            hook.remove()
    rows = []
    for name, (values, outside, lost, rows_seen) in stats.items():
        quantizer = decoder_attention_quantizers(model)[name]
        lost_pct = f"{100.0 * lost / rows_seen:.2f}" if name.endswith("probs") else "-"
        rows.append(f"| `{name.removeprefix('whisper.model.decoder.')}` | "
                    f"{float(quantizer.lo):.3f} .. {float(quantizer.hi):.3f} | "
                    f"{100.0 * outside / values:.4f} | {lost_pct} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=16, help="validation utterances")
    parser.add_argument("--wer", action="store_true", help="also greedy WER per setting")
    parser.add_argument("--window-seconds", type=float, default=asr.WINDOW_SECONDS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "asr_decoder_attention.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        chosen = asr.utterances("val", args.limit)
        start = time.perf_counter()
        fp32 = build_asr_model(MODEL, pretrained=True, seed=0)
        base = build_asr_model(MODEL, pretrained=True, seed=0)
        recipe = dataclasses.replace(load_recipe("w8a8"), calibration_percentiles=(0.0, 100.0))
        compress_asr(base, MODEL, recipe, decoder_attention=True,
                     window_seconds=args.window_seconds)
        references = reference_batches(fp32, MODEL, chosen, args.window_seconds)
        refs = [u.sentence for u in chosen]
        scores: dict[str, tuple[float, float, float, int]] = {}
        wers: dict[str, float] = {}
        ranges: list[str] = []
        # One setting's copy of the model at a time: 13 copies of tiny.en at once do not fit.
        for setting in SETTINGS:
            model = prepared(base, setting, args.window_seconds)
            scores[setting.label] = teacher_forced_scores(model, references)
            if args.wer:
                wers[setting.label] = asr.wer_pct(
                    refs, transcribe(model, MODEL, chosen, args.window_seconds))
            if setting is SETTINGS[1]:
                ranges = decode_ranges(model, chosen, args.window_seconds)
            del model
        fp32_wer = (asr.wer_pct(refs, transcribe(fp32, MODEL, chosen, args.window_seconds))
                    if args.wer else None)
    except AccelsimError as exc:
        print(f"asr_decoder_attention: {exc}", file=sys.stderr)
        return 2
    command = f"python experiments/accuracy/asr_decoder_attention.py --limit {args.limit}" + (
        " --wer" if args.wer else "")
    tokens = next(iter(scores.values()))[3]
    lines = [
        "# Decoder attention at 8 bits: where the WER goes",
        "",
        f"Generated by `{command}` ({time.perf_counter() - start:.0f} s). whisper_tiny_en_asr,",
        "W8A8 with min-max clips (encoder, decoder linears, output projection), the decoder's",
        f"attention int8 except where a row says otherwise; the first {args.limit} validation",
        f"utterances, {tokens} reference tokens (end token included), teacher-forced. KL is",
        "from the FP32 model's next-token distribution, per token (nats).",
        "",
        "| setting | NLL / token | KL / token | top-1 % |" + (" greedy WER % |" if wers else ""),
        "|---|---:|---:|---:|" + ("---:|" if wers else ""),
    ]
    if fp32_wer is not None:
        lines.append(f"| FP32 | - | - | - | {fp32_wer:.2f} |")
    for label, (nll, kl, top1, _) in scores.items():
        lines.append(f"| {label} | {nll:.4f} | {kl:.4f} | {top1:.2f} |"
                     + (f" {wers[label]:.2f} |" if wers else ""))
    lines += ["", "During greedy decoding of the same utterances, fully int8 (calibrated clips):",
              "", "| operand | clip | outside the clip % | probability mass per row "
              "rounded to 0 % |", "|---|---|---:|---:|", *ranges]
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
