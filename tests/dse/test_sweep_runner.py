import ast
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from dse_fakes import INT8_HW, fake_evaluate, tiny_graph

from accelsim.dse.runner import run_sweep
from accelsim.dse.store import ResultStore, load_results
from accelsim.dse.sweepfile import load_sweep

SWEEP = f"""\
version: 1
name: toy
hw: {INT8_HW}
models: [toy, {{name: toy, seq_len: 12}}]
recipes: [w8a8, w4a4_sp24]
grid:
  array.rows: [16, 32, 64, 128]
  array.cols: [16, 64]
random:
  samples: 3
  seed: 0
  fields:
    dram.bandwidth_gbps: {{uniform: [10, 100]}}
constraints: ["area_mm2 <= 3"]
"""
TOTAL = 2 * 2 * 4 * 2 * 3


class Stop(Exception):
    pass


@pytest.fixture()
def spec(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(SWEEP)
    (tmp_path / "accuracy").mkdir()
    (tmp_path / "accuracy" / "results.csv").write_text(
        "model,recipe,accuracy_pct\ntoy,w8a8,91.5\n"
    )
    return load_sweep(path)


def run(spec, store, **kwargs):
    return run_sweep(spec, store, evaluate=fake_evaluate, graph_fn=tiny_graph, **kwargs)


def by_key(path) -> pd.DataFrame:
    frame = load_results(path).sort_values("key").reset_index(drop=True)
    return frame.drop(columns="torch_loaded")


@pytest.fixture()
def reference(spec, tmp_path):
    summary = run(spec, tmp_path / "ref.sqlite", workers=1, batch_size=7)
    assert (summary.total, summary.evaluated, summary.skipped) == (TOTAL, TOTAL, 0)
    return by_key(tmp_path / "ref.sqlite")


def test_results_frame_is_tidy(reference):
    frame = reference
    assert len(frame) == TOTAL and frame["key"].is_unique
    assert {"hw_array_rows", "hw_array_cols", "hw_dram_bandwidth_gbps"} <= set(frame)
    assert set(frame["recipe"]) == {"w8a8", "w4a4_sp24"}
    assert set(frame["input_shape"]) == {'{"batch": 1, "seq_len": 8}',
                                         '{"batch": 1, "seq_len": 12}'}
    w8 = frame[frame["recipe"] == "w8a8"]["accuracy_pct"]
    assert (w8 == 91.5).all() and frame[frame["recipe"] != "w8a8"]["accuracy_pct"].isna().all()
    infeasible = frame["hw_array_rows"] * frame["hw_array_cols"] > 4096
    assert (~frame["feasible"] == infeasible).all()
    expected = frame["feasible"] & (frame["area_mm2"] <= 3)
    assert (frame["meets_constraints"] == expected).all()
    sparse = frame[frame["recipe"] == "w4a4_sp24"]["energy_uj"].sum()
    assert sparse < frame[frame["recipe"] == "w8a8"]["energy_uj"].sum()


def test_interrupted_sweep_resumes_without_losing_or_redoing_points(spec, tmp_path, reference):
    store = tmp_path / "resumed.sqlite"
    seen = []

    def stop_after_three_batches(done, total):
        seen.append(done)
        if done == 21:
            raise Stop

    with pytest.raises(Stop):
        run(spec, store, workers=1, batch_size=7, progress=stop_after_three_batches)
    with ResultStore(store) as partial:
        assert len(partial.finished_keys()) == 21
    summary = run(spec, store, workers=1, batch_size=7)
    assert (summary.skipped, summary.evaluated) == (21, TOTAL - 21)
    pd.testing.assert_frame_equal(by_key(store), reference)
    again = run(spec, store, workers=1)
    assert (again.skipped, again.evaluated) == (TOTAL, 0)


def test_process_pool_matches_in_process(spec, tmp_path, reference):
    done = []
    run(spec, tmp_path / "pool.sqlite", workers=2, progress=lambda d, t: done.append((d, t)))
    assert done[-1] == (TOTAL, TOTAL) and len(done) > 1
    assert (load_results(tmp_path / "pool.sqlite")["torch_loaded"] == 0).all()
    pd.testing.assert_frame_equal(by_key(tmp_path / "pool.sqlite"), reference)


@pytest.mark.parametrize("processes", [False, True])
def test_dask_cluster_matches_local(spec, tmp_path, reference, processes):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=processes, host="127.0.0.1", protocol="tcp",
        dashboard_address=None,
    ) as cluster:
        run(spec, tmp_path / "dask.sqlite", scheduler=cluster.scheduler_address, batch_size=10)
    if processes:
        assert (load_results(tmp_path / "dask.sqlite")["torch_loaded"] == 0).all()
    pd.testing.assert_frame_equal(by_key(tmp_path / "dask.sqlite"), reference)


def test_unreachable_scheduler_is_one_line(spec, tmp_path, monkeypatch):
    import accelsim.dse.runner as runner
    from accelsim.errors import AccelsimError

    monkeypatch.setattr(runner, "DASK_CONNECT_TIMEOUT_S", 1)
    with pytest.raises(AccelsimError, match="tcp://127.0.0.1:9: cannot connect"):
        run(spec, tmp_path / "x.sqlite", scheduler="tcp://127.0.0.1:9")


def test_recipe_table_and_keys_change_with_version(spec, tmp_path, monkeypatch):
    import accelsim.dse.runner as runner

    run(spec, tmp_path / "v.sqlite", workers=1)
    monkeypatch.setattr(runner, "__version__", "9.9.9")
    summary = run(spec, tmp_path / "v.sqlite", workers=1)
    assert summary.evaluated == TOTAL
    frame = load_results(tmp_path / "v.sqlite")  # the new rows replaced the old version's
    assert len(frame) == TOTAL and set(frame["accelsim_version"]) == {"9.9.9"}


