"""How good the accuracy models are: their predictions against QAT measurements (issue 19).

Two models predict an assignment's validation accuracy (``accelsim.codesign.accuracy``): the
calibration-only additive model (``calibration``) and the same sensitivities rescaled to what QAT
leaves of each factor's loss (``qat_anchored``). Both are checked here on every assignment of
the task that was QAT-trained from the spec's FP32 model:

* ``searched``: the points the budgets selected and verified (the store's ``qat:*`` meta);
* ``uniform``: the accuracy table's rows (``experiments/accuracy/results.csv``) of the same FP32
  parent, seed and chip datapath, for the recipes whose training an assignment reproduces
  (``anchors.table_runs``); W8A8, W4A4 and W4A4 + 2:4 among them are the anchored model's
  anchors;
* ``sampled``: extra assignments chosen to spread over the predicted range
  (:func:`sample_assignments`), QAT-trained exactly as the searched points are
  (``run.measure_qat``, same store keys, so a rerun trains nothing again).

The comparison is on the validation split, the split the prediction is made on (the QAT side is
the fine-tune's own validation metric, as the accuracy table's ``val_accuracy_pct``); the test
accuracy the integer reference measures after QAT is reported beside it. Per task and model,
over the pairs that are not anchors (the anchored model reproduces those by construction, so
scoring either model on them would flatter one): Spearman's rank correlation (does the model
order assignments as QAT does, which is what the ILP needs) and the mean absolute and mean
signed error in points.
"""

from __future__ import annotations

import math
import typing
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from accelsim.codesign.accuracy import AccuracyModel, Sensitivity
from accelsim.codesign.groups import Format, Groups, parse_format
from accelsim.errors import AccelsimError

if TYPE_CHECKING:
    from accelsim.codesign.run import Progress, _Store
    from accelsim.codesign.spec import CodesignSpec

Kind = Literal["searched", "uniform", "sampled"]
KINDS: tuple[Kind, ...] = ("searched", "uniform", "sampled")
MODELS = ("calibration", "qat_anchored")
PAIR_COLUMNS = ("task", "kind", "config", "anchor", "calibration_val_pct", "anchored_val_pct",
                "qat_val_pct", "qat_test_pct", "command")
POOL_DRAWS = 1024  # candidate assignments drawn before the spread is chosen from them
MIN_RANKED = 3  # below this a rank correlation is +-1 or undefined whatever the model


@dataclass(frozen=True)
class Pair:
    """One QAT-trained assignment: both models' predictions and the measurement [%]."""

    task: str
    kind: Kind
    config: str  # group=format pairs; a uniform row's prefixed by its recipe ("w8a8 | ...")
    assignment: tuple[Format, ...]
    anchor: bool  # one of the runs the qat_anchored model is built on
    calibration_val_pct: float
    anchored_val_pct: float  # NaN when the table lacks the anchors
    qat_val_pct: float
    qat_test_pct: float

    def row(self, command: str) -> dict[str, Any]:
        return {"task": self.task, "kind": self.kind, "config": self.config,
                "anchor": self.anchor,
                "calibration_val_pct": round(self.calibration_val_pct, 2),
                "anchored_val_pct": round(self.anchored_val_pct, 2),
                "qat_val_pct": round(self.qat_val_pct, 2),
                "qat_test_pct": round(self.qat_test_pct, 2), "command": command}


@dataclass(frozen=True)
class Quality:
    """One accuracy model's quality on one task's held-out pairs (validation split)."""

    task: str
    model: str
    n: int
    spearman_rho: float  # predicted vs QAT validation accuracy; NaN below MIN_RANKED or constant
    spearman_p: float
    mae_pct: float  # mean |predicted - measured| [points]
    mean_signed_error_pct: float  # mean (predicted - measured) [points]; < 0: pessimistic


