"""Capability records: encoding, every rejection reason, CDDL conformance, conversions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cbor2
import pycddl
import pytest

from p2pinfer.core.records import (
    MAX_RECORD_BYTES,
    MAX_RECORD_TTL_S,
    CapabilityRecord,
    canonical_dumps,
    decode_verified,
    encode_signed,
    next_seq,
    record_key,
    strict_loads,
    to_json_dict,
    to_peer_spec,
)
from p2pinfer.crypto.signing import ASSIGNMENT_DOMAIN, RECORD_DOMAIN
from p2pinfer.errors import RecordError
from tests.unit.core.records_factory import ALICE, BOB, NOW, make_record

KINDS = {"bottleneck": 12.5, "conv_bn_act": 16.0, "linear": 2.25, "max_pool": 0.03125, "bert_layer": 14.0}
SCHEMA = pycddl.Schema((Path(__file__).parents[3] / "protocol" / "capability.cddl").read_text())


def reason_of(blob: bytes, now: float = NOW, **kw: Any) -> str:
    with pytest.raises(RecordError) as err:
        decode_verified(blob, now=now, **kw)
    return err.value.reason


def resign(raw: dict[str, Any], identity: Any = ALICE, domain: str = RECORD_DOMAIN) -> bytes:
    """Re-sign an edited wire map (as a malicious or buggy peer could) and encode it."""
    body = {k: v for k, v in raw.items() if k != "sig"}
    return canonical_dumps({**body, "sig": identity.sign(domain, canonical_dumps(body))})


def wire(record: CapabilityRecord | None = None) -> dict[str, Any]:
    return cbor2.loads(encode_signed(record or make_record(), ALICE))


def test_roundtrip_and_cddl() -> None:
    for record in [make_record(), make_record(BOB), make_record(load=1.0, latency_ms=0.0),
                   make_record(addrs=(), models=(), weights=(), gflops_by_class={}),
                   make_record(gflops_by_kind=KINDS)]:
        identity = ALICE if record.peer_id == ALICE.peer_id else BOB
        blob = encode_signed(record, identity)
        SCHEMA.validate_cbor(blob)
        assert decode_verified(blob, now=NOW) == record
        assert encode_signed(record, identity) == blob  # deterministic


def test_int_values_are_stored_as_floats() -> None:
    record = make_record(gflops=40, latency_ms=0, load=0, gflops_by_class={"linear": 7})
    assert type(record.gflops) is float and type(record.gflops_by_class["linear"]) is float
    SCHEMA.validate_cbor(encode_signed(record, ALICE))


def test_encode_refuses_another_peers_record_and_oversize() -> None:
    with pytest.raises(RecordError) as err:
        encode_signed(make_record(BOB), ALICE)
    assert err.value.reason == "key-mismatch"
    huge = make_record(weights=tuple(f"{i:0128x}" for i in range(512)))
    with pytest.raises(RecordError) as err:
        encode_signed(huge, ALICE)
    assert err.value.reason == "oversized"


def test_rejects_oversized_before_parsing() -> None:
    blob = encode_signed(make_record(), ALICE)
    assert reason_of(blob, max_bytes=len(blob) - 1) == "oversized"
    assert reason_of(b"\xa0" * (MAX_RECORD_BYTES + 1)) == "oversized"


@pytest.mark.parametrize("blob", [b"", b"\xff", b"\xa1", b"\x5f\x41a\xff",  # indefinite bstr
                                  bytes.fromhex("c11a514b67b0"),  # tag 1 (a datetime)
                                  bytes.fromhex("d81e820100"),  # tag 30 rational 1/0
                                  bytes.fromhex("a2616101616102"),  # duplicate key
                                  bytes.fromhex("a1010a"),  # non-string key
                                  b"\x81" * 20 + b"\x00"])  # too deep
def test_rejects_malformed_cbor(blob: bytes) -> None:
    assert reason_of(blob) == "malformed-cbor"


def test_rejects_non_canonical_and_trailing_bytes() -> None:
    record = make_record()
    blob = encode_signed(record, ALICE)
    assert reason_of(blob + b"\x00") == "malformed-cbor"
    loose = cbor2.dumps(cbor2.loads(blob))  # same map, floats as float64, insertion order
    assert loose != blob and reason_of(loose) == "malformed-cbor"
    assert canonical_dumps(strict_loads(blob)) == blob


def test_rejects_unknown_version_even_if_signed() -> None:
    raw = wire()
    raw["version"] = 2
    assert reason_of(resign(raw)) == "unknown-version"
    raw["extra-field-of-v2"] = "x"
    assert reason_of(resign(raw)) == "unknown-version"
    with pytest.raises(RecordError) as err:
        make_record(version=2)
    assert err.value.reason == "unknown-version"


# (field, bad value, whether pycddl catches it). CDDL cannot say "finite" or "ends in
# /p2p/<id>"; pycddl 0.6 also ignores .size's major type, array upper bounds and unknown keys in
# all-optional maps. The Python checks cover all of them.
BAD_FIELDS: list[tuple[str, Any, bool]] = [
    ("version", 1.0, True), ("version", "1", True), ("peer_id", b"id", False),
    ("peer_id", "", True), ("seq", -1, True), ("seq", 1.5, True), ("seq", True, True),
    ("expires_at", -1.0, True), ("expires_at", math.nan, False), ("gflops", 0.0, True),
    ("gflops", -1.0, True), ("gflops", math.inf, False), ("gflops", 40, True),
    ("gflops_by_class", {"gpu": 1.0}, False), ("gflops_by_class", {"conv": 0.0}, True),
    ("gflops_by_class", {"conv": 3}, True), ("gflops_by_class", [1.0], True),
    ("mem_bytes", -1, True), ("mem_bytes", 1.0, True), ("up_mbps", 0.0, True),
    ("down_mbps", -5.0, True), ("latency_ms", -0.5, True), ("load", 1.5, True),
    ("load", -0.1, True), ("load", False, True), ("models", "minilm", True),
    ("models", [1], False), ("models", [""], True), ("models", ["m" * 129], True),
    ("models", ["m"] * 65, False), ("weights", ["w"] * 513, False),
    ("addrs", ["/ip4/1.2.3.4/tcp/1"], False), ("addrs", ["/ip4/1.2.3.4/tcp/1/p2p/" + BOB.peer_id], False),
    ("addrs", ["x/p2p/" + ALICE.peer_id], False), ("addrs", ["/p2p/x/p2p/" + ALICE.peer_id] * 17, False),
    ("swarm", "", True), ("swarm", "s" * 65, True), ("swarm", None, True),
    ("key", b"\x00" * 31, True), ("key", "k" * 32, False),
    ("gflops_by_kind", {}, False), ("gflops_by_kind", {"conv_bn_act": 0.0}, True),
    ("gflops_by_kind", {"conv_bn_act": 3}, True), ("gflops_by_kind", {"Conv": 1.0}, False),
    ("gflops_by_kind", {"k" * 41: 1.0}, False), ("gflops_by_kind", [1.0], True),
    ("gflops_by_kind", {f"k{i}": 1.0 for i in range(33)}, False), ("gflops_by_kind", {"linear": math.inf}, False),
    ("frame_ms", 2.0, False),  # without frame_ms_per_mib: the pair is both or neither
    ("frame_ms_per_mib", 5.0, False),
    ("cpu_quota_ms", 5.0, False),  # without cpu_period_ms: the pair is both or neither
    ("cpu_period_ms", 25.0, False),
]


@pytest.mark.parametrize(("name", "value", "cddl_catches"), [
    ("frame_ms", 0.0, True), ("frame_ms", -1.0, True), ("frame_ms", 60_001.0, True), ("frame_ms", 2, True),
    ("frame_ms", math.nan, False), ("frame_ms_per_mib", 0.0, True), ("frame_ms_per_mib", "5", True),
])
def test_rejects_a_bad_frame_cost_even_if_signed(name: str, value: Any, cddl_catches: bool) -> None:
    assert_signed_edit_rejected(wire(make_record(frame_ms=2.0, frame_ms_per_mib=5.5)), name, value, cddl_catches)


@pytest.mark.parametrize(("name", "value", "cddl_catches"), [
    ("cpu_quota_ms", 0.0, True), ("cpu_quota_ms", 25.0, False), ("cpu_quota_ms", 30.0, False),
    ("cpu_quota_ms", 5, True), ("cpu_period_ms", 1000.5, True), ("cpu_period_ms", -25.0, True),
    ("cpu_period_ms", math.nan, False), ("cpu_period_ms", "25", True),
])
def test_rejects_a_bad_cpu_quota_even_if_signed(name: str, value: Any, cddl_catches: bool) -> None:
    """The quota must be a share of less than a core of a period the kernel allows (<= 1 s)."""
    assert_signed_edit_rejected(wire(make_record(cpu_quota_ms=5.0, cpu_period_ms=25.0)), name, value, cddl_catches)


def test_a_cpu_quota_is_optional_on_the_wire_and_reaches_the_planner() -> None:
    assert not {"cpu_quota_ms", "cpu_period_ms"} & set(wire(make_record()))
    record = make_record(cpu_quota_ms=5.0, cpu_period_ms=25.0)
    blob = encode_signed(record, ALICE)
    SCHEMA.validate_cbor(blob)
    spec = to_peer_spec(decode_verified(blob, now=NOW))
    assert (spec.cpu_quota_ms, spec.cpu_period_ms) == (5.0, 25.0)
    assert to_json_dict(record)["cpu_period_ms"] == 25.0
    with pytest.raises(RecordError, match="cpu_quota_ms") as err:
        make_record(cpu_quota_ms=25.0, cpu_period_ms=25.0)  # a whole core: no quota to advertise
    assert err.value.reason == "bad-schema"


@pytest.mark.parametrize(("name", "value", "cddl_catches"), BAD_FIELDS)
def test_rejects_bad_field_even_if_signed(name: str, value: Any, cddl_catches: bool) -> None:
    assert_signed_edit_rejected(wire(), name, value, cddl_catches)


def assert_signed_edit_rejected(raw: dict[str, Any], name: str, value: Any, cddl_catches: bool) -> None:
    """`raw` with `name` set to `value`, validly re-signed: the verifier says bad-schema, and so
    does the CDDL schema where it can express the rule."""
    raw[name] = value
    blob = resign(raw)
    assert reason_of(blob) == "bad-schema"
    if cddl_catches:
        with pytest.raises(pycddl.ValidationError):
            SCHEMA.validate_cbor(blob)


def test_frame_costs_are_optional_on_the_wire_and_reach_the_planner() -> None:
    """Not measured: both keys absent (old records keep their bytes); measured: signed, verified,
    valid CDDL and handed to the planner's PeerSpec and to `peers --json`."""
    assert not {"frame_ms", "frame_ms_per_mib"} & set(wire(make_record()))
    record = make_record(frame_ms=2.25, frame_ms_per_mib=5.5)
    blob = encode_signed(record, ALICE)
    SCHEMA.validate_cbor(blob)
    assert (wire(record)["frame_ms"], wire(record)["frame_ms_per_mib"]) == (2.25, 5.5)
    spec = to_peer_spec(decode_verified(blob, now=NOW))
    assert (spec.frame_ms, spec.frame_ms_per_mib) == (2.25, 5.5)
    assert to_json_dict(record)["frame_ms_per_mib"] == 5.5
    for bad in ({"frame_ms": 2.0}, {"frame_ms": 2.0, "frame_ms_per_mib": -1.0}, {"frame_ms": math.inf, "frame_ms_per_mib": 1.0}):
        with pytest.raises(RecordError) as err:
            make_record(**bad)
        assert err.value.reason == "bad-schema" and "frame_ms" in str(err.value)


