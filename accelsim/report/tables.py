"""SimResult -> tidy DataFrame, JSON dict, CSV, and the text people read first: a summary (totals,
the costliest layers grouped by repeated block, notes) or the full per-layer table.

One row per layer with unit-suffixed columns (``cycles``, ``dram_bytes``, ``energy_*_uj``);
the JSON keeps ``SimResult.to_dict``'s field names, which scripts rely on, with ``hw`` the
design point as an object (name, overrides, full config). Text only: the CLI writes the files.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING

from accelsim.hw import HwConfig, hw_to_dict
from accelsim.sim.simulate import LayerResult, SimResult

if TYPE_CHECKING:
    import pandas as pd

ENERGY_PARTS: tuple[str, ...] = ("mac", "sram", "dram", "vector", "leakage", "total")
DRAM_TENSORS: tuple[str, ...] = ("weights", "inputs", "outputs", "spills")
LAYER_COLUMNS: tuple[str, ...] = (
    "model", "hw", "layer", "op", "m", "k", "n", "count", "weight_bits", "act_bits", "sparsity",
    "on_host", "compute_cycles", "stall_cycles", "sram_stall_cycles", "cycles", "macs",
    "utilization", "dram_bytes",
    *(f"dram_{tensor}_bytes" for tensor in DRAM_TENSORS),
    *(f"energy_{part}_uj" for part in ENERGY_PARTS),
)


def layer_rows(result: SimResult) -> list[dict]:
    """Flat per-layer records in :data:`LAYER_COLUMNS` order."""
    rows = []
    for layer in result.layers:
        record = layer.to_dict()
        energy = record.pop("energy_uj")
        record = {"model": result.model, "hw": result.hw_name, "layer": record.pop("name"),
                  **record}
        record.update({f"energy_{part}_uj": energy[part] for part in ENERGY_PARTS})
        dram = record.pop("dram_bytes_by_tensor")
        record.update({f"dram_{tensor}_bytes": dram[tensor] for tensor in DRAM_TENSORS})
        rows.append({column: record[column] for column in LAYER_COLUMNS})
    return rows


def layers_frame(result: SimResult) -> pd.DataFrame:
    """One row per layer; an infeasible result gives an empty frame with the same columns."""
    import pandas as pd

    return pd.DataFrame(layer_rows(result), columns=list(LAYER_COLUMNS))


def hw_record(hw: HwConfig, overrides: dict[str, object]) -> dict:
    """The design point a run used: the config's ``name``, the ``overrides`` applied to it
    (dotted path -> value, as given to ``--set``) and the full resolved ``config``
    (``hw_to_dict``: every field, whatever the config holds), so a reader needs no YAML."""
    return {"name": hw.name, "overrides": dict(overrides), "config": hw_to_dict(hw)}


def result_json(result: SimResult, hw: dict) -> dict:
    """``SimResult.to_dict`` with ``hw`` replaced by the run's :func:`hw_record`, and the area
    split by block (``area_breakdown_mm2``: array, sram, vector; they sum to the total)."""
    area = result.area
    return {**result.to_dict(), "hw": hw,
            "area_breakdown_mm2": {"array": area.array_mm2, "sram": area.sram_mm2,
                                   "vector": area.vector_mm2}}


def json_text(data: dict) -> str:
    return json.dumps(data, indent=2) + "\n"


def csv_text(result: SimResult) -> str:
    return layers_frame(result).to_csv(index=False)


def with_si_prefix(value: float, unit: str) -> str:
    """``value`` in ``unit`` with a decimal SI prefix: ``47.05 MB``, ``128 B``."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def _bits(layer: LayerResult) -> str:
    if layer.op == "vector":
        return "-"
    if layer.on_host:
        return "host fp32"
    return f"w{layer.weight_bits}a{layer.act_bits}" + (" 2:4" if layer.skipping else "")


def _layer_cells(layer: LayerResult) -> tuple[str, ...]:
    repeat = f" x{layer.count}" if layer.count > 1 else ""
    if layer.op == "vector":
        # A vector layer has no array shape or operand bits; it runs on the vector unit.
        shape, utilization = f"{layer.m * layer.count:,} elements", "-"
    else:
        shape = f"{layer.m}x{layer.k}x{layer.n}{repeat}"
        utilization = f"{layer.utilization:.1%}"
    return (layer.name, layer.op, shape, _bits(layer), f"{layer.compute_cycles:,}",
            f"{layer.stall_cycles:,}", utilization, with_si_prefix(layer.dram_bytes, "B"),
            f"{layer.energy.total_pj / 1e6:.3f}")


