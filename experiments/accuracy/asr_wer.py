"""Word error rate of whisper_tiny_en_asr on the asr task: FP32 and recipes applied to encoder
and decoder with calibrated clips, without or after QAT; writes asr_wer.csv and asr_wer.md.

Each recipe measured on ``--splits`` replaces its rows of the CSV (other rows stay), and the
markdown table is rewritten from the whole CSV. Each row's transcripts (sentence and hypothesis
per utterance, in split order) land in ``asr_transcripts/`` beside the CSV, named in the row's
``transcripts`` column: ``asr_paired.py`` compares two rows utterance by utterance.
``--decoder-attention quantized`` quantizes the decoder's self- and cross-attention matmuls
too; ``--measured-by integer_reference`` then transcribes on the integer reference, on the
accuracy table's chip datapath (:func:`accelsim.accuracy.evaluate.table_datapath`), instead of
the fake-quant model.
Deterministic: the split, voices and calibration utterances are fixed by the task's seed, the
model is built with seed 0 and nothing is sampled (greedy decoding).

``--qat`` first trains each recipe on the first ``--train-utterances`` training utterances
(training voices), teacher-forced (:func:`accelsim.accuracy.asr.train_asr`): ``--epochs`` at
``--lr``, batches of ``--batch-size``, clips calibrated on the first training batches, the
token accuracy on the first ``--val-utterances`` validation utterances after each epoch (choose
epochs and lr on ``--splits val`` only). ``fp32`` is fine-tuned in float32 with the same
schedule from the pre-trained recognizer: the baseline a QAT row compares with, and the critical
initialization a compressed recipe's QAT starts from (its run is trained first when it is not
cached; ``--fp32-epochs``, ``--fp32-lr`` and ``--fp32-train-utterances`` give that run other
epochs, another learning rate and other training data than the QAT's; with other data, ``fp32``
too starts from that run and trains the QAT's schedule, the control of the same data and steps;
``--init control`` starts a compressed recipe from that control, the ``fp32`` run of the same
command, instead: the FP32 model its row is compared with, as the paper's critical
initialization starts from the task's fine-tuned model; ``--init pretrained``, or
a recipe with ``init: pretrained``, starts from the
pre-trained recognizer instead, the ablation). A
compressed recipe trains and is measured with its decoder attention quantized, on the integer
reference. The run is
cached with its provenance under ``${ACCELSIM_CACHE}/runs/asr`` (reused when finished, resumed
when interrupted: re-run the same command). The thread count is part of the command: a run is
bit-for-bit reproducible at the thread count it was made with. Rows land in ``asr_wer.csv`` and
``asr_wer.md``; ``python experiments/accuracy/asr_readme.py`` then rebuilds the README's table.

    python experiments/accuracy/asr_wer.py --recipes fp32 w8a8 w4a4 w4a4_sp24 --limit 100
    python experiments/accuracy/asr_wer.py --recipes w8a8 --splits val --limit 5 \
        --calibration-percentiles 0 100 --decoder-attention quantized \
        --measured-by integer_reference --out /tmp/asr_wer_int.csv
    python experiments/accuracy/asr_wer.py --qat --recipes fp32 w4a4_sp24 --splits val test \
        --limit 100 --train-utterances 64 --epochs 1 --lr 1e-4 --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from accelsim.accuracy.asr import (
    QatSchedule,
    compress_asr,
    finetuned_start,
    fresh_start,
    scheduled_run,
    split_wer,
)
from accelsim.accuracy.evaluate import table_datapath
from accelsim.accuracy.pipeline import progress_printer
from accelsim.accuracy.provenance import code_commit, platform_label, tensors_sha256
from accelsim.accuracy.table import ASR_RUN_COLUMNS, asr_schedule_label, read_rows, write_csv
from accelsim.compress.recipe import Recipe, load_recipe
from accelsim.errors import AccelsimError
from accelsim.files import write_text_atomic
from accelsim.tasks import asr
from accelsim.zoo.asr import build_asr_model

MODEL = "whisper_tiny_en_asr"
HERE = Path(__file__).resolve().parent
FIELDS = ("model", "recipe", "calibration_percentiles", "split", "utterances",
          "reference_words", "wer_pct", "window_seconds", "output_projection",
          "decoder_attention", "measured_by", "datapath", "seconds", "command",
          "qat_epochs", "train_utterances", "batch_size", "lr", "val_token_accuracy_pct",
          "train_minutes", "checkpoint_sha256", "qat_init", "fp32_epochs", "code_commit",
          "fp32_lr", "fp32_train_utterances", "transcripts", "platform")
MEASURED_BY = ("fake_quant", "integer_reference")
# --init: the row's qat_init
INITS = {"finetuned": "fp32_finetuned", "control": "fp32_control", "pretrained": "pretrained"}
QAT_DEFAULTS = {"decoder_attention": "quantized", "measured_by": "integer_reference"}
PLAIN_DEFAULTS = {"decoder_attention": "float32", "measured_by": "fake_quant"}


def command(args: argparse.Namespace, recipe: str, split: str) -> str:
    parts = ["python experiments/accuracy/asr_wer.py", f"--recipes {recipe}", f"--splits {split}",
             f"--limit {args.limit}"]
    if args.window_seconds != asr.WINDOW_SECONDS:
        parts.append(f"--window-seconds {args.window_seconds:g}")
    if args.float_output_projection:
        parts.append("--float-output-projection")
    if args.calibration_percentiles:
        parts.append("--calibration-percentiles {:g} {:g}".format(*args.calibration_percentiles))
    if args.qat:
        parts += ["--qat", f"--train-utterances {args.train_utterances}",
                  f"--val-utterances {args.val_utterances}", f"--epochs {args.epochs}",
                  f"--batch-size {args.batch_size}", f"--lr {args.lr:g}",
                  f"--threads {args.threads}"]
        if args.seed:
            parts.append(f"--seed {args.seed}")
        chosen = load_recipe(recipe)
        if (args.init != "finetuned" and has_parent(args, chosen)
                and start_of(args, chosen) == args.init):
            parts.append(f"--init {args.init}")
        if args.fp32_epochs != args.epochs:
            parts.append(f"--fp32-epochs {args.fp32_epochs}")
        if args.fp32_lr != args.lr:
            parts.append(f"--fp32-lr {args.fp32_lr:g}")
        if args.fp32_train_utterances != args.train_utterances:
            parts.append(f"--fp32-train-utterances {args.fp32_train_utterances}")
    else:
        if args.decoder_attention != "float32":
            parts.append(f"--decoder-attention {args.decoder_attention}")
        if args.measured_by != "fake_quant":
            parts.append(f"--measured-by {args.measured_by}")
    return " ".join(parts)


def schedule_of(args: argparse.Namespace) -> QatSchedule:
    """The QAT schedule of ``args``."""
    return QatSchedule(args.train_utterances, args.val_utterances, args.epochs, args.batch_size,
                       args.lr, args.seed, args.window_seconds)


def has_parent(args: argparse.Namespace, recipe: Recipe) -> bool:
    """Whether ``recipe``'s QAT starts from an FP32 run unless ``--init`` says otherwise: a
    compressed recipe always; ``fp32`` when that run had other training data
    (``--fp32-train-utterances``), so that it is the control that sees the compressed recipes'
    data and steps."""
    return recipe.quantized or args.fp32_train_utterances != args.train_utterances


def parent_epochs(args: argparse.Namespace, recipe: Recipe) -> int | None:
    """The epochs of the FP32 run ``recipe``'s QAT starts from; None when it starts from the
    pre-trained recognizer."""
    if not has_parent(args, recipe) or start_of(args, recipe) == "pretrained":
        return None
    return args.fp32_epochs


def qat_run(args: argparse.Namespace, recipe_name: str, model: torch.nn.Module,
            recipe: Recipe) -> tuple[torch.nn.Module, dict[str, str]]:
    """Train (or reuse, or resume) ``recipe_name``'s QAT run; the trained recognizer and the
    row's QAT columns."""
    # One folder per schedule and data (the provenance refuses a folder of another recipe).
    clips = ("-p{:g}-{:g}".format(*recipe.calibration_percentiles)
             if args.calibration_percentiles and recipe.quantized else "")
    parent = parent_epochs(args, recipe)
    init = f"-init{start_of(args, recipe)}" if has_parent(args, recipe) else ""
    if parent not in (None, args.epochs):  # equal epochs keep the folder names made before
        init += f"-fp32e{parent}"
    if parent is not None and args.fp32_lr != args.lr:
        init += f"-fp32lr{args.fp32_lr:g}"
    parent_data = other_parent_data(args, parent)
    if parent_data:
        init += f"-fp32train{parent_data}"
    result = scheduled_run(model, MODEL, schedule_of(args), recipe_name, recipe,
                           remake=command(args, recipe_name, " ".join(args.splits)),
                           run_suffix=clips + init,
                           on_progress=progress_printer(f"asr/{recipe_name}", every=1))
    reused = result.resumed_from_epoch == len(result.history)
    return result.model, {
        "qat_epochs": str(args.epochs), "train_utterances": str(args.train_utterances),
        "batch_size": str(args.batch_size), "lr": f"{args.lr:g}",
        "val_token_accuracy_pct": f"{result.metric:.2f}",
        "train_minutes": "" if reused else f"{result.train_seconds / 60:.1f}",
        "checkpoint_sha256": tensors_sha256(result.model.state_dict()),
        "qat_init": INITS[start_of(args, recipe)] if has_parent(args, recipe) else "",
        "fp32_epochs": "" if parent is None else str(parent),
        "fp32_lr": "" if parent is None or args.fp32_lr == args.lr else f"{args.fp32_lr:g}",
        "fp32_train_utterances": parent_data,
    }


