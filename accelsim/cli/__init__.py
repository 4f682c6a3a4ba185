"""Command line: the only place that reads argv, prints or exits.

Each subcommand lives in ``accelsim/cli/<name>.py`` and defines ``HELP: str``,
``add_arguments(parser)`` and ``run(args) -> int``. Library errors (:class:`AccelsimError`)
print as one line and exit 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from accelsim import __version__
from accelsim.errors import AccelsimError

COMMANDS: tuple[str, ...] = ("run", "models", "trace", "compress", "verify", "sweep", "plot")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="accelsim",
        description="Co-design of compressed transformer inference hardware.",
    )
    parser.add_argument("--version", action="version", version=f"accelsim {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"accelsim.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"accelsim.cli.{name}":
                continue
            raise
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except AccelsimError as exc:
        if args.debug:
            raise
        print(f"accelsim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("accelsim: interrupted", file=sys.stderr)
        return 130
