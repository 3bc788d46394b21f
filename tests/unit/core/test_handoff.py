"""Handoffs (core/handoff.py, crypto/handoff_sealing.py) with pure machines, no sockets: a hop
hands its retained outputs into a suffix circuit that computes them and whose commitment chain
starts from what the holder committed to; forged, foreign or stale handoffs are refused; every
message validates against protocol/handoff.cddl; protocol/vectors/handoff-v1.json is exact."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pycddl
import pytest
from nacl.public import SealedBox

from p2pinfer.core import handoff as ho
from p2pinfer.core import hop as hopm
from p2pinfer.core import wire
from p2pinfer.core.circuit import CircuitMachine, HopSpec
from p2pinfer.crypto.handoff_sealing import HANDOFF_DOMAIN, open_handoff, seal_handoff, sign_handoff
from p2pinfer.crypto.identity import Identity
from p2pinfer.crypto.signing import signed_message
from p2pinfer.errors import RecordError, WireError

PROTOCOL = Path(__file__).parents[3] / "protocol"
CDDL = (PROTOCOL / "handoff.cddl").read_text() + "\n" + (PROTOCOL / "circuit.cddl").read_text()
V = json.loads((PROTOCOL / "vectors" / "handoff-v1.json").read_text())
NOW = 1_700_000_000_000
REQ, H1, H2, H3 = (Identity.generate() for _ in range(4))


def rule(name: str) -> pycddl.Schema:
    return pycddl.Schema(f"root = {name}\n{CDDL}")


def _circuit(hops: list[HopSpec]) -> CircuitMachine:
    return CircuitMachine(REQ, model_id="ab" * 32, hops=hops, requester_addrs=(), now_ms=NOW, ttl_ms=60_000)


def _ready(c: CircuitMachine, machines: list[hopm.HopMachine]) -> None:
    for (spec, data), m in zip(c.assign_requests(), machines):
        reply = m.span_ready(m.on_assign(data, now_ms=NOW).assignment.circuit_id)
        c.on_reply(spec.peer_id, wire.encode(reply.message))


@pytest.fixture()
def world():
    """C = H1 [0,1) -> H2 [1,2) with seqs 0..2 computed by H1 (H1 doubles its input, H2 is gone);
    C' = H3 [1,2), the suffix."""
    c = _circuit([HopSpec(H1.peer_id, (), 0, 1), HopSpec(H2.peer_id, (), 1, 2)])
    m1, m2 = hopm.HopMachine(H1), hopm.HopMachine(H2)
    _ready(c, [m1, m2])
    outs = []
    for i in range(3):
        _, data = c.input_frame({"x": np.full((1, 4), i, np.float32)})
        comp = m1.on_frame(data, now_ms=NOW)
        done = m1.finish(comp, {"x": comp.act["x"] * 2}, 5)
        c.on_commit(H1.peer_id, wire.decode(done.commit.data, expect=[wire.HopCommit]))
        m1.retain(comp.circuit_id, comp.seq, done.out_bytes)
        outs.append(done)
    suffix = _circuit([HopSpec(H3.peer_id, ("/ip4/127.0.0.1/tcp/3",), 1, 2)])
    m3 = hopm.HopMachine(H3)
    _ready(suffix, [m3])
    return c, m1, suffix, m3


def _handoff(c: CircuitMachine, suffix: CircuitMachine, seqs: tuple[int, ...], **kw) -> ho.Handoff:
    first, key = ho.adopt(suffix, [c.committed(0, s).out_hash for s in seqs])
    fields = dict(circuit_id=c.circuit_id, hop=H1.peer_id, requester=REQ.peer_id, link=0, seqs=seqs,
                  to_circuit=suffix.circuit_id, to_seq=first, to_key=key,
                  next_hop=wire.NextHop(H3.peer_id, suffix.hops[0].addrs, False), deadline_ms=NOW + 10_000)
    fields.update(kw)
    return ho.Handoff(**fields)


