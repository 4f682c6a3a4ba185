"""SCALE-Sim topology CSVs in (both of SCALE-Sim 3.0.0's formats) and out (the GEMM format).

Two formats, told apart by the header (a header naming ``IFMAP Height`` is the conv format), or,
without a header, by the first row's field count (4-5: GEMM, 8-9: conv):

* GEMM (SCALE-Sim ``-i gemm``): ``Layer, M, N, K[, N:M],`` per row, where A is M x K and B is
  K x N; the optional fifth column is the weight sparsity (``2:4``, or ``1:1`` for dense).
* Convolution (SCALE-Sim's default): ``Layer name, IFMAP Height, IFMAP Width, Filter Height,
  Filter Width, Channels, Num Filter, Strides[, N:M],``. Each layer becomes the GEMM SCALE-Sim
  3.0.0 runs for it (``topology_utils.topo_calc_hyperparams``): M = output pixels
  ``ceil((H - Fh + S) / S) * ceil((W - Fw + S) / S)`` (``(H - Fh) / S + 1`` rounded up: a
  partial last window still counts), K = ``Fh * Fw * Channels`` (the window), N = filters, with
  the one stride used along both axes. As in SCALE-Sim, a layer whose name contains ``DP`` is
  depth-wise: ``Channels`` single-channel layers named ``<name>Channel_<i>``; a filter larger
  than its input map is an error.

SCALE-Sim's parser needs each row's trailing comma; this reader accepts rows with or without it
(it never drops a field). Bad rows raise one line naming the file, row and column.

Writing emits the GEMM format, readable by SCALE-Sim and by :func:`read_topology_csv`. SCALE-Sim
has no repeat count, bit widths or vector ops: a GEMM with ``count > 1`` is written as ``count``
rows named ``<name>#<i>``, and vector nodes and bit widths are not written.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from accelsim.errors import AccelsimError
from accelsim.files import write_text_atomic
from accelsim.graph.ir import GemmNode, Graph

_DENSE_SPELLINGS = frozenset({"", "1:1", "dense"})
_COLUMNS = ("name", "M", "N", "K", "sparsity")
CONV_COLUMNS = ("Layer name", "IFMAP Height", "IFMAP Width", "Filter Height", "Filter Width",
                "Channels", "Num Filter", "Strides")
DEPTHWISE_MARK = "DP"  # SCALE-Sim's test for a depth-wise layer: the mark anywhere in the name


def _cells(raw: list[str]) -> list[str]:
    cells = [cell.strip() for cell in raw]
    if cells and cells[-1] == "":  # SCALE-Sim's mandatory trailing comma
        cells.pop()
    return cells


def _dimension(text: str, where: str, column: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise AccelsimError(f"{where}, column {column}: {text!r} is not an integer >= 1")
    return value


def _is_header(cells: list[str]) -> bool:
    return len(cells) > 1 and not cells[1].lstrip("+-").isdigit()


def conv_gemm_dims(ifmap_h: int, ifmap_w: int, filter_h: int, filter_w: int, channels: int,
                   filters: int, stride: int) -> tuple[int, int, int]:
    """(M, K, N) of a convolution as SCALE-Sim 3.0.0 lowers it (see the module docstring)."""
    ofmap_h = math.ceil((ifmap_h - filter_h + stride) / stride)
    ofmap_w = math.ceil((ifmap_w - filter_w + stride) / stride)
    return ofmap_h * ofmap_w, filter_h * filter_w * channels, filters


def _sparsity(text: str, where: str) -> str:
    if text not in _DENSE_SPELLINGS and text != "2:4":
        raise AccelsimError(f"{where}, column sparsity: {text!r} is not one of 2:4, 1:1, dense")
    return "2:4" if text == "2:4" else "dense"


def _gemm_row(cells: list[str], where: str) -> list[tuple[str, int, int, int, str]]:
    if not 4 <= len(cells) <= 5:
        raise AccelsimError(f"{where}: expected columns {', '.join(_COLUMNS[:4])}"
                            f"[, sparsity], got {len(cells)} fields")
    m, n, k = (_dimension(cells[i], where, _COLUMNS[i]) for i in (1, 2, 3))
    return [(cells[0], m, k, n, _sparsity(cells[4] if len(cells) == 5 else "", where))]


def _conv_row(cells: list[str], where: str) -> list[tuple[str, int, int, int, str]]:
    if not 8 <= len(cells) <= 9:
        raise AccelsimError(f"{where}: expected columns {', '.join(CONV_COLUMNS)}[, sparsity] "
                            f"(SCALE-Sim's conv format), got {len(cells)} fields")
    h, w, fh, fw, channels, filters, stride = (
        _dimension(cells[i], where, CONV_COLUMNS[i]) for i in range(1, 8))
    for size, window, axis in ((h, fh, "Height"), (w, fw, "Width")):
        if window > size:
            raise AccelsimError(f"{where}, column Filter {axis}: {window} is larger than IFMAP "
                                f"{axis} {size}")
    sparsity = _sparsity(cells[8] if len(cells) == 9 else "", where)
    name = cells[0]
    if DEPTHWISE_MARK in name:
        m, k, n = conv_gemm_dims(h, w, fh, fw, 1, filters, stride)
        return [(f"{name}Channel_{i}", m, k, n, sparsity) for i in range(channels)]
    m, k, n = conv_gemm_dims(h, w, fh, fw, channels, filters, stride)
    return [(name, m, k, n, sparsity)]


def _is_conv(header: list[str] | None, first_row: list[str]) -> bool:
    if header is not None and any("ifmap" in cell.lower() for cell in header):
        return True
    if header is not None and [c.upper() for c in header[1:4]] == ["M", "N", "K"]:
        return False
    return len(first_row) >= 8


def read_topology_csv(path: str | Path) -> Graph:
    """Read a SCALE-Sim topology (GEMM or conv format) into a :class:`Graph` named after the
    file; conv layers become their GEMMs (``kind="conv"``)."""
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            rows = [(number, _cells(raw)) for number, raw in enumerate(csv.reader(handle), 1)]
    except OSError as exc:
        raise AccelsimError(f"{path}: cannot read topology CSV ({exc.strerror})") from None
    rows = [(number, cells) for number, cells in rows if cells]
    header = rows[0][1] if rows and _is_header(rows[0][1]) else None
    body = rows[1:] if header is not None else rows
    if not body:
        raise AccelsimError(f"{path.name}: no layers (expected rows 'name, M, N, K,' or "
                            f"'{', '.join(CONV_COLUMNS)},')")
    conv = _is_conv(header, body[0][1])
    nodes: list[GemmNode] = []
    seen: set[str] = set()
    for number, cells in body:
        where = f"{path.name}: row {number}"
        if not cells[0]:
            raise AccelsimError(f"{where}, column name: empty layer name")
        for name, m, k, n, sparsity in (_conv_row if conv else _gemm_row)(cells, where):
            if name in seen:
                raise AccelsimError(f"{where}, column name: duplicate layer name {name!r}")
            try:
                nodes.append(GemmNode(name, m=m, k=k, n=n, sparsity=sparsity,
                                      weight_density=0.5 if sparsity == "2:4" else 1.0,
                                      kind="conv" if conv else "linear"))
            except AccelsimError as exc:
                raise AccelsimError(f"{where}: {exc}") from None
            seen.add(name)
    return Graph(name=path.stem, nodes=tuple(nodes), input_shape={})


def write_topology_csv(graph: Graph, path: str | Path) -> None:
    """Write the graph's GEMMs as a SCALE-Sim topology (atomically: temp file + rename)."""
    path = Path(path)
    sparse = any(node.sparsity == "2:4" for node in graph.gemms)
    lines = ["Layer, M, N, K," + (" Sparsity," if sparse else "")]
    for node in graph.gemms:
        if "," in node.name:
            raise AccelsimError(f"{path.name}: layer name {node.name!r} contains a comma, "
                                "which the CSV format cannot hold")
        names = [node.name] if node.count == 1 else [f"{node.name}#{i}"
                                                     for i in range(node.count)]
        tail = (" 2:4," if node.sparsity == "2:4" else " 1:1,") if sparse else ""
        lines.extend(f"{name}, {node.m}, {node.n}, {node.k},{tail}" for name in names)
    write_text_atomic(path, "\n".join(lines) + "\n")
