"""The import layers of accelsim (docs/layout.md), checked on the source with an ast walk.

Layers, top to bottom; a module may import its own component and any component in a LOWER
layer, never a higher one, and the components sharing a layer are independent of each other:

    cli > codesign > dse > report | accuracy > tasks > ref | sim > graph > compress > hw | zoo
        > formats > files | assets > errors | heap

Every import counts, including imports inside functions (the lazy ones that keep the CLI fast)
and under ``TYPE_CHECKING``: a lazy import is still a dependency. ``sim`` imports neither torch
nor numba, ``graph`` does not import ``hw``, and the light entry points really stay light (checked
in a fresh interpreter).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "accelsim"
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__",),
    ("cli",),
    ("codesign",),
    ("dse",),
    ("report", "accuracy"),
    ("tasks",),
    ("ref", "sim"),
    ("graph",),
    ("compress",),
    ("hw", "zoo"),
    ("formats",),
    ("files", "assets"),
    ("errors", "heap"),
)
LAYER_OF = {component: depth for depth, names in enumerate(LAYERS) for component in names}
# Imports that break the contract today, each with why it is tolerated. The test fails on any
# new violation AND on an entry here that no longer occurs (delete the entry then).
# Keyed by (importing component, imported component).
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}
FORBIDDEN_LIBRARIES: dict[str, tuple[str, ...]] = {"sim": ("torch", "numba")}
FORBIDDEN_COMPONENTS: dict[str, tuple[str, ...]] = {"graph": ("hw",)}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_submodule(dotted: str) -> bool:
    relative = Path(*dotted.split(".")[1:]) if "." in dotted else Path()
    base = PACKAGE / relative
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path: Path, text: str | None = None) -> set[str]:
    """Absolute module names ``path`` (or ``text`` placed at ``path``) imports; ``from pkg
    import sub`` resolves to ``pkg.sub``."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text() if text is None else text)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if candidate.startswith("accelsim.") and _is_submodule(candidate):
                    found.add(candidate)
    return found


def component(module: str) -> str | None:
    """``accelsim.sim.memory`` -> ``sim``; the bare package ``accelsim`` has none."""
    parts = module.split(".")
    return parts[1] if parts[0] == "accelsim" and len(parts) > 1 else None


def source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def violations() -> dict[tuple[str, str], str]:
    """(importer, imported) -> the rule it breaks."""
    found: dict[tuple[str, str], str] = {}
    for path in source_files():
        module = _module_name(path)
        own = component(module)
        if own is None:
            continue
        for target in imports_of(path):
            other = component(target)
            library = target.split(".")[0]
            if library in FORBIDDEN_LIBRARIES.get(own, ()):
                found[(module, target)] = f"{own} must not import {library}"
            if target.split(".")[0] != "accelsim" or other is None or other == own:
                continue
            if other in FORBIDDEN_COMPONENTS.get(own, ()):
                found[(module, target)] = f"{own} must not import {other}"
            elif LAYER_OF[other] < LAYER_OF[own]:
                found[(module, target)] = f"{own} imports {other}, a higher layer"
            elif LAYER_OF[other] == LAYER_OF[own]:
                found[(module, target)] = f"{own} imports its peer {other}"
    return found


def test_every_component_has_a_layer():
    components = {component(_module_name(p)) for p in source_files()} - {None}
    assert components <= set(LAYER_OF), sorted(components - set(LAYER_OF))


def test_imports_only_go_down():
    found = violations()
    known = {(a, b) for a, b in found if (component(a), component(b)) in KNOWN_VIOLATIONS}
    new = {edge: rule for edge, rule in found.items() if edge not in known}
    assert not new, "\n".join(f"{a} -> {b}: {rule}" for (a, b), rule in sorted(new.items()))
    gone = sorted(set(KNOWN_VIOLATIONS) - {(component(a), component(b)) for a, b in known})
    assert not gone, f"fixed, delete from KNOWN_VIOLATIONS: {gone}"


def test_the_checker_sees_lazy_relative_and_from_package_imports():
    text = ("from __future__ import annotations\n"
            "def f():\n    from accelsim import hw, errors\n    from . import ir\n"
            "    from ..sim import simulate\n    import torch.nn\n")
    found = imports_of(PACKAGE / "graph" / "probe.py", text)
    assert {"accelsim.hw", "accelsim.errors", "accelsim.graph.ir", "accelsim.sim.simulate",
            "torch.nn"} <= found


@pytest.mark.parametrize(("module", "absent"), [
    ("accelsim.sim", ("torch", "numba")),
    ("accelsim.cli", ("torch", "numba", "transformers", "pandas", "matplotlib", "plotly")),
    ("accelsim.graph.workload", ("torch", "transformers")),
    ("accelsim.hw", ("torch", "numba")),
    ("accelsim.formats", ("torch", "numba", "numpy")),
])
def test_light_modules_stay_light_at_import(module, absent):
    code = (f"import sys, {module}\n"
            f"print(','.join(m for m in {absent!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "", f"importing {module} loads {loaded}"


def test_a_warm_zoo_model_run_imports_no_torch(tmp_path):
    """With the workload cache warm, ``run`` on a zoo model reads the graph from disk and
    simulates it: neither torch, transformers nor numba is loaded (they cost ~1 s to import)."""
    env = {**os.environ, "ACCELSIM_CACHE": str(tmp_path),
           "PYTHONPATH": str(PACKAGE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = ["run", "--hw", str(PACKAGE.parent / "hw_configs" / "int4_sparse.yaml"),
            "--model", "vit_tiny"]
    subprocess.run([sys.executable, "-m", "accelsim", *argv], env=env, check=True,
                   capture_output=True)  # the cold run fills the cache
    code = ("import contextlib, io, sys\n"
            "from accelsim.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    status = main({argv!r})\n"
            "heavy = ('torch', 'transformers', 'numba')\n"
            "print(status, ','.join(m for m in heavy if m in sys.modules))")
    warm = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.split()
    assert warm == ["0"], f"a warm run loaded {warm[1:]}"
