"""Signed work receipts: round trip, schema, canonical encoding, every rejection reason."""

from __future__ import annotations

from pathlib import Path

import cbor2
import pycddl
import pytest

from p2pinfer.core.receipts import MAX_RECEIPT_BYTES, Receipt, decode_verified, sign_receipt
from p2pinfer.crypto.identity import Identity
from p2pinfer.crypto.signing import RECEIPT_DOMAIN
from p2pinfer.errors import RecordError

SCHEMA = pycddl.Schema((Path(__file__).parents[3] / "protocol" / "receipt.cddl").read_text())
REQUESTER = Identity.from_seed(b"r" * 32)
HOP = Identity.from_seed(b"h" * 32)


def receipt(**over) -> Receipt:
    fields = dict(circuit_id=b"\x01" * 16, hop_peer_id=HOP.peer_id, requester_peer_id=REQUESTER.peer_id,
                  model_id="minilm-l6", start=2, stop=5, flops=3_000_000_000, measured_s=0.0123,
                  issued_at=1_790_000_000.5)
    fields.update(over)
    return Receipt.make(**fields)


def reason(blob: bytes, **kw) -> str:
    with pytest.raises(RecordError) as info:
        decode_verified(blob, **kw)
    return info.value.reason


def test_round_trip_matches_the_schema_and_is_signed_by_the_requester():
    signed = sign_receipt(receipt(), REQUESTER)
    SCHEMA.validate_cbor(signed.blob)
    back = decode_verified(signed.blob, hop_peer_id=HOP.peer_id)
    assert back.receipt == signed.receipt and back.digest == signed.digest
    assert back.receipt.measured_us == 12300 and back.receipt.issued_at_ms == 1_790_000_000_500
    assert back.receipt.gflop == 3.0 and back.receipt.measured_s == pytest.approx(0.0123)


def test_only_the_requester_can_sign():
    with pytest.raises(RecordError) as info:
        sign_receipt(receipt(), HOP)
    assert info.value.reason == "key-mismatch"


def test_a_receipt_for_another_hop_is_refused():
    assert reason(sign_receipt(receipt(), REQUESTER).blob, hop_peer_id=REQUESTER.peer_id) == "wrong-hop"


def test_any_changed_field_breaks_the_signature():
    signed = sign_receipt(receipt(), REQUESTER)
    body = cbor2.loads(signed.blob)
    for key, value in (("flops", 3_000_000_001), ("stop", 6), ("measured_us", 1), ("model_id", "other")):
        forged = dict(body, **{key: value})
        assert reason(cbor2.dumps(forged, canonical=True)) == "bad-signature"


def test_a_signature_made_for_another_domain_does_not_verify():
    body = cbor2.loads(sign_receipt(receipt(), REQUESTER).blob)
    unsigned = {k: v for k, v in body.items() if k != "sig"}
    body["sig"] = REQUESTER.sign("record/v1", cbor2.dumps(unsigned, canonical=True))
    assert reason(cbor2.dumps(body, canonical=True)) == "bad-signature"
    body["sig"] = REQUESTER.sign(RECEIPT_DOMAIN, cbor2.dumps(unsigned, canonical=True))
    assert decode_verified(cbor2.dumps(body, canonical=True))


def test_non_canonical_oversized_and_garbage_blobs_are_refused():
    signed = sign_receipt(receipt(), REQUESTER)
    body = cbor2.loads(signed.blob)
    assert reason(cbor2.dumps(dict(reversed(list(body.items()))))) == "malformed-cbor"  # key order
    assert reason(signed.blob + b"\x00") == "malformed-cbor"
    assert reason(b"\xff\x00") == "malformed-cbor"
    assert reason(b"\x00" * (MAX_RECEIPT_BYTES + 1)) == "oversized"
    assert reason(cbor2.dumps([1, 2], canonical=True)) == "malformed-cbor"


def test_unknown_version_and_schema_violations_are_named():
    body = cbor2.loads(sign_receipt(receipt(), REQUESTER).blob)
    assert reason(cbor2.dumps(dict(body, v=2), canonical=True)) == "unknown-version"
    assert reason(cbor2.dumps(dict(body, extra=1), canonical=True)) == "bad-schema"
    assert reason(cbor2.dumps({k: v for k, v in body.items() if k != "flops"}, canonical=True)) == "bad-schema"
    assert reason(cbor2.dumps(dict(body, sig=b"x"), canonical=True)) == "bad-schema"
    assert reason(cbor2.dumps(dict(body, start=-1), canonical=True)) == "bad-schema"
    assert reason(cbor2.dumps(dict(body, flops=1.5), canonical=True)) in ("bad-schema", "malformed-cbor")


@pytest.mark.parametrize("over", [
    {"start": 5, "stop": 5}, {"circuit_id": b""}, {"circuit_id": "abc"}, {"model_id": ""},
    {"hop_peer_id": REQUESTER.peer_id}, {"flops": 2**63}, {"measured_s": -1.0}, {"issued_at": float("nan")},
])
def test_invalid_receipts_cannot_be_built(over):
    with pytest.raises(RecordError):
        receipt(**over)


def test_digest_differs_per_receipt():
    a = sign_receipt(receipt(), REQUESTER)
    b = sign_receipt(receipt(circuit_id=b"\x02" * 16), REQUESTER)
    assert a.digest != b.digest and a.digest == sign_receipt(receipt(), REQUESTER).digest
