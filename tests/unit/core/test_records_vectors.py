"""The published test vector in protocol/vectors/ stays byte-exact with the implementation."""

from __future__ import annotations

import json
from pathlib import Path

import pycddl

from p2pinfer.core.records import CapabilityRecord, decode_verified, encode_signed
from p2pinfer.crypto.identity import Identity
from p2pinfer.crypto.signing import RECORD_DOMAIN, verify_with_key

PROTOCOL = Path(__file__).resolve().parents[3] / "protocol"


def test_capability_record_vector() -> None:
    vector = json.loads((PROTOCOL / "vectors" / "capability-record-v1.json").read_text())
    identity = Identity.from_seed(bytes.fromhex(vector["seed"]))
    assert identity.peer_id == vector["peer_id"]
    assert identity.public_key.hex() == vector["public_key"]
    blob = bytes.fromhex(vector["blob"])
    record = CapabilityRecord(**vector["fields"])
    assert encode_signed(record, identity) == blob
    assert decode_verified(blob, now=vector["verify_at"]) == record
    signed = bytes.fromhex(vector["signed_bytes"])
    assert signed.startswith(b"p2pinfer:record/v1\x00")
    assert verify_with_key(identity.public_key, RECORD_DOMAIN, signed[len(b"p2pinfer:record/v1\x00"):],
                           bytes.fromhex(vector["signature"]))
    pycddl.Schema((PROTOCOL / "capability.cddl").read_text()).validate_cbor(blob)


def test_invalid_record_vectors_fail_with_their_reason() -> None:
    from p2pinfer.errors import RecordError

    doc = json.loads((PROTOCOL / "vectors" / "capability-record-v1-invalid.json").read_text())
    assert len(doc["cases"]) >= 15
    for case in doc["cases"]:
        try:
            decode_verified(bytes.fromhex(case["blob"]), now=case["verify_at"])
        except RecordError as exc:
            assert exc.reason == case["reason"], case["name"]
        else:
            raise AssertionError(f"vector accepted: {case['name']}")
