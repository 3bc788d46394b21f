"""`p2pinfer ledger [--json] [--data-dir DIR | --config FILE]`: show a reputation ledger.

Reads DIR/ledger.sqlite3. With `--config FILE`, DIR is that node's data directory, resolved
exactly as `p2pinfer node start --config FILE` does; with neither flag it is the per-user data
directory, where `p2pinfer run` keeps the requester's ledger. A node that never ran
has no ledger yet: that is shown as an empty ledger, not an error, but the output says so.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import platformdirs

from p2pinfer.ledger import Ledger, ledger_path


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("p2pinfer", appauthor=False))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ledger", help="show this node's reputation ledger")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--data-dir", type=Path, default=None,
                       help="data directory holding ledger.sqlite3 (default: the per-user p2pinfer data dir)")
    where.add_argument("--config", type=Path, default=None, metavar="FILE",
                       help="show the ledger of the node started with this config (its data dir)")
    parser.set_defaults(handler=_handle)


def ledger_document(path: Path, now: float) -> dict:
    """The --json document: per-peer rows and totals."""
    if not path.exists():
        return {"ledger": str(path), "exists": False, "now": now, "peers": [], "totals": None}
    with Ledger(path) as ledger:
        return {
            "ledger": str(path), "exists": True, "now": now,
            "peers": [view.to_json() for view in ledger.peers(now)],
            "totals": ledger.totals(),
        }


def _handle(args: argparse.Namespace) -> int:
    if args.config is not None:
        from p2pinfer.config import load_node_config, node_data_dir

        data_dir = node_data_dir(load_node_config(args.config))
    else:
        data_dir = args.data_dir or default_data_dir()
    path = ledger_path(data_dir)
    now = time.time()
    doc = ledger_document(path, now)
    if args.json:
        print(json.dumps(doc, sort_keys=True))
        return 0
    _render(doc, now)
    return 0


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def _status(row: dict, now: float) -> str:
    if row["excluded"]:
        return f"excl {row['excluded_until'] - now:.0f}s"
    return "ok"


def _render(doc: dict, now: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not doc["exists"]:
        console.print(f"no ledger yet at {doc['ledger']} (a node creates it on its first hop)")
        return
    table = Table(title=f"ledger {doc['ledger']}")
    table.add_column("peer", no_wrap=True)
    table.add_column("r", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("ok", justify="right", no_wrap=True)
    table.add_column("f/t/r/v", justify="right", no_wrap=True)
    table.add_column("GF/s adv>meas", justify="right", no_wrap=True)
    table.add_column("credit GF", justify="right", no_wrap=True)
    for row in doc["peers"]:
        peer = row["peer_id"] if len(row["peer_id"]) <= 14 else row["peer_id"][:5] + "…" + row["peer_id"][-6:]
        bad = f"{row['failures']}/{row['timeouts']}/{row['refusals']}/{row['verification_failures']}"
        speed = f"{_fmt(row['advertised_gflops'])}>{_fmt(row['measured_gflops'])}"
        table.add_row(peer, f"{row['reputation']:.3f}", _status(row, now), str(row["hops_ok"]), bad, speed,
                      _fmt(row["credit_gflop"], "+.2f"))
    console.print(table)
    t = doc["totals"]
    console.print(f"{t['peers']} peers, {t['hops_ok']} hops ok, {t['failures']} failed, {t['timeouts']} timeouts, "
                  f"{t['verification_failures']} verification failures, {t['receipts']} receipts, "
                  f"earned {t['earned_gflop']:.2f} GFLOP, spent {t['spent_gflop']:.2f} GFLOP")