def test_kind_speeds_are_optional_on_the_wire_and_reach_the_planner() -> None:
    """No kind table: the key is absent (records without one keep their old bytes); with one:
    signed, verified and handed to the planner's PeerSpec and to `peers --json`."""
    assert "gflops_by_kind" not in wire(make_record())
    record = make_record(gflops_by_kind=KINDS)
    assert wire(record)["gflops_by_kind"] == KINDS
    assert dict(to_peer_spec(decode_verified(encode_signed(record, ALICE), now=NOW)).gflops_by_kind) == KINDS
    assert to_json_dict(record)["gflops_by_kind"] == KINDS
    with pytest.raises(RecordError) as err:
        make_record(gflops_by_kind={"bottleneck": -1.0})
    assert err.value.reason == "bad-schema" and "gflops_by_kind.bottleneck" in str(err.value)


def test_rejects_bad_sig_length_and_bignum_seq() -> None:
    raw = wire()
    raw["sig"] = raw["sig"][:63]
    assert reason_of(canonical_dumps(raw)) == "bad-schema"
    raw = wire()
    raw["seq"] = 2**64  # needs a bignum tag: not canonical record CBOR
    assert reason_of(resign(raw)) == "malformed-cbor"


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_rejects_missing_or_extra_field(change: str) -> None:
    raw = wire()
    if change == "missing":
        del raw["load"]
    else:
        raw["note"] = "hi"
    blob = resign(raw)
    assert reason_of(blob) == "bad-schema"
    with pytest.raises(pycddl.ValidationError):
        SCHEMA.validate_cbor(blob)
    assert reason_of(canonical_dumps([1, 2])) == "bad-schema"


