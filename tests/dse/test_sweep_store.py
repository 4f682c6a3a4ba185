import sqlite3

import pandas as pd
import pytest

from accelsim.dse.space import Constraint, Recipe
from accelsim.dse.store import (
    ResultStore,
    constraint_mask,
    export_results,
    load_results,
    point_key,
)
from accelsim.errors import AccelsimError

HW = {"array.rows": 16, "dram.bandwidth_gbps": 34.0}


def row(key, rows, latency, feasible=True):
    return {
        "key": key, "sweep": "s", "model": "m", "input_shape": "{}", "recipe": "w8a8",
        "variant": "", "overrides": f'{{"array.rows": {rows}}}', "accelsim_version": "0",
        "feasible": feasible, "reason": "" if feasible else "too big", "latency_ms": latency,
    }


def test_point_key_depends_on_every_identity_part():
    recipe = Recipe("w8a8", 8, 8)

    def key(hw=HW, model="m", shape=None, recipe=recipe, version="1", source="s", graph="g"):
        return point_key(hw, model, shape or {"seq_len": 8}, recipe, version, source=source,
                         graph=graph)

    base = key()
    assert base == key(hw=dict(reversed(HW.items())))
    changed = [
        key(hw={**HW, "array.rows": 32}),
        key(model="m2"),
        key(shape={"seq_len": 16}),
        key(recipe=Recipe("w8a8", 8, 8, "2:4")),
        key(version="2"),
        key(source="edited"),
        key(graph="retraced"),
    ]
    assert len({base, *changed}) == 8


def test_store_adds_metric_columns_and_replaces_rows(tmp_path):
    path = tmp_path / "s.sqlite"
    with ResultStore(path) as store:
        store.write([row("a", 16, 1.0), row("b", 32, 2.0, feasible=False)])
        store.write([{**row("c", 64, 0.5), "energy_uj": 3.0}])
        store.write([row("a", 16, 1.5)])
        store.set_meta("constraints", [["latency_ms", "<=", 1.2]])
        store.set_accuracy([("m", "w8a8", 90.0)])
        assert store.finished_keys() == {"a", "b", "c"}
    frame = load_results(path)
    assert frame["key"].tolist() == ["b", "c", "a"]  # insertion order; a was replaced last
    frame = frame.sort_values("key").reset_index(drop=True)
    assert frame["latency_ms"].tolist() == [1.5, 2.0, 0.5]
    assert frame["energy_uj"].isna().tolist() == [True, True, False]
    assert frame["hw_array_rows"].tolist() == [16, 32, 64]
    assert frame["feasible"].tolist() == [True, False, True]
    assert frame["accuracy_pct"].tolist() == [90.0] * 3
    assert frame["meets_constraints"].tolist() == [False, False, True]


def test_a_point_recomputed_under_a_new_key_replaces_its_row(tmp_path):
    path = tmp_path / "s.sqlite"
    with ResultStore(path) as store:
        store.write([row("old16", 16, 1.0), row("old32", 32, 2.0)])
        store.write([row("new16", 16, 1.5)])
        assert store.finished_keys() == {"old32", "new16"}
    frame = load_results(path)
    assert frame["key"].tolist() == ["old32", "new16"]
    assert frame["latency_ms"].tolist() == [2.0, 1.5]


def test_constraint_mask_fails_nan_metrics():
    frame = pd.DataFrame({"feasible": [True, True, True], "accuracy_pct": [80.0, None, 70.0],
                          "hw_array_rows": [16, 32, 64]})
    mask = constraint_mask(frame, [Constraint("accuracy_pct", ">=", 75),
                                   Constraint("array.rows", "<", 64)])
    assert mask.tolist() == [True, False, False]
    with pytest.raises(AccelsimError, match="no column 'hw_array_cols'"):
        constraint_mask(frame, [Constraint("array.cols", "<", 64)])


def test_bad_store_paths_are_one_line(tmp_path):
    with pytest.raises(AccelsimError, match="results file not found"):
        load_results(tmp_path / "missing.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database" * 100)
    with pytest.raises(AccelsimError, match="not an accelsim results store"):
        load_results(junk)
    with pytest.raises(AccelsimError, match="not an accelsim results store"):
        ResultStore(junk)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(AccelsimError, match="not an accelsim results store"):
        load_results(other)
    with pytest.raises(AccelsimError, match="export format '.xlsx'"):
        export_results(pd.DataFrame({"a": [1]}), tmp_path / "r.xlsx")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("layers.csv", b"layer,cycles\nfc1,10\n",  # a run's per-layer table, not a sweep's
     "not exported sweep results (no column model, feasible;"),
    ("empty.csv", b"", "cannot read as csv (No columns to parse from file)"),
    ("binary.csv", b"\xff\xfe\x00", "cannot read as csv ('utf-8' codec can't decode"),
    ("text.parquet", b"a,b\n1,2\n", "cannot read as parquet ("),
])
def test_a_file_that_is_not_an_export_is_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AccelsimError) as raised:
        load_results(path)
    assert str(raised.value).startswith(f"{path}: {message}")
    assert "\n" not in str(raised.value)


def test_an_empty_store_loads_with_every_metric_column(tmp_path):
    with ResultStore(tmp_path / "e.sqlite") as store:
        store.set_meta("constraints", [["area_mm2", "<=", 1.0]])
    frame = load_results(tmp_path / "e.sqlite")
    assert frame.empty
    assert {"latency_ms", "area_mm2", "accuracy_pct", "meets_constraints"} <= set(frame)
