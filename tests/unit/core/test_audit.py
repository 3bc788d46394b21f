"""core/audit.py and the audit path of the pure hop/requester machines."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from p2pinfer.core import audit, hop as hopm, wire
from p2pinfer.core.circuit import CircuitMachine, HopSpec
from p2pinfer.core.commitments import activation_bytes
from p2pinfer.crypto.identity import Identity
from p2pinfer.errors import WireError

NOW = 1_700_000_000_000
REQ, H1, H2 = Identity.generate(), Identity.generate(), Identity.generate()


def _run_two_hops() -> tuple[CircuitMachine, list[hopm.HopMachine], int]:
    c = CircuitMachine(REQ, model_id="ab" * 32, hops=[HopSpec(H1.peer_id, (), 0, 1), HopSpec(H2.peer_id, (), 1, 2)],
                       requester_addrs=(), now_ms=NOW, ttl_ms=10_000)
    machines = [hopm.HopMachine(H1), hopm.HopMachine(H2)]
    for (spec, data), m in zip(c.assign_requests(), machines):
        c.on_reply(spec.peer_id, wire.encode(m.span_ready(m.on_assign(data, now_ms=NOW).assignment.circuit_id).message))
    seq, data = c.input_frame(np.ones((1, 4), np.float32))
    for peer, m in zip([H1, H2], machines):
        comp = m.on_frame(data, now_ms=NOW)
        done = m.finish(comp, np.asarray(comp.act) + 1, 3)
        m.retain(comp.circuit_id, comp.seq, done.out_bytes)
        c.on_commit(peer.peer_id, wire.decode(done.commit.data, expect=[wire.HopCommit]))
        data = done.send.data
    c.on_result(H2.peer_id, data)
    return c, machines, seq


def test_requester_fetches_retained_output_that_matches_the_commitment():
    c, machines, seq = _run_two_hops()
    req = c.audit_request(0, seq)
    data = c.open_audit(req, machines[0].on_audit(wire.encode(req), now_ms=NOW))
    assert data == activation_bytes(np.full((1, 4), 2, np.float32))
    assert audit.evidence_matches(data, c.committed(0, seq))
    assert not audit.evidence_matches(activation_bytes(np.zeros((1, 4), np.float32)), c.committed(0, seq))
    assert machines[0].counters.audits_answered == 1


def test_hop_refuses_forged_misrouted_or_unknown_audits():
    c, machines, seq = _run_two_hops()
    req = c.audit_request(0, seq)
    for bad in (replace(req, mac=bytes(32)), replace(req, link=1), replace(req, circuit_id=b"x" * 16), b"junk"):
        data = bad if isinstance(bad, bytes) else wire.encode(bad)
        assert isinstance(machines[0].on_audit(data, now_ms=NOW), hopm.Drop)
    assert machines[0].counters.audit_refused == 4
    machines[0].forget(c.circuit_id)  # closed circuit: evidence gone, requests refused
    assert isinstance(machines[0].on_audit(wire.encode(req), now_ms=NOW), hopm.Drop)


def test_evicted_output_is_reported_not_held_and_a_tampered_reply_fails():
    c, machines, seq = _run_two_hops()
    req = c.audit_request(1, seq)
    reply = wire.decode(machines[1].on_audit(wire.encode(req), now_ms=NOW), expect=[wire.AuditReply])
    with pytest.raises(WireError):
        c.open_audit(req, wire.encode(replace(reply, box=reply.box[:-1] + bytes([reply.box[-1] ^ 1]))))
    with pytest.raises(WireError):
        c.open_audit(c.audit_request(1, seq + 1), wire.encode(reply))
    machines[1].retention.drop(c.circuit_id)
    assert c.open_audit(req, machines[1].on_audit(wire.encode(req), now_ms=NOW)) is None


def test_evidence_plan():
    assert audit.evidence_needed(0, 3) == (audit.INPUT, 0)
    assert audit.evidence_needed(1, 3) == (0, 1)
    assert audit.evidence_needed(2, 3) == (1, audit.RESULT)
    assert audit.evidence_needed(0, 1) == (audit.INPUT, audit.RESULT)
    with pytest.raises(ValueError):
        audit.evidence_needed(3, 3)