def test_retained_outputs_resume_in_the_suffix_with_an_unbroken_chain(world) -> None:
    c, m1, suffix, m3 = world
    h = _handoff(c, suffix, (1, 2))
    opened = open_handoff(H1, seal_handoff(REQ, h))
    assert opened == h and ho.check(opened, m1.assignment(c.circuit_id), me=H1.peer_id, now_ms=NOW, max_ttl_ms=3_600_000) is None
    planned = ho.frames(opened, ho.held(opened, m1.retention))
    assert [(s, n) for s, n, _ in planned.frames] == [(1, 0), (2, 1)] and planned.missing == ()
    for seq, new_seq, frame in planned.frames:
        comp = m3.on_frame(frame, now_ms=NOW)
        assert isinstance(comp, hopm.Compute) and comp.seq == new_seq and comp.trace == ()
        np.testing.assert_array_equal(comp.act["x"], np.full((1, 4), 2 * seq, np.float32))
        done = m3.finish(comp, comp.act, 3)
        suffix.on_commit(H3.peer_id, wire.decode(done.commit.data, expect=[wire.HopCommit]))
        result = suffix.on_result(H3.peer_id, done.send.data)
        assert suffix.chain(new_seq, result.digest).ok
    # the requester's own next frame (its close notice) follows the reserved seqs: not a replay
    assert isinstance(m3.on_frame(suffix.close_frame(), now_ms=NOW), hopm.Close)


def test_a_substituted_activation_breaks_the_suffix_chain_at_its_start(world) -> None:
    c, m1, suffix, m3 = world
    h = _handoff(c, suffix, (0,))
    wrong = {0: m1.retention.get(c.circuit_id, 1)}  # the holder sends seq 1's output as seq 0's
    (_, new_seq, frame), = ho.frames(h, wrong).frames
    done = m3.finish(m3.on_frame(frame, now_ms=NOW), {"x": np.zeros((1, 4), np.float32)}, 1)
    suffix.on_commit(H3.peer_id, wire.decode(done.commit.data, expect=[wire.HopCommit]))
    check = suffix.chain(new_seq, suffix.on_result(H3.peer_id, done.send.data).digest)
    assert check.breaks == (0,)


def test_evicted_seqs_are_reported_missing(world) -> None:
    c, m1, suffix, _m3 = world
    m1.retention.drop(c.circuit_id)
    h = _handoff(c, suffix, (0, 2))
    planned = ho.frames(h, ho.held(h, m1.retention))
    assert planned.frames == () and planned.missing == (0, 2)


def test_only_the_circuits_requester_may_move_its_activations(world) -> None:
    c, m1, suffix, _m3 = world
    other = Identity.generate()
    h = replace(_handoff(c, suffix, (0,)), requester=other.peer_id)
    opened = open_handoff(H1, seal_handoff(other, h))  # a valid signature, by the wrong peer
    assert ho.check(opened, m1.assignment(c.circuit_id), me=H1.peer_id, now_ms=NOW,
                    max_ttl_ms=3_600_000)[0] == "wrong-requester"


@pytest.mark.parametrize("change, reason", [
    (dict(link=1), "wrong-link"), (dict(deadline_ms=NOW - 1), "expired"), (dict(deadline_ms=NOW + 7_200_000), "malformed"),
    (dict(circuit_id=b"\x07" * 16), "unknown-circuit"), (dict(hop=H2.peer_id), "not-for-me")])
def test_handoffs_that_do_not_fit_the_circuit_are_refused(world, change, reason) -> None:
    c, m1, suffix, _m3 = world
    h = replace(_handoff(c, suffix, (0,)), **change)
    assert ho.check(h, m1.assignment(h.circuit_id), me=H1.peer_id, now_ms=NOW, max_ttl_ms=3_600_000)[0] == reason


def test_forged_or_misaddressed_handoffs_do_not_open(world) -> None:
    c, _m1, suffix, _m3 = world
    h = _handoff(c, suffix, (0,))
    signed = wire.decode(sign_handoff(REQ, h), expect=[ho.SignedHandoff])
    forged = wire.encode(ho.SignedHandoff(body=signed.body, sig=bytes(64)))
    with pytest.raises(RecordError, match="signature") as exc:
        open_handoff(H1, SealedBox(H1.x25519_private_key().public_key).encrypt(forged))
    assert exc.value.reason == "bad-signature"
    with pytest.raises(RecordError) as exc:
        open_handoff(H2, seal_handoff(REQ, h))
    assert exc.value.reason == "not-for-me"
    with pytest.raises(RecordError) as exc:
        open_handoff(H1, SealedBox(H1.x25519_private_key().public_key).encrypt(b"\xa0"))
    assert exc.value.reason == "malformed"


