"""Decoder phase results (:mod:`accelsim.sim.generation`) as the text lines and JSON of
``accelsim run --phase``."""

from __future__ import annotations

from accelsim.report.tables import host_lines
from accelsim.report.tables import with_si_prefix as si
from accelsim.sim.generation import Generation, PassCost, PhaseMetrics


def metrics_lines(metrics: PhaseMetrics) -> list[str]:
    """Per-token figures of a phase, most wanted first."""
    lines = []
    if metrics.ttft_ms is not None:
        lines.append(f"  TTFT        {metrics.ttft_ms:.4f} ms (time to first token: the prefill)")
    if metrics.ms_per_token is not None:
        what = "mean decode step" if metrics.phase == "generate" else "one decode step"
        lines.append(f"  per token   {metrics.ms_per_token:.4f} ms per output token ({what})")
    unit = "prompt tokens" if metrics.phase == "prefill" else "output tokens"
    lines += [
        f"  tokens/s    {metrics.tokens_per_s:,.1f} ({unit} over the batch: {metrics.tokens:,})",
        f"  energy      {metrics.uj_per_token:.3f} uJ per token ({metrics.energy_uj:.3f} uJ "
        "total)",
    ]
    return lines


def traffic_lines(cost: PassCost, dram_gbps: float) -> list[str]:
    """Where a pass's DRAM bytes go and how its latency splits against the bandwidth bound."""
    other = cost.dram_bytes - cost.weight_bytes - cost.kv_read_bytes
    on_chip = cost.kv_cache_placement == "sram"
    where = "on chip (resident in the activation buffers across steps)" if on_chip else "in DRAM"
    other_what = "activations" if on_chip else "activations, KV writes"
    return [
        f"  KV cache    {si(cost.kv_cache_bytes, 'B')} {where}; this pass writes "
        f"{si(cost.kv_write_bytes, 'B')}",
        f"  DRAM        {si(cost.dram_bytes, 'B')}: weights {si(cost.weight_bytes, 'B')}, "
        f"KV cache read {si(cost.kv_read_bytes, 'B')},"
        f" other {si(other, 'B')} ({other_what})",
        f"  bound       {cost.bandwidth_bound_ms:.4f} ms at {dram_gbps:g} GB/s + vector unit "
        f"{cost.vector_ms:.4f} ms + GEMM time not under its transfers "
        f"{cost.gemm_exposed_ms:.4f} ms = {cost.latency_ms:.4f} ms "
        f"({cost.latency_ms / cost.bandwidth_bound_ms:.3f}x the bandwidth bound)",
    ]


def crossover_line(batch: int | None, max_batch: int) -> str:
    if batch is None:
        return (f"  crossover   decode stays memory-bound up to batch {max_batch} (array compute "
                "cycles below the DRAM transfer time)")
    return (f"  crossover   decode turns compute-bound at batch {batch} (array compute cycles "
            ">= DRAM transfer time)")


def generation_lines(generation: Generation) -> list[str]:
    steps, prefill = generation.steps, generation.prefill
    lines = [f"  prefill     {prefill.latency_ms:.4f} ms, {prefill.energy_uj:.3f} uJ, "
             f"DRAM {si(prefill.dram_bytes, 'B')}", *host_lines(prefill.result)]
    if steps:
        first, last = steps[0], steps[-1]
        lines.append(
            f"  decode      {len(steps)} steps at contexts {first.shape['context']}.."
            f"{last.shape['context']}: {first.latency_ms:.4f} .. {last.latency_ms:.4f} ms per "
            f"step, {sum(s.latency_ms for s in steps):.4f} ms in all (every step simulated)")
    metrics = generation.metrics
    lines.append(f"  total       {metrics.latency_ms:.4f} ms, {metrics.energy_uj:.3f} uJ, "
                 f"DRAM {si(metrics.dram_bytes, 'B')}")
    return lines


def generation_json(generation: Generation) -> dict:
    return {**generation.metrics.to_dict(), "gen_len": generation.gen_len,
            "prefill": generation.prefill.to_dict(),
            "steps": [step.to_dict() for step in generation.steps]}
