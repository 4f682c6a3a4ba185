"""``accelsim verify --phase`` on a tiny decoder and a tiny speech recognizer: the generation
checks and their one-line refusals."""

import json

import pytest

from accelsim.cli import main
from accelsim.compress.export import load_int_model


def test_verify_decode_phase_on_the_chip(capsys, tmp_path):
    out, npz = tmp_path / "v.json", tmp_path / "gpt2_tiny.npz"
    code = main(["verify", "--model", "gpt2_tiny", "--recipe", "w4a4_sp24", "--phase", "decode",
                 "--hw", "hw_configs/int4_sparse.yaml", "--batches", "1", "--batch-size", "2",
                 "--gen-len", "3", "--json", str(out), "--int-model-out", str(npz)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "3 of 3 passes' logits bit-identical" in printed  # prefill + 2 decode steps
    report = json.loads(out.read_text())
    assert report["generation"]["passed"] and report["generation"]["tokens"] == 6
    assert report["phase"] == "decode" and report["passes_checked"] == 2
    assert report["oracle_mismatches"] == 0 and report["oracle_ops_checked"] > 0
    assert report["graph_matches"] and report["executed"]["macs_linear"] > 0
    # Two decode steps at contexts 8 and 9, batch 2: QK^T and PV over 9 and 10 positions.
    assert report["executed"]["macs_matmul"] == 2 * 2 * 2 * 32 * (9 + 10)
    int_model = load_int_model(npz)
    assert int_model.linears[-1].name == "lm_head" and int_model.family == "gpt2"


def test_verify_the_recognizer_against_its_phase_graphs(capsys, tmp_path):
    """Greedy transcription on the integer reference equals the fake-quant model's, and on the
    chip's datapath the GEMM work of its prefill (encoder + first decoder step) and decode
    steps equals the traced phase graphs the simulator prices."""
    out, npz = tmp_path / "v.json", tmp_path / "asr.npz"
    code = main(["verify", "--model", "whisper_tiny_test_asr", "--recipe", "w4a4_sp24",
                 "--phase", "generate", "--hw", "hw_configs/int4_sparse.yaml", "--batches", "1",
                 "--batch-size", "2", "--gen-len", "4", "--json", str(out),
                 "--int-model-out", str(npz)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(out.read_text())
    generation = report["generation"]
    assert generation["passed"] and generation["passes"] >= 1
    assert report["oracle_mismatches"] == 0 and report["oracle_ops_checked"] > 0
    assert report["graph_matches"] and report["executed"]["macs_matmul"] > 0
    # The prefill encodes the whole window: the encoder's QK^T and PV over its 50 positions
    # (2 layers x 4 heads x 8 dims x batch 2) are part of the checked work.
    assert report["executed"]["macs_matmul"] >= 2 * 2 * 2 * 4 * 8 * 50 * 50
    attentions = [a.name for a in load_int_model(npz).attentions]
    assert attentions[-1] == "whisper.model.decoder.layers.0.encoder_attn"
    # The simulator prices that integer model's own widths on the recognizer's phase graphs.
    priced = tmp_path / "run.json"
    assert main(["run", "--hw", "hw_configs/int4_sparse.yaml", "--model", "whisper_tiny_test_asr",
                 "--phase", "decode", "--int-model", str(npz), "--json", str(priced)]) == 0
    assert "w4a4_sp24 from --int-model" in json.loads(priced.read_text())["phase_widths"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "bert_tiny", "--recipe", "w4a4", "--phase", "decode"],
     "--phase applies to decoder models; bert_tiny is an encoder"),
    (["--model", "opt_tiny", "--recipe", "w4a4"], "decoder model opt_tiny needs --phase"),
    (["--model", "opt_tiny", "--ckpt", "x", "--phase", "decode"],
     "--ckpt: decoder opt_tiny has no compress task"),
    (["--model", "llama_tiny", "--recipe", "w4a4", "--phase", "decode", "--gen-len", "1"],
     "--phase decode needs a decode step"),
    (["--model", "llama_tiny", "--recipe", "w4a4", "--phase", "prefill", "--seq-len", "4"],
     "--seq-len does not apply to --phase prefill"),
    (["--model", "gpt2_tiny", "--recipe", "w4a4", "--phase", "generate", "--prompt-len", "64",
      "--gen-len", "4"], "beyond the model's 64"),
    (["--model", "whisper_tiny_test_asr", "--recipe", "w4a4", "--phase", "decode",
      "--prompt-len", "4"], "--prompt-len does not apply to speech recognizer"),
    (["--model", "whisper_tiny_test_asr", "--recipe", "w4a4"],
     "decoder model whisper_tiny_test_asr needs --phase"),
])
def test_verify_phase_bad_input_is_one_line(capsys, argv, message):
    assert main(["verify", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_per_site_widths_are_priced_as_the_integer_model_runs_them(capsys, tmp_path):
    """A per-site recipe on the recognizer (8-bit Q/K/V weights, 4-bit 2:4 elsewhere, 8-bit
    activations): generation on the integer reference passes, and the nominal widths a decoder
    phase prices from the recipe are the exported integer model's own, linear by linear, the
    output projection (no site) at the recipe's."""
    from accelsim.cli.run_phase import decoder_precision, phase_graph_from_int_model
    from accelsim.graph.decoder_trace import trace_phase
    from accelsim.graph.phases import with_precision
    from accelsim.zoo.decoders import resolve_phase_shape

    recipe, model, npz = "w4a8_sp24_wanda_qkv_w8", "whisper_tiny_test_asr", tmp_path / "asr.npz"
    code = main(["verify", "--model", model, "--recipe", recipe, "--phase", "decode", "--hw",
                 "hw_configs/int4_sparse.yaml", "--batches", "1", "--batch-size", "2",
                 "--gen-len", "3", "--int-model-out", str(npz)])
    assert code == 0, capsys.readouterr().out
    int_model = load_int_model(npz)
    for phase in ("prefill", "decode"):
        traced = trace_phase(model, phase, resolve_phase_shape(model, phase))
        nominal = with_precision(traced, decoder_precision(recipe))
        real = phase_graph_from_int_model(traced, int_model)

        def widths(graph):
            return {node.name.split(".", 1)[1]: (node.weight_bits, node.act_bits, node.sparsity)
                    for node in graph.graph.gemms
                    if not (node.weight_is_activation or node.on_host)}

        assert widths(nominal) == widths(real)
        priced = widths(nominal)
        assert priced["whisper.model.decoder.layers.0.self_attn.q_proj"] == (8, 8, "2:4")
        assert priced["whisper.model.decoder.layers.0.fc2"] == (4, 8, "2:4")
        assert priced["whisper.proj_out"] == (4, 8, "2:4")