def test_rejects_key_not_matching_peer_id() -> None:
    raw = wire()
    raw["key"] = BOB.public_key
    assert reason_of(resign(raw, BOB)) == "key-mismatch"  # Bob signs a record claiming Alice
    raw = wire()
    raw["peer_id"] = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
    raw["addrs"] = []
    assert reason_of(resign(raw)) == "key-mismatch"  # an id with no Ed25519 key inside


def test_rejects_bad_signature() -> None:
    raw = wire()
    assert reason_of(resign(raw, BOB)) == "bad-signature"  # wrong signer, key field unchanged
    assert reason_of(resign(raw, ALICE, ASSIGNMENT_DOMAIN)) == "bad-signature"  # other domain
    raw["gflops"] = 4000.0  # an edit after signing
    assert reason_of(canonical_dumps(raw)) == "bad-signature"
    raw = wire()
    raw["sig"] = bytes(64)
    assert reason_of(canonical_dumps(raw)) == "bad-signature"


def test_expiry_window() -> None:
    blob = encode_signed(make_record(), ALICE)
    assert decode_verified(blob, now=NOW + 299.9).peer_id == ALICE.peer_id
    assert reason_of(blob, now=NOW + 300.0) == "expired"
    assert reason_of(blob, now=NOW + 10_000) == "expired"
    far = encode_signed(make_record(expires_at=NOW + MAX_RECORD_TTL_S + 1), ALICE)
    assert reason_of(far) == "expiry-too-far"
    assert decode_verified(far, now=NOW + 2).expires_at == NOW + MAX_RECORD_TTL_S + 1


