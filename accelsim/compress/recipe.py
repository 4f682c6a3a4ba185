"""Compression recipes: a frozen dataclass loaded from YAML, validated once, plus its schedules.

A recipe says what to quantize at which bit width, whether to prune 2:4, how to initialise
(critical initialization) and how to fine-tune (learning rates, epochs, scheduled dropout).
Files live in ``experiments/recipes/<name>.yaml``; docs/compression.md §5 explains the fields.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from accelsim.compress.sites import SITES, SiteRules, dense_entry_error
from accelsim.errors import AccelsimError, did_you_mean, yaml_problem
from accelsim.files import UniqueKeyLoader
from accelsim.formats import DATAPATH_DEFAULTS, DATAPATH_FIELDS, datapath_problem

FAMILIES: tuple[str, ...] = ("bert", "dinov2", "vit", "wav2vec2", "whisper")
BITS: tuple[int, ...] = (4, 8, 32)  # 32 = keep float32 (no quantizer)
KV_BITS: tuple[int, ...] = (4, 8, 16, 32)
RECIPES_DIR = Path(__file__).resolve().parents[2] / "experiments" / "recipes"


@dataclass(frozen=True)
class Recipe(SiteRules):
    name: str
    weight_bits: int = 4
    act_bits: int = 4
    # Per input site (accelsim.compress.sites), an activation width other than act_bits: mixed
    # precision where the accuracy goes, e.g. {qkv: 8, ffn_up: 8} for the LayerNorm outputs.
    act_bits_by_site: dict[str, int] = field(default_factory=dict, hash=False)
    # Per input site, a weight width other than weight_bits, e.g. {qkv: 8} where 4-bit weights
    # cost the accuracy (Whisper's encoder Q/K projections).
    weight_bits_by_site: dict[str, int] = field(default_factory=dict, hash=False)
    attention_bits: int = 8
    # Stored width of a decoder's KV cache (accelsim.graph.phases); None = attention_bits, the
    # width of the attention operands the cache holds.
    kv_bits: int | None = None
    # Per-channel smoothing of the inputs at these sites (SmoothQuant, Xiao et al., ICML 2023):
    # the quantizer codes x_k / s_k and the weights' column k becomes w_nk * s_k, exact in float,
    # with s_k = max|x_k|^alpha / max_n|w_nk|^(1 - alpha) from the calibration batches. An outlier
    # channel of a LayerNorm output no longer sets the step of all the others; the codes stay
    # 4-bit per tensor and the factors fold into the quantize step the vector unit runs anyway.
    smoothing_sites: tuple[str, ...] = ()
    smoothing_alpha: float = 0.5
    weight_grid: Literal["zero_preserving", "twos_complement", "no_zero"] = "zero_preserving"
    weight_granularity: Literal["per_channel", "per_tensor"] = "per_channel"
    weight_scale_method: Literal["sawb", "lsq"] = "sawb"
    act_quantizer: Literal["pact2", "symmetric"] = "pact2"
    calibration_batches: int = 10
    calibration_percentiles: tuple[float, float] = (0.1, 99.9)
    sparsity: Literal["dense", "2:4"] = "dense"
    # Input sites whose linears stay dense under sparsity "2:4": the pruning left where it costs
    # the accuracy (e.g. [qkv]: every Q/K/V projection, a recognizer's decoder's included; or
    # decoder.ffn_up: only the decoder stack's, compress.sites).
    dense_sites: tuple[str, ...] = ()
    # one_shot: a fixed mask, pruned weights stay 0 (the paper's code). gradual: masks grow over
    # the first prune_ramp_fraction of QAT. sr_ste: 2:4 from the first step, but pruned weights
    # keep learning as dense shadows and the mask is re-chosen from them every mask_update_steps
    # (Zhou et al., ICLR 2021), their gradient plus sr_ste_decay * w pulling them towards 0.
    pruning: Literal["one_shot", "gradual", "sr_ste"] = "one_shot"
    # Which 2 of 4 weights a mask keeps: the largest |w|, the largest |w| * ||x_k||
    # (input-channel norm over the calibration batches; Wanda, Sun et al. 2024), or SparseGPT's
    # OBS choice, which also updates the kept weights to reconstruct the layer's output on the
    # calibration inputs (Frantar & Alistarh 2023).
    mask_score: Literal["magnitude", "activation_weighted", "sparsegpt"] = "magnitude"
    prune_ramp_fraction: float = 0.5
    mask_update_steps: int = 10
    sr_ste_decay: float = 2e-4
    init: Literal["finetuned", "pretrained"] = "finetuned"
    fp_epochs: int = 2
    epochs: int = 3
    batch_size: int = 32
    lr: float = 3e-5
    clip_lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_fraction: float = 0.1
    max_grad_norm: float = 1.0
    dropout_schedule: Literal["ramp", "constant"] = "ramp"
    dropout_start_factor: float = 0.0
    dropout_end_factor: float = 1.0
    dropout_ramp_fraction: float = 0.5
    # Knowledge distillation (not in the paper's recipe, an option beyond it): the compressed
    # student also matches the softened logits of its critical initialization, the fine-tuned
    # float model. 0 = off.
    distill_weight: float = 0.0
    distill_temperature: float = 2.0
    # Intermediate distillation (TinyBERT/TernaryBERT-style): plus distill_hidden_weight times
    # the mean over encoder blocks of the student's relative squared error to the teacher's block
    # outputs. 0 = off.
    distill_hidden_weight: float = 0.0
    # Data augmentation for distillation (as TinyBERT's): after each labelled batch, this many
    # batches of the task's unlabelled in-domain inputs, each a step on the distillation loss
    # alone (no cross-entropy). 0 = off.
    distill_unlabeled: int = 0
    quantize_extra: tuple[str, ...] = ()  # module paths of extra nn.Linear to quantize (head)
    # The chip datapath QAT trains on (docs/compression.md §5): any of
    # accelsim.formats.DATAPATH_FIELDS (accumulator_bits, overflow, vector_format, ...). Every
    # forward of the compressed stage then takes the values the integer reference computes on
    # that datapath, with straight-through gradients (accelsim.ref.qat). Empty = the fake-quant
    # model's own float32 arithmetic.
    datapath: dict[str, Any] = field(default_factory=dict, hash=False)
    families: tuple[str, ...] = FAMILIES

    @property
    def quantized(self) -> bool:
        return self.weight_bits != 32

    @property
    def distills(self) -> bool:
        """Whether stage 2 learns from a teacher (logits, block outputs or both)."""
        return self.distill_weight > 0 or self.distill_hidden_weight > 0

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem is not None:
            raise AccelsimError(f"recipe {self.name!r}: {problem}")


def _choices(annotation: Any) -> tuple[Any, ...] | None:
    return typing.get_args(annotation) if typing.get_origin(annotation) is Literal else None


def _problem(r: Recipe) -> str | None:
    """The first invalid field of ``r`` as ``"field: value ... allowed"``, or None."""
    hints = typing.get_type_hints(Recipe)
    for f in fields(Recipe):
        value = getattr(r, f.name)
        allowed = _choices(hints[f.name])
        if allowed is not None and value not in allowed:
            return f"{f.name}: {value!r} is not one of {', '.join(map(str, allowed))}"
    for key in ("weight_bits", "act_bits", "attention_bits"):
        if getattr(r, key) not in BITS:
            return (f"{key}: {getattr(r, key)!r} is not a supported bit width; "
                    f"allowed: 4, 8, 32 (32 = float)")
    if r.kv_bits is not None and r.kv_bits not in KV_BITS:
        return (f"kv_bits: {r.kv_bits!r} is not a supported KV-cache width; allowed: "
                f"{', '.join(map(str, KV_BITS))} or null (= attention_bits)")
    if (r.weight_bits == 32) != (r.act_bits == 32):
        return (f"weight_bits {r.weight_bits} with act_bits {r.act_bits}: both must be 32 "
                f"(float) or both quantized (4, 8)")
    if r.sparsity == "2:4" and not r.quantized:
        return "sparsity: '2:4' needs quantized weights (weight_bits 4 or 8), got 32"
    for key, kind, width in (("act_bits_by_site", "activations", "act_bits"),
                             ("weight_bits_by_site", "weights", "weight_bits")):
        by_site = getattr(r, key)
        for site, bits in by_site.items():
            if site not in SITES:
                return f"{key}: site {site!r} is not one of {', '.join(SITES)}"
            if bits not in (4, 8):
                return f"{key}: {site}: {bits!r} is not one of 4, 8"
        if by_site and not r.quantized:
            return f"{key} needs quantized {kind} ({width} 4 or 8), got 32"
    for site in r.smoothing_sites:
        if site not in SITES:
            return f"smoothing_sites: site {site!r} is not one of {', '.join(SITES)}"
    for entry in r.dense_sites:
        if (error := dense_entry_error(entry)) is not None:
            return error
    if r.dense_sites and r.sparsity != "2:4":
        return (f"dense_sites needs sparsity: '2:4' (it names the sites pruning leaves dense), "
                f"got {r.sparsity!r}")
    if r.smoothing_sites and not r.quantized:
        return "smoothing_sites needs quantized activations (act_bits 4 or 8), got 32"
    if not 0.0 <= r.smoothing_alpha <= 1.0:
        return f"smoothing_alpha: {r.smoothing_alpha!r} must be in [0, 1]"
    if r.datapath:
        unknown = sorted(set(r.datapath) - set(DATAPATH_FIELDS))
        if unknown:
            return (f"datapath: unknown field {unknown[0]!r}; allowed: "
                    f"{', '.join(DATAPATH_FIELDS)}")
        problem = datapath_problem(**{**DATAPATH_DEFAULTS, **r.datapath})
        if problem is not None:
            return f"datapath: {problem}"
        if not r.quantized:
            return "datapath needs a quantized recipe (weight_bits 4 or 8), got 32"
    if r.mask_score == "activation_weighted" and r.pruning == "gradual":
        return ("mask_score: 'activation_weighted' needs pruning: one_shot or sr_ste (gradual "
                "masks grow from weight magnitudes during training)")
    if r.mask_score == "sparsegpt" and r.pruning != "one_shot":
        return ("mask_score: 'sparsegpt' needs pruning: one_shot (its masks come with updated "
                "weights, set once at calibration)")
    lo, hi = r.calibration_percentiles
    if not 0.0 <= lo < hi <= 100.0:
        return f"calibration_percentiles: {[lo, hi]} must satisfy 0 <= low < high <= 100"
    for key in ("calibration_batches", "mask_update_steps", "epochs", "batch_size"):
        if getattr(r, key) < 1:
            return f"{key}: {getattr(r, key)!r} must be >= 1"
    if r.fp_epochs < 0:
        return f"fp_epochs: {r.fp_epochs!r} must be >= 0"
    for key in ("lr", "clip_lr", "max_grad_norm"):
        if not getattr(r, key) > 0:
            return f"{key}: {getattr(r, key)!r} must be > 0"
    for key in ("weight_decay", "dropout_start_factor", "dropout_end_factor", "sr_ste_decay"):
        if not getattr(r, key) >= 0:
            return f"{key}: {getattr(r, key)!r} must be >= 0"
    for key in ("prune_ramp_fraction", "dropout_ramp_fraction"):
        if not 0.0 < getattr(r, key) <= 1.0:
            return f"{key}: {getattr(r, key)!r} must be in (0, 1]"
    if not 0.0 <= r.distill_weight <= 1.0:
        return f"distill_weight: {r.distill_weight!r} must be in [0, 1] (0 = no distillation)"
    if not r.distill_temperature > 0:
        return f"distill_temperature: {r.distill_temperature!r} must be > 0"
    if r.distill_unlabeled < 0:
        return f"distill_unlabeled: {r.distill_unlabeled!r} must be >= 0 (0 = off)"
    if r.distill_unlabeled > 0 and r.distill_weight == 0:
        return ("distill_unlabeled > 0 needs distill_weight > 0 (unlabelled batches learn from "
                "the teacher's logits)")
    if not r.distill_hidden_weight >= 0:
        return f"distill_hidden_weight: {r.distill_hidden_weight!r} must be >= 0 (0 = off)"
    if r.distills and not (r.quantized and r.init == "finetuned"):
        return ("distill_weight or distill_hidden_weight > 0 needs a quantized recipe with "
                "init: finetuned (the teacher is the fine-tuned float model the compressed stage "
                "starts from)")
    if not 0.0 <= r.warmup_fraction < 1.0:
        return f"warmup_fraction: {r.warmup_fraction!r} must be in [0, 1)"
    for fam in r.families:
        if fam not in FAMILIES:
            return f"families: {fam!r} is not one of {', '.join(FAMILIES)}"
    return None


def _convert(name: str, value: Any, annotation: Any, where: str) -> Any:
    """Coerce a YAML value to the field's type (lists -> tuples); reject wrong types."""
    origin = typing.get_origin(annotation)
    if origin is dict:
        if not isinstance(value, dict):
            raise AccelsimError(f"{where}: {name}: expected a mapping, got {value!r}")
        key_type, item_type = typing.get_args(annotation)
        return {_convert(name, k, key_type, where): _convert(name, v, item_type, where)
                for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise AccelsimError(f"{where}: {name}: expected a list, got {value!r}")
        args = typing.get_args(annotation)
        item_type = args[0]
        if args[-1] is not Ellipsis and len(value) != len(args):
            raise AccelsimError(f"{where}: {name}: expected {len(args)} items, got {value!r}")
        return tuple(_convert(name, v, item_type, where) for v in value)
    if origin is Literal:
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise AccelsimError(f"{where}: {name}: expected a number, got {value!r}")
        return float(value)
    if annotation is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise AccelsimError(f"{where}: {name}: expected an integer, got {value!r}")
    if annotation is str and not isinstance(value, str):
        raise AccelsimError(f"{where}: {name}: expected a string, got {value!r}")
    return value


def recipe_from_dict(data: dict[str, Any], where: str = "recipe") -> Recipe:
    """Build a :class:`Recipe`; one line per unknown field, wrong type or impossible value."""
    if not isinstance(data, dict):
        raise AccelsimError(f"{where}: expected a mapping of recipe fields, got {data!r}")
    hints = typing.get_type_hints(Recipe)
    known = {f.name for f in fields(Recipe)}
    for key in data:
        if key not in known:
            raise AccelsimError(f"{where}: unknown field {key!r}; allowed: "
                                f"{', '.join(sorted(known))}")
    if "name" not in data:
        raise AccelsimError(f"{where}: name: missing (every recipe names itself)")
    values = {k: _convert(k, v, hints[k], where) for k, v in data.items()}
    problem = _problem(_unchecked(values))
    if problem is not None:
        raise AccelsimError(f"{where}: {problem}")
    return Recipe(**values)


def _unchecked(values: dict[str, Any]) -> Recipe:
    """A Recipe built without __post_init__, so its problem can be reported with the file name."""
    recipe = object.__new__(Recipe)
    for f in fields(Recipe):
        if f.name in values:
            value = values[f.name]
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = f.default if f.default is not dataclasses.MISSING else None
        object.__setattr__(recipe, f.name, value)
    return recipe


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A recipe by name (``experiments/recipes/<name>.yaml``) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = RECIPES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            names = available_recipes()
            raise AccelsimError(
                f"recipe: unknown name {str(name_or_path)!r}"
                f"{did_you_mean(str(name_or_path), names)}; allowed: one of the {len(names)} "
                f"recipes in {RECIPES_DIR.relative_to(RECIPES_DIR.parents[1])}/ or a path to a "
                ".yaml file")
    if not path.is_file():
        raise AccelsimError(f"recipe: file {str(path)!r} does not exist")
    with path.open() as fh:
        try:
            data = yaml.load(fh, Loader=UniqueKeyLoader)
        except yaml.YAMLError as exc:
            raise AccelsimError(f"{path}: not valid YAML ({yaml_problem(exc)})") from None
    return recipe_from_dict(data, where=str(path))


def check_family(recipe: Recipe, family: str) -> None:
    """One line when ``recipe`` does not cover model ``family``."""
    if family not in recipe.families:
        raise AccelsimError(f"recipe {recipe.name!r}: families: model family {family!r} is not "
                            f"covered; this recipe applies to {', '.join(recipe.families)}")


def dropout_factor(recipe: Recipe, progress: float) -> float:
    """Multiplier of every dropout rate at compression-stage ``progress`` in [0, 1].

    ``ramp``: linear from ``dropout_start_factor`` to ``dropout_end_factor`` over the first
    ``dropout_ramp_fraction`` of training, then constant; ``constant``: 1 (the model's rates).
    """
    if recipe.dropout_schedule == "constant":
        return 1.0
    t = min(max(progress, 0.0) / recipe.dropout_ramp_fraction, 1.0)
    return recipe.dropout_start_factor + t * (recipe.dropout_end_factor
                                              - recipe.dropout_start_factor)


def cubic_fraction(progress: float, ramp_fraction: float) -> float:
    """Fraction of groups pruned at training ``progress`` in [0, 1] (Zhu & Gupta 2017 cubic ramp):
    ``1 - (1 - t / ramp)^3`` until ``ramp_fraction``, then 1."""
    if progress >= ramp_fraction:
        return 1.0
    t = max(progress, 0.0) / ramp_fraction
    return 1.0 - (1.0 - t) ** 3


def pruned_fraction(recipe: Recipe, progress: float) -> float:
    """Fraction of 2:4 groups pruned at ``progress`` (1 throughout unless pruning is gradual)."""
    if recipe.pruning != "gradual":
        return 1.0
    return cubic_fraction(progress, recipe.prune_ramp_fraction)


def lr_factor(step: int, total_steps: int, warmup_fraction: float) -> float:
    """Linear warm-up then linear decay to 0 (the BERT fine-tuning schedule)."""
    warmup = math.floor(warmup_fraction * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    remaining = max(total_steps - warmup, 1)
    return max(0.0, (total_steps - step) / remaining)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """Plain-data form (tuples as lists) for checkpoints and run metadata."""
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(recipe).items()}


def same_recipe(saved: dict[str, Any], recipe: Recipe) -> bool:
    """Whether ``saved`` (a :func:`recipe_to_dict` from a checkpoint) trains as ``recipe`` does.

    The name is a label, not part of the training: a run keeps its checkpoint when a study's
    schedule becomes the pipeline's under the recipe's own name. A field added to
    :class:`Recipe` after the checkpoint was written is absent from it; the old code behaved as
    the field's default, so an absent field matches only its default.
    """
    defaults = recipe_to_dict(Recipe(name=recipe.name))
    current = recipe_to_dict(recipe)
    return all(
        saved[k] == v if k in saved else v == defaults[k]
        for k, v in current.items() if k != "name"
    ) and set(saved) <= set(current)
