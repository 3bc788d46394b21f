"""`p2pinfer models`: list and inspect models in the zoo. (Placeholder until its issue lands.)"""

from __future__ import annotations

import argparse

from p2pinfer.errors import P2PInferError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list and inspect models in the zoo")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    raise P2PInferError("'models' is not implemented yet")