@pytest.mark.parametrize("change, match", [(dict(seqs=()), "non-empty"), (dict(seqs=(1, 1)), "distinct"),
                                            (dict(to_circuit=None), "another circuit"),
                                            (dict(next_hop=wire.NextHop("x", (), True)), "next hop")])
def test_invalid_handoffs_cannot_exist(world, change, match) -> None:
    c, _m1, suffix, _m3 = world
    h = _handoff(c, suffix, (0,))
    if change.get("to_circuit", 0) is None:
        change = dict(to_circuit=h.circuit_id)
    with pytest.raises(ValueError, match=match):
        replace(h, **change)
    with pytest.raises(WireError):
        wire.decode(wire.encode(ho.HandoffRequest(sealed=b"x"))[:-1] + b"", expect=[ho.HandoffRequest])


def test_messages_validate_against_the_cddl(world) -> None:
    c, m1, suffix, _m3 = world
    h = _handoff(c, suffix, (0, 1))
    sealed = seal_handoff(REQ, h)
    signed = sign_handoff(REQ, h)
    rule("handoff").validate_cbor(wire.encode(h))
    rule("signed-handoff").validate_cbor(signed)
    for data in (wire.encode(ho.HandoffRequest(sealed=sealed)), wire.encode(ho.reply(h, H1.peer_id, sent=[0], missing=[1])),
                 wire.encode(ho.reply(None, H1.peer_id, refusal=("bad-signature", "no"))),
                 bytes.fromhex(V["handoff_req"]), bytes.fromhex(V["reply_ok"]), bytes.fromhex(V["reply_refused"])):
        rule("handoff-message").validate_cbor(data)
    with pytest.raises(Exception):
        rule("handoff-reply").validate_cbor(wire.encode(wire.ReceiptAck(accepted=True, reason="")))


def test_vector_is_byte_exact() -> None:
    req, hop = Identity.from_seed(bytes.fromhex(V["requester_seed"])), Identity.from_seed(bytes.fromhex(V["hop_seed"]))
    assert (req.peer_id, hop.peer_id) == (V["requester_peer_id"], V["hop_peer_id"])
    f = dict(V["handoff"])
    for key in ("circuit_id", "to_circuit", "to_key"):
        f[key] = bytes.fromhex(f[key])
    f["seqs"] = tuple(f["seqs"])
    f["next_hop"] = wire.NextHop(f["next_hop"]["peer_id"], tuple(f["next_hop"]["addrs"]), f["next_hop"]["final"])
    h = ho.Handoff(**f)
    body = wire.encode(h)
    assert body.hex() == V["handoff_body"] and signed_message(HANDOFF_DOMAIN, body).hex() == V["signed_message"]
    assert sign_handoff(req, h).hex() == V["signed_handoff"] and req.sign(HANDOFF_DOMAIN, body).hex() == V["sig"]
    assert open_handoff(hop, bytes.fromhex(V["sealed"])) == h
    assert wire.decode(bytes.fromhex(V["handoff_req"]), expect=[ho.HandoffRequest]).sealed.hex() == V["sealed"]
    ok = wire.decode(bytes.fromhex(V["reply_ok"]), expect=[ho.HandoffReply])
    assert ok.ok and (ok.sent, ok.missing) == ((5, 6), (9,))


def test_prefix_digest_requires_an_unbroken_chain_from_our_input(world) -> None:
    c, _m1, _suffix, _m3 = world
    commit = c.committed(0, 1)
    assert ho.prefix_digest(c.input_hashes[1], [commit]) == commit.out_hash
    assert ho.prefix_digest(c.input_hashes[2], [commit]) is None  # another input's commitment
    assert ho.prefix_digest(c.input_hashes[1], [commit, None]) is None  # the next hop never committed
    assert ho.prefix_digest(None, [commit]) is None and ho.prefix_digest(c.input_hashes[1], []) is None
