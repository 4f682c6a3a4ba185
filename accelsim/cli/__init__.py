"""Command line: the only place that reads argv, prints or exits.

Each subcommand lives in ``accelsim/cli/<name>.py`` and defines ``HELP: str``,
``add_arguments(parser)`` and ``run(args) -> int``. Library errors (:class:`AccelsimError`)
print as one line and exit 2; ``--debug`` (before or after the subcommand) shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from accelsim import __version__
from accelsim.errors import AccelsimError

DEBUG = "--debug"
COMMANDS: tuple[str, ...] = ("run", "models", "trace", "compress", "verify", "sweep", "plot",
                             "report", "codesign")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="accelsim",
        description="Co-design of compressed transformer inference hardware.",
    )
    parser.add_argument("--version", action="version", version=f"accelsim {__version__}")
    parser.add_argument(DEBUG, action="store_true",
                        help="show tracebacks on errors (anywhere on the command line)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"accelsim.cli.{name}")
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Progress lines the library logs (slow stages: building, compressing, tracing), written to
    the ``sys.stderr`` of the moment, so a replaced stderr (tests, redirection) receives them."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("accelsim: %(message)s"))

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def show_progress() -> None:
    """Route the ``accelsim`` loggers' INFO lines to stderr (once per process)."""
    logger = logging.getLogger("accelsim")
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug anywhere: before or after the subcommand (argparse knows it only before).
    debug = DEBUG in argv
    args = build_parser().parse_args([arg for arg in argv if arg != DEBUG])
    show_progress()
    try:
        return int(args.handler(args) or 0)
    except AccelsimError as exc:
        if debug:
            raise
        print(f"accelsim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("accelsim: interrupted", file=sys.stderr)
        return 130
