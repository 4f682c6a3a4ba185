"""The workload graph of a zoo model as the hardware would run it: compressed by a recipe or not.

:func:`workload_graph` builds the zoo model (seeded random init), compresses it with a recipe
(``accelsim.compress``: ``apply_recipe`` then ``calibrate`` on seeded ``zoo.example_inputs``
batches; no training) and traces the compressed module, so every GEMM carries the bit widths of
its quantizers and the sparsity of its real mask (a layer the recipe left dense stays dense),
and the GEMMs of the layers it leaves float32 (the plan's ``float_layers``: a patch or
convolutional front end) are marked ``on_host``, as the integer reference runs them.
``recipe=None`` (or a float recipe such as ``fp32``) traces the uncompressed model, whose GEMMs
run at the hardware's native precision.

Calibration matters to the graph only through which quantizers are active (an active activation
quantizer is a requantize op on the vector unit); the clip values never change a shape, a bit
width or a mask, and the export runs on the meta device, where they have no value. So one batch
at the traced shape is enough, and none at all when calibration sets nothing but clips (no
smoothing, magnitude 2:4 masks: ``compress.apply.clips_only_calibration``): :func:`workload_graph`
then calibrates on no batches, which activates the quantizers at their initial clips and skips
the model's forward (the calibrate stage of benchmarks/bench_compress.py), into the same graph.

Building and compressing ViT-B/16 costs seconds of CPU before the export even starts (random
init, SAWB/mask init of 72 linears, percentile calibration; benchmarks/README.md, bench_startup,
says where a cold run's time goes), so compressed graphs are also cached
on disk under ``<cache>/workloads``, keyed by the model's config, the recipe's fields, the input
shape, the seed, the torch/transformers versions and a hash of the source files that decide the
graph (compression, tracing, zoo, this file): editing any of them invalidates the entry.

A graph built on a cache miss logs each stage before it starts (logger
``accelsim.graph.workload``, shown on stderr by the command line): the first line comes before
torch is imported, each with the seconds elapsed so far.

Importing this module has no side effects and pulls in neither torch nor transformers.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from accelsim.errors import AccelsimError
from accelsim.files import source_digest
from accelsim.graph.ir import Graph

if TYPE_CHECKING:
    import torch

    from accelsim.compress.recipe import Recipe

_LOG = logging.getLogger(__name__)
# A compressed model is built on one torch thread: its graph then does not depend on the core
# count (a parallel reduction, e.g. in the SAWB step, sums in per-thread chunks), and on a
# shared machine the intra-op threads no longer fight other processes for the cores (a cold
# vit_b16 took 43 s on the default 2 threads against 18 s on 1, with 4 runnable processes on
# 2 cores; benchmarks/bench_startup.py measures the cold path).
BUILD_THREADS = 1
CALIBRATION_BATCHES = 1  # see the module docstring: clip values do not change the graph
# The code whose behaviour decides a compressed workload graph (relative to the package).
_GRAPH_SOURCES: tuple[str, ...] = ("compress", "graph/ops.py", "graph/trace.py",
                                   "graph/trace_cache.py", "graph/ir.py", "graph/workload.py",
                                   "graph/intmodel.py", "zoo")


@dataclass(frozen=True)
class _CalibrationBatch:
    """What ``compress.apply.calibrate`` reads: model keyword inputs (labels are unused)."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor


def load_workload_recipe(name_or_path: str) -> Recipe:
    """A recipe by name or ``.yaml`` path; an unknown name raises one line naming the closest."""
    from accelsim.compress.recipe import load_recipe

    return load_recipe(name_or_path)


@functools.cache
def workload_graph(
    model: str,
    *,
    recipe: str | None,
    batch: int = 1,
    seq_len: int | None = None,
    image_size: int | None = None,
    audio_seconds: float | None = None,
    seed: int = 0,
) -> Graph:
    """Graph of zoo ``model`` compressed by ``recipe`` (name or path; ``None`` = uncompressed).

    Cached per arguments in-process, and on disk: a compressed graph under ``<cache>/workloads``
    (see the module docstring), an uncompressed one by
    :func:`accelsim.graph.trace_cache.trace_named_model`. A recipe given by path is read once per
    process; the disk key holds its fields, so an edited file is a new entry.
    """
    from accelsim import zoo
    from accelsim.graph.trace_cache import cached_json, trace_named_model

    shape = {"batch": batch, "seq_len": seq_len, "image_size": image_size,
             "audio_seconds": audio_seconds}
    spec = zoo.get_spec(model)
    parsed = None if recipe is None else load_workload_recipe(recipe)
    if parsed is not None:
        from accelsim.compress.recipe import check_family

        check_family(parsed, spec.family)
    if parsed is None or not parsed.quantized:
        return trace_named_model(model, **shape)
    key = _disk_key(model, parsed, zoo.resolve_input_shape(model, **shape), seed)
    path = zoo.cache_dir() / "workloads" / f"{key}.json"

    def build() -> Graph:
        from accelsim.compress.apply import PLAN_ATTR, clips_only_calibration
        from accelsim.graph.intmodel import with_host_layers

        start = time.perf_counter()
        _LOG.info("%s %s: no cached graph; building it once (cached in %s)", model, parsed.name,
                  path.parent)
        compressed = compressed_model(model, parsed, seed=seed, **shape,
                                      clip_values=not clips_only_calibration(parsed))
        # The layers the recipe leaves float32 run on the host (graph.intmodel).
        graph = with_host_layers(trace_named_model(model, **shape, model=compressed),
                                 getattr(compressed, PLAN_ATTR).float_layers)
        _LOG.info("%s %s: graph built in %.1f s", model, parsed.name,
                  time.perf_counter() - start)
        return graph

    return cached_json(path, Graph.from_dict, build, Graph.to_json)


