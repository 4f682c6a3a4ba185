"""Cycle-approximate systolic-array simulator: ``simulate(graph, hw) -> SimResult``."""

from accelsim.sim.simulate import LayerResult, SimResult, Totals, simulate

__all__ = ["LayerResult", "SimResult", "Totals", "simulate"]
