"""``accelsim verify``: the integer reference against the fake-quant model, layer by layer.

``--ckpt DIR`` checks a ``compress`` output directory (``run.json``, ``model.pt``,
``int_model.npz``) on its task's data. ``--recipe R`` compresses a zoo model with calibration only
(no training) on generated inputs, exports it and checks it on other generated inputs. Prints
per-GEMM int32 accumulator mismatches and errors (teacher-forced: both sides see the same layer
input) and, end to end, how many input codes of each layer drifted, then a one-line verdict. The
exit status is 1 when any accumulator differs or the logits are not bit-identical: the fake-quant
model's inference forward computes the integer path's arithmetic (docs/integer_semantics.md §5).

Decoders (``--phase prefill|decode|generate``, zoo gpt2/opt/llama models, ``--recipe`` only):
the causal LM with its LM head is compressed and calibrated on generated prompts of
``--prompt-len`` tokens, checked layer by layer on other prompts as above, then greedy-decodes
``--gen-len`` tokens per prompt batch on the integer reference (:mod:`accelsim.ref.decode`, KV
cache stored as codes) against the fake-quant model: every token equal and every pass's logits
bit-identical, else exit 1. With ``--hw`` the generation runs on the chip's datapath and the
passes of the phase are checked: the oracle recomputes every op, and the GEMM MACs executed are
compared with those of the traced phase graphs (prefill; each decode step at its context).
``--int-model-out F`` writes the exported integer model (``run --phase ... --int-model F``).
Speech recognizers (``whisper_tiny_en_asr``, ``whisper_tiny_test_asr``) are checked the same
way: the recipe covers encoder, decoder linears, output projection and decoder attention (the
KV caches as codes), calibrated teacher-forced on generated features of the encoder's whole
window and random tokens after the decoding prompt; then greedy transcription of other features
(``--gen-len`` tokens at most) on the integer reference against the fake-quant model, and with
``--hw`` the prefill (encoder + first decoder step) and decode steps against their phase graphs.

``--hw H [--set K=V ...]`` then checks the chip (:mod:`accelsim.ref.chip`): the reference on H's
datapath (accumulator width and overflow, integer requantization, vector format) reports its
accumulator saturations, the SQNR of its logits against the fake-quant model, each vector op's
error against float32, its ops recomputed by the independent oracle (exit 1 on any mismatch)
and whether its GEMM MACs and vector elements equal the simulator graph's.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

HELP = "check the integer reference against the fake-quant model (int32 accumulators, logits)"
PHASES = ("prefill", "decode", "generate")
_ENCODER_SHAPES = ("seq_len", "image_size", "audio_seconds")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="zoo model name")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", type=Path, help="output directory of `accelsim compress`")
    source.add_argument("--recipe", help="recipe name or .yaml path: calibrate only, then verify")
    parser.add_argument("--batches", type=int, default=2, help="batches to compare (default 2)")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per batch")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"),
                        help="task split for --ckpt (default test)")
    parser.add_argument("--seq-len", type=int, default=None, help="BERT tokens (--recipe)")
    parser.add_argument("--image-size", type=int, default=None, help="ViT image side (--recipe)")
    parser.add_argument("--audio-seconds", type=float, default=None,
                        help="wav2vec2/Whisper clip length (--recipe)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and inputs")
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON")
    parser.add_argument("--hw", type=Path, default=None,
                        help="hardware YAML: also run the reference on its datapath")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of --hw (repeatable), e.g. "
                             "precision.accumulator_bits=16")
    parser.add_argument("--phase", choices=PHASES, default=None,
                        help="decoder models: check a greedy generation's prefill, its decode "
                             "steps, or both")
    parser.add_argument("--prompt-len", type=int, default=None,
                        help="decoder prompt tokens (default the model's seq_len)")
    parser.add_argument("--gen-len", type=int, default=None,
                        help="decoder tokens generated per prompt (default the model's gen_len)")
    parser.add_argument("--int-model-out", type=Path, default=None,
                        help="decoders: write the exported integer model (.npz) here")


def _generated(args: argparse.Namespace, count: int, seed: int) -> list[Any]:
    import torch

    from accelsim import zoo
    from accelsim.tasks.base import Batch

    batches = []
    for i in range(count):
        inputs = zoo.example_inputs(
            args.model, batch=args.batch_size, seq_len=args.seq_len, image_size=args.image_size,
            audio_seconds=args.audio_seconds, seed=seed + i,
        )
        batches.append(Batch(inputs=inputs, labels=torch.zeros(args.batch_size, dtype=torch.long)))
    return batches


def _from_recipe(args: argparse.Namespace) -> tuple[Any, Any, list[Any]]:
    from accelsim import zoo
    from accelsim.compress.apply import apply_recipe, calibrate
    from accelsim.compress.export import export_int_model
    from accelsim.compress.recipe import load_recipe
    from accelsim.errors import AccelsimError

    recipe = load_recipe(args.recipe)
    if not recipe.quantized:
        raise AccelsimError(f"--recipe: {recipe.name!r} keeps float32 weights; allowed: a "
                            "quantized recipe (weight_bits 4 or 8)")
    model = zoo.build_model(args.model, seed=args.seed, image_size=args.image_size)
    apply_recipe(model, recipe)
    # Calibration and verification inputs come from disjoint seeds.
    calibrate(model, _generated(args, recipe.calibration_batches, args.seed + 10_000), recipe)
    return model.eval(), export_int_model(model), _generated(args, args.batches, args.seed)


def _from_checkpoint(args: argparse.Namespace) -> tuple[Any, Any, list[Any]]:
    import torch

    from accelsim.compress.apply import apply_recipe
    from accelsim.compress.export import load_int_model
    from accelsim.compress.recipe import recipe_from_dict
    from accelsim.errors import AccelsimError
    from accelsim.files import read_json
    from accelsim.tasks import get_task

    run_json = args.ckpt / "run.json"
    for path in (run_json, args.ckpt / "model.pt", args.ckpt / "int_model.npz"):
        if not path.is_file():
            raise AccelsimError(f"--ckpt: {str(path)!r} does not exist; allowed: an output "
                                "directory of `accelsim compress` with a quantized recipe")
    run = read_json(run_json)
    needed = ("model", "task", "seed", "recipe")
    if not isinstance(run, dict) or any(key not in run for key in needed):
        raise AccelsimError(f"--ckpt: {run_json} lacks the {', '.join(needed)} that `accelsim "
                            "compress` writes; allowed: an output directory of `accelsim "
                            "compress` with a quantized recipe")
    if run["model"] != args.model:
        raise AccelsimError(f"--model: {args.model!r} but {run_json} was compressed from "
                            f"{run['model']!r}; allowed: {run['model']!r}")
    task = get_task(run["task"], limit=run.get("limit"), tiny=bool(run.get("tiny")))
    model = task.build_model(run["seed"])
    apply_recipe(model, recipe_from_dict(run["recipe"], where=str(run_json)))
    state = torch.load(args.ckpt / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    int_model = load_int_model(args.ckpt / "int_model.npz")
    batches = list(itertools.islice(task.batches(args.split, args.batch_size, args.seed),
                                    args.batches))
    return model.eval(), int_model, batches


def run(args: argparse.Namespace) -> int:
    from accelsim.errors import AccelsimError
    from accelsim.files import check_output_path, write_text_atomic

    if args.json is not None:
        check_output_path(args.json, "--json")
    import torch

    from accelsim.ref.compare import compare_with_fake_quant
    from accelsim.zoo.decoders import is_speech_recognizer

    for name in ("batches", "batch_size"):
        if getattr(args, name) < 1:
            raise AccelsimError(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1")
    datapath = _datapath(args)
    torch.manual_seed(args.seed)
    decoder = _decoder_shape(args)
    if decoder is not None and is_speech_recognizer(args.model):
        model, int_model, batches = _recognizer_from_recipe(args, decoder)
    elif decoder is not None:
        model, int_model, batches = _decoder_from_recipe(args, decoder)
    else:
        model, int_model, batches = _from_checkpoint(args) if args.ckpt else _from_recipe(args)
    report = compare_with_fake_quant(model, int_model, batches)
    width = max(len(layer.name) for layer in report.layers)
    print(f"{'gemm':<{width}}  kind    sparsity  accumulators  mismatches  max|acc diff|"
          "  max|out err|  e2e input-code flips")
    for layer in report.layers:
        flips = (f"{layer.e2e_code_flips}/{layer.e2e_input_codes}" if layer.e2e_input_codes
                 else "-")
        print(f"{layer.name:<{width}}  {layer.kind:<6}  {layer.sparsity:<8}  "
              f"{layer.accumulators:>12}  {layer.mismatches:>10}  {layer.max_abs_acc_diff:>13}"
              f"  {layer.max_abs_out_err:>12.3g}  {flips:>20}")
    if report.passed and not report.end_to_end_ok:
        print("note: the integer GEMMs are exact, but the outputs around them differ: the "
              "fake-quant inference forward no longer computes the integer path's float32 ops "
              "(docs/integer_semantics.md section 5)")
    print(report.verdict())
    payload = {**asdict(report), "passed": report.passed,
               "end_to_end_ok": report.end_to_end_ok, "verdict": report.verdict()}
    chip_ok = True
    if decoder is not None:
        chip_ok = _check_decoder(args, decoder, model, int_model, batches, datapath, payload)
    elif datapath is not None:
        from accelsim.ref.chip import check_chip
        from accelsim.ref.execute import with_residual_add_scales

        verified = with_residual_add_scales(model, int_model, batches, datapath)
        if verified is not int_model:
            print("residual adds: output scales calibrated on the verified batches")
        chip = check_chip(model, verified, batches, datapath)
        _print_chip(chip)
        chip_ok = chip.oracle_mismatches == 0
        payload.update(_finite({**asdict(chip), "graph_matches": chip.graph_matches}))
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(payload, indent=1))
    return 0 if report.passed and report.end_to_end_ok and chip_ok else 1


def _decoder_shape(args: argparse.Namespace) -> dict[str, int] | None:
    """The generation shape of a zoo decoder (``None`` for an encoder), its options checked."""
    from accelsim.errors import AccelsimError
    from accelsim.zoo.decoders import is_speech_recognizer, needs_phase, resolve_phase_shape

    given = [f"--{key.replace('_', '-')}" for key in ("prompt_len", "gen_len", "int_model_out")
             if getattr(args, key) is not None]
    if not needs_phase(args.model):
        if args.phase is not None or given:
            flag = "--phase" if args.phase is not None else given[0]
            raise AccelsimError(f"{flag} applies to decoder models; {args.model} is an encoder")
        return None
    if args.phase is None:
        raise AccelsimError(f"decoder model {args.model} needs --phase (allowed: "
                            f"{', '.join(PHASES)})")
    if args.ckpt is not None:
        raise AccelsimError(f"--ckpt: decoder {args.model} has no compress task; allowed: "
                            "--recipe")
    for key in _ENCODER_SHAPES:
        if getattr(args, key) is not None:
            raise AccelsimError(f"--{key.replace('_', '-')} does not apply to --phase "
                                f"{args.phase} (its shape options: --batch-size, --prompt-len, "
                                "--gen-len)")
    if is_speech_recognizer(args.model) and args.prompt_len is not None:
        raise AccelsimError(f"--prompt-len does not apply to speech recognizer {args.model} "
                            "(its prompt is greedy decoding's; allowed: --gen-len)")
    shape = resolve_phase_shape(args.model, "generate", batch=args.batch_size,
                                prompt_len=args.prompt_len, gen_len=args.gen_len)
    if args.phase == "decode" and shape["gen_len"] < 2:
        raise AccelsimError(f"--gen-len {shape['gen_len']}: --phase decode needs a decode "
                            "step; allowed: 2 or more")
    return shape


def _phase_recipe(args: argparse.Namespace) -> Any:
    """The quantized ``--recipe`` of a phase check (``--int-model-out`` checked first)."""
    from accelsim.compress.recipe import load_recipe
    from accelsim.errors import AccelsimError
    from accelsim.files import check_output_path

    if args.int_model_out is not None:
        check_output_path(args.int_model_out, "--int-model-out")
    recipe = load_recipe(args.recipe)
    if not recipe.quantized:
        raise AccelsimError(f"--recipe: {recipe.name!r} keeps float32 weights; allowed: a "
                            "quantized recipe (weight_bits 4 or 8)")
    return recipe


def _finish_phase_model(args: argparse.Namespace, model: Any) -> Any:
    """The integer model of a compressed, calibrated phase model (written to
    ``--int-model-out`` when given)."""
    from accelsim.compress.export import export_int_model, save_int_model

    int_model = export_int_model(model)
    if args.int_model_out is not None:
        save_int_model(int_model, args.int_model_out)
    return int_model


def _recognizer_from_recipe(args: argparse.Namespace,
                            shape: dict[str, int]) -> tuple[Any, Any, list[Any]]:
    """The compressed speech recognizer (seeded random init), its integer model and the
    teacher-forced batches it is checked on: features of the encoder's whole window and the
    decoding prompt followed by ``gen_len`` random tokens."""
    import torch

    from accelsim.accuracy.asr import asr_recipe, quantize_decoder_attention
    from accelsim.compress.apply import apply_recipe, calibrate
    from accelsim.tasks.base import Batch
    from accelsim.zoo.asr import PROMPT, build_asr_model
    from accelsim.zoo.decoders import encoder_window_frames

    recipe = asr_recipe(_phase_recipe(args))
    model = build_asr_model(args.model, seed=args.seed)
    config = model.config

    def teacher_forced(count: int, seed: int) -> list[Any]:
        batches = []
        for i in range(count):
            generator = torch.Generator().manual_seed(seed + i)
            features = torch.randn(shape["batch"], config.num_mel_bins,
                                   encoder_window_frames(args.model), generator=generator)
            tokens = torch.randint(0, config.vocab_size, (shape["batch"], shape["gen_len"]),
                                   generator=generator)
            ids = torch.cat([torch.tensor([PROMPT] * shape["batch"]), tokens], dim=1)
            batches.append(Batch({"input_features": features, "decoder_input_ids": ids},
                                 torch.zeros(shape["batch"], dtype=torch.long)))
        return batches

    apply_recipe(model, recipe)
    quantize_decoder_attention(model, recipe)
    calibrate(model, teacher_forced(recipe.calibration_batches, args.seed + 10_000), recipe)
    model.eval()
    return model, _finish_phase_model(args, model), teacher_forced(args.batches, args.seed)


def _decoder_from_recipe(args: argparse.Namespace,
                         shape: dict[str, int]) -> tuple[Any, Any, list[Any]]:
    """The compressed causal LM, its integer model and the prompt batches it is checked on."""
    import torch

    from accelsim import zoo
    from accelsim.compress.apply import apply_recipe, calibrate
    from accelsim.tasks.base import Batch
    from accelsim.zoo.decoders import build_causal_lm

    recipe = _phase_recipe(args)

    def prompts(count: int, seed: int) -> list[Any]:
        return [Batch(inputs=zoo.example_inputs(args.model, batch=shape["batch"],
                                                seq_len=shape["prompt_len"], seed=seed + i),
                      labels=torch.zeros(shape["batch"], dtype=torch.long))
                for i in range(count)]

    model = build_causal_lm(args.model, seed=args.seed)
    apply_recipe(model, recipe)
    calibrate(model, prompts(recipe.calibration_batches, args.seed + 10_000), recipe)
    return model.eval(), _finish_phase_model(args, model), prompts(args.batches, args.seed)


def _check_decoder(args: argparse.Namespace, shape: dict[str, int], model: Any, int_model: Any,
                   batches: list[Any], datapath: Any, payload: dict[str, Any]) -> bool:
    """Greedy generation on the fake-quant datapath and, with ``--hw``, on the chip's; prints
    and adds to ``payload``; whether both pass."""
    from accelsim.ref import decode
    from accelsim.zoo.decoders import is_speech_recognizer

    if is_speech_recognizer(args.model):
        from accelsim.zoo.asr import decoding_rules

        rules = dataclasses.replace(decoding_rules(args.model), max_new_tokens=shape["gen_len"])
        prompts = [batch.inputs["input_features"] for batch in batches]
        generation = decode.check_transcriptions(model, int_model, prompts, rules)
    else:
        prompts = [batch.inputs["input_ids"] for batch in batches]
        generation = decode.check_generation(model, int_model, prompts, shape["gen_len"])
    print(f"generation ({len(prompts)} x batch {shape['batch']}, prompt {shape['prompt_len']}, "
          f"{shape['gen_len']} tokens, KV cache of {int_model.attentions[-1].k.bits}-bit codes): "
          f"{generation.tokens_equal} of {generation.tokens} greedy tokens equal the fake-quant "
          f"model's; {generation.identical_logits} of {generation.passes} passes' logits "
          "bit-identical")
    payload["generation"] = {**asdict(generation), "passed": generation.passed}
    if datapath is None:
        return generation.passed
    if is_speech_recognizer(args.model):
        chip = decode.check_recognizer_chip(args.model, model, int_model, prompts, rules,
                                            args.phase, datapath)
    else:
        chip = decode.check_decoder_chip(args.model, model, int_model, prompts,
                                         shape["gen_len"], args.phase, datapath)
    d = chip.datapath
    print(f"chip datapath ({args.phase}: {chip.passes_checked} passes): {d.accumulator_bits}-bit "
          f"accumulators ({d.overflow}), vector format {d.vector_format}")
    print(f"  accumulator saturations: {chip.accumulator_saturations} of {chip.accumulators}")
    print(f"  greedy tokens equal to the fake-quant model's: {chip.tokens_agree} of "
          f"{chip.tokens}; logits SQNR {chip.logit_sqnr_db:.2f} dB")
    _print_oracle_and_work(chip, "phase graphs", "the executed GEMM work")
    payload.update(_finite({**asdict(chip), "graph_matches": chip.graph_matches}))
    return generation.passed and chip.oracle_mismatches == 0


def _datapath(args: argparse.Namespace) -> Any:
    """The datapath of ``--hw`` with ``--set`` applied (None without ``--hw``)."""
    from accelsim.errors import AccelsimError

    if args.hw is None:
        if args.set:
            raise AccelsimError("--set: needs --hw (the hardware config it overrides)")
        return None
    from accelsim.hw import load_hw, parse_override, with_overrides
    from accelsim.ref.datapath import Datapath

    hw = with_overrides(load_hw(args.hw), dict(parse_override(s) for s in args.set))
    return Datapath.of_hw(hw)


def _finite(value: Any) -> Any:
    """JSON has no infinity: an infinite SQNR (no error at all) is written as null."""
    if isinstance(value, float) and math.isinf(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _print_chip(chip: Any) -> None:
    d = chip.datapath
    print(f"chip datapath: {d.accumulator_bits}-bit accumulators ({d.overflow}), vector format "
          f"{d.vector_format}, integer requantization of attention operands")
    print(f"  accumulator saturations: {chip.accumulator_saturations} of {chip.accumulators}")
    print(f"  logits SQNR vs the fake-quant model: {chip.logit_sqnr_db:.2f} dB")
    for op, err in chip.vector_error.items():
        print(f"  {op:<10} vs float32: SQNR {err['sqnr_db']:8.2f} dB, max |err| "
              f"{err['max_abs_err']:.3g} over {err['elements']} elements")
    _print_oracle_and_work(chip, "simulator graph", "the executed work")


def _print_oracle_and_work(chip: Any, graph_name: str, work_name: str) -> None:
    """The lines every chip check ends with: float fallbacks, the oracle's verdict, and the GEMM
    work the reference executed beside what the simulated graph(s) price."""
    if chip.float_fallbacks:
        print(f"  computed in float for want of an integer kernel: {chip.float_fallbacks}")
    print(f"  oracle: {chip.oracle_mismatches} mismatches in {chip.oracle_elements_checked} "
          f"elements of {chip.oracle_ops_checked} ops")
    for key in sorted(set(chip.executed) | set(chip.graph)):
        ours, theirs = chip.executed.get(key, 0), chip.graph.get(key, 0)
        mark = "" if ours == theirs else "   DIFFERS"
        print(f"  {key:<18} executed {ours:>12}  {graph_name} {theirs:>12}{mark}")
    print(f"  {graph_name} equal{'s' if graph_name.endswith('graph') else ''} {work_name}: "
          f"{'yes' if chip.graph_matches else 'no'}")
