"""Discovery across real in-process nodes on loopback: verified records, rejection, expiry."""

from __future__ import annotations

import time
from dataclasses import replace

import cbor2
import trio
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.records.validator import BlankValidator, NamespacedValidator
from libp2p.tools.anyio_service import background_trio_service

from p2pinfer.core.records import CapabilityRecord, canonical_dumps, decode_verified, encode_signed, record_key
from p2pinfer.crypto.identity import Identity
from p2pinfer.net.dht import add_route, get_record_blob, make_dht
from p2pinfer.net.discovery import Discovery
from p2pinfer.net.record_validator import P2PInferValidator
from p2pinfer.net.host import connect, full_addrs, listen_addrs_from, make_host, parse_peer_addr, stop_auto_connector
from p2pinfer.net.lookup import discover
from p2pinfer.net.record_exchange import fetch_records, serve_records
from tests.conftest import async_wait_until
from tests.integration._nodes import FAST, capability, known_ids, running_swarm


async def test_ten_nodes_discover_each_others_verified_records() -> None:
    async with running_swarm(10) as nodes:
        ids = {n.peer_id for n in nodes}
        for node in nodes:
            await async_wait_until(lambda: known_ids(node) == ids - {node.peer_id}, timeout=20,
                                   what=f"{node.peer_id} to know all 9 others")
        started = time.monotonic()
        records = await discover([nodes[3].listen_addrs[0]], timeout=10)
        elapsed = time.monotonic() - started
        assert {r.peer_id for r in records} == ids
        by_id = {r.peer_id: r for r in records}
        for i, node in enumerate(nodes):
            record = by_id[node.peer_id]
            assert record.addrs == tuple(node.listen_addrs)
            assert record.gflops == capability(i).gflops and record.mem_bytes == capability(i).mem_bytes
            signed = node.record  # what the node signed (it may have republished since: newer seq)
            assert signed is not None and record.seq <= signed.seq
            assert replace(record, seq=0, expires_at=1.0) == replace(signed, seq=0, expires_at=1.0)
        assert elapsed < 5, f"requester took {elapsed:.2f}s for 10 records"


def _signed(identity: Identity, *, seq: int, expires_at: float, gflops: float = 1.0) -> bytes:
    record = CapabilityRecord(peer_id=identity.peer_id, seq=seq, expires_at=expires_at, addrs=(),
                              gflops=gflops, mem_bytes=1, up_mbps=1.0, down_mbps=1.0, latency_ms=1.0)
    return encode_signed(record, identity)


def _tamper(blob: bytes, **changes: object) -> bytes:
    body = cbor2.loads(blob)
    body.update(changes)
    return canonical_dumps(body)


class _Attack:
    """One attacker identity and the bad records it tries to plant about itself and a victim."""

    def __init__(self, victim: str) -> None:
        self.me = Identity.generate()
        now = time.time()
        self.good = _signed(self.me, seq=100, expires_at=now + 60, gflops=2.0)
        self.stale = _signed(self.me, seq=50, expires_at=now + 120, gflops=3.0)
        self.expired = _signed(self.me, seq=200, expires_at=now - 5, gflops=4.0)
        self.bad_sig = _tamper(self.good, seq=300, gflops=9999.0)
        self.forged_victim = _tamper(self.good, peer_id=victim, seq=300, gflops=9999.0)
        self.victim = victim

    def check_views(self, node_records: dict[str, CapabilityRecord]) -> None:
        """What any honest view must show: the attacker at seq 100, the victim untouched."""
        mine = node_records.get(self.me.peer_id)
        assert mine is not None and mine.seq == 100 and mine.gflops == 2.0
        victim = node_records.get(self.victim)  # absent only in the victim's own view
        assert victim is None or victim.gflops != 9999.0


async def test_forged_expired_stale_records_are_rejected_by_every_node() -> None:
    async with running_swarm(4) as nodes:
        attack = _Attack(victim=nodes[1].peer_id)
        host = make_host(attack.me.libp2p_key_pair())
        bad = [attack.bad_sig, attack.forged_victim, attack.expired, attack.stale, b"\xa1\x61"]
        serve_records(host, lambda limit: [attack.good, *bad][:limit])
        async with host.run(listen_addrs=listen_addrs_from([])):
            await stop_auto_connector(host)
            # 1. record exchange: push each record to every node (good first, so stale is stale)
            for node in nodes:
                info = parse_peer_addr(node.listen_addrs[0])
                await connect(host, info)
                for blob in [attack.good, *bad]:
                    await fetch_records(host, info.peer_id, push=blob)
            for node in nodes:
                assert {"bad-signature", "key-mismatch", "expired", "stale-seq", "malformed-cbor"} <= set(
                    node.discovery.rejections)
                attack.check_views({r.peer_id: r for r in node.peers()})
            # 2. DHT: a permissive attacker DHT stores the bad values at every node
            await _dht_attack(host, nodes, attack)
            # 3. a requester whose first seed is the attacker still keeps only verified, fresh records
            requester = make_host(Identity.generate().libp2p_key_pair())
            async with requester.run(listen_addrs=[]):
                disco = Discovery(requester)
                seeds = [parse_peer_addr(full_addrs(host)[0]), parse_peer_addr(nodes[2].listen_addrs[0])]
                await disco.crawl(seeds, timeout=5)
                assert {"bad-signature", "key-mismatch", "expired"} <= set(disco.rejections)
                attack.check_views({r.peer_id: r for r in disco.records()})
                assert {r.peer_id for r in disco.records()} == {n.peer_id for n in nodes} | {attack.me.peer_id}


