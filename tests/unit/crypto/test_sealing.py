"""Sign-then-seal assignments: only the named hop opens them, and only if the requester signed."""

from __future__ import annotations

import os

import pytest
from nacl.public import SealedBox

from p2pinfer.core import wire
from p2pinfer.crypto.identity import Identity, x25519_public_key_of
from p2pinfer.crypto.sealing import open_assignment, seal_assignment
from p2pinfer.errors import RecordError

REQ, HOP, OTHER = Identity.generate(), Identity.generate(), Identity.generate()


def _assignment(requester=REQ, hop=HOP, deadline_ms=2_000):
    return wire.Assignment(
        circuit_id=os.urandom(16), hop=hop.peer_id, requester=requester.peer_id, model_id="mlp", start=0,
        stop=1, weight_hashes=(), in_link=0, in_key=os.urandom(32), out_key=os.urandom(32),
        next_hop=wire.NextHop(requester.peer_id, (), True), deadline_ms=deadline_ms)


def test_hop_opens_and_verifies():
    a = _assignment()
    assert open_assignment(HOP, seal_assignment(REQ, a), now_ms=1_000) == a


def _reason(sealed, hop=HOP, now_ms=1_000):
    with pytest.raises(RecordError) as info:
        open_assignment(hop, sealed, now_ms=now_ms)
    return info.value.reason


def test_other_peer_cannot_open():
    assert _reason(seal_assignment(REQ, _assignment()), hop=OTHER) == "not-for-me"


def test_expired():
    assert _reason(seal_assignment(REQ, _assignment(deadline_ms=999))) == "expired"


def test_signature_by_someone_else_is_bad_signature():
    a = _assignment()
    body = wire.encode(a)
    forged = wire.SignedAssignment(body=body, sig=OTHER.sign("assignment/v1", body))
    sealed = SealedBox(x25519_public_key_of(HOP.peer_id)).encrypt(wire.encode(forged))
    assert _reason(sealed) == "bad-signature"


def test_signature_in_another_domain_is_bad_signature():
    body = wire.encode(_assignment())
    wrong = wire.SignedAssignment(body=body, sig=REQ.sign("record/v1", body))
    assert _reason(SealedBox(x25519_public_key_of(HOP.peer_id)).encrypt(wire.encode(wrong))) == "bad-signature"


def test_assignment_naming_another_hop_resealed_to_us_is_refused():
    a = _assignment(hop=OTHER)
    body = wire.encode(a)
    signed = wire.SignedAssignment(body=body, sig=REQ.sign("assignment/v1", body))
    assert _reason(SealedBox(x25519_public_key_of(HOP.peer_id)).encrypt(wire.encode(signed))) == "not-for-me"


def test_garbage_inside_the_box_is_malformed():
    assert _reason(SealedBox(x25519_public_key_of(HOP.peer_id)).encrypt(b"\xa0")) == "malformed"


def test_requester_must_sign_as_itself():
    with pytest.raises(ValueError):
        seal_assignment(OTHER, _assignment())
