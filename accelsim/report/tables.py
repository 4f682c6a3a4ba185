"""SimResult -> tidy DataFrame, JSON dict, CSV, and the text table people read first.

One row per layer with unit-suffixed columns (``cycles``, ``dram_bytes``, ``energy_*_uj``);
the JSON keeps ``SimResult.to_dict``'s field names, which scripts rely on. Files are written
atomically (temp file + rename) so an error never leaves half a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from accelsim.files import write_text_atomic
from accelsim.sim.simulate import LayerResult, SimResult

if TYPE_CHECKING:
    import pandas as pd

ENERGY_PARTS: tuple[str, ...] = ("mac", "sram", "dram", "vector", "leakage", "total")
DRAM_TENSORS: tuple[str, ...] = ("weights", "inputs", "outputs", "spills")
LAYER_COLUMNS: tuple[str, ...] = (
    "model", "hw", "layer", "op", "m", "k", "n", "count", "weight_bits", "act_bits", "sparsity",
    "compute_cycles", "stall_cycles", "sram_stall_cycles", "cycles", "macs", "utilization",
    "dram_bytes",
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


def result_json(result: SimResult) -> dict:
    return result.to_dict()


def write_json(result: SimResult, path: str | Path) -> None:
    write_text_atomic(path, json.dumps(result_json(result), indent=2) + "\n")


def write_csv(result: SimResult, path: str | Path) -> None:
    write_text_atomic(path, layers_frame(result).to_csv(index=False))


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def _layer_cells(layer: LayerResult) -> tuple[str, ...]:
    repeat = f" x{layer.count}" if layer.count > 1 else ""
    if layer.op == "vector":
        # A vector layer has no array shape or operand bits; it runs on the vector unit.
        shape, bits, utilization = f"{layer.m * layer.count:,} elements", "-", "-"
    else:
        shape = f"{layer.m}x{layer.k}x{layer.n}{repeat}"
        bits = f"w{layer.weight_bits}a{layer.act_bits}" + (" 2:4" if layer.skipping else "")
        utilization = f"{layer.utilization:.1%}"
    return (layer.name, layer.op, shape, bits, f"{layer.compute_cycles:,}",
            f"{layer.stall_cycles:,}", utilization, _si(layer.dram_bytes, "B"),
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


def format_totals(result: SimResult) -> str:
    """The headline numbers, most wanted first."""
    t = result.totals
    if not result.feasible:
        return (f"{result.model} on {result.hw_name}: INFEASIBLE: {result.reason}\n"
                f"  area        {t.area_mm2:.3f} mm2")
    return "\n".join((
        f"{result.model} on {result.hw_name}",
        f"  latency     {t.latency_ms:.4f} ms ({t.cycles:,} cycles)",
        f"  energy      {t.energy_uj:.3f} uJ",
        f"  throughput  {t.tops:.3f} TOPS (dense-equivalent)",
        f"  efficiency  {t.tops_per_w:.3f} TOPS/W",
        f"  utilization {t.utilization:.1%}",
        f"  DRAM        {_si(t.dram_bytes, 'B')}",
        f"  area        {t.area_mm2:.3f} mm2",
    ))
