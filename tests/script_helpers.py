"""Experiment scripts (``experiments/accuracy/<name>.py``) loaded as modules for tests."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ACCURACY_SCRIPTS = Path(__file__).resolve().parents[1] / "experiments" / "accuracy"


def accuracy_script(name: str) -> ModuleType:
    """The experiment script ``experiments/accuracy/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, ACCURACY_SCRIPTS / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    sys.modules[name] = script  # dataclasses look their module up there
    spec.loader.exec_module(script)
    return script
