"""``accelsim run --recipe`` and ``--accuracy`` on tiny zoo models and topology CSVs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from accelsim.accuracy.evaluate import chip_datapath
from accelsim.cli import main
from accelsim.cli.run import choose_recipe, native_recipe
from accelsim.hw import load_hw, with_overrides

CONFIGS = Path(__file__).resolve().parents[2] / "hw_configs"
SPARSE_HW = str(CONFIGS / "int4_sparse.yaml")
MODEL = "bert_tiny"


def run_json(tmp_path: Path, *argv: str) -> dict:
    out = tmp_path / f"result{len(list(tmp_path.iterdir()))}.json"
    assert main(["run", *argv, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def gemm_layers(data: dict) -> list[dict]:
    return [layer for layer in data["layers"] if layer["op"] == "gemm"]


def is_encoder_linear(name: str) -> bool:
    # Linear GEMMs are named by module path; attention matmuls get "<module>/<node>".
    return name.startswith("encoder.layer.") and "/" not in name


@pytest.mark.parametrize(("config", "expected"), [
    ("int4_sparse", "w4a4_sp24"), ("int4_dense", "w4a4"), ("int8_dense", "w8a8"),
    ("tpu_v1", "w8a8"), ("fp16_dense", None),
])
def test_auto_recipe_matches_the_native_format(config, expected):
    choice = native_recipe(load_hw(CONFIGS / f"{config}.yaml"))
    assert choice.recipe == expected
    assert choice.reason.startswith("auto: ")


def test_auto_recipe_on_int8_hardware_with_2_4_support_is_w8a8_sp24():
    hw = with_overrides(load_hw(CONFIGS / "int8_dense.yaml"), {"sparsity.support": "2:4"})
    assert native_recipe(hw).recipe == "w8a8_sp24"


def test_auto_recipe_for_wide_int_and_explicit_choices():
    hw = load_hw(CONFIGS / "int8_dense.yaml")
    wide = with_overrides(hw, {"precision.weight_bits": 16, "precision.act_bits": 16})
    assert native_recipe(wide).recipe is None
    assert choose_recipe(None, hw) == choose_recipe("auto", hw)
    assert choose_recipe("none", hw).recipe is None
    assert choose_recipe("w4a4", hw).recipe == "w4a4"


def test_sparse_recipe_marks_encoder_linears_and_saves_cycles(tmp_path, capsys):
    sparse = run_json(tmp_path, "--hw", SPARSE_HW, "--model", MODEL)  # auto -> w4a4_sp24
    printed = capsys.readouterr().out
    assert "recipe  w4a4_sp24 (auto: int4 weights x int4 activations with 2:4 skipping" in printed
    assert "2:4 speedup" in printed
    dense = run_json(tmp_path, "--hw", SPARSE_HW, "--model", MODEL, "--recipe", "none")
    assert sparse["recipe"] == "w4a4_sp24" and dense["recipe"] == "none"
    linears = [g for g in gemm_layers(sparse) if is_encoder_linear(g["name"])]
    matmuls = [g for g in gemm_layers(sparse) if "/matmul" in g["name"]]  # QK^T and PV
    assert len(linears) == 12 and len(matmuls) == 4
    assert all(g["sparsity"] == "2:4" and g["weight_bits"] == 4 for g in linears)
    assert all(g["sparsity"] == "dense" and g["weight_bits"] == 8 for g in matmuls)
    assert all(g["sparsity"] == "dense" for g in gemm_layers(dense))
    # Skipping halves the reduction of every 2:4 linear. (The whole-model total of `none` is
    # not comparable: unquantized attention runs at native 4 bits there, the recipe's 8-bit
    # attention takes 2 x 2 passes.)
    compute = [sum(g["compute_cycles"] for g in gemm_layers(d) if is_encoder_linear(g["name"]))
               for d in (sparse, dense)]
    assert compute[0] < compute[1]
    dense4 = run_json(tmp_path, "--hw", SPARSE_HW, "--model", MODEL, "--recipe", "w4a4")
    assert sparse["totals"]["cycles"] < dense4["totals"]["cycles"]


def test_vit_at_a_non_native_image_size_runs_more_tokens(tmp_path, capsys):
    native = run_json(tmp_path, "--hw", SPARSE_HW, "--model", "vit_tiny")  # 32 px: 17 tokens
    larger = run_json(tmp_path, "--hw", SPARSE_HW, "--model", "vit_tiny", "--image-size", "64")
    assert "image_size 64" in capsys.readouterr().out
    assert larger["recipe"] == native["recipe"] == "w4a4_sp24"
    assert larger["totals"]["macs"] > native["totals"]["macs"]
    assert larger["totals"]["cycles"] > native["totals"]["cycles"]
    qk = next(g for g in gemm_layers(larger) if "/matmul" in g["name"])
    assert (qk["m"], qk["n"]) == (65, 65)  # 8x8 patches + CLS
    assert main(["run", "--hw", SPARSE_HW, "--model", "vit_tiny", "--image-size", "60"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "image_size=60 must be a positive multiple of the patch" in err


def test_dense_recipe_keeps_cycles_but_sets_bits(tmp_path):
    int8 = run_json(tmp_path, "--hw", str(CONFIGS / "int8_dense.yaml"), "--model", MODEL)
    assert int8["recipe"] == "w8a8"
    linears = [g for g in gemm_layers(int8) if is_encoder_linear(g["name"])]
    assert linears and {(g["weight_bits"], g["act_bits"], g["sparsity"]) for g in linears} == {
        (8, 8, "dense")}


def test_recipe_from_a_yaml_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nweight_bits: 8\nact_bits: 4\nattention_bits: 8\n"
                    "sparsity: '2:4'\n")
    data = run_json(tmp_path, "--hw", SPARSE_HW, "--model", MODEL, "--recipe", str(path))
    linears = [g for g in gemm_layers(data) if is_encoder_linear(g["name"])]
    assert {(g["weight_bits"], g["act_bits"], g["sparsity"]) for g in linears} == {
        (8, 4, "2:4")}


def test_unknown_recipe_names_the_closest_in_one_line(capsys):
    assert main(["run", "--hw", SPARSE_HW, "--model", MODEL, "--recipe", "w4a4sp24"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith("accelsim: error: recipe: unknown name 'w4a4sp24' (did you mean "
                          "'w4a4_sp24', ")
    # At most three suggestions, not the whole list of recipes.
    assert err.count("'") <= 2 * 4 and "w4a4_sp24_wanda_ln_a8_sr_ste" not in err
    assert err.endswith("recipes in experiments/recipes/ or a path to a .yaml file")


@pytest.fixture
def topology(tmp_path):
    path = tmp_path / "block.csv"
    path.write_text("Layer, M, N, K,\nfc1, 64, 256, 128, 2:4,\nfc2, 64, 128, 256,\n")
    return path


def test_recipe_on_a_topology_csv_is_one_note(topology, capsys):
    assert main(["run", "--hw", SPARSE_HW, "--model", str(topology)]) == 0
    assert "recipe" not in capsys.readouterr().out.split("\n\n")[0]
    assert main(["run", "--hw", SPARSE_HW, "--model", str(topology), "--recipe", "w4a4"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines()
             if "does not apply to a topology CSV" in line]
    assert len(notes) == 1


def test_accuracy_on_a_topology_csv_is_not_available(topology, tmp_path, capsys):
    data = run_json(tmp_path, "--hw", SPARSE_HW, "--model", str(topology), "--accuracy")
    assert "accuracy    not available: a topology CSV" in capsys.readouterr().out
    assert data["totals"]["accuracy"] is None and "recipe" not in data


def test_accuracy_without_a_task_reports_measured_fidelity(tmp_path, capsys):
    data = run_json(tmp_path, "--hw", SPARSE_HW, "--model", MODEL, "--accuracy")
    printed = capsys.readouterr().out
    assert "accuracy    not available: model 'bert_tiny' has no task" in printed
    assert "fidelity    top-1 agreement" in printed
    totals = data["totals"]
    assert totals["accuracy"] is None and totals["accuracy_metric"] is None
    fid = totals["fidelity"]
    assert fid["num_examples"] > 0 and 0.0 <= fid["top1_agreement_pct"] <= 100.0
    # A calibrated 4-bit model is a noisy copy of its FP self: finite, positive SQNR.
    assert fid["sqnr_db"] is not None and 0.0 < fid["sqnr_db"] < 100.0
    assert f"{fid['top1_agreement_pct']:.1f} %" in printed


def test_fidelity_on_calibrated_residual_adds(tmp_path, capsys):
    data = run_json(tmp_path, "--hw", SPARSE_HW, "--model", MODEL, "--accuracy", "--set",
                    "vector_unit.format=int", "--set", "vector_unit.residual_scale=calibrated")
    fid = data["totals"]["fidelity"]
    assert "calibrated residual scale" in capsys.readouterr().out
    assert fid["num_examples"] > 0 and 0.0 < fid["sqnr_db"] < 100.0


def test_accuracy_of_an_uncompressed_model_without_a_task(tmp_path, capsys):
    data = run_json(tmp_path, "--hw", SPARSE_HW, "--model", MODEL, "--recipe", "none",
                    "--accuracy")
    assert "its own FP reference" in capsys.readouterr().out
    assert data["totals"]["accuracy"] is None and "fidelity" not in data["totals"]


def test_task_metric_goes_into_the_json_totals(tmp_path, capsys, monkeypatch):
    # The measurement itself (a trained run through the integer reference) belongs to
    # tests/test_accuracy.py; here: what run does with a measured task metric.
    import accelsim.accuracy
    import accelsim.tasks

    calls = []

    def measured(model, recipe, seed, hw):
        calls.append((model, recipe, seed))
        return accelsim.accuracy.AccuracyResult(model, recipe, "fortunes", 61.25,
                                                "integer_reference",
                                                datapath=chip_datapath(hw).label)

    monkeypatch.setattr(accelsim.accuracy, "accuracy_for", measured)
    monkeypatch.setattr(accelsim.tasks, "task_for_model", lambda model: "fortunes")
    data = run_json(tmp_path, "--hw", SPARSE_HW, "--model", MODEL, "--accuracy",
                    "--set", "precision.accumulator_bits=16", "--set", "vector_unit.format=int")
    assert calls == [(MODEL, "w4a4_sp24", 0)]
    totals = data["totals"]
    assert totals["accuracy"] == 61.25 and totals["accuracy_metric"] == "accuracy_pct"
    assert totals["accuracy_measured_by"] == "integer_reference" and totals["accuracy_seed"] == 0
    # The accuracy is measured on the chip that was simulated, --set overrides included.
    datapath = "int4_sparse: 16-bit saturate accumulators, integer requant, int vector"
    assert totals["accuracy_datapath"] == datapath
    assert ("accuracy    61.25 % (accuracy_pct on the fortunes test split, recipe w4a4_sp24, "
            f"training seed 0, measured by the integer reference on the datapath {datapath})"
            ) in capsys.readouterr().out


def test_missing_trained_run_is_reported_not_fatal(tmp_path, capsys, monkeypatch):
    import accelsim.accuracy
    import accelsim.tasks
    from accelsim.errors import AccelsimError

    def missing(model, recipe, seed=0, hw=None):
        raise AccelsimError("accuracy: no trained run; create it with: python experiments/x.py")

    monkeypatch.setattr(accelsim.accuracy, "accuracy_for", missing)
    monkeypatch.setattr(accelsim.tasks, "task_for_model", lambda model: "fortunes")
    data = run_json(tmp_path, "--hw", SPARSE_HW, "--model", MODEL, "--accuracy")
    assert "accuracy    not available: no trained run; create it with" in capsys.readouterr().out
    assert data["totals"]["accuracy"] is None
    assert math.isfinite(data["totals"]["cycles"])


def test_accuracy_simulates_the_shape_it_was_measured_at_and_leaves_no_run_folder(
        tmp_path, capsys, monkeypatch):
    import accelsim.tasks

    cache = tmp_path / "cache"
    monkeypatch.setenv("ACCELSIM_CACHE", str(cache))
    monkeypatch.setattr(accelsim.tasks, "task_for_model", lambda model: "fortunes")
    data = run_json(tmp_path, "--hw", SPARSE_HW, "--model", MODEL, "--accuracy")
    printed = capsys.readouterr().out
    assert ("shape   seq_len 48 (the input the fortunes accuracy is measured at; --seq-len, "
            "--image-size or --audio-seconds simulates another)") in printed
    assert "(batch 1, seq_len 48)" in printed
    # No trained run: one line with the command that makes it, and nothing created on disk.
    assert ("accuracy    not available: no trained run of recipe 'w4a4_sp24' on task "
            "'fortunes'") in printed
    assert "create it with: python experiments/accuracy/fortunes.py --recipes w4a4_sp24 " \
           "--seeds 0" in printed
    assert data["totals"]["accuracy"] is None
    assert not (cache / "runs").exists()


def test_an_explicit_shape_wins_and_is_said_to_differ(tmp_path, capsys, monkeypatch):
    import accelsim.tasks

    monkeypatch.setattr(accelsim.tasks, "task_for_model", lambda model: "fortunes")
    run_json(tmp_path, "--hw", SPARSE_HW, "--model", MODEL, "--accuracy", "--seq-len", "32")
    printed = capsys.readouterr().out
    assert "(batch 1, seq_len 32)" in printed
    assert ("shape   seq_len 32 (given; the fortunes accuracy below is measured at seq_len 48, "
            "so latency and energy are for another input than the accuracy)") in printed
