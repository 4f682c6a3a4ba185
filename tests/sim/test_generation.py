"""Decoder phases on a design point (accelsim.sim.generation), on tiny traced decoders: the
issue's decode check as properties, a generation's totals and the crossover batch."""

from __future__ import annotations

import pytest

from accelsim.graph import decoder_trace
from accelsim.graph.phases import DecoderPrecision, affine_in, with_precision
from accelsim.hw import load_hw, with_overrides
from accelsim.sim import generation as gen
from accelsim.zoo.decoders import resolve_phase_shape
from tests.sim.sim_hw import CONFIGS

W4A4_SP24 = DecoderPrecision(weight_bits=4, act_bits=4, attention_bits=8, kv_bits=8,
                             sparsity="2:4")


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACCELSIM_CACHE", str(tmp_path_factory.mktemp("generation-cache")))
        yield


def step(context: int, batch: int = 1, name: str = "gpt2_tiny"):
    shape = resolve_phase_shape(name, "decode", batch=batch, context=context)
    return with_precision(decoder_trace.trace_phase(name, "decode", shape), W4A4_SP24)


# 1 KiB input and output buffers: 2 KiB of activation SRAM, less than the tiny decoder's KV
# cache at the contexts below (2 layers x 2 x 4 heads x 8 dims = 128 B a position), so the
# plan keeps it in DRAM; int4_sparse's 1.5 MiB holds it.
KV_IN_DRAM = {"sram.inputs.size_kib": 1, "sram.outputs.size_kib": 1}


def hw(bandwidth_gbps: float = 34.0, **changes: object):
    return with_overrides(load_hw(CONFIGS / "int4_sparse.yaml"),
                          {"dram.bandwidth_gbps": bandwidth_gbps, **changes})


def dram_kv_hw(bandwidth_gbps: float = 34.0):
    return hw(bandwidth_gbps, **KV_IN_DRAM)


@pytest.mark.parametrize("bandwidth_gbps", [1.0, 34.0])
def test_decode_step_moves_weights_and_kv_and_splits_its_latency(bandwidth_gbps):
    """Holds in any memory model: the step moves at least its packed weights and the KV cache
    it attends over, its latency is at least the bandwidth bound, and the bound plus the
    parts that do not overlap add up to the latency."""
    design = dram_kv_hw(bandwidth_gbps)
    cost = gen.simulate_pass(step(20), design)
    assert cost.kv_cache_placement == "dram"
    assert cost.dram_bytes >= cost.weight_bytes + cost.kv_read_bytes
    # 2 layers x (key + value) x 4 heads x 21 positions x 8 dims at 8 bits.
    assert cost.kv_read_bytes == 2 * 2 * 4 * 21 * 8
    assert cost.kv_write_bytes == 2 * 2 * 4 * 1 * 8
    assert cost.latency_ms >= 0.999999 * cost.bandwidth_bound_ms
    parts = cost.bandwidth_bound_ms + cost.vector_ms + cost.gemm_exposed_ms
    assert parts == pytest.approx(cost.latency_ms, rel=1e-9)
    metrics = gen.decode_metrics(cost)
    assert metrics.ms_per_token == cost.latency_ms
    assert metrics.tokens_per_s == pytest.approx(1e3 / cost.latency_ms)
    assert metrics.uj_per_token == cost.energy_uj


def test_decode_at_batch_1_sits_at_the_bandwidth_bound_when_memory_dominates():
    """At 1 GB/s the tiny step's bytes dominate: latency x bandwidth within 0.95-1.5x of the
    DRAM bytes (the issue's window for gpt2 at 34 GB/s)."""
    cost = gen.simulate_pass(step(20), dram_kv_hw(1.0))
    ratio = cost.latency_ms * 1e-3 * 1e9 / cost.dram_bytes
    assert 0.95 <= ratio <= 1.5


def test_doubling_the_context_adds_kv_bytes():
    design = dram_kv_hw()
    short, long = gen.simulate_pass(step(16), design), gen.simulate_pass(step(32), design)
    assert long.kv_read_bytes == pytest.approx(2 * short.kv_read_bytes, rel=0.04)  # 33 vs 17
    assert long.dram_bytes - short.dram_bytes >= long.kv_read_bytes - short.kv_read_bytes
    assert long.weight_bytes == short.weight_bytes


