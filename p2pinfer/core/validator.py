"""Pure DHT validation rules for capability records (wrapped by net/record_validator.py).

Rules every node applies to every value stored under `/p2pinfer/record/<peer_id>`:
- the key is in the namespace and names a peer id that embeds an Ed25519 key ("bad-key");
- the value passes `records.decode_verified` (size, canonical CBOR, version, schema, signer,
  signature, expiry) and describes the peer named by the key ("key-mismatch");
- an update replaces a held record only with a strictly higher seq ("stale-seq");
- select keeps the valid value with the highest seq; on a tie the earlier value in the list wins.
  py-libp2p's KadDHT calls select([held, incoming]) on every PUT it receives and stores the
  incoming value only if it wins, so "earlier wins" is exactly the stale-seq rule there. (Ties
  between different blobs need the peer itself to sign two records with one seq.)
The clock is a parameter; nothing here does I/O.
"""

from __future__ import annotations

from typing import Callable, Sequence

from p2pinfer.core.records import RECORD_KEY_PREFIX, CapabilityRecord, decode_verified
from p2pinfer.crypto.identity import public_key_from_peer_id
from p2pinfer.errors import RecordError

RejectHook = Callable[[int, RecordError], None]


def peer_id_of_key(key: str) -> str:
    """The peer id in a record key; RecordError("bad-key") if the key is not one."""
    if not isinstance(key, str) or not key.startswith(RECORD_KEY_PREFIX):
        raise RecordError("bad-key", f"key {key!r:.100} is outside {RECORD_KEY_PREFIX}")
    peer_id = key[len(RECORD_KEY_PREFIX) :]
    try:
        public_key_from_peer_id(peer_id)
    except RecordError as exc:
        raise RecordError("bad-key", f"key {key!r:.100}: {exc}") from exc
    return peer_id


def validate_entry(key: str, value: bytes, *, now: float) -> CapabilityRecord:
    """The verified record in a DHT entry, or RecordError saying why it must be refused."""
    peer_id = peer_id_of_key(key)
    record = decode_verified(value, now=now)
    if record.peer_id != peer_id:
        raise RecordError(
            "key-mismatch", f"record of {record.peer_id} stored under the key of {peer_id}"
        )
    return record


def accept_update(held: CapabilityRecord | None, incoming: CapabilityRecord) -> None:
    """Allow `incoming` to replace `held` only if it is the same peer's strictly newer record."""
    if held is None:
        return
    if incoming.peer_id != held.peer_id:
        raise RecordError(
            "key-mismatch", f"record of {incoming.peer_id} cannot replace one of {held.peer_id}"
        )
    if incoming.seq <= held.seq:
        raise RecordError(
            "stale-seq",
            f"record of {incoming.peer_id}: seq {incoming.seq} is not newer than held {held.seq}",
        )


def select_best(
    key: str, values: Sequence[bytes], *, now: float, on_reject: RejectHook | None = None
) -> int:
    """Index of the valid value with the highest seq (the earliest of equals).

    Invalid values are skipped (reported to `on_reject(index, error)` for logging); if none is
    valid, RecordError("no-valid-record") carries the last rejection's reason in its message.
    """
    best_seq = -1
    best_index = -1
    last_error: RecordError | None = None
    for index, value in enumerate(values):
        try:
            record = validate_entry(key, value, now=now)
        except RecordError as exc:
            last_error = exc
            if on_reject is not None:
                on_reject(index, exc)
            continue
        if record.seq > best_seq:
            best_seq, best_index = record.seq, index
    if best_index < 0:
        why = f"{last_error.reason}: {last_error}" if last_error else "no values"
        raise RecordError("no-valid-record", f"no valid record for {key!r:.100} ({why})")
    return best_index
