"""The accuracy results table: its rows (CSV), and results.md rendered from them."""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from accelsim.accuracy.budgets import BASELINE, BUDGETS, PROBES, RECIPE_MEANING, ROW_RECIPES
from accelsim.files import write_text_atomic
from accelsim.tasks._data import cache_dir

# The committed tables (beside the task commands that write them), like compress.RECIPES_DIR.
RESULTS_DIR = Path(__file__).resolve().parents[2] / "experiments" / "accuracy"
RESULTS_CSV = RESULTS_DIR / "results.csv"
RESULTS_MD = RESULTS_DIR / "results.md"
COLUMNS = (
    "task", "model", "recipe", "accuracy_pct", "measured_by", "datapath", "fake_quant_accuracy_pct",
    "val_accuracy_pct", "test_examples", "init", "fp_epochs", "qat_epochs", "batch_size",
    "lr", "train_minutes", "eval_minutes", "seed", "command", "selection",
    "code_commit", "checkpoint_sha256", "parent_sha256", "split_sha256",
)  # fmt: skip
# The columns that say how a row's model was trained: a reused run keeps its CSV row's training
# time only where these match.
SCHEDULE_COLUMNS = ("init", "fp_epochs", "qat_epochs", "batch_size", "lr")
# The columns of an asr_wer.csv row that say how its recognizer was trained (the QAT schedule
# and the FP32 run it started from): asr_wer.py keys rows on them, asr_readme.py groups runs.
ASR_QAT_COLUMNS = ("qat_epochs", "train_utterances", "batch_size", "lr", "qat_init",
                   "fp32_epochs", "fp32_lr", "fp32_train_utterances")
# The columns that name one asr_wer.py run (what it measured, how, and how it was trained):
# rows that agree on them ran the same command, wherever and at whichever commit.
ASR_RUN_COLUMNS = ("recipe", "calibration_percentiles", "split", "window_seconds",
                   "output_projection", "decoder_attention", "measured_by", "datapath",
                   "utterances", *ASR_QAT_COLUMNS)


def asr_schedule_label(row: Mapping[str, str]) -> str:
    """An ``asr_wer.csv`` row's training (:data:`ASR_QAT_COLUMNS`): its epochs and lr, and for
    a run that starts from an FP32 run, that run's epochs, lr and (when other) data; for one
    that starts from the FP32 control (the ``fp32`` run of its own data and schedule), the run
    that control started from. The README's and asr_wer.md's wording."""
    own = f"{row['qat_epochs']} ep, lr {row['lr']}"
    if row.get("qat_init") not in ("fp32_finetuned", "fp32_control"):
        return f"{own}, from pre-trained"
    parent = f"{row['fp32_epochs']} ep, lr {row.get('fp32_lr') or row['lr']}"
    if row.get("fp32_train_utterances"):
        parent += f", {int(row['fp32_train_utterances']):,} utt."
    if row["qat_init"] == "fp32_control":
        return f"{own}, from the FP32 control (the same schedule from FP32 ({parent}))"
    return f"{own}, from FP32 ({parent})"


@dataclass(frozen=True)
class RowResult:
    task: str
    model: str
    recipe: str
    accuracy_pct: float
    measured_by: str
    datapath: str  # the chip datapath of an integer-reference row (evaluate.ChipDatapath.label)
    fake_quant_accuracy_pct: float | None
    val_accuracy_pct: float
    test_examples: int
    init: str
    fp_epochs: int
    qat_epochs: int
    batch_size: int
    lr: float
    train_minutes: float | None  # None: a finished run was reused, nothing trained this time
    eval_minutes: float
    seed: int
    command: str
    code_commit: str  # accelsim.accuracy.provenance documents these four
    checkpoint_sha256: str
    parent_sha256: str
    split_sha256: str
    selection: str = ""  # what was chosen on the validation split (a probe's regularization)