def summarize(task: str, model: str, predicted_pct: Sequence[float],
              measured_pct: Sequence[float]) -> Quality:
    """Spearman's rho (and its p-value), MAE and mean signed error of ``model``'s
    ``predicted_pct`` against ``measured_pct``."""
    from scipy.stats import spearmanr

    pred = np.asarray(predicted_pct, dtype=float)
    meas = np.asarray(measured_pct, dtype=float)
    if pred.shape != meas.shape or pred.size == 0:
        raise AccelsimError(f"{task}: accuracy model quality needs as many predictions as "
                            f"measurements, at least one (got {pred.size} and {meas.size})")
    rho = p = math.nan
    if pred.size >= MIN_RANKED and np.ptp(pred) > 0 and np.ptp(meas) > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = spearmanr(pred, meas)
        rho, p = float(result.statistic), float(result.pvalue)
    error = pred - meas
    return Quality(task, model, int(pred.size), rho, p, float(np.abs(error).mean()),
                   float(error.mean()))


def _widest_lowest(options: Sequence[Format]) -> tuple[tuple[int, int], tuple[int, int],
                                                         tuple[bool, bool]]:
    """Per factor, (value kept, value lowered to) among ``options``; equal where the options do
    not vary it."""
    ws = [f.weight_bits for f in options]
    acts = [f.act_bits for f in options]
    sparse = [f.sparse for f in options]
    return (max(ws), min(ws)), (max(acts), min(acts)), (min(sparse), max(sparse))


def candidate_pool(n_groups: int, options: Sequence[Format], seed: int,
                   draws: int = POOL_DRAWS) -> list[tuple[Format, ...]]:
    """Distinct assignments drawn with a lowering probability spread over [0, 1]: draw j lowers
    each (group, factor) with probability ``j / (draws - 1)``, so the pool runs from every group
    at the widest option to every group at the lowest. Options are a product of the three
    factors (``SearchSpace.options``), so every draw is one of them."""
    if draws < 2:
        raise AccelsimError(f"candidate_pool: draws {draws}; allowed: an integer >= 2")
    (w_hi, w_lo), (a_hi, a_lo), (s_hi, s_lo) = _widest_lowest(options)
    rng = np.random.default_rng(seed)
    seen: dict[tuple[Format, ...], None] = {}
    for j in range(draws):
        lowered = rng.random((n_groups, 3)) < j / (draws - 1)
        assignment = tuple(Format(w_lo if lw else w_hi, a_lo if la else a_hi,
                                  s_lo if ls else s_hi) for lw, la, ls in lowered)
        seen.setdefault(assignment, None)
    return list(seen)


def sample_assignments(sens: Sensitivity, options: Sequence[Format], count: int, seed: int,
                       measured: Collection[tuple[Format, ...]] = ()) -> list[tuple[Format, ...]]:
    """Up to ``count`` assignments not in ``measured``, spread over the predicted accuracy:
    from :func:`candidate_pool`, each pick is the candidate whose prediction is farthest from
    every prediction already measured or picked (the first, with nothing measured, the lowest
    prediction); ties go to the earlier draw. Deterministic in ``seed``, and a rerun that
    finds some of these measured picks the rest."""
    from accelsim.codesign.run import ALL_FORMATS

    if count < 0:
        raise AccelsimError(f"sample_assignments: count {count}; allowed: an integer >= 0")
    done = set(measured)
    pool = [a for a in candidate_pool(len(sens.groups), options, seed) if a not in done]
    predicted = np.array([sens.predict(ALL_FORMATS, a) for a in pool])
    known = np.array([value for a in done
                      if np.isfinite(value := sens.predict(ALL_FORMATS, a))])
    distance = (np.abs(predicted[:, None] - known[None, :]).min(axis=1) if known.size
                else None)
    out: list[tuple[Format, ...]] = []
    free = np.ones(len(pool), dtype=bool)
    while len(out) < min(count, len(pool)):
        if distance is None:
            pick = int(np.argmin(predicted))
            distance = np.abs(predicted - predicted[pick])
        else:
            pick = int(np.argmax(np.where(free, distance, -np.inf)))
            distance = np.minimum(distance, np.abs(predicted - predicted[pick]))
        free[pick] = False
        out.append(pool[pick])
    return out


def _assignment(config: str, groups: Groups) -> tuple[Format, ...] | None:
    """``group=format ...`` in ``groups``' order; None for another grouping's config."""
    parsed = dict(item.split("=") for item in config.split())
    if set(parsed) != set(groups.names):
        return None
    return tuple(parse_format(parsed[name], "config") for name in groups.names)


