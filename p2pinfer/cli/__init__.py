"""The `p2pinfer` command: parse, call the library, render.

Each subcommand lives in its own module exposing `register(subparsers)`, which adds its parser
and sets `handler=callable(args) -> int`. Handlers are thin: they call the library and render.
Only the module of the subcommand being run is imported (the others would pull in torch and
libp2p for nothing: `p2pinfer --help` or `p2pinfer ledger` start in well under a second).
Any `P2PInferError` becomes one line on stderr and exit code 2; `--json` output is one JSON
document on stdout and logs go to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from p2pinfer.errors import P2PInferError
from p2pinfer.logs import set_libp2p_level

# subcommand -> (module in this package, one-line help shown by `p2pinfer --help`)
_COMMANDS = {
    "node": ("node_cmd", "run a node of the swarm"),
    "peers": ("peers_cmd", "list verified peers of the swarm"),
    "models": ("models_cmd", "list, inspect and import models"),
    "plan": ("plan_cmd", "plan a partition of a model over peers"),
    "run": ("run_cmd", "run a model (embedded local swarm, a live swarm, or --local)"),
    "ledger": ("ledger_cmd", "show this node's reputation ledger"),
}


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first non-option word), if any."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (given `command`) one where only that subcommand's module is loaded
    and the others are listed by name and help alone."""
    parser = argparse.ArgumentParser(
        prog="p2pinfer",
        description="Run deep-learning models across a peer-to-peer swarm of heterogeneous devices.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in _COMMANDS.items():
        if command is None or command == name:
            importlib.import_module(f"{__name__}.{module_name}").register(subparsers)
        else:
            subparsers.add_parser(name, help=help_text)
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbosity < 2:
        # py-libp2p logs routine stream closes as warnings and every failed dial as an error; our
        # code handles those and reports what matters as its own one-line errors, so below -vv
        # only libp2p's critical messages reach the user.
        set_libp2p_level(logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = _chosen_command(argv)
    parser = build_parser(chosen if chosen in _COMMANDS else "")
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
