"""QAT that sees the integer datapath, measured on a tiny model (docs/integer_semantics.md §11).

Agreement first: the zoo's ``bert_tiny`` and ``vit_tiny`` (random weights, biases drawn from
N(0, 0.1) as trained models have them), compressed with ``w4a4_sp24`` and calibrated on 2
batches of 4 generated inputs, run 2 batches of 8 generated inputs three ways: by the integer
reference on the chip datapath of ``w4a4_sp24_int_datapath``, by the plain fake-quant model and
by the same model inside ``accelsim.ref.qat.datapath_emulation``. Printed: each forward's
output SQNR against the chip and the largest difference.

Run: ``python experiments/qat_datapath.py [--task fortunes] [--limit 256] [--fp-epochs 3]
[--epochs 2] [--lr 1e-3] [--seed 0]``. Then training: the task's tiny model
(``get_task(..., tiny=True)``, random weights) is fine-tuned in float32 (``fp32``,
``--fp-epochs``), then compressed twice from that float model for ``--epochs``: with
``w4a4_sp24`` (plain fake-quant QAT) and with ``w4a4_sp24_int_datapath`` (the same recipe plus
``datapath:`` the integer-only chip: I-BERT vector unit, 20-bit saturating accumulators,
integer requantization). Each trained model is evaluated on the validation split by the integer
reference on that chip datapath and compared with its own forward, plain and emulated. Printed
per model: the task metric of the fake-quant model and of the chip, the chip logits' SQNR
against the forward and the argmax agreement. (The text tasks: ``fashion_mnist``'s DINOv2 does
not run on the reference's ``int`` format yet, its pooled ``torch.cat`` reaches the float head
as float64.)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch

from accelsim import zoo
from accelsim.compress.apply import apply_recipe, calibrate
from accelsim.compress.export import export_int_model
from accelsim.compress.recipe import Recipe, load_recipe
from accelsim.compress.train import finetune
from accelsim.ref import chip, execute, qat
from accelsim.ref.datapath import Datapath
from accelsim.tasks import get_task
from accelsim.tasks.base import Batch, Task

PLAIN, ON_CHIP = "w4a4_sp24", "w4a4_sp24_int_datapath"


def _train(task: Task, recipe: Recipe, seed: int, epoch: int) -> Iterable[Batch]:
    return task.batches("train", recipe.batch_size, seed=seed * 1000 + epoch)


def _finetune(task: Task, recipe: Recipe, seed: int, out: Path,
              state: dict[str, torch.Tensor] | None) -> torch.nn.Module:
    model = task.build_model(seed)
    if state is not None:
        model.load_state_dict(state)
    result = finetune(model, functools.partial(_train, task, recipe, seed),
                      lambda: task.batches("val", 64, seed=0), task.metric, recipe, seed=seed,
                      out_dir=out, emulate_datapath=qat.emulate_datapath)
    return result.model.eval()


@torch.no_grad()
def _logits(model: torch.nn.Module, batches: list[Batch]) -> torch.Tensor:
    return torch.cat([execute.output_logits(model(**b.inputs)) for b in batches])


def _generated(name: str, count: int, size: int, seed: int) -> list[Batch]:
    return [Batch(inputs=zoo.example_inputs(name, batch=size, seed=seed + i),
                  labels=torch.zeros(size, dtype=torch.long)) for i in range(count)]


def agreement(name: str, datapath: Datapath, seed: int) -> None:
    """The agreement rows of one zoo model (module docstring)."""
    recipe = load_recipe(PLAIN)
    model = zoo.build_model(name, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
    apply_recipe(model, recipe)
    calibrate(model, _generated(name, 2, 4, seed=50), recipe)
    model.eval()
    batches = _generated(name, 2, 8, seed=60)
    on_chip = execute.run_int_model(model, export_int_model(model), batches,
                                    datapath=datapath).logits
    with torch.no_grad():
        plain = torch.cat([execute.output_logits(model(**b.inputs)) for b in batches])
        with qat.datapath_emulation(model, datapath):
            emulated = torch.cat([execute.output_logits(model(**b.inputs)) for b in batches])
    for forward, out in (("plain", plain), ("emulated", emulated)):
        print(f"{name:<10} {forward:<9} {chip.sqnr_db(on_chip, out):>20.2f} "
              f"{float((out - on_chip).abs().max()):>12.4g}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="fortunes")
    parser.add_argument("--limit", type=int, default=256, help="examples per split")
    parser.add_argument("--fp-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the compressed stage")
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="both stages (the recipes' 3e-5 is for pre-trained backbones; the "
                             "tiny models start from random weights)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    datapath = Datapath(**load_recipe(ON_CHIP).datapath)
    print(f"chip: {datapath}")
    print(f"{'model':<10} {'forward':<9} {'SQNR vs chip dB':>20} {'max |diff|':>12}")
    for name in ("bert_tiny", "vit_tiny"):
        agreement(name, datapath, args.seed)
    task = get_task(args.task, limit=args.limit, tiny=True)
    val = list(task.batches("val", 64, seed=0))
    labels = torch.cat([b.labels for b in val])
    print(f"\ntask {task.name} (tiny {task.backbone}), {args.limit} examples per split, "
          f"{labels.numel()} validation examples")
    print(f"{'trained with':<24} {'forward':<9} {'fq metric':>10} {'chip metric':>12} "
          f"{'chip vs fwd SQNR dB':>20} {'argmax agree %':>15}")
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = dataclasses.replace(load_recipe("fp32"), fp_epochs=0, epochs=args.fp_epochs,
                                   lr=args.lr)
        float_model = _finetune(task, fp32, args.seed, Path(tmp) / "fp32", None)
        print(f"{'fp32':<24} {'':<9} {task.metric(_logits(float_model, val), labels):>10.2f}")
        for name in (PLAIN, ON_CHIP):
            # Stage 2 alone, from the same float model: init finetuned with its state.
            recipe = dataclasses.replace(load_recipe(name), fp_epochs=0, epochs=args.epochs,
                                         lr=args.lr)
            model = _finetune(task, recipe, args.seed, Path(tmp) / name, float_model.state_dict())
            on_chip = execute.run_int_model(model, export_int_model(model), val,
                                            datapath=datapath).logits
            plain = _logits(model, val)
            with qat.datapath_emulation(model, datapath):
                emulated = _logits(model, val)
            for forward, logits in (("plain", plain), ("emulated", emulated)):
                agree = float((logits.argmax(-1) == on_chip.argmax(-1)).float().mean()) * 100
                print(f"{name:<24} {forward:<9} {task.metric(plain, labels):>10.2f} "
                      f"{task.metric(on_chip, labels):>12.2f} "
                      f"{chip.sqnr_db(on_chip, logits):>20.2f} {agree:>15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
