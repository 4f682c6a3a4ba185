"""The chip check of ``accelsim verify --hw``: the reference run on a hardware config's datapath,
against the float fake-quant model, the independent oracle and the simulator's graph.

:func:`check_chip` executes the integer model on :meth:`Datapath.of_hw` with every op recorded
and reports: how many accumulators left the accumulator's range, the SQNR of the datapath's
logits against the fake-quant model's (float32 vector unit), each vector op kind's error against
its float32 result, how many recorded ops the oracle (:mod:`accelsim.ref.oracle`) recomputes
differently, and whether the GEMM MACs and vector elements it executed equal what the simulator's
graph of the same model and inputs prices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from accelsim.compress.export import IntModel
from accelsim.graph.folds import chip_graph
from accelsim.graph.ir import GemmNode, Graph, VectorNode
from accelsim.ref import oracle
from accelsim.ref.datapath import Datapath
from accelsim.ref.execute import model_inputs, output_logits, run_int_model

# Rows of each recorded op the pure-Python oracle recomputes (GEMM rows, or rows along the last
# axis of a vector op): every op kind and every layer is checked, on a sample of its rows.
ORACLE_ROWS = 4
# The executed work compared with the graph: GEMMs by kind, and the vector ops the reference
# runs as the spec's kernels (others are float32 results rounded to the format).
COMPARED_VECTOR_OPS: tuple[str, ...] = ("layernorm", "softmax", "gelu", "add", "mul")


def sqnr_db_of_sums(signal: float, noise: float) -> float:
    """``10 log10(signal / noise)`` of a squared-sum pair: ``inf`` without noise, ``-inf`` for
    noise on an all-zero signal."""
    if noise == 0:
        return math.inf
    return -math.inf if signal == 0 else 10 * math.log10(signal / noise)


def sqnr_db(reference: torch.Tensor, ours: torch.Tensor) -> float:
    """``10 log10(sum ref^2 / sum (ours - ref)^2)`` in float64 (:func:`sqnr_db_of_sums`)."""
    ref = reference.double()
    return sqnr_db_of_sums(float((ref**2).sum()), float(((ours.double() - ref) ** 2).sum()))


@dataclass(frozen=True, kw_only=True)
class ChipChecks:
    """What every check of a chip's datapath reports: the accumulators and how many saturated,
    the SQNR of the logits against the fake-quant model, every recorded op recomputed by the
    oracle, and the work the reference executed (``executed``) against what the simulator's
    graph(s) price (``graph``). ``float_fallbacks``: elements of ops the ``int`` format computed
    in float for want of an integer kernel, by op name (empty in the float formats)."""

    datapath: Datapath
    accumulators: int
    accumulator_saturations: int
    logit_sqnr_db: float
    oracle_ops_checked: int
    oracle_elements_checked: int
    oracle_mismatches: int
    executed: dict[str, int]
    graph: dict[str, int]
    float_fallbacks: dict[str, int]

    @property
    def graph_matches(self) -> bool:
        return self.executed == self.graph


@dataclass(frozen=True, kw_only=True)
class ChipReport(ChipChecks):
    """An encoder's forward passes on a chip's datapath (:class:`ChipChecks`), with
    ``vector_error``: per vector op kind, ``sqnr_db`` and ``max_abs_err`` against float32 and
    the ``elements`` computed. ``executed``/``graph`` hold GEMM MACs (``linear``, ``matmul``) and
    vector elements per op kind, for all batches."""

    vector_error: dict[str, dict[str, float]]


def _graph_work(graph: Graph, batches: int) -> dict[str, int]:
    """GEMM MACs by kind and compared vector elements by op of ``graph`` (the chip's: no host
    GEMM), for ``batches`` batches."""
    work: dict[str, int] = {}
    for node in graph.nodes:
        if isinstance(node, GemmNode):
            key = f"macs_{node.kind}"
            work[key] = work.get(key, 0) + node.macs * batches
        elif isinstance(node, VectorNode) and node.vector_op in COMPARED_VECTOR_OPS:
            key = f"elements_{node.vector_op}"
            work[key] = work.get(key, 0) + node.total_elements * batches
    return work


def check_chip(model: nn.Module, int_model: IntModel, batches: Sequence[Any],
               datapath: Datapath) -> ChipReport:
    """Run, compare and trace (see the module docstring); ``model`` is the fake-quant model
    ``int_model`` was exported from, ``batches`` all of one input shape."""
    from accelsim.graph.intmodel import with_host_layers
    from accelsim.graph.trace import trace_module

    run = run_int_model(model, int_model, batches, datapath=datapath, record_ops=True)
    with torch.no_grad():
        float_logits = torch.cat([output_logits(model(**model_inputs(b))).float()
                                  for b in batches])
    counts = run.counts
    checks = [oracle.check_op(kind, output, inputs, max_rows=ORACLE_ROWS)
              for kind, output, inputs in counts.records or ()]
    vector_error = {
        op: {"sqnr_db": sqnr_db_of_sums(ref, err),
             "max_abs_err": worst, "elements": int(elements)}
        for op, (err, ref, worst, elements) in sorted(counts.float_error.items())}
    executed = {f"macs_{kind}": macs for kind, macs in counts.gemm_macs.items()}
    executed.update({f"elements_{op}": n for op, n in counts.vector_elements.items()
                     if op in COMPARED_VECTOR_OPS})
    # The graph the simulator prices: the integer model's float layers on the host, and what
    # the chip executes of the rest in the datapath's vector format.
    traced = with_host_layers(trace_module(model, dict(model_inputs(batches[0])), name="verify"),
                              int_model.float_layers)
    graph = chip_graph(traced, datapath.vector_format or "fp32")
    return ChipReport(
        datapath=datapath, accumulators=counts.accumulators,
        accumulator_saturations=counts.saturations,
        logit_sqnr_db=sqnr_db(float_logits, run.logits), vector_error=vector_error,
        oracle_ops_checked=len(checks), oracle_elements_checked=sum(c.elements for c in checks),
        oracle_mismatches=sum(c.mismatches for c in checks),
        executed=dict(sorted(executed.items())),
        graph=dict(sorted(_graph_work(graph, len(batches)).items())),
        float_fallbacks=dict(sorted(counts.float_fallbacks.items())))
