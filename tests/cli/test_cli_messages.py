"""The small things a person meets first: --debug anywhere, short suggestions, one-line messages
without internals, and a clear word on compress --tiny."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from accelsim.cli import main
from accelsim.errors import AccelsimError, did_you_mean

CONFIGS = Path(__file__).resolve().parents[2] / "hw_configs"
HW = str(CONFIGS / "int4_sparse.yaml")
# What a message must not show: Python type names, YAML parser context, SQL, numpy internals.
INTERNALS = ("NoneType", "<unicode string>", "^", "SELECT", "Execution failed", "allow_pickle",
             "Traceback", "while parsing")


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("accelsim: error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize("argv", [
    ["--debug", "run", "--hw", "NOFILE", "--model", "vit_tiny"],
    ["run", "--hw", "NOFILE", "--model", "vit_tiny", "--debug"],
    ["run", "--debug", "--hw", "NOFILE", "--model", "vit_tiny"],
])
def test_debug_anywhere_shows_the_traceback(argv):
    with pytest.raises(AccelsimError, match="cannot read hardware config"):
        main(argv)


def test_without_debug_the_same_error_is_one_line(capsys):
    assert main(["run", "--hw", "NOFILE", "--model", "vit_tiny"]) == 2
    assert "cannot read hardware config" in one_line_error(capsys)


def test_did_you_mean_offers_at_most_three_close_names():
    options = ["w4a4", "w4a4_sp24", "w4a4_sp24_kd", "w4a8_sp24", "w8a8", "fp32"]
    assert did_you_mean("w4a4_sp2", options) == \
        " (did you mean 'w4a4_sp24', 'w4a8_sp24' or 'w4a4_sp24_kd'?)"
    assert did_you_mean("fp23", options) == " (did you mean 'fp32'?)"
    assert did_you_mean("zzzz", options) == ""


def test_unknown_model_suggests_close_names_not_the_whole_zoo(capsys):
    assert main(["run", "--hw", HW, "--model", "vit_tin"]) == 2
    err = one_line_error(capsys)
    assert "model 'vit_tin' is not in the zoo (did you mean 'vit_tiny'" in err
    assert "wav2vec2_large" not in err and err.endswith("`python -m accelsim models` lists")


@pytest.fixture
def bad_inputs(tmp_path: Path) -> dict[str, Path]:
    files = {
        "empty.yaml": "", "syntax.yaml": "array: [1, 2\n", "list.yaml": "- 1\n- 2\n",
        "fake.sqlite": "not a database", "table.csv": "a,b\n1,2\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    sqlite3.connect(tmp_path / "other.sqlite").execute("CREATE TABLE t (x)").connection.close()
    return {name: tmp_path / name for name in [*files, "other.sqlite"]}


@pytest.mark.parametrize(("argv", "expected"), [
    (["run", "--hw", "empty.yaml", "--model", "vit_tiny"],
     "empty.yaml: expected a mapping of config sections at the top level, got nothing (the "
     "file is empty)"),
    (["run", "--hw", "list.yaml", "--model", "vit_tiny"], "got a list"),
    (["run", "--hw", "syntax.yaml", "--model", "vit_tiny"],
     "syntax.yaml: not valid YAML (line 2, column 1: expected ',' or ']', but got "),
    (["run", "--hw", HW, "--model", "vit_tiny", "--int-model", "table.csv"],
     "table.csv: not an integer model (the int_model.npz that `accelsim compress --out DIR` "
     "writes)"),
    (["sweep", "syntax.yaml"], "syntax.yaml: not valid YAML (line 2, column 1: "),
    (["plot", "pareto", "fake.sqlite"],
     "fake.sqlite: not an accelsim results store (file is not a database)"),
    (["plot", "pareto", "other.sqlite"], "other.sqlite: not an accelsim results store (no such "
     "table: points)"),
    (["compress", "--model", "bert_tiny", "--task", "fortunes", "--recipe", "syntax.yaml",
      "--out", "OUT", "--tiny"], "syntax.yaml: not valid YAML (line 2, column 1: "),
])
def test_bad_input_is_one_line_without_internals(bad_inputs, tmp_path, capsys, argv, expected):
    given = [str(bad_inputs[a]) if a in bad_inputs else a for a in argv]
    assert main([str(tmp_path / "out") if a == "OUT" else a for a in given]) == 2
    err = one_line_error(capsys)
    assert expected in err
    assert not [word for word in INTERNALS if word in err]


@pytest.mark.parametrize(("model", "tiny", "expected"), [
    ("minilm_l6", True, "--tiny: task 'fortunes' then trains the tiny random-init 'bert_tiny' "
     "(smoke runs), not the pre-trained 'minilm_l6'; give --model bert_tiny --tiny, or leave out "
     "--tiny to fine-tune minilm_l6"),
    ("bert_tiny", False, "--model 'bert_tiny': the tiny random-init backbone of task 'fortunes' "
     "needs --tiny"),
    ("vit_b16", True, "--model 'vit_b16': task 'fortunes' fine-tunes 'minilm_l6' ('bert_tiny' "
     "with --tiny)"),
])
def test_compress_names_the_backbone_the_task_trains(tmp_path, capsys, model, tiny, expected):
    argv = ["compress", "--model", model, "--task", "fortunes", "--recipe", "w4a4",
            "--out", str(tmp_path / "out"), *(["--tiny"] if tiny else [])]
    assert main(argv) == 2
    assert expected in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [
    ["report", "{run}", "--html", "{out}.html"],
    ["plot", "breakdown", "{run}", "--out", "{out}.png"],
    ["plot", "roofline", "{run}", "--out", "{out}.png"],
])
@pytest.mark.parametrize(("content", "expected"), [
    (None, "cannot read (No such file or directory)"),
    (b"\xff\xfe{", "not valid JSON (not UTF-8 text)"),
    (b"{", "not valid JSON (Expecting property name"),
    (b'{"totals": {}}', "run JSON has no 'layers' list"),
    (b'{"phase": {"phase": "generate"}}', "a run of --phase generate has no per-layer table"),
])
def test_a_run_json_that_is_not_one_is_named_in_one_line(tmp_path, capsys, command, content,
                                                         expected):
    run = tmp_path / "given.json"
    if content is not None:
        run.write_bytes(content)
    argv = [part.format(run=run, out=tmp_path / "out") for part in command]
    assert main(argv) == 2
    assert one_line_error(capsys).startswith(f"accelsim: error: {run}: {expected}")
    assert not list(tmp_path.glob("out*"))
