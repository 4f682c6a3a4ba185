"""Real evaluation tasks (text, vision, speech) on offline data: splits, batches and metric.

``get_task(name)`` builds a task by name; ``limit`` caps every split (tests use a few examples
per class) and ``tiny`` swaps the pre-trained backbone for a tiny random-init model of the same
family. Each task module documents its data source, split sizes and classes.
"""

from __future__ import annotations

from collections.abc import Callable

from accelsim.errors import AccelsimError, did_you_mean
from accelsim.tasks.base import Batch, Split, Task
from accelsim.tasks.speech import SpeechCommands
from accelsim.tasks.text import FortuneTopics, WordnetSupersenses
from accelsim.tasks.vision import FashionMnist

__all__ = ["Batch", "Split", "Task", "get_task", "list_tasks", "task_for_model"]

# Registration order matters where tasks share a backbone: the first is the model's default task
# (the accuracy that `run --accuracy` and sweeps report). MiniLM-L6's is wordnet_supersenses:
# lexicographers' labels and 2000 test texts resolve differences finer than fortunes' 900 texts
# with file-of-origin labels.
_TASKS: dict[str, Callable[..., Task]] = {
    "wordnet_supersenses": WordnetSupersenses,
    "fortunes": FortuneTopics,
    "fashion_mnist": FashionMnist,
    "speech_commands": SpeechCommands,
}


def list_tasks() -> list[str]:
    """Registered task names, sorted."""
    return sorted(_TASKS)


def get_task(name: str, limit: int | None = None, tiny: bool = False) -> Task:
    """The task called ``name``; an unknown name raises one line naming the close ones."""
    if name not in _TASKS:
        raise AccelsimError(
            f"task: unknown name {name!r}{did_you_mean(name, list_tasks())}; "
            f"allowed: {', '.join(list_tasks())}"
        )
    return _TASKS[name](limit=limit, tiny=tiny)


def task_for_model(model: str) -> str | None:
    """The default task of zoo model ``model`` (the first registered that fine-tunes it), or
    None when it has none (e.g. vit_b16)."""
    for name in _TASKS:
        if get_task(name).backbone == model:
            return name
    return None
