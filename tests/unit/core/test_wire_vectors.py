"""protocol/vectors/circuit-v1.json stays byte-exact with the implementation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt
from nacl.public import SealedBox

from p2pinfer.core import wire
from p2pinfer.crypto.identity import Identity
from p2pinfer.crypto.link import LinkEnd, frame_aad, open_frame
from p2pinfer.crypto.sealing import open_assignment
from p2pinfer.crypto.signing import signed_message

V = json.loads((Path(__file__).parents[3] / "protocol" / "vectors" / "circuit-v1.json").read_text())
REQ, HOP = Identity.from_seed(bytes.fromhex(V["requester_seed"])), Identity.from_seed(bytes.fromhex(V["hop_seed"]))


def _assignment() -> wire.Assignment:
    f = dict(V["assignment"])
    for key in ("circuit_id", "in_key", "out_key"):
        f[key] = bytes.fromhex(f[key])
    f["weight_hashes"] = tuple(f["weight_hashes"])
    f["next_hop"] = wire.NextHop(f["next_hop"]["peer_id"], tuple(f["next_hop"]["addrs"]), f["next_hop"]["final"])
    return wire.Assignment(**f)


def test_peer_ids_and_assignment_signature():
    assert (REQ.peer_id, HOP.peer_id) == (V["requester_peer_id"], V["hop_peer_id"])
    body = wire.encode(_assignment())
    assert body.hex() == V["assignment_body"]
    assert signed_message("assignment/v1", body).hex() == V["signed_message"]
    assert REQ.sign("assignment/v1", body).hex() == V["sig"]  # Ed25519 is deterministic
    signed = wire.SignedAssignment(body=body, sig=bytes.fromhex(V["sig"]))
    assert wire.encode(signed).hex() == V["signed_assignment"]


def test_sealed_assignment_opens_for_the_hop_only():
    sealed = bytes.fromhex(V["sealed"])
    assert SealedBox(HOP.x25519_private_key()).decrypt(sealed).hex() == V["signed_assignment"]
    assert open_assignment(HOP, sealed, now_ms=1_700_000_000_000) == _assignment()


def test_payload_aead_and_frame():
    act = {name: np.array(t["data"], dtype=t["dtype"]).reshape(t["shape"]) for name, t in V["payload_tensors"].items()}
    payload = wire.encode(wire.FramePayload(act=act, trace=tuple(V["payload_trace"])))
    assert payload.hex() == V["payload"]
    cid, key, nonce = bytes.fromhex(V["assignment"]["circuit_id"]), bytes.fromhex(V["link_key"]), bytes.fromhex(V["nonce"])
    aad = frame_aad(cid, V["link"], V["direction"], V["seq"])
    assert aad.hex() == V["aad"]
    box = crypto_aead_xchacha20poly1305_ietf_encrypt(payload, aad, nonce, key)
    assert box.hex() == V["box"]
    assert open_frame(LinkEnd(key, cid, V["link"]), V["seq"], nonce, box) == payload
    frame = wire.ActivationFrame(circuit_id=cid, link=V["link"], seq=V["seq"], nonce=nonce, box=box)
    assert wire.encode(frame).hex() == V["frame"]
    assert wire.encode(wire.CloseNotice()).hex() == V["close_notice"]