def _disk_key(model: str, recipe: Recipe, shape: dict[str, int], seed: int) -> str:
    from accelsim import zoo
    from accelsim.compress.recipe import recipe_to_dict

    spec = zoo.get_spec(model)
    identity = json.dumps({
        "model": [spec.family, repr(spec.config)], "recipe": recipe_to_dict(recipe),
        "shape": shape, "seed": seed, "calibration_batches": CALIBRATION_BATCHES,
        # Versions from the metadata: a cache hit then never imports torch.
        "versions": [importlib.metadata.version("torch"),
                     importlib.metadata.version("transformers")],
        "source": source_digest(*_GRAPH_SOURCES),
    }, sort_keys=True)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:20]
    return f"{model}-{re.sub(r'[^A-Za-z0-9_.-]', '_', recipe.name)}-{digest}"


def compressed_model(
    model: str,
    recipe: Recipe,
    *,
    batch: int = 1,
    seq_len: int | None = None,
    image_size: int | None = None,
    audio_seconds: float | None = None,
    seed: int = 0,
    clip_values: bool = True,
) -> torch.nn.Module:
    """Zoo ``model`` (seeded random init) with ``recipe`` applied and its clips calibrated on
    :data:`CALIBRATION_BATCHES` seeded generated batches of the given shape (eval mode).

    ``clip_values=False`` (only where ``compress.apply.clips_only_calibration`` holds)
    calibrates on no batches instead, which activates the quantizers at their initial clips:
    the module's structure, precisions and graph are those of the calibrated one, its
    activation clips are not; it is built for tracing only (``apply_recipe(for_trace=True)``:
    its quantized linears hold their precisions, their weights are on the meta device)."""
    start = time.perf_counter()

    def stage(what: str) -> None:
        _LOG.info("%s %s: %s (%.1f s)", model, recipe.name, what, time.perf_counter() - start)

    stage("building the model (seeded random init; torch and transformers load first)")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    try:
        return _compressed_model(model, recipe, stage, batch=batch, seq_len=seq_len,
                                 image_size=image_size, audio_seconds=audio_seconds, seed=seed,
                                 clip_values=clip_values)
    finally:
        torch.set_num_threads(threads)


def _compressed_model(model: str, recipe: Recipe, stage: Callable[[str], None], *, batch: int,
                      seq_len: int | None, image_size: int | None, audio_seconds: float | None,
                      seed: int, clip_values: bool) -> torch.nn.Module:
    import torch

    from accelsim import zoo
    from accelsim.compress.apply import apply_recipe, calibrate, clips_only_calibration

    if not clip_values and not clips_only_calibration(recipe):
        raise AccelsimError(f"compressed_model({model!r}): clip_values=False: recipe "
                            f"{recipe.name!r} calibrates weights or masks too (smoothing or "
                            "activation-scored masks); allowed: True")
    net = zoo.build_model(model, seed=seed, image_size=image_size)
    stage(f"compressing: {recipe.weight_bits}-bit weights"
          + (", 2:4 masks" if recipe.sparsity == "2:4" else ""))
    # Without the calibration forward the model only ever gets traced: each compressed layer
    # keeps its precision and frees its weights as it is built (compress.apply.apply_recipe).
    apply_recipe(net, recipe, for_trace=not clip_values)
    if not clip_values:
        stage("calibrating: activating the activation quantizers (clip values decide no graph)")
        calibrate(net, [], recipe)
        return net.eval()
    batches = [
        _CalibrationBatch(
            zoo.example_inputs(model, batch=batch, seq_len=seq_len, image_size=image_size,
                               audio_seconds=audio_seconds, seed=seed + index),
            torch.zeros(0),
        )
        for index in range(CALIBRATION_BATCHES)
    ]
    stage(f"calibrating activation clips on {CALIBRATION_BATCHES} generated batch")
    calibrate(net, batches, recipe)
    return net.eval()
