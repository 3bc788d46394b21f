"""`p2pinfer peers`: list verified peers of the swarm. (Placeholder until its issue lands.)"""

from __future__ import annotations

import argparse

from p2pinfer.errors import P2PInferError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("peers", help="list verified peers of the swarm")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    raise P2PInferError("'peers' is not implemented yet")
