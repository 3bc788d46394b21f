"""A small in-process swarm for circuit tests: real py-libp2p hosts on loopback, real stores."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

import trio
from libp2p import new_host
from multiaddr import Multiaddr

from p2pinfer.crypto.identity import Identity
from p2pinfer.models.executor import SpanExecutor
from p2pinfer.models.store import ModelStore
from p2pinfer.net.circuit_client import CircuitClient, ClientConfig
from p2pinfer.net.hop_protocol import HopConfig, HopService
from p2pinfer.net.weights_protocol import WeightService

FAST = dict(io_timeout_s=5.0, setup_timeout_s=20.0)


@dataclass
class Peer:
    identity: Identity
    host: object
    store: ModelStore
    hop: HopService | None = None

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    @property
    def addrs(self) -> tuple[str, ...]:
        return tuple(f"{a}/p2p/{self.peer_id}" for a in self.host.get_addrs())


@dataclass
class Swarm:
    requester: Peer
    client: CircuitClient
    hops: list[Peer] = field(default_factory=list)

    @property
    def addrs(self) -> dict[str, tuple[str, ...]]:
        return {p.peer_id: p.addrs for p in self.hops}


@contextlib.asynccontextmanager
async def _host(identity: Identity) -> AsyncIterator[object]:
    host = new_host(key_pair=identity.libp2p_key_pair(), muxer_preference="YAMUX")
    async with host.run(listen_addrs=[Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        yield host


@contextlib.asynccontextmanager
async def swarm(tmp: Path, n_hops: int, *, hop_config: HopConfig | None = None) -> AsyncIterator[Swarm]:
    """Requester (with a store it serves weights from) + n hops with empty stores."""
    async with contextlib.AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        rid = Identity.generate()
        rhost = await stack.enter_async_context(_host(rid))
        requester = Peer(rid, rhost, ModelStore(tmp / "requester"))
        client = CircuitClient(rhost, rid, config=ClientConfig(result_timeout_s=20.0, **FAST))
        await nursery.start(client.run)
        await nursery.start(WeightService(rhost, requester.store).run)
        out = Swarm(requester, client)
        for i in range(n_hops):
            ident = Identity.generate()
            host = await stack.enter_async_context(_host(ident))
            store = ModelStore(tmp / f"hop{i}")
            executor = SpanExecutor(store, threads=1)
            peer = Peer(ident, host, store)
            peer.hop = HopService(host, ident, executor.run, store, config=hop_config or HopConfig(**FAST))
            await nursery.start(peer.hop.run)
            out.hops.append(peer)
        yield out