def other_parent_data(args: argparse.Namespace, parent: int | None) -> str:
    """The FP32 parent's training utterances where they differ from the QAT's, else ""."""
    if parent is None or args.fp32_train_utterances == args.train_utterances:
        return ""
    return str(args.fp32_train_utterances)


def start_of(args: argparse.Namespace, recipe: Recipe) -> str:
    """``finetuned``, ``control`` or ``pretrained``: what ``recipe``'s QAT starts from
    (``--init``, unless the recipe itself asks for the pre-trained model; the control, ``fp32``,
    starts from the FP32 run under ``--init control``). An ``fp32`` run without an FP32 parent
    (``has_parent``) starts from the pre-trained recognizer whatever this says."""
    if recipe.init == "pretrained":
        return "pretrained"
    if args.init == "control" and not recipe.quantized:
        return "finetuned"
    return args.init


def qat_start(args: argparse.Namespace, recipe: Recipe) -> torch.nn.Module:
    """The recognizer ``recipe``'s QAT starts from: for a compressed recipe the FP32 run of
    the same schedule (critical initialization; trained now when it is not cached), or with
    ``--init control`` the trained ``fp32`` run of this command; else, or with ``--init
    pretrained``, the pre-trained recognizer."""
    parent = parent_epochs(args, recipe)
    if parent is None:
        return build_asr_model(MODEL, pretrained=True, seed=0)
    if start_of(args, recipe) == "control":
        fp32 = load_recipe("fp32")
        control, _ = qat_run(args, "fp32", qat_start(args, fp32), fp32)
        return fresh_start(MODEL, control)
    fp32_args = argparse.Namespace(**{**vars(args), "epochs": parent, "lr": args.fp32_lr,
                                      "train_utterances": args.fp32_train_utterances})
    return finetuned_start(MODEL, schedule_of(fp32_args),
                           remake=command(fp32_args, "fp32", " ".join(args.splits)),
                           on_progress=progress_printer("asr/fp32", every=1))


