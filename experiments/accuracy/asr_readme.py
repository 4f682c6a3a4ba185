"""The README's speech-recognition table, generated from ``asr_wer.csv`` and the simulator.

One line per recipe and amount of training data: of that recipe's QAT runs on those training
utterances (each a schedule: epochs, learning rate, the FP32 run it starts from, clips), the one
with the lowest validation WER, chosen on validation alone, with its test WER when the test split
was scored. Rows count only when scored on :data:`UTTERANCES` utterances a split, a compressed
recipe on the integer reference. "val - FP32" is the validation WER against the FP32 run
trained on the same utterances. The cost columns are the simulator's, priced now on the current
code: ``python -m accelsim run --hw hw_configs/int4_sparse.yaml --model whisper_tiny_en_asr
--recipe R --phase generate`` (batch 1, a 2-token prompt, 32 generated tokens; the decoder at the
recipe's widths and nominal 2:4 density). FP32 has no cost: it is not a chip datapath.

    python experiments/accuracy/asr_readme.py            # rewrite the README's table
    python experiments/accuracy/asr_readme.py --print    # print it instead
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from accelsim.accuracy.table import ASR_QAT_COLUMNS, asr_schedule_label, read_rows, with_block
from accelsim.errors import AccelsimError
from accelsim.files import write_text_atomic

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
README = REPO / "README.md"
CSV = HERE / "asr_wer.csv"
README_BEGIN = "<!-- asr-table:begin (python experiments/accuracy/asr_readme.py) -->"
README_END = "<!-- asr-table:end -->"
MODEL = "whisper_tiny_en_asr"
HW = "hw_configs/int4_sparse.yaml"
UTTERANCES = "300"
# The recipes the README shows, in order, with what each compresses (the encoder and decoder
# linears; attention matmuls and the KV cache are 8-bit in all of them).
README_RECIPES = {
    "fp32": "none (float32)",
    "w8a8": "W8A8",
    "w4a4": "W4A4 (the paper's)",
    "w4a4_sp24": "W4A4 + 2:4 (the paper's)",
    "w4a8_qkv_w8": "W4A8, Q/K/V weights 8-bit; no 2:4",
    "w4a8_sp24_wanda_qkv_w8_attn_dense_head_w8": "W4A8, Q/K/V 8-bit, 2:4 FFNs (Wanda), head 8-bit",
    "w4a8_sp24_wanda_qkv_w8_attn_dense_head_dense": "W4A8, Q/K/V 8-bit, 2:4 FFNs (Wanda)",
    "w4a8_sp24_wanda_qkv_w8_attn_dense_head_dense_sr_ste":
        "W4A8, Q/K/V 8-bit, 2:4 FFNs (SR-STE from Wanda)",
    "w4a8_sp24_sparsegpt_qkv_w8_attn_dense_head_dense": "W4A8, Q/K/V 8-bit, 2:4 FFNs (SparseGPT)",
    "w4a8_sp24_sparsegpt_qkv_w8_attn_dense_head_dense_down_dense":
        "W4A8, Q/K/V 8-bit, 2:4 FC1s (SparseGPT)",
    "w4a8_sp24_sparsegpt_qkv_w8_attn_dense_head_dense_enc_dense":
        "W4A8, Q/K/V 8-bit, 2:4 decoder FFNs (SparseGPT)",
    "w4a8_sp24_sparsegpt_qkv_w8_attn_dense_head_dense_dec_dense":
        "W4A8, Q/K/V 8-bit, 2:4 encoder FFNs (SparseGPT)",
    "w4a8_sp24_sparsegpt_qkv_w8_attn_dense_head_dense_kd":
        "W4A8, Q/K/V 8-bit, 2:4 FFNs (SparseGPT), distilled",
    "w4a8_sp24_sparsegpt_qkv_w8_attn_dense_head_dense_dec_dense_kd":
        "W4A8, Q/K/V 8-bit, 2:4 encoder FFNs (SparseGPT), distilled",
    "w4a8_sp24_sparsegpt_qkv_w8_attn_dense": "W4A8, Q/K/V 8-bit, 2:4 FFNs and head (SparseGPT)",
}  # fmt: skip
# What makes two rows one run: everything that trained it (the split is the run's score).
RUN_KEY = ("recipe", "calibration_percentiles", *ASR_QAT_COLUMNS)
# The rows that count: a compressed recipe scored on the integer reference, FP32 in PyTorch.
COUNTED = ("integer_reference", "pytorch_fp32")

@dataclass(frozen=True)
class Line:
    """One table line: a recipe's best-on-validation run on some training data."""

    recipe: str
    train_utterances: int
    schedule: str
    val_wer_pct: float
    test_wer_pct: float | None
    commits: str  # of the rows that scored it, comma-separated


