"""The ``oftp2`` command line.

Each area registers its own sub-commands: a module listed in ``_SUBCOMMAND_MODULES`` exposes
``register(subparsers)``, which adds parsers whose ``func`` default takes the parsed arguments and
returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

_SUBCOMMAND_MODULES = (
    "oftp2_provider.protocol.cli",  # serve, send, poll
    "oftp2_provider.relay.cli",  # relay-emulator, relay-forward
    "oftp2_provider.gateway.cli",  # gateway
)


def build_parser() -> argparse.ArgumentParser:
    from oftp2_provider import __version__

    parser = argparse.ArgumentParser(prog="oftp2", description="OFTP2 (RFC 5024) tools")
    parser.add_argument("--version", action="version", version=__version__)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # that area has no sub-commands yet
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