def measure(args: argparse.Namespace, recipe_name: str
            ) -> list[tuple[dict[str, str], list[dict[str, str]]]]:
    """Each split's row and its transcripts (``{"sentence", "hypothesis"}`` per utterance)."""
    quantized_attention = args.decoder_attention == "quantized"
    if recipe_name == "fp32" and not args.qat and (quantized_attention
                                                   or args.measured_by != "fake_quant"):
        raise AccelsimError("recipe fp32: --decoder-attention quantized and --measured-by "
                            "integer_reference need a quantized recipe")
    if args.measured_by == "integer_reference" and not quantized_attention:
        raise AccelsimError("--measured-by integer_reference: the integer KV cache needs the "
                            "decoder attention quantized; allowed: with --decoder-attention "
                            "quantized")
    projection, percentiles = "float32", "-"
    chip = None
    recipe = load_recipe(recipe_name)
    if args.calibration_percentiles and recipe.quantized:
        recipe = dataclasses.replace(recipe,
                                     calibration_percentiles=tuple(args.calibration_percentiles))
    qat: dict[str, str] = {}
    if args.qat:
        model, qat = qat_run(args, recipe_name, qat_start(args, recipe), recipe)
    else:
        model = build_asr_model(MODEL, pretrained=True, seed=0)
    if not args.qat and recipe.quantized:
        compress_asr(model, MODEL, recipe,
                     output_projection=not args.float_output_projection,
                     decoder_attention=quantized_attention,
                     window_seconds=args.window_seconds)
    if recipe.quantized:
        percentiles = "{:g}-{:g}".format(*recipe.calibration_percentiles)
        projection = "float32" if args.float_output_projection else "quantized"
        if args.measured_by == "integer_reference":
            chip = table_datapath(recipe)
    else:
        quantized_attention = False
    rows, commit = [], code_commit()
    for split in args.splits:
        start = time.perf_counter()
        wer, refs, hyps = split_wer(model, MODEL, split, args.limit, args.window_seconds,
                                    datapath=None if chip is None else chip.datapath)
        row = {
            "model": MODEL, "recipe": recipe_name, "calibration_percentiles": percentiles,
            "split": split, "utterances": str(len(refs)),
            "reference_words": str(sum(len(asr.normalize(r)) for r in refs)),
            "wer_pct": f"{wer:.2f}", "window_seconds": f"{args.window_seconds:g}",
            "output_projection": projection,
            "decoder_attention": "quantized" if quantized_attention else "float32",
            "measured_by": "pytorch_fp32" if recipe_name == "fp32" else args.measured_by,
            "datapath": "" if chip is None else chip.label,
            "seconds": f"{time.perf_counter() - start:.0f}",
            "command": command(args, recipe_name, split), **qat, "code_commit": commit,
            "platform": platform_label(),
        }  # fmt: skip
        rows.append((row, [{"sentence": r, "hypothesis": h}
                           for r, h in zip(refs, hyps, strict=True)]))
        print(f"{recipe_name:<10} {percentiles:<8} {split:<5} WER {wer:6.2f} %  "
              f"({len(refs)} utterances, {row['seconds']} s, {row['measured_by']})", flush=True)
    return rows