def test_generation_is_the_prefill_plus_one_step_per_further_token():
    design = hw()
    shape = resolve_phase_shape("gpt2_tiny", "prefill", prompt_len=8)
    prefill = with_precision(decoder_trace.trace_phase("gpt2_tiny", "prefill", shape), W4A4_SP24)
    first, second = (decoder_trace.trace_phase("gpt2_tiny", "decode",
                                               {"batch": 1, "context": c}) for c in (8, 9))

    def decode_at(context):
        return with_precision(affine_in("context", first, second, context), W4A4_SP24)

    run = gen.simulate_generation(prefill, decode_at, 5, design)
    assert [s.shape["context"] for s in run.steps] == [8, 9, 10, 11]
    assert run.steps[2].latency_ms == gen.simulate_pass(step(10), design).latency_ms
    m = run.metrics
    assert m.latency_ms == pytest.approx(run.prefill.latency_ms
                                         + sum(s.latency_ms for s in run.steps))
    assert m.ttft_ms == run.prefill.latency_ms
    assert m.tokens == 5 and m.tokens_per_s == pytest.approx(5 / (m.latency_ms / 1e3))
    assert m.uj_per_token == pytest.approx(m.energy_uj / 5)
    assert m.ms_per_token == pytest.approx(sum(s.latency_ms for s in run.steps) / 4)
    assert gen.simulate_generation(prefill, decode_at, 1, design).metrics.ms_per_token is None


def test_crossover_batch_is_the_first_compute_bound_batch():
    # At 8 GB/s the tiny step turns compute-bound at a small batch; at 4 GB/s it never does,
    # since each sequence's KV cache read grows with the batch as fast as its attention work.
    design = hw(8.0)
    one, two = (decoder_trace.trace_phase("gpt2_tiny", "decode", {"batch": b, "context": 8})
                for b in (1, 2))

    def at_batch(batch):
        return with_precision(affine_in("batch", one, two, batch), W4A4_SP24)

    batch = gen.crossover_batch(at_batch, design)
    assert batch is not None and batch > 1
    assert gen.compute_bound(gen.simulate_pass(at_batch(batch), design), design)
    assert not gen.compute_bound(gen.simulate_pass(at_batch(batch - 1), design), design)
    assert gen.crossover_batch(at_batch, design, max_batch=batch - 1) is None


def test_kv_cache_stays_on_chip_when_it_fits_its_buffers():
    """int4_sparse's 1.5 MiB of activation SRAM holds the 2,688 B cache across steps: no DRAM
    read of it and the new token's 128 B written on chip, against the same step with the cache
    in DRAM (2 KiB of activation SRAM: read every step, the new positions written out)."""
    on_chip = gen.simulate_pass(step(20), hw())
    in_dram = gen.simulate_pass(step(20), dram_kv_hw())
    assert (on_chip.kv_cache_placement, in_dram.kv_cache_placement) == ("sram", "dram")
    assert on_chip.kv_cache_bytes == in_dram.kv_cache_bytes == 2 * 2 * 4 * 21 * 8
    assert on_chip.kv_write_bytes == in_dram.kv_write_bytes == 2 * 2 * 4 * 8
    assert (on_chip.kv_read_bytes, in_dram.kv_read_bytes) == (0, in_dram.kv_cache_bytes)
    assert on_chip.dram_bytes == in_dram.dram_bytes - in_dram.kv_cache_bytes - 2 * 2 * 4 * 8
    assert on_chip.result.to_dict()["kv_cache_placement"] == "sram"
    assert on_chip.to_dict()["kv_cache_bytes"] == 2688
    # Every KV write leaves the chip at the cache's 8 bits when the cache is in DRAM.
    writes = [layer for layer in in_dram.result.layers if layer.name.endswith("_cache/requantize")]
    assert [layer.dram.outputs for layer in writes] == [4 * 8] * 4
    assert all(layer.dram_bytes == 0 for layer in on_chip.result.layers
               if layer.name.endswith("_cache/requantize"))