@dataclass(frozen=True)
class Cost:
    """A recipe's cost per generated token on :data:`HW`."""

    ms_per_token: float
    uj_per_token: float


def lines(rows: list[dict[str, str]]) -> list[Line]:
    """The table's lines (module docstring), in :data:`README_RECIPES` order, then by data."""
    runs: dict[tuple[str, ...], dict[str, dict[str, str]]] = {}
    for row in rows:
        if (row["model"] != MODEL or row["utterances"] != UTTERANCES or not row.get("qat_epochs")
                or row["recipe"] not in README_RECIPES or row["measured_by"] not in COUNTED):
            continue
        runs.setdefault(tuple(row.get(f, "") for f in RUN_KEY), {})[row["split"]] = row
    best: dict[tuple[str, int], tuple[float, tuple[str, ...], dict[str, dict[str, str]]]] = {}
    for run_key, splits in runs.items():
        if "val" not in splits:
            continue
        val = float(splits["val"]["wer_pct"])
        slot = (splits["val"]["recipe"], int(splits["val"]["train_utterances"]))
        if slot not in best or (val, run_key) < best[slot][:2]:
            best[slot] = (val, run_key, splits)
    order = list(README_RECIPES)
    out = []
    for (recipe, data), (val, _, splits) in sorted(
            best.items(), key=lambda item: (order.index(item[0][0]), item[0][1])):
        test = splits.get("test")
        commits = dict.fromkeys(row.get("code_commit", "")[:7] for row in splits.values())
        out.append(Line(recipe, data, asr_schedule_label(splits["val"]), val,
                        None if test is None else float(test["wer_pct"]),
                        ", ".join(sorted(c for c in commits if c))))
    return out


def table(chosen: list[Line], costs: Mapping[str, Cost]) -> str:
    """The markdown table of ``chosen`` lines priced by ``costs`` (per recipe; FP32 has none)."""
    fp32 = {line.train_utterances: line.val_wer_pct for line in chosen if line.recipe == "fp32"}
    out = ["| recipe | compressed | training utt. | schedule | val WER % | test WER % | "
           "val - FP32 | ms / token | uJ / token | commit |",
           "|---|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for line in chosen:
        test = "" if line.test_wer_pct is None else f"{line.test_wer_pct:.2f}"
        gap = ("" if line.recipe == "fp32" or line.train_utterances not in fp32
               else f"{line.val_wer_pct - fp32[line.train_utterances]:+.2f}")
        cost = costs.get(line.recipe)
        priced = ("–", "–") if cost is None else (f"{cost.ms_per_token:.3f}",
                                                  f"{cost.uj_per_token:,.1f}")
        out.append(f"| `{line.recipe}` | {README_RECIPES[line.recipe]} | "
                   f"{line.train_utterances:,} | {line.schedule} | {line.val_wer_pct:.2f} | "
                   f"{test} | {gap} | {priced[0]} | {priced[1]} | {line.commits} |")
    return "\n".join(out)


def price(recipe: str) -> Cost:
    """``recipe``'s cost per generated token: the ``run --phase generate`` of the docstring."""
    from accelsim.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        argv = ["run", "--hw", str(REPO / HW), "--model", MODEL, "--recipe", recipe,
                "--phase", "generate", "--json", str(out)]
        with contextlib.redirect_stdout(io.StringIO()):
            status = main(argv)
        if status != 0:
            raise AccelsimError(f"pricing {recipe}: accelsim {' '.join(argv)} exited {status}")
        phase = json.loads(out.read_text())["phase"]
    return Cost(phase["ms_per_token"], phase["uj_per_token"])


def readme_table(rows: list[dict[str, str]],
                 pricer: Callable[[str], Cost] = price) -> str:
    """The README's table: :func:`lines` of ``rows``, each compressed recipe priced once."""
    chosen = lines(rows)
    recipes = dict.fromkeys(line.recipe for line in chosen if line.recipe != "fp32")
    return table(chosen, {recipe: pricer(recipe) for recipe in recipes})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the table, leave README.md")
    args = parser.parse_args()
    try:
        text = readme_table(read_rows(CSV))
        if args.print:
            print(text)
        else:
            write_text_atomic(README, with_block(README.read_text(), README_BEGIN, README_END,
                                                 text, "README"))
    except AccelsimError as exc:
        print(f"asr_readme: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
