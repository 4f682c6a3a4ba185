"""Zoo models traced by name, cached in-process and on disk.

:func:`trace_named_model` traces a zoo model (built on the meta device, or an already built, e.g.
compressed, module of that name) with :mod:`accelsim.graph.trace`. Each graph is kept in memory
and as JSON under ``<cache>/traces``, keyed by model name, input shape, a fingerprint of the
module and the tracer/torch/transformers versions, so a sweep traces each (model, shape) once.

``torch.export`` needs shapes only: a built module's precision annotations (the one thing its
weights decide) are read first, then the module moves to the meta device and exports as a
meta-device structure does. A compressed ViT-L/16 then no longer holds a second, dequantized copy
of its weights while exporting, and the export does no arithmetic on real tensors.
A trace logs a line (logger ``accelsim.graph.trace_cache``) before it starts: it takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from accelsim import zoo
from accelsim.compress.precision import ATTENTION_ATTR, LINEAR_ATTR
from accelsim.errors import AccelsimError
from accelsim.files import write_text_atomic
from accelsim.graph.ir import Graph
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
    if model is None:
        config = repr((spec.family, spec.config)).encode()
        fingerprint = "zoo" + hashlib.sha256(config).hexdigest()[:12]
    else:
        fingerprint = module_fingerprint(model, precisions)
    key = trace_cache_key(name, shape, fingerprint)
    if key in _MEMORY_CACHE:
        return _MEMORY_CACHE[key]
    path = _disk_path(key)
    if path.is_file():
        try:
            graph = Graph.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError, AccelsimError):
            graph = None  # a stale or damaged entry is re-traced and overwritten
        if graph is not None:
            _MEMORY_CACHE[key] = graph
            return graph
    start = time.perf_counter()
    source = "meta-device structure" if model is None else "compressed module, on the meta device"
    _LOG.info("%s: tracing with torch.export (%s)", name, source)
    # Tracing needs shapes, not values: a meta-device build skips the random init (seconds for
    # the large models), and a built module's weights are released.
    module = model.to("meta") if model is not None else zoo.build_structure(
        name, image_size=shape.get("image_size")
    )
    inputs = {key: value.to("meta") for key, value in zoo.inputs_for_shape(spec, shape).items()}
    exported = export_module(module, inputs, name=name)
    graph = graph_from_exported(
        exported, module, name=name, input_shape=shape, precisions=precisions
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, graph.to_json())
    _LOG.info("%s: traced in %.1f s", name, time.perf_counter() - start)
    _MEMORY_CACHE[key] = graph
    return graph


def clear_memory_cache() -> None:
    """Forget in-process traces (the disk cache stays)."""
    _MEMORY_CACHE.clear()
