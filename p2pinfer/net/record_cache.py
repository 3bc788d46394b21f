"""The local cache of verified capability records, one per peer (pure: no I/O, clock passed in).

Rules (the same as the DHT validator's, so every path into the cache is equally strict):
- a blob enters only through `offer`, which runs `records.decode_verified` (signature, signer,
  schema, size, expiry) whoever delivered it; failures raise RecordError with the reason;
- a record replaces the held one only with a strictly higher seq (`validator.accept_update`);
  re-offering the identical blob is "same", anything else not newer is "stale" (not an error:
  gossip naturally re-delivers old records);
- expired records are never returned and are dropped by `prune`;
- the cache is bounded: when full, the record that expires first makes room for one that
  expires later; otherwise the incoming record is refused ("full").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from p2pinfer.core.records import CapabilityRecord, decode_verified
from p2pinfer.core.validator import accept_update
from p2pinfer.errors import RecordError

DEFAULT_MAX_ENTRIES = 4096

NEW, UPDATED, SAME, STALE, FULL = "new", "updated", "same", "stale", "full"


@dataclass(frozen=True)
class CachedRecord:
    """A verified record and the exact signed bytes it came from (to hand on unchanged)."""

    record: CapabilityRecord
    blob: bytes


class RecordCache:
    """Verified records keyed by peer id; highest seq wins; expired ones vanish."""

    def __init__(self, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._max = max_entries
        self._entries: dict[str, CachedRecord] = {}
        self._by_blob: dict[bytes, CachedRecord] = {}  # verified blobs, to skip re-verifying gossip

    def offer(self, blob: bytes, *, now: float) -> tuple[str, CapabilityRecord]:
        """Verify `blob` and keep it if it is news. Returns (outcome, record); RecordError if invalid."""
        known = self._by_blob.get(bytes(blob))
        if known is not None:  # byte-identical to a record we verified: only expiry can change
            if known.record.expires_at <= now:
                raise RecordError("expired", f"record of {known.record.peer_id} has expired")
            return SAME, known.record
        record = decode_verified(blob, now=now)
        held = self._entries.get(record.peer_id)
        try:
            accept_update(held.record if held else None, record)
        except RecordError as exc:
            if exc.reason == "stale-seq":
                return STALE, held.record if held else record
            raise
        if held is None and len(self._entries) >= self._max and not self._make_room(record, now=now):
            return FULL, record
        self._put(CachedRecord(record=record, blob=bytes(blob)))
        return (UPDATED if held else NEW), record

    def _put(self, entry: CachedRecord) -> None:
        self._drop(entry.record.peer_id)
        self._entries[entry.record.peer_id] = entry
        self._by_blob[entry.blob] = entry

    def _drop(self, peer_id: str) -> None:
        old = self._entries.pop(peer_id, None)
        if old is not None:
            self._by_blob.pop(old.blob, None)

    def _make_room(self, incoming: CapabilityRecord, *, now: float) -> bool:
        self.prune(now=now)
        if len(self._entries) < self._max:
            return True
        victim = min(self._entries.values(), key=lambda c: c.record.expires_at)
        if victim.record.expires_at >= incoming.expires_at:
            return False
        self._drop(victim.record.peer_id)
        return True

    def get(self, peer_id: str, *, now: float) -> CapabilityRecord | None:
        entry = self._entries.get(peer_id)
        if entry is None or entry.record.expires_at <= now:
            return None
        return entry.record

    def _live(self, now: float) -> Iterator[CachedRecord]:
        return (e for e in self._entries.values() if e.record.expires_at > now)

    def records(self, *, now: float) -> list[CapabilityRecord]:
        """Unexpired verified records, sorted by peer id (stable output for users and tests)."""
        return sorted((e.record for e in self._live(now)), key=lambda r: r.peer_id)

    def blobs(self, *, now: float, limit: int, exclude: str | None = None) -> list[bytes]:
        """Up to `limit` unexpired signed blobs, freshest (latest expiry) first."""
        live = sorted(self._live(now), key=lambda e: e.record.expires_at, reverse=True)
        return [e.blob for e in live if e.record.peer_id != exclude][:limit]

    def peer_ids(self, *, now: float) -> list[str]:
        return sorted(e.record.peer_id for e in self._live(now))

    def prune(self, *, now: float) -> list[str]:
        """Drop expired records; returns the peer ids dropped."""
        gone = [pid for pid, e in self._entries.items() if e.record.expires_at <= now]
        for pid in gone:
            self._drop(pid)
        return gone

    def forget(self, peer_id: str) -> None:
        self._drop(peer_id)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._entries
