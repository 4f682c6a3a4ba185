"""Co-design cost cache and ILP: cached totals equal a fresh simulate, exactly, and the ILP's
answers are feasible under the accuracy budget and latency bound."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from accelsim.codesign.accuracy import FACTORS, Sensitivity
from accelsim.codesign.cost import CostCache
from accelsim.codesign.groups import REFERENCE, Format, find_groups, templates
from accelsim.codesign.run import ALL_FORMATS
from accelsim.codesign.search import search_point, solve
from accelsim.hw import load_hw, with_overrides
from accelsim.sim.simulate import simulate

HW = Path(__file__).resolve().parents[1] / "hw_configs" / "int4_sparse.yaml"
# Buffers small enough that activations spill and attention runs head by head: the memory
# plan's coupling between neighbours is then live, which is what the cache key must capture.
SPILLING = {"array.rows": 8, "array.cols": 8, "sram.inputs.size_kib": 2,
            "sram.outputs.size_kib": 2, "sram.weights.size_kib": 2}
HW_POINTS = [
    {},
    SPILLING,
    {**SPILLING, "array.dataflow": "ws", "sparsity.support": "none"},
    {"array.rows": 16, "array.cols": 16, "precision.weight_bits": 8, "precision.act_bits": 8,
     "precision.accumulator_bits": 32},
]


@pytest.fixture(scope="module")
def tiny_templates():
    return templates("bert_tiny", {"seq_len": 48})


@pytest.mark.parametrize("overrides", HW_POINTS)
def test_cached_costs_equal_a_fresh_simulate(tiny_templates, overrides):
    hw = with_overrides(load_hw(HW), overrides)
    groups = find_groups(tiny_templates.base, "block_site")
    cache = CostCache(tiny_templates, groups, hw)
    rng = random.Random(0)
    spills = 0
    for _ in range(25):
        assignment = [rng.choice(ALL_FORMATS) for _ in groups.names]
        cost = cache.evaluate(assignment)
        fresh = simulate(cache.graph(assignment), hw)
        assert cost.feasible == fresh.feasible
        assert (cost.cycles, cost.energy_uj, cost.latency_ms, cost.area_mm2) == (
            fresh.totals.cycles, fresh.totals.energy_uj, fresh.totals.latency_ms,
            fresh.totals.area_mm2)
        spills += sum(layer.dram.spills for layer in fresh.layers)
    if overrides.get("sram.outputs.size_kib") == 2:
        assert spills > 0  # the coupled case is really exercised


def test_assignment_graph_carries_the_formats_and_measured_densities(tiny_templates):
    groups = find_groups(tiny_templates.base, "site")
    assert groups.names == ("qkv", "attn_out", "ffn_up", "ffn_down")
    assignment = [Format(4, 8, True), REFERENCE, Format(8, 4, False), Format(4, 4, True)]
    graph = tiny_templates.graph(groups, assignment)
    for fmt, members in zip(assignment, groups.members, strict=True):
        for i in members:
            node = graph.nodes[i]
            assert (node.weight_bits, node.act_bits, node.sparsity) == (
                fmt.weight_bits, fmt.act_bits, fmt.sparsity)
            assert node.weight_density <= (0.5 if fmt.sparse else 1.0)
    # attention matmuls are not searched: they keep the template's widths
    matmuls = [n for n in graph.gemms if n.weight_is_activation]
    assert matmuls and all(n.weight_bits == 8 for n in matmuls)


def test_solve_finds_the_knapsack_optimum_and_cuts_give_the_next_one():
    energy = np.array([[0.0, -3.0, -6.0], [0.0, -2.0, np.inf]])
    loss = np.array([[0.0, 1.0, 3.0], [0.0, 0.5, 0.0]])
    assert solve(energy, loss, 3.0, None, None) == (2, 0)  # -6 at loss 3 (-8 needs 3.5)
    assert solve(energy, loss, 1.5, None, None) == (1, 1)  # -5 at loss 1.5
    assert solve(energy, loss, 1.5, None, None, cuts=[(1, 1)]) == (1, 0)
    assert solve(energy, loss, -1.0, None, None) is None


def _sensitivity(groups: tuple[str, ...], sensitive: str) -> Sensitivity:
    drop = np.full((len(groups), len(FACTORS)), 0.1)
    drop[groups.index(sensitive)] = 5.0
    return Sensitivity(groups, 90.0, 89.8, drop, drop / 100, 100)


def test_ilp_keeps_the_sensitive_group_wide_within_the_budget(tiny_templates):
    hw = load_hw(HW)
    groups = find_groups(tiny_templates.base, "block_site")
    cache = CostCache(tiny_templates, groups, hw)
    sens = _sensitivity(groups.names, "block0.qkv")
    found = search_point(cache, ALL_FORMATS, sens, 1.0, None, 3)
    assert found
    for solution in found:
        assert sens.fp32_pct - solution.predicted_pct <= 1.0 + 1e-9
        fresh = simulate(cache.graph(solution.assignment), hw).totals
        assert solution.cost.energy_uj == fresh.energy_uj
    best = dict(zip(groups.names, found[0].assignment, strict=True))
    assert best["block0.qkv"] == REFERENCE
    assert sum(f != REFERENCE for f in best.values()) >= 3  # the rest is lowered
    assert [s.cost.energy_uj for s in found] == sorted(s.cost.energy_uj for s in found)
    # a loose budget lowers the sensitive group too, and saves energy
    loose = search_point(cache, ALL_FORMATS, sens, 50.0, None, 1)
    assert loose[0].cost.energy_uj < found[0].cost.energy_uj
    assert dict(zip(groups.names, loose[0].assignment, strict=True))["block0.qkv"] != REFERENCE
    # a latency bound below any assignment's latency leaves nothing
    assert search_point(cache, ALL_FORMATS, sens, 50.0, 1e-6, 2) == []


@pytest.mark.parametrize("recipe", ["w8a8", "w4a4_sp24", "w4a4_sp24_wanda_ln_a8"])
def test_a_uniform_recipe_as_an_assignment_costs_what_its_own_trace_costs(tiny_templates,
                                                                          recipe):
    from accelsim.codesign.run import recipe_assignment
    from accelsim.graph.workload import workload_graph

    hw = load_hw(HW)
    groups = find_groups(tiny_templates.base, "block_site")
    assignment = recipe_assignment(recipe, groups)
    assert assignment is not None
    own = simulate(workload_graph("bert_tiny", recipe=recipe, seq_len=48), hw).totals
    cost = CostCache(tiny_templates, groups, hw).evaluate(assignment)
    if recipe == "w4a4_sp24_wanda_ln_a8":
        # Wanda keeps other weights than magnitude masks: same widths, other measured densities
        assert cost.cycles == own.cycles
        assert cost.energy_uj == pytest.approx(own.energy_uj, rel=1e-3)
    else:
        assert (cost.cycles, cost.energy_uj) == (own.cycles, own.energy_uj)
    # per-site activation widths have no per-block grouping to express them
    assert recipe_assignment("w4a4_sp24_ln_a8", find_groups(tiny_templates.base, "block")) \
        is None
