"""Discovery: fill a cache of verified capability records from peers and the DHT.

Three ways in, all ending in `RecordCache.offer` (full verification, whoever delivered it):
1. record exchange (primary): pull a peer's cache over `/p2pinfer/records/1.0.0`. One pull from a
   warm bootstrap returns the whole swarm (up to 256 records per response);
2. anti-entropy (nodes): every `pull_interval_s`, pull from `fanout` random known peers, so
   records, updates (higher seq) and newcomers spread epidemically without a central list;
3. DHT (complement): providers of the swarm rendezvous key, then a direct pull from each unknown
   provider, falling back to `get_value` of its record key.

The requester path is `crawl`: bootstrap pulls, then rounds of pulls from not-yet-asked peers,
stopping when a round teaches nothing new, when no one is left to ask, or at the deadline.
Every network await has a deadline; a failing peer costs at most `request_timeout_s`.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2pinfer.core.records import CapabilityRecord
from p2pinfer.errors import NetworkError, RecordError, WireError
from p2pinfer.net import dht as dhtlib
from p2pinfer.net.host import connect, remember_addrs
from p2pinfer.net.record_cache import NEW, STALE, UPDATED, RecordCache
from p2pinfer.net.record_exchange import MAX_RECORDS_PER_RESPONSE, fetch_records, serve_records

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiscoveryConfig:
    """Tuning knobs; defaults suit a LAN swarm, tests shorten the interval."""

    pull_interval_s: float = 10.0
    busy_interval_s: float = 1.0
    fanout: int = 3
    request_timeout_s: float = 2.0
    max_rounds: int = 4
    dht_timeout_s: float = 3.0

    def __post_init__(self) -> None:
        if not (self.pull_interval_s > 0 and self.busy_interval_s > 0 and self.request_timeout_s > 0
                and self.dht_timeout_s > 0):
            raise ValueError("discovery intervals and timeouts must be > 0")
        if self.fanout < 1 or self.max_rounds < 0:
            raise ValueError("discovery fanout must be >= 1 and max_rounds >= 0")


class Discovery:
    """Owns the record cache of one host; serves it, fills it, and keeps it fresh."""

    def __init__(
        self,
        host: IHost,
        *,
        config: DiscoveryConfig = DiscoveryConfig(),
        own_blob: Callable[[], bytes | None] = lambda: None,
        dht: KadDHT | None = None,
        swarm: str = "default",
        cache: RecordCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.config = config
        self.cache = cache if cache is not None else RecordCache()
        self.dht = dht
        self.swarm = swarm
        self.rejections: Counter[str] = Counter()
        self._own_blob = own_blob
        self._clock = clock
        self._self_id = str(host.get_id())
        self._changed = trio.Event()
        self.seeds: list[PeerInfo] = []

    # ---- serving ---------------------------------------------------------------------------

    def serve(self) -> None:
        """Answer record-exchange requests with our own record first, then our cache."""
        serve_records(self.host, self.records_to_share, self._on_push)

    async def _on_push(self, blob: bytes, sender: ID) -> None:
        fresh = self.ingest([blob], via=f"push from {sender}")
        await self._route(fresh)

    async def _route(self, fresh: list[CapabilityRecord]) -> None:
        if self.dht is not None:
            for record in fresh:
                await dhtlib.add_route(self.dht, ID.from_base58(record.peer_id))

    def records_to_share(self, limit: int) -> list[bytes]:
        own = self._own_blob()
        head = [own] if own else []
        return head + self.cache.blobs(now=self._clock(), limit=limit - len(head), exclude=self._self_id)

    # ---- reading -----------------------------------------------------------------------------

    def records(self) -> list[CapabilityRecord]:
        """Verified, unexpired records of other peers (sorted by peer id)."""
        return [r for r in self.cache.records(now=self._clock()) if r.peer_id != self._self_id]

    async def wait_changed(self) -> None:
        """Return after the next new or updated record (for services that react to the swarm)."""
        await self._changed.wait()

    # ---- filling -----------------------------------------------------------------------------

    def ingest(self, blobs: Iterable[bytes], *, via: str) -> list[CapabilityRecord]:
        """Verify and cache blobs of our swarm; returns the records that were new or newer.

        Records of another swarm (e.g. found by mDNS on a shared LAN) are verified and ignored."""
        fresh: list[CapabilityRecord] = []
        now = self._clock()
        for blob in blobs:
            try:
                outcome, record = self.cache.offer(blob, now=now)
                if record.swarm != self.swarm:
                    self.cache.forget(record.peer_id)
                    self.rejections["other-swarm"] += 1
                    continue
            except RecordError as exc:
                self.rejections[exc.reason] += 1
                logger.warning("rejected a record from %s: %s (%s)", via, exc.reason, exc)
                continue
            if outcome == STALE:
                self.rejections["stale-seq"] += 1
                logger.info("ignored a stale record of %s from %s (stale-seq)", record.peer_id, via)
            if outcome in (NEW, UPDATED) and record.peer_id != self._self_id:
                remember_addrs(self.host, ID.from_base58(record.peer_id), record.addrs)
                fresh.append(record)
        if fresh:
            self._changed.set()
            self._changed = trio.Event()
        self.seeds: list[PeerInfo] = []
        return fresh

    async def pull_from(self, peer: PeerInfo) -> list[CapabilityRecord]:
        """Connect (if needed) and pull a peer's records. NetworkError/WireError on failure."""
        timeout = self.config.request_timeout_s
        if peer.addrs:
            await connect(self.host, peer, timeout=timeout)
        blobs = await fetch_records(
            self.host, peer.peer_id, limit=MAX_RECORDS_PER_RESPONSE, timeout=timeout, push=self._own_blob()
        )
        fresh = self.ingest(blobs, via=str(peer.peer_id))
        await self._route(fresh)
        return fresh

    async def _try_pull(self, peer: PeerInfo, learned: list[CapabilityRecord]) -> bool:
        try:
            learned.extend(await self.pull_from(peer))
            return True
        except (NetworkError, WireError) as exc:
            logger.info("pull from %s failed: %s", peer.peer_id, exc)
            return False
        except Exception:  # task boundary: one peer's surprise must not take the node down
            logger.exception("pull from %s failed unexpectedly", peer.peer_id)
            return False

    async def pull_many(self, peers: list[PeerInfo]) -> tuple[list[CapabilityRecord], int]:
        """Pull from several peers concurrently; (records learned, number of peers that answered)."""
        learned: list[CapabilityRecord] = []
        answered = 0

        async def one(peer: PeerInfo) -> None:
            nonlocal answered
            answered += await self._try_pull(peer, learned)

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(one, peer)
        return learned, answered

    def peer_info(self, peer_id: str) -> PeerInfo:
        pid = ID.from_base58(peer_id)
        try:
            addrs = self.host.get_peerstore().addrs(pid)
        except Exception:  # PeerStoreError: unknown or expired peer
            addrs = []
        return PeerInfo(pid, addrs)

    async def crawl(self, seeds: list[PeerInfo], *, timeout: float, rounds: int | None = None) -> int:
        """Requester path: pull seeds, then widen until nothing new. Returns peers answered.

        `rounds` caps the widening rounds (default `config.max_rounds`); a joining node uses 1
        and leaves the rest to anti-entropy."""
        asked: set[str] = {self._self_id}
        answered = 0
        with trio.move_on_after(timeout):
            asked.update(str(p.peer_id) for p in seeds)
            answered = await self._pull_seeds(seeds)
            for _ in range(self.config.max_rounds if rounds is None else rounds):
                todo = [pid for pid in self.cache.peer_ids(now=self._clock()) if pid not in asked]
                if not todo:
                    break
                batch = random.sample(todo, min(self.config.fanout, len(todo)))
                asked.update(batch)
                learned, ok = await self.pull_many([self.peer_info(pid) for pid in batch])
                answered += ok
                if not learned:
                    break
        return answered

    async def _pull_seeds(self, seeds: list[PeerInfo]) -> int:
        """Pull the seeds; while none answered, retry (an overloaded bootstrap may just be slow)."""
        delay = 0.1
        while seeds:
            _, answered = await self.pull_many(seeds)
            if answered:
                return answered
            await trio.sleep(delay)
            delay = min(delay * 2, 2.0)
        return 0

    def _routing_sample(self) -> list[PeerInfo]:
        """A few peers from the DHT routing table: they outlive our cached records."""
        if self.dht is None:
            return []
        infos = self.dht.routing_table.get_peer_infos()
        return random.sample(infos, min(self.config.fanout, len(infos)))

    async def dht_sweep(self) -> int:
        """Complement: providers of the swarm key that we do not know yet; pull, else get_value."""
        if self.dht is None:
            return 0
        timeout = self.config.dht_timeout_s
        providers = await dhtlib.find_providers(self.dht, dhtlib.swarm_key(self.swarm), timeout=timeout)
        unknown = [p for p in providers if str(p.peer_id) not in self.cache and str(p.peer_id) != self._self_id]
        learned = 0

        async def one(peer: PeerInfo) -> None:
            nonlocal learned
            got: list[CapabilityRecord] = []
            if await self._try_pull(peer, got):
                learned += len(got)
                return
            blob = await dhtlib.get_record_blob(self.dht, str(peer.peer_id), timeout=timeout)  # type: ignore[arg-type]
            if blob is not None:
                learned += len(self.ingest([blob], via="dht"))

        async with trio.open_nursery() as nursery:
            for peer in unknown:
                nursery.start_soon(one, peer)
        return learned

    # ---- the long-lived service -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Anti-entropy: prune expired records and pull from a few random peers, every
        `pull_interval_s`; while rounds keep teaching news (a swarm forming or changing), the
        next round comes after `busy_interval_s` instead, so news spreads in seconds, not minutes."""
        task_status.started()
        interval = self.config.pull_interval_s
        while True:
            await trio.sleep(interval * random.uniform(0.8, 1.2))
            learned = 0
            try:
                learned = await self.anti_entropy_round()
            except Exception:  # task boundary: one bad round must not kill the node
                logger.exception("discovery round failed")
            busy = min(self.config.busy_interval_s, self.config.pull_interval_s)
            interval = busy if learned else self.config.pull_interval_s

    async def anti_entropy_round(self) -> int:
        """One round; returns how many peers it taught us about that we did not know before
        (mere updates of known peers do not count: they arrive all the time in a stable swarm)."""
        gone = self.cache.prune(now=self._clock())
        if gone:
            logger.info("dropped %d expired records", len(gone))
        known = [pid for pid in self.cache.peer_ids(now=self._clock()) if pid != self._self_id]
        batch = random.sample(known, min(self.config.fanout, len(known)))
        await self.pull_many([self.peer_info(pid) for pid in batch])
        if not known:  # alone (all records expired): retry bootstrap and routing-table peers, DHT
            await self.pull_many(self.seeds + self._routing_sample())
            await self.dht_sweep()
        return len(set(self.cache.peer_ids(now=self._clock())) - set(known) - {self._self_id})
