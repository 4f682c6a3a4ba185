"""Hardware design point: frozen dataclasses, loaded and validated once from YAML.

A :class:`HwConfig` is a tree of small frozen sections. :func:`load_hw` reads a YAML file and
rejects unknown keys, duplicate keys, missing keys, wrong types and impossible values with one
:class:`~accelsim.errors.AccelsimError` line naming the file, the dotted field path, the value and
what is allowed. Sweeps derive design points with :func:`with_overrides`, which re-validates.

Units are in the field names: ``clock_mhz``, ``size_kib``, ``bandwidth_gbps`` (10^9 bytes/s),
``energy_pj_per_byte``, ``*_um2``. See ``docs/hardware.md`` for every field.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from accelsim.errors import AccelsimError, kind_of, yaml_problem
from accelsim.formats import (
    DATAFLOWS,
    GELU_TABLE_SEGMENTS,
    OVERFLOW_POLICIES,
    RESIDUAL_SCALES,
    SPARSE_24,
    VECTOR_FORMATS,
    VectorFormat,
    gelu_table_problem,
    product_bits,
    residual_scale_problem,
)

FORMAT_VERSION = 1
SPARSITY_SUPPORT: tuple[str, ...] = ("none", SPARSE_24)
NUMBER_KINDS: tuple[str, ...] = ("int", "fp")


def _spec(minimum: float | None = None, maximum: float | None = None, *,
          exclusive_min: bool = False, choices: tuple[str, ...] | tuple[int, ...] | None = None,
          multiple_of: int | None = None, default: Any = dataclasses.MISSING) -> Any:
    """Field with validation metadata (checked by :func:`hw_from_dict`); a field with a
    ``default`` may be left out of the YAML."""
    return field(default=default,
                 metadata={"min": minimum, "max": maximum, "exclusive_min": exclusive_min,
                           "choices": choices, "multiple_of": multiple_of})


@dataclass(frozen=True)
class Technology:
    node_nm: int = _spec(1, 250)
    voltage_v: float = _spec(0.0, 5.0, exclusive_min=True)


@dataclass(frozen=True)
class Array:
    """``pipelined_folds``: each PE has a second register for the next stationary tile (WS, IS)
    or a second accumulator (OS), so folds overlap; without it folds run back to back."""

    rows: int = _spec(1, 4096)
    cols: int = _spec(1, 4096)
    dataflow: str = _spec(choices=DATAFLOWS)
    clock_mhz: float = _spec(0.0, 1e5, exclusive_min=True)
    pipelined_folds: bool


@dataclass(frozen=True)
class Precision:
    """Native MAC operand widths; a GEMM whose bits are ``None`` runs at these. ``overflow``:
    what an accumulator does with a sum outside its ``accumulator_bits`` signed range
    (docs/integer_semantics.md §2)."""

    kind: str = _spec(choices=NUMBER_KINDS)
    weight_bits: int = _spec(1, 32)
    act_bits: int = _spec(1, 32)
    accumulator_bits: int = _spec(1, 64)
    overflow: str = _spec(choices=OVERFLOW_POLICIES, default="saturate")


@dataclass(frozen=True)
class Sparsity:
    support: str = _spec(choices=SPARSITY_SUPPORT)
    zero_gating: bool


@dataclass(frozen=True)
class Buffer:
    """One SRAM: ``banks`` independent single-ported banks, each ``word_bits`` wide, so it
    serves ``banks x word_bits / 8`` bytes per cycle."""

    size_kib: float = _spec(0.0, 1 << 22, exclusive_min=True)
    word_bits: int = _spec(8, 1 << 16, multiple_of=8)
    banks: int = _spec(1, 4096)
    double_buffered: bool

    @property
    def size_bytes(self) -> int:
        return int(self.size_kib * 1024)

    @property
    def tile_capacity_bytes(self) -> int:
        """Bytes one tile may occupy: half the buffer when double buffered."""
        return self.size_bytes // 2 if self.double_buffered else self.size_bytes


@dataclass(frozen=True)
class Sram:
    weights: Buffer
    inputs: Buffer
    outputs: Buffer


@dataclass(frozen=True)
class Dram:
    bandwidth_gbps: float = _spec(0.0, 1e6, exclusive_min=True)
    energy_pj_per_byte: float = _spec(0.0, 1e5)


@dataclass(frozen=True)
class VectorCycles:
    """Cycles one lane spends per element, by op kind (names match graph.ir.VECTOR_OPS)."""

    softmax: float = _spec(0.0, 1e3, exclusive_min=True)
    layernorm: float = _spec(0.0, 1e3, exclusive_min=True)
    gelu: float = _spec(0.0, 1e3, exclusive_min=True)
    add: float = _spec(0.0, 1e3, exclusive_min=True)
    mul: float = _spec(0.0, 1e3, exclusive_min=True)
    requantize: float = _spec(0.0, 1e3, exclusive_min=True)
    relu: float = _spec(0.0, 1e3, exclusive_min=True)
    tanh: float = _spec(0.0, 1e3, exclusive_min=True)
    other: float = _spec(0.0, 1e3, exclusive_min=True)


@dataclass(frozen=True)
class VectorUnit:
    """``format``: the number format of every vector op (LayerNorm, softmax, GELU, residual adds,
    scales); it sets the element width in lanes and SRAM (accelsim.formats.VECTOR_FORMATS).
    ``gelu_table_segments`` (``int`` format only): each lane computes GELU from a table of that
    many linear segments of the normal CDF instead of I-BERT's polynomial (0).
    ``residual_scale`` (``int`` format only): how a residual add picks its output scale
    (accelsim.formats.RESIDUAL_SCALES: the coarser operand's, the finest that cannot
    saturate, or each add's own, calibrated and stored in the integer model file)."""

    lanes: int = _spec(1, 1 << 16)
    format: str = _spec(choices=tuple(VECTOR_FORMATS))
    cycles_per_element: VectorCycles
    gelu_table_segments: int = _spec(choices=GELU_TABLE_SEGMENTS, default=0)
    residual_scale: str = _spec(choices=RESIDUAL_SCALES, default="coarser")

    @property
    def number_format(self) -> VectorFormat:
        return VECTOR_FORMATS[self.format]

    @property
    def element_bits(self) -> int:
        return self.number_format.element_bits


@dataclass(frozen=True)
class PerVectorFormat:
    """One priced quantity of a vector lane for each vector format (a sweep may change
    ``vector_unit.format``; each value carries its source in the YAML)."""

    fp32: float = _spec(0.0, 1e7)
    fp16: float = _spec(0.0, 1e7)
    bf16: float = _spec(0.0, 1e7)
    int: float = _spec(0.0, 1e7)

    def of(self, vector_format: str) -> float:
        return float(getattr(self, vector_format))


@dataclass(frozen=True)
class Energy:
    """Per-action energies (pJ) and the scaling rules' reference points."""

    mult_pj: float = _spec(0.0, 1e3)
    mult_ref_bits: int = _spec(1, 64)
    add_pj: float = _spec(0.0, 1e3)
    add_ref_bits: int = _spec(1, 64)
    gated_mac_fraction: float = _spec(0.0, 1.0)
    register_pj_per_byte: float = _spec(0.0, 1e3)
    mux_pj_per_bit: float = _spec(0.0, 1e3)
    sram_pj_per_byte: float = _spec(0.0, 1e3)
    sram_ref_kib: float = _spec(0.0, 1 << 22, exclusive_min=True)
    sram_size_exponent: float = _spec(0.0, 1.0)
    vector_pj_per_lane_cycle: PerVectorFormat
    leakage_mw_per_mm2: float = _spec(0.0, 1e4)


@dataclass(frozen=True)
class Area:
    """Per-component areas (um^2) and the scaling rules' reference points."""

    mult_um2: float = _spec(0.0, 1e7)
    mult_ref_bits: int = _spec(1, 64)
    add_um2: float = _spec(0.0, 1e7)
    add_ref_bits: int = _spec(1, 64)
    register_um2_per_bit: float = _spec(0.0, 1e5)
    mux_um2_per_bit: float = _spec(0.0, 1e5)
    sram_mm2_per_mib: float = _spec(0.0, 1e4)
    vector_lane_um2: PerVectorFormat


@dataclass(frozen=True)
class HwConfig:
    """One validated design point; build it with :func:`load_hw` or :func:`hw_from_dict`."""

    version: int
    name: str
    technology: Technology
    array: Array
    precision: Precision
    sparsity: Sparsity
    sram: Sram
    dram: Dram
    vector_unit: VectorUnit
    energy: Energy
    area: Area
    ideal_memory: bool

    @property
    def peak_tops(self) -> float:
        """Dense peak: 2 ops per MAC x rows x cols x clock (TPUv1: 91.75)."""
        return 2 * self.array.rows * self.array.cols * self.array.clock_mhz * 1e6 / 1e12

    @property
    def dram_bytes_per_cycle(self) -> float:
        return self.dram.bandwidth_gbps * 1e9 / (self.array.clock_mhz * 1e6)


# ---------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last) and
    reads numbers as YAML 1.2 does: ``2:4`` stays a string (YAML 1.1 makes it 124, base 60)
    and ``1e3`` is a float."""


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _NUMBER_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_UniqueKeyLoader.add_implicit_resolver(
    _NUMBER_TAGS[0], re.compile(r"^[-+]?(0|[1-9][0-9_]*)$|^0x[0-9a-fA-F_]+$"),
    list("-+0123456789"))
_UniqueKeyLoader.add_implicit_resolver(
    _NUMBER_TAGS[1],
    re.compile(r"^[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?$"
               r"|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$"),
    list("-+0123456789."))


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise AccelsimError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def load_hw(path: str | Path) -> HwConfig:
    """Read and validate a hardware YAML file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise AccelsimError(f"{path}: cannot read hardware config ({exc.strerror})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except AccelsimError as exc:
        raise AccelsimError(f"{path.name}: {exc}") from None
    except yaml.YAMLError as exc:
        raise AccelsimError(f"{path.name}: not valid YAML ({yaml_problem(exc)})") from None
    return hw_from_dict(data, source=path.name)


def hw_from_dict(data: dict, source: str = "<dict>") -> HwConfig:
    """Build a validated :class:`HwConfig` from plain data (the YAML structure)."""
    if not isinstance(data, dict):
        raise AccelsimError(f"{source}: expected a mapping of config sections at the top level, "
                            f"got {kind_of(data)}")
    version = data.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise AccelsimError(f"{source}: version: {version} is newer than this accelsim "
                            f"understands ({FORMAT_VERSION}); upgrade accelsim")
    hw = _build(HwConfig, data, source, "")
    if hw.version != FORMAT_VERSION:
        raise AccelsimError(f"{source}: version: {hw.version!r} is not one of {FORMAT_VERSION}")
    p = hw.precision
    if p.kind == "int" and p.accumulator_bits < product_bits(p.weight_bits, p.act_bits):
        need = product_bits(p.weight_bits, p.act_bits)
        raise AccelsimError(
            f"{source}: precision.accumulator_bits: {p.accumulator_bits} is narrower than one "
            f"{p.weight_bits}-bit x {p.act_bits}-bit product ({need} bits); allowed: >= {need}")
    vector_unit = hw.vector_unit
    problem = (gelu_table_problem(vector_unit.gelu_table_segments, vector_unit.format)
               or residual_scale_problem(vector_unit.residual_scale, vector_unit.format))
    if problem is not None:
        raise AccelsimError(f"{source}: vector_unit.{problem}")
    return hw


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # get_type_hints re-parses annotations on every call; sweeps validate thousands of points.
    return typing.get_type_hints(cls)


def _build(cls: type, data: object, source: str, prefix: str) -> Any:
    where = prefix.rstrip(".") or "<top>"
    if not isinstance(data, dict):
        raise AccelsimError(f"{source}: {where}: expected a mapping, got {data!r}")
    hints = _hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in hints:
            raise AccelsimError(f"{source}: {prefix}{key}: unknown key; allowed at {where}: "
                                f"{', '.join(allowed)}")
    values: dict[str, Any] = {}
    for fld in dataclasses.fields(cls):
        path = f"{prefix}{fld.name}"
        if fld.name not in data:
            if fld.default is not dataclasses.MISSING:
                values[fld.name] = fld.default
                continue
            raise AccelsimError(f"{source}: {path}: missing (required)")
        values[fld.name] = _convert(hints[fld.name], fld, data[fld.name], source, path)
    return cls(**values)


def _convert(hint: Any, fld: dataclasses.Field, value: object, source: str, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source, path + ".")
    if hint is bool:
        if not isinstance(value, bool):
            raise AccelsimError(f"{source}: {path}: {value!r} is not a boolean (true or false)")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise AccelsimError(f"{source}: {path}: {value!r} is not a string")
        _check_choice(fld, value, source, path)
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise AccelsimError(f"{source}: {path}: {value!r} is not an integer")
        _check_choice(fld, value, source, path)
    elif hint is float:
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(
            value
        ):
            raise AccelsimError(f"{source}: {path}: {value!r} is not a finite number")
        value = float(value)
    else:  # pragma: no cover - guards new field types added without a converter
        raise TypeError(f"no converter for {hint!r} at {path}")
    _check_range(fld, value, source, path)
    return value


def _check_choice(fld: dataclasses.Field, value: object, source: str, path: str) -> None:
    choices = fld.metadata.get("choices")
    if choices and value not in choices:
        raise AccelsimError(f"{source}: {path}: {value!r} is not one of "
                            f"{', '.join(map(str, choices))}")


def _check_range(fld: dataclasses.Field, value: float, source: str, path: str) -> None:
    meta = fld.metadata
    low, high = meta.get("min"), meta.get("max")
    if low is not None:
        if meta.get("exclusive_min") and value <= low:
            raise AccelsimError(f"{source}: {path}: {value!r} must be > {low:g}")
        if value < low:
            raise AccelsimError(f"{source}: {path}: {value!r} must be >= {low:g}")
    if high is not None and value > high:
        raise AccelsimError(f"{source}: {path}: {value!r} must be <= {high:g}")
    step = meta.get("multiple_of")
    if step and value % step:
        raise AccelsimError(f"{source}: {path}: {value!r} must be a multiple of {step}")


def hw_to_dict(hw: HwConfig) -> dict:
    """Plain nested dict (the YAML structure); ``hw_from_dict(hw_to_dict(hw)) == hw``."""
    return dataclasses.asdict(hw)


# ---------------------------------------------------------------------------------------------
# Overrides (``--set array.rows=32``, sweep files)
# ---------------------------------------------------------------------------------------------


def with_overrides(hw: HwConfig, overrides: dict[str, object]) -> HwConfig:
    """Return ``hw`` with dotted-path fields replaced, re-validated as a whole."""
    if not overrides:
        return hw
    data = hw_to_dict(hw)
    for dotted, value in overrides.items():
        node: dict = data
        cls: type = HwConfig
        parts = dotted.split(".")
        for depth, part in enumerate(parts):
            hints = _hints(cls)
            at = ".".join(parts[:depth]) or "<top>"
            if part not in hints:
                raise AccelsimError(f"--set {dotted}: unknown key {part!r}; allowed at {at}: "
                                    f"{', '.join(f.name for f in dataclasses.fields(cls))}")
            is_section = dataclasses.is_dataclass(hints[part])
            if depth == len(parts) - 1:
                if is_section:
                    inner = ", ".join(f.name for f in dataclasses.fields(hints[part]))
                    raise AccelsimError(f"--set {dotted}: is a section; set one of its fields: "
                                        f"{inner}")
                node[part] = value
            elif not is_section:
                raise AccelsimError(f"--set {dotted}: {'.'.join(parts[:depth + 1])} is a value, "
                                    "not a section")
            else:
                node = node[part]
                cls = hints[part]
    return hw_from_dict(data, source=f"{hw.name} --set")


def parse_override(text: str) -> tuple[str, object]:
    """``"array.rows=32"`` -> ``("array.rows", 32)``; the value is parsed as a YAML scalar."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise AccelsimError(f"--set {text!r}: expected KEY=VALUE, for example array.rows=32")
    try:
        value = yaml.load(raw, Loader=_UniqueKeyLoader) if raw.strip() else ""
    except yaml.YAMLError:
        raise AccelsimError(f"--set {text!r}: value {raw!r} is not a YAML scalar") from None
    if isinstance(value, dict | list):
        raise AccelsimError(f"--set {text!r}: value must be a single scalar, got {raw!r}")
    return key, value

