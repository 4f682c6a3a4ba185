"""``accelsim run --phase`` end to end on tiny decoders: JSON fields, the issue's decode check
as properties, and one clear line for each bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from accelsim.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "hw_configs"
HW = str(CONFIGS / "int4_sparse.yaml")


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACCELSIM_CACHE", str(tmp_path_factory.mktemp("run-phase-cache")))
        yield


def run_json(tmp_path, *args: str) -> dict:
    out = tmp_path / "out.json"
    assert main(["run", "--hw", HW, "--model", "gpt2_tiny", *args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


# 2 KiB of activation SRAM: less than the tiny decoder's KV cache, which then stays in DRAM.
KV_IN_DRAM = ("--set", "sram.inputs.size_kib=1", "--set", "sram.outputs.size_kib=1")


def test_decode_json_reports_per_token_figures_and_kv_traffic(tmp_path, capsys):
    short = run_json(tmp_path, "--phase", "decode", "--context", "16", *KV_IN_DRAM)
    text = capsys.readouterr().out
    assert "per token" in text and "crossover" in text and "KV cache read" in text
    phase = short["phase"]
    assert phase["kv_cache_placement"] == short["kv_cache_placement"] == "dram"
    assert phase["kv_read_bytes"] == phase["kv_cache_bytes"] == short["kv_cache_bytes"]
    assert short["recipe"] == "w4a4_sp24"
    assert short["totals"]["dram_bytes"] == phase["dram_bytes"]
    assert phase["dram_bytes"] >= phase["weight_bytes"] + phase["kv_read_bytes"]
    assert phase["ms_per_token"] == short["totals"]["latency_ms"]
    assert phase["uj_per_token"] == short["totals"]["energy_uj"]
    assert isinstance(phase["crossover_batch"], int)
    long = run_json(tmp_path, "--phase", "decode", "--context", "32", *KV_IN_DRAM)["phase"]
    assert long["kv_read_bytes"] > phase["kv_read_bytes"]
    assert long["dram_bytes"] - phase["dram_bytes"] >= (long["kv_read_bytes"]
                                                        - phase["kv_read_bytes"])


def test_decode_keeps_a_kv_cache_that_fits_on_chip(tmp_path, capsys):
    # int4_sparse's 1.5 MiB of activation SRAM holds the tiny decoder's 2,176 B cache.
    data = run_json(tmp_path, "--phase", "decode", "--context", "16")
    assert "KV cache    2.18 kB on chip" in capsys.readouterr().out
    phase = data["phase"]
    assert (phase["kv_cache_placement"], phase["kv_cache_bytes"], phase["kv_read_bytes"]) == (
        "sram", 2176, 0)
    assert phase["dram_bytes"] >= phase["weight_bytes"]


def test_prefill_and_generate_report_ttft_and_totals(tmp_path):
    prefill = run_json(tmp_path, "--phase", "prefill", "--prompt-len", "8", "--batch", "2")
    assert prefill["phase"]["ttft_ms"] == prefill["totals"]["latency_ms"]
    assert prefill["phase"]["tokens"] == 16
    generate = run_json(tmp_path, "--phase", "generate", "--prompt-len", "8", "--gen-len", "3")
    phase = generate["phase"]
    assert [s["context"] for s in phase["steps"]] == [8, 9]
    assert phase["ttft_ms"] == pytest.approx(phase["prefill"]["latency_ms"])
    assert phase["latency_ms"] == pytest.approx(
        phase["prefill"]["latency_ms"] + sum(s["latency_ms"] for s in phase["steps"]))
    assert phase["uj_per_token"] == pytest.approx(phase["energy_uj"] / 3)


def test_recipe_none_keeps_the_hardware_widths(tmp_path):
    data = run_json(tmp_path, "--phase", "decode", "--context", "4", "--recipe", "none")
    assert data["recipe"] == "none"
    assert all(layer["sparsity"] == "dense" for layer in data["layers"] if layer["op"] == "gemm")


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "bert_tiny", "--phase", "decode"],
     "bert_tiny: --phase decode needs a decoder model; bert_tiny is an encoder-only bert model"),
    (["--model", "gpt2_tiny", "--phase", "decode", "--context", "64"],
     "gpt2_tiny: context=64 needs 65 positions, beyond the model's 64 (allowed: context at "
     "most 63)"),
    (["--model", "gpt2_tiny", "--phase", "generate", "--prompt-len", "60", "--gen-len", "6"],
     "gpt2_tiny: prompt_len=60, gen_len=6 needs 65 positions, beyond the model's 64 (allowed: "
     "prompt_len + gen_len at most 65)"),
    (["--model", "gpt2_tiny", "--phase", "prefill", "--prompt-len", "65"],
     "gpt2_tiny: prompt_len=65 needs 65 positions, beyond the model's 64 (allowed: prompt_len "
     "at most 64)"),
    (["--model", "gpt2_tiny", "--phase", "decode", "--batch", "0"],
     "gpt2_tiny: batch=0 must be an integer >= 1"),
    (["--model", "gpt2_tiny"],
     "decoder model gpt2_tiny needs --phase (allowed: prefill, decode, generate)"),
    (["--model", "gpt2_tiny", "--context", "4"], "--context needs --phase"),
    (["--model", "gpt2_tiny", "--phase", "decode", "--seq-len", "4"],
     "--seq-len 4 does not apply to --phase decode"),
    (["--model", "gpt2_tiny", "--phase", "generate", "--csv", "x.csv"],
     "--csv does not apply to --phase generate"),
    (["--model", "gpt2_tiny", "--phase", "decode", "--scalesim-compat"],
     "--scalesim-compat does not apply to --phase decode"),
    (["--model", "gpt2_tiny", "--phase", "generate", "--layers"],
     "--layers does not apply to --phase generate"),
])
def test_bad_phase_input_is_one_line_and_exit_2(args, message, capsys, tmp_path):
    out = tmp_path / "never.json"
    assert main(["run", "--hw", HW, *args, "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("accelsim: error: ") and message in err
    assert len(err.splitlines()) == 1
    assert not out.exists()


def test_an_infeasible_pass_is_a_result_with_exit_1(tmp_path, capsys):
    out = tmp_path / "infeasible.json"
    args = ["run", "--hw", str(CONFIGS / "int8_dense.yaml"), "--model", "opt_tiny",
            "--phase", "prefill", "--prompt-len", "32", "--set", "sram.outputs.size_kib=1",
            "--set", "array.rows=128", "--set", "array.cols=128", "--json", str(out)]
    assert main(args) == 1
    assert "INFEASIBLE: layer" in capsys.readouterr().err
    data = json.loads(out.read_text())
    assert data["feasible"] is False and data["phase"] is None and "output tile" in data["reason"]


def test_decode_writes_json_and_csv_together(tmp_path):
    out, table = tmp_path / "decode.json", tmp_path / "decode.csv"
    args = ["run", "--hw", HW, "--model", "gpt2_tiny", "--phase", "decode", "--context", "8",
            "--json", str(out), "--csv", str(table)]
    assert main(args) == 0
    layers = json.loads(out.read_text())["layers"]
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["layer"] for row in rows] == [layer["name"] for layer in layers]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decode.csv", "decode.json"]


def _saved_int_model(name: str, path: Path) -> str:
    """A tiny decoder compressed with w4a4_sp24 (calibration only) and saved as an int model."""
    import torch

    from accelsim import zoo
    from accelsim.compress.apply import apply_recipe, calibrate
    from accelsim.compress.export import export_int_model, save_int_model
    from accelsim.compress.recipe import load_recipe
    from accelsim.tasks.base import Batch
    from accelsim.zoo.decoders import build_causal_lm

    recipe = load_recipe("w4a4_sp24")
    model = build_causal_lm(name, seed=0)
    apply_recipe(model, recipe)
    calibrate(model, [Batch(inputs=zoo.example_inputs(name, batch=2, seed=i),
                            labels=torch.zeros(2)) for i in range(2)], recipe)
    return str(save_int_model(export_int_model(model), path))


def test_int_model_prices_the_real_compressed_decoder(tmp_path):
    npz = _saved_int_model("gpt2_tiny", tmp_path / "gpt2_tiny.npz")
    real = run_json(tmp_path, "--phase", "decode", "--context", "16", "--int-model", npz)
    nominal = run_json(tmp_path, "--phase", "decode", "--context", "16")
    assert real["recipe"] == "w4a4_sp24"
    # Every linear, the LM head included, is 2:4 with 4-bit codes, attention and KV cache at
    # 8 bits: the nominal widths, so the same bytes; the requantize work is the same too (the
    # cache's is its write, not a requantization of the whole cache every step).
    for key in ("dram_bytes", "weight_bytes", "kv_read_bytes", "kv_write_bytes"):
        assert real["phase"][key] == nominal["phase"][key]
    gemms = [layer for layer in real["layers"] if layer["op"] == "gemm"]
    assert all(layer["sparsity"] == "2:4" for layer in gemms if "/matmul" not in layer["name"])
    assert len(real["layers"]) == len(nominal["layers"])
    # Measured densities sit a little below 0.5 (kept weights that quantize to 0): a little
    # less MAC energy than the nominal 2:4.
    assert real["phase"]["uj_per_token"] <= nominal["phase"]["uj_per_token"]
    assert real["phase"]["uj_per_token"] == pytest.approx(nominal["phase"]["uj_per_token"],
                                                          rel=1e-3)
    assert real["phase"]["ms_per_token"] == pytest.approx(nominal["phase"]["ms_per_token"])
    generate = run_json(tmp_path, "--phase", "generate", "--prompt-len", "8", "--gen-len", "3",
                        "--int-model", npz)
    assert [s["context"] for s in generate["phase"]["steps"]] == [8, 9]


def test_int_model_of_another_decoder_or_with_a_recipe_is_one_line(tmp_path, capsys):
    npz = _saved_int_model("opt_tiny", tmp_path / "opt_tiny.npz")
    for extra, message in ((["--model", "gpt2_tiny"], "have no layer in it"),
                           (["--model", "opt_tiny", "--recipe", "w4a4"],
                            "--recipe w4a4 and --int-model")):
        assert main(["run", "--hw", HW, *extra, "--phase", "decode", "--int-model", npz]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
