"""The `p2pinfer` command: parse, call the library, render.

Each subcommand lives in its own module exposing `register(subparsers)`, which adds its parser
and sets `handler=callable(args) -> int`. Handlers are thin: they call the library and render.
Any `P2PInferError` becomes one line on stderr and exit code 2; `--json` output is one JSON
document on stdout and logs go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from p2pinfer.errors import P2PInferError

from . import ledger_cmd, models_cmd, node_cmd, peers_cmd, plan_cmd, run_cmd

_COMMAND_MODULES = (node_cmd, peers_cmd, models_cmd, plan_cmd, run_cmd, ledger_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2pinfer",
        description="Run deep-learning models across a peer-to-peer swarm of heterogeneous devices.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _COMMAND_MODULES:
        module.register(subparsers)
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbosity < 2:
        # py-libp2p logs routine stream closes at warning level; keep them out of the user's way.
        logging.getLogger("libp2p").setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return int(args.handler(args) or 0)
    except P2PInferError as exc:
        print(f"p2pinfer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("p2pinfer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