def read_rows(path: Path = RESULTS_CSV) -> list[dict[str, str]]:
    """The rows of a result CSV of this folder (none when it does not exist yet)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, str]]) -> None:
    """A result CSV of this folder, written whole or not at all."""
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, table.getvalue())


def write_rows(new: list[RowResult], path: Path = RESULTS_CSV,
               markdown: Path | None = None) -> list[dict[str, str]]:
    """Replace the (task, recipe, seed) rows of ``new`` in the CSV, keep the others; sorted.

    A field of ``new`` that is None keeps the CSV's value (e.g. the training time of a run that
    was reused rather than trained again) if that row had the same schedule; a row of another
    schedule says nothing about this run, so the field is left empty.

    With ``markdown``, that file is re-rendered from the rows (:func:`render_markdown`).

    Several task commands may run at once: an exclusive lock makes read-modify-write atomic,
    and holds while the markdown is written, so it never shows fewer rows than the CSV.
    """
    with open(cache_dir("locks") / f"{path.stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = _write_rows_locked(new, path)
        if markdown is not None:
            write_text_atomic(markdown, render_markdown(rows))
        return rows


def _write_rows_locked(new: list[RowResult], path: Path) -> list[dict[str, str]]:
    rows = {(r["task"], r["recipe"], r["seed"]): r for r in read_rows(path)}
    for r in new:
        d = dataclasses.asdict(r)
        key = (r.task, r.recipe, str(r.seed))
        old = rows.get(key, {})
        if any(old.get(k) != str(d[k]) for k in SCHEDULE_COLUMNS):
            old = {}
        rows[key] = {k: old.get(k, "") if d[k] is None else str(d[k]) for k in COLUMNS}
    order = {name: i for i, name in enumerate((*PROBES, *ROW_RECIPES))}
    out = sorted(
        rows.values(), key=lambda r: (r["task"], order.get(r["recipe"], 99), int(r["seed"]))
    )
    write_csv(path, COLUMNS, out)
    return out


def mean_and_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def _seed_mean(runs: dict[str, dict[str, str]], key: str, digits: int = 2) -> str:
    """Mean of column ``key`` over the seeds that have a value, with ``digits`` decimals."""
    numbers = [float(r[key]) for r in runs.values() if r[key] != ""]
    return f"{mean_and_std(numbers)[0]:.{digits}f}" if numbers else ""


def _vs_baseline(runs: dict[str, dict[str, str]], base: dict[str, dict[str, str]]) -> str:
    """Mean (and sample std) of the per-seed differences to the FP32 run of the same seed."""
    diffs = [
        float(r["accuracy_pct"]) - float(base[seed]["accuracy_pct"])
        for seed, r in runs.items()
        if seed in base
    ]
    return paired_difference(diffs) if diffs else ""


def paired_difference(diffs: list[float]) -> str:
    """Paired differences as the tables print them: the mean, and its sample std over two or
    more pairs (``-2.00 ± 0.71``; one pair: ``-2.00``)."""
    mean, std = mean_and_std(diffs)
    return f"{mean:+.2f}" if len(diffs) == 1 else f"{mean:+.2f} ± {std:.2f}"


RESULTS_LEGACY_CSV = RESULTS_DIR / "results_legacy.csv"
RESULTS_LEGACY_MD = RESULTS_DIR / "results_legacy.md"
PROBE_COMMAND = "python experiments/accuracy/probes.py"
_EXPLAINED = [
    "Test-split accuracy in percent. Compressed rows are measured by the bit-exact integer",
    "reference (`accelsim.ref.execute.run_int_model` on the exported integer model); the FP32",
    "row by PyTorch. `fake-quant` is the PyTorch fake-quantized model on the same split, as a",
    "cross-check. Where a recipe ran with several training seeds, `accuracy %` (and fake-quant,",
    "val, train min) is the mean over seeds, `per seed` lists each, and `vs FP32` is the mean ±",
    "sample standard deviation of the per-seed differences to the FP32 run of the same seed (the",
    "run each compressed model started from). Training budgets and data: `docs/accuracy.md`.",
]
_CURRENT = [
    "# Accuracy of compressed models on real data",
    "",
    "Generated by `experiments/accuracy/pipeline.py` from `results.csv` (do not edit by hand).",
    "Every row carries its provenance (code commit, checkpoint, FP32 parent and split hashes),",
    "checked by `accelsim.accuracy.provenance.check_table` in the test suite. `linear_probe` and",
    "`tfidf_probe` are logistic regressions on frozen features, regularization chosen on the",
    "validation split (`selection`): the floor a fine-tuned FP32 baseline must beat.",
    *_EXPLAINED,
    "",
]
_LEGACY = [
    "# Legacy accuracy table: without provenance, not reproducible as is",
    "",
    "Generated by `experiments/accuracy/pipeline.py` from `results_legacy.csv` (do not edit by",
    "hand). These rows were measured before rows carried provenance, some from FP32 runs that",
    "were later retrained and some scored by an older float path, on the integer reference's",
    "datapath before issue 16; a compressed row cannot be traced to the FP32 run it started",
    "from. They stay here, unchanged, until `results.csv` is regenerated (docs/accuracy.md,",
    "\"Legacy rows\"). Fake-quant figures that differ from the integer reference's come from that",
    "older float path.",
    *_EXPLAINED,
    "",
]


def render_markdown(rows: list[dict[str, str]], legacy: bool = False) -> str:
    """results.md (or, ``legacy``, results_legacy.md): one table per task from the CSV rows,
    then (current table only) the rows that are absent and why.

    A recipe run with several seeds shows the mean; "vs FP32" pairs each seed with the FP32 run
    of the same seed (its critical initialization).
    """
    lines = list(_LEGACY if legacy else _CURRENT)
    for task in BUDGETS:
        mine: dict[str, dict[str, dict[str, str]]] = {}
        for r in rows:
            if r["task"] == task:
                mine.setdefault(r["recipe"], {})[r["seed"]] = r
        command = f"python experiments/accuracy/{task}.py"
        lines += [f"## {task}", ""]
        if not mine:
            lines += [f"No row measured yet; run `{command}` and `{PROBE_COMMAND} --task "
                      f"{task}`.", ""]
            continue
        first = next(iter(next(iter(mine.values())).values()))
        seeds = sorted({seed for runs in mine.values() for seed in runs}, key=int)
        datapaths = sorted({r.get("datapath") or "" for runs in mine.values()
                            for r in runs.values()} - {""})
        on_chip = (f" Compressed rows: integer reference on the datapath "
                   f"{'; '.join(datapaths)}." if datapaths else "")
        lines += [
            f"Model `{first['model']}`, {first['test_examples']} test examples, seeds "
            f"{', '.join(seeds)}. Command: `{command}` (`--seeds` for more).{on_chip}",
            "",
            "| recipe | accuracy % | vs FP32 | per seed | fake-quant % | val % | QAT epochs |"
            " train min | measured by |",
            "|---|---:|---:|---|---:|---:|---:|---:|---|",
        ]
        base = mine.get(BASELINE, {})
        for name in (*PROBES, *ROW_RECIPES):
            if name not in mine:
                continue
            runs = dict(sorted(mine[name].items(), key=lambda item: int(item[0])))
            one = next(iter(runs.values()))
            per_seed = (
                " / ".join(f"{float(r['accuracy_pct']):.2f} (s{seed})" for seed, r in runs.items())
                if len(runs) > 1 else ""
            )  # fmt: skip
            delta = "" if name == BASELINE else _vs_baseline(runs, base)
            lines.append(
                f"| {name} | {_seed_mean(runs, 'accuracy_pct')} | {delta} | {per_seed} | "
                f"{_seed_mean(runs, 'fake_quant_accuracy_pct')} | "
                f"{_seed_mean(runs, 'val_accuracy_pct')} | {one['qat_epochs']} | "
                f"{_seed_mean(runs, 'train_minutes', 1)} | {one['measured_by']}"
                f"{' (' + one['selection'] + ')' if one.get('selection') else ''} |"
            )
        absent = [n for n in (*PROBES, *ROW_RECIPES) if n not in mine]
        if absent and not legacy:
            lines += ["", "Absent rows:", ""]
            skipped = dict(BUDGETS[task].skip)
            for name in absent:
                make = (f"{PROBE_COMMAND} --task {task}" if name in PROBES
                        else f"{command} --recipes {name}")
                why = skipped.get(name, f"not measured yet; run `{make}`")
                lines.append(f"- `{name}` ({RECIPE_MEANING[name]}): {why}.")
        lines.append("")
    lines += ["## Recipes", ""]
    lines += [f"- `{name}`: {meaning}." for name, meaning in RECIPE_MEANING.items()]
    return "\n".join(lines) + "\n"


# The README's accuracy table: one row per task, one column per TABLE_RECIPES entry (its header).
README_HEADERS = {
    "fp32": "FP32", "w8a8": "W8A8", "w4a4": "W4A4", "w4a4_sp24": "W4A4 + 2:4",
    "w4a4_sp24_no_zero_grid": "no zero grid", "w4a4_sp24_const_dropout": "const. dropout",
    "w4a4_sp24_init_pretrained": "init pre-trained",
    "w4a4_sp24_sparsegpt_smooth": "W4A4 + 2:4 smoothed",
    "w4a4_sp24_sparsegpt_smooth_kd_unlabeled": "W4A4 + 2:4 smoothed + KD on unlabelled inputs",
    "w4a4_sp24_wanda_ln_a8": "mixed + 2:4",
    "w4a4_sp24_wanda_ln_a8_kd_unlabeled": "mixed + 2:4 + KD on unlabelled inputs",
}  # fmt: skip
README_BEGIN = "<!-- accuracy-table:begin (python experiments/accuracy/pipeline.py) -->"
README_END = "<!-- accuracy-table:end -->"
_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def readme_table(rows: list[dict[str, str]]) -> str:
    """The README's accuracy tables from ``rows`` (results.csv). First, per task, the linear
    probe and each README recipe's test accuracy, mean over the seeds measured (a superscript
    gives their number when more than one); "–" marks a recipe that cannot apply to the task, an
    empty cell one not measured yet. Then each compressed recipe against FP32 in points, the
    mean ± sample std of the differences to the FP32 run of the same training seed; a run
    without an FP32 run of its seed has no pair (empty)."""
    from accelsim.accuracy.budgets import TABLE_RECIPES

    columns = [name for name in TABLE_RECIPES if name in README_HEADERS]
    compressed = [c for c in columns if c != BASELINE]
    accuracy = [
        "| task (model) | linear probe | " + " | ".join(README_HEADERS[c] for c in columns) + " |",
        "|---|" + "---:|" * (len(columns) + 1),
    ]
    paired = [
        "| task | " + " | ".join(README_HEADERS[c] for c in compressed) + " |",
        "|---|" + "---:|" * len(compressed),
    ]
    for task, budget in BUDGETS.items():
        mine: dict[str, dict[str, dict[str, str]]] = {}
        for r in rows:
            if r["task"] == task:
                mine.setdefault(r["recipe"], {})[r["seed"]] = r
        if not mine:
            continue
        model = next(iter(next(iter(mine.values())).values()))["model"]
        skipped = dict(budget.skip)
        cells = [_readme_cell(mine.get("linear_probe", {}))]
        cells += ["–" if c in skipped else _readme_cell(mine.get(c, {})) for c in columns]
        accuracy.append(f"| {task} ({model}) | " + " | ".join(cells) + " |")
        base = mine.get(BASELINE, {})
        deltas = ["–" if c in skipped else _vs_baseline(mine.get(c, {}), base)
                  for c in compressed]
        paired.append(f"| {task} | " + " | ".join(deltas) + " |")
    return "\n".join([
        *accuracy, "",
        "Against FP32 (points): mean ± sample std of the differences to the FP32 run of the "
        "same training seed, the run each compressed run started from (init pre-trained: from "
        "the pre-trained model).",
        "", *paired,
    ])


def _readme_cell(runs: dict[str, dict[str, str]]) -> str:
    if not runs:
        return ""
    seeds = "" if len(runs) == 1 else str(len(runs)).translate(_SUPERSCRIPT)
    return f"{_seed_mean(runs, 'accuracy_pct')}{seeds}"


def with_readme_table(readme: str, rows: list[dict[str, str]]) -> str:
    """``readme`` with the text between :data:`README_BEGIN` and :data:`README_END` replaced by
    :func:`readme_table` of ``rows``."""
    return with_block(readme, README_BEGIN, README_END, readme_table(rows), "README")


def with_block(text: str, begin: str, end: str, block: str, where: str) -> str:
    """``text`` with what lies between the marker lines ``begin`` and ``end`` replaced by
    ``block`` (a generated table); ``where`` names the document in the error."""
    from accelsim.errors import AccelsimError

    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise AccelsimError(f"{where}: no {begin} ... {end} block to fill; allowed: a "
                            f"{where} with both markers, in that order")
    return f"{text[:start + len(begin)]}\n{block}\n{text[stop:]}"
