"""`p2pinfer node start`: run a node in the foreground until SIGINT/SIGTERM.

On stderr, one line each (system tests and scripts parse them):
    p2pinfer node: peer_id <id>
    p2pinfer node: listen <full multiaddr ending in /p2p/<id>>     (one per address)
    p2pinfer node: ledger <path of its ledger.sqlite3>
    p2pinfer node: ready
    p2pinfer node: stopped
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import trio

from p2pinfer.config import load_node_config, node_data_dir, with_overrides
from p2pinfer.crypto.identity import Identity
from p2pinfer.ledger import Ledger, ledger_path
from p2pinfer.node import IDENTITY_FILE, Node

PREFIX = "p2pinfer node:"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("node", help="run a node of the swarm")
    sub = parser.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    start = sub.add_parser("start", help="start a node and join the swarm (foreground; Ctrl-C stops it)")
    start.add_argument("--config", required=True, metavar="FILE", help="node config TOML (see node_configs/)")
    start.add_argument("--listen", action="append", metavar="MULTIADDR",
                       help="listen address, replaces the config's (repeatable), e.g. /ip4/0.0.0.0/tcp/4001")
    start.add_argument("--bootstrap", action="append", metavar="MULTIADDR",
                       help="peer to join through, ending in /p2p/<peer id> (repeatable; adds to the config's)")
    start.add_argument("--data-dir", metavar="DIR",
                       help="identity key, compute calibration and state (default: config, else user data dir)")
    start.set_defaults(handler=_start)


def _say(text: str) -> None:
    print(f"{PREFIX} {text}", file=sys.stderr, flush=True)


def _start(args: argparse.Namespace) -> int:
    from p2pinfer.node import IDENTITY_FILE, Node  # libp2p takes ~2 s to import: only when needed

    config = with_overrides(
        load_node_config(args.config), listen=args.listen, bootstrap=args.bootstrap, data_dir=args.data_dir
    )
    data_dir = node_data_dir(config)
    identity = Identity.load_or_create(data_dir / IDENTITY_FILE)
    _say(f"peer_id {identity.peer_id}")
    _say(f"data_dir {data_dir}")
    with Ledger(ledger_path(data_dir)) as ledger:  # durable; `p2pinfer ledger --data-dir DIR` shows it
        _say(f"ledger {ledger.path}")
        hop = _hop_service(config, data_dir, ledger)
        node = Node(config, identity=identity, data_dir=data_dir, services=[hop, *_load_monitor(config, hop)])
        trio.run(_serve, node)
    _say("stopped")
    return 0


def _hop_service(config, data_dir: Path, ledger: Ledger):  # type: ignore[no-untyped-def]
    """Serve circuits: spans run from the model store in the data dir (weights fetched by hash
    from requesters/peers), with the config's memory/circuit limits and [emulation] applied,
    receipts credited in `ledger`, and [adversary] misbehaviour (a crash exits the process at
    once, after flushing the logs)."""
    from p2pinfer.models.executor import SpanExecutor
    from p2pinfer.models.store import ModelStore
    from p2pinfer.adversary import exit_process
    from p2pinfer.swarm import hop_service_for

    store = ModelStore(data_dir)
    executor = SpanExecutor(store, threads=config.resources.compute_threads)
    return hop_service_for(config, executor, store, emulate=config.emulation.active, on_crash=exit_process,
                           ledger=ledger)


def _load_monitor(config, hop) -> list:  # type: ignore[no-untyped-def]
    """The node owns this process, so its CPU time is the node's: advertise the share its
    background work takes as the record's load (p2pinfer/load_monitor.py). Not when the config
    fixes the compute (then nothing is measured) or the usable cores cannot be read."""
    from p2pinfer.load_monitor import LoadMonitor
    from p2pinfer.models.cpu_quota import QuotaUnknown, usable_cores

    if config.resources.gflops is not None:
        return []
    try:
        cores = usable_cores(config.resources.compute_threads)
    except QuotaUnknown as exc:
        _say(f"background load not measured: {exc}")
        return []
    return [LoadMonitor(cores=cores, activity=hop.hop_activity)]


async def _serve(node: Node) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            for addr in node.listen_addrs:
                _say(f"listen {addr}")
            _say("ready")
            async for signum in signals:
                _say(f"received {signal.Signals(signum).name}, shutting down")
                nursery.cancel_scope.cancel()
                break
