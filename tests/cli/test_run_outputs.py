"""A run records its design point, and its outputs are checked before any work and written
together or not at all (``run``, ``sweep`` and ``plot``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from accelsim import files
from accelsim.cli import main
from accelsim.errors import AccelsimError

CONFIGS = Path(__file__).resolve().parents[2] / "hw_configs"
HW = str(CONFIGS / "int4_sparse.yaml")
OVERRIDES = ("--set", "array.rows=32", "--set", "array.dataflow=ws")


@pytest.fixture(scope="module")
def run_json(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("design_point") / "run.json"
    assert main(["run", "--hw", HW, "--model", "vit_tiny", *OVERRIDES, "--json", str(out)]) == 0
    return out


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_json_records_the_overrides_and_the_resolved_config(run_json):
    hw = json.loads(run_json.read_text())["hw"]
    assert hw["name"] == "int4_sparse"
    assert hw["overrides"] == {"array.rows": 32, "array.dataflow": "ws"}
    assert hw["config"]["array"]["rows"] == 32 and hw["config"]["array"]["dataflow"] == "ws"
    assert hw["config"]["array"]["cols"] == 64  # untouched fields are the YAML's


def test_json_splits_the_area_by_block(run_json):
    data = json.loads(run_json.read_text())
    blocks = data["area_breakdown_mm2"]
    assert set(blocks) == {"array", "sram", "vector"} and all(v > 0 for v in blocks.values())
    assert sum(blocks.values()) == pytest.approx(data["totals"]["area_mm2"], rel=1e-12)


def test_text_names_the_overrides(tmp_path, capsys):
    topology = tmp_path / "one.csv"
    topology.write_text("Layer, M, N, K,\nfc, 64, 64, 64,\n")
    assert main(["run", "--hw", HW, "--model", str(topology), *OVERRIDES]) == 0
    assert "one on int4_sparse with array.rows=32, array.dataflow=ws" in capsys.readouterr().out


def test_roofline_takes_the_hardware_from_the_run_json(run_json):
    out = run_json.with_name("roof.png")
    assert main(["plot", "roofline", str(run_json), "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    agreeing = run_json.with_name("agree.png")
    assert main(["plot", "roofline", str(run_json), "--hw", HW, *OVERRIDES,
                 "--out", str(agreeing)]) == 0


def test_roofline_rejects_a_hw_that_disagrees_with_the_run(run_json, capsys):
    out = run_json.with_name("never.png")
    assert main(["plot", "roofline", str(run_json), "--hw", HW, "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert f"--hw {HW}: the run used other hardware (array.rows is 32 in {run_json}, 64 here)" \
        in err
    assert not out.exists()
    assert main(["plot", "roofline", str(run_json), "--set", "array.rows=32"]) == 2
    assert "--set: needs --hw" in one_line_error(capsys)


def test_bad_csv_path_fails_before_any_work_and_writes_no_json(tmp_path, capsys, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the workload was built before the outputs were checked")

    monkeypatch.setattr("accelsim.cli.run.load_workload", no_work)
    good, bad = tmp_path / "run.json", tmp_path / "missing" / "layers.csv"
    code = main(["run", "--hw", HW, "--model", "vit_tiny", "--json", str(good),
                 "--csv", str(bad)])
    assert code == 2
    assert f"--csv {bad}: folder {bad.parent} does not exist" in one_line_error(capsys)
    assert not good.exists() and list(tmp_path.iterdir()) == []


def test_an_output_that_is_a_folder_is_rejected(tmp_path, capsys):
    assert main(["run", "--hw", HW, "--model", "vit_tiny", "--json", str(tmp_path)]) == 2
    assert f"--json {tmp_path}: is a folder; give a file path" in one_line_error(capsys)


def test_outputs_land_together_or_not_at_all(tmp_path, monkeypatch):
    first, second = tmp_path / "a.json", tmp_path / "b.csv"
    real_write = Path.write_text

    def failing_second(self: Path, text: str) -> int:
        if self.suffix == ".csv":
            raise OSError(28, "No space left on device")
        return real_write(self, text)

    monkeypatch.setattr(Path, "write_text", failing_second)
    with pytest.raises(AccelsimError, match="cannot write \\(No space left on device\\)"):
        files.write_texts_atomic({first: "{}", second: "x"})
    assert list(tmp_path.iterdir()) == []  # neither target, no temp file


@pytest.mark.parametrize(("argv", "fragment"), [
    (["sweep", "NOSWEEP", "--csv", "MISSING/r.csv"], "--csv MISSING/r.csv: folder MISSING does"),
    (["sweep", "NOSWEEP", "--parquet", "r.csv"], "--parquet r.csv: the file name must end in"),
    (["sweep", "NOSWEEP", "--workers", "0"], "--workers 0: must be an integer >= 1"),
    (["plot", "breakdown", "NORUN", "--out", "MISSING/b.png"], "--out MISSING/b.png: folder"),
    (["plot", "pareto", "NOSTORE", "--out", "MISSING/p.png"], "--out MISSING/p.png: folder"),
    (["verify", "--model", "no_such_model", "--recipe", "w4a4", "--json", "MISSING/v.json"],
     "--json MISSING/v.json: folder"),
])
def test_sweep_plot_verify_outputs_are_checked_before_their_inputs_are_read(
        tmp_path, capsys, argv, fragment):
    # The inputs do not exist either: the output error coming first shows the order.
    names = {"NOSWEEP": "none.yaml", "NORUN": "none.json", "NOSTORE": "none.sqlite"}
    assert main([str(tmp_path / names[a]) if a in names else
                 a.replace("MISSING", str(tmp_path / "missing")) for a in argv]) == 2
    assert fragment.replace("MISSING", str(tmp_path / "missing")) in one_line_error(capsys)


def test_two_outputs_on_one_path_are_rejected(tmp_path, capsys):
    same = tmp_path / "out.txt"
    assert main(["run", "--hw", HW, "--model", "vit_tiny", "--json", str(same),
                 "--csv", str(same)]) == 2
    assert f"--csv {same}: the same file as --json" in one_line_error(capsys)


def test_trace_writes_csv_and_json_together(tmp_path, capsys):
    out_csv, out_json = tmp_path / "g.csv", tmp_path / "g.json"
    assert main(["trace", "--model", "vit_tiny", "--csv", str(out_csv), "--json",
                 str(out_json)]) == 0
    assert out_csv.read_text().startswith("Layer, M, N, K,")
    assert json.loads(out_json.read_text())["name"] == "vit_tiny"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.csv", "g.json"]  # no temp left
    capsys.readouterr()
    bad = tmp_path / "missing" / "g.csv"
    assert main(["trace", "--model", "vit_tiny", "--json", str(tmp_path / "h.json"),
                 "--csv", str(bad)]) == 2
    assert f"--csv {bad}: folder" in one_line_error(capsys)
    assert not (tmp_path / "h.json").exists()


def test_sweep_store_that_is_a_folder_is_rejected(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "none.yaml"), "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path}: is a folder" in one_line_error(capsys)