_HEADER = ("layer", "op", "m x k x n", "bits", "compute_cycles", "stall_cycles", "util",
           "dram", "energy_uj")
_LEFT_ALIGNED = 4  # text columns first, numbers right-aligned after them


def format_layer_table(result: SimResult) -> str:
    """Per-layer text table: name, op, shape, bits (``2:4`` when skipping), cycles, stalls,
    utilization, DRAM traffic, energy."""
    rows = [_HEADER, *(_layer_cells(layer) for layer in result.layers)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i < _LEFT_ALIGNED else cell.rjust(w)
                  for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
        for row in rows
    )


def design_point(name: str, overrides: dict[str, object]) -> str:
    """``int4_sparse`` or ``int4_sparse with array.rows=32, array.dataflow=ws``."""
    if not overrides:
        return name
    return f"{name} with " + ", ".join(f"{key}={value}" for key, value in overrides.items())


def format_totals(result: SimResult, overrides: dict[str, object] | None = None) -> str:
    """The headline numbers, most wanted first, under the model and design point."""
    t = result.totals
    where = f"{result.model} on {design_point(result.hw_name, overrides or {})}"
    if not result.feasible:
        return f"{where}: INFEASIBLE: {result.reason}\n  area        {t.area_mm2:.3f} mm2"
    return "\n".join((
        where,
        f"  latency     {t.latency_ms:.4f} ms ({t.cycles:,} cycles)",
        f"  energy      {t.energy_uj:.3f} uJ",
        f"  throughput  {t.tops:.3f} TOPS (dense-equivalent)",
        f"  efficiency  {t.tops_per_w:.3f} TOPS/W",
        f"  utilization {t.utilization:.1%}",
        f"  DRAM        {with_si_prefix(t.dram_bytes, 'B')}",
        f"  area        {t.area_mm2:.3f} mm2",
        *host_lines(result),
    ))


def host_lines(result: SimResult) -> list[str]:
    """The work the host did beside the chip (``LayerResult.on_host`` GEMMs), when any."""
    host = [layer for layer in result.layers if layer.on_host]
    if not host:
        return []
    return [f"  host        {len(host)} GEMM{'s' if len(host) > 1 else ''}, "
            f"{result.totals.host_macs / 1e9:.3f} GMACs in float32 (not priced on the chip)"]


# ---------------------------------------------------------------------------------------------
# Summary: what a person reads first
# ---------------------------------------------------------------------------------------------

TOP_GROUPS = 8
NOTE_WIDTH = 96
# A note is printed when its share of the cycles reaches this fraction.
STALL_NOTE_FRACTION = 0.10
VECTOR_NOTE_FRACTION = 0.20
_BLOCK_INDEX = re.compile(r"(?<=\.)\d+(?=[./]|$)")


@dataclass(frozen=True)
class LayerGroup:
    """Layers that are one layer of a repeated block (``layers.3.mlp.fc1`` for every block
    index), named with the indices they span, e.g. ``layers.{0..11}.mlp.fc1``."""

    name: str
    op: str
    bits: str
    layers: int
    cycles: int
    energy_uj: float


def _block_template(module: str) -> tuple[str, tuple[int, ...]]:
    """``layers.3.attention`` -> (``layers.{}.attention``, (3,))."""
    indices = tuple(int(i) for i in _BLOCK_INDEX.findall(module))
    return _BLOCK_INDEX.sub("{}", module), indices


def _index_set(values: set[int]) -> str:
    ordered = sorted(values)
    if len(ordered) == 1:
        return str(ordered[0])
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{{{ordered[0]}..{ordered[-1]}}}"
    return "{" + ",".join(map(str, ordered)) + "}"