def measured_pairs(spec: CodesignSpec, store: _Store, task: Any, fp_model: Any, groups: Groups,
                   sens: Sensitivity, budget: Any) -> list[Pair]:
    """Every assignment of ``spec``'s task QAT-trained from its FP32 model (same seed, QAT
    recipe, budget, datapath, code): stored searched and sampled measurements, and the
    accuracy table's uniform runs. Ordered by kind, then config."""
    from accelsim.codesign.anchors import ANCHORS, anchor_accuracies, qat_anchored, table_runs
    from accelsim.codesign.run import ALL_FORMATS, qat_key, qat_setup
    from accelsim.codesign.search import config_string

    qat_budget, datapath = qat_setup(spec, task, budget)
    all_runs = table_runs(spec, task, fp_model, groups, budget)
    try:  # the anchors as the search takes them (run.run_codesign)
        anchored: AccuracyModel | None = qat_anchored(sens, anchor_accuracies(spec, all_runs))
    except AccelsimError:  # the table lacks an anchor: that model is not scored
        anchored = None
    # a recipe lowering a factor the search never lowers has no sensitivity, so no pair
    runs = [run for run in all_runs if np.isfinite(sens.predict(ALL_FORMATS, run.assignment))]

    def pair(kind: Kind, config: str, assignment: tuple[Format, ...], anchor: bool,
             val_pct: float, test_pct: float) -> Pair:
        return Pair(task.name, kind, config, assignment, anchor,
                    sens.predict(ALL_FORMATS, assignment),
                    math.nan if anchored is None else anchored.predict(ALL_FORMATS, assignment),
                    val_pct, test_pct)

    pairs: list[Pair] = []
    for name, value in store.meta_items("qat:").items():
        config = str(value["config"])
        # The key is a digest of the measurement's identity: equal only for this spec's.
        if name != f"qat:{qat_key(spec, task, qat_budget, datapath, config)}":
            continue
        assignment = _assignment(config, groups)
        if assignment is None:
            continue
        # Measurements stored before kinds were recorded are the verified searched points.
        kind = typing.cast(Kind, value.get("kind", "searched"))
        pairs.append(pair(kind, config, assignment, False, float(value["val_pct"]),
                          float(value["test_pct"])))
    for run in runs:
        pairs.append(pair("uniform", f"{run.recipe} | {config_string(groups, run.assignment)}",
                          run.assignment, run.recipe in ANCHORS.values(), run.val_pct,
                          run.test_pct))
    return sorted(pairs, key=lambda p: (KINDS.index(p.kind), p.config))


def run_quality(spec: CodesignSpec, store_path: Path, wanted: int, *, budget: Any = None,
                progress: Progress | None = None) -> list[Pair]:
    """Every measured pair of ``spec``'s task, after QAT-training sampled assignments until
    there are ``wanted``. Reads the sensitivities ``run_codesign`` stored in ``store_path``
    (measures them if absent); ``budget``: the QAT training budget (default the task's)."""
    from accelsim.codesign.accuracy import load_fp32
    from accelsim.codesign.groups import find_groups, templates
    from accelsim.codesign.run import _sensitivity, _Store, measure_qat
    from accelsim.codesign.search import config_string
    from accelsim.tasks import get_task

    check_quality_request(spec, wanted)
    assert spec.task is not None
    task = get_task(spec.task, limit=spec.limit, tiny=spec.tiny)
    fp_model = load_fp32(task, spec.checkpoint, spec.seed)
    groups = find_groups(templates(spec.model, dict(spec.input_shape)).base,
                         spec.search.grouping)
    store = _Store(store_path)
    try:
        sens = _sensitivity(spec, store, groups, progress, fp_model, task)
        pairs = measured_pairs(spec, store, task, fp_model, groups, sens, budget)
        needed = wanted - len(pairs)
        if needed > 0:
            extra = sample_assignments(sens, spec.search.options, needed, spec.seed,
                                       {p.assignment for p in pairs})
            if len(extra) < needed:
                raise AccelsimError(
                    f"--quality {wanted}: {len(pairs)} pairs measured and only {len(extra)} "
                    f"other assignments found among {len(spec.search.options)} formats for "
                    f"{len(groups.names)} groups; allowed: at most {len(pairs) + len(extra)}")
            measure_qat(spec, store, task, fp_model, groups,
                        [config_string(groups, a) for a in extra], progress, budget,
                        kind="sampled", stage="quality")
            pairs = measured_pairs(spec, store, task, fp_model, groups, sens, budget)
    finally:
        store.close()
    return pairs


