"""Zoo models traced by name, cached in-process and on disk.

:func:`trace_named_model` traces a zoo model (built on the meta device, or an already built, e.g.
compressed, module of that name) with :mod:`accelsim.graph.trace`. Each graph is kept in memory
and as JSON under ``<cache>/traces``, keyed by model name, input shape, a fingerprint of the
module and the tracer/torch/transformers versions, so a sweep traces each (model, shape) once.

``torch.export`` needs shapes only: a built module's precision annotations (the one thing its
weights decide) are read first, then the module moves to the meta device and exports as a
meta-device structure does. A compressed ViT-L/16 then no longer holds a second, dequantized copy
of its weights while exporting, and the export does no arithmetic on real tensors.
A module whose encoder is a stack of identical layers is exported cut to one and two layers and
its graph extended to the full depth (:mod:`accelsim.graph.stack`: the same graph, a fraction of
the export time); any other module is exported whole. A trace logs a line (logger
``accelsim.graph.trace_cache``) before it starts: it takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from accelsim import zoo
from accelsim.compress.precision import ATTENTION_ATTR, LINEAR_ATTR
from accelsim.errors import AccelsimError
from accelsim.files import write_text_atomic
from accelsim.graph.ir import Graph
from accelsim.graph.stack import trace_stacked
from accelsim.graph.trace import (
    TRACER_VERSION,
    Precisions,
    export_module,
    graph_from_exported,
    module_precisions,
)

if TYPE_CHECKING:
    from torch import nn

_MEMORY_CACHE: dict[str, Graph] = {}
_LOG = logging.getLogger(__name__)
T = TypeVar("T")


def module_fingerprint(module: nn.Module, precisions: Precisions | None = None) -> str:
    """Hash of what changes a trace: module structure, parameter shapes, precision annotations
    (``precisions``: the module's :func:`module_precisions`, when the caller already has them)."""
    if precisions is None:
        precisions = module_precisions(module)
    digest = hashlib.sha256()
    for path, sub in module.named_modules():
        parts = [path, type(sub).__qualname__]
        for attr in (LINEAR_ATTR, ATTENTION_ATTR):
            value = precisions.get((path, attr))
            if value is not None:
                parts.append(f"{attr}={value!r}")
        digest.update("|".join(parts).encode())
    for path, param in module.named_parameters():
        digest.update(f"{path}:{tuple(param.shape)}".encode())
    return digest.hexdigest()[:16]


def _versions() -> str:
    import torch
    import transformers

    return f"tracer{TRACER_VERSION}-torch{torch.__version__}-tf{transformers.__version__}"


def trace_cache_key(name: str, shape: dict[str, int], fingerprint: str) -> str:
    shape_part = "-".join(f"{k}{v}" for k, v in sorted(shape.items()))
    version_hash = hashlib.sha256(_versions().encode()).hexdigest()[:8]
    return f"{name}-{shape_part}-{fingerprint}-{version_hash}"


def _disk_path(key: str) -> Path:
    return zoo.cache_dir() / "traces" / f"{key}.json"


def trace_named_model(
    name: str,
    *,
    batch: int = 1,
    seq_len: int | None = None,
    image_size: int | None = None,
    audio_seconds: float | None = None,
    model: nn.Module | None = None,
) -> Graph:
    """Trace zoo model ``name`` at an input shape (defaults from its YAML).

    ``model`` is an already built (e.g. compressed) model of that zoo name; on a cache miss it is
    moved to the meta device once its precisions are read (see the module docstring), so the
    caller must not run it afterwards. Results are cached in-process and as JSON under
    ``<cache>/traces``, keyed by model name, input shape and a fingerprint of the module
    (structure + precision annotations), so a sweep traces once.
    """
    spec = zoo.get_spec(name)
    shape = zoo.resolve_input_shape(
        name, batch=batch, seq_len=seq_len, image_size=image_size, audio_seconds=audio_seconds
    )
    # An unmodified zoo model needs no build to be identified: its YAML config pins the structure.
    precisions = None if model is None else module_precisions(model)
    fingerprint = ("zoo" + spec_fingerprint(name) if model is None
                   else module_fingerprint(model, precisions))
    key = trace_cache_key(name, shape, fingerprint)

    def trace() -> Graph:
        start = time.perf_counter()
        source = ("meta-device structure" if model is None
                  else "compressed module, on the meta device")
        _LOG.info("%s: tracing with torch.export (%s)", name, source)
        # Tracing needs shapes, not values: a meta-device build skips the random init (seconds
        # for the large models), and a built module's weights are released.
        module = model.to("meta") if model is not None else zoo.build_structure(
            name, image_size=shape.get("image_size")
        )
        inputs = {input_name: tensor.to("meta")
                  for input_name, tensor in zoo.inputs_for_shape(spec, shape).items()}
        annotations = module_precisions(module) if precisions is None else precisions
        graph = trace_stacked(module, inputs, name=name, input_shape=shape,
                              precisions=annotations)
        if graph is None:  # no stack of identical layers: export the whole module
            exported = export_module(module, inputs, name=name)
            graph = graph_from_exported(
                exported, module, name=name, input_shape=shape, precisions=annotations
            )
        _LOG.info("%s: traced in %.1f s", name, time.perf_counter() - start)
        return graph

    return cached_json(_disk_path(key), Graph.from_dict, trace, Graph.to_json,
                       memory=_MEMORY_CACHE)


def cached_json(path: Path, load: Callable[[Any], T], build: Callable[[], T],
                dump: Callable[[T], str], *, memory: dict[str, T] | None = None) -> T:
    """The value cached as JSON at ``path`` (and in ``memory`` under the file's stem, the cache
    key, when given), else ``build()``, written atomically. A stale or damaged entry (``load``
    fails) is rebuilt and overwritten."""
    if memory is not None and path.stem in memory:
        return memory[path.stem]
    value = None
    if path.is_file():
        try:
            value = load(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError, AccelsimError):
            value = None  # a stale or damaged entry is rebuilt and overwritten below
    if value is None:
        value = build()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, dump(value))
    if memory is not None:
        memory[path.stem] = value
    return value


def spec_fingerprint(name: str) -> str:
    """Hash of zoo model ``name``'s family and YAML config, which pin its structure."""
    spec = zoo.get_spec(name)
    return hashlib.sha256(repr((spec.family, spec.config)).encode()).hexdigest()[:12]


def clear_memory_cache() -> None:
    """Forget in-process traces (the disk cache stays)."""
    _MEMORY_CACHE.clear()
