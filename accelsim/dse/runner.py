"""Evaluate design points on local cores (process pool) or a Dask cluster.

The parent builds each (model and input shape, recipe) graph once, exactly as ``accelsim run`` does
(:func:`accelsim.graph.workload.workload_graph`: the zoo model compressed by the recipe file,
calibrated and traced, cached on disk), and ships the graphs and the base hardware config to every
worker once (pool initializer / Dask ``scatter``); tasks then carry
only batches of (key, graph id, overrides), so process overhead stays small next to simulation.
Workers import ``accelsim.sim`` but never torch. Results come back to the parent batch by batch,
in completion order; :func:`run_sweep` writes each batch to the store as one transaction before
reporting progress, so an interrupted sweep keeps every batch it reported.
"""

from __future__ import annotations

import hashlib
import logging
import math
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelsim import __version__
from accelsim.dse.accuracy_table import read_accuracy_table
from accelsim.dse.space import (
    UNCOMPRESSED,
    DesignPoint,
    ModelSpec,
    Recipe,
    SweepSpec,
    Value,
    design_points,
    flatten_dict,
)
from accelsim.dse.store import ResultStore, point_key
from accelsim.errors import AccelsimError
from accelsim.files import source_digest
from accelsim.graph.ir import Graph

_LOG = logging.getLogger(__name__)

Metrics = dict[str, Any]
EvaluateFn = Callable[[Graph, Any, Mapping[str, Value]], Metrics]
GraphFn = Callable[[ModelSpec, Recipe], Graph]
ProgressFn = Callable[[int, int], None]
# Tasks per worker when the batch size is chosen automatically: enough for a smooth progress bar
# and load balance, few enough that per-task overhead stays negligible.
TASKS_PER_WORKER = 8
MAX_BATCH = 256
ORPHAN_POLL_S = 1.0
# Seconds to wait for a Dask scheduler (it retries refused connections until then).
DASK_CONNECT_TIMEOUT_S = 10
# The code that turns a graph and a hardware config into a point's metrics (relative to the
# package): the simulator, the config loader, the IR the simulator reads and simulate_point here.
# The graph enters a point's key by its content, so the code that builds it needs no entry.
# graph/phases.py: the decoder phase graphs sim/generation.py reads (and compress/sites.py, whose
# site patterns give a phase graph's linears their per-site widths).
COST_MODEL_SOURCES: tuple[str, ...] = ("sim", "hw.py", "formats.py", "graph/ir.py",
                                       "graph/folds.py", "graph/phases.py", "compress/sites.py",
                                       "dse/runner.py")


@dataclass(frozen=True)
class Job:
    """One point to evaluate, as shipped to a worker (small: no graph, no config)."""

    key: str
    graph_id: str
    overrides: tuple[tuple[str, Value], ...]


@dataclass(frozen=True)
class WorkerContext:
    """What every worker receives once: the graphs, the base config and the evaluate function."""

    graphs: Mapping[str, Graph]
    base_hw: Any
    evaluate: EvaluateFn


@dataclass(frozen=True)
class SweepSummary:
    """Points in the sweep, already in the store (skipped), and evaluated by this run."""

    total: int
    skipped: int
    evaluated: int
    store: Path


ENERGY_PARTS = ("mac", "sram", "dram", "vector", "leakage")


def simulate_point(graph: Graph, base_hw: Any, overrides: Mapping[str, Value]) -> Metrics:
    """Default evaluation: apply the overrides and run the simulator.

    Returns the run's totals, plus where the time and energy went, summed over layers:
    ``compute_cycles``, ``stall_cycles`` and ``energy_<part>_uj`` for mac, sram, dram, vector and
    leakage.
    """
    from accelsim.hw import with_overrides
    from accelsim.sim.simulate import simulate

    result = simulate(graph, with_overrides(base_hw, dict(overrides)))
    parts = {
        f"energy_{part}_uj": sum(getattr(layer.energy, f"{part}_pj") for layer in result.layers)
        / 1e6
        for part in ENERGY_PARTS
    }
    return {
        "feasible": bool(result.feasible),
        "reason": result.reason or "",
        **_numeric_fields(result.totals),
        "compute_cycles": float(sum(layer.compute_cycles for layer in result.layers)),
        "stall_cycles": float(sum(layer.stall_cycles for layer in result.layers)),
        **parts,
    }