def check_quality_request(spec: CodesignSpec, wanted: int) -> None:
    """One line when ``--quality wanted`` cannot run on ``spec``."""
    if wanted < 1:
        raise AccelsimError(f"--quality {wanted}: must be an integer >= 1 (pairs of predicted "
                            "and QAT-measured accuracy wanted)")
    if spec.task is None or not spec.accuracy_budgets_pct:
        raise AccelsimError(f"--quality: {spec.path} has no task and accuracy_budget_pct, so "
                            "no accuracy model to check; allowed: a spec with both")


def summaries(rows: Sequence[Mapping[str, Any]]) -> list[Quality]:
    """Per task (in first-seen order) and model, :func:`summarize` over the task's pair rows
    (``PAIR_COLUMNS``) that are not anchors and have that model's prediction."""
    out = []
    for task in dict.fromkeys(str(r["task"]) for r in rows):
        held_out = [r for r in rows if r["task"] == task and not _is_true(r["anchor"])]
        for model, column in zip(MODELS, ("calibration_val_pct", "anchored_val_pct"),
                                 strict=True):
            scored = [r for r in held_out if np.isfinite(float(r[column]))]
            if scored:
                out.append(summarize(task, model, [float(r[column]) for r in scored],
                                     [float(r["qat_val_pct"]) for r in scored]))
    return out


def _is_true(value: Any) -> bool:
    """A CSV cell read back by pandas (bool) or csv (text)."""
    return value is True or str(value).lower() == "true"


def _number(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """``accuracy_model.md``: per task and model summary, then every pair."""
    lines = [
        "# How good are the co-design accuracy models",
        "",
        "Generated from `accuracy_model.csv` by `python -m accelsim codesign SPEC --quality N` "
        "(accelsim/codesign/quality.py, docs/codesign.md); do not edit. Each task's command is "
        "in its rows' `command` column.",
        "",
        "Predicted: a model's validation accuracy for the assignment; `calibration` is the "
        "calibration-only additive model, `qat_anchored` the same sensitivities rescaled to the "
        "accuracy table's QAT runs of W8A8, W4A4 and W4A4 + 2:4 (its anchors, marked below and "
        "left out of both models' scores). Measured: the same assignment QAT-trained from the "
        "task's FP32 model (validation metric after QAT; test accuracy by the integer reference "
        "on the chip's datapath). Signed error is predicted minus measured (negative: the "
        "model is pessimistic). Kinds: `searched` (verified points of the search), `uniform` "
        "(the accuracy table's plain recipes), `sampled` (assignments spread over the "
        "calibration model's predicted range).",
        "",
        "| task | model | held-out pairs | Spearman rho (predicted vs QAT val) | p-value | "
        "MAE [points] | mean signed error [points] |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for q in summaries(rows):
        lines.append(f"| {q.task} | {q.model} | {q.n} | {_number(q.spearman_rho, 3)} | "
                     f"{_number(q.spearman_p, 3)} | {_number(q.mae_pct, 2)} | "
                     f"{_number(q.mean_signed_error_pct, 2)} |")
    for task in dict.fromkeys(str(r["task"]) for r in rows):
        commands = sorted({str(r["command"]) for r in rows if r["task"] == task})
        lines += ["", f"## {task}", "", *(f"`{c}`" for c in commands), "",
                  "| kind | config | calibration val [%] | qat_anchored val [%] | QAT val [%] "
                  "| QAT test [%] |",
                  "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {r['kind']}{' (anchor)' if _is_true(r['anchor']) else ''} | "
                  f"{r['config']} | {_number(float(r['calibration_val_pct']), 2)} | "
                  f"{_number(float(r['anchored_val_pct']), 2)} | "
                  f"{float(r['qat_val_pct']):.2f} | {float(r['qat_test_pct']):.2f} |"
                  for r in rows if r["task"] == task]
    return "\n".join(lines) + "\n"
