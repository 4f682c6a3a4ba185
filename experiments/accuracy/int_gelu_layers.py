"""Each GELU of a trained run on the integer datapath: its input scale, input range and error.

    python experiments/accuracy/int_gelu_layers.py --task speech_commands --recipe w4a4_sp24 \
        [--seed 0] [--batch 4] [--threads 2]

Runs one validation batch through the integer reference on the ``int`` vector unit of
``hw_configs/int4_sparse.yaml`` (I-BERT's polynomial GELU) and prints, for every GELU it executes:
the per-tensor input scale, the range of ``x``, and the SQNR and largest error against the exact
GELU of the same integer inputs, for I-BERT's kernel as the datapath uses it (its output brought
back to the input's resolution by ``int_mode.gelu_at_input_resolution``) and for the 4-segment
GELU table.
Where a kernel loses accuracy, this says on which layer and at which scale.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np
import torch
import torch.nn.functional as F

from accelsim.accuracy.budgets import BUDGETS
from accelsim.accuracy.evaluate import table_datapath
from accelsim.accuracy.runs import trained_model
from accelsim.compress.export import export_int_model
from accelsim.errors import AccelsimError
from accelsim.ref import execute, vector_ops
from accelsim.ref.chip import sqnr_db
from accelsim.ref.int_mode import gelu_at_input_resolution
from accelsim.tasks import get_task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=list(BUDGETS))
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=4, help="validation examples (default 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        task = get_task(args.task)
        model = trained_model(task, args.recipe, args.seed)
    except AccelsimError as exc:
        print(f"int_gelu_layers: {exc}", file=sys.stderr)
        return 2
    datapath = dataclasses.replace(table_datapath().datapath, vector_format="int")
    batch = next(iter(task.batches("val", args.batch, args.seed)))
    run = execute.run_int_model(model, export_int_model(model), [batch], datapath=datapath,
                                record_ops=True)
    print("gelu  input scale  x range             I-BERT SQNR dB  max err  "
          "table-4 SQNR dB  max err")
    gelus = [inputs for kind, _, inputs in run.counts.records or () if kind == "int_gelu"]
    for i, inputs in enumerate(gelus):
        q, scale = inputs["q"], float(inputs["scale"])
        x = torch.from_numpy(q * scale)
        exact = F.gelu(x)  # exact erf in float64, the datapath's own reference (int_mode)
        polynomial = torch.from_numpy(
            np.multiply(*gelu_at_input_resolution(vector_ops.int_gelu(q, scale), scale)))
        table = torch.from_numpy(np.multiply(*vector_ops.int_gelu_table(q, scale, 4)))
        worst = [float((ours - exact).abs().max()) for ours in (polynomial, table)]
        print(f"{i:4d}  {scale:11.3g}  [{float(x.min()):8.2f}, {float(x.max()):7.2f}]  "
              f"{sqnr_db(exact, polynomial):14.1f}  {worst[0]:7.3g}  "
              f"{sqnr_db(exact, table):15.1f}  {worst[1]:7.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
