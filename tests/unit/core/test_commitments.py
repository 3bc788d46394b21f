"""core/commitments.py and the commit path of the pure hop/requester machines."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from p2pinfer.core import hop as hopm
from p2pinfer.core import wire
from p2pinfer.core.circuit import CircuitMachine, HopSpec
from p2pinfer.core.commitments import (activation_digest, check_chain, commit_authentic, digest, make_commit,
                                       report_key)
from p2pinfer.crypto.identity import Identity
from p2pinfer.errors import WireError

NOW = 1_700_000_000_000
REQ, H1, H2 = Identity.generate(), Identity.generate(), Identity.generate()
CID = b"c" * 16


def _commit(link: int, i: bytes, o: bytes, key: bytes = b"k" * 32) -> wire.HopCommit:
    return make_commit(key, circuit_id=CID, link=link, seq=3, in_hash=digest(i), out_hash=digest(o), compute_us=5)


def test_chain_consistent_and_each_kind_of_break():
    good = [_commit(0, b"x", b"y"), _commit(1, b"y", b"z")]
    assert check_chain(digest(b"x"), good, digest(b"z"), 2).ok
    c = check_chain(digest(b"x"), [_commit(0, b"x", b"y"), _commit(1, b"Y", b"z")], digest(b"z"), 2)
    assert c.breaks == (1,) and c.suspects(2) == (frozenset({0, 1}),)
    c = check_chain(digest(b"x"), good, digest(b"other"), 2)
    assert c.breaks == (2,) and c.suspects(2) == (frozenset({1}),)
    c = check_chain(digest(b"w"), good, digest(b"z"), 2)
    assert c.breaks == (0,) and c.suspects(2) == (frozenset({0}),)
    c = check_chain(digest(b"x"), {0: good[0]}, digest(b"z"), 2)
    assert c.missing == (1,) and c.breaks == () and not c.ok


def test_mac_binds_every_field_and_the_key():
    key = report_key(b"i" * 32, b"o" * 32)
    c = _commit(0, b"x", b"y", key)
    assert commit_authentic(key, c)
    assert not commit_authentic(report_key(b"i" * 32, b"p" * 32), c)
    for change in ({"seq": 4}, {"link": 1}, {"out_hash": digest(b"q")}, {"compute_us": 6}):
        forged = replace(c, **change)
        assert not commit_authentic(key, forged)


def test_digest_survives_the_wire():
    act = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "m": np.ones((2,), np.int64)}
    payload = wire.decode(wire.encode(wire.FramePayload(act=act, trace=())), expect=[wire.FramePayload])
    assert activation_digest(payload.act) == activation_digest(act)


def test_two_hop_machines_commit_a_consistent_chain_and_retain_outputs():
    c = CircuitMachine(REQ, model_id="ab" * 32, hops=[HopSpec(H1.peer_id, (), 0, 1), HopSpec(H2.peer_id, (), 1, 2)],
                       requester_addrs=(), now_ms=NOW, ttl_ms=10_000)
    machines = [hopm.HopMachine(H1), hopm.HopMachine(H2)]
    for (spec, data), m in zip(c.assign_requests(), machines):
        c.on_reply(spec.peer_id, wire.encode(m.span_ready(m.on_assign(data, now_ms=NOW).assignment.circuit_id).message))
    seq, data = c.input_frame(np.ones((1, 4), np.float32))
    for k, m in enumerate(machines):
        comp = m.on_frame(data, now_ms=NOW)
        done = m.finish(comp, np.asarray(comp.act) * 2, 11)
        m.retain(comp.circuit_id, comp.seq, done.out_bytes)
        assert done.commit.peer_id == REQ.peer_id
        c.on_commit([H1, H2][k].peer_id, wire.decode(done.commit.data, expect=[wire.HopCommit]))
        data = done.send.data
    result = c.on_result(H2.peer_id, data)
    assert c.commits_complete(seq) and c.chain(seq, result.digest).ok
    assert machines[1].retention.get(c.circuit_id, seq) is not None
    machines[1].forget(c.circuit_id)
    assert machines[1].retention.get(c.circuit_id, seq) is None
    # a commitment from the wrong peer or with a forged mac is rejected
    commit = c.commits[seq][0]
    with pytest.raises(WireError):
        c.on_commit(H2.peer_id, commit)
    with pytest.raises(WireError):
        c.on_commit(H2.peer_id, replace(commit, link=1))
    assert c.rejected == 2
