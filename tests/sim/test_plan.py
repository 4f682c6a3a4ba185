"""Whole-graph memory planning: residency, widths, spills and prefetch (by hand, properties)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from sim_hw import tiny_hw

from accelsim.graph.ir import GemmNode, Graph, VectorNode
from accelsim.sim import simulate
from accelsim.sim.plan import (
    attention_chains,
    ffn_chains,
    plan_graph,
    plan_with_fusion,
)

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


def mlp(tokens: int = 8, dim: int = 8, hidden: int = 16) -> Graph:
    """fc1 -> gelu -> fc2 -> residual add (edges given), int8 on the tiny design point."""
    return Graph("mlp", (
        GemmNode("fc1", m=tokens, k=dim, n=hidden, inputs=("",)),
        VectorNode("gelu", vector_op="gelu", elements=tokens * hidden, inputs=("fc1",)),
        GemmNode("fc2", m=tokens, k=hidden, n=dim, inputs=("gelu",)),
        VectorNode("add", vector_op="add", elements=tokens * dim, inputs=("fc2", "")),
    ))


def test_intermediates_stay_on_chip_when_they_fit():
    # 1 KiB activation buffers each: fc1's output (8 x 16 at 16 bits for the GELU = 256 B) and
    # the GELU's output (8 x 16 at fc2's 8 bits = 128 B) never leave the chip.
    result = simulate(mlp(), tiny_hw())
    fc1, gelu, fc2, add = result.layers
    assert (fc1.dram.inputs, fc1.dram.outputs, fc1.dram.spills) == (64, 0, 0)
    assert gelu.dram_bytes == 0 and fc2.dram.spills == 0
    assert fc2.dram_bytes == fc2.dram.weights == 16 * 8
    # The add's second operand is a model input (8 x 8 at 16 bits); its output leaves the chip.
    assert (add.dram.inputs, add.dram.outputs) == (128, 128)
    assert result.totals.dram_bytes == 64 + 8 * 16 + 16 * 8 + 128 + 128


def test_each_tensor_is_stored_at_the_width_its_consumer_reads():
    plan = plan_graph(mlp(), tiny_hw(), [(0.0, 0.0)] * 4, [0] * 4)
    assert [p.output_bits for p in plan] == [16, 8, 16, 16]  # gelu/add read 16, fc2 reads 8
    assert plan[0].output_bytes == 8 * 16 * 2


def test_without_edges_each_node_reads_the_previous_one():
    graph = Graph("chain", (GemmNode("a", m=4, k=4, n=4), VectorNode("v", "gelu", 16),
                            GemmNode("qk", m=4, k=4, n=4, kind="matmul",
                                     weight_is_activation=True)))
    assert graph.sources() == (("",), ("a",), ("v", ""))


def test_a_small_buffer_spills_and_charges_the_reload():
    # 8 x 64 at 16 bits = 1 KiB pre-GELU tensor: with 1 KiB of activation buffers it cannot
    # stay, and fc2's 8 x 8 32-bit partial sums (256 B) do not fit a 128 B output buffer, so the
    # chain cannot run in hidden-column chunks either.
    graph = mlp(tokens=8, dim=8, hidden=64)
    roomy = simulate(graph, tiny_hw())
    tight = simulate(graph, tiny_hw(sram__inputs__size_kib=0.875,
                                    sram__outputs__size_kib=0.125))
    assert sum(layer.dram.spills for layer in roomy.layers) == 0
    fc1, gelu = tight.layers[:2]
    assert fc1.dram.spills == 8 * 64 * 2  # written once ...
    assert gelu.dram.spills == 8 * 64 * 2  # ... and re-loaded once by the GELU
    assert tight.totals.dram_bytes > roomy.totals.dram_bytes


def test_vector_ops_before_a_gemm_prefetch_its_first_weight_tile():
    # The LayerNorm takes 256 x 3 / 4 lanes = 192 cycles and moves its 512 B model input; at
    # 8 B/cycle that leaves 192 x 8 - 512 = 1024 B of DRAM time for the GEMM's weights.
    gemm = GemmNode("fc", m=4, k=64, n=64, inputs=("ln",))
    ln = VectorNode("ln", vector_op="layernorm", elements=4 * 64, row_length=64, inputs=("",))
    hw = tiny_hw(ideal_memory=False, sram__weights__size_kib=8, dram__bandwidth_gbps=8.0)
    plan = plan_graph(Graph("g", (ln, gemm)), hw, [(0.0, 0.0), (0.0, 0.0)], [192, 0])
    assert plan[1].prefetched_weight_bytes == 1024
    # A single-buffered weight buffer too small for all 4 KiB of weights loads each tile only
    # after the last one's steps (one that holds them whole overlaps its loads like a double
    # buffer).
    cold = simulate(Graph("g", (ln, gemm)), tiny_hw(ideal_memory=False,
                                                   sram__weights__size_kib=2,
                                                   dram__bandwidth_gbps=8.0,
                                                   sram__weights__double_buffered=False))
    warm = simulate(Graph("g", (ln, gemm)), hw)
    assert warm.layers[1].stall_cycles < cold.layers[1].stall_cycles


# -- properties ---------------------------------------------------------------------------------

sizes = st.sampled_from((4, 8, 16, 24, 64))
kib = st.sampled_from((0.25, 0.5, 1.0, 2.0, 8.0))


@st.composite
def transformer_like(draw) -> Graph:
    """A random stack of blocks with residual adds (edges given): optionally attention
    (Q, K, V -> QK^T -> softmax -> PV over 2 or 4 heads, a chain the planner may fuse), then
    GEMM -> GELU (-> requantize) -> GEMM (a chain the planner may run in hidden-column
    chunks)."""
    tokens, dim, hidden = draw(sizes), draw(sizes), draw(sizes)
    nodes: list = [VectorNode("embed", vector_op="add", elements=tokens * dim, inputs=("",))]
    residual = "embed"
    for b in range(draw(st.integers(min_value=1, max_value=3))):
        heads = draw(st.sampled_from((0, 2, 4)))
        if heads:
            nodes += [
                VectorNode(f"q{b}", vector_op="requantize", elements=tokens * dim,
                           inputs=(residual,)),
                VectorNode(f"k{b}", vector_op="requantize", elements=tokens * dim,
                           inputs=(residual,)),
                VectorNode(f"v{b}", vector_op="requantize", elements=tokens * dim,
                           inputs=(residual,)),
                GemmNode(f"qk{b}", m=tokens, k=dim // heads, n=tokens, count=heads,
                         kind="matmul", weight_is_activation=True, inputs=(f"q{b}", f"k{b}")),
                VectorNode(f"softmax{b}", vector_op="softmax", elements=tokens * tokens * heads,
                           row_length=tokens, inputs=(f"qk{b}",)),
                GemmNode(f"pv{b}", m=tokens, k=tokens, n=dim // heads, count=heads,
                         kind="matmul", weight_is_activation=True,
                         inputs=(f"softmax{b}", f"v{b}")),
                VectorNode(f"attn_add{b}", vector_op="add", elements=tokens * dim,
                           inputs=(f"pv{b}", residual)),
            ]
            residual = f"attn_add{b}"
        nodes += [
            VectorNode(f"ln{b}", vector_op="layernorm", elements=tokens * dim, row_length=dim,
                       inputs=(residual,)),
            GemmNode(f"fc1_{b}", m=tokens, k=dim, n=hidden, inputs=(f"ln{b}",)),
            VectorNode(f"gelu{b}", vector_op="gelu", elements=tokens * hidden,
                       inputs=(f"fc1_{b}",)),
        ]
        hidden_out = f"gelu{b}"
        if draw(st.booleans()):  # requantized for fc2, as traced graphs are
            nodes.append(VectorNode(f"quant{b}", vector_op="requantize",
                                    elements=tokens * hidden, inputs=(hidden_out,)))
            hidden_out = f"quant{b}"
        nodes += [
            GemmNode(f"fc2_{b}", m=tokens, k=hidden, n=dim, inputs=(hidden_out,)),
            VectorNode(f"add{b}", vector_op="add", elements=tokens * dim,
                       inputs=(f"fc2_{b}", residual)),
        ]
        residual = f"add{b}"
    return Graph("stack", tuple(nodes))


def _compulsory(graph: Graph) -> float:
    weights = sum(g.k * g.n * g.count for g in graph.gemms  # int8 on the tiny design point
                  if not g.weight_is_activation)
    first, last = graph.nodes[0], graph.nodes[-1]
    return weights + first.total_elements * 2 + last.total_elements * 2  # 16-bit vector ends


@SETTINGS
@given(transformer_like(), kib, kib, kib)
def test_dram_never_below_compulsory_traffic(graph, weights_kib, inputs_kib, outputs_kib):
    hw = tiny_hw(sram__weights__size_kib=weights_kib, sram__inputs__size_kib=inputs_kib,
                 sram__outputs__size_kib=outputs_kib)
    result = simulate(graph, hw)
    if result.feasible:
        assert result.totals.dram_bytes >= _compulsory(graph)
        assert sum(layer.dram.weights for layer in result.layers) >= sum(
            g.k * g.n for g in graph.gemms if not g.weight_is_activation)


@SETTINGS
@given(transformer_like(), kib, st.sampled_from(("weights", "inputs", "outputs")))
def test_dram_never_grows_when_a_buffer_grows(graph, size_kib, which):
    small = tiny_hw(**{f"sram__{which}__size_kib": size_kib})
    large = tiny_hw(**{f"sram__{which}__size_kib": size_kib * 2})
    before, after = simulate(graph, small), simulate(graph, large)
    if before.feasible:
        assert after.feasible
        assert after.totals.dram_bytes <= before.totals.dram_bytes


@SETTINGS
@given(transformer_like(), kib, kib)
def test_spills_only_when_the_live_set_exceeds_the_buffers(graph, inputs_kib, outputs_kib):
    hw = tiny_hw(sram__inputs__size_kib=inputs_kib, sram__outputs__size_kib=outputs_kib)
    result = simulate(graph, hw)
    if not result.feasible:
        return
    spills = sum(layer.dram.spills for layer in result.layers)
    # The largest live set: at every node, each tensor produced before it and read at or after
    # it, plus its own output, at the widths the plan stores them.
    plan = plan_graph(graph, hw, [(0.0, 0.0)] * len(graph.nodes), [0] * len(graph.nodes))
    srcs = graph.sources()
    index = {node.name: i for i, node in enumerate(graph.nodes)}
    last_use = {index[s]: i for i, node_srcs in enumerate(srcs) for s in node_srcs if s}
    peak = max(
        sum(plan[t].output_bytes for t, last in last_use.items() if t < i <= last)
        + (plan[i].output_bytes if i in last_use else 0.0)
        for i in range(len(graph.nodes)))
    # A GEMM's working tiles never exceed all its accumulators and all of A, double buffered.
    working = max(2 * (g.m * g.n * 4 + g.m * g.k) for g in graph.gemms)
    if spills:
        assert peak + working > hw.sram.inputs.size_bytes + hw.sram.outputs.size_bytes


# -- head-by-head attention ---------------------------------------------------------------------


def attention(tokens: int = 8, head_dim: int = 4, heads: int = 4) -> Graph:
    """Q, K, V requantized from the model input, QK^T -> softmax -> PV over ``heads`` repeats,
    then a residual add: the chain the planner may run one head at a time."""
    width = tokens * head_dim * heads
    return Graph("attention", (
        VectorNode("q", vector_op="requantize", elements=width, inputs=("",)),
        VectorNode("k", vector_op="requantize", elements=width, inputs=("",)),
        VectorNode("v", vector_op="requantize", elements=width, inputs=("",)),
        GemmNode("qk", m=tokens, k=head_dim, n=tokens, count=heads, kind="matmul",
                 weight_is_activation=True, inputs=("q", "k")),
        VectorNode("softmax", vector_op="softmax", elements=tokens * tokens * heads,
                   row_length=tokens, inputs=("qk",)),
        GemmNode("pv", m=tokens, k=tokens, n=head_dim, count=heads, kind="matmul",
                 weight_is_activation=True, inputs=("softmax", "v")),
        VectorNode("out", vector_op="add", elements=width, inputs=("pv", "")),
    ))


def test_attention_chain_is_found_only_when_adjacent_and_single_reader():
    assert attention_chains(attention()) == ((3, 5),)
    assert attention_chains(attention(heads=1)) == ()  # one head: nothing to interleave
    nodes = list(attention().nodes)
    nodes.insert(5, VectorNode("peek", vector_op="add", elements=256, inputs=("softmax", "")))
    assert attention_chains(Graph("forked", tuple(nodes))) == ()  # softmax has two readers


def test_head_by_head_attention_keeps_one_heads_scores_and_no_spill():
    # Q, K, V: 128 elements at 8 bits = 128 B each. Scores: 8 x 8 x 4 heads at 16 bits = 512 B
    # (64 x 2 = 128 B a head); probabilities at 8 bits 256 B (64 B a head); PV out 256 B.
    # Whole tensors: at QK^T, Q + K + V + scores = 896 B > 768 B, so V (read furthest ahead)
    # is written out (128 B) and PV re-loads it. One head at a time: Q + K + V + one head's
    # scores = 512 B, at PV Q + K + V + 64 B + 256 B = 704 B <= 768 B: nothing leaves the chip.
    graph = attention()
    hw = tiny_hw(sram__inputs__size_kib=0.375, sram__outputs__size_kib=0.375)
    none = [(0.0, 0.0)] * 7
    plain = plan_graph(graph, hw, none, [0] * 7)
    assert [p.evicted_bytes for p in plain] == [0, 0, 0, 128, 0, 0, 0]
    assert plain[5].reload_bytes == 128 and plain[5].operands_on_chip == (True, False)
    fused = plan_graph(graph, hw, none, [0] * 7, attention_chains(graph))
    assert sum(p.evicted_bytes + p.reload_bytes for p in fused) == 0
    assert [p.one_repeat_at_a_time for p in fused] == [False] * 3 + [True] * 3 + [False]
    assert fused[3].output_bytes == 512  # a spill would still move the whole tensor
    assert plan_with_fusion(graph, hw, none, [0] * 7) == fused
    # With room for the whole scores nothing spills, and fusion (array fill and drain per
    # head) is not taken.
    roomy = tiny_hw()
    assert plan_with_fusion(graph, roomy, none, [0] * 7) == plan_graph(graph, roomy, none,
                                                                       [0] * 7)


def test_head_by_head_gemms_pay_fill_and_drain_per_head():
    graph = attention()
    plain = simulate(graph, tiny_hw())
    # 896 B of activation buffers: the whole scores plus the GEMM's accumulator tiles do not
    # fit next to Q, K and V, one head's do.
    fused = simulate(graph, tiny_hw(sram__inputs__size_kib=0.4375,
                                    sram__outputs__size_kib=0.4375))
    assert sum(layer.dram.spills for layer in fused.layers) == 0
    qk_plain, qk_fused = plain.layers[3], fused.layers[3]
    # Per head one 8 x 4 x 8 GEMM on a 4x4 array; four separate fold streams cost more than one.
    assert qk_fused.compute_cycles > qk_plain.compute_cycles
    assert qk_fused.macs == qk_plain.macs == 8 * 4 * 8 * 4


# -- FFN in hidden-column chunks ----------------------------------------------------------------


def test_ffn_chain_is_found_only_for_element_wise_single_reader_links():
    assert ffn_chains(mlp()) == ((0, 2),)
    nodes = list(mlp().nodes)
    nodes.insert(2, VectorNode("peek", vector_op="add", elements=128, inputs=("gelu", "")))
    assert ffn_chains(Graph("forked", tuple(nodes))) == ()  # the GELU output has two readers
    nodes = list(mlp().nodes)
    nodes[1] = VectorNode("gelu", vector_op="layernorm", elements=128, row_length=16,
                          inputs=("fc1",))
    assert ffn_chains(Graph("rowwise", tuple(nodes))) == ()  # a row needs every column
    wide = GemmNode("fc2", m=8, k=32, n=8, inputs=("gelu",))
    assert ffn_chains(Graph("mismatch", mlp().nodes[:2] + (wide,))) == ()  # k != fc1's n


def test_ffn_chunks_are_the_fewest_that_fit():
    # fc1's output is 16 B a hidden column (8 rows at 16 bits), the GELU's 8 B (fc2 reads 8
    # bits); fc2's partial sums 8 x 8 x 4 B = 256 B, its output (read by the add) 128 B. With
    # a 640 B pool and no working tiles: room 640 - 256 = 384 B, so a chunk is at most
    # min(384 / 16, (384 - 128) / 8) = 24 columns: 64 columns in whole 4-column folds cut into
    # 2 (32 columns) do not fit, 4 (16 columns) do.
    graph = mlp(tokens=8, dim=8, hidden=64)
    hw = tiny_hw(sram__inputs__size_kib=0.125, sram__outputs__size_kib=0.5)
    none = [(0.0, 0.0)] * 4
    plan = plan_graph(graph, hw, none, [0] * 4, ffn_chains(graph))
    assert [(p.split_n, p.split_k) for p in plan] == [(4, 1), (1, 1), (1, 4), (1, 1)]
    assert sum(p.evicted_bytes + p.reload_bytes for p in plan) == 0
    assert plan[0].output_bytes == 8 * 64 * 2  # a spill would still move the whole tensor
    # 384 B more of room: 48 columns, two chunks.
    roomier = tiny_hw(sram__inputs__size_kib=0.5, sram__outputs__size_kib=0.5)
    assert plan_graph(graph, roomier, none, [0] * 4, ffn_chains(graph))[0].split_n == 2
    # Partial sums larger than the output buffer: the chain cannot be fused.
    small_out = tiny_hw(sram__inputs__size_kib=0.875, sram__outputs__size_kib=0.125)
    assert all(p.split_n == p.split_k == 1
               for p in plan_graph(graph, small_out, none, [0] * 4, ffn_chains(graph)))


def test_ffn_fusion_keeps_the_hidden_tensor_on_chip_and_prices_the_partial_sums():
    graph = mlp(tokens=8, dim=8, hidden=64)
    roomy = simulate(graph, tiny_hw())
    fused = simulate(graph, tiny_hw(sram__inputs__size_kib=0.5, sram__outputs__size_kib=0.5))
    assert sum(layer.dram.spills for layer in fused.layers) == 0
    assert fused.totals.dram_bytes == roomy.totals.dram_bytes  # weights still read once
    fc1, _, fc2, _ = fused.layers
    # Two chunks, each its own fold stream: fill and drain twice.
    assert fc1.compute_cycles > roomy.layers[0].compute_cycles
    assert fc2.compute_cycles > roomy.layers[2].compute_cycles
    assert fc2.macs == roomy.layers[2].macs == 8 * 64 * 8
    # fc2's 8 x 8 32-bit partial sums (256 B) go to the output buffer and back once a chunk.
    assert fc2.actions.sram_write_bytes_outputs == 2 * 256
    assert roomy.layers[2].actions.sram_write_bytes_outputs == 256


@SETTINGS
@given(transformer_like(), kib, kib)
def test_fusion_never_spills_more_than_the_whole_tensors(graph, inputs_kib, outputs_kib):
    hw = tiny_hw(sram__inputs__size_kib=inputs_kib, sram__outputs__size_kib=outputs_kib)
    none = [(0.0, 0.0)] * len(graph.nodes)
    cycles = [0] * len(graph.nodes)
    whole = plan_graph(graph, hw, none, cycles)
    fused = plan_with_fusion(graph, hw, none, cycles)

    def written(plans) -> float:
        return sum(p.evicted_bytes + p.output_bytes * p.output_is_spill for p in plans)

    assert written(fused) <= written(whole)
