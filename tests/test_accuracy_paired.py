"""The paired bootstrap of a WER difference, asr_wer.py's transcript files and asr_paired.py."""

import json
from pathlib import Path

import numpy as np
import pytest
from script_helpers import accuracy_script

from accelsim.accuracy.paired import paired_wer
from accelsim.errors import AccelsimError


def test_identical_systems_differ_by_nothing_in_every_resample():
    result = paired_wer([3, 0, 2], [3, 0, 2], [10, 4, 6], resamples=200)
    assert result.baseline_wer_pct == result.candidate_wer_pct == 25.0
    assert (result.difference_pct, result.low_pct, result.high_pct) == (0.0, 0.0, 0.0)
    assert result.share_within_margin == 1.0


def test_a_constant_per_word_shift_has_no_spread():
    # Each utterance of 5 words has 1 more error in the candidate: every draw differs by 20 points.
    result = paired_wer([1, 0], [2, 1], [5, 5], resamples=500, margin_pct=1.0)
    assert (result.baseline_wer_pct, result.candidate_wer_pct) == (10.0, 30.0)
    assert result.difference_pct == pytest.approx(20.0)
    assert result.low_pct == pytest.approx(20.0) and result.high_pct == pytest.approx(20.0)
    assert result.share_within_margin == 0.0


def test_the_interval_has_the_width_of_the_paired_standard_error():
    # 400 utterances of 10 words; the candidate makes one more error on a random half: the
    # difference is 5 points with standard error sd(0/1 coin) / sqrt(400) / 10 words = 0.25.
    extra = np.random.default_rng(7).integers(0, 2, 400)
    base = np.random.default_rng(8).integers(0, 4, 400)
    result = paired_wer(base, base + extra, [10] * 400, resamples=20_000, seed=1)
    standard_error = 100 * extra.std() / np.sqrt(400) / 10
    assert result.difference_pct == pytest.approx(100 * extra.sum() / 4000)
    half_width = (result.high_pct - result.low_pct) / 2
    assert half_width == pytest.approx(1.96 * standard_error, rel=0.06)
    assert result.low_pct < result.difference_pct < result.high_pct
    # far above a 1-point margin: no resample lies within it
    assert result.share_within_margin == 0.0


def test_the_same_seed_gives_the_same_interval():
    base, cand = [2, 0, 1, 4, 0, 3], [1, 1, 2, 4, 2, 3]
    words = [8, 5, 6, 9, 4, 7]
    first = paired_wer(base, cand, words, resamples=300, seed=3)
    assert paired_wer(base, cand, words, resamples=300, seed=3) == first
    assert first.low_pct <= first.difference_pct <= first.high_pct


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    (([1, 2], [1], [3, 3]), {}, "1 candidate utterances for 2 references"),
    (([], [], []), {}, "no reference words"),
    (([1], [1], [4]), {"resamples": 0}, "resamples 0; allowed: at least 1"),
    (([1], [1], [4]), {"confidence": 1.0}, "confidence 1; allowed: 0 < confidence < 1"),
    (([1], [-1], [4]), {}, "a negative word or error count"),
])
def test_bad_input_is_refused_with_one_line(args, kwargs, message):
    with pytest.raises(AccelsimError, match=message) as info:
        paired_wer(*args, **kwargs)
    assert "\n" not in str(info.value)


def _write(path: Path, pairs: list[tuple[str, str]]) -> None:
    path.write_text("".join(json.dumps({"sentence": s, "hypothesis": h}) + "\n"
                            for s, h in pairs))


def test_asr_paired_recomputes_the_wer_from_the_transcripts(tmp_path, monkeypatch, capsys):
    base, cand, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "p.md"
    # 9 reference words; baseline: 1 substitution ("Dont" normalizes to "dont", "now" does
    # not match "know"); candidate: 1 deletion and 1 substitution.
    mat = "the cat sat on the mat"
    _write(base, [("I don't know", " I Dont now."), (mat, mat)])
    _write(cand, [("I don't know", "I know"), (mat, "the cat sat in the mat")])
    monkeypatch.setattr("sys.argv", ["asr_paired.py", "--pair", str(base), str(cand),
                                     "--resamples", "50", "--out", str(out),
                                     "--csv", str(tmp_path / "none.csv")])
    assert accuracy_script("asr_paired").main() == 0
    table = out.read_text()
    assert capsys.readouterr().out == table
    row = table.splitlines()[-1]
    assert "| 2 | 9 | 11.11 | 22.22 | +11.11 |" in row
    assert "--resamples 50" in table.splitlines()[0]


def test_asr_paired_refuses_transcripts_of_other_utterances(tmp_path, monkeypatch, capsys):
    base, cand, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "p.md"
    _write(base, [("one two", "one two"), ("three", "three")])
    _write(cand, [("one two", "one two"), ("four", "four")])
    for pair, message in (([str(base), str(cand)], "utterance 1's sentence differs"),
                          ([str(base), str(tmp_path / "gone.jsonl")], "No such file"),
                          ([str(base), str(out.with_name("bad.jsonl"))], "line 1 is not")):
        out.with_name("bad.jsonl").write_text("{not json\n")
        monkeypatch.setattr("sys.argv", ["asr_paired.py", "--pair", *pair, "--out", str(out)])
        assert accuracy_script("asr_paired").main() == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
        assert not out.exists()


def test_asr_wer_writes_each_rows_transcripts_and_names_them(tmp_path):
    script = accuracy_script("asr_wer")
    row = {field: "" for field in script.FIELDS if field != "transcripts"}
    row.update(model="whisper_tiny_en_asr", recipe="fp32", calibration_percentiles="-",
               split="val", utterances="2", reference_words="5", wer_pct="20.00",
               window_seconds="10", output_projection="float32", decoder_attention="float32",
               measured_by="pytorch_fp32", command="c", code_commit="a" * 40)
    said = [{"sentence": "a b", "hypothesis": "a"}, {"sentence": "c d e", "hypothesis": "c d e"}]
    csv_path = tmp_path / "w.csv"
    rows = script.write_transcripts([(row, said)], csv_path)
    script.write(rows, csv_path, tmp_path / "w.md")
    name = rows[0]["transcripts"]
    assert name.startswith("asr_transcripts/fp32-val-") and name.endswith(".jsonl")
    lines = (tmp_path / name).read_text().splitlines()
    assert [json.loads(line) for line in lines] == said
    # another commit's row is another file, so a re-made run keeps the older transcripts
    other = script.write_transcripts([({**row, "code_commit": "b" * 40}, said)], csv_path)
    assert other[0]["transcripts"] != name
