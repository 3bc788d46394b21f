"""DHT validation rules: namespace, key/peer match, stale seq, select."""

from __future__ import annotations

import cbor2
import pytest

from p2pinfer.core.records import canonical_dumps, encode_signed, record_key
from p2pinfer.core.validator import accept_update, peer_id_of_key, select_best, validate_entry
from p2pinfer.errors import RecordError
from tests.unit.core.records_factory import ALICE, BOB, NOW, make_record

KEY = record_key(ALICE.peer_id)


def reason(fn, *args, **kw) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(RecordError) as err:
        fn(*args, **kw)
    return err.value.reason


def test_validate_entry_accepts_own_record() -> None:
    record = make_record()
    assert validate_entry(KEY, encode_signed(record, ALICE), now=NOW) == record


@pytest.mark.parametrize("key", ["/pk/" + ALICE.peer_id, "/p2pinfer/records/" + ALICE.peer_id,
                                 "p2pinfer/record/" + ALICE.peer_id, "/p2pinfer/record/",
                                 "/p2pinfer/record/" + ALICE.peer_id + "/x", "/p2pinfer/model/x"])
def test_rejects_key_outside_namespace(key: str) -> None:
    blob = encode_signed(make_record(), ALICE)
    assert reason(validate_entry, key, blob, now=NOW) == "bad-key"
    assert reason(peer_id_of_key, key) == "bad-key"


def test_rejects_record_stored_under_another_peers_key() -> None:
    blob = encode_signed(make_record(BOB), BOB)
    assert reason(validate_entry, KEY, blob, now=NOW) == "key-mismatch"


def test_validate_entry_passes_record_reasons_through() -> None:
    blob = encode_signed(make_record(), ALICE)
    assert reason(validate_entry, KEY, blob, now=NOW + 301) == "expired"
    assert reason(validate_entry, KEY, blob[:-1], now=NOW) == "malformed-cbor"


def test_accept_update_requires_strictly_newer_seq() -> None:
    held = make_record(seq=100)
    accept_update(None, held)
    accept_update(held, make_record(seq=101))
    assert reason(accept_update, held, make_record(seq=100)) == "stale-seq"
    assert reason(accept_update, held, make_record(seq=99)) == "stale-seq"
    assert reason(accept_update, held, make_record(BOB, seq=500)) == "key-mismatch"


def test_select_best_prefers_highest_valid_seq() -> None:
    old = encode_signed(make_record(seq=10), ALICE)
    new = encode_signed(make_record(seq=20), ALICE)
    newest_but_expired = encode_signed(make_record(seq=30, expires_at=NOW + 1), ALICE)
    raw = cbor2.loads(encode_signed(make_record(seq=40), ALICE))
    forged = canonical_dumps({**raw, "gflops": 9999.0})  # edited after signing
    rejected: list[tuple[int, str]] = []
    values = [old, forged, new, newest_but_expired, b"junk"]
    index = select_best(KEY, values, now=NOW + 2,
                        on_reject=lambda i, e: rejected.append((i, e.reason)))
    assert index == 2
    assert rejected == [(1, "bad-signature"), (3, "expired"), (4, "malformed-cbor")]
    assert select_best(KEY, [new, old], now=NOW) == 0


def test_select_keeps_the_held_value_unless_strictly_newer() -> None:
    """KadDHT stores an incoming PUT only if select([held, incoming]) == 1: the stale-seq rule."""
    held = encode_signed(make_record(seq=10, expires_at=NOW + 100), ALICE)
    same_seq = encode_signed(make_record(seq=10, expires_at=NOW + 200, load=0.9), ALICE)
    older = encode_signed(make_record(seq=9, expires_at=NOW + 250), ALICE)
    newer = encode_signed(make_record(seq=11), ALICE)
    assert select_best(KEY, [held, same_seq], now=NOW) == 0
    assert select_best(KEY, [held, older], now=NOW) == 0
    assert select_best(KEY, [held, held], now=NOW) == 0
    assert select_best(KEY, [held, newer], now=NOW) == 1
    # a held value that has expired meanwhile loses to any valid incoming one
    assert select_best(KEY, [held, older], now=NOW + 150) == 1


def test_select_best_with_no_valid_value() -> None:
    assert reason(select_best, KEY, [], now=NOW) == "no-valid-record"
    with pytest.raises(RecordError, match="bad-signature"):
        raw = cbor2.loads(encode_signed(make_record(), ALICE))
        select_best(KEY, [canonical_dumps({**raw, "seq": 1})], now=NOW)
