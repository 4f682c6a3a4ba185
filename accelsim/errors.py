"""The one exception type users see.

Raise :class:`AccelsimError` where a fault is found, with a message that names the file or
field (dotted path), the value given and the values allowed. The CLI prints it on one line and
exits non-zero; tracebacks only with ``--debug``.
"""


class AccelsimError(Exception):
    """A user-facing error: bad input, an unknown name, a shape that does not fit."""


def did_you_mean(name: str, options: list[str], n: int = 3) -> str:
    """`` (did you mean 'a', 'b' or 'c'?)`` for the (at most ``n``) options closest to ``name``
    by difflib's similarity; empty when none is close. Short, unlike the whole list."""
    import difflib

    close = [repr(option) for option in difflib.get_close_matches(name, options, n=n)]
    if not close:
        return ""
    listed = close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}"
    return f" (did you mean {listed}?)"


def yaml_problem(exc: Exception) -> str:
    """A YAML parse error as ``line 2, column 1: expected ',' or ']'``: the place and the
    problem, without the parser's context lines and caret drawing."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def kind_of(value: object) -> str:
    """What a YAML document held, in words (``a list``, ``nothing``), not a Python type name."""
    if value is None:
        return "nothing (the file is empty)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a single value ({value!r})"
