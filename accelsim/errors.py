"""The one exception type users see.

Raise :class:`AccelsimError` where a fault is found, with a message that names the file or
field (dotted path), the value given and the values allowed. The CLI prints it on one line and
exits non-zero; tracebacks only with ``--debug``.
"""


class AccelsimError(Exception):
    """A user-facing error: bad input, an unknown name, a shape that does not fit."""