def test_rejects_non_bytes() -> None:
    assert reason_of("text") == "malformed-cbor"  # type: ignore[arg-type]


def test_next_seq_is_monotonic_across_restarts() -> None:
    first = next_seq(None, now=NOW)
    assert first == int(NOW * 1000)
    assert next_seq(first, now=NOW) == first + 1  # same millisecond
    assert next_seq(first, now=NOW - 5) == first + 1  # clock stepped back
    assert next_seq(first, now=NOW + 1) == first + 1000
    assert next_seq(None, now=NOW + 1) > first  # a restart forgot its seq: still newer


def test_record_key_and_conversions() -> None:
    record = make_record(load=1.0)
    assert record_key(ALICE.peer_id) == f"/p2pinfer/record/{ALICE.peer_id}"
    spec = to_peer_spec(record, reputation=0.5)
    assert (spec.peer_id, spec.gflops, spec.mem_bytes) == (ALICE.peer_id, 41.5, 3 * 2**30)
    assert spec.load < 1 and spec.reputation == 0.5 and spec.holds == frozenset(record.weights)
    assert dict(spec.gflops_by_class) == dict(record.gflops_by_class)
    doc = to_json_dict(record)
    for name in ["peer_id", "addrs", "gflops", "mem_bytes", "up_mbps", "down_mbps",
                 "latency_ms", "models", "expires", "load", "gflops_by_class"]:
        assert name in doc
    assert doc["verified"] is True and doc["expires"] == record.expires_at
    import json

    assert json.loads(json.dumps(doc)) == doc


def test_record_is_frozen_and_normalised() -> None:
    record = make_record(models=["a", "b"])
    assert record.models == ("a", "b")
    with pytest.raises(AttributeError):
        record.seq = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        record.gflops_by_class["linear"] = 1.0  # type: ignore[index]
    assert len({record, make_record(models=("a", "b")), make_record(seq=1)}) == 2
