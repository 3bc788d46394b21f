"""Kademlia DHT plumbing: build the KadDHT with our strict validator, publish, look up.

Keys (all in the "p2pinfer" namespace, so the strict NamespacedValidator routes them to
`P2PInferValidator`; anything else is refused):
    /p2pinfer/record/<peer id>   value: the peer's signed capability record (records.record_key)
    /p2pinfer/swarm/<swarm>      provider key: every node of the swarm provides it (rendezvous)
    /p2pinfer/model/<model id>   provider key: nodes holding that model's weights

Every call here runs under a deadline and never raises for network trouble: the DHT is a
complement to the direct record exchange (net/record_exchange.py), not the primary path, because
py-libp2p 0.8.1's lookups are slow at 50 peers and `find_providers` stops at 20.
"""

from __future__ import annotations

import logging

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2pinfer.core.records import record_key
from p2pinfer.net.record_validator import P2PInferValidator, namespaced_validator

logger = logging.getLogger(__name__)

SWARM_KEY_PREFIX = "/p2pinfer/swarm/"
MODEL_KEY_PREFIX = "/p2pinfer/model/"
ROUTE_ADD_TIMEOUT_S = 1.0


def swarm_key(swarm: str) -> str:
    return SWARM_KEY_PREFIX + swarm


def model_key(model_id: str) -> str:
    return MODEL_KEY_PREFIX + model_id


def make_dht(host: IHost, validator: P2PInferValidator, *, server: bool = True) -> KadDHT:
    """A KadDHT whose namespaced validator is strict (unknown namespaces refused).

    Run it with `libp2p.tools.anyio_service.background_trio_service(dht)`. A client-mode DHT
    (used by the ephemeral `p2pinfer peers` host) queries but serves nothing.
    """
    mode = DHTMode.SERVER if server else DHTMode.CLIENT
    return KadDHT(host, mode, validator=namespaced_validator(validator), strict_validation=True)


async def add_route(dht: KadDHT, peer_id: ID) -> bool:
    """Put a peer whose signed record we verified into the routing table (its addrs must be in
    the peerstore). Such peers run DHT servers, so the identify-based mode check is skipped."""
    with trio.move_on_after(ROUTE_ADD_TIMEOUT_S):
        try:
            return await dht.add_peer(peer_id, skip_server_mode_check=True)
        except (trio.Cancelled, KeyboardInterrupt):
            raise
        except Exception as exc:  # routing table may ping and fail
            logger.debug("routing table refused %s: %s", peer_id, exc)
    return False


async def publish(dht: KadDHT, peer_id: str, blob: bytes, provide_keys: list[str], *, timeout: float) -> int:
    """put_value our record and provide each key, all concurrently under one deadline.

    Returns how many of the operations completed; failures are logged, never raised.
    """
    done = 0

    async def put() -> None:
        nonlocal done
        await dht.put_value(record_key(peer_id), blob)
        done += 1

    async def provide(key: str) -> None:
        nonlocal done
        if await dht.provide(key):
            done += 1

    async def guarded(fn, *args) -> None:  # type: ignore[no-untyped-def]
        try:
            await fn(*args)
        except (trio.Cancelled, KeyboardInterrupt):
            raise
        except Exception as exc:  # DHT errors are not fatal: the record exchange still works
            logger.info("DHT publish step %s%s failed: %s", fn.__name__, args, exc)

    with trio.move_on_after(timeout) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(guarded, put)
            for key in provide_keys:
                nursery.start_soon(guarded, provide, key)
    if scope.cancelled_caught:
        logger.info("DHT publish hit its %.1fs deadline (%d/%d done)", timeout, done, 1 + len(provide_keys))
    return done


async def find_providers(dht: KadDHT, key: str, *, timeout: float, count: int = 64) -> list[PeerInfo]:
    """Providers of `key`, deduplicated by peer id (py-libp2p may repeat one); [] on failure."""
    found: dict[ID, PeerInfo] = {}
    with trio.move_on_after(timeout):
        try:
            for info in await dht.find_providers(key, count):
                found.setdefault(info.peer_id, info)
        except (trio.Cancelled, KeyboardInterrupt):
            raise
        except Exception as exc:
            logger.info("find_providers(%s) failed: %s", key, exc)
    return list(found.values())


async def get_record_blob(dht: KadDHT, peer_id: str, *, timeout: float) -> bytes | None:
    """The DHT's best value under a peer's record key (validated by the DHT, but callers must
    still verify it: the local value store returns stored values without re-checking expiry)."""
    with trio.move_on_after(timeout):
        try:
            return await dht.get_value(record_key(peer_id))
        except (trio.Cancelled, KeyboardInterrupt):
            raise
        except Exception as exc:
            logger.info("get_value for %s failed: %s", peer_id, exc)
    return None
