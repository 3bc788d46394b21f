"""`p2pinfer ledger`: show this node's reputation ledger. (Placeholder until its issue lands.)"""

from __future__ import annotations

import argparse

from p2pinfer.errors import P2PInferError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ledger", help="show this node's reputation ledger")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    raise P2PInferError("'ledger' is not implemented yet")