def test_points_are_recomputed_when_the_cost_model_or_the_graph_changes(
    spec, tmp_path, monkeypatch
):
    import accelsim.dse.runner as runner

    store = tmp_path / "c.sqlite"
    run(spec, store, workers=1)
    unchanged = run(spec, store, workers=1)
    assert (unchanged.skipped, unchanged.evaluated) == (TOTAL, 0)
    monkeypatch.setattr(runner, "cost_model_digest", lambda: "edited simulator")
    edited = run(spec, store, workers=1)
    assert (edited.skipped, edited.evaluated) == (0, TOTAL)
    assert len(load_results(store)) == TOTAL
    assert run(spec, store, workers=1).evaluated == 0

    def retraced(model, recipe):
        graph = tiny_graph(model, recipe)
        return replace(graph, nodes=graph.nodes[:-1])

    summary = run_sweep(spec, store, workers=1, evaluate=fake_evaluate, graph_fn=retraced)
    assert (summary.skipped, summary.evaluated) == (0, TOTAL)


def test_cost_model_digest_covers_every_module_the_simulator_imports():
    from accelsim.dse.runner import COST_MODEL_SOURCES
    from accelsim.files import PACKAGE_ROOT

    def module_file(name: str) -> Path | None:
        base = PACKAGE_ROOT.joinpath(*name.split(".")[1:])
        return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()),
                    None)

    covered = {
        path
        for entry in COST_MODEL_SOURCES
        for path in ((PACKAGE_ROOT / entry).rglob("*.py") if (PACKAGE_ROOT / entry).is_dir()
                     else [PACKAGE_ROOT / entry])
    }
    # runner.py is hashed for simulate_point; the graph building it calls is keyed by content.
    for source in covered - {PACKAGE_ROOT / "dse" / "runner.py"}:
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("accelsim"):
                names = [f"{node.module}.{alias.name}" for alias in node.names]
                imported = {module_file(n) or module_file(node.module) for n in names}
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if alias.name.startswith("accelsim")]
                imported = {module_file(name) for name in names}
            else:
                continue
            # errors.py only words messages, never a number.
            assert imported <= covered | {PACKAGE_ROOT / "errors.py"}, (source, imported)


def test_exports_roundtrip(reference, tmp_path):
    from accelsim.dse.store import export_results

    csv = load_results(export_results(reference, tmp_path / "r.csv"))
    parquet = load_results(export_results(reference, tmp_path / "r.parquet"))
    pd.testing.assert_frame_equal(parquet, reference)
    assert list(csv.columns) == list(reference.columns) and len(csv) == TOTAL


def test_accuracy_table_skips_unmeasured_rows_and_rejects_bad_numbers(tmp_path):
    from accelsim.dse.accuracy_table import read_accuracy_table
    from accelsim.errors import AccelsimError

    path = tmp_path / "results.csv"
    path.write_text("task,model,recipe,accuracy_pct\nt,m,w8a8,90.5\nt,m,w4a4,\n")
    assert read_accuracy_table(path) == [("m", "w8a8", 90.5)]
    seeds = "task,model,recipe,accuracy_pct,seed\nt,m,w8a8,90.5,0\nt,m,w8a8,89.5,1\nt,m,fp32,91,0\n"
    path.write_text(seeds)
    assert read_accuracy_table(path) == [("m", "w8a8", 90.0), ("m", "fp32", 91.0)]
    assert read_accuracy_table(tmp_path / "absent.csv") == []
    two_tasks = ("task,model,recipe,accuracy_pct\nwordnet_supersenses,minilm_l6,w4a4,80\n"
                 "fortunes,minilm_l6,w4a4,70\nfortunes,minilm_l6,w4a4,71\n")
    path.write_text(two_tasks)
    assert read_accuracy_table(path) == [("minilm_l6", "w4a4", 80.0)]  # the default task only
    path.write_text("task,model,recipe,accuracy_pct\na,m,w4a4,80\nb,m,w4a4,70\n")
    with pytest.raises(AccelsimError, match="model 'm' has rows for tasks a, b and none is its"):
        read_accuracy_table(path)
    path.write_text("model,recipe,accuracy_pct\nm,w8a8,high\n")
    with pytest.raises(AccelsimError, match="line 2: accuracy_pct 'high' is not a number"):
        read_accuracy_table(path)
    path.write_text("model,acc\nm,1\n")
    with pytest.raises(AccelsimError, match="need columns model, recipe, accuracy_pct"):
        read_accuracy_table(path)


def test_unknown_model_is_one_line_and_writes_nothing(spec, tmp_path):
    from accelsim.errors import AccelsimError

    def no_such_model(model, recipe):
        raise AccelsimError(f"model {model.name!r} is not in the zoo")

    message = r"toy.yaml: models: toy with recipe w8a8: model 'toy' is not in the zoo"
    with pytest.raises(AccelsimError, match=message):
        run_sweep(spec, tmp_path / "none.sqlite", evaluate=fake_evaluate, graph_fn=no_such_model)
    assert not (tmp_path / "none.sqlite").exists()


def test_each_workload_graph_is_announced_before_it_is_built(spec, tmp_path, caplog):
    caplog.set_level("INFO", logger="accelsim.dse.runner")
    run(spec, tmp_path / "announced.sqlite", workers=1)
    lines = [r.getMessage() for r in caplog.records if r.name == "accelsim.dse.runner"]
    # 2 model shapes x 2 recipes, each named once, counted from the first
    assert len(lines) == 4 and lines[0].startswith("toy: workload graph 1/4: toy, recipe ")
    assert lines[-1].startswith("toy: workload graph 4/4: ")
