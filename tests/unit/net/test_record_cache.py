"""The verified-record cache: only verified records enter, highest seq wins, expiry hides."""

from __future__ import annotations

import cbor2
import pytest

from p2pinfer.core.records import CapabilityRecord, canonical_dumps, encode_signed
from p2pinfer.crypto.identity import Identity
from p2pinfer.errors import RecordError
from p2pinfer.net.advertise import Advertiser, Capability
from p2pinfer.net.record_cache import FULL, NEW, SAME, STALE, UPDATED, RecordCache

NOW = 1_800_000_000.0


def blob(identity: Identity, *, seq: int, ttl: float = 60.0, gflops: float = 1.0) -> bytes:
    record = CapabilityRecord(peer_id=identity.peer_id, seq=seq, expires_at=NOW + ttl, addrs=(), gflops=gflops,
                              mem_bytes=1, up_mbps=1.0, down_mbps=1.0, latency_ms=1.0)
    return encode_signed(record, identity)


def test_highest_seq_wins_and_identical_blob_is_same() -> None:
    me, cache = Identity.generate(), RecordCache()
    assert cache.offer(blob(me, seq=5), now=NOW)[0] == NEW
    assert cache.offer(blob(me, seq=5), now=NOW)[0] == SAME
    assert cache.offer(blob(me, seq=4, gflops=9.0), now=NOW)[0] == STALE
    assert cache.offer(blob(me, seq=5, gflops=9.0), now=NOW)[0] == STALE  # same seq, other content
    assert cache.offer(blob(me, seq=6, gflops=2.0), now=NOW)[0] == UPDATED
    assert cache.get(me.peer_id, now=NOW).gflops == 2.0  # type: ignore[union-attr]
    assert cache.blobs(now=NOW, limit=10) == [blob(me, seq=6, gflops=2.0)]


@pytest.mark.parametrize("mutate, reason", [
    (lambda b: canonical_dumps({**cbor2.loads(b), "sig": bytes(64)}), "bad-signature"),
    (lambda b: canonical_dumps({**cbor2.loads(b), "gflops": 1e6}), "bad-signature"),
    (lambda b: b + b"\x00", "malformed-cbor"),
    (lambda b: b"\xff" * 10, "malformed-cbor"),
    (lambda b: canonical_dumps({**cbor2.loads(b), "peer_id": Identity.generate().peer_id}), "key-mismatch"),
])
def test_invalid_blobs_raise_with_their_reason_and_never_enter(mutate, reason) -> None:  # type: ignore[no-untyped-def]
    me, cache = Identity.generate(), RecordCache()
    with pytest.raises(RecordError) as info:
        cache.offer(mutate(blob(me, seq=1)), now=NOW)
    assert info.value.reason == reason and len(cache) == 0


def test_expired_records_are_refused_hidden_and_pruned() -> None:
    me, other, cache = Identity.generate(), Identity.generate(), RecordCache()
    with pytest.raises(RecordError, match="expired"):
        cache.offer(blob(me, seq=1, ttl=-1), now=NOW)
    cache.offer(blob(me, seq=2, ttl=5), now=NOW)
    cache.offer(blob(other, seq=2, ttl=50), now=NOW)
    later = NOW + 10
    assert [r.peer_id for r in cache.records(now=later)] == [other.peer_id]
    assert cache.get(me.peer_id, now=later) is None
    with pytest.raises(RecordError, match="expired"):  # the fast path for known bytes checks expiry too
        cache.offer(blob(me, seq=2, ttl=5), now=later)
    assert cache.prune(now=later) == [me.peer_id] and len(cache) == 1


def test_bounded_cache_keeps_longer_lived_records() -> None:
    cache = RecordCache(max_entries=2)
    a, b, c, d = (Identity.generate() for _ in range(4))
    cache.offer(blob(a, seq=1, ttl=10), now=NOW)
    cache.offer(blob(b, seq=1, ttl=20), now=NOW)
    assert cache.offer(blob(c, seq=1, ttl=30), now=NOW)[0] == NEW  # evicts a (expires first)
    assert cache.offer(blob(d, seq=1, ttl=5), now=NOW)[0] == FULL
    assert set(cache.peer_ids(now=NOW)) == {b.peer_id, c.peer_id}


def test_advertiser_seq_always_increases_and_reflects_updates() -> None:
    me = Identity.generate()
    adv = Advertiser(me, Capability(gflops=3.0, mem_bytes=10, up_mbps=1.0, down_mbps=2.0, latency_ms=0.0), ttl_s=30)
    first = adv.sign_next([f"/ip4/127.0.0.1/tcp/1/p2p/{me.peer_id}"], now=NOW)
    adv.set_load(0.7)
    adv.set_held(models=["m"], weights=["h"])
    second = adv.sign_next([], now=NOW)  # same clock: seq still moves forward
    assert second.record.seq > first.record.seq and second.record.expires_at == NOW + 30
    assert (second.record.load, second.record.models, second.record.weights) == (0.7, ("m",), ("h",))
    cache = RecordCache()
    assert cache.offer(first.blob, now=NOW)[0] == NEW and cache.offer(second.blob, now=NOW)[0] == UPDATED
