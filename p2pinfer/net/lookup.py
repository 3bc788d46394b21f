"""One-shot discovery for requesters (`p2pinfer peers`, the planner): no node needed.

An ephemeral host with a throwaway key dials the bootstrap peers, pulls their verified record
caches over the record exchange, widens to a few more peers, and (optionally) asks the DHT in
client mode (concurrently) for providers of the swarm key it has not heard of; once the crawl
settles the DHT gets DHT_GRACE_S more, so a slow DHT never holds a warm answer hostage. It
serves nothing and publishes nothing. Everything returned passed `records.decode_verified` on this machine.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.tools.anyio_service import background_trio_service

from p2pinfer.core.records import CapabilityRecord
from p2pinfer.errors import ConfigError, NetworkError
from p2pinfer.net import dht as dhtlib
from p2pinfer.net.discovery import Discovery, DiscoveryConfig
from p2pinfer.net.host import connect, make_host, parse_peer_addr, stop_auto_connector
from p2pinfer.net.record_validator import P2PInferValidator

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
DHT_GRACE_S = 0.5  # after the exchange crawl settles, how long the DHT lookup may still add records


async def discover(
    bootstrap: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    swarm: str = "default",
    use_dht: bool = True,
) -> list[CapabilityRecord]:
    """Verified, unexpired records of the swarm reachable from `bootstrap` (sorted by peer id).

    ConfigError for no/bad bootstrap addrs; NetworkError if no bootstrap peer answered.
    """
    if not bootstrap:
        raise ConfigError("no bootstrap peer given: pass --bootstrap /ip4/<ip>/tcp/<port>/p2p/<peer id> "
                          "(a node prints its addresses on stderr at start)")
    if not timeout > 0:
        raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
    seeds = [parse_peer_addr(a) for a in bootstrap]
    deadline = time.monotonic() + timeout
    host = make_host(create_new_key_pair())
    validator = P2PInferValidator()
    dht = dhtlib.make_dht(host, validator, server=False) if use_dht else None
    per_request = min(2.0, timeout / 2)
    discovery = Discovery(
        host,
        config=DiscoveryConfig(request_timeout_s=per_request, dht_timeout_s=per_request),
        dht=dht,
        swarm=swarm,
    )
    async with host.run(listen_addrs=[]):
        await stop_auto_connector(host)
        answered = await _crawl_with_dht(discovery, dht, seeds, deadline)
    # raised out here, not inside the nurseries above, so callers get a NetworkError, not a group
    if answered == 0:
        raise NetworkError(f"no bootstrap peer answered within {timeout:g}s: {', '.join(bootstrap)}")
    return discovery.records()


async def _crawl_with_dht(discovery: Discovery, dht, seeds, deadline: float) -> int:  # type: ignore[no-untyped-def]
    async with trio.open_nursery() as nursery:
        if dht is not None:
            nursery.start_soon(_dht_complement, discovery, dht, seeds, deadline)
        answered = await discovery.crawl(seeds, timeout=max(0.0, deadline - time.monotonic()))
        # the DHT only complements the exchange: give it a short grace, not the whole timeout
        grace = min(DHT_GRACE_S, max(0.0, deadline - time.monotonic())) if answered else 0.0
        nursery.cancel_scope.deadline = min(nursery.cancel_scope.deadline, trio.current_time() + grace)
    return answered


async def _dht_complement(discovery: Discovery, dht, seeds, deadline: float) -> None:  # type: ignore[no-untyped-def]
    """Ask the DHT (client mode) for swarm providers we have not heard of, within the deadline."""
    async with background_trio_service(dht):
        for seed in seeds:
            try:
                await connect(discovery.host, seed, timeout=1.0)
                await dhtlib.add_route(dht, seed.peer_id)
            except NetworkError:
                continue
        with trio.move_on_after(max(0.0, deadline - time.monotonic())):
            learned = await discovery.dht_sweep()
            logger.info("DHT complement found %d more records", learned)
