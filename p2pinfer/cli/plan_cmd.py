"""`p2pinfer plan`: plan a partition of a model over peers. (Placeholder until its issue lands.)"""

from __future__ import annotations

import argparse

from p2pinfer.errors import P2PInferError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plan", help="plan a partition of a model over peers")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    raise P2PInferError("'plan' is not implemented yet")
