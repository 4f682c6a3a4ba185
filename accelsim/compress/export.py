"""The integer model: codes, scales, int32 biases and the packed 2:4 layout the hardware reads.

:func:`export_int_model` reads a compressed model (after :func:`apply_recipe` and fine-tuning)
into an :class:`IntModel`; :func:`save_int_model` / :func:`load_int_model` write and read the
single-file ``.npz`` layout of docs/compression.md §6, the contract with ``accelsim.ref`` (which
executes it) and ``accelsim.sim`` (which reads real sparsity and byte counts from it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from accelsim.compress.apply import ATTN_QUANT, PLAN_ATTR, CompressionPlan, quant_linears
from accelsim.compress.quant import ActQuantizer, QuantLinear
from accelsim.compress.sparsity import compress_2_4, is_2_4
from accelsim.errors import AccelsimError
from accelsim.formats import INDEX_BITS, PACKED_FIELD_BITS, SPARSE_24
from accelsim.formats import INT_MODEL_FORMAT as FORMAT
from accelsim.formats import INT_MODEL_VERSION as VERSION


@dataclass(frozen=True)
class ActQuant:
    """Activation quantizer: ``codes = clamp(rint(x / scale) + zero_point, qmin, qmax)``."""

    bits: int
    signed: bool
    scale: float  # a float32 value
    zero_point: int
    qmin: int
    qmax: int


@dataclass(frozen=True, eq=False)
class IntLinear:
    """One quantized linear layer ``y = x W^T + b`` with ``W`` of shape ``[n, k]``."""

    name: str
    k: int
    n: int
    weight_bits: int
    grid: str
    weight_granularity: str
    act: ActQuant
    sparsity: str  # "2:4" or "dense"
    density: float
    weight_codes: np.ndarray  # int8 [n, k]
    weight_scale: np.ndarray  # float32 [n] or [1]
    packed_codes: np.ndarray  # uint8 [n, ceil(k * bits / 8)]
    bias: np.ndarray | None = None  # float32 [n]
    bias_int32: np.ndarray | None = None  # int32 [n]
    sparse_values: np.ndarray | None = None  # int8 [n, k/2]
    sparse_indices: np.ndarray | None = None  # uint8 [n, k/2], 0..3 ascending per group
    packed_values: np.ndarray | None = None  # uint8 [n, ceil(k/2 * bits / 8)]
    packed_indices: np.ndarray | None = None  # uint8 [n, ceil(k/2 / 4)]
    # float32 [k]: the input is divided by it per channel before quantization (smoothing_sites)
    input_smoothing: np.ndarray | None = None

    def dequantized_weight(self) -> np.ndarray:
        """float32 ``[n, k]`` weight the fake-quant model uses (``codes * scale``)."""
        return self.weight_codes.astype(np.float32) * self.weight_scale.reshape(-1, 1)


@dataclass(frozen=True)
class IntAttention:
    """A self-attention module whose ``QK^T`` and ``PV`` operands are quantized."""

    name: str
    num_heads: int
    head_dim: int
    scaling: float
    q: ActQuant
    k: ActQuant
    v: ActQuant
    probs: ActQuant


@dataclass(frozen=True, eq=False)
class IntModel:
    family: str
    recipe: str
    hf_config: dict[str, Any]
    linears: tuple[IntLinear, ...]
    attentions: tuple[IntAttention, ...]
    dense_layers: dict[str, str]  # quantized layer -> why it is not 2:4 under a 2:4 recipe
    float_layers: tuple[str, ...] = ()  # Linear/Conv modules kept float32 (front end, head)
    float_tensors: dict[str, np.ndarray] = field(default_factory=dict)
    # Each on-chip residual add's output scale by its site (``module:order``), for the ``int``
    # vector unit's ``calibrated`` rule (accelsim.ref.execute.calibrate_residual_adds).
    residual_add_scales: dict[str, float] = field(default_factory=dict)

    def linear(self, name: str) -> IntLinear:
        for layer in self.linears:
            if layer.name == name:
                return layer
        raise AccelsimError(f"int model: no quantized linear {name!r}; "
                            f"have {', '.join(x.name for x in self.linears)}")


# --- packing -------------------------------------------------------------------------------------

def pack_fields(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack a ``[rows, length]`` integer array into ``bits``-wide two's complement fields, first
    element in the least significant bits, each row padded to whole bytes with zero bits."""
    if bits not in PACKED_FIELD_BITS:
        raise ValueError(f"pack_fields: bits {bits} not in {PACKED_FIELD_BITS}")
    v = np.asarray(values).astype(np.int64)
    rows, length = v.shape
    if bits == 8:
        return v.astype(np.int8).view(np.uint8).reshape(rows, length)
    per_byte = 8 // bits
    padded = -(-length // per_byte) * per_byte
    fields_ = np.zeros((rows, padded), dtype=np.int64)
    fields_[:, :length] = v & ((1 << bits) - 1)
    fields_ = fields_.reshape(rows, padded // per_byte, per_byte)
    shifts = np.arange(per_byte, dtype=np.int64) * bits
    return (fields_ << shifts).sum(axis=-1).astype(np.uint8)


def unpack_fields(packed: np.ndarray, bits: int, length: int, signed: bool) -> np.ndarray:
    """Inverse of :func:`pack_fields` (``signed`` sign-extends); int64 ``[rows, length]``."""
    p = np.asarray(packed, dtype=np.uint8)
    rows = p.shape[0]
    if bits == 8:
        raw = p.view(np.int8) if signed else p
        return raw[:, :length].astype(np.int64)
    per_byte = 8 // bits
    shifts = np.arange(per_byte, dtype=np.int64) * bits
    f = (p.astype(np.int64)[..., None] >> shifts) & ((1 << bits) - 1)
    f = f.reshape(rows, -1)[:, :length]
    if signed:
        f = np.where(f >= 1 << (bits - 1), f - (1 << bits), f)
    return f


def storage_codes(codes: np.ndarray, grid: str) -> np.ndarray:
    """The ``bits``-wide field stored per code: the code itself, or ``(code - 1) >> 1`` for the
    ``no_zero`` grid whose odd codes ``2i + 1`` are stored as ``i``."""
    c = np.asarray(codes).astype(np.int64)
    return (c - 1) >> 1 if grid == "no_zero" else c


# --- export --------------------------------------------------------------------------------------

def _act(q: ActQuantizer) -> ActQuant:
    if not q.is_calibrated:
        raise AccelsimError("export: an activation quantizer was never calibrated; run "
                            "calibrate() (or finetune) before exporting")
    scale, zero_point = q.qparams()
    return ActQuant(bits=q.bits, signed=q.signed, scale=float(np.float32(scale.item())),
                    zero_point=int(zero_point.item()), qmin=int(q.qmin), qmax=int(q.qmax))


def export_linear(name: str, layer: QuantLinear) -> IntLinear:
    """One quantized layer as the integer model holds it (its quantizers' current values)."""
    codes_t, scale_t = layer.export_codes()
    codes = codes_t.numpy().astype(np.int8)
    scale = scale_t.numpy().astype(np.float32)
    act = _act(layer.act_quant)
    bits = layer.weight_quant.bits
    grid = layer.weight_quant.grid
    n, k = codes.shape
    extra: dict[str, np.ndarray] = {}
    if layer.bias is not None:
        bias = layer.bias.detach().numpy().astype(np.float32)
        acc_scale = np.float64(act.scale) * scale.astype(np.float64)
        bias_int = np.rint(bias.astype(np.float64) / acc_scale)
        info = np.iinfo(np.int32)
        extra["bias"] = bias
        extra["bias_int32"] = np.clip(bias_int, info.min, info.max).astype(np.int32)
    if layer.act_quant.smoothing is not None:
        extra["input_smoothing"] = layer.act_quant.smoothing.detach().numpy().astype(np.float32)
    sparse = is_2_4(codes_t)
    if sparse:
        values_t, indices_t = compress_2_4(codes_t)
        values = values_t.numpy().astype(np.int8)
        indices = indices_t.numpy().astype(np.uint8)
        extra.update(sparse_values=values, sparse_indices=indices,
                     packed_values=pack_fields(storage_codes(values, grid), bits),
                     packed_indices=pack_fields(indices, INDEX_BITS))
    return IntLinear(
        name=name, k=k, n=n, weight_bits=bits, grid=grid,
        weight_granularity=layer.weight_quant.granularity, act=act,
        sparsity=SPARSE_24 if sparse else "dense",
        density=float(np.count_nonzero(codes) / codes.size),
        weight_codes=codes, weight_scale=scale,
        packed_codes=pack_fields(storage_codes(codes, grid), bits), **extra)


def _heads(module: nn.Module) -> tuple[int, int]:
    # Llama's attention keeps its head count in its config only.
    heads = (getattr(module, "num_attention_heads", None) or getattr(module, "num_heads", None)
             or module.config.num_attention_heads)
    head_dim = getattr(module, "head_dim", None) or module.attention_head_size
    return int(heads), int(head_dim)


def export_gemms(model: nn.Module) -> tuple[tuple[IntLinear, ...], tuple[IntAttention, ...]]:
    """The quantized linears and attention modules of a model compressed by ``apply_recipe``, as
    their quantizers stand now (training mode included: QAT on a datapath exports every step)."""
    plan: CompressionPlan | None = getattr(model, PLAN_ATTR, None)
    layers = quant_linears(model)
    if plan is None or not layers:
        raise AccelsimError("export: model has no quantized layer; compress it with a quantized "
                            "recipe (weight_bits 4 or 8) first")
    linears = tuple(export_linear(name, layer) for name, layer in layers)
    attentions = []
    for name in plan.attention_modules:
        module = model.get_submodule(name)
        quant = getattr(module, ATTN_QUANT)
        heads, head_dim = _heads(module)
        attentions.append(IntAttention(
            name=name, num_heads=heads, head_dim=head_dim, scaling=float(module.scaling),
            q=_act(quant["q"]), k=_act(quant["k"]), v=_act(quant["v"]), probs=_act(quant["probs"])))
    return linears, tuple(attentions)


def export_int_model(model: nn.Module) -> IntModel:
    """The :class:`IntModel` of a model compressed by ``apply_recipe`` (eval-mode quantizers)."""
    model.eval()
    linears, attentions = export_gemms(model)
    plan: CompressionPlan = getattr(model, PLAN_ATTR)
    layers = quant_linears(model)
    skip = tuple(f"{n}." for n, _ in layers) + tuple(f"{n}.{ATTN_QUANT}."
                                                      for n in plan.attention_modules)
    floats = {}
    for key, tensor in model.state_dict().items():
        if key.startswith(skip):
            continue
        t = tensor.detach().cpu()
        floats[key] = (t.float() if t.is_floating_point() else t).numpy()
    config = model.config.to_dict() if hasattr(model, "config") else {}
    return IntModel(family=plan.family, recipe=plan.recipe, hf_config=config,
                    linears=linears, attentions=attentions,
                    dense_layers=dict(plan.dense_layers), float_layers=plan.float_layers,
                    float_tensors=floats)


# --- file I/O ------------------------------------------------------------------------------------

_LINEAR_ARRAYS = ("weight_codes", "weight_scale", "packed_codes", "bias", "bias_int32",
                  "sparse_values", "sparse_indices", "packed_values", "packed_indices",
                  "input_smoothing")


def _act_dict(a: ActQuant) -> dict[str, Any]:
    return {"bits": a.bits, "signed": a.signed, "scale": a.scale, "zero_point": a.zero_point,
            "qmin": a.qmin, "qmax": a.qmax}


def save_int_model(model: IntModel, path: Path | str) -> Path:
    """Write ``model`` as one ``.npz`` file (docs/compression.md §6); returns the path."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    linears_meta = []
    for layer in model.linears:
        linears_meta.append({
            "name": layer.name, "k": layer.k, "n": layer.n, "weight_bits": layer.weight_bits,
            "grid": layer.grid, "weight_granularity": layer.weight_granularity,
            "act_bits": layer.act.bits, "act_signed": layer.act.signed,
            "act_scale": layer.act.scale, "act_zero_point": layer.act.zero_point,
            "act_qmin": layer.act.qmin, "act_qmax": layer.act.qmax,
            "sparsity": layer.sparsity, "density": layer.density,
            "has_bias": layer.bias is not None,
        })
        arrays[f"linear/{layer.name}/act_scale"] = np.array([layer.act.scale], dtype=np.float32)
        for key in _LINEAR_ARRAYS:
            value = getattr(layer, key)
            if value is not None:
                arrays[f"linear/{layer.name}/{key}"] = value
    attentions_meta = [
        {"name": a.name, "num_heads": a.num_heads, "head_dim": a.head_dim, "scaling": a.scaling,
         **{op: _act_dict(getattr(a, op)) for op in ("q", "k", "v", "probs")}}
        for a in model.attentions
    ]
    for key, tensor in model.float_tensors.items():
        arrays[f"float/{key}"] = tensor
    meta = {"format": FORMAT, "version": VERSION, "family": model.family, "recipe": model.recipe,
            "hf_config": model.hf_config, "linears": linears_meta, "attentions": attentions_meta,
            "dense_layers": model.dense_layers, "float_layers": list(model.float_layers),
            "float_tensors": list(model.float_tensors),
            "residual_add_scales": model.residual_add_scales}
    arrays["meta"] = np.array(json.dumps(meta, default=str))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        np.savez(fh, **arrays)
    return path


def _act_from(d: dict[str, Any]) -> ActQuant:
    return ActQuant(bits=int(d["bits"]), signed=bool(d["signed"]),
                    scale=float(np.float32(d["scale"])), zero_point=int(d["zero_point"]),
                    qmin=int(d["qmin"]), qmax=int(d["qmax"]))


def load_int_model(path: Path | str) -> IntModel:
    """Read an ``.npz`` written by :func:`save_int_model`."""
    path = Path(path)
    if not path.is_file():
        raise AccelsimError(f"int model: file {str(path)!r} does not exist")
    with np.load(path, allow_pickle=False) as data:
        if "meta" not in data.files:
            raise AccelsimError(f"{path}: not an accelsim integer model (no 'meta' entry)")
        meta = json.loads(str(data["meta"]))
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise AccelsimError(f"{path}: format {meta.get('format')!r} version "
                                f"{meta.get('version')!r}; expected {FORMAT!r} version {VERSION}")
        linears = []
        for m in meta["linears"]:
            prefix = f"linear/{m['name']}/"
            arrays = {key: data[prefix + key] for key in _LINEAR_ARRAYS
                      if prefix + key in data.files}
            act = ActQuant(bits=m["act_bits"], signed=m["act_signed"],
                           scale=float(data[prefix + "act_scale"][0]),
                           zero_point=m["act_zero_point"], qmin=m["act_qmin"], qmax=m["act_qmax"])
            linears.append(IntLinear(
                name=m["name"], k=m["k"], n=m["n"], weight_bits=m["weight_bits"], grid=m["grid"],
                weight_granularity=m["weight_granularity"], act=act, sparsity=m["sparsity"],
                density=m["density"], **arrays))
        attentions = tuple(
            IntAttention(name=a["name"], num_heads=a["num_heads"], head_dim=a["head_dim"],
                         scaling=a["scaling"], q=_act_from(a["q"]), k=_act_from(a["k"]),
                         v=_act_from(a["v"]), probs=_act_from(a["probs"]))
            for a in meta["attentions"])
        floats = {key: data[f"float/{key}"] for key in meta["float_tensors"]}
    return IntModel(family=meta["family"], recipe=meta["recipe"], hf_config=meta["hf_config"],
                    linears=tuple(linears), attentions=attentions,
                    dense_layers=dict(meta["dense_layers"]),
                    float_layers=tuple(meta["float_layers"]), float_tensors=floats,
                    residual_add_scales=dict(meta.get("residual_add_scales", {})))
