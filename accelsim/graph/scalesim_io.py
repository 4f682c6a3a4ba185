"""SCALE-Sim GEMM topology CSV in and out.

Format (SCALE-Sim ``-i gemm``): a header, then one row per layer ``name, M, N, K[, N:M],`` where
A is M x K, B is K x N and the optional fifth column is the weight sparsity (``2:4``, or ``1:1``
for dense). SCALE-Sim's parser needs the trailing comma; this reader accepts rows with or
without it (it never drops a field). Bad rows raise one line naming the file, row and column.

Writing emits the same format, readable by SCALE-Sim and by :func:`read_topology_csv`. SCALE-Sim
has no repeat count, bit widths or vector ops: a GEMM with ``count > 1`` is written as ``count``
rows named ``<name>#<i>``, and vector nodes and bit widths are not written.
"""

from __future__ import annotations

import csv
from pathlib import Path

from accelsim.errors import AccelsimError
from accelsim.files import write_text_atomic
from accelsim.graph.ir import GemmNode, Graph

_DENSE_SPELLINGS = frozenset({"", "1:1", "dense"})
_COLUMNS = ("name", "M", "N", "K", "sparsity")


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


def read_topology_csv(path: str | Path) -> Graph:
    """Read a SCALE-Sim GEMM topology into a :class:`Graph` named after the file."""
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise AccelsimError(f"{path}: cannot read topology CSV ({exc.strerror})") from None
    nodes: list[GemmNode] = []
    seen: set[str] = set()
    first = True
    for number, raw in enumerate(rows, start=1):
        cells = _cells(raw)
        if not cells:
            continue
        if first:
            first = False
            if _is_header(cells):
                continue
        where = f"{path.name}: row {number}"
        if not 4 <= len(cells) <= 5:
            raise AccelsimError(f"{where}: expected columns {', '.join(_COLUMNS[:4])}"
                                f"[, sparsity], got {len(cells)} fields")
        name = cells[0]
        if not name:
            raise AccelsimError(f"{where}, column name: empty layer name")
        if name in seen:
            raise AccelsimError(f"{where}, column name: duplicate layer name {name!r}")
        m, n, k = (_dimension(cells[i], where, _COLUMNS[i]) for i in (1, 2, 3))
        sparsity = cells[4] if len(cells) == 5 else ""
        if sparsity not in _DENSE_SPELLINGS and sparsity != "2:4":
            raise AccelsimError(f"{where}, column sparsity: {sparsity!r} is not one of "
                                "2:4, 1:1, dense")
        try:
            nodes.append(GemmNode(name, m=m, k=k, n=n,
                                  sparsity="2:4" if sparsity == "2:4" else "dense",
                                  weight_density=0.5 if sparsity == "2:4" else 1.0))
        except AccelsimError as exc:
            raise AccelsimError(f"{where}: {exc}") from None
        seen.add(name)
    if not nodes:
        raise AccelsimError(f"{path.name}: no layers (expected rows 'name, M, N, K,')")
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