async def _dht_attack(host, nodes, attack: _Attack) -> None:  # type: ignore[no-untyped-def]
    permissive = NamespacedValidator({"p2pinfer": BlankValidator()})
    dht = KadDHT(host, DHTMode.SERVER, validator=permissive)
    async with background_trio_service(dht):
        for node in nodes:
            await dht.add_peer(ID.from_base58(node.peer_id), skip_server_mode_check=True)
        plants = [
            (record_key(attack.me.peer_id), attack.good),
            (record_key(attack.me.peer_id), attack.stale),
            (record_key(attack.me.peer_id), attack.expired),
            (record_key(attack.me.peer_id), attack.bad_sig),
            (record_key(attack.victim), attack.forged_victim),
            ("/p2pinfer/other/thing", attack.good),
            ("/evil/thing", attack.good),  # outside every registered namespace: strict mode refuses
        ]
        for key, value in plants:
            dht.value_store.store.pop(key.encode(), None)  # let the attacker re-put over its own value
            with trio.move_on_after(5):
                await dht.put_value(key, value)
        for node in nodes:
            reasons = node.validator.rejections
            await async_wait_until(
                lambda: {"stale-seq", "expired", "bad-signature", "key-mismatch"} <= set(reasons),
                timeout=10, what=f"{node.peer_id}'s DHT validator to reject every bad value (has {dict(reasons)})")
            held = node.dht.value_store.get(record_key(attack.me.peer_id).encode())
            assert held is not None and decode_verified(held.value, now=time.time()).seq == 100
            victim_held = node.dht.value_store.get(record_key(attack.victim).encode())
            assert victim_held is None or decode_verified(victim_held.value, now=time.time()).gflops != 9999.0
            assert node.dht.value_store.get(b"/p2pinfer/other/thing") is None
            assert node.dht.value_store.get(b"/evil/thing") is None
            assert reasons["bad-key"] >= 1


async def test_departed_peer_disappears_after_expiry_and_updates_spread() -> None:
    short = replace(FAST, record_ttl_s=6.0, republish_s=1.5, pull_interval_s=0.5)
    async with running_swarm(4, settings=short) as nodes:
        ids = {n.peer_id for n in nodes}
        for node in nodes:
            await async_wait_until(lambda: known_ids(node) == ids - {node.peer_id}, timeout=15, what="full view")
        # an update (load) spreads with a higher seq
        old_seq = nodes[2].record.seq  # type: ignore[union-attr]
        nodes[2].set_load(0.5)
        for node in (nodes[0], nodes[1], nodes[3]):
            await async_wait_until(
                lambda: any(r.peer_id == nodes[2].peer_id and r.load == 0.5 and r.seq > old_seq for r in node.peers()),
                timeout=10, what="the new load to reach every node")
        # node 3 leaves; its record vanishes everywhere once expired, the others stay (republished)
        gone = nodes[3]
        gone.stop()
        left_at = time.monotonic()
        for node in nodes[:3]:
            await async_wait_until(lambda: gone.peer_id not in known_ids(node), timeout=10,
                                   what="the departed peer's record to expire")
        assert time.monotonic() - left_at <= short.record_ttl_s + 1.0
        for node in nodes[:3]:
            assert known_ids(node) == ids - {node.peer_id, gone.peer_id}
        records = await discover([nodes[0].listen_addrs[0]], timeout=5)
        assert {r.peer_id for r in records} == ids - {gone.peer_id}


async def test_mdns_finds_lan_peers_without_bootstrap() -> None:
    swarm = f"mdns-{time.time_ns()}"  # other tests' or processes' mDNS nodes stay out of our swarm
    settings = replace(FAST, mdns=True, swarm=swarm)
    async with trio.open_nursery() as nursery:
        from p2pinfer.node import Node

        a = Node(settings, capability=capability(0))
        b = Node(settings, capability=capability(1))
        await nursery.start(a.run)
        await nursery.start(b.run)
        await async_wait_until(lambda: known_ids(a) == {b.peer_id} and known_ids(b) == {a.peer_id},
                               timeout=15, what="mDNS discovery of each other")
        assert all(r.swarm == swarm for r in a.peers() + b.peers())
        nursery.cancel_scope.cancel()



async def test_dht_providers_and_values_complement_the_exchange() -> None:
    async with running_swarm(3, settings=replace(FAST, dht_publish=True, dht_jitter_s=0.0)) as nodes:
        ids = {n.peer_id for n in nodes}
        # every node put its record under /p2pinfer/record/<id> into at least one other node's DHT
        def stored_elsewhere(owner: str) -> bool:
            key = record_key(owner).encode()
            return any(n.peer_id != owner and n.dht.value_store.get(key) is not None for n in nodes)

        await async_wait_until(lambda: all(stored_elsewhere(i) for i in ids), timeout=15,
                               what="every record stored in another node's DHT")
        # a requester that learns peers ONLY from the DHT (no exchange crawl) still gets them all
        requester = make_host(Identity.generate().libp2p_key_pair())
        validator = P2PInferValidator()
        dht = make_dht(requester, validator, server=False)
        async with requester.run(listen_addrs=[]), background_trio_service(dht):
            seed = parse_peer_addr(nodes[0].listen_addrs[0])
            await connect(requester, seed)
            await add_route(dht, seed.peer_id)
            disco = Discovery(requester, dht=dht)
            learned = await disco.dht_sweep()
            assert learned == 3 and {r.peer_id for r in disco.records()} == ids
            blob = await get_record_blob(dht, nodes[1].peer_id, timeout=5)
            assert blob is not None and decode_verified(blob, now=time.time()).peer_id == nodes[1].peer_id