def cost_model_digest() -> str:
    """Digest of the :data:`COST_MODEL_SOURCES` files (read once per process), part of every
    point's key: editing the simulator makes new keys even without a version bump."""
    return source_digest(*COST_MODEL_SOURCES)


def _numeric_fields(totals: Any) -> dict[str, float]:
    items = totals.items() if isinstance(totals, Mapping) else vars(totals).items()
    return {
        name: float(value)
        for name, value in items
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def evaluate_batch(context: WorkerContext, jobs: Sequence[Job]) -> list[tuple[str, Metrics]]:
    return [
        (job.key, context.evaluate(context.graphs[job.graph_id], context.base_hw, job.overrides))
        for job in jobs
    ]


# ---------------------------------------------------------------------------------------------
# Executors: each yields (key, metrics) batches in completion order.

_WORKER_CONTEXT: WorkerContext | None = None


def _init_worker(context: WorkerContext) -> None:
    global _WORKER_CONTEXT
    _WORKER_CONTEXT = context
    # Ctrl-C is the parent's to handle: it stops submitting, waits for running batches and exits
    # cleanly; workers dying on the same signal would only print tracebacks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A parent killed outright (SIGKILL) cannot shut the pool down, and the workers' task queue
    # never reports end-of-file (each worker holds its write end): exit once orphaned.
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()


def _exit_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(ORPHAN_POLL_S)
    os._exit(1)


def _pool_batch(jobs: Sequence[Job]) -> list[tuple[str, Metrics]]:
    assert _WORKER_CONTEXT is not None, "worker started without its context"
    return evaluate_batch(_WORKER_CONTEXT, jobs)


def _batches(jobs: Sequence[Job], size: int) -> list[Sequence[Job]]:
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]


def _run_local(
    context: WorkerContext, batches: list[Sequence[Job]], workers: int
) -> Iterator[list[tuple[str, Metrics]]]:
    if workers == 1:  # no process to start: same results, no spawn cost
        for batch in batches:
            yield evaluate_batch(context, batch)
        return
    # spawn, not fork: the parent may hold torch's threads (it traced the models).
    executor = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(context,),
    )
    try:
        pending = {executor.submit(_pool_batch, batch) for batch in batches}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _dask_batch(context: WorkerContext, jobs: Sequence[Job]) -> list[tuple[str, Metrics]]:
    return evaluate_batch(context, jobs)


