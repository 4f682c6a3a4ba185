"""Plots: Pareto fronts of sweep results, per-layer breakdowns and rooflines of a single run.

Each plot is two steps: ``*_info`` computes what to draw (validated, testable, no matplotlib) and
``render_*`` draws it to a PNG or SVG file chosen by suffix. One module per plot kind
(:mod:`.pareto`, :mod:`.breakdown`, :mod:`.roofline`); :mod:`.common` holds the axis labels with
units, the column lookup and the drawing and run-JSON helpers they share.
"""
