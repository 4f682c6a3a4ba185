import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from accelsim.dse.pareto import pareto_front, pareto_mask, parse_objectives
from accelsim.errors import AccelsimError


def brute_force(values: np.ndarray, senses: list[str], eligible: np.ndarray) -> np.ndarray:
    costs = values * np.array([1 if s == "min" else -1 for s in senses])
    ok = eligible & ~np.isnan(costs).any(axis=1)
    mask = np.zeros(len(values), dtype=bool)
    for i in range(len(values)):
        if not ok[i]:
            continue
        mask[i] = not any(
            ok[j] and np.all(costs[j] <= costs[i]) and np.any(costs[j] < costs[i])
            for j in range(len(values))
        )
    return mask


@st.composite
def problems(draw):
    n = draw(st.integers(0, 40))
    d = draw(st.integers(1, 4))
    # Few distinct values so ties and duplicates are common.
    elements = st.one_of(st.integers(0, 5).map(float), st.just(np.nan))
    values = draw(arrays(np.float64, (n, d), elements=elements))
    senses = draw(st.lists(st.sampled_from(["min", "max"]), min_size=d, max_size=d))
    eligible = draw(arrays(np.bool_, (n,)))
    return values, senses, eligible


@settings(max_examples=200, deadline=None)
@given(problems())
def test_pareto_mask_matches_brute_force(problem):
    values, senses, eligible = problem
    expected = brute_force(values, senses, eligible)
    assert np.array_equal(pareto_mask(values, senses, eligible), expected)


def test_pareto_front_on_a_frame_with_senses():
    frame = pd.DataFrame({
        "latency_ms": [1.0, 2.0, 3.0, 1.5, 1.0],
        "accuracy_pct": [70.0, 80.0, 90.0, 75.0, 60.0],
    })
    front = pareto_front(frame, parse_objectives(["latency_ms", "accuracy_pct"]))
    assert front.tolist() == [True, True, True, True, False]
    only_fast = pareto_front(frame, {"latency_ms": "min", "accuracy_pct": "min"})
    assert only_fast.tolist() == [False, False, False, False, True]
    eligible = pd.Series([True, True, False, True, True])
    assert pareto_front(frame, parse_objectives(["latency_ms", "accuracy_pct"]),
                        eligible).tolist() == [True, True, False, True, False]


def test_bad_objectives_are_one_line():
    with pytest.raises(AccelsimError, match="give a sense as NAME:min or NAME:max"):
        parse_objectives(["widgets"])
    with pytest.raises(AccelsimError, match="no column 'widgets'"):
        pareto_front(pd.DataFrame({"a": [1.0]}), {"widgets": "min"})
    with pytest.raises(AccelsimError, match="sense 'low' is not one of min, max"):
        pareto_mask(np.zeros((2, 1)), ["low"])
