"""Decoder phases on a design point: time to first token, time per output token, tokens/s and
energy per token, a whole generation, and the batch where decoding turns compute-bound.

Each pass (a prefill, one decode step) is one :func:`accelsim.sim.simulate` of its
:class:`~accelsim.graph.phases.PhaseGraph`, whose KV cache the memory plan places: resident in
the activation buffers across passes when it fits there beside the pass's activations (no DRAM
read; the new positions written on chip), else in DRAM (read every pass, the new positions
written there). Its latency splits into the DRAM bandwidth bound
(all bytes the pass moves / DRAM bandwidth) and what does not overlap with it in this model:
the vector unit (serialized with the array) and, per GEMM, the part of its time not covered by
its own transfers (the first fold's operands before the array starts and the last fold's
results after it ends, plus compute beyond the transfers in compute-bound layers).

A generation is the prefill (which yields the first token) plus ``gen_len - 1`` decode steps at
contexts ``prompt_len .. prompt_len + gen_len - 2``, every step simulated exactly (its graph
comes from the caller, e.g. :func:`accelsim.graph.phases.affine_in` over two traces).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from accelsim.graph.phases import PhaseGraph
from accelsim.hw import HwConfig
from accelsim.sim import sparse
from accelsim.sim.simulate import SimResult, simulate


@dataclass(frozen=True)
class PassCost:
    """One simulated prefill or decode step (a feasible result)."""

    phase: str
    shape: dict[str, int]
    result: SimResult
    weight_bytes: int  # one copy of every chip weight GEMM's stored B operand (packed 2:4 if
    # skipping; a host GEMM's weights are the host's)
    kv_cache_placement: str  # "sram": resident on chip across passes; "dram"
    kv_cache_bytes: int  # the KV cache tensors the pass attends over, at their stored width
    kv_read_bytes: int  # of those, read from DRAM (all of them in DRAM, none on chip)
    kv_write_bytes: int  # the positions this pass adds to the cache (into SRAM or DRAM)
    bandwidth_bound_ms: float  # result DRAM bytes / DRAM bandwidth
    vector_ms: float  # vector-unit time (serialized with the array)
    gemm_exposed_ms: float  # GEMM time not hidden under its own transfers

    @property
    def latency_ms(self) -> float:
        return self.result.totals.latency_ms

    @property
    def energy_uj(self) -> float:
        return self.result.totals.energy_uj

    @property
    def dram_bytes(self) -> int:
        return self.result.totals.dram_bytes

    @property
    def compute_cycles(self) -> int:
        return sum(layer.compute_cycles for layer in self.result.layers if layer.op == "gemm")

    def to_dict(self) -> dict:
        return {"phase": self.phase, **self.shape, "latency_ms": self.latency_ms,
                "energy_uj": self.energy_uj, "dram_bytes": self.dram_bytes,
                "weight_bytes": self.weight_bytes,
                "kv_cache_placement": self.kv_cache_placement,
                "kv_cache_bytes": self.kv_cache_bytes, "kv_read_bytes": self.kv_read_bytes,
                "kv_write_bytes": self.kv_write_bytes,
                "bandwidth_bound_ms": self.bandwidth_bound_ms, "vector_ms": self.vector_ms,
                "gemm_exposed_ms": self.gemm_exposed_ms}


class InfeasiblePass(Exception):
    """A pass whose smallest tile does not fit (a result for the caller to report)."""

    def __init__(self, result: SimResult) -> None:
        super().__init__(result.reason)
        self.result = result


def simulate_pass(phase_graph: PhaseGraph, hw: HwConfig) -> PassCost:
    """Simulate one prefill or decode step; raises :class:`InfeasiblePass` if it does not fit."""
    result = simulate(phase_graph.graph, hw, kv_cache=phase_graph.kv_cache)
    if not result.feasible:
        raise InfeasiblePass(result)
    layers = {layer.name: layer for layer in result.layers}
    attention = {node.name for node in phase_graph.graph.gemms if node.weight_is_activation}
    weight_bits = sum(
        layer.k * layer.n * layer.count
        * sparse.weight_bits_per_element(layer.weight_bits, layer.skipping)
        for layer in result.layers
        if layer.op == "gemm" and not layer.on_host and layer.name not in attention)
    kv_bits = kv_write_bits = 0
    for tensor in phase_graph.kv_cache:
        bits = layers[tensor.read_by].weight_bits
        kv_bits += tensor.elements * bits
        kv_write_bits += tensor.written_elements * bits
    placement = result.kv_cache_placement or "dram"
    cycles_per_ms = hw.array.clock_mhz * 1e3
    bytes_per_cycle = hw.dram_bytes_per_cycle
    # Each layer's time beyond its own DRAM transfers (the memory plan gives vector ops DRAM
    # traffic too: a spilled residual re-loaded), so bound + vector + GEMM parts = latency.
    exposed = {"vector": 0.0, "gemm": 0.0}
    for layer in result.layers:
        exposed[layer.op] += layer.cycles - layer.dram_bytes / bytes_per_cycle
    return PassCost(
        phase=phase_graph.phase, shape=dict(phase_graph.shape), result=result,
        weight_bytes=round(weight_bits / 8), kv_cache_placement=placement,
        kv_cache_bytes=round(kv_bits / 8),
        kv_read_bytes=round(kv_bits / 8) if placement == "dram" else 0,
        kv_write_bytes=round(kv_write_bits / 8),
        bandwidth_bound_ms=result.totals.dram_bytes / bytes_per_cycle / cycles_per_ms,
        vector_ms=exposed["vector"] / cycles_per_ms,
        gemm_exposed_ms=exposed["gemm"] / cycles_per_ms)


@dataclass(frozen=True)
class PhaseMetrics:
    """What a phase delivers per token. ``ttft_ms``: time to first token (the prefill);
    ``ms_per_token``: one decode step (for a generation the mean over its decode steps, None
    when ``gen_len`` is 1); ``tokens_per_s`` and ``uj_per_token`` count the tokens the phase
    produces over all sequences of the batch (prompt tokens for a prefill)."""

    phase: str
    latency_ms: float
    energy_uj: float
    dram_bytes: int
    tokens: int
    ttft_ms: float | None
    ms_per_token: float | None
    tokens_per_s: float
    uj_per_token: float

    def to_dict(self) -> dict:
        return {"phase": self.phase, "latency_ms": self.latency_ms, "energy_uj": self.energy_uj,
                "dram_bytes": self.dram_bytes, "tokens": self.tokens, "ttft_ms": self.ttft_ms,
                "ms_per_token": self.ms_per_token, "tokens_per_s": self.tokens_per_s,
                "uj_per_token": self.uj_per_token}


def _metrics(phase: str, latency_ms: float, energy_uj: float, dram_bytes: int, tokens: int,
             ttft_ms: float | None, ms_per_token: float | None) -> PhaseMetrics:
    return PhaseMetrics(phase, latency_ms, energy_uj, dram_bytes, tokens, ttft_ms, ms_per_token,
                        tokens / (latency_ms / 1e3), energy_uj / tokens)


def prefill_metrics(cost: PassCost) -> PhaseMetrics:
    tokens = cost.shape["batch"] * cost.shape["prompt_len"]
    return _metrics("prefill", cost.latency_ms, cost.energy_uj, cost.dram_bytes, tokens,
                    cost.latency_ms, None)


def decode_metrics(cost: PassCost) -> PhaseMetrics:
    return _metrics("decode", cost.latency_ms, cost.energy_uj, cost.dram_bytes,
                    cost.shape["batch"], None, cost.latency_ms)


@dataclass(frozen=True)
class Generation:
    """A prefill plus its decode steps, each simulated."""

    prefill: PassCost
    steps: tuple[PassCost, ...]
    gen_len: int

    @property
    def metrics(self) -> PhaseMetrics:
        passes = (self.prefill, *self.steps)
        latency_ms = sum(p.latency_ms for p in passes)
        decode_ms = sum(p.latency_ms for p in self.steps)
        return _metrics(
            "generate", latency_ms, sum(p.energy_uj for p in passes),
            sum(p.dram_bytes for p in passes), self.prefill.shape["batch"] * self.gen_len,
            self.prefill.latency_ms, decode_ms / len(self.steps) if self.steps else None)


def simulate_generation(prefill: PhaseGraph, decode_at: Callable[[int], PhaseGraph],
                        gen_len: int, hw: HwConfig) -> Generation:
    """The prefill, then one decode step per further token at contexts ``prompt_len`` ..
    ``prompt_len + gen_len - 2`` (``decode_at(context)`` gives each step's graph)."""
    prompt_len = prefill.shape["prompt_len"]
    first = simulate_pass(prefill, hw)
    steps = tuple(simulate_pass(decode_at(context), hw)
                  for context in range(prompt_len, prompt_len + gen_len - 1))
    return Generation(first, steps, gen_len)


def compute_bound(cost: PassCost, hw: HwConfig) -> bool:
    """Whether the array's compute cycles reach the time the pass's DRAM bytes need."""
    return cost.compute_cycles >= cost.dram_bytes / hw.dram_bytes_per_cycle


def crossover_batch(decode_at_batch: Callable[[int], PhaseGraph], hw: HwConfig,
                    max_batch: int = 4096) -> int | None:
    """Smallest batch whose decode step is compute-bound (:func:`compute_bound`), by doubling
    then bisection (the compute/traffic ratio grows with the batch: weights are shared by all
    sequences, the KV cache is not); ``None`` if still memory-bound at ``max_batch`` or a batch
    on the way does not fit."""
    def bound(batch: int) -> bool:
        return compute_bound(simulate_pass(decode_at_batch(batch), hw), hw)

    try:
        low, high = 0, 1
        while not bound(high):
            if high >= max_batch:
                return None
            low, high = high, min(2 * high, max_batch)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if bound(middle) else (middle, high)
    except InfeasiblePass:
        return None
    return high