def _run_dask(
    context: WorkerContext, batches: list[Sequence[Job]], scheduler: str
) -> Iterator[list[tuple[str, Metrics]]]:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise AccelsimError(
            "--scheduler needs Dask's distributed package: pip install 'distributed>=2024.1'"
        ) from None
    try:
        client = Client(scheduler, timeout=DASK_CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise AccelsimError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
    try:
        [shared] = client.scatter([context], broadcast=True)
        futures = [client.submit(_dask_batch, shared, batch, pure=False) for batch in batches]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            client.cancel(futures)
    finally:
        client.close()


def evaluate_jobs(
    jobs: Sequence[Job],
    context: WorkerContext,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    batch_size: int | None = None,
) -> Iterator[list[tuple[str, Metrics]]]:
    """Evaluate jobs locally (``workers`` processes, default all cores) or on ``scheduler``."""
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise AccelsimError(f"--workers {workers}: must be >= 1")
    size = batch_size or min(MAX_BATCH, max(1, math.ceil(len(jobs) / (workers * TASKS_PER_WORKER))))
    batches = _batches(list(jobs), size)
    if not batches:  # nothing left to do: start no processes, contact no cluster
        return iter(())
    if scheduler:
        return _run_dask(context, batches, scheduler)
    return _run_local(context, batches, min(workers, len(batches)))


# ---------------------------------------------------------------------------------------------
# A whole sweep: points -> keys -> skip finished -> evaluate -> store.


def workload_model_graph(model: ModelSpec, recipe: Recipe) -> Graph:
    """Default graph source: the zoo model at the sweep's input shape, compressed by the recipe
    (``none``: uncompressed), the very graph ``accelsim run --recipe NAME`` simulates."""
    from accelsim.graph.workload import workload_graph

    name = None if recipe.name == UNCOMPRESSED else recipe.name
    return workload_graph(model.name, recipe=name, **model.trace_kwargs())


def run_sweep(
    spec: SweepSpec,
    store_path: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    batch_size: int | None = None,
    progress: ProgressFn | None = None,
    evaluate: EvaluateFn = simulate_point,
    graph_fn: GraphFn = workload_model_graph,
) -> SweepSummary:
    """Run a sweep into a store, skipping points it already holds.

    ``progress(done, total)`` is called once before the first batch and after each batch is
    committed (``total`` counts the points still to evaluate when the run started). An exception
    raised by ``progress`` stops the sweep; everything reported before it stays in the store.
    """
    from accelsim.hw import hw_to_dict, load_hw

    base_hw = load_hw(spec.hw_path)
    base_fields = flatten_dict(hw_to_dict(base_hw))
    points = design_points(spec, base_fields)
    graphs = _workload_graphs(spec, points, graph_fn)
    graph_digests = {
        graph_id: hashlib.sha256(graph.to_json().encode()).hexdigest()
        for graph_id, graph in graphs.items()
    }
    source = cost_model_digest()
    rows = {}
    jobs = []
    with ResultStore(store_path) as store:
        # Hardware-field constraints already pruned the points; metric ones are applied on load.
        metric_constraints = [[c.field, c.op, c.value] for c in spec.constraints if not c.is_hw]
        store.set_meta("constraints", metric_constraints)
        store.set_meta(
            "sweep", {"name": spec.name, "file": str(spec.path), "description": spec.description}
        )
        store.set_accuracy(read_accuracy_table(spec.accuracy_csv))
        finished = store.finished_keys()
        for point in points:
            graph_id = _graph_id(point)
            key = point_key(
                _resolved_fields(base_fields, point.overrides), point.model.name,
                graphs[graph_id].input_shape, point.recipe, __version__,
                source=source, graph=graph_digests[graph_id],
            )
            if key in finished or key in rows:
                continue
            rows[key] = _identity_row(spec, point, graphs[graph_id], key)
            jobs.append(Job(key, graph_id, point.overrides))
        context = WorkerContext(graphs, base_hw, evaluate)
        done = 0
        if progress is not None:
            progress(0, len(jobs))
        for batch in evaluate_jobs(
            jobs, context, workers=workers, scheduler=scheduler, batch_size=batch_size
        ):
            store.write([{**rows[key], **metrics} for key, metrics in batch])
            done += len(batch)
            if progress is not None:
                progress(done, len(jobs))
    return SweepSummary(total=len(points), skipped=len(points) - len(jobs), evaluated=done,
                        store=Path(store_path))


def _graph_id(point: DesignPoint) -> str:
    return f"{point.model}|{point.recipe}"


def _workload_graphs(
    spec: SweepSpec, points: Sequence[DesignPoint], graph_fn: GraphFn
) -> dict[str, Graph]:
    """One graph per (model, recipe), built in this process (workers never import torch)."""
    graphs: dict[str, Graph] = {}
    needed = len({_graph_id(point) for point in points})
    for point in points:
        graph_id = _graph_id(point)
        if graph_id not in graphs:
            # A graph not cached yet takes seconds to minutes: say which one is being built.
            _LOG.info("%s: workload graph %d/%d: %s, recipe %s", spec.name, len(graphs) + 1,
                      needed, point.model.name, point.recipe.name)
            try:
                graphs[graph_id] = graph_fn(point.model, point.recipe)
            except AccelsimError as exc:
                raise AccelsimError(
                    f"{spec.path}: models: {point.model.name} with recipe {point.recipe.name}: "
                    f"{exc}"
                ) from None
    return graphs


def _resolved_fields(
    base_fields: Mapping[str, Any], overrides: Sequence[tuple[str, Value]]
) -> dict[str, Any]:
    """The flattened config a point simulates, numbers typed as the config validates them."""
    resolved = dict(base_fields)
    for name, value in overrides:
        base = base_fields[name]
        is_int = isinstance(value, int) and not isinstance(value, bool)
        resolved[name] = float(value) if isinstance(base, float) and is_int else value
    return resolved


def _identity_row(spec: SweepSpec, point: DesignPoint, graph: Graph, key: str) -> dict[str, Any]:
    import json

    return {
        "key": key,
        "sweep": spec.name,
        "model": point.model.name,
        "input_shape": json.dumps(graph.input_shape, sort_keys=True),
        "recipe": point.recipe.name,
        "variant": point.variant,
        "overrides": json.dumps(dict(point.overrides), sort_keys=True),
        "accelsim_version": __version__,
    }