def key(row: dict[str, str]) -> tuple[str, ...]:
    """A row's identity. The code commit is part of it: a run re-made at another commit keeps
    the older row, whose QAT children (the rows of that commit) were trained from it."""
    return (*(row.get(f, "") for f in ASR_RUN_COLUMNS), row.get("code_commit", ""))


def qat_label(row: dict[str, str]) -> str:
    """The markdown's QAT column: "-" without QAT, else the data and batch, then the schedule
    as the README words it (fine-tuning for fp32)."""
    if not row.get("qat_epochs"):
        return "-"
    return (f"{int(row['train_utterances']):,} utt, batch {row['batch_size']}: "
            f"{asr_schedule_label(row)}")


def transcripts_name(row: dict[str, str]) -> str:
    """Where ``row``'s transcripts live, relative to the CSV's folder: one file per row key."""
    digest = hashlib.sha256("\x1f".join(key(row)).encode()).hexdigest()[:12]
    return f"asr_transcripts/{row['recipe']}-{row['split']}-{digest}.jsonl"


def write_transcripts(measured: list[tuple[dict[str, str], list[dict[str, str]]]],
                      csv_path: Path) -> list[dict[str, str]]:
    """Write each measured row's transcripts beside ``csv_path``; the rows, naming them."""
    rows = []
    for row, transcripts in measured:
        row = {**row, "transcripts": transcripts_name(row)}
        path = csv_path.parent / row["transcripts"]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, "".join(json.dumps(t) + "\n" for t in transcripts))
        rows.append(row)
    return rows


def write(rows: list[dict[str, str]], csv_path: Path, md_path: Path) -> None:
    new_keys = {key(r) for r in rows}
    merged = [r for r in read_rows(csv_path) if key(r) not in new_keys] + rows
    order = {"fp32": 0, "w8a8": 1, "w4a4": 2, "w4a4_sp24": 3}
    merged.sort(key=lambda r: (float(r["window_seconds"]), order.get(r["recipe"], 9), r["recipe"],
                               r["output_projection"], r["calibration_percentiles"] != "0.1-99.9",
                               r["calibration_percentiles"], r["decoder_attention"],
                               r["measured_by"], qat_label(r), r["split"] != "val"))
    write_csv(csv_path, FIELDS, merged)
    lines = ["| recipe | clip percentiles | QAT | split | utterances | words | WER % | window s | "
             "output proj. | decoder attn. | measured by | commit | platform | command |",
             "|---|---|---|---|---:|---:|---:|---:|---|---|---|---|---|---|"]
    lines += [f"| {r['recipe']} | {r['calibration_percentiles']} | {qat_label(r)} | "
              f"{r['split']} | {r['utterances']} | {r['reference_words']} | "
              f"{r['wer_pct']} | {r['window_seconds']} | {r['output_projection']} | "
              f"{r['decoder_attention']} | {r['measured_by']} | "
              f"{r.get('code_commit', '')[:7] or '-'} | {r.get('platform') or '-'} | "
              f"`{r['command']}` |"
              for r in merged]
    write_text_atomic(md_path, "\n".join(lines) + "\n")