def layer_groups(layers: tuple[LayerResult, ...] | list[LayerResult]) -> list[LayerGroup]:
    """Layers grouped by repeated block, in order of first appearance.

    A layer's group is its module path with block indices taken out plus its position among the
    block's layers of that path: the tracer numbers op nodes across the whole model
    (``layers.0.attention/matmul``, ``/matmul_1``, then ``layers.1.attention/matmul_2``, ...),
    so QK^T and PV of every block form two groups, named after block 0's nodes.
    """
    members: dict[tuple[str, int], list[tuple[LayerResult, tuple[int, ...]]]] = {}
    seen: dict[tuple[str, tuple[int, ...]], int] = {}
    for layer in layers:
        module, slash, node = layer.name.partition("/")
        template, indices = _block_template(module)
        ordinal = seen.get((template + slash, indices), 0)
        seen[(template + slash, indices)] = ordinal + 1
        members.setdefault((template + slash, ordinal), []).append((layer, indices))
    groups = []
    for (template, _), found in members.items():
        positions = [set(column) for column in zip(*(ix for _, ix in found), strict=True)]
        pieces = template.split("{}")
        name = pieces[0] + "".join(_index_set(positions[i]) + piece
                                   for i, piece in enumerate(pieces[1:]))
        name += found[0][0].name.partition("/")[2]
        bits = {_bits(layer) for layer, _ in found}
        groups.append(LayerGroup(
            name=name, op=found[0][0].op, bits=bits.pop() if len(bits) == 1 else "mixed",
            layers=len(found), cycles=sum(layer.cycles for layer, _ in found),
            energy_uj=sum(layer.energy.total_pj for layer, _ in found) / 1e6,
        ))
    return groups


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def format_top_groups(result: SimResult, by: str, top: int = TOP_GROUPS) -> str:
    """The ``top`` layer groups by ``cycles`` or ``energy_uj``, with their share of the total."""
    groups = sorted(layer_groups(result.layers), key=lambda g: getattr(g, by), reverse=True)
    t = result.totals
    rows = [("layers (grouped by repeated block)", "op", "bits", "count", "cycles", "share",
             "energy_uj", "share")]
    rows += [(g.name, g.op, g.bits, str(g.layers), f"{g.cycles:,}", _share(g.cycles, t.cycles),
              f"{g.energy_uj:.3f}", _share(g.energy_uj, t.energy_uj)) for g in groups[:top]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    title = f"top {min(top, len(groups))} of {len(groups)} layer groups by {by}"
    return title + "\n" + "\n".join(
        "  " + "  ".join(cell.ljust(w) if i < 3 else cell.rjust(w)
                         for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
        for row in rows
    )


def summary_notes(result: SimResult, hw: HwConfig) -> list[str]:
    """What the totals hide, derived from the result: GEMMs wider than the datapath (several
    passes each), DRAM-bound time, vector-unit time."""
    t = result.totals
    notes = []
    p = hw.precision
    wide: dict[tuple[int, int], list[LayerResult]] = {}
    for layer in result.layers:
        wider = (layer.op == "gemm" and not layer.on_host
                 and (layer.weight_bits > p.weight_bits or layer.act_bits > p.act_bits))
        if wider:
            wide.setdefault((layer.weight_bits, layer.act_bits), []).append(layer)
    for (weight_bits, act_bits), layers in sorted(wide.items()):
        passes = math.ceil(weight_bits / p.weight_bits) * math.ceil(act_bits / p.act_bits)
        names = ", ".join(g.name for g in layer_groups(layers))
        cycles = sum(layer.cycles for layer in layers)
        notes.append(
            f"{weight_bits}-bit x {act_bits}-bit operands of {names} run in {passes} passes on "
            f"this {p.weight_bits}-bit x {p.act_bits}-bit array ({_share(cycles, t.cycles)} of "
            "the cycles)"
        )
    stalls = sum(layer.stall_cycles for layer in result.layers)
    if t.cycles and stalls / t.cycles >= STALL_NOTE_FRACTION:
        notes.append(f"DRAM stalls are {_share(stalls, t.cycles)} of the cycles: the run is "
                     "partly bandwidth-bound (dram.bandwidth_gbps, SRAM sizes)")
    vector = sum(layer.cycles for layer in result.layers if layer.op == "vector")
    if t.cycles and vector / t.cycles >= VECTOR_NOTE_FRACTION:
        notes.append(f"vector-unit ops (softmax, LayerNorm, GELU, adds, requantization) take "
                     f"{_share(vector, t.cycles)} of the cycles (vector_unit.lanes)")
    return notes


def format_highlights(result: SimResult, hw: HwConfig, top: int = TOP_GROUPS) -> str:
    """The costliest layer groups by cycles and by energy, and the notes; empty when the
    result has no layers (infeasible)."""
    if not result.layers:
        return ""
    parts = [format_top_groups(result, "cycles", top), format_top_groups(result, "energy_uj", top)]
    notes = summary_notes(result, hw)
    if notes:
        parts.append("notes\n" + "\n".join(
            textwrap.fill(note, NOTE_WIDTH, initial_indent="  - ", subsequent_indent="    ")
            for note in notes))
    return "\n\n".join(parts)
