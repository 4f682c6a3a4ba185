"""Roofline of one run's JSON: GEMM layers under the array's compute and DRAM roofs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from accelsim.errors import AccelsimError
from accelsim.report.plots.common import (
    hw_name,
    layer_role,
    place_labels,
    plain_log_axis,
    pyplot,
    run_layers,
    save_figure,
)


@dataclass(frozen=True)
class RooflineInfo:
    names: tuple[str, ...]
    intensity_ops_per_byte: np.ndarray
    achieved_tops: np.ndarray
    sparse: np.ndarray
    peak_tops: float
    sparse_peak_tops: float | None
    bandwidth_gbps: float
    title: str
    skipped: int


def roofline_info(run: Mapping[str, Any], hw: Mapping[str, Any] | None = None) -> RooflineInfo:
    """GEMM layers as (ops per DRAM byte, achieved TOPS) under the array's compute and DRAM roofs.

    ``hw`` is the run's hardware config as a dict (``hw_to_dict``); by default the one the run
    JSON records (``hw.config``). One MAC is 2 ops. Layers that move no DRAM bytes (everything
    on chip) have no finite intensity and are counted in ``skipped``.
    """
    recorded = run.get("hw")
    if hw is None and isinstance(recorded, Mapping):
        hw = recorded.get("config")
    try:
        rows, cols = hw["array"]["rows"], hw["array"]["cols"]
        clock_mhz = float(hw["array"]["clock_mhz"])
        bandwidth = float(hw["dram"]["bandwidth_gbps"])
        sparse_support = hw["sparsity"]["support"] == "2:4"
    except (KeyError, TypeError):
        raise AccelsimError(
            "roofline: needs the run's hardware config (array.rows/cols/clock_mhz, "
            "dram.bandwidth_gbps, sparsity.support); give it with --hw PATH [--set KEY=VALUE]"
        ) from None
    # The host's GEMMs (on_host, float32 off the chip) are under no roof of this chip.
    gemms = [layer for layer in run_layers(run)
             if layer.get("op") == "gemm" and not layer.get("on_host", False)]
    ops = np.array([2.0 * float(g["macs"]) for g in gemms])
    dram = np.array([float(g["dram_bytes"]) for g in gemms])
    seconds = np.array([float(g["cycles"]) for g in gemms]) / (clock_mhz * 1e6)
    ok = (dram > 0) & (seconds > 0) & (ops > 0)
    peak = 2 * rows * cols * clock_mhz * 1e6 / 1e12
    return RooflineInfo(
        names=tuple(str(g["name"]) for g, keep in zip(gemms, ok, strict=True) if keep),
        intensity_ops_per_byte=ops[ok] / dram[ok],
        achieved_tops=ops[ok] / seconds[ok] / 1e12,
        sparse=np.array([g.get("sparsity") == "2:4" for g in gemms], bool)[ok],
        peak_tops=peak,
        sparse_peak_tops=2 * peak if sparse_support else None,
        bandwidth_gbps=bandwidth,
        title=f"{run.get('model', '')} on {hw.get('name', hw_name(run))}: roofline",
        skipped=int((~ok).sum()),
    )


def point_labels(info: RooflineInfo) -> list[tuple[float, float, str]]:
    """One label per distinct point: the layer role (block indices dropped, its last two path
    parts) of the layers there, with how many layers share the point (``fc1 x12``)."""
    groups: dict[tuple[float, float], list[str]] = {}
    for x, y, name in zip(info.intensity_ops_per_byte, info.achieved_tops, info.names,
                          strict=True):
        groups.setdefault((round(float(x), 9), round(float(y), 9)), []).append(name)
    labels = []
    for (x, y), names in groups.items():
        roles = list(dict.fromkeys(_short_role(name) for name in names))
        text = roles[0] + (f" +{len(roles) - 1} more" if len(roles) > 1 else "")
        labels.append((x, y, text + (f" x{len(names)}" if len(names) > 1 else "")))
    return labels


def _short_role(name: str) -> str:
    parts = [part for part in layer_role(name).replace("/", ".").split(".") if part != "*"]
    return ".".join(parts[-2:])


def render_roofline(info: RooflineInfo, path: str | Path) -> Path:
    return save_figure(roofline_figure(info), path, pyplot())


def roofline_figure(info: RooflineInfo) -> Any:
    """The figure: roofs, the GEMM points labelled by layer role, the legend beside the axes."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    # Span the layers and the ridge points (where bandwidth stops limiting), with some margin.
    ridge = info.peak_tops * 1e3 / info.bandwidth_gbps
    ridges = [ridge] if info.sparse_peak_tops is None else [ridge, 2 * ridge]
    span = [*info.intensity_ops_per_byte, *ridges]
    low, high = min(span) / 4, max(span) * 4
    grid = np.geomspace(low, high, 200)
    memory_tops = info.bandwidth_gbps * grid / 1e3
    ax.plot(grid, np.minimum(memory_tops, info.peak_tops), color="black",
            label=f"roof: {info.peak_tops:.3g} TOPS dense, {info.bandwidth_gbps:g} GB/s DRAM")
    if info.sparse_peak_tops is not None:
        ax.plot(grid, np.minimum(memory_tops, info.sparse_peak_tops), color="gray",
                linestyle="--", label=f"2:4 effective roof: {info.sparse_peak_tops:.3g} TOPS")
    for sparse, colour, name in ((False, "tab:blue", "dense GEMM"), (True, "tab:orange",
                                                                       "2:4 GEMM")):
        pick = info.sparse == sparse
        if pick.any():
            ax.scatter(info.intensity_ops_per_byte[pick], info.achieved_tops[pick], s=14,
                       color=colour, alpha=0.7, label=f"{name} layers", zorder=3)
    plain_log_axis(ax, "x")
    plain_log_axis(ax, "y")
    ax.set_xlabel("operational intensity (ops / DRAM byte)")
    ax.set_ylabel("achieved performance (TOPS)")
    title = info.title
    if info.skipped:
        title += f"\n({info.skipped} GEMM layers with no DRAM traffic not shown)"
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    labels = point_labels(info)
    place_labels(ax, [x for x, _, _ in labels], [y for _, y, _ in labels],
                 [text for _, _, text in labels], fontsize=6.5, color="dimgray")
    return fig