def resolve_defaults(args: argparse.Namespace) -> None:
    """Fill in --decoder-attention and --measured-by; QAT trains and measures one way only."""
    defaults = QAT_DEFAULTS if args.qat else PLAIN_DEFAULTS
    for field, value in defaults.items():
        given = getattr(args, field)
        if args.qat and given not in (None, value):
            raise AccelsimError(f"--qat: --{field.replace('_', '-')} {given}; allowed: {value} "
                                "(QAT trains what the integer reference runs)")
        setattr(args, field, value if given is None else given)
    if args.init != "finetuned" and not args.qat:
        raise AccelsimError(f"--init {args.init}: allowed only with --qat")
    if args.fp32_epochs is None:
        args.fp32_epochs = args.epochs
    elif not args.qat or args.fp32_epochs < 1:
        raise AccelsimError(f"--fp32-epochs {args.fp32_epochs}: allowed only with --qat, "
                            "a positive number of epochs")
    if args.fp32_lr is None:
        args.fp32_lr = args.lr
    elif not args.qat or not args.fp32_lr > 0:
        raise AccelsimError(f"--fp32-lr {args.fp32_lr:g}: allowed only with --qat, a positive "
                            "learning rate")
    if args.fp32_train_utterances is None:
        args.fp32_train_utterances = args.train_utterances
    elif not args.qat or args.fp32_train_utterances < 1:
        raise AccelsimError(f"--fp32-train-utterances {args.fp32_train_utterances}: allowed only "
                            "with --qat, a positive number of utterances")
    if args.qat and args.float_output_projection:
        raise AccelsimError("--qat: --float-output-projection; allowed: without it (QAT "
                            "quantizes the output projection)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["fp32", "w8a8", "w4a4", "w4a4_sp24"])
    parser.add_argument("--splits", nargs="+", choices=("val", "test"), default=["val", "test"])
    parser.add_argument("--limit", type=int, default=100, help="utterances per split")
    parser.add_argument("--window-seconds", type=float, default=asr.WINDOW_SECONDS)
    parser.add_argument("--float-output-projection", action="store_true",
                        help="leave the output projection (LM head) float32")
    parser.add_argument("--calibration-percentiles", type=float, nargs=2, metavar=("LO", "HI"),
                        help="activation clip percentiles instead of the recipe's")
    parser.add_argument("--decoder-attention", choices=("float32", "quantized"),
                        help="the decoder's self- and cross-attention matmuls (default float32; "
                             "quantized with --qat)")
    parser.add_argument("--measured-by", choices=MEASURED_BY,
                        help="transcribe with the fake-quant model or on the integer reference "
                             "(the accuracy table's chip datapath; default fake_quant, "
                             "integer_reference with --qat)")
    parser.add_argument("--qat", action="store_true",
                        help="train each recipe on the training voices first (module doc)")
    parser.add_argument("--train-utterances", type=int, default=64)
    parser.add_argument("--fp32-train-utterances", type=int,
                        help="training utterances of the FP32 run a compressed recipe's QAT "
                             "starts from (default: --train-utterances)")
    parser.add_argument("--val-utterances", type=int, default=16,
                        help="validation utterances of the per-epoch token accuracy")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--fp32-epochs", type=int,
                        help="epochs of the FP32 run a compressed recipe's QAT starts from "
                             "(default: --epochs)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--fp32-lr", type=float,
                        help="learning rate of the FP32 run a compressed recipe's QAT starts from "
                             "(default: --lr)")
    parser.add_argument("--init", choices=tuple(INITS), default="finetuned",
                        help="what a compressed recipe's QAT starts from: the FP32 run "
                             "(critical initialization, default), the fp32 control of this "
                             "command (trained from that run on the QAT's schedule) or the "
                             "pre-trained recognizer")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "asr_wer.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        resolve_defaults(args)
        for name in args.recipes:  # each recipe's rows are written as soon as they are measured
            write(write_transcripts(measure(args, name), args.out), args.out,
                  args.out.with_suffix(".md"))
    except AccelsimError as exc:
        print(f"asr_wer: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
