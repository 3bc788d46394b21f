"""Property/fuzz test of record verification: zero false accepts, zero false rejects.

The oracle does not call the implementation's checks. It relies on three facts:
1. a valid record has exactly one valid encoding (canonical CBOR + unique Ed25519 signatures),
   so any mutation without re-signing is valid iff its bytes equal the original;
2. a mutation re-signed by the record's own key with values drawn from the valid domains is a
   valid record and must decode to exactly the edited record;
3. edits re-signed with a value from a table of invalid values, or signed by any other key,
   must be rejected with the reason the table names.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pinfer.core.profile import COMPUTE_CLASSES
from p2pinfer.core.records import (
    MAX_RECORD_TTL_S,
    CapabilityRecord,
    canonical_dumps,
    decode_verified,
    encode_signed,
    record_key,
)
from p2pinfer.core.validator import validate_entry
from p2pinfer.crypto.identity import Identity
from p2pinfer.crypto.signing import ASSIGNMENT_DOMAIN, RECEIPT_DOMAIN, RECORD_DOMAIN
from p2pinfer.errors import RecordError
from tests.unit.core.records_factory import ALICE, BOB, CAROL, NOW, make_record

IDENTITIES = (ALICE, BOB, CAROL)
BY_PEER = {i.peer_id: i for i in IDENTITIES}
FUZZ = settings(max_examples=1000, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

positive = st.floats(min_value=0.0, exclude_min=True, allow_infinity=False, allow_nan=False)
non_negative = st.floats(min_value=0.0, max_value=1e12, allow_nan=False)
unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
uint64 = st.integers(min_value=0, max_value=2**64 - 1)
short_text = st.text(min_size=1, max_size=24)
expiry = st.floats(min_value=0.001, max_value=MAX_RECORD_TTL_S).map(lambda d: NOW + d)
class_map = st.dictionaries(st.sampled_from(COMPUTE_CLASSES), positive)
id_list = st.lists(short_text, max_size=4).map(tuple)


def addrs_of(peer_id: str) -> st.SearchStrategy[tuple[str, ...]]:
    hosts = st.sampled_from(["/ip4/127.0.0.1/tcp/4001", "/ip4/10.0.0.7/udp/9/quic-v1",
                             "/ip6/::1/tcp/1", "/dns4/pi.local/tcp/4001"])
    return st.lists(hosts.map(lambda h: f"{h}/p2p/{peer_id}"), max_size=3).map(tuple)


VALID_VALUES: dict[str, Any] = {
    "seq": uint64, "expires_at": expiry, "gflops": positive, "gflops_by_class": class_map,
    "mem_bytes": uint64, "up_mbps": positive, "down_mbps": positive, "latency_ms": non_negative,
    "models": id_list, "weights": id_list, "load": unit, "swarm": short_text,
}


@st.composite
def records(draw: st.DrawFn) -> tuple[CapabilityRecord, Identity]:
    identity = draw(st.sampled_from(IDENTITIES))
    fields = {name: draw(strategy) for name, strategy in VALID_VALUES.items()}
    fields["addrs"] = draw(addrs_of(identity.peer_id))
    return make_record(identity, **fields), identity


def invalid_edits(peer_id: str, has_addrs: bool) -> list[tuple[str, Any, str]]:
    """(field, value, expected reason) for a record of `peer_id`, re-signed by its own key.

    A changed peer_id fails the addrs suffix rule if there are addrs, else the key check."""
    return [
        ("version", 2, "unknown-version"), ("version", 0, "unknown-version"),
        ("version", "1", "bad-schema"), ("seq", -1, "bad-schema"), ("seq", 0.5, "bad-schema"),
        ("gflops", 0.0, "bad-schema"), ("gflops", -3.5, "bad-schema"), ("gflops", 7, "bad-schema"),
        ("gflops", math.inf, "bad-schema"), ("up_mbps", math.nan, "bad-schema"),
        ("down_mbps", 0.0, "bad-schema"), ("latency_ms", -1e-9, "bad-schema"),
        ("load", 1.0000001, "bad-schema"), ("load", True, "bad-schema"),
        ("mem_bytes", -5, "bad-schema"), ("mem_bytes", None, "bad-schema"),
        ("gflops_by_class", {"tpu": 1.0}, "bad-schema"), ("gflops_by_class", {"conv": -1.0}, "bad-schema"),
        ("models", [b"bytes"], "bad-schema"), ("models", ["x" * 129], "bad-schema"),
        ("weights", "not-a-list", "bad-schema"), ("swarm", "", "bad-schema"),
        ("addrs", [f"/ip4/1.1.1.1/tcp/1/p2p/{CAROL.peer_id}x"], "bad-schema"),
        ("addrs", ["/ip4/1.1.1.1/tcp/1"], "bad-schema"), ("addrs", [f"/p2p/{peer_id}"], "bad-schema"),
        ("peer_id", "not base58 0OIl", "bad-schema" if has_addrs else "key-mismatch"),
        ("expires_at", NOW, "expired"), ("expires_at", NOW - 1.0, "expired"),
        ("expires_at", NOW + MAX_RECORD_TTL_S + 10.0, "expiry-too-far"),
        ("key", b"\x01" * 32, "key-mismatch"), ("key", b"\x01" * 33, "bad-schema"),
        ("sig", b"\x00" * 65, "bad-schema"), ("extra", 1, "bad-schema"), ("load", ..., "bad-schema"),
    ]


def resign(raw: dict[str, Any], signer: Identity, domain: str = RECORD_DOMAIN) -> bytes:
    body = {k: v for k, v in raw.items() if k != "sig"}
    return canonical_dumps({**body, "sig": signer.sign(domain, canonical_dumps(body))})


def outcome(blob: bytes, key: str) -> tuple[str, CapabilityRecord | None]:
    """What the verifier says, with decode_verified and validate_entry forced to agree."""
    try:
        record = decode_verified(blob, now=NOW)
    except RecordError as exc:
        try:
            validate_entry(key, blob, now=NOW)
        except RecordError as again:
            assert again.reason == exc.reason
            return exc.reason, None
        raise AssertionError("validate_entry accepted what decode_verified rejected") from exc
    assert validate_entry(record_key(record.peer_id), blob, now=NOW) == record
    return "accept", record


def expect_same_or_reject(original: bytes, mutated: bytes, record: CapabilityRecord, key: str) -> None:
    verdict, got = outcome(mutated, key)
    if mutated == original:
        assert verdict == "accept" and got == record, f"false reject: {verdict}"
    else:
        assert verdict != "accept", f"false accept of a mutated blob: {mutated.hex()}"


MUTATIONS = ["bitflip", "truncate", "append", "splice", "loose", "canonical", "edit",
             "resign-valid", "resign-invalid", "other-signer", "other-key", "impersonate",
             "other-domain", "swap-sig", "wrong-pair"]


@FUZZ
@given(case=records(), kind=st.sampled_from(MUTATIONS), data=st.data())
def test_mutated_records_zero_false_accepts_or_rejects(case: Any, kind: str, data: st.DataObject) -> None:
    record, identity = case
    blob = encode_signed(record, identity)
    key = record_key(record.peer_id)
    assert outcome(blob, key) == ("accept", record)
    raw = cbor2.loads(blob)
    other = data.draw(st.sampled_from([i for i in IDENTITIES if i != identity]))
    if kind in ("bitflip", "truncate", "append", "splice", "loose", "canonical"):
        expect_same_or_reject(blob, byte_mutation(kind, blob, data), record, key)
    elif kind == "edit":  # a valid-looking value, but the signature no longer covers it
        name = data.draw(st.sampled_from(sorted(VALID_VALUES)))
        raw[name] = wire_value(data.draw(VALID_VALUES[name]))
        expect_same_or_reject(blob, canonical_dumps(raw), record, key)
    elif kind == "resign-valid":
        name = data.draw(st.sampled_from(sorted(VALID_VALUES)))
        value = data.draw(VALID_VALUES[name])
        raw[name] = wire_value(value)
        expected = dataclasses.replace(record, **{name: value})
        assert outcome(resign(raw, identity), key) == ("accept", expected), "false reject"
    elif kind == "resign-invalid":
        name, value, reason = data.draw(st.sampled_from(invalid_edits(record.peer_id, bool(record.addrs))))
        if value is ...:
            del raw[name]
        else:
            raw[name] = value
        edited = canonical_dumps(raw) if name == "sig" else resign(raw, identity)
        assert outcome(edited, key)[0] == reason
    elif kind == "other-signer":  # right key field, wrong private key
        assert outcome(resign(raw, other), key)[0] == "bad-signature"
    elif kind == "other-key":  # claims the other key, but peer_id is still the victim's
        raw["key"] = other.public_key
        assert outcome(resign(raw, other), key)[0] == "key-mismatch"
    elif kind == "impersonate":  # a complete, valid record of `other`, stored under our key
        raw.update(key=other.public_key, peer_id=other.peer_id,
                   addrs=[a.replace(record.peer_id, other.peer_id) for a in raw["addrs"]])
        forged = resign(raw, other)
        assert decode_verified(forged, now=NOW).peer_id == other.peer_id
        assert validate_reason(key, forged) == "key-mismatch"
    elif kind == "other-domain":
        domain = data.draw(st.sampled_from([ASSIGNMENT_DOMAIN, RECEIPT_DOMAIN, "record/v2"]))
        assert outcome(resign(raw, identity, domain), key)[0] == "bad-signature"
    elif kind == "swap-sig":
        twin = dataclasses.replace(record, seq=(record.seq + 1) % 2**64)
        raw["sig"] = cbor2.loads(encode_signed(twin, identity))["sig"]
        assert outcome(canonical_dumps(raw), key)[0] == "bad-signature"
    else:  # wrong-pair: a valid record offered under another peer's key
        assert validate_reason(record_key(other.peer_id), blob) == "key-mismatch"


def validate_reason(key: str, blob: bytes) -> str:
    try:
        validate_entry(key, blob, now=NOW)
    except RecordError as exc:
        return exc.reason
    return "accept"


def wire_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: float(v) for k, v in value.items()}
    if isinstance(value, float) or type(value) is int:
        return value
    return value


def byte_mutation(kind: str, blob: bytes, data: st.DataObject) -> bytes:
    n = len(blob)
    if kind == "bitflip":
        out = bytearray(blob)
        for pos in data.draw(st.lists(st.integers(0, n * 8 - 1), min_size=1, max_size=3)):
            out[pos // 8] ^= 1 << (pos % 8)
        return bytes(out)
    if kind == "truncate":
        return blob[: data.draw(st.integers(0, n - 1))]
    if kind == "append":
        return blob + data.draw(st.binary(min_size=1, max_size=8))
    if kind == "splice":
        start = data.draw(st.integers(0, n))
        end = data.draw(st.integers(start, min(n, start + 8)))
        return blob[:start] + data.draw(st.binary(max_size=8)) + blob[end:]
    decoded = cbor2.loads(blob)
    if kind == "loose":  # same data, default (non-canonical) encoder
        return cbor2.dumps(decoded)
    return canonical_dumps(decoded)  # canonical re-encoding: must be byte-identical


def test_every_single_bit_flip_and_truncation_is_rejected() -> None:
    """Exhaustive over three records: ~4,000 bit flips and ~500 truncations each."""
    checked = 0
    for identity in IDENTITIES:
        blob = encode_signed(make_record(identity), identity)
        key = record_key(identity.peer_id)
        for pos in range(len(blob) * 8):
            flipped = bytearray(blob)
            flipped[pos // 8] ^= 1 << (pos % 8)
            assert validate_reason(key, bytes(flipped)) != "accept", f"bit {pos} flip accepted"
            checked += 1
        for cut in range(len(blob)):
            assert validate_reason(key, blob[:cut]) != "accept"
            checked += 1
    assert checked > 10_000
