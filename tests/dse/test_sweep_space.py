import textwrap
from dataclasses import replace

import pytest
from dse_fakes import INT8_HW
from hypothesis import given, settings
from hypothesis import strategies as st

from accelsim.dse.space import ModelSpec, design_points, flatten_dict, named_recipe
from accelsim.dse.sweepfile import load_sweep
from accelsim.errors import AccelsimError
from accelsim.hw import hw_to_dict, load_hw

HW_FIELDS = flatten_dict(hw_to_dict(load_hw(INT8_HW)))


def write_sweep(tmp_path, body: str, name: str = "s.yaml"):
    path = tmp_path / name
    path.write_text(f"version: 1\nhw: {INT8_HW}\n" + textwrap.dedent(body))
    return path


def test_grid_and_recipes_expand_to_the_cartesian_product(tmp_path):
    path = write_sweep(tmp_path, """
        models: [toy, {name: toy2, seq_len: 16}]
        recipes: [w8a8, w4a4_sp24]
        grid:
          array.rows: {range: [16, 64], factor: 2}
          dram.bandwidth_gbps: {range: [10, 30], step: 10}
    """)
    spec = load_sweep(path)
    points = design_points(spec, HW_FIELDS)
    assert len(points) == 2 * 2 * 3 * 3
    assert {dict(p.overrides)["array.rows"] for p in points} == {16, 32, 64}
    assert {dict(p.overrides)["dram.bandwidth_gbps"] for p in points} == {10, 20, 30}
    assert points[0].model == ModelSpec("toy") and points[-1].model.seq_len == 16
    assert len(set(points)) == len(points)


def test_random_samples_are_seeded_in_range_and_rounded(tmp_path):
    body = """
        models: [toy]
        random:
          samples: 50
          seed: 7
          fields:
            sram.weights.size_kib: {loguniform: [64, 4096], multiple_of: 64}
            array.dataflow: {choice: [os, ws, is]}
            dram.bandwidth_gbps: {uniform: [10, 100]}
    """
    spec = load_sweep(write_sweep(tmp_path, body))
    first, again = design_points(spec, HW_FIELDS), design_points(spec, HW_FIELDS)
    assert first == again and len(first) == 50
    sizes = [dict(p.overrides)["sram.weights.size_kib"] for p in first]
    assert all(64 <= s <= 4096 and s % 64 == 0 for s in sizes)
    assert len(set(sizes)) > 10
    assert {dict(p.overrides)["array.dataflow"] for p in first} == {"os", "ws", "is"}
    other = load_sweep(write_sweep(tmp_path, body.replace("seed: 7", "seed: 8"), "o.yaml"))
    assert design_points(other, HW_FIELDS) != first


def test_variants_set_recipe_and_fields_together(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, """
        models: [toy]
        variants:
          int8: {recipe: w8a8, set: {precision.weight_bits: 8, precision.act_bits: 8}}
          int4_sp: {recipe: w4a4_sp24, set: {precision.weight_bits: 4, sparsity.support: "2:4"}}
        grid:
          array.cols: [32, 64]
    """))
    points = design_points(spec, HW_FIELDS)
    assert [(p.variant, p.recipe.name) for p in points[::2]] == [
        ("int8", "w8a8"), ("int4_sp", "w4a4_sp24")
    ]
    assert dict(points[2].overrides) == {
        "array.cols": 32, "precision.weight_bits": 4, "sparsity.support": "2:4"
    }


