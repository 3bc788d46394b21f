"""`p2pinfer run`: run a model (local, embedded swarm, or a live swarm). (Placeholder until its issue lands.)"""

from __future__ import annotations

import argparse

from p2pinfer.errors import P2PInferError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run a model (local, embedded swarm, or a live swarm)")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    raise P2PInferError("'run' is not implemented yet")
