"""`p2pinfer peers`: list the verified peers of a swarm, found from a bootstrap peer.

Only records whose signature, signer, schema and expiry verified on this machine are shown.
`--json` prints one JSON array on stdout (fields: peer_id, addrs, gflops, gflops_by_class,
gflops_by_kind, frame_ms, frame_ms_per_mib, cpu_quota_ms, cpu_period_ms, mem_bytes, up_mbps, down_mbps,
latency_ms, models, weights, load, swarm, seq, expires, verified; frame costs and quota 0 when not
advertised); otherwise a table.
"""

from __future__ import annotations

import argparse
import json
import time

import trio
from rich.console import Console
from rich.table import Table

from p2pinfer.core.records import CapabilityRecord, to_json_dict
from p2pinfer.errors import ConfigError

DEFAULT_TIMEOUT_S = 10.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("peers", help="list verified peers of the swarm")
    parser.add_argument("--bootstrap", action="append", default=[], metavar="MULTIADDR",
                        help="a node's address ending in /p2p/<peer id> (repeatable; required)")
    parser.add_argument("--json", action="store_true", help="print one JSON array on stdout")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help=f"give up after S seconds (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--swarm", default="default", help="swarm name to list (default: default)")
    parser.add_argument("--no-dht", action="store_true", help="only the record exchange, skip DHT lookups")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    if not args.bootstrap:
        raise ConfigError("no bootstrap peer given: pass --bootstrap /ip4/<ip>/tcp/<port>/p2p/<peer id> "
                          "(a node prints its addresses on stderr at start)")
    from p2pinfer.net.lookup import discover  # libp2p takes ~2 s to import: only when needed

    records = trio.run(
        lambda: discover(args.bootstrap, timeout=args.timeout, swarm=args.swarm, use_dht=not args.no_dht)
    )
    if args.json:
        print(json.dumps([to_json_dict(r) for r in records]))
    else:
        _table(records)
    return 0


def _table(records: list[CapabilityRecord]) -> None:
    table = Table(title=f"{len(records)} verified peers")
    table.add_column("peer id", overflow="fold", min_width=20)
    for col in ("GFLOP/s", "memory", "up/down Mbit/s", "latency ms", "load", "models", "expires in"):
        table.add_column(col)
    now = time.time()
    for r in records:
        table.add_row(
            r.peer_id,
            f"{r.gflops:.1f}",
            f"{r.mem_bytes / 2**30:.1f} GiB",
            f"{r.up_mbps:g}/{r.down_mbps:g}",
            f"{r.latency_ms:g}",
            f"{r.load:.0%}",
            ", ".join(r.models) or "-",
            f"{max(0.0, r.expires_at - now):.0f}s",
        )
    Console().print(table)