def test_hw_constraints_prune_before_simulation(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, """
        models: [toy]
        grid:
          array.rows: [16, 32, 64]
          array.cols: [16, 32, 64]
        constraints: ["array.rows >= 32", "area_mm2 <= 50"]
    """))
    points = design_points(spec, HW_FIELDS)
    assert len(points) == 6
    assert [c.is_hw for c in spec.constraints] == [True, False]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("models: [toy]\ngrid:\n  array.rowz: [1, 2]\n",
         "grid.array.rowz: unknown hardware field (did you mean 'array.rows'?)"),
        ("models: [toy]\ngrid:\n  array.rows: []\n", "grid.array.rows: empty range"),
        ("models: [toy]\ngrid:\n  array.rows: {range: [64, 16], step: 16}\n",
         "grid.array.rows: empty range"),
        ("models: [toy]\nrandom: {samples: 3, seed: 0, fields: {dram.bandwidth_gbps: "
         "{uniform: [9, 3]}}}\n", "random.fields.dram.bandwidth_gbps.uniform: empty range"),
        ("models: [toy]\nconstraints: ['area_mm2 <== 3']\n", "constraints[0]: 'area_mm2 <== 3' is"
         " not 'FIELD OP VALUE'"),
        ("models: [toy]\nconstraints: ['arae_mm2 <= 3']\n", "constraints[0]: 'arae_mm2' is "
         "neither a metric"),
        ("models: [toy]\nconstraints: ['area_mm2 <= big']\n", "<= needs a number"),
        ("models: [toy]\nconstraints: ['array.dataflow < 3']\n",
         "constraints[0]: array.dataflow is 'os', not a number"),
        ("models: [toy]\ngrid:\n  array.rows: [0]\n", "grid.array.rows:"),
        ("models: [toy]\nrecipes: [w3a3]\n", "recipes[0]: unknown recipe 'w3a3'"),
        ("models: [toy]\nrecipes: [{name: w4a8, weight_bits: 4, act_bits: 8}]\n",
         "recipes[0]: unknown recipe {'name': 'w4a8'"),
        ("models: [toy]\ngird: {}\n", "gird: unknown key"),
        ("models: []\n", "models: give at least one model"),
        ("models: [toy]\ngrid:\n  array.rows: [16]\nrandom: {samples: 2, seed: 0, fields: "
         "{array.rows: {choice: [8]}}}\n", "random.fields.array.rows: already varied by grid"),
        ("models: [toy]\nrandom: {samples: 2, fields: {array.rows: {choice: [8]}}}\n",
         "random.seed: None must be an integer"),
        ("models: [toy]\nmodels: [toy]\n", "duplicate key 'models'"),
    ],
)
def test_bad_sweep_file_is_one_clear_line(tmp_path, body, fragment):
    path = write_sweep(tmp_path, body)
    with pytest.raises(AccelsimError) as info:
        load_sweep(path)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message and str(path) in message


def test_bad_version_and_missing_file(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text(f"version: 2\nhw: {INT8_HW}\nmodels: [toy]\n")
    with pytest.raises(AccelsimError, match="version: 2 is not supported"):
        load_sweep(path)
    with pytest.raises(AccelsimError, match="sweep file not found"):
        load_sweep(tmp_path / "missing.yaml")


def test_project_recipes_are_read_from_their_files():
    paper = named_recipe("w4a4_sp24")
    assert (paper.weight_bits, paper.act_bits, paper.sparsity) == (4, 4, "2:4")
    assert paper.attention_bits == 8
    assert named_recipe("w8a8").sparsity == "dense"
    assert named_recipe("w8a8_sp24").sparsity == "2:4"
    assert named_recipe("no_such_recipe") is None
    assert not named_recipe("none").compressed and not named_recipe("fp32").compressed
    # Every field of the file is in the point key: two recipes with the same widths differ.
    assert named_recipe("w4a4_sp24").digest != named_recipe("w4a4_sp24_const_dropout").digest


def test_default_recipe_is_the_uncompressed_model(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, "models: [toy]\n"))
    assert [r.name for r in spec.recipes] == ["none"]


def test_model_spec_trace_kwargs_leave_defaults_to_the_zoo():
    assert ModelSpec("vit_b16").trace_kwargs() == {"batch": 1}
    spec = replace(ModelSpec("bert_base"), seq_len=64, batch=2)
    assert spec.trace_kwargs() == {"batch": 2, "seq_len": 64}


@settings(max_examples=25, deadline=None)
@given(
    rows=st.lists(st.integers(1, 256), min_size=1, max_size=4, unique=True),
    cols=st.lists(st.integers(1, 256), min_size=1, max_size=3, unique=True),
    samples=st.integers(1, 4),
)
def test_points_are_the_full_product_once_each(tmp_path_factory, rows, cols, samples):
    path = tmp_path_factory.mktemp("h") / "h.yaml"
    path.write_text(
        f"version: 1\nhw: {INT8_HW}\nmodels: [toy]\nrecipes: [none, w8a8]\n"
        f"grid: {{array.rows: {rows}, array.cols: {cols}}}\n"
        f"random: {{samples: {samples}, seed: 1, fields: "
        "{dram.bandwidth_gbps: {uniform: [1, 100]}}}\n"
    )
    points = design_points(load_sweep(path, HW_FIELDS), HW_FIELDS)
    assert len(points) == 2 * len(rows) * len(cols) * samples
    combos = {(p.recipe.name, dict(p.overrides)["array.rows"], dict(p.overrides)["array.cols"])
              for p in points}
    assert len(combos) == 2 * len(rows) * len(cols)
