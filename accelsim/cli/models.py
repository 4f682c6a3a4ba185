"""``accelsim models``: list the model zoo."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from accelsim import zoo

HELP = "list the model zoo: family, parameters, default input shape, real weights available"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--family",
        help="only models of this family (bert, vit, dinov2, wav2vec2, whisper, gpt2, opt, llama)",
    )


def _shape_text(shape: dict[str, float]) -> str:
    if "gen_len" in shape:  # a decoder: prompt plus generated tokens
        return f"{shape['seq_len']} + {shape['gen_len']} tokens"
    ((key, value),) = shape.items()
    if key == "audio_seconds":
        return f"{value:g} s audio"
    if key == "image_size":
        return f"{value}x{value} image"
    return f"{value} tokens"


def _weights_text(spec: zoo.ModelSpec) -> str:
    weights = spec.weights_status()
    if weights == "package missing":
        return f"package missing ({spec.weights.install_command})"
    return f"yes ({spec.weights.package})" if weights == "yes" else weights


def _recognizer_rows() -> list[tuple[str, ...]]:
    """The speech recognizers (Whisper encoder + decoder): they run as phases (``run --phase``)
    on Whisper's whole window, so their input is the window plus prompt and generated tokens."""
    from accelsim import zoo
    from accelsim.zoo.asr import ASR_MODELS, build_asr_model
    from accelsim.zoo.decoders import encoder_window_frames, phase_limits
    from accelsim.zoo.inputs import SAMPLE_RATE_HZ, WHISPER_HOP_SAMPLES

    rows = []
    for name, recognizer in ASR_MODELS.items():
        spec = zoo.get_spec(recognizer.whisper)
        params = sum(p.numel() for p in build_asr_model(name, meta=True).parameters())
        tokens = phase_limits(name).defaults
        seconds = encoder_window_frames(name) * WHISPER_HOP_SAMPLES / SAMPLE_RATE_HZ
        rows.append((name, f"{spec.family} (enc-dec)", f"{params / 1e6:.2f} M",
                     f"{seconds:g} s audio, {tokens['prompt_len']} + {tokens['gen_len']} tokens",
                     _weights_text(spec)))
    return rows


def run(args: argparse.Namespace) -> int:
    from accelsim import zoo
    from accelsim.errors import AccelsimError

    specs = zoo.list_models()
    if args.family is not None:
        if args.family not in zoo.FAMILIES:
            raise AccelsimError(f"--family {args.family!r} is not one of {', '.join(zoo.FAMILIES)}")
        specs = [s for s in specs if s.family == args.family]
    rows = [("name", "family", "params", "default input", "real weights")]
    for spec in specs:
        rows.append(
            (
                spec.name,
                spec.family,
                f"{zoo.param_count(spec.name) / 1e6:.2f} M",
                _shape_text(spec.default_input_shape),
                _weights_text(spec),
            )
        )
    if args.family in (None, "whisper"):
        rows += _recognizer_rows()
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))
    return 0
