"""Fine-tuning loop on a tiny synthetic task: stages, schedules, checkpoint/resume, determinism,
and the ``accelsim compress`` command end to end (seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from compress_helpers import SyntheticTask, accuracy_pct, synthetic_batch, tiny_bert
from torch import nn

from accelsim.compress.quant import QuantLinear
from accelsim.compress.recipe import Recipe, recipe_from_dict
from accelsim.compress.sparsity import is_2_4
from accelsim.compress.train import Progress, finetune
from accelsim.errors import AccelsimError

TRAIN_BATCHES = 4


def _recipe(**overrides: object) -> Recipe:
    base = {"name": "tiny", "sparsity": "2:4", "attention_bits": 4, "fp_epochs": 1, "epochs": 2,
            "batch_size": 16, "lr": 1e-2, "clip_lr": 1e-2, "calibration_batches": 2,
            "warmup_fraction": 0.0}
    return recipe_from_dict({**base, **overrides})


def _train(epoch: int) -> list:
    return [synthetic_batch(1000 * epoch + i) for i in range(TRAIN_BATCHES)]


def _eval() -> list:
    return [synthetic_batch(10_000 + i) for i in range(2)]


def _run(out: Path, recipe: Recipe, on_progress=None, **kwargs):  # noqa: ANN001, ANN003, ANN202
    model = tiny_bert(seed=0)
    return finetune(model, _train, _eval, accuracy_pct, recipe, seed=1, out_dir=out,
                    on_progress=on_progress, **kwargs)


def test_two_stage_finetune_compresses_and_reports_progress(tmp_path: Path) -> None:
    events: list[Progress] = []
    result = _run(tmp_path, _recipe(), events.append)
    assert [h.stage for h in result.history] == ["fp", "compress", "compress"]
    assert result.fp_metric == result.history[0].metric and result.resumed_from_epoch == 0
    assert (tmp_path / "checkpoint.pt").is_file()
    steps = [e for e in events if e.metric is None]
    assert len(steps) == 3 * TRAIN_BATCHES and len(events) == len(steps) + 3
    assert steps[-1].epochs_total == 3 and steps[-1].steps_per_epoch == TRAIN_BATCHES
    layers = [m for m in result.model.modules() if isinstance(m, QuantLinear)]
    assert len(layers) == 12
    for layer in layers:
        assert is_2_4(layer.weight.detach())  # stored weights are pruned too
        assert layer.accelsim_precision.sparsity == "2:4"
    assert result.history[0].train_loss > result.history[-1].train_loss
    assert result.metric > 75.0  # the synthetic labelling is learnable (chance = 50)


def test_training_runs_on_deterministic_kernels_and_restores_the_callers_setting(
        tmp_path: Path) -> None:
    # CPU index_put_ accumulates in thread order by default (Whisper's learned decoder
    # positions: two processes trained the same run 1 ulp apart); finetune turns PyTorch's
    # deterministic kernels on for every step and evaluation, and off again after.
    seen: list[bool] = []
    _run(tmp_path, _recipe(), lambda _: seen.append(torch.are_deterministic_algorithms_enabled()))
    assert seen and all(seen)
    assert not torch.are_deterministic_algorithms_enabled()


def test_scheduled_dropout_ramps_during_compression(tmp_path: Path) -> None:
    seen: list[tuple[str, float, float]] = []
    model = tiny_bert(seed=0)
    probe = model.bert.encoder.layer[0].attention.self.dropout

    def record(p: Progress) -> None:
        if p.metric is None:
            seen.append((p.stage, p.dropout_factor, probe.p))

    finetune(model, _train, _eval, accuracy_pct, _recipe(), seed=1, out_dir=tmp_path,
             on_progress=record)
    fp = [s for s in seen if s[0] == "fp"]
    comp = [s for s in seen if s[0] == "compress"]
    assert {s[2] for s in fp} == {0.1}
    assert comp[0][1] == 0.0 and comp[0][2] == 0.0
    assert [s[1] for s in comp] == sorted(s[1] for s in comp) and comp[-1][1] == 1.0
    assert comp[-1][2] == pytest.approx(0.1)
    assert probe.p == pytest.approx(0.1)  # restored after training


@pytest.mark.parametrize("overrides", [{}, {"distill_weight": 0.5, "distill_hidden_weight": 1.0},
                                       {"pruning": "sr_ste", "mask_update_steps": 1}])
def test_resume_after_interruption_is_bit_identical(tmp_path: Path, overrides: dict) -> None:
    # A distilling run resumes its teacher too; an SR-STE run its shadow weights and masks.
    recipe = _recipe(**overrides)
    full = _run(tmp_path / "full", recipe)

    for stop_epoch, stop_step in ((2, 1), (3, 2)):  # at the stage boundary, mid-compression
        out = tmp_path / f"cut{stop_epoch}"

        def interrupt(p: Progress, e: int = stop_epoch, s: int = stop_step) -> None:
            if p.epoch == e and p.step == s and p.metric is None:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            _run(out, recipe, interrupt)
        resumed = _run(out, recipe)
        assert resumed.resumed_from_epoch == stop_epoch - 1
        assert resumed.history == full.history
        state_a, state_b = full.model.state_dict(), resumed.model.state_dict()
        assert state_a.keys() == state_b.keys()
        for key in state_a:
            assert torch.equal(state_a[key], state_b[key]), key


class _CountedBatches(list):
    """The training batches of an epoch as a sequence that records which ones are built."""

    built: list[int] = []

    def __getitem__(self, index):  # noqa: ANN001, ANN204
        _CountedBatches.built.append(index)
        return super().__getitem__(index)


def _unlabeled(epoch: int) -> list:
    return [synthetic_batch(50_000 + 100 * epoch + i) for i in range(TRAIN_BATCHES)]


@pytest.mark.parametrize("overrides", [
    {}, {"pruning": "gradual", "mask_update_steps": 1},
    {"pruning": "sr_ste", "mask_update_steps": 1},
    {"distill_weight": 0.5, "distill_unlabeled": 1}])
def test_resume_within_an_epoch_is_bit_identical_and_skips_the_done_batches(
        tmp_path: Path, overrides: dict) -> None:
    recipe = _recipe(**overrides)
    extra = {"unlabeled_batches": _unlabeled} if recipe.distill_unlabeled else {}
    per_step = 1 + recipe.distill_unlabeled
    full = _run(tmp_path / "full", recipe, **extra)

    # Within the float stage, one step into the compressed stage (its structure, teacher and
    # calibrated clips come from the checkpoint), and within the last epoch.
    for stop_epoch, stop_batch in ((1, 3), (2, 1), (3, 3)):
        out = tmp_path / f"cut{stop_epoch}-{stop_batch}"
        steps_done = stop_batch * (per_step if stop_epoch > 1 else 1)

        def interrupt(p: Progress, e: int = stop_epoch, s: int = steps_done) -> None:
            if p.epoch == e and p.step == s and p.metric is None:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            _run(out, recipe, interrupt, checkpoint_batches=1, **extra)
        seconds_before = torch.load(out / "checkpoint.pt", weights_only=False)["train_seconds"]
        _CountedBatches.built = []

        def counted(epoch: int) -> list:
            return _CountedBatches(_train(epoch))

        resumed = finetune(tiny_bert(seed=0), counted, _eval, accuracy_pct, recipe, seed=1,
                           out_dir=out, checkpoint_batches=1, **extra)
        assert (resumed.resumed_from_epoch, resumed.resumed_from_step) == (stop_epoch - 1,
                                                                          steps_done)
        assert 0 < seconds_before < resumed.train_seconds  # the time of both calls
        # The batches done before the interruption are not built again (calibration, at the
        # start of the compressed stage, reads its first batches once more when it starts).
        assert _CountedBatches.built[:TRAIN_BATCHES - stop_batch] == list(
            range(stop_batch, TRAIN_BATCHES))
        assert resumed.history == full.history
        state_a, state_b = full.model.state_dict(), resumed.model.state_dict()
        assert state_a.keys() == state_b.keys()
        for key in state_a:
            assert torch.equal(state_a[key], state_b[key]), key


def test_checkpoint_batches_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(AccelsimError, match="checkpoint_batches 0; allowed: an integer >= 1"):
        _run(tmp_path, _recipe(), checkpoint_batches=0)


def test_rerun_of_a_finished_run_returns_it(tmp_path: Path) -> None:
    first = _run(tmp_path, _recipe(epochs=1))
    again = _run(tmp_path, _recipe(epochs=1))
    assert again.resumed_from_epoch == 2 and again.history == first.history


def test_distillation_blends_cross_entropy_with_the_teacher_kl(tmp_path: Path) -> None:
    from accelsim.compress.train import IGNORE_INDEX, TEACHER, _loss

    logits, labels = torch.tensor([[2.0, -1.0], [0.5, 0.3]]), torch.tensor([0, 1])
    ce = nn.functional.cross_entropy(logits, labels)
    assert torch.equal(_loss(logits, labels, None, _recipe()), ce)
    half = _recipe(distill_weight=0.5, distill_temperature=2.0)
    assert torch.allclose(_loss(logits, labels, logits.clone(), half), 0.5 * ce)  # KL(p||p) = 0
    teacher = torch.tensor([[-1.0, 2.0], [0.3, 0.5]])
    p_t, p_s = (torch.softmax(x / 2.0, dim=-1) for x in (teacher, logits))
    kl = (p_t * (p_t.log() - p_s.log())).sum(dim=-1).mean() * 4.0
    assert torch.allclose(_loss(logits, labels, teacher, half), 0.5 * ce + 0.5 * kl)
    # A padding row (a sequence model's label IGNORE_INDEX) is left out of both terms: the
    # loss with one appended is the loss without it, whatever the two models say there.
    padded = (torch.cat([logits, torch.tensor([[9.0, -9.0]])]), torch.tensor([0, 1, IGNORE_INDEX]),
              torch.cat([teacher, torch.tensor([[-9.0, 9.0]])]))
    assert torch.allclose(_loss(padded[0], padded[1], padded[2], half), 0.5 * ce + 0.5 * kl)

    plain = _run(tmp_path / "plain", _recipe(epochs=1))
    distilled = _run(tmp_path / "kd", _recipe(epochs=1, distill_weight=0.5))
    assert not (tmp_path / "plain" / TEACHER).exists()
    teacher_state = torch.load(tmp_path / "kd" / TEACHER, weights_only=True)
    # the teacher is the float model at the end of stage fp (identical in both runs)
    fp_only = _run(tmp_path / "fp", _recipe(weight_bits=32, act_bits=32, attention_bits=32,
                                            sparsity="dense", fp_epochs=0, epochs=1))
    for key, value in fp_only.model.state_dict().items():
        assert torch.equal(teacher_state[key], value), key
    assert plain.history[0] == distilled.history[0]  # stage fp is untouched
    assert plain.history[1].train_loss != distilled.history[1].train_loss


def test_hidden_distillation_pulls_block_outputs_towards_the_teacher(tmp_path: Path) -> None:
    from accelsim.compress.train import hidden_distillation_loss, recorded_block_outputs

    model = tiny_bert(seed=0)
    with recorded_block_outputs(model) as states:
        model(**synthetic_batch(0).inputs)
    assert len(states) == 2 and states[0].shape == (16, 8, 32)
    assert len(model.bert.encoder.layer[0]._forward_hooks) == 0  # removed on exit
    same = hidden_distillation_loss(states, [s.detach().clone() for s in states])
    assert float(same.detach()) == 0.0
    doubled = hidden_distillation_loss([2 * s for s in states], states)
    assert torch.allclose(doubled, torch.tensor(1.0))  # ||2h - h||^2 / ||h||^2

    plain = _run(tmp_path / "plain", _recipe(epochs=1))
    hidden = _run(tmp_path / "hidden", _recipe(epochs=1, distill_hidden_weight=1.0))
    assert (tmp_path / "hidden" / "teacher.pt").is_file()
    assert plain.history[0] == hidden.history[0]  # stage fp is untouched
    assert hidden.history[1].train_loss > plain.history[1].train_loss  # CE + a positive term


def test_unlabeled_batches_add_distillation_only_steps(tmp_path: Path) -> None:
    from accelsim.compress.train import _loss

    logits, teacher = torch.tensor([[2.0, -1.0], [0.5, 0.3]]), torch.tensor([[-1.0, 2.0],
                                                                            [0.3, 0.5]])
    kd_only = _recipe(distill_weight=0.5, distill_unlabeled=1)
    p_t, p_s = (torch.softmax(x / 2.0, dim=-1) for x in (teacher, logits))
    kl = (p_t * (p_t.log() - p_s.log())).sum(dim=-1).mean() * 4.0
    assert torch.allclose(_loss(logits, None, teacher, kd_only), kl)  # no labels, no CE

    events: list[Progress] = []
    unlabeled_calls: list[int] = []

    def unlabeled(epoch: int) -> list:
        unlabeled_calls.append(epoch)
        return [synthetic_batch(50_000 + 100 * epoch + i) for i in range(TRAIN_BATCHES)]

    result = finetune(tiny_bert(seed=0), _train, _eval, accuracy_pct, kd_only, seed=1,
                      out_dir=tmp_path, on_progress=events.append, unlabeled_batches=unlabeled)
    per_epoch = {e.epoch: e.steps_per_epoch for e in events if e.metric is None}
    assert per_epoch == {1: TRAIN_BATCHES, 2: 2 * TRAIN_BATCHES, 3: 2 * TRAIN_BATCHES}
    assert unlabeled_calls == [1, 2]  # stage compress only
    assert len(result.history) == 3

    with pytest.raises(AccelsimError, match="distill_unlabeled: 1 needs unlabelled batches"):
        finetune(tiny_bert(seed=0), _train, _eval, accuracy_pct, kd_only, seed=1,
                 out_dir=tmp_path / "none")
    with pytest.raises(AccelsimError, match="the unlabelled batches ran out"):
        finetune(tiny_bert(seed=0), _train, _eval, accuracy_pct,
                 _recipe(distill_weight=0.5, distill_unlabeled=2), seed=1,
                 out_dir=tmp_path / "short", unlabeled_batches=unlabeled)


def test_checkpoint_of_another_recipe_is_refused(tmp_path: Path) -> None:
    from accelsim.errors import AccelsimError

    _run(tmp_path, _recipe(epochs=1))
    with pytest.raises(AccelsimError, match="another recipe or seed"):
        _run(tmp_path, _recipe(epochs=1, lr=1e-3))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    torch.save({**state, "format": 1}, tmp_path / "checkpoint.pt")
    with pytest.raises(AccelsimError, match="checkpoint format 1, from another accelsim version "
                                            r"\(allowed: 2\)"):
        _run(tmp_path, _recipe(epochs=1))


def test_unsupported_family_fails_before_training(tmp_path: Path) -> None:
    from transformers import T5Config, T5Model

    from accelsim.errors import AccelsimError

    model = T5Model(T5Config(num_layers=1, d_model=8, d_kv=4, d_ff=8, num_heads=2, vocab_size=16))
    with pytest.raises(AccelsimError, match="'t5' is not supported"):
        finetune(model, _train, _eval, accuracy_pct, _recipe(), seed=1, out_dir=tmp_path)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_init_pretrained_ablation_compresses_from_the_start(tmp_path: Path) -> None:
    result = _run(tmp_path, _recipe(init="pretrained"))
    assert [h.stage for h in result.history] == ["compress"] * 3
    assert result.fp_metric is None


def test_gradual_pruning_ramps_to_full_2_4(tmp_path: Path) -> None:
    result = _run(tmp_path, _recipe(fp_epochs=0, epochs=3, pruning="gradual",
                                    prune_ramp_fraction=0.7, mask_update_steps=1))
    fractions = [h.pruned_fraction for h in result.history]
    assert fractions[0] < fractions[1] <= fractions[2] == 1.0
    assert all(m.accelsim_precision.sparsity == "2:4"
               for m in result.model.modules() if isinstance(m, QuantLinear))


def test_sr_ste_masks_change_during_training_and_end_2_4(tmp_path: Path) -> None:
    result = _run(tmp_path, _recipe(pruning="sr_ste", mask_update_steps=1))
    fp, *compress = result.history
    assert fp.mask_changed_fraction == 0.0
    assert all(h.mask_changed_fraction > 0.0 for h in compress)  # lr 1e-2 moves the shadows
    layers = [m for m in result.model.modules() if isinstance(m, QuantLinear)]
    for layer in layers:
        assert is_2_4(layer.weight.detach())  # the shadows are zeroed at the end
        assert torch.equal(layer.weight_mask, (layer.weight != 0).float())
        assert layer.accelsim_precision.sparsity == "2:4"
    one_shot = _run(tmp_path / "one_shot", _recipe())
    fixed = [m for m in one_shot.model.modules() if isinstance(m, QuantLinear)]
    assert any(not torch.equal(a.weight_mask, b.weight_mask) for a, b in zip(layers, fixed,
                                                                              strict=True))


def test_float_recipe_fine_tunes_without_compression(tmp_path: Path) -> None:
    recipe = recipe_from_dict({"name": "f", "weight_bits": 32, "act_bits": 32,
                               "attention_bits": 32, "fp_epochs": 1, "epochs": 1,
                               "batch_size": 16, "lr": 3e-3})
    result = _run(tmp_path, recipe)
    assert [h.stage for h in result.history] == ["fp", "fp"]
    assert not any(isinstance(m, QuantLinear) for m in result.model.modules())
    assert type(result.model.classifier) is nn.Linear


def test_cli_compress_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    import accelsim.tasks
    from accelsim.cli import main
    from accelsim.compress.export import load_int_model

    monkeypatch.setattr(accelsim.tasks, "get_task", lambda name, limit, tiny: SyntheticTask())
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: cli\nsparsity: '2:4'\nfp_epochs: 1\nepochs: 1\nbatch_size: 16\n"
                      "lr: 3.0e-3\ncalibration_batches: 2\n")
    out = tmp_path / "run"
    args = ["compress", "--model", "tiny_bert", "--task", "synthetic", "--recipe", str(recipe),
            "--out", str(out)]
    assert main(args) == 0
    for name in ("checkpoint.pt", "progress.json", "model.pt", "run.json", "int_model.npz",
                 "compression_report.csv"):
        assert (out / name).is_file(), name
    run = json.loads((out / "run.json").read_text())
    assert run["weight_bytes"]["fp32_bytes"] == 65536 and len(run["quantized_linears"]) == 12
    assert len(json.loads((out / "progress.json").read_text())) == 2
    assert load_int_model(out / "int_model.npz").linears[0].sparsity == "2:4"
    assert "cli: accuracy_pct" in capsys.readouterr().out
    assert main(args) == 0  # finished run: resumes and rewrites the outputs
    assert "resumed after epoch 2" in capsys.readouterr().out
    assert main([*args[:2], "other_model", *args[3:]]) == 2
    assert "--model 'other_model': task 'synthetic' fine-tunes 'tiny_bert'" in \
        capsys.readouterr().err


def test_cli_compress_checkpoints_within_an_epoch_and_resumes_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import accelsim.tasks
    from accelsim.cli import main

    task = SyntheticTask()
    plain_batches = task.batches
    train_calls: list[int] = []

    def batches(split: str, batch_size: int, seed: int):  # noqa: ANN202
        out = plain_batches(split, batch_size, seed)
        if split == "train":
            train_calls.append(seed)
        if len(train_calls) != 2 or split != "train":  # the first call counts the steps
            return out

        def cut():  # noqa: ANN202
            for i, batch in enumerate(out):
                if i == 2:  # the first run stops after the first two steps of its first epoch
                    raise KeyboardInterrupt
                yield batch
        return cut()

    monkeypatch.setattr(task, "batches", batches)
    monkeypatch.setattr(accelsim.tasks, "get_task", lambda name, limit, tiny: task)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: cli\nsparsity: '2:4'\nfp_epochs: 1\nepochs: 1\nbatch_size: 16\n"
                      "lr: 3.0e-3\ncalibration_batches: 2\n")
    args = ["compress", "--model", "tiny_bert", "--task", "synthetic", "--recipe", str(recipe),
            "--out", str(tmp_path / "run"), "--checkpoint-batches", "1"]
    assert main(args) == 130
    assert main(args) == 0
    assert "resumed at step 2 of epoch 1" in capsys.readouterr().out
    assert main([*args[:-1], "0"]) == 2
    assert "checkpoint_batches 0; allowed: an integer >= 1" in capsys.readouterr().err


def test_cli_compress_distils_on_the_tasks_unlabeled_batches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import accelsim.tasks
    from accelsim.cli import main

    task = SyntheticTask()
    monkeypatch.setattr(accelsim.tasks, "get_task", lambda name, limit, tiny: task)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: cli\nsparsity: '2:4'\nfp_epochs: 1\nepochs: 1\nbatch_size: 16\n"
                      "calibration_batches: 2\ndistill_weight: 0.5\ndistill_unlabeled: 1\n")
    args = ["compress", "--model", "tiny_bert", "--task", "synthetic", "--recipe", str(recipe),
            "--out", str(tmp_path / "run")]
    assert main(args) == 0
    assert task.calls.count("unlabeled") == 1  # stage compress drew from the pool
    monkeypatch.setattr(SyntheticTask, "unlabeled_batches", _no_pool)
    assert main([*args[:-1], str(tmp_path / "none")]) == 2
    assert "synthetic: no unlabeled pool" in capsys.readouterr().err
    assert not (tmp_path / "none" / "checkpoint.pt").exists()  # refused before training


def _no_pool(self: SyntheticTask, batch_size: int, seed: int) -> None:
    raise AccelsimError(f"{self.name}: no unlabeled pool")
